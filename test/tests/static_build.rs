//! The static builds of issue 14 (`scripts/build-static.sh`): the shim and the installer,
//! for x86_64 and aarch64, are ELF executables for their machine with no interpreter
//! (`PT_INTERP`) and no shared library (`DT_NEEDED`), so they run on any node whatever its
//! libc; and each shim runs, names its target and passes its `--self-check` (compiles and
//! runs a wasm module), the aarch64 one under qemu-user.
//!
//! `make test` builds both (`make static`) and runs these with `--ignored`; they are ignored
//! in a plain `cargo test`, which builds no static binary (run alone without the builds,
//! they fail naming the command). The glibc build of the tests themselves is the negative
//! control: the same check must call it dynamic.

use std::path::{Path, PathBuf};
use std::process::Command;

use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, elf};
use wasmpod_test::containerd::{STATIC_TARGETS, locate_static_binary};

const SHIM: &str = "containerd-shim-wasmpod-v1";
const INSTALLER: &str = "wasmpod-installer";
/// Debian's qemu-user-static (scripts/setup.sh), called directly: no binfmt registration
/// needed.
const QEMU_AARCH64: &str = "qemu-aarch64-static";

/// What makes an executable static or not, read from its ELF headers.
#[derive(Debug)]
struct Linkage {
    machine: u16,
    /// The `PT_INTERP` path (the dynamic loader), if any.
    interpreter: Option<String>,
    /// How many `DT_NEEDED` entries (shared libraries) its dynamic section lists. A
    /// static-pie executable has a dynamic section (for its own relocation) but none.
    needed: usize,
}

impl Linkage {
    fn read(path: &Path) -> Linkage {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let file = ElfFile64::<Endianness>::parse(&*data)
            .unwrap_or_else(|e| panic!("{} is no 64-bit ELF file: {e}", path.display()));
        let endian = file.endian();
        let mut linkage = Linkage {
            machine: file.elf_header().e_machine(endian),
            interpreter: None,
            needed: 0,
        };
        for ph in file.elf_program_headers() {
            let bad = |e: object::read::Error| -> ! {
                panic!("{}: bad program header: {e}", path.display())
            };
            if let Some(interp) = ph.interpreter(endian, &*data).unwrap_or_else(|e| bad(e)) {
                linkage.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
            }
            if let Some(dynamic) = ph.dynamic(endian, &*data).unwrap_or_else(|e| bad(e)) {
                linkage.needed += dynamic
                    .iter()
                    .filter(|d| d.tag(endian) == elf::DT_NEEDED)
                    .count();
            }
        }
        linkage
    }

    fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed == 0
    }
}

/// `file`'s word on `path` (an extra check beside our own reading; `file` is in Debian's base).
fn file_says(path: &Path) -> String {
    let out = Command::new("file")
        .arg("-b")
        .arg(path)
        .output()
        .expect("run file(1)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn static_binary(triple: &str, name: &str) -> PathBuf {
    locate_static_binary(triple, name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Both binaries of `triple` are static executables for `machine`.
fn assert_static_build(triple: &str, machine: u16) {
    for name in [SHIM, INSTALLER] {
        let path = static_binary(triple, name);
        let linkage = Linkage::read(&path);
        let file = file_says(&path);
        assert!(
            linkage.is_static(),
            "{} is not static: {linkage:?}; file: {file}",
            path.display()
        );
        assert_eq!(linkage.machine, machine, "{}: {file}", path.display());
        assert!(
            file.contains("statically linked") || file.contains("static-pie linked"),
            "{}: file says {file}",
            path.display()
        );
    }
}

#[test]
#[ignore = "needs `make static` (run by `make test`)"]
fn x86_64_build_is_static() {
    assert_static_build(STATIC_TARGETS[0], elf::EM_X86_64);
}

#[test]
#[ignore = "needs `make static` (run by `make test`)"]
fn aarch64_build_is_static() {
    assert_static_build(STATIC_TARGETS[1], elf::EM_AARCH64);
}

/// The same reading calls this glibc-linked test binary dynamic: the check can fail.
#[test]
fn a_glibc_binary_is_seen_as_dynamic() {
    let exe = std::env::current_exe().expect("current_exe");
    let linkage = Linkage::read(&exe);
    assert!(
        linkage
            .interpreter
            .as_deref()
            .is_some_and(|i| i.contains("ld-linux")),
        "{linkage:?}"
    );
    assert!(linkage.needed > 0, "{linkage:?}");
    assert!(!linkage.is_static());
}

/// Run the static shim of `triple` with `arg`, through `runner` (none: natively); its
/// stdout, after asserting it exited 0.
fn run_shim(runner: Option<&str>, triple: &str, arg: &str) -> String {
    let shim = static_binary(triple, SHIM);
    let mut cmd = match runner {
        Some(r) => {
            let mut c = Command::new(r);
            c.arg(&shim);
            c
        }
        None => Command::new(&shim),
    };
    cmd.arg(arg);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e} (qemu-user-static: scripts/setup.sh)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `<shim> --version` exits 0 and names `triple`.
fn assert_version_names_target(runner: Option<&str>, triple: &str) {
    let stdout = run_shim(runner, triple, "--version");
    let want = format!("target: {triple}");
    assert!(
        stdout.lines().any(|l| l.trim() == want),
        "--version printed no `{want}` line:\n{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.trim().starts_with("build: ")
            && l.contains(", libc musl static, libseccomp static, ")),
        "--version does not say it is static:\n{stdout}"
    );
}

/// `<shim> --self-check` (build wasmtime's engines, compile a WASI module with Cranelift
/// for the binary's own machine, run the generated code) passes and names `triple`.
fn assert_self_check_passes(runner: Option<&str>, triple: &str) {
    let stdout = run_shim(runner, triple, "--self-check");
    assert!(
        stdout.starts_with("self-check: ok (") && stdout.contains(&format!(", {triple}, ")),
        "--self-check printed {stdout:?}"
    );
}

#[test]
#[ignore = "needs `make static` (run by `make test`)"]
fn x86_64_shim_runs_and_names_its_target() {
    assert_version_names_target(None, STATIC_TARGETS[0]);
}

#[test]
#[ignore = "needs `make static` (run by `make test`)"]
fn aarch64_shim_runs_under_qemu_and_names_its_target() {
    assert_version_names_target(Some(QEMU_AARCH64), STATIC_TARGETS[1]);
}

#[test]
#[ignore = "needs `make static` (run by `make test`)"]
fn x86_64_shim_passes_its_self_check() {
    assert_self_check_passes(None, STATIC_TARGETS[0]);
}

/// Cranelift's aarch64 code, wasmtime's trap handling and the pooling allocator's address
/// space reservation, as the musl build has them, on an emulated aarch64.
#[test]
#[ignore = "needs `make static` (run by `make test`)"]
fn aarch64_shim_compiles_and_runs_wasm_under_qemu() {
    assert_self_check_passes(Some(QEMU_AARCH64), STATIC_TARGETS[1]);
}
