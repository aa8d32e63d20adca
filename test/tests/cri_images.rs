//! Images pulled from a registry, the way kubelet gets them: every form a wasm image comes
//! in ([`Form`]) is pushed to a private registry ([`Registry`]), pulled with CRI's
//! `PullImage` (registry configured through containerd's `config_path`/`hosts.toml`) and
//! run in a pod, on containerd 1.6, 1.7 and 2.1; bad images fail CreateContainer with a
//! named error and leave nothing behind; a 20 MB layer is compiled once per node.
//!
//! Needs what `cri.rs` needs plus Debian's `docker-registry` (scripts/setup.sh). Runs on the
//! node of `cri/node.rs`, one test at a time.

#[allow(dead_code)]
#[path = "cri/node.rs"]
mod node;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use wasmpod_fixtures::{p1, p2};
use wasmpod_test::containerd::{CRI_HANDLER, CRI_NAMESPACE, ContainerdVersion};
use wasmpod_test::cri::ContainerConfig;
use wasmpod_test::image::{Form, ImageBuilder, WASM_LAYER_MEDIA_TYPE};
use wasmpod_test::registry::Registry;

use node::Node;

/// The compile cache the shims of the test nodes use (the runner's default).
const CACHE_DIR: &str = "/var/lib/wasmpod/cache";

/// One image to push and run: its form, `os`, payload, whether it sits in an index, the
/// pod's command, and what the guest must print.
struct Case {
    form: Form,
    os: &'static str,
    wasm: &'static [u8],
    in_index: bool,
    command: &'static [&'static str],
    expect: &'static [&'static str],
}

/// Every form, alone and inside an index, core modules and components; the artifact cases
/// run `args_env`, whose first lines show argv[0] = the module's name, then the command.
fn cases() -> Vec<Case> {
    let hello = &["hello from wasm"][..];
    let args: &[&str] = &["arg[0]={module}", "arg[1]=one", "arg[2]=two"];
    vec![
        Case {
            form: Form::Classic,
            os: "wasip1",
            wasm: p1::HELLO,
            in_index: false,
            command: &[],
            expect: hello,
        },
        Case {
            form: Form::OciWasm,
            os: "wasip1",
            wasm: p1::HELLO,
            in_index: false,
            command: &[],
            expect: hello,
        },
        Case {
            form: Form::OciWasm,
            os: "wasip1",
            wasm: p1::HELLO,
            in_index: true,
            command: &[],
            expect: hello,
        },
        // A config saying wasip2 over a core module: the header decides, it runs as p1.
        Case {
            form: Form::OciWasm,
            os: "wasip2",
            wasm: p1::HELLO,
            in_index: false,
            command: &[],
            expect: hello,
        },
        Case {
            form: Form::ComponentLayer,
            os: "wasip2",
            wasm: p2::HELLO,
            in_index: false,
            command: &[],
            expect: hello,
        },
        Case {
            form: Form::Artifact,
            os: "wasip2",
            wasm: p2::ARGS_ENV,
            in_index: false,
            command: &["one", "two"],
            expect: args,
        },
        Case {
            form: Form::Artifact,
            os: "wasip1",
            wasm: p1::ARGS_ENV,
            in_index: true,
            command: &["one", "two"],
            expect: args,
        },
        Case {
            form: Form::ArtifactV1,
            os: "wasip1",
            wasm: p1::ARGS_ENV,
            in_index: false,
            command: &["one", "two"],
            expect: args,
        },
    ]
}

/// A registry the node's CRI trusts over plain HTTP.
fn registry_for(n: &Node) -> Registry {
    let registry = Registry::start().expect("start the test registry");
    registry
        .trust(&n.c.registry_hosts_dir())
        .expect("write hosts.toml");
    registry
}

/// Pushes `image` as `<registry>/wasmpod/<repo>:1`.
fn push(registry: &Registry, image: &ImageBuilder, repo: &str, in_index: bool) -> String {
    let built = image.build().expect("build image");
    registry
        .push(&built, &format!("wasmpod/{repo}"), "1", in_index)
        .unwrap_or_else(|e| panic!("push {repo}: {e:#}\nregistry log:\n{}", registry.log()))
}

/// Why a version's pull of a case fails, if it does: 1.6.20 cannot unpack non-tar layers;
/// an index whose only manifest is wasm has no match for the node's platform: CRI reads the
/// pulled image's config for linux/amd64 (2.1.9 too, even with `runtime_platforms` and the
/// handler named in the pull).
fn pull_error(version: ContainerdVersion, case: &Case) -> Option<&'static str> {
    if case.in_index {
        return Some("no match for platform in manifest");
    }
    if version == ContainerdVersion::V1_6 && case.form.is_non_tar() {
        return Some("mismatched image rootfs and manifest layers");
    }
    None
}

