//! The CRI suite: kubelet's path to wasmpod, on containerd 1.6, 1.7 and 2.1.
//!
//! Each test starts a private containerd with CRI enabled ([`Containerd::builder`] with
//! [`with_cri`](wasmpod_test::containerd::ContainerdBuilder::with_cri): runtime handler
//! `wasmpod`, the loopback-only test CNI network, `localhost/pause:latest`), imports its
//! images into `k8s.io` (never pulls), and drives RunPodSandbox → CreateContainer →
//! StartContainer → ContainerStatus / the CRI log file → StopContainer → StopPodSandbox →
//! RemovePodSandbox through [`CriClient`], then checks that nothing is left: no shim
//! process, no pod cgroup, no mount, no netns.
//!
//! Every case runs once per containerd version (modules `containerd_1_6`, `containerd_1_7`,
//! `containerd_2_1`). 1.7 and 2.1 come from `scripts/fetch-containerd.sh` (run by
//! `scripts/setup.sh`; a test runs it itself when the cache is empty). A version whose
//! binaries cannot be fetched is skipped with a loud message, except under `CI`, where
//! that fails. Needs root, containerd, runc, busybox-static, containernetworking-plugins
//! and the built shim (`cargo build -p containerd-shim-wasmpod`); fails clearly otherwise.
//!
//! The tests of one binary run one at a time: CRI always uses namespace `k8s.io`, and
//! per-namespace runtime state dirs are shared between containerd instances.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmpod_fixtures::{p1, p2};
use wasmpod_test::containerd::{
    Containerd, ContainerdVersion, PAUSE_IMAGE, require_root_and_containerd,
};
use wasmpod_test::cri::{
    CONTAINER_RUNNING, ContainerConfig, CriClient, Pod, PodConfig, TestCgroup, api, stdout_lines,
};
use wasmpod_test::image::ImageBuilder;

/// One CRI test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

/// How long a short guest may take from StartContainer to exited.
const EXIT_WITHIN: Duration = Duration::from_secs(60);

