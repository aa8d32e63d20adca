//! The installer against a real containerd: for the system's containerd (1.6 on Debian 12)
//! and every version fetched by `scripts/fetch-containerd.sh` into
//! `$HOME/.cache/wasmpod/containerd/<version>/usr/bin/` (1.7, 2.1), this
//!
//! 1. writes that containerd's own `containerd config default` as
//!    `<host root>/etc/containerd/config.toml`, changing only root, state, sockets and
//!    metrics to private paths (never the system containerd's), and starts containerd;
//! 2. runs `wasmpod-installer install` against that host root, with a restart command that
//!    stops and starts this containerd and `containerd config dump` as the probe;
//! 3. checks containerd answers, its CRI plugin loaded, and its merged config has runtime
//!    `wasmpod` (`io.containerd.wasmpod.v1`) under the CRI plugin path of its version;
//! 4. runs install again: nothing changes, no restart;
//! 5. runs `uninstall`: one more restart, the config file is the stock one byte for byte,
//!    the runtime is gone, the shim and the state file are removed.
//!
//! Needs root and containerd (`scripts/setup.sh`); fails with a clear message otherwise.
//!
//! HOOK(CRI): between steps 3 and 4, a CRI `RunPodSandbox` with `runtime_handler: wasmpod`
//! against `ctrd.socket()` is the full proof; the installer runs with `--no-runtime-path` and
//! containerd's `PATH` starts with `<host root>/usr/local/bin`, so the shim installed there is
//! the one CRI would start. Add it with the CRI client in `wasmpod-test`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmpod_installer::tomledit::{self, ConfigVersion};

/// The containerd binaries to test: `(label, bin dir or None for PATH)`.
fn containerds() -> Vec<(String, Option<PathBuf>)> {
    let mut out = vec![("system".to_owned(), None)];
    let cache = std::env::var_os("WASMPOD_CONTAINERD_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wasmpod/containerd"))
        });
    if let Some(cache) = cache
        && let Ok(entries) = std::fs::read_dir(&cache)
    {
        let mut found: Vec<_> = entries
            .flatten()
            .map(|e| e.path().join("usr/bin"))
            .filter(|bin| bin.join("containerd").is_file() && bin.join("ctr").is_file())
            .collect();
        found.sort();
        for bin in found {
            let label = bin
                .parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((label, Some(bin)));
        }
    }
    out
}

