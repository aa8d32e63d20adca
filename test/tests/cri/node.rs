//! The "node" every CRI case runs on: a private containerd with CRI, a CRI client, a log
//! root and a test-owned cgroup subtree ([`Node`]), with the kubelet steps the cases share
//! (import an image, run a pod, start a container, wait for it, tear the pod down) and the
//! checks that nothing of a removed pod is left.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wasmpod_test::containerd::{
    CNI_LOOPBACK, Containerd, ContainerdVersion, PAUSE_IMAGE, require_root_and_containerd,
};
use wasmpod_test::cri::{
    CONTAINER_RUNNING, ContainerConfig, CriClient, Pod, PodConfig, TestCgroup, api, stdout_lines,
};
use wasmpod_test::image::ImageBuilder;

/// One CRI test at a time (see the module docs of the suite).
static SERIAL: Mutex<()> = Mutex::new(());

/// How long a short guest may take from StartContainer to exited.
const EXIT_WITHIN: Duration = Duration::from_secs(60);

/// How long a container may take from StartContainer to running.
const RUNNING_WITHIN: Duration = Duration::from_secs(30);

/// Run `case` on a fresh node of `version`; skipped (after a loud message) when that
/// version's binaries are not available outside CI.
pub fn on_node(version: ContainerdVersion, case: fn(&Node, ContainerdVersion)) {
    if let Some(node) = Node::start(version) {
        case(&node, version);
    }
}

/// A private containerd with CRI, a CRI client, a log root and a test-owned cgroup
/// subtree. Field order is drop order: client, containerd (kills shims), cgroups.
pub struct Node {
    pub cri: CriClient,
    pub c: Containerd,
    cgroup: TestCgroup,
    version: ContainerdVersion,
    _serial: MutexGuard<'static, ()>,
}

impl Node {
    /// Start a node on `version`, or `None` (after a loud message) when that version's
    /// binaries are not available outside CI.
    fn start(version: ContainerdVersion) -> Option<Self> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        require_root_and_containerd();
        assert!(
            Path::new(CNI_LOOPBACK).is_file(),
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
        let tag = c
            .dir()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .trim_start_matches("wasmpod-ctrd-")
            .to_owned();
        let node = Self {
            cri,
            c,
            cgroup: TestCgroup::new(&tag),
            version,
            _serial: serial,
        };
        // The sandbox image was imported with ctr: pods need CRI to see it (lags on 2.x).
        node.assert_image_visible(PAUSE_IMAGE);
        Some(node)
    }

    fn log_root(&self) -> PathBuf {
        self.c.dir().join("pods")
    }

    /// A pod config `name` under this node's cgroup subtree and log root.
    pub fn pod(&self, name: &str) -> PodConfig {
        PodConfig::new(name, &self.log_root()).cgroup_parent(self.cgroup.pod_parent(name))
    }

    /// Build and import (into `k8s.io`) `localhost/wasmpod/<name>:latest` whose
    /// entrypoint is `/<name>.wasm`; returns the reference.
    pub fn wasm_image(&self, name: &str, wasm: &[u8]) -> String {
        let entry = format!("/{name}.wasm");
        self.import(&ImageBuilder::wasm(
            format!("localhost/wasmpod/{name}:latest"),
            &entry,
            wasm,
        ))
    }

    /// The busybox image for Linux sidecars.
    pub fn busybox_image(&self) -> String {
        self.import(
            &ImageBuilder::busybox("localhost/wasmpod/busybox:latest").expect("busybox image"),
        )
    }

    /// Import `image` into `k8s.io` and wait until CRI sees it; returns its reference.
    pub fn import(&self, image: &ImageBuilder) -> String {
        let reference = self
            .c
            .import_image_cri(image)
            .unwrap_or_else(|e| panic!("import image into k8s.io: {e:#}"));
        self.assert_image_visible(&reference);
        reference
    }

    /// Waits (10 s at most) until CRI sees an image imported with `ctr`.
    pub fn assert_image_visible(&self, reference: &str) {
        assert!(
            self.cri
                .wait_image(reference, Duration::from_secs(10))
                .expect("ImageStatus"),
            "{}: {reference} imported but CRI does not see it after 10 s",
            self.version
        );
    }

