//! The installer runs the shim it installed before labelling the node, and refuses a shim
//! that cannot run there: one built for another architecture, one whose shared library is
//! missing (what "GLIBC_2.34 not found" is on an older node: the dynamic loader refuses it
//! before `main`), one on a `noexec` mount. Each refusal exits 5 with the cause, leaves the
//! config byte-identical, puts the previous shim file back (or removes the new one), writes
//! no state, restarts nothing and never labels the node. The real shim passes, and its
//! `--version` and `--self-check` lines are logged.
//!
//! The installer binary runs against a temp host root (`--host-exec direct`), with a fake
//! `kubectl` first on its PATH that records every label call. No containerd is needed: the
//! refusal comes before any restart (the passing case answers the probe's socket check with
//! a listening socket and skips the config dump).
//!
//! Needs root (the `noexec` case mounts a tmpfs), `cc` (Debian `gcc`) for the
//! missing-library case, and the built shim (`cargo build -p containerd-shim-wasmpod`, or
//! `$WASMPOD_SHIM`) for the passing case; fails with a clear message otherwise.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wasmpod_test::containerd::locate_shim;

const SHIM: &str = "containerd-shim-wasmpod-v1";
const CONFIG: &str = "# the node's containerd config\nversion = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.10\" # pinned\n";

/// A host root with a containerd config, a fake `kubectl`, and a restart command that only
/// records.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wpi-check-")
            .tempdir_in("/tmp")
            .unwrap();
        let node = Self { dir };
        std::fs::create_dir_all(node.config().parent().unwrap()).unwrap();
        std::fs::write(node.config(), CONFIG).unwrap();
        let bin = node.dir.path().join("fakebin");
        std::fs::create_dir_all(&bin).unwrap();
        let kubectl = bin.join("kubectl");
        std::fs::write(
            &kubectl,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n",
                node.dir.path().join("kubectl.log").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
        node
    }

    fn host(&self) -> PathBuf {
        self.dir.path().join("host")
    }
    fn config(&self) -> PathBuf {
        self.host().join("etc/containerd/config.toml")
    }
    fn installed(&self) -> PathBuf {
        self.host().join("usr/local/bin").join(SHIM)
    }
    fn state(&self) -> PathBuf {
        self.host().join("var/lib/wasmpod/install-state.json")
    }
    fn kubectl_calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kubectl.log")).unwrap_or_default()
    }
    fn restarted(&self) -> bool {
        self.dir.path().join("restarted").exists()
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// `wasmpod-installer install --shim <shim>` against this node.
    fn install(&self, shim: &Path) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.path().join("fakebin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new(env!("CARGO_BIN_EXE_wasmpod-installer"))
            .arg("install")
            .arg("--host-root")
            .arg(self.host())
            .args(["--host-exec", "direct", "--cgroup-driver", "cgroupfs"])
            .args(["--node-name", "node-1", "--no-validate"])
            .arg("--shim")
            .arg(shim)
            .arg("--restart-command")
            .arg(format!(
                "touch {}",
                self.dir.path().join("restarted").display()
            ))
            .args(["--probe-command", "none", "--probe-timeout", "10"])
            .arg("--containerd-socket")
            .arg(self.socket())
            .env("PATH", path)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    }

    /// An install of `shim` that must be refused for `cause`; everything is as before.
    fn assert_refused(&self, shim: &Path, cause: &str) -> String {
        let before_shim = std::fs::read(self.installed()).ok();
        let out = self.install(shim);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(5),
            "exit 5 (shim cannot run):\n{stderr}"
        );
        assert!(
            stderr.contains(cause),
            "the cause {cause:?} is named:\n{stderr}"
        );
        assert!(
            stderr.contains("every file was put back as it was")
                && stderr.contains("the node is not labelled"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(self.config()).unwrap(),
            CONFIG,
            "config byte-identical"
        );
        assert_eq!(
            std::fs::read(self.installed()).ok(),
            before_shim,
            "shim file as before"
        );
        assert!(!self.state().exists(), "no state written");
        assert!(!self.restarted(), "containerd not restarted");
        let calls = self.kubectl_calls();
        assert!(
            !calls.contains("wasmpod.dev/installed=true"),
            "node labelled: {calls}"
        );
        assert!(
            calls.contains("wasmpod.dev/installed-"),
            "stale label removed: {calls}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(self.installed().parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != SHIM)
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
        stderr
    }
}

fn require_root() {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1);
    assert_eq!(
        uid, 0,
        "this test needs root (it mounts a tmpfs): run it as root"
    );
}