/// A "node": a private containerd with CRI, a CRI client, a log root and a test-owned
/// cgroup subtree. Field order is drop order: client, containerd (kills shims), cgroups.
struct Node {
    cri: CriClient,
    c: Containerd,
    cgroup: TestCgroup,
    version: ContainerdVersion,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Node {
    /// Start a node on `version`, or `None` (after a loud message) when that version's
    /// binaries are not available outside CI.
    fn start(version: ContainerdVersion) -> Option<Self> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        require_root_and_containerd();
        assert!(
            Path::new(wasmpod_test::containerd::CNI_LOOPBACK).is_file(),
            "the CRI suite needs the loopback CNI plugin: apt-get install containernetworking-plugins (scripts/setup.sh)"
        );
        if let Err(e) = version.ensure_available() {
            let msg = format!(
                "\n!!!!!!!! SKIPPING the CRI test on {version}: its binaries could not be fetched: {e:#}\n!!!!!!!! run scripts/fetch-containerd.sh\n"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg}(CI must run every containerd version)");
            }
            eprintln!("{msg}");
            return None;
        }
        let c = Containerd::builder()
            .version(version)
            .with_cri()
            .start()
            .unwrap_or_else(|e| panic!("start {version} with CRI: {e:#}"));
        let cri = CriClient::connect(c.cri_socket()).expect("connect to CRI");
        let v = cri.version().expect("CRI Version");
        eprintln!(
            "cri: {version}: runtime {} {} (CRI {})",
            v.runtime_name, v.runtime_version, v.runtime_api_version
        );
        // The sandbox image was imported with ctr: pods need CRI to see it (lags on 2.x).
        assert!(
            cri.wait_image(PAUSE_IMAGE, Duration::from_secs(10))
                .expect("ImageStatus"),
            "{version}: {PAUSE_IMAGE} imported but CRI does not see it after 10 s"
        );
        let tag = c
            .dir()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .trim_start_matches("wasmpod-ctrd-")
            .to_owned();
        Some(Self {
            cri,
            c,
            cgroup: TestCgroup::new(&tag),
            version,
            _serial: serial,
        })
    }

    fn log_root(&self) -> PathBuf {
        self.c.dir().join("pods")
    }

    /// A pod config `name` under this node's cgroup subtree and log root.
    fn pod(&self, name: &str) -> PodConfig {
        PodConfig::new(name, &self.log_root()).cgroup_parent(self.cgroup.pod_parent(name))
    }

    /// Build and import (into `k8s.io`) `localhost/wasmpod/<name>:latest` whose
    /// entrypoint is `/<name>.wasm`; returns the reference.
    fn wasm_image(&self, name: &str, wasm: &[u8]) -> String {
        let reference = format!("localhost/wasmpod/{name}:latest");
        let entry = format!("/{name}.wasm");
        let tar = self.c.dir().join(format!("{name}.tar"));
        ImageBuilder::new(&reference)
            .platform("wasip1", "wasm")
            .entrypoint([entry.as_str()])
            .file(&entry, wasm.to_vec(), 0o755)
            .write_tar(&tar)
            .expect("write image tar");
        self.c.import_cri(&tar).expect("import image into k8s.io");
        self.assert_image_visible(&reference);
        reference
    }

    /// The busybox image for Linux sidecars.
    fn busybox_image(&self) -> String {
        let reference = "localhost/wasmpod/busybox:latest".to_owned();
        let tar = self.c.dir().join("busybox.tar");
        ImageBuilder::busybox(&reference)
            .expect("busybox image")
            .write_tar(&tar)
            .expect("write busybox tar");
        self.c.import_cri(&tar).expect("import busybox into k8s.io");
        self.assert_image_visible(&reference);
        reference
    }

    /// Waits (10 s at most) until CRI sees an image imported with `ctr`.
    fn assert_image_visible(&self, reference: &str) {
        assert!(
            self.cri
                .wait_image(reference, Duration::from_secs(10))
                .expect("ImageStatus"),
            "{reference} imported but CRI does not see it after 10 s"
        );
    }

    fn run_pod(&self, config: &PodConfig) -> Pod {
        self.c.note_group(&config.name);
        let pod = self
            .cri
            .run_pod(config)
            .unwrap_or_else(|e| panic!("{}: RunPodSandbox (handler wasmpod): {e}", self.version));
        self.c.note_group(&pod.id);
        pod
    }

    fn create_and_start(&self, pod: &Pod, config: &ContainerConfig) -> String {
        let id = self
            .cri
            .create_container(pod, config)
            .unwrap_or_else(|e| panic!("{}: CreateContainer {}: {e}", self.version, config.name));
        self.cri
            .start_container(&id)
            .unwrap_or_else(|e| panic!("{}: StartContainer {}: {e}", self.version, config.name));
        id
    }

    fn log_path(&self, pod: &Pod, config: &ContainerConfig) -> PathBuf {
        pod.config.log_directory.join(config.relative_log_path())
    }

    /// Run one container in a fresh pod until it exits; returns its status and stdout.
    fn run_to_exit(
        &self,
        pod_config: &PodConfig,
        config: &ContainerConfig,
    ) -> (Pod, api::ContainerStatus, Vec<String>) {
        let pod = self.run_pod(pod_config);
        let id = self.create_and_start(&pod, config);
        let status = self
            .cri
            .wait_exited(&id, EXIT_WITHIN)
            .unwrap_or_else(|e| panic!("{}: {e}", self.version));
        let log = stdout_lines(self.log_path(&pod, config));
        (pod, status, log)
    }

    /// What the pod's netns is: the path CRI put in the sandbox spec (from verbose
    /// PodSandboxStatus), if any.
    fn netns_path(&self, pod: &Pod) -> Option<String> {
        let status = self.cri.pod_status(&pod.id).ok()?;
        let info = status.info.get("info")?;
        let json: serde_json::Value = serde_json::from_str(info).ok()?;
        let namespaces = json
            .pointer("/runtimeSpec/linux/namespaces")?
            .as_array()?
            .clone();
        namespaces
            .iter()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .map(str::to_owned)
    }

    /// StopPodSandbox + RemovePodSandbox, then assert nothing of the pod is left.
    fn teardown(&self, pod: &Pod) {
        let netns = self.netns_path(pod);
        let netns_inode = netns
            .as_deref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        self.cri
            .stop_and_remove_pod(&pod.id)
            .unwrap_or_else(|e| panic!("{}: tearing down pod: {e}", self.version));
        self.assert_pod_gone(pod, netns.as_deref(), netns_inode);
    }

    fn assert_pod_gone(&self, pod: &Pod, netns: Option<&str>, netns_inode: Option<u64>) {
        let v = self.version;
        let pods = self.cri.list_pods().expect("ListPodSandbox");
        assert!(
            pods.iter().all(|p| p.id != pod.id),
            "{v}: pod still listed after RemovePodSandbox: {pods:?}"
        );
        let left = self.c.wait_no_leftovers(Duration::from_secs(10));
        assert!(
            left.is_empty(),
            "{v}: left behind after RemovePodSandbox:\n{left}"
        );
        if let Some(parent) = &pod.config.cgroup_parent {
            let dirs = wait_for(Duration::from_secs(5), || TestCgroup::dirs_below(parent));
            assert!(
                dirs.is_empty(),
                "{v}: cgroups left under the pod's cgroup_parent {parent}: {dirs:?}"
            );
        }
        if let Some(path) = netns {
            assert!(
                !Path::new(path).exists(),
                "{v}: pod netns {path} still exists after RemovePodSandbox"
            );
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            assert!(
                !mountinfo.contains(path),
                "{v}: pod netns {path} still mounted"
            );
        }
        if let Some(inode) = netns_inode {
            let holders = processes_in_netns(inode);
            assert!(
                holders.is_empty(),
                "{v}: processes still in the pod's netns (inode {inode}): {holders:?}"
            );
        }
    }
}