    pub fn run_pod(&self, config: &PodConfig) -> Pod {
        self.c.note_group(&config.name);
        let pod = self
            .cri
            .run_pod(config)
            .unwrap_or_else(|e| panic!("{}: RunPodSandbox (handler wasmpod): {e}", self.version));
        self.c.note_group(&pod.id);
        pod
    }

    /// [`Node::run_pod`] of [`Node::pod`] `name`.
    pub fn start_pod(&self, name: &str) -> Pod {
        self.run_pod(&self.pod(name))
    }

    pub fn create_and_start(&self, pod: &Pod, config: &ContainerConfig) -> String {
        let id = self
            .cri
            .create_container(pod, config)
            .unwrap_or_else(|e| panic!("{}: CreateContainer {}: {e}", self.version, config.name));
        self.cri
            .start_container(&id)
            .unwrap_or_else(|e| panic!("{}: StartContainer {}: {e}", self.version, config.name));
        id
    }

    /// Wait until container `id` (named `name` in messages) is running.
    pub fn wait_running(&self, id: &str, name: &str) {
        self.cri
            .wait_state(id, CONTAINER_RUNNING, RUNNING_WITHIN)
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", self.version));
    }

    pub fn log_path(&self, pod: &Pod, config: &ContainerConfig) -> PathBuf {
        pod.config.log_directory.join(config.relative_log_path())
    }

    /// Wait until container `id` (made of `config` in `pod`) exited; returns its status
    /// and the stdout lines of its CRI log.
    pub fn exited(
        &self,
        pod: &Pod,
        config: &ContainerConfig,
        id: &str,
    ) -> (api::ContainerStatus, Vec<String>) {
        let status = self
            .cri
            .wait_exited(id, EXIT_WITHIN)
            .unwrap_or_else(|e| panic!("{}: {} exits: {e}", self.version, config.name));
        (status, stdout_lines(self.log_path(pod, config)))
    }

    /// Run one container in `pod` until it exits; returns its status and stdout.
    pub fn run_in(
        &self,
        pod: &Pod,
        config: &ContainerConfig,
    ) -> (api::ContainerStatus, Vec<String>) {
        let id = self.create_and_start(pod, config);
        self.exited(pod, config, &id)
    }

    /// Run one container in a fresh pod until it exits; returns its status and stdout.
    pub fn run_to_exit(
        &self,
        pod_config: &PodConfig,
        config: &ContainerConfig,
    ) -> (Pod, api::ContainerStatus, Vec<String>) {
        let pod = self.run_pod(pod_config);
        let (status, log) = self.run_in(&pod, config);
        (pod, status, log)
    }

    /// StopContainer with a grace period of 10 s; returns the container's status after it
    /// and how long the stop took.
    pub fn stop_container(&self, id: &str) -> (api::ContainerStatus, Duration) {
        let start = Instant::now();
        self.cri
            .stop_container(id, 10)
            .unwrap_or_else(|e| panic!("{}: StopContainer: {e}", self.version));
        let status = self.cri.container_status(id).expect("status");
        (status, start.elapsed())
    }

    /// What the pod's netns is: the path CRI put in the sandbox spec (from verbose
    /// PodSandboxStatus), if any.
    pub fn netns_path(&self, pod: &Pod) -> Option<String> {
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
    pub fn teardown(&self, pod: &Pod) {
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
    wait_until(timeout, f, Vec::is_empty)
}

/// Poll `f` until `done` holds for its value or `timeout` passes; returns the last value
/// (the caller asserts on it, with the story it tells).
pub fn wait_until<T>(timeout: Duration, f: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    wasmpod_test::poll::wait_until(timeout, "a value that is done", || {
        let v = f();
        done(&v).then_some(v)
    })
    .unwrap_or_else(|_| f())
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

/// A module per containerd version holding one `#[test]` per case, which runs the case on
/// a fresh node of that version ([`node::on_node`]).
#[allow(unused_macros)]
macro_rules! cri_suite {
    (versions { $($module:ident => $version:expr),* $(,)? } cases $cases:tt) => {
        $( cri_suite!(@module $module => $version, $cases); )*
    };
    (@module $module:ident => $version:expr, [$($case:ident),* $(,)?]) => {
        mod $module {
            use super::*;

            $(
                #[test]
                fn $case() {
                    node::on_node($version, super::$case);
                }
            )*
        }
    };
}