fn forms(n: &Node, version: ContainerdVersion) {
    let registry = registry_for(n);
    for (i, case) in cases().iter().enumerate() {
        let label = format!(
            "{version}: {:?} os {} {}",
            case.form,
            case.os,
            if case.in_index {
                "in an index"
            } else {
                "single manifest"
            }
        );
        let repo = format!("app{i}");
        let image = case.form.image("app:1", "app", case.os, case.wasm);
        let reference = push(&registry, &image, &repo, case.in_index);
        let pulled = n.cri.pull_image_for(&reference, CRI_HANDLER);
        if let Some(needle) = pull_error(version, case) {
            let err = pulled.expect_err(&format!("{label}: PullImage should fail"));
            assert!(err.to_string().contains(needle), "{label}: {err}");
            eprintln!("cri_images: {label}: PullImage fails as documented: {needle}");
            continue;
        }
        pulled.unwrap_or_else(|e| panic!("{label}: PullImage {reference}: {e}"));
        let mut config = ContainerConfig::new(format!("c{i}"), &reference);
        if !case.command.is_empty() {
            config = config.command(case.command.iter().copied());
        }
        let (pod, status, log) = n.run_to_exit(&n.pod(&format!("form{i}")), &config);
        assert_eq!(status.exit_code, 0, "{label}: {status:?}\n{log:?}");
        // An artifact's argv[0] is the module's name: its repository's, `<repo>.wasm`.
        let expect: Vec<String> = case
            .expect
            .iter()
            .map(|line| line.replace("{module}", &format!("{repo}.wasm")))
            .collect();
        assert!(
            log.len() >= expect.len() && log[..expect.len()] == *expect,
            "{label}: CRI log {log:?}, expected it to start with {expect:?}"
        );
        n.teardown(&pod);
        eprintln!("cri_images: {label}: ok");
    }
}

/// Starting `reference` (with `command`) fails with an error containing `needle`; then the
/// pod is torn down and nothing is left. CRI's CreateContainer only records the container:
/// the shim's task Create, which refuses the image, runs in StartContainer.
fn create_fails(n: &Node, label: &str, reference: &str, command: &[&str], needle: &str) {
    let pod = n.start_pod(label);
    let mut config = ContainerConfig::new(label, reference);
    if !command.is_empty() {
        config = config.command(command.iter().copied());
    }
    let id = n
        .cri
        .create_container(&pod, &config)
        .unwrap_or_else(|e| panic!("{label}: CreateContainer: {e}"));
    let err = n
        .cri
        .start_container(&id)
        .expect_err(&format!("{label}: StartContainer should fail"));
    let message = err.to_string();
    assert!(message.contains(needle), "{label}: {message}");
    eprintln!("cri_images: {label}: {message}");
    n.teardown(&pod);
}

fn bad_inputs(n: &Node, version: ContainerdVersion) {
    let registry = registry_for(n);
    let pull = |image: ImageBuilder, repo: &str| {
        let reference = push(&registry, &image, repo, false);
        n.cri
            .pull_image(&reference)
            .unwrap_or_else(|e| panic!("{version}: PullImage {reference}: {e}"));
        reference
    };
    // An OCI image whose entrypoint is in no layer: no tar holds it, no wasm layer.
    let no_wasm = pull(
        ImageBuilder::new("x:1")
            .platform("wasip1", "wasm")
            .entrypoint(["app.wasm"])
            .file("/other.txt", b"not it".to_vec(), 0o644),
        "no-wasm-layer",
    );
    create_fails(
        n,
        "no-wasm-layer",
        &no_wasm,
        &[],
        "the image has no wasm layer",
    );
    // Two wasm layers under an OCI image config: which one is the entrypoint?
    let two = pull(
        Form::OciWasm
            .image("x:1", "app", "wasip1", p1::HELLO)
            .wasm_layer(p1::EXIT_CODE),
        "two-wasm-layers",
    );
    create_fails(n, "two-wasm-layers", &two, &[], "2 wasm layers");
    // An artifact whose layer 0 is not a wasm media type.
    let not_wasm_type = pull(
        ImageBuilder::new("x:1")
            .platform("wasip1", "wasm")
            .artifact_config(Form::Artifact.media_types().0)
            .raw_layer("application/octet-stream", p1::HELLO),
        "layer-not-wasm",
    );
    create_fails(
        n,
        "layer-not-wasm",
        &not_wasm_type,
        &["x"],
        "which is not wasm",
    );
    // A wasm media type whose bytes are not wasm.
    let not_wasm_bytes = pull(
        ImageBuilder::new("x:1")
            .platform("wasip1", "wasm")
            .artifact_config(Form::Artifact.media_types().0)
            .raw_layer(WASM_LAYER_MEDIA_TYPE, b"#!/bin/sh\necho hi\n".to_vec()),
        "bytes-not-wasm",
    );
    create_fails(
        n,
        "bytes-not-wasm",
        &not_wasm_bytes,
        &["x"],
        "is not a WebAssembly binary",
    );
    // The layer garbage-collected from the content store after the pull.
    let image = Form::OciWasm.image("x:1", "app", "wasip1", p1::EXIT_CODE);
    let layer_digest = image
        .build()
        .expect("build")
        .layer_blobs()
        .map(|(_, digest, _)| digest.to_owned())
        .next()
        .expect("one layer");
    let gone = pull(image, "content-gone");
    let rm =
        n.c.ctr_in(CRI_NAMESPACE, ["content", "rm", layer_digest.as_str()])
            .expect("ctr content rm");
    assert!(rm.success(), "{version}: {rm}");
    create_fails(
        n,
        "content-gone",
        &gone,
        &[],
        "missing from containerd's content store",
    );
}

