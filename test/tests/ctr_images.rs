//! Images pulled with `ctr images pull --plain-http` from a private registry and run with
//! `ctr run --runtime io.containerd.wasmpod.v1`, on containerd 1.6, 1.7 and 2.1.
//!
//! What each version does (asserted exactly; the README's "Images" table says the same):
//! - classic images pull and run everywhere;
//! - the non-tar forms (OCI image config + `application/wasm` or runwasi's component layer)
//!   pull and run on 1.7 and 2.1; 1.6.20 refuses to unpack them ("mismatched image rootfs
//!   and manifest layers": non-tar layers need containerd ≥ 1.6.25);
//! - the wasm artifacts (config `application/vnd.wasm.config.v0+json`/`v1+json`) are
//!   refused by `ctr run` on every version ("unknown image config media type"), before any
//!   shim is involved: they are run through CRI (`cri_images.rs`).
//!
//! Needs root, containerd, runc, Debian's `docker-registry` and the built shim.

use std::time::Duration;

use wasmpod_fixtures::{p1, p2};
use wasmpod_test::containerd::{
    Containerd, ContainerdVersion, CtrOutput, RUNTIME, require_root_and_containerd,
};
use wasmpod_test::image::Form;
use wasmpod_test::registry::Registry;

/// A private containerd of `version` without CRI, or `None` (loudly) when its binaries
/// cannot be fetched outside CI.
fn containerd(version: ContainerdVersion) -> Option<Containerd> {
    require_root_and_containerd();
    if let Err(e) = version.ensure_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{version} unavailable in CI: {e:#}"
        );
        eprintln!("\n!!!!!!!! SKIPPING ctr_images on {version}: {e:#}\n");
        return None;
    }
    Some(
        Containerd::builder()
            .version(version)
            .start()
            .unwrap_or_else(|e| panic!("start {version}: {e:#}")),
    )
}

fn pull(c: &Containerd, reference: &str) -> CtrOutput {
    c.ctr(["images", "pull", "--plain-http", reference])
        .expect("ctr images pull")
}

fn run(c: &Containerd, reference: &str, id: &str) -> CtrOutput {
    c.run(["--rm", "--runtime", RUNTIME, reference, id])
        .expect("ctr run")
}

/// Nothing left: no shim, mount, FIFO, socket, container or task.
fn assert_clean(c: &Containerd, label: &str) {
    let left = c.wait_no_leftovers(Duration::from_secs(10));
    assert!(left.is_empty(), "{label}: left behind:\n{left}");
    let containers = c
        .ctr(["containers", "ls", "-q"])
        .expect("ctr containers ls");
    assert_eq!(containers.stdout.trim(), "", "{label}: {containers}");
}

fn every_form(version: ContainerdVersion) {
    let Some(c) = containerd(version) else { return };
    let registry = Registry::start().expect("start the test registry");
    let cases = [
        (Form::Classic, "wasip1", p1::HELLO),
        (Form::OciWasm, "wasip1", p1::HELLO),
        (Form::ComponentLayer, "wasip2", p2::HELLO),
        (Form::Artifact, "wasip2", p2::HELLO),
        (Form::ArtifactV1, "wasip1", p1::HELLO),
    ];
    for (i, (form, os, wasm)) in cases.into_iter().enumerate() {
        let label = format!("{version}: {form:?}");
        let image = form.image("app:1", "app", os, wasm).build().expect("build");
        let reference = registry
            .push(&image, &format!("wasmpod/form{i}"), "1", false)
            .unwrap_or_else(|e| panic!("{label}: push: {e:#}"));
        let pulled = pull(&c, &reference);
        if version == ContainerdVersion::V1_6 && form.is_non_tar() {
            assert!(
                !pulled.success(),
                "{label}: 1.6.20 pulled a non-tar layer: {pulled}"
            );
            assert!(
                pulled
                    .stderr
                    .contains("mismatched image rootfs and manifest layers"),
                "{label}: {pulled}"
            );
            continue;
        }
        assert!(pulled.success(), "{label}: {pulled}");
        let out = run(&c, &reference, &format!("form{i}"));
        if form.is_artifact() {
            assert!(!out.success(), "{label}: ctr ran an artifact: {out}");
            assert!(
                out.stderr.contains("unknown image config media type"),
                "{label}: {out}"
            );
        } else {
            assert!(out.success(), "{label}: {out}");
            assert_eq!(out.stdout_lines(), ["hello from wasm"], "{label}: {out}");
        }
        assert_clean(&c, &label);
        eprintln!("ctr_images: {label}: ok");
    }
}

#[test]
fn containerd_1_6_pulls_classic_only() {
    every_form(ContainerdVersion::V1_6);
}

#[test]
fn containerd_1_7_pulls_and_runs_each_form_ctr_can_run() {
    every_form(ContainerdVersion::V1_7);
}

#[test]
fn containerd_2_1_pulls_and_runs_each_form_ctr_can_run() {
    every_form(ContainerdVersion::V2_1);
}
