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
//!    then, as kubelet would, a CRI `RunPodSandbox` with `runtime_handler: wasmpod` (a
//!    hostNetwork pod, so no CNI is involved) must give a READY sandbox served by the shim
//!    the installer put in `<host root>/usr/local/bin` (the installer runs with
//!    `--no-runtime-path` and containerd's `PATH` starts with that directory); StopPodSandbox
//!    and RemovePodSandbox leave no shim process, mount, shim socket or cgroup;
//! 4. runs install again: nothing changes, no restart;
//! 5. runs `uninstall`: one more restart, the config file is the stock one byte for byte,
//!    the runtime is gone, the shim and the state file are removed, and `RunPodSandbox` with
//!    handler `wasmpod` is refused (`no runtime for "wasmpod" is configured`).
//!
//! The "stock" config carries a few test-only CRI settings this machine needs (see
//! `shared/FIELD-NOTES.md`): `restrict_oom_score_adj`, a private CNI conf dir, and the
//! sandbox image `localhost/pause:latest` (busybox, imported into `k8s.io` at start, never
//! pulled). They are written before the installer runs, so it has to preserve them.
//!
//! Needs root, containerd, busybox-static (`scripts/setup.sh`) and the built shim
//! (`cargo build -p containerd-shim-wasmpod`, or `$WASMPOD_SHIM`); fails with a clear message
//! otherwise.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmpod_installer::tomledit::{self, ConfigVersion};
use wasmpod_test::containerd::{
    CRI_HANDLER, CRI_NAMESPACE, PAUSE_IMAGE, SHIM_BINARY, locate_shim, shim_processes_of,
    shim_socket_name,
};
use wasmpod_test::cri::{CriClient, CriError, PodConfig, TestCgroup, api};
use wasmpod_test::image::ImageBuilder;