/// Poll `f` until it returns an empty Vec or `timeout` passes; returns the last value.
fn wait_for<T>(timeout: Duration, f: impl Fn() -> Vec<T>) -> Vec<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = f();
        if v.is_empty() || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pids whose network namespace has inode `inode`.
fn processes_in_netns(inode: u64) -> Vec<i32> {
    let want = format!("net:[{inode}]");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|l| l.to_string_lossy() == want)
        })
        .collect()
}

// --- the cases -----------------------------------------------------------------------

/// A pod with one wasm container that prints and exits 0: the log file has the line,
/// exit code 0, reason Completed; then nothing is left.
fn hello_exits_zero(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let image = n.wasm_image("hello", p1::HELLO);
    let pod_config = n.pod("hello");
    let config = ContainerConfig::new("hello", &image);
    let (pod, status, log) = n.run_to_exit(&pod_config, &config);
    if let Ok(s) = n.cri.pod_status(&pod.id) {
        eprintln!("cri: {version}: sandbox status info: {:?}", s.info);
    }
    assert_eq!(status.exit_code, 0, "{version}: {status:?}");
    assert_eq!(status.reason, "Completed", "{version}: {status:?}");
    assert_eq!(log, ["hello from wasm"], "{version}: CRI log");
    n.teardown(&pod);
}

/// A wasm container exiting 3: exit code 3, reason Error.
fn exit_code_three(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let image = n.wasm_image("exit-code", p1::EXIT_CODE);
    let config = ContainerConfig::new("exit", &image).args(["3"]);
    let (pod, status, _) = n.run_to_exit(&n.pod("exit3"), &config);
    assert_eq!(status.exit_code, 3, "{version}: {status:?}");
    assert_eq!(status.reason, "Error", "{version}: {status:?}");
    n.teardown(&pod);
}

/// A hostNetwork pod runs a wasm container.
fn host_network_pod(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let image = n.wasm_image("hello", p1::HELLO);
    let config = ContainerConfig::new("hello", &image);
    let (pod, status, log) = n.run_to_exit(&n.pod("hostnet").host_network(true), &config);
    assert_eq!(status.exit_code, 0, "{version}: {status:?}");
    assert_eq!(log, ["hello from wasm"], "{version}: CRI log");
    assert_eq!(
        n.netns_path(&pod),
        None,
        "{version}: hostNetwork pod got a netns"
    );
    n.teardown(&pod);
}

