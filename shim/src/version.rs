//! `containerd-shim-wasmpod-v1 --version`: what this binary is, for operators and the
//! installer (which logs it from the node before labelling it).
//!
//! The facts come from `shim/build.rs`: the git commit, the wasmtime version locked in the
//! workspace, the target triple, the enabled cargo features and the link facts (profile,
//! libc and whether it is linked statically, libseccomp). The output goes to stdout and the
//! process exits 0; nothing else runs (no logger, no containerd flags needed).
//!
//! containerd-shim's own parser accepts `-v`, `-version` and `--version` (Go flag style) but
//! its bootstrap never acts on them: it fails with "Shim namespace cannot be empty". All of
//! these spellings print this text instead.

use std::io::Write as _;

/// The spellings of the version flag (Go's flag package takes one or two dashes).
const FLAGS: [&str; 4] = ["-v", "--v", "-version", "--version"];

/// Whether `arg` asks for the version.
pub fn is_flag(arg: &str) -> bool {
    FLAGS.contains(&arg)
}

/// The binary's name as containerd knows it.
pub const BINARY: &str = "containerd-shim-wasmpod-v1";
/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit it was built from (12 hex digits), or "unknown".
pub const COMMIT: &str = env!("WASMPOD_GIT_COMMIT");
/// The wasmtime version it embeds.
pub const WASMTIME: &str = env!("WASMPOD_WASMTIME_VERSION");
/// The target triple it was built for.
pub const TARGET: &str = env!("WASMPOD_TARGET");
/// Enabled cargo features of the shim crate, comma-separated (may be empty).
const CARGO_FEATURES: &str = env!("WASMPOD_CARGO_FEATURES");
/// Profile and link facts.
const BUILD: &str = env!("WASMPOD_BUILD_FACTS");
/// What every build runs, whatever its cargo features.
const RUNTIME_FEATURES: &str = "wasip1, wasip2, wasi-http, component-model, seccomp";

/// The full `--version` text.
pub fn text() -> String {
    let mut features = RUNTIME_FEATURES.to_owned();
    if !CARGO_FEATURES.is_empty() {
        features.push_str(", ");
        features.push_str(CARGO_FEATURES);
    }
    format!(
        "{BINARY} {VERSION}\n  commit: {COMMIT}\n  wasmtime: {WASMTIME}\n  target: {TARGET}\n  \
         features: {features}\n  build: {BUILD}, {}\n",
        load_address()
    )
}

/// `no-pie` (fixed-address executable) or `pie`, from the ELF header of the running binary
/// (`e_type`: `ET_EXEC` or `ET_DYN`); `pie unknown` when it cannot be read.
fn load_address() -> &'static str {
    /// Offset of `e_type` in the ELF header.
    const E_TYPE: usize = 16;
    let mut header = [0u8; 18];
    let read = std::fs::File::open("/proc/self/exe")
        .and_then(|mut exe| std::io::Read::read_exact(&mut exe, &mut header));
    if read.is_err() || header[..4] != *b"\x7fELF" {
        return "pie unknown";
    }
    // e_type is in the file's byte order (EI_DATA: 1 little, 2 big endian).
    let e_type = [header[E_TYPE], header[E_TYPE + 1]];
    let e_type = if header[5] == 2 {
        u16::from_be_bytes(e_type)
    } else {
        u16::from_le_bytes(e_type)
    };
    match e_type {
        2 => "no-pie",
        3 => "pie",
        _ => "pie unknown",
    }
}

/// Print [`text`] on stdout; the process exit code (0, or 1 when stdout is closed).
pub fn main() -> i32 {
    match std::io::stdout().lock().write_all(text().as_bytes()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_fact() {
        let text = text();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(format!("{BINARY} {VERSION}").as_str()));
        let keys: Vec<&str> = lines
            .map(|l| l.trim_start().split_once(": ").unwrap().0)
            .collect();
        assert_eq!(keys, ["commit", "wasmtime", "target", "features", "build"]);
        // Built from this checkout with the workspace lock: both are known here.
        assert!(
            COMMIT == "unknown"
                || (COMMIT.len() == 12 && COMMIT.bytes().all(|b| b.is_ascii_hexdigit())),
            "{COMMIT}"
        );
        assert!(
            WASMTIME.split('.').count() == 3 && WASMTIME.starts_with(|c: char| c.is_ascii_digit()),
            "{WASMTIME}"
        );
        assert!(TARGET.contains("linux"), "{TARGET}");
    }

    #[test]
    fn load_address_is_read_from_the_running_binary() {
        // Test binaries are linked PIE (build.rs asks `-no-pie` of the shim binary only).
        assert_eq!(load_address(), "pie");
        assert!(text().contains(&format!("{BUILD}, pie\n")), "{}", text());
    }

    #[test]
    fn go_flag_spellings_are_recognised() {
        for flag in ["-v", "--v", "-version", "--version"] {
            assert!(is_flag(flag), "{flag}");
        }
        assert!(!is_flag("start") && !is_flag("-namespace"));
    }
}