/// Where containerd (any instance) puts shim sockets.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

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
        // Test-only CRI settings so a pod sandbox can run on this machine; part of the
        // "stock" config, so the installer must keep them and uninstall restore them.
        let cri = match version {
            ConfigVersion::V3 => "io.containerd.cri.v1.runtime",
            _ => "io.containerd.grpc.v1.cri",
        };
        // Root here lacks CAP_SYS_RESOURCE: the sandbox's oom_score_adj -998 is refused.
        set(
            &mut doc,
            &["plugins", cri, "restrict_oom_score_adj"],
            true.into(),
        );
        // containerd creates and watches the CNI conf dir: keep it off the host's
        // /etc/cni/net.d (the hostNetwork pod needs no CNI).
        set(
            &mut doc,
            &["plugins", cri, "cni", "conf_dir"],
            path("cni/conf"),
        );
        // The sandbox image: a local one imported at start (below), never pulled.
        let sandbox_image: &[&str] = match version {
            ConfigVersion::V3 => &[
                "plugins",
                "io.containerd.cri.v1.images",
                "pinned_images",
                "sandbox",
            ],
            _ => &["plugins", "io.containerd.grpc.v1.cri", "sandbox_image"],
        };
        set(&mut doc, sandbox_image, PAUSE_IMAGE.into());
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
        c.import_pause_image();
        c
    }

    /// Build [`PAUSE_IMAGE`] (busybox: a shell that sleeps until SIGTERM) and import it into
    /// `k8s.io`, as the CRI suite does: CRI resolves and unpacks the sandbox image even
    /// though the wasmpod shim runs the sandbox itself.
    fn import_pause_image(&self) {
        let tar = self.dir.path().join("pause.tar");
        ImageBuilder::busybox(PAUSE_IMAGE)
            .unwrap_or_else(|e| panic!("building {PAUSE_IMAGE}: {e}"))
            .entrypoint(["/bin/sh", "-c"])
            .cmd(["trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"])
            .write_tar(&tar)
            .unwrap_or_else(|e| panic!("writing {}: {e}", tar.display()));
        run(Command::new(&self.ctr)
            .arg("--address")
            .arg(self.socket())
            .args(["-n", CRI_NAMESPACE, "images", "import", "--all-platforms"])
            .arg(&tar));
        let _ = std::fs::remove_file(&tar);
    }

    /// A CRI client, once the CRI service answers `Status` with RuntimeReady (it may
    /// still be initialising right after a restart).
    fn cri(&self, label: &str) -> CriClient {
        let start = Instant::now();
        loop {
            let last = CriClient::connect(self.socket()).and_then(|cri| {
                let status = cri.status()?;
                let ready = status.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.r#type == "RuntimeReady" && c.status)
                });
                Ok(ready.then_some(cri).ok_or(status))
            });
            match last {
                Ok(Ok(cri)) => return cri,
                last if start.elapsed() > Duration::from_secs(30) => {
                    panic!("{label}: CRI not ready after 30 s: {last:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A cgroup subtree for this containerd's pods.
    fn cgroup(&self) -> TestCgroup {
        let tag = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        TestCgroup::new(&tag)
    }

    /// A hostNetwork pod `name` (no CNI needed) under `cgroup`, handler `wasmpod`.
    fn pod(&self, name: &str, cgroup: &TestCgroup) -> PodConfig {
        PodConfig::new(name, &self.dir.path().join("pods"))
            .host_network(true)
            .cgroup_parent(cgroup.pod_parent(name))
            .runtime_handler(CRI_HANDLER)
    }

    /// What a pod of this containerd left behind: shim processes (and descendants), mounts
    /// under the temp dir, the shim sockets of `sandboxes`, and cgroups below the pod's
    /// `cgroup_parent` (the parent itself is kubelet's to remove). Polls up to 10 s (shims
    /// exit asynchronously); empty when nothing is left.
    fn leftovers(&self, sandboxes: &[&str], pod: &PodConfig) -> Vec<String> {
        let address = self.socket().to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut left: Vec<String> = shim_processes_of(&self.socket())
                .into_iter()
                .map(|p| format!("process {}: {}", p.pid, p.cmdline.join(" ")))
                .collect();
            left.extend(
                mounts_under(self.dir.path())
                    .into_iter()
                    .map(|m| format!("mount {m}")),
            );
            left.extend(
                sandboxes
                    .iter()
                    .map(|id| {
                        Path::new(SHIM_SOCKET_DIR).join(shim_socket_name(
                            &address,
                            CRI_NAMESPACE,
                            id,
                        ))
                    })
                    .filter(|s| s.exists())
                    .map(|s| format!("shim socket {}", s.display())),
            );
            if let Some(parent) = &pod.cgroup_parent {
                left.extend(
                    TestCgroup::dirs_below(parent)
                        .into_iter()
                        .map(|d| format!("cgroup {}", d.display())),
                );
            }
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
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

    /// The label calls the installer made (a fake `kubectl` first on its PATH records them).
    fn kubectl_calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kubectl.log")).unwrap_or_default()
    }

    fn installer(&self, verb: &str, shim: &Path) -> Command {
        let fakebin = self.dir.path().join("fakebin");
        std::fs::create_dir_all(&fakebin).unwrap();
        let kubectl = fakebin.join("kubectl");
        std::fs::write(
            &kubectl,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n",
                self.dir.path().join("kubectl.log").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmpod-installer"));
        cmd.env(
            "PATH",
            format!(
                "{}:{}",
                fakebin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("KUBERNETES_SERVICE_HOST");
        cmd.arg(verb)
            .arg("--host-root")
            .arg(self.host())
            .args([
                "--host-exec",
                "direct",
                "--cgroup-driver",
                "cgroupfs",
                "--node-name",
                "node-1",
                "--no-runtime-path",
            ])
            .arg("--containerd-bin")
            .arg(&self.bin)
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
        // Shims of a pod a failed check did not tear down would outlive containerd.
        let shims = shim_processes_of(&self.socket());
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            signal("-TERM", pid);
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            signal("-KILL", pid);
        }
        if !shims.is_empty() {
            for p in shims {
                signal("-KILL", p.pid);
            }
            // Give them a moment to release their mounts.
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut mounts = mounts_under(self.dir.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
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

/// Mount points under `dir` (octal escapes in mountinfo are not decoded: the temp dir has
/// none).
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Step 3, kubelet's path: RunPodSandbox with handler `wasmpod` gives a READY sandbox served
/// by the installed shim; StopPodSandbox + RemovePodSandbox leave nothing behind.
fn sandbox_runs_with_wasmpod(c: &Ctrd, label: &str) {
    let cri = c.cri(label);
    let cgroup = c.cgroup();
    let config = c.pod("installer-check", &cgroup);
    let pod = cri.run_pod(&config).unwrap_or_else(|e| {
        panic!("{label}: RunPodSandbox with handler {CRI_HANDLER} after install: {e}")
    });
    let status = cri
        .pod_status(&pod.id)
        .unwrap_or_else(|e| panic!("{label}: {e}"))
        .status
        .unwrap_or_else(|| panic!("{label}: PodSandboxStatus without status"));
    assert_eq!(
        status.state,
        api::PodSandboxState::SandboxReady as i32,
        "{label}: sandbox not ready: {status:?}"
    );
    assert!(
        status.runtime_handler.is_empty() || status.runtime_handler == CRI_HANDLER,
        "{label}: sandbox runs with handler {:?}",
        status.runtime_handler
    );
    let installed = c.host().join("usr/local/bin").join(SHIM_BINARY);
    let shims = shim_processes_of(&c.socket());
    assert!(
        shims.iter().any(|p| {
            !p.is_transient()
                && std::fs::read_link(format!("/proc/{}/exe", p.pid)).is_ok_and(|e| e == installed)
        }),
        "{label}: no shim process runs {}: {shims:?}",
        installed.display()
    );

    eprintln!(
        "{label}: sandbox {} READY, served by {}",
        pod.id,
        installed.display()
    );

    cri.stop_and_remove_pod(&pod.id)
        .unwrap_or_else(|e| panic!("{label}: tearing the sandbox down: {e}"));
    let pods = cri.list_pods().unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(pods.is_empty(), "{label}: pods left: {pods:?}");
    let left = c.leftovers(&[&pod.id], &config);
    assert!(
        left.is_empty(),
        "{label}: left behind by the sandbox:\n{}",
        left.join("\n")
    );
    let busy = cgroup.remove();
    assert!(busy.is_empty(), "{label}: cgroups busy: {busy:?}");
}

/// Step 5, after uninstall: RunPodSandbox with handler `wasmpod` is refused and starts
/// nothing.
fn sandbox_refused_without_wasmpod(c: &Ctrd, label: &str) {
    let cri = c.cri(label);
    let cgroup = c.cgroup();
    let config = c.pod("installer-gone", &cgroup);
    match cri.run_pod(&config) {
        Ok(pod) => {
            let _ = cri.stop_and_remove_pod(&pod.id);
            panic!("{label}: RunPodSandbox with handler {CRI_HANDLER} succeeded after uninstall");
        }
        Err(CriError::Rpc { message, .. }) => {
            assert!(
                message.contains(&format!("no runtime for {CRI_HANDLER:?} is configured")),
                "{label}: RunPodSandbox failed, but not for the missing handler: {message}"
            );
            eprintln!("{label}: after uninstall RunPodSandbox is refused: {message}");
        }
        Err(e) => panic!("{label}: RunPodSandbox after uninstall: {e}"),
    }
    let pods = cri.list_pods().unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(pods.is_empty(), "{label}: pods left: {pods:?}");
    let left = c.leftovers(&[], &config);
    assert!(
        left.is_empty(),
        "{label}: left behind by the refused sandbox:\n{}",
        left.join("\n")
    );
    let busy = cgroup.remove();
    assert!(busy.is_empty(), "{label}: cgroups busy: {busy:?}");
}

/// `kill SIG PID`, quietly (the process may be gone already).
fn signal(sig: &str, pid: i32) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

fn runtime_in_dump(doc: &toml_edit::DocumentMut) -> Option<String> {
    let version = tomledit::config_version(doc).unwrap_or(ConfigVersion::V2);
    tomledit::runtime_type(doc, version, "wasmpod").map(str::to_owned)
}

#[test]
fn install_registers_with_real_containerd_and_uninstall_restores_it() {
    require_root_and_containerd();
    // The real shim: CRI starts the copy the installer puts on containerd's PATH.
    let shim = locate_shim().unwrap_or_else(|e| panic!("{e:#}"));

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
        sandbox_runs_with_wasmpod(&c, &label);

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
        sandbox_refused_without_wasmpod(&c, &label);
    }
}

/// What must hold after a refused install: containerd serves (CRI plugin ok), the config is
/// `config` byte for byte, no shim or state was left, and the node was never labelled.
fn assert_node_unchanged(c: &Ctrd, label: &str, config: &[u8]) {
    c.wait_ready();
    assert_eq!(
        std::fs::read(c.config()).unwrap(),
        config,
        "{label}: config byte-identical"
    );
    let plugins = run(Command::new(&c.ctr)
        .arg("--address")
        .arg(c.socket())
        .args(["plugins", "ls"]));
    assert!(
        plugins
            .lines()
            .any(|l| l.contains(" cri ") && l.trim_end().ends_with("ok")),
        "{label}: CRI plugin not ok:\n{plugins}"
    );
    assert!(
        !c.host().join("usr/local/bin").join(SHIM_BINARY).exists(),
        "{label}: shim left installed"
    );
    assert!(
        !c.host().join("var/lib/wasmpod/install-state.json").exists(),
        "{label}: state left"
    );
    let calls = c.kubectl_calls();
    assert!(
        !calls.contains("wasmpod.dev/installed=true"),
        "{label}: node labelled: {calls}"
    );
}

#[test]
fn a_config_containerd_rejects_changes_nothing() {
    require_root_and_containerd();
    let shim = locate_shim().unwrap_or_else(|e| panic!("{e:#}"));
    for (label, bin_dir) in containerds() {
        eprintln!("--- containerd {label}");
        let c = Ctrd::start(&label, bin_dir.as_deref());
        // Someone edited the config without restarting containerd: a bool given as a string.
        // The running containerd has not read it; a restart would leave the node without
        // a container runtime.
        let stock = std::fs::read_to_string(c.config()).unwrap();
        let broken = stock.replacen("enable_selinux = false", "enable_selinux = \"yes\"", 1);
        assert_ne!(broken, stock, "{label}: no enable_selinux line to break");
        std::fs::write(c.config(), &broken).unwrap();

        let out = c.installer("install", &shim).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{label}: exit 6:\n{stderr}");
        assert!(
            stderr.contains("containerd refuses the new configuration")
                && (stderr.contains("EnableSelinux") || stderr.contains("to bool")),
            "{label}: containerd's message is passed on:\n{stderr}"
        );
        assert_eq!(c.restarts(), 0, "{label}: containerd not restarted");
        assert_node_unchanged(&c, &label, broken.as_bytes());
        let candidates: Vec<_> = std::fs::read_dir(c.config().parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "config.toml")
            .map(|e| e.file_name())
            .collect();
        assert!(candidates.is_empty(), "{label}: left {candidates:?}");
    }
}

#[test]
fn a_failing_restart_puts_every_file_back_and_containerd_serves() {
    require_root_and_containerd();
    let shim = locate_shim().unwrap_or_else(|e| panic!("{e:#}"));
    for (label, bin_dir) in containerds() {
        eprintln!("--- containerd {label}");
        let c = Ctrd::start(&label, bin_dir.as_deref());
        let stock = std::fs::read(c.config()).unwrap();
        // containerd dies on the new config (as when a plugin fails to load it) and the
        // restart command fails; with the old config it starts again.
        let failing = c.dir.path().join("failing-restart.sh");
        std::fs::write(
            &failing,
            format!(
                "if grep -q io.containerd.wasmpod.v1 {config}; then\n  kill -KILL $(cat {pid})\n  echo 'containerd exited: failed to start with the new configuration' >&2\n  exit 1\nfi\nexec sh {restart}\n",
                config = c.config().display(),
                pid = c.dir.path().join("pid").display(),
                restart = c.restart_script().display(),
            ),
        )
        .unwrap();
        let mut cmd = c.installer("install", &shim);
        cmd.arg("--restart-command")
            .arg(format!("sh {}", failing.display()));
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{label}: exit 3:\n{stderr}");
        assert!(
            stderr.contains("failed to start with the new configuration")
                && stderr.contains("every file was put back as it was")
                && stderr.contains(
                    "containerd was restarted with its previous configuration and serves"
                ),
            "{label}:\n{stderr}"
        );
        assert_eq!(c.restarts(), 1, "{label}: restarted again once");
        assert_node_unchanged(&c, &label, &stock);
        assert_eq!(runtime_in_dump(&c.dump()), None);
    }
}

#[test]
fn uninstall_is_refused_while_a_wasm_pod_runs_and_forced_works() {
    require_root_and_containerd();
    let shim = locate_shim().unwrap_or_else(|e| panic!("{e:#}"));
    for (label, bin_dir) in containerds() {
        eprintln!("--- containerd {label}");
        let c = Ctrd::start(&label, bin_dir.as_deref());
        let stock = std::fs::read(c.config()).unwrap();
        run(&mut c.installer("install", &shim));
        assert!(c.kubectl_calls().contains("wasmpod.dev/installed=true"));
        let installed = std::fs::read(c.config()).unwrap();
        let cri = c.cri(&label);
        let cgroup = c.cgroup();
        let pod = cri
            .run_pod(&c.pod("installer-busy", &cgroup))
            .unwrap_or_else(|e| panic!("{label}: RunPodSandbox: {e}"));

        let out = c.installer("uninstall", &shim).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{label}: exit 7:\n{stderr}");
        assert!(
            stderr.contains(&format!("{CRI_NAMESPACE}/{}", pod.id))
                && stderr.contains("pass --force"),
            "{label}: names the running pod:\n{stderr}"
        );
        assert!(
            c.kubectl_calls().contains("wasmpod.dev/installed-"),
            "{label}: label removed first: {}",
            c.kubectl_calls()
        );
        assert_eq!(std::fs::read(c.config()).unwrap(), installed, "{label}");
        assert_eq!(
            c.restarts(),
            1,
            "{label}: refused uninstall restarts nothing"
        );
        assert!(c.host().join("usr/local/bin").join(SHIM_BINARY).exists());

        let out = c
            .installer("uninstall", &shim)
            .arg("--force")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{label}: forced uninstall:\n{stderr}");
        assert!(
            stderr.contains("--force: uninstalling while"),
            "{label}: {stderr}"
        );
        c.wait_ready();
        assert_eq!(std::fs::read(c.config()).unwrap(), stock, "{label}");
        // The pod's shim outlives the uninstall (that is what --force means); tear it down
        // as far as containerd still can, Ctrd's drop kills what is left.
        let _ = c.cri(&label).stop_and_remove_pod(&pod.id);
        drop(c);
        let _ = cgroup.remove();
    }
}