/// A volume mount is visible to the guest (it writes a file the host sees); a read-only
/// one refuses writes.
fn volume_mounts(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let image = n.wasm_image("files", p1::FILES);
    let rw = n.c.dir().join("vol-rw");
    let ro = n.c.dir().join("vol-ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();

    let pod = n.run_pod(&n.pod("volumes"));
    let writer = ContainerConfig::new("writer", &image)
        .args(["/data"])
        .mount(&rw, "/data", false);
    let id = n.create_and_start(&pod, &writer);
    let status = n.cri.wait_exited(&id, EXIT_WITHIN).expect("writer exits");
    let log = stdout_lines(n.log_path(&pod, &writer));
    assert_eq!(status.exit_code, 0, "{version}: {status:?} log {log:?}");
    assert_eq!(log, ["read: written by wasm"], "{version}");
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).ok().as_deref(),
        Some("written by wasm"),
        "{version}: the guest's write is not on the host volume"
    );

    let reader = ContainerConfig::new("readonly", &image)
        .args(["/data", "read-only-check"])
        .mount(&ro, "/data", true);
    let id = n.create_and_start(&pod, &reader);
    let status = n.cri.wait_exited(&id, EXIT_WITHIN).expect("readonly exits");
    let log = stdout_lines(n.log_path(&pod, &reader));
    assert_eq!(
        status.exit_code, 0,
        "{version}: write to ro mount: {status:?} {log:?}"
    );
    assert!(
        log.first().is_some_and(|l| l.starts_with("write refused")),
        "{version}: {log:?}"
    );
    assert!(
        !ro.join("denied.txt").exists(),
        "{version}: ro volume written"
    );
    n.teardown(&pod);
}

/// Two wasm containers and a busybox sidecar in one pod: all run, one shim process
/// serves the pod, the wasm guest reaches the sidecar over the pod's loopback, and
/// StopContainer stops the sleeping guest well within its grace period.
fn mixed_pod(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let sleep = n.wasm_image("sleep", p1::SLEEP);
    let client = n.wasm_image("tcp-client", p2::TCP_CLIENT);
    let busybox = n.busybox_image();
    let pod = n.run_pod(&n.pod("mixed"));

    let sidecar = ContainerConfig::new("sidecar", &busybox)
        .command(["/bin/nc"])
        .args([
            "-ll",
            "-p",
            "8080",
            "-e",
            "/bin/sh",
            "-c",
            "read line; echo pong",
        ]);
    let sidecar_id = n.create_and_start(&pod, &sidecar);
    let sleeper = ContainerConfig::new("sleeper", &sleep).args(["600"]);
    let sleeper_id = n.create_and_start(&pod, &sleeper);
    let caller = ContainerConfig::new("caller", &client).args(["127.0.0.1:8080", "ping"]);
    let caller_id = n.create_and_start(&pod, &caller);

    for (id, name) in [(&sidecar_id, "sidecar"), (&sleeper_id, "sleeper")] {
        n.cri
            .wait_state(id, CONTAINER_RUNNING, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{version}: {name}: {e}"));
    }
    let daemons = n.c.shim_daemons();
    assert_eq!(
        daemons.len(),
        1,
        "{version}: expected one wasmpod shim for the pod: {daemons:?}"
    );
    let runc_shims: Vec<_> =
        n.c.all_shim_processes()
            .into_iter()
            .filter(|p| p.cmdline.iter().any(|a| a.contains("containerd-shim-runc")))
            .collect();
    assert!(
        runc_shims.is_empty(),
        "{version}: the pod's sidecar must run under the wasmpod shim, found runc shims: {runc_shims:?}"
    );

    let status = n
        .cri
        .wait_exited(&caller_id, EXIT_WITHIN)
        .expect("caller exits");
    let log = stdout_lines(n.log_path(&pod, &caller));
    assert_eq!(
        (status.exit_code, log.as_slice()),
        (0, ["received: pong".to_owned()].as_slice()),
        "{version}: wasm guest -> sidecar over loopback: {status:?}, log {:?}",
        wasmpod_test::cri::read_log(n.log_path(&pod, &caller))
    );

    let start = Instant::now();
    n.cri
        .stop_container(&sleeper_id, 10)
        .expect("StopContainer");
    let status = n.cri.container_status(&sleeper_id).expect("status");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{version}: StopContainer waited out the grace period ({:?}): SIGTERM ignored? {status:?}",
        start.elapsed()
    );
    assert_eq!(status.exit_code, 143, "{version}: {status:?}");
    n.cri
        .stop_container(&sidecar_id, 10)
        .expect("StopContainer sidecar");
    n.teardown(&pod);
}