/// `.cwasm` files of the node cache at least `min_len` bytes long, modified since `since`:
/// `(path, inode, mtime)`.
/// Compiled files of at least `min_len` bytes written since `since`: path, inode, and the
/// mtime of its `.tag` (the cache's record of last use, refreshed by every hit).
fn cache_files_since(since: SystemTime, min_len: u64) -> Vec<(PathBuf, u64, SystemTime)> {
    std::fs::read_dir(CACHE_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let mtime = meta.modified().ok()?;
            let last_use = std::fs::metadata(e.path().with_extension("tag"))
                .and_then(|tag| tag.modified())
                .ok()?;
            (mtime >= since && meta.len() >= min_len).then(|| (e.path(), meta.ino(), last_use))
        })
        .collect()
}

/// A 20 MB wasm layer: the first start compiles it into the node cache (one new file), the
/// second maps that file (same inode; its tag's mtime refreshed by the hit) and compiles
/// nothing.
fn big_layer_hits_cache(n: &Node, version: ContainerdVersion) {
    let registry = registry_for(n);
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let wasm = big_module(20 << 20, nonce);
    let image = ImageBuilder::new("x:1")
        .platform("wasip1", "wasm")
        .entrypoint(["big.wasm"])
        .raw_layer(WASM_LAYER_MEDIA_TYPE, wasm);
    let reference = push(&registry, &image, "big", false);
    n.cri.pull_image(&reference).expect("PullImage big");
    let since = SystemTime::now() - Duration::from_secs(1);
    let config = ContainerConfig::new("big", &reference);
    let mut times = Vec::new();
    let mut files = Vec::new();
    for round in 0..2 {
        let pod = n.start_pod(&format!("big{round}"));
        let id = n
            .cri
            .create_container(&pod, &config)
            .unwrap_or_else(|e| panic!("{version}: CreateContainer big: {e}"));
        // The shim's task Create (fetch, compile or cache load) runs inside StartContainer.
        let began = Instant::now();
        n.cri.start_container(&id).expect("StartContainer");
        times.push(began.elapsed());
        let (status, log) = n.exited(&pod, &config, &id);
        assert_eq!(status.exit_code, 0, "{version}: round {round}: {status:?}");
        assert_eq!(log, ["big"], "{version}: round {round}");
        n.teardown(&pod);
        files.push(cache_files_since(since, 10 << 20));
    }
    eprintln!(
        "cri_images: {version}: 20 MB layer StartContainer: first {:?} (compile), second {:?} (cache)",
        times[0], times[1]
    );
    assert_eq!(
        files[0].len(),
        1,
        "{version}: first start wrote {:?}",
        files[0]
    );
    assert_eq!(files[1].len(), 1, "{version}: {:?}", files[1]);
    let (first, second) = (&files[0][0], &files[1][0]);
    assert_eq!(
        first.0, second.0,
        "{version}: the second start used another file"
    );
    assert_eq!(
        first.1, second.1,
        "{version}: the second start rewrote (recompiled) the file"
    );
    assert!(
        second.2 > first.2,
        "{version}: the second start did not refresh the file's tag (no hit)"
    );
}

/// A core module of about `len` bytes that prints `big` and exits: a data segment of
/// `len` bytes (compiled code keeps it, so the cache file is as big) and a nonce, so no
/// earlier run's cache file matches.
fn big_module(len: usize, nonce: u128) -> Vec<u8> {
    let padding = "Z".repeat(len);
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (data (i32.const 16) "big\n")
  (data (i32.const 32) "{nonce:032x}")
  (data (i32.const 65536) "{padding}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        pages = len / 65536 + 2,
    );
    wat::parse_str(&wat).expect("valid wat")
}

macro_rules! versions {
    ($($module:ident: $version:expr),*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn every_form_pulls_and_runs() {
                node::on_node($version, forms);
            }

            #[test]
            fn bad_images_fail_create_and_leave_nothing() {
                if $version != ContainerdVersion::V1_6 {
                    node::on_node($version, bad_inputs);
                }
            }

            #[test]
            fn a_20mb_layer_is_compiled_once() {
                if $version != ContainerdVersion::V1_6 {
                    node::on_node($version, big_layer_hits_cache);
                }
            }
        }
    )*};
}

versions!(
    containerd_1_6: ContainerdVersion::V1_6,
    containerd_1_7: ContainerdVersion::V1_7,
    containerd_2_1: ContainerdVersion::V2_1
);