/// `file`'s description of `path`, when `file` is installed.
fn file_says(path: &Path) -> Option<String> {
    let out = Command::new("file").arg("-b").arg(path).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A minimal ELF64 executable for `machine` (no code: the check must refuse it from its
/// header alone).
fn elf_for(machine: u16) -> Vec<u8> {
    let mut b = vec![0u8; 64 + 56];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[24..32].copy_from_slice(&0x400078u64.to_le_bytes()); // entry
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    b[52..54].copy_from_slice(&64u16.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    b[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b[68..72].copy_from_slice(&5u32.to_le_bytes()); // R+X
    b[80..88].copy_from_slice(&0x400000u64.to_le_bytes());
    b[88..96].copy_from_slice(&0x400000u64.to_le_bytes());
    b[96..104].copy_from_slice(&120u64.to_le_bytes());
    b[104..112].copy_from_slice(&120u64.to_le_bytes());
    b[112..120].copy_from_slice(&0x1000u64.to_le_bytes());
    b
}

#[test]
fn a_shim_for_another_architecture_is_refused() {
    let node = Node::new();
    let (foreign, name) = if std::env::consts::ARCH == "aarch64" {
        (62, "x86_64")
    } else {
        (183, "aarch64")
    };
    let shim = node.dir.path().join(SHIM);
    std::fs::write(&shim, elf_for(foreign)).unwrap();
    if let Some(says) = file_says(&shim) {
        let want = if foreign == 183 { "aarch64" } else { "x86-64" };
        assert!(says.contains(want), "file(1) says {says}");
    }
    // A shim of ours that works is already there: it is what stays.
    std::fs::create_dir_all(node.installed().parent().unwrap()).unwrap();
    std::fs::write(node.installed(), b"#!/bin/sh\necho previous shim\n").unwrap();
    std::fs::set_permissions(node.installed(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = node.assert_refused(&shim, &format!("it is built for {name}"));
    assert!(
        stderr.contains(&format!("but the node is {}", std::env::consts::ARCH)),
        "{stderr}"
    );
    let mode = std::fs::metadata(node.installed())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "previous shim keeps its mode");
    assert!(
        !node
            .host()
            .join("var/lib/wasmpod/backup")
            .join(SHIM)
            .exists(),
        "the backup of the previous shim is not left behind"
    );
}

#[test]
fn a_shim_missing_a_shared_library_is_refused_with_the_loaders_message() {
    let node = Node::new();
    let d = node.dir.path();
    std::fs::write(d.join("gone.c"), "int wasmpod_gone(void) { return 0; }\n").unwrap();
    std::fs::write(
        d.join("main.c"),
        "int wasmpod_gone(void);\nint main(void) { return wasmpod_gone(); }\n",
    )
    .unwrap();
    let cc = |args: &[&str]| {
        let out = Command::new("cc")
            .current_dir(d)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("this test needs a C compiler (apt-get install gcc): {e}"));
        assert!(
            out.status.success(),
            "cc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cc(&["-shared", "-fPIC", "-o", "libwasmpodgone.so", "gone.c"]);
    let rpath = format!("-Wl,-rpath,{}", d.display());
    cc(&["-o", SHIM, "main.c", "-L.", "-lwasmpodgone", &rpath]);
    // It runs while the library is there...
    assert!(Command::new(d.join(SHIM)).status().unwrap().success());
    // ...and the node lacks it.
    std::fs::remove_file(d.join("libwasmpodgone.so")).unwrap();
    node.assert_refused(
        &d.join(SHIM),
        "libwasmpodgone.so: cannot open shared object file",
    );
    assert!(!node.installed().exists(), "the new shim is removed");
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_shim_on_a_noexec_mount_is_refused() {
    require_root();
    let node = Node::new();
    let shim = locate_shim().unwrap_or_else(|e| panic!("{e:#}"));
    let bin = node.installed().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&bin).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "noexec,size=256m", "tmpfs"])
        .arg(&bin)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "mounting a noexec tmpfs on {}",
        bin.display()
    );
    let _mount = Mount(bin.clone());
    node.assert_refused(&shim, "is mounted noexec");
}

#[test]
fn the_real_shim_passes_and_its_version_is_logged() {
    let node = Node::new();
    let shim = locate_shim().unwrap_or_else(|e| panic!("{e:#}"));
    // The probe only checks that containerd's socket answers.
    let _listener = std::os::unix::net::UnixListener::bind(node.socket()).unwrap();
    let out = node.install(&shim);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "install failed:\n{stderr}");
    assert!(
        stderr.contains(&format!("shim: {SHIM} ")) && stderr.contains("shim:   wasmtime: "),
        "--version logged:\n{stderr}"
    );
    assert!(
        stderr.contains("shim: self-check: ok ("),
        "self-check logged:\n{stderr}"
    );
    assert!(node.restarted());
    assert!(node.kubectl_calls().contains("wasmpod.dev/installed=true"));
    assert_eq!(
        std::fs::read(node.installed()).unwrap(),
        std::fs::read(&shim).unwrap()
    );
}