/// A wasi:http component in a pod serves HTTP inside the pod's network namespace (reached
/// from inside that netns on 127.0.0.1:8080), its per-request stderr line reaches the CRI
/// log, and StopContainer drains it to exit 0.
fn http_pod_serves(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let image = n.wasm_image("http-hello", wasmpod_fixtures::http::HELLO);
    let pod = n.run_pod(&n.pod("http"));
    let web = ContainerConfig::new("web", &image);
    let web_id = n.create_and_start(&pod, &web);
    let netns = n
        .netns_path(&pod)
        .expect("the pod has its own network namespace");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["curl", "-s", "-m", "2", "http://127.0.0.1:8080/greet"])
            .output()
            .expect("run nsenter curl");
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        body, "hello from wasi:http\n",
        "{version}: response from the pod"
    );
    let stopped = Instant::now();
    n.cri.stop_container(&web_id, 10).expect("StopContainer");
    let status = n.cri.container_status(&web_id).expect("status");
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{version}: StopContainer waited out the grace period: {status:?}"
    );
    assert_eq!(status.exit_code, 0, "{version}: drained server: {status:?}");
    let log = wasmpod_test::cri::read_log(n.log_path(&pod, &web));
    assert!(
        log.iter()
            .any(|l| l.stream == "stderr" && l.message == "hello: GET /greet"),
        "{version}: the guest's stderr line in the CRI log: {log:?}"
    );
    n.teardown(&pod);
}

/// A guest allocating past its memory limit ends OOMKilled.
fn memory_limit_oom(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let image = n.wasm_image("alloc", p1::ALLOC);
    let config = ContainerConfig::new("alloc", &image)
        .args(["256"])
        .memory_limit(64 << 20);
    let (pod, status, log) = n.run_to_exit(&n.pod("oom"), &config);
    assert!(
        !log.iter().any(|l| l == "done"),
        "{version}: guest allocated 256 MiB under a 64 MiB limit: {log:?}"
    );
    assert_eq!(status.reason, "OOMKilled", "{version}: {status:?}");
    n.teardown(&pod);
}

/// ContainerStats reports non-zero CPU and memory for a busy guest.
fn stats_of_busy_guest(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let image = n.wasm_image("spin", p1::SPIN);
    let pod = n.run_pod(&n.pod("stats"));
    let config = ContainerConfig::new("spin", &image);
    let id = n.create_and_start(&pod, &config);
    n.cri
        .wait_state(&id, CONTAINER_RUNNING, Duration::from_secs(30))
        .expect("spin running");
    std::thread::sleep(Duration::from_millis(1500));
    let stats = n.cri.container_stats(&id).expect("ContainerStats");
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map_or(0, |v| v.value);
    let mem = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    assert!(
        cpu > 0,
        "{version}: zero CPU for a spinning guest: {stats:?}"
    );
    assert!(mem > 0, "{version}: zero memory working set: {stats:?}");
    n.cri.stop_container(&id, 5).expect("StopContainer");
    n.teardown(&pod);
}