fn require_root_and_containerd() {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert_eq!(
        uid, 0,
        "this test needs root (it starts a private containerd): run it as root"
    );
    let ok = Command::new("containerd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs containerd on PATH (scripts/setup.sh installs it)"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private containerd started (and restarted) by a shell script, so the installer can
/// restart it with `--restart-command`.
struct Ctrd {
    dir: tempfile::TempDir,
    bin: PathBuf,
    ctr: PathBuf,
}

impl Ctrd {
    fn host(&self) -> PathBuf {
        self.dir.path().join("host")
    }
    fn config(&self) -> PathBuf {
        self.host().join("etc/containerd/config.toml")
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }
    fn restarts(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("restarts"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
    fn restart_script(&self) -> PathBuf {
        self.dir.path().join("restart.sh")
    }

    fn start(label: &str, bin_dir: Option<&Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wpi-")
            .tempdir_in("/tmp")
            .unwrap();
        let bin = bin_dir.map_or_else(|| PathBuf::from("containerd"), |d| d.join("containerd"));
        let ctr = bin_dir.map_or_else(|| PathBuf::from("ctr"), |d| d.join("ctr"));
        let c = Self { dir, bin, ctr };
        let stock = run(Command::new(&c.bin).args(["config", "default"]));
        let mut doc = tomledit::parse("config default", &stock).unwrap();
        let version = tomledit::config_version(&doc).unwrap_or(ConfigVersion::V2);
        let d = c.dir.path();
        let set = |doc: &mut toml_edit::DocumentMut, keys: &[&str], value: toml_edit::Value| {
            let (last, parents) = keys.split_last().unwrap();
            let mut t = doc.as_table_mut() as &mut dyn toml_edit::TableLike;
            for k in parents {
                if t.get(k).is_none() {
                    let mut nt = toml_edit::Table::new();
                    nt.set_implicit(true);
                    t.insert(k, toml_edit::Item::Table(nt));
                }
                t = t.get_mut(k).unwrap().as_table_like_mut().unwrap();
            }
            t.insert(last, toml_edit::Item::Value(value));
        };
        let path = |p: &str| toml_edit::Value::from(d.join(p).display().to_string());
        set(&mut doc, &["root"], path("root"));
        set(&mut doc, &["state"], path("state"));
        set(&mut doc, &["grpc", "address"], path("c.sock"));
        set(&mut doc, &["ttrpc", "address"], path("c.ttrpc.sock"));
        set(&mut doc, &["debug", "address"], "".into());
        set(&mut doc, &["metrics", "address"], "".into());
        set(
            &mut doc,
            &["plugins", "io.containerd.internal.v1.opt", "path"],
            path("opt"),
        );
        if version == ConfigVersion::V3 {
            // 2.x enables NRI with a fixed socket; keep it off the system's.
            set(
                &mut doc,
                &["plugins", "io.containerd.nri.v1.nri", "disable"],
                true.into(),
            );
        }
        std::fs::create_dir_all(c.config().parent().unwrap()).unwrap();
        std::fs::write(c.config(), doc.to_string()).unwrap();
        let path_env = format!(
            "{}:{}",
            c.host().join("usr/local/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let script = format!(
            r#"#!/bin/sh
# Stops this test's containerd (if running) and starts it again; counts restarts.
set -e
cd {dir}
if [ -f pid ]; then
  pid=$(cat pid)
  kill -TERM "$pid" 2>/dev/null || true
  i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$pid" 2>/dev/null || true
  echo "{label}" >> restarts
fi
rm -f {sock}
PATH={path_env} setsid {bin} --config {config} >> containerd.log 2>&1 < /dev/null &
echo $! > pid
"#,
            dir = d.display(),
            sock = c.socket().display(),
            bin = c.bin.display(),
            config = c.config().display(),
        );
        std::fs::write(c.restart_script(), script).unwrap();
        run(Command::new("sh").arg(c.restart_script()));
        c.wait_ready();
        c
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let ok = Command::new(&self.ctr)
                .arg("--address")
                .arg(self.socket())
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not start; log:\n{}",
                std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn dump(&self) -> toml_edit::DocumentMut {
        let out = run(Command::new(&self.bin)
            .arg("--config")
            .arg(self.config())
            .args(["config", "dump"]));
        tomledit::parse("dump", &out).unwrap()
    }

    fn installer(&self, verb: &str, shim: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmpod-installer"));
        cmd.arg(verb)
            .arg("--host-root")
            .arg(self.host())
            .args([
                "--host-exec",
                "direct",
                "--cgroup-driver",
                "cgroupfs",
                "--no-label",
                "--no-runtime-path",
            ])
            .arg("--shim")
            .arg(shim)
            .arg("--restart-command")
            .arg(format!("sh {}", self.restart_script().display()))
            .arg("--probe-command")
            .arg(format!(
                "{} --config {} config dump",
                self.bin.display(),
                self.config().display()
            ))
            .arg("--containerd-socket")
            .arg(self.socket())
            .args(["--probe-timeout", "30", "--log-level", "debug"]);
        cmd
    }
}

impl Drop for Ctrd {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "containerd log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn runtime_in_dump(doc: &toml_edit::DocumentMut) -> Option<String> {
    let version = tomledit::config_version(doc).unwrap_or(ConfigVersion::V2);
    tomledit::runtime_type(doc, version, "wasmpod").map(str::to_owned)
}

#[test]
fn install_registers_with_real_containerd_and_uninstall_restores_it() {
    require_root_and_containerd();
    let work = tempfile::tempdir().unwrap();
    let shim = work.path().join("containerd-shim-wasmpod-v1");
    std::fs::write(&shim, b"#!/bin/sh\nexit 1\n").unwrap();

    for (label, bin_dir) in containerds() {
        eprintln!("--- containerd {label}");
        let c = Ctrd::start(&label, bin_dir.as_deref());
        let stock = std::fs::read(c.config()).unwrap();
        assert_eq!(runtime_in_dump(&c.dump()), None);

        let out = run(&mut c.installer("install", &shim));
        assert!(out.is_empty(), "install prints nothing on stdout: {out}");
        assert_eq!(c.restarts(), 1, "{label}: install restarts containerd once");
        c.wait_ready();
        assert_eq!(
            runtime_in_dump(&c.dump()).as_deref(),
            Some("io.containerd.wasmpod.v1"),
            "{label}: merged config registers wasmpod under its CRI plugin path"
        );
        let plugins = run(Command::new(&c.ctr)
            .arg("--address")
            .arg(c.socket())
            .args(["plugins", "ls"]));
        let cri = plugins
            .lines()
            .find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "))
            .unwrap_or_else(|| panic!("{label}: no CRI plugin in\n{plugins}"));
        assert!(
            cri.trim_end().ends_with("ok"),
            "{label}: CRI plugin not ok: {cri}"
        );
        assert!(
            c.host()
                .join("usr/local/bin/containerd-shim-wasmpod-v1")
                .is_file()
        );
        assert!(
            c.host()
                .join("var/lib/wasmpod/install-state.json")
                .is_file()
        );
        // HOOK(CRI): RunPodSandbox with runtime_handler "wasmpod" goes here.

        let installed = std::fs::read(c.config()).unwrap();
        run(&mut c.installer("install", &shim));
        assert_eq!(c.restarts(), 1, "{label}: second install does not restart");
        assert_eq!(std::fs::read(c.config()).unwrap(), installed);

        let dry = run(c.installer("uninstall", &shim).arg("--dry-run"));
        assert!(
            dry.contains("-[plugins."),
            "{label}: dry-run uninstall shows the removal:\n{dry}"
        );
        assert_eq!(c.restarts(), 1);

        run(&mut c.installer("uninstall", &shim));
        assert_eq!(c.restarts(), 2, "{label}: uninstall restarts once");
        c.wait_ready();
        assert_eq!(
            std::fs::read(c.config()).unwrap(),
            stock,
            "{label}: config restored byte for byte"
        );
        assert_eq!(runtime_in_dump(&c.dump()), None);
        assert!(
            !c.host()
                .join("usr/local/bin/containerd-shim-wasmpod-v1")
                .exists()
        );
        assert!(!c.host().join("var/lib/wasmpod/install-state.json").exists());
    }
}
