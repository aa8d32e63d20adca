//! Finding what a containerd test needs on this machine: root, the `containerd`, `ctr` and
//! `runc` binaries ([`require_root_and_containerd`]), the freshly built wasmpod shim
//! ([`locate_shim`]) and the static (musl) builds of `scripts/build-static.sh`
//! ([`locate_static_binary`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::SHIM_BINARY;

/// Environment variable naming the shim binary explicitly.
pub const SHIM_ENV: &str = "WASMPOD_SHIM";

/// Panic with a clear message unless we are root and `containerd`, `ctr` and `runc` are on
/// `PATH`. Call it first in every test that starts a [`Containerd`](super::Containerd):
/// such a test must fail loudly where it cannot run, never pass silently.
pub fn require_root_and_containerd() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it starts a private containerd): run it as root, e.g. `sudo -E make test`"
    );
    for bin in ["containerd", "ctr", "runc"] {
        if let Err(e) = resolve_bin(Path::new(bin)) {
            panic!("this test needs {bin}: {e:#}");
        }
    }
}

/// The Rust targets of the static builds (`scripts/build-static.sh`). `make test` builds both
/// and runs the containerd suites against the first through `$WASMPOD_SHIM`.
pub const STATIC_TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

/// Find the built shim: `$WASMPOD_SHIM` (`make test`: the x86_64 static build), else
/// `<target>/<profile>/containerd-shim-wasmpod-v1` next to the `deps/` dir this test binary
/// lives in.
pub fn locate_shim() -> anyhow::Result<PathBuf> {
    let hint = "build the shim first: cargo build -p containerd-shim-wasmpod";
    if let Some(p) = std::env::var_os(SHIM_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("{SHIM_ENV}={} does not exist; {hint}", p.display());
    }
    let shim = profile_dir()?.join(SHIM_BINARY);
    if shim.is_file() {
        Ok(shim)
    } else {
        bail!("{} not found; {hint}", shim.display())
    }
}

/// The binary `name` (the shim or `wasmpod-installer`) of the static build for `triple`, in
/// this test binary's profile: `<target>/<triple>/<profile>/<name>`, where
/// `scripts/build-static.sh build <triple>` puts it.
pub fn locate_static_binary(triple: &str, name: &str) -> anyhow::Result<PathBuf> {
    let profile = profile_dir()?;
    let (Some(target), Some(profile_name)) = (profile.parent(), profile.file_name()) else {
        bail!("{} is not <target>/<profile>", profile.display());
    };
    let bin = target.join(triple).join(profile_name).join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        bail!(
            "{} not found; build it: scripts/build-static.sh build {triple} (make test does)",
            bin.display()
        )
    }
}

/// `<target>/<profile>`: the dir of this test binary, less its `deps/`.
fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().context("test binary has no parent dir")?;
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir = dir.parent().context("deps dir has no parent")?;
    }
    Ok(dir.to_path_buf())
}

/// `bin` itself if it is a path, else the first `bin` on `PATH`.
pub(super) fn resolve_bin(bin: &Path) -> anyhow::Result<PathBuf> {
    if bin.components().count() > 1 {
        if bin.is_file() {
            return Ok(bin.to_path_buf());
        }
        bail!("{} does not exist", bin.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{} not found on PATH; install containerd (scripts/setup.sh)",
                bin.display()
            )
        })
}
