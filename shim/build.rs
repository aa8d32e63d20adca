//! Build facts for `--version`, and the link mode of the shim binary.
//!
//! **Version facts** (`shim/src/version.rs` prints them): the git commit the shim is built
//! from (`git rev-parse --short=12 HEAD`, or `$WASMPOD_GIT_COMMIT` for builds outside a git
//! checkout such as an image build from a source tarball; "unknown" otherwise), the wasmtime
//! version locked in `Cargo.lock`, the target triple, the cargo features enabled on this
//! crate, and how libc and libseccomp are linked. Cargo reruns this script when HEAD moves
//! (the worktree's `HEAD`, the branch ref it points at, `packed-refs`) or the lock changes.
//!
//! **Link mode**: the shim is a position-dependent executable (`-no-pie`). Every container
//! runs in a re-executed copy of this binary. In a PIE, the dynamic loader writes relocated
//! pointers into the read-only-after-relocation data pages at each start, so each runner
//! carries its own private copy of them (measured: 884 kB per process, the largest part of
//! an idle runner's private memory). Without PIE the linker resolves them and the pages stay
//! clean and shared by every runner on the node. The cost is a fixed load address for the
//! shim's code (no ASLR of the executable; libraries, heap and stacks are still randomised),
//! the same as Go-built runc and containerd.

use std::path::Path;
use std::process::Command;

fn main() {
    // glibc builds only: a static (musl) build has no loader relocating anything at start,
    // and Rust links it static-pie, which `-no-pie` would contradict.
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }

    println!("cargo:rerun-if-env-changed=WASMPOD_GIT_COMMIT");
    let commit = std::env::var("WASMPOD_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WASMPOD_GIT_COMMIT={}", commit.trim());

    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let lock = Path::new(&manifest).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let wasmtime = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|text| locked_version(&text, "wasmtime"))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WASMPOD_WASMTIME_VERSION={wasmtime}");

    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=WASMPOD_TARGET={target}");
    println!(
        "cargo:rustc-env=WASMPOD_CARGO_FEATURES={}",
        cargo_features()
    );
    println!("cargo:rustc-env=WASMPOD_BUILD_FACTS={}", build_facts());
}

/// `git rev-parse --short=12 HEAD` in this crate's checkout, registering the files whose
/// change moves HEAD.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // --git-path resolves worktrees (HEAD is per worktree, refs are shared).
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(reference) = git(&["rev-parse", "--symbolic-full-name", "HEAD"])
        && reference.starts_with("refs/")
    {
        watched.push(reference);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && Path::new(&path).exists()
        {
            let path = Path::new(&path)
                .canonicalize()
                .unwrap_or_else(|_| path.into());
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}

/// The version of `package` in a `Cargo.lock` (the first entry of that name).
fn locked_version(lock: &str, package: &str) -> Option<String> {
    let name = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    lines.find(|l| l.trim() == name)?;
    let version = lines.next()?.trim().strip_prefix("version = \"")?;
    Some(version.trim_end_matches('"').to_owned())
}

/// The cargo features enabled on this crate (`default` left out), comma-separated.
fn cargo_features() -> String {
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_lowercase().replace('_', "-"))
        })
        .filter(|f| f != "default")
        .collect();
    features.sort();
    features.join(", ")
}

/// The `build:` line: the profile and the link facts a node cares about (which libc, linked
/// statically or not; how libseccomp is linked). Whether the executable is position
/// independent is read from the binary itself at run time (`version::load_address`): the
/// linker decides it (a musl build linked by zig is a fixed-address executable).
fn build_facts() -> String {
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_owned());
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let libc = if env.is_empty() { "unknown" } else { &env };
    // Cargo lists `crt-static` in CARGO_CFG_TARGET_FEATURE only when RUSTFLAGS ask for it,
    // not when it is the target's default (musl, unless `-crt-static`).
    let crt_static = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .unwrap_or_default()
        .split(',')
        .any(|f| f == "crt-static")
        || (env == "musl"
            && !std::env::var("CARGO_ENCODED_RUSTFLAGS")
                .unwrap_or_default()
                .contains("-crt-static"));
    println!("cargo:rerun-if-env-changed=LIBSECCOMP_LINK_TYPE");
    let seccomp = match std::env::var("LIBSECCOMP_LINK_TYPE").as_deref() {
        Ok("static") => "static",
        _ => "dynamic",
    };
    format!(
        "{profile}, libc {libc} {}, libseccomp {seccomp}",
        if crt_static { "static" } else { "dynamic" },
    )
}