/// Removing a pod whose container still runs (StopPodSandbox stops it) leaves nothing:
/// no shim process, cgroup, mount or netns.
fn remove_running_pod_leaves_nothing(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let image = n.wasm_image("sleep", p1::SLEEP);
    let pod = n.run_pod(&n.pod("cleanup"));
    let config = ContainerConfig::new("sleeper", &image).args(["600"]);
    let id = n.create_and_start(&pod, &config);
    n.cri
        .wait_state(&id, CONTAINER_RUNNING, Duration::from_secs(30))
        .expect("sleeper running");
    assert!(
        n.netns_path(&pod).is_some(),
        "{version}: pod without hostNetwork has no netns path in its spec"
    );
    n.teardown(&pod);
}

/// The harness itself, with runc (no wasmpod involved): a busybox pod on the test CNI
/// network echoes a line into its CRI log, exits 0 / Completed, gets a netns holding only
/// `lo` with 127.0.0.1 as pod IP, and leaves nothing behind.
fn runc_pod_baseline(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let busybox = n.busybox_image();
    let pod_config = n.pod("runc").runtime_handler("runc");
    let pod = n.run_pod(&pod_config);
    let status = n.cri.pod_status(&pod.id).expect("PodSandboxStatus");
    let ip = status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|net| net.ip.clone());
    assert_eq!(ip.as_deref(), Some("127.0.0.1"), "{version}: pod IP");
    let config = ContainerConfig::new("echo", &busybox)
        .command(["/bin/sh", "-c"])
        .args([
            "echo hi; { read l; read l; while read n r; do echo \"${n%:}\"; done; } </proc/net/dev",
        ]);
    let id = n.create_and_start(&pod, &config);
    let status = n.cri.wait_exited(&id, EXIT_WITHIN).expect("echo exits");
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (0, "Completed"),
        "{version}: {status:?}"
    );
    let log = stdout_lines(n.log_path(&pod, &config));
    assert_eq!(
        log,
        ["hi", "lo"],
        "{version}: CRI log (the pod netns must hold only lo)"
    );
    n.teardown(&pod);
}

/// Sanity of the CRI node itself: the runtime and network are ready and the sandbox
/// image is present (no pod involved, so this passes before the shim supports pods).
fn node_is_ready(version: ContainerdVersion) {
    let Some(n) = Node::start(version) else {
        return;
    };
    let status = n.cri.status().expect("CRI Status");
    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    for kind in ["RuntimeReady", "NetworkReady"] {
        let cond = conditions.iter().find(|c| c.r#type == kind);
        assert!(
            cond.is_some_and(|c| c.status),
            "{version}: {kind} not true: {conditions:?}"
        );
    }
    assert!(
        n.cri
            .wait_image(PAUSE_IMAGE, Duration::from_secs(10))
            .expect("ImageStatus"),
        "{version}: {PAUSE_IMAGE} not present"
    );
}

macro_rules! cri_suite {
    ($($module:ident => $version:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn node_is_ready() {
                super::node_is_ready($version);
            }

            #[test]
            fn runc_pod_baseline() {
                super::runc_pod_baseline($version);
            }

            #[test]
            fn hello_exits_zero() {
                super::hello_exits_zero($version);
            }

            #[test]
            fn exit_code_three() {
                super::exit_code_three($version);
            }

            #[test]
            fn http_pod_serves() {
                super::http_pod_serves($version);
            }

            #[test]
            fn host_network_pod() {
                super::host_network_pod($version);
            }

            #[test]
            fn volume_mounts() {
                super::volume_mounts($version);
            }

            #[test]
            fn mixed_pod() {
                super::mixed_pod($version);
            }

            #[test]
            fn memory_limit_oom() {
                super::memory_limit_oom($version);
            }

            #[test]
            fn stats_of_busy_guest() {
                super::stats_of_busy_guest($version);
            }

            #[test]
            fn remove_running_pod_leaves_nothing() {
                super::remove_running_pod_leaves_nothing($version);
            }
        }
    )*};
}

cri_suite! {
    containerd_1_6 => ContainerdVersion::V1_6,
    containerd_1_7 => ContainerdVersion::V1_7,
    containerd_2_1 => ContainerdVersion::V2_1,
}
