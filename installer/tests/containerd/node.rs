//! The node the installer tests install onto: a private containerd started (and restarted)
//! by a script under a temp host root, with its own config, sockets, state and CNI conf dir
//! (never the system containerd's), and the CRI checks a node with or without the
//! `wasmpod` runtime must pass.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmpod_installer::tomledit::{self, ConfigVersion};
use wasmpod_test::containerd::{
    CRI_HANDLER, CRI_NAMESPACE, PAUSE_IMAGE, SHIM_BINARY, shim_processes_of, shim_socket_name,
};
use wasmpod_test::cri::{CriClient, CriError, PodConfig, TestCgroup, api};
use wasmpod_test::image::ImageBuilder;

/// Where containerd (any instance) puts shim sockets.
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// The containerd binaries to test: `(label, bin dir or None for PATH)`.
pub fn containerds() -> Vec<(String, Option<PathBuf>)> {
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

pub fn require_root_and_containerd() {
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

pub fn run(cmd: &mut Command) -> String {
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
pub struct Ctrd {
    /// Everything of this node: the host root, containerd's root, state and sockets.
    pub dir: tempfile::TempDir,
    /// The `containerd` binary.
    bin: PathBuf,
    /// Its `ctr`.
    pub ctr: PathBuf,
}

impl Ctrd {
    pub fn host(&self) -> PathBuf {
        self.dir.path().join("host")
    }
    pub fn config(&self) -> PathBuf {
        self.host().join("etc/containerd/config.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }
    pub fn restarts(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("restarts"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
    pub fn restart_script(&self) -> PathBuf {
        self.dir.path().join("restart.sh")
    }

    pub fn start(label: &str, bin_dir: Option<&Path>) -> Self {
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
    pub fn import_pause_image(&self) {
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
    pub fn cri(&self, label: &str) -> CriClient {
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
    pub fn cgroup(&self) -> TestCgroup {
        let tag = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        TestCgroup::new(&tag)
    }

    /// A hostNetwork pod `name` (no CNI needed) under `cgroup`, handler `wasmpod`.
    pub fn pod(&self, name: &str, cgroup: &TestCgroup) -> PodConfig {
        PodConfig::new(name, &self.dir.path().join("pods"))
            .host_network(true)
            .cgroup_parent(cgroup.pod_parent(name))
            .runtime_handler(CRI_HANDLER)
    }

    /// What a pod of this containerd left behind: shim processes (and descendants), mounts
    /// under the temp dir, the shim sockets of `sandboxes`, and cgroups below the pod's
    /// `cgroup_parent` (the parent itself is kubelet's to remove). Polls up to 10 s (shims
    /// exit asynchronously); empty when nothing is left.
    pub fn leftovers(&self, sandboxes: &[&str], pod: &PodConfig) -> Vec<String> {
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

    pub fn wait_ready(&self) {
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

    pub fn dump(&self) -> toml_edit::DocumentMut {
        let out = run(Command::new(&self.bin)
            .arg("--config")
            .arg(self.config())
            .args(["config", "dump"]));
        tomledit::parse("dump", &out).unwrap()
    }

    /// The label calls the installer made (a fake `kubectl` first on its PATH records them).
    pub fn kubectl_calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kubectl.log")).unwrap_or_default()
    }

    pub fn installer(&self, verb: &str, shim: &Path) -> Command {
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
pub fn mounts_under(dir: &Path) -> Vec<String> {
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
pub fn sandbox_runs_with_wasmpod(c: &Ctrd, label: &str) {
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
pub fn sandbox_refused_without_wasmpod(c: &Ctrd, label: &str) {
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
pub fn signal(sig: &str, pid: i32) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

pub fn runtime_in_dump(doc: &toml_edit::DocumentMut) -> Option<String> {
    let version = tomledit::config_version(doc).unwrap_or(ConfigVersion::V2);
    tomledit::runtime_type(doc, version, "wasmpod").map(str::to_owned)
}
