//! A CRI client that drives containerd the way kubelet does, for the CRI test suite.
//!
//! [`CriClient`] speaks the CRI v1 gRPC API (the `k8s-cri` crate's generated client) over
//! containerd's unix socket. It is blocking: each call runs on a private current-thread
//! tokio runtime with a timeout, so tests stay plain `#[test]` functions.
//!
//! - [`PodConfig`] / [`ContainerConfig`] describe a pod and a container the way kubelet
//!   fills them in (metadata, log directory and path, `cgroup_parent`, namespace options,
//!   hostNetwork, mounts, memory limit), and [`CriClient::run_pod`] /
//!   [`CriClient::create_container`] send them.
//! - Images are never pulled: tests import them with
//!   [`Containerd::import_cri`](crate::containerd::Containerd::import_cri) and name them
//!   `localhost/...`; [`CriClient::image_present`] is kubelet's `IfNotPresent` check.
//! - [`read_log`] parses a CRI container log file (`<RFC3339Nano> <stream> <P|F> <msg>`),
//!   what `kubectl logs` reads.
//! - [`TestCgroup`] owns the cgroup subtree test pods are placed under (`cgroup_parent`)
//!   and removes it, as kubelet removes pod cgroups in a cluster.
//!
//! Trade-off: only the calls the suite needs are wrapped; the generated types are
//! re-exported as [`api`] for anything else.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1 as api;

/// The CRI runtime handler of wasmpod (the RuntimeClass `handler`).
pub use crate::containerd::CRI_HANDLER;

/// Container state `CONTAINER_EXITED`.
pub const CONTAINER_EXITED: i32 = cri::ContainerState::ContainerExited as i32;
/// Container state `CONTAINER_RUNNING`.
pub const CONTAINER_RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The tokio runtime could not be built.
    #[error("building the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Connecting to the CRI socket failed.
    #[error("connecting to CRI at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The runtime answered with an error status.
    #[error("{call} failed: {code:?}: {message}")]
    Rpc {
        /// The CRI method.
        call: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// The status message (containerd's error text).
        message: String,
    },
    /// The call did not finish in time.
    #[error("{call} did not answer within {timeout:?}")]
    Timeout {
        /// The CRI method.
        call: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// A response lacked a field the runtime must fill.
    #[error("{call}: response without {field}")]
    Missing {
        /// The CRI method.
        call: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A wait for a container state ran out of time.
    #[error("container {id} not {want} within {timeout:?} (last state {last})")]
    WaitTimeout {
        /// The container.
        id: String,
        /// The state waited for.
        want: &'static str,
        /// The last state seen.
        last: i32,
        /// The limit.
        timeout: Duration,
    },
}

/// A blocking CRI v1 client; see the [module docs](self).
pub struct CriClient {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    timeout: Duration,
}

impl fmt::Debug for CriClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CriClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A pod sandbox as kubelet describes it; [`CriClient::run_pod`] turns it into a
/// `RunPodSandboxRequest`.
#[derive(Debug, Clone)]
pub struct PodConfig {
    /// `metadata.name` (also the hostname).
    pub name: String,
    /// `metadata.namespace` (Kubernetes namespace).
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// The pod's log directory (container log paths are relative to it).
    pub log_directory: PathBuf,
    /// `linux.cgroup_parent` (cgroupfs path, e.g. `/wasmpod-test-1/pod-abc`).
    pub cgroup_parent: Option<String>,
    /// `hostNetwork: true` (network namespace mode NODE).
    pub host_network: bool,
    /// `shareProcessNamespace: true` (PID namespace mode POD instead of CONTAINER).
    pub share_pid: bool,
    /// Runtime handler (default [`CRI_HANDLER`]).
    pub runtime_handler: String,
}

impl PodConfig {
    /// A pod `name` in namespace `default`, logging under `log_root/<name>`.
    pub fn new(name: impl Into<String>, log_root: &Path) -> Self {
        let name = name.into();
        Self {
            uid: format!("uid-{name}-{}", std::process::id()),
            log_directory: log_root.join(&name),
            namespace: "default".into(),
            name,
            cgroup_parent: None,
            host_network: false,
            share_pid: false,
            runtime_handler: CRI_HANDLER.into(),
        }
    }

    /// Sets `linux.cgroup_parent`.
    pub fn cgroup_parent(mut self, parent: impl Into<String>) -> Self {
        self.cgroup_parent = Some(parent.into());
        self
    }

    /// Sets hostNetwork.
    pub fn host_network(mut self, on: bool) -> Self {
        self.host_network = on;
        self
    }

    /// Sets the runtime handler.
    pub fn runtime_handler(mut self, handler: impl Into<String>) -> Self {
        self.runtime_handler = handler.into();
        self
    }

    fn namespace_options(&self) -> cri::NamespaceOption {
        cri::NamespaceOption {
            network: if self.host_network {
                cri::NamespaceMode::Node as i32
            } else {
                cri::NamespaceMode::Pod as i32
            },
            pid: if self.share_pid {
                cri::NamespaceMode::Pod as i32
            } else {
                cri::NamespaceMode::Container as i32
            },
            ipc: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        }
    }

    /// The `PodSandboxConfig` kubelet would send.
    pub fn to_cri(&self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: if self.host_network {
                String::new()
            } else {
                self.name.clone()
            },
            log_directory: self.log_directory.to_string_lossy().into_owned(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), self.name.clone()),
                ("io.kubernetes.pod.namespace".into(), self.namespace.clone()),
                ("io.kubernetes.pod.uid".into(), self.uid.clone()),
            ]),
            annotations: HashMap::from([(
                "kubernetes.io/config.source".into(),
                "wasmpod-test".into(),
            )]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone().unwrap_or_default(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(self.namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A running pod sandbox: its id and the config it was created with (CreateContainer
/// repeats it, as kubelet does).
#[derive(Debug, Clone)]
pub struct Pod {
    /// The sandbox id.
    pub id: String,
    /// What was asked for.
    pub config: PodConfig,
    sandbox_config: cri::PodSandboxConfig,
}

/// A volume mount of a container.
#[derive(Debug, Clone)]
pub struct VolumeMount {
    /// Host directory.
    pub host_path: PathBuf,
    /// Path inside the container.
    pub container_path: String,
    /// `readOnly: true`.
    pub readonly: bool,
}

/// A container as kubelet describes it; [`CriClient::create_container`] sends it.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    /// `metadata.name`.
    pub name: String,
    /// Image reference (imported, `localhost/...`).
    pub image: String,
    /// `command` (replaces the entrypoint; empty keeps it).
    pub command: Vec<String>,
    /// `args` (replaces the image's `Cmd`).
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Volume mounts.
    pub mounts: Vec<VolumeMount>,
    /// `resources.limits.memory` in bytes (0 = none).
    pub memory_limit: i64,
    /// Log path relative to the pod's log directory (default `<name>/0.log`).
    pub log_path: Option<String>,
}

impl ContainerConfig {
    /// Container `name` running `image` with its defaults.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            ..Default::default()
        }
    }

    /// Sets `args`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `command`.
    pub fn command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = command.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a volume mount.
    pub fn mount(
        mut self,
        host_path: impl Into<PathBuf>,
        container_path: impl Into<String>,
        readonly: bool,
    ) -> Self {
        self.mounts.push(VolumeMount {
            host_path: host_path.into(),
            container_path: container_path.into(),
            readonly,
        });
        self
    }

    /// Sets the memory limit in bytes.
    pub fn memory_limit(mut self, bytes: i64) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// The log path relative to the pod's log directory.
    pub fn relative_log_path(&self) -> String {
        self.log_path
            .clone()
            .unwrap_or_else(|| format!("{}/0.log", self.name))
    }

    /// The `ContainerConfig` kubelet would send for a container of `pod`.
    pub fn to_cri(&self, pod: &PodConfig) -> cri::ContainerConfig {
        let resources = cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_shares: 2,
            memory_limit_in_bytes: self.memory_limit,
            oom_score_adj: 1000,
            ..Default::default()
        };
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: self.name.clone(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                user_specified_image: self.image.clone(),
                ..Default::default()
            }),
            command: self.command.clone(),
            args: self.args.clone(),
            envs: self
                .env
                .iter()
                .map(|(key, value)| cri::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts: self
                .mounts
                .iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.to_string_lossy().into_owned(),
                    readonly: m.readonly,
                    ..Default::default()
                })
                .collect(),
            labels: HashMap::from([
                ("io.kubernetes.container.name".into(), self.name.clone()),
                ("io.kubernetes.pod.name".into(), pod.name.clone()),
                ("io.kubernetes.pod.namespace".into(), pod.namespace.clone()),
                ("io.kubernetes.pod.uid".into(), pod.uid.clone()),
            ]),
            log_path: self.relative_log_path(),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(resources),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(pod.namespace_options()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }
}

impl CriClient {
    /// Connect to the CRI endpoint at `socket` (containerd's gRPC socket).
    pub fn connect(socket: impl Into<PathBuf>) -> Result<Self, CriError> {
        let socket = socket.into();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CriError::Runtime)?;
        let path = socket.clone();
        let channel = rt
            .block_on(async move {
                // The URI is ignored: every connection goes to the unix socket.
                Endpoint::from_static("http://[::1]:50051")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            })
            .map_err(|source| CriError::Connect {
                path: socket,
                source,
            })?;
        Ok(Self {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            timeout: Duration::from_secs(60),
        })
    }

    /// Per-call timeout (default 60 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn call<T, F>(&self, call: &'static str, fut: F) -> Result<T, CriError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.timeout;
        self.rt
            .block_on(async { tokio::time::timeout(timeout, fut).await })
            .map_err(|_| CriError::Timeout { call, timeout })?
            .map(tonic::Response::into_inner)
            .map_err(|s| CriError::Rpc {
                call,
                code: s.code(),
                message: s.message().to_owned(),
            })
    }

    /// `Version`: runtime name and version.
    pub fn version(&self) -> Result<cri::VersionResponse, CriError> {
        let mut c = self.runtime.clone();
        self.call("Version", c.version(cri::VersionRequest::default()))
    }

    /// `Status` (verbose): runtime and network conditions, plus containerd's config dump.
    pub fn status(&self) -> Result<cri::StatusResponse, CriError> {
        let mut c = self.runtime.clone();
        self.call("Status", c.status(cri::StatusRequest { verbose: true }))
    }

    /// Kubelet's `IfNotPresent`: `ImageStatus`, never `PullImage`.
    pub fn image_present(&self, image: &str) -> Result<bool, CriError> {
        let mut c = self.images.clone();
        let resp = self.call(
            "ImageStatus",
            c.image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                verbose: false,
            }),
        )?;
        Ok(resp.image.is_some())
    }

    /// Polls [`CriClient::image_present`] until it answers yes or `timeout` passes: CRI
    /// learns about images imported with `ctr` from containerd's events, which can lag (2.x).
    pub fn wait_image(&self, image: &str, timeout: Duration) -> Result<bool, CriError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.image_present(image)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `RunPodSandbox` with `config.runtime_handler`; creates the log directory first,
    /// as kubelet does.
    pub fn run_pod(&self, config: &PodConfig) -> Result<Pod, CriError> {
        let _ = fs::create_dir_all(&config.log_directory);
        let sandbox_config = config.to_cri();
        let mut c = self.runtime.clone();
        let resp = self.call(
            "RunPodSandbox",
            c.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: config.runtime_handler.clone(),
            }),
        )?;
        Ok(Pod {
            id: resp.pod_sandbox_id,
            config: config.clone(),
            sandbox_config,
        })
    }

    /// `PodSandboxStatus` (verbose: `info` holds containerd's view, including the
    /// sandbox's OCI runtime spec under `info["info"]`).
    pub fn pod_status(&self, id: &str) -> Result<cri::PodSandboxStatusResponse, CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "PodSandboxStatus",
            c.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: true,
            }),
        )
    }

    /// `ListPodSandbox` (all).
    pub fn list_pods(&self) -> Result<Vec<cri::PodSandbox>, CriError> {
        let mut c = self.runtime.clone();
        Ok(self
            .call(
                "ListPodSandbox",
                c.list_pod_sandbox(cri::ListPodSandboxRequest::default()),
            )?
            .items)
    }

    /// `StopPodSandbox`.
    pub fn stop_pod(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "StopPodSandbox",
            c.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            }),
        )
        .map(drop)
    }

    /// `RemovePodSandbox`.
    pub fn remove_pod(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "RemovePodSandbox",
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            }),
        )
        .map(drop)
    }

    /// `CreateContainer` in `pod`; returns the container id.
    pub fn create_container(
        &self,
        pod: &Pod,
        config: &ContainerConfig,
    ) -> Result<String, CriError> {
        let mut c = self.runtime.clone();
        let resp = self.call(
            "CreateContainer",
            c.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config.to_cri(&pod.config)),
                sandbox_config: Some(pod.sandbox_config.clone()),
            }),
        )?;
        Ok(resp.container_id)
    }

    /// `StartContainer`.
    pub fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "StartContainer",
            c.start_container(cri::StartContainerRequest {
                container_id: id.to_owned(),
            }),
        )
        .map(drop)
    }

    /// `ContainerStatus`.
    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "ContainerStatus",
            c.container_status(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            }),
        )?
        .status
        .ok_or(CriError::Missing {
            call: "ContainerStatus",
            field: "status",
        })
    }

    /// Poll `ContainerStatus` until the container is in `state` or `timeout` passes.
    pub fn wait_state(
        &self,
        id: &str,
        state: i32,
        timeout: Duration,
    ) -> Result<cri::ContainerStatus, CriError> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.container_status(id)?;
            if status.state == state {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(CriError::WaitTimeout {
                    id: id.to_owned(),
                    want: cri::ContainerState::try_from(state)
                        .map(|s| s.as_str_name())
                        .unwrap_or("?"),
                    last: status.state,
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the container exited; returns its status (exit code, reason).
    pub fn wait_exited(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<cri::ContainerStatus, CriError> {
        self.wait_state(id, CONTAINER_EXITED, timeout)
    }

    /// `StopContainer` with a grace period of `timeout_secs` (SIGTERM, then SIGKILL).
    pub fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "StopContainer",
            c.stop_container(cri::StopContainerRequest {
                container_id: id.to_owned(),
                timeout: timeout_secs,
            }),
        )
        .map(drop)
    }

    /// `RemoveContainer`.
    pub fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "RemoveContainer",
            c.remove_container(cri::RemoveContainerRequest {
                container_id: id.to_owned(),
            }),
        )
        .map(drop)
    }

    /// `ContainerStats`.
    pub fn container_stats(&self, id: &str) -> Result<cri::ContainerStats, CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "ContainerStats",
            c.container_stats(cri::ContainerStatsRequest {
                container_id: id.to_owned(),
            }),
        )?
        .stats
        .ok_or(CriError::Missing {
            call: "ContainerStats",
            field: "stats",
        })
    }

    /// Tear a pod down as kubelet does: StopPodSandbox then RemovePodSandbox.
    pub fn stop_and_remove_pod(&self, id: &str) -> Result<(), CriError> {
        self.stop_pod(id)?;
        self.remove_pod(id)
    }
}

/// One line of a CRI container log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The message, partial (`P`) lines joined with the full (`F`) line that ends them.
    pub message: String,
}

/// Parse a CRI log file: lines `<RFC3339Nano time> <stdout|stderr> <P|F> <message>`.
/// Malformed lines are kept whole as `stream` `?`.
pub fn parse_log(text: &str) -> Vec<LogLine> {
    let mut out = Vec::new();
    let mut partial: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(_time), Some(stream), Some(tag), message) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            out.push(LogLine {
                stream: "?".into(),
                message: line.to_owned(),
            });
            continue;
        };
        let message = message.unwrap_or("");
        let buf = partial.entry(stream.to_owned()).or_default();
        buf.push_str(message);
        if tag != "P" {
            out.push(LogLine {
                stream: stream.to_owned(),
                message: std::mem::take(buf),
            });
        }
    }
    out
}

/// Read and parse the CRI log file at `path` (empty if it does not exist yet).
pub fn read_log(path: impl AsRef<Path>) -> Vec<LogLine> {
    fs::read_to_string(path)
        .map(|t| parse_log(&t))
        .unwrap_or_default()
}

/// The stdout messages of the CRI log at `path`.
pub fn stdout_lines(path: impl AsRef<Path>) -> Vec<String> {
    read_log(path)
        .into_iter()
        .filter(|l| l.stream == "stdout")
        .map(|l| l.message)
        .collect()
}

/// A cgroup subtree (cgroupfs driver path, e.g. `/wasmpod-test-123-0`) that test pods
/// use as `cgroup_parent`; on drop every empty directory of it is removed from every
/// mounted hierarchy (cgroup v1 controllers and v2), deepest first.
#[derive(Debug)]
pub struct TestCgroup {
    path: String,
}

impl TestCgroup {
    /// A subtree named `/wasmpod-test-<pid>-<tag>`; nothing is created (runc and the
    /// shim create what they use).
    pub fn new(tag: &str) -> Self {
        Self {
            path: format!("/wasmpod-test-{}-{tag}", std::process::id()),
        }
    }

    /// The cgroupfs path, e.g. `/wasmpod-test-123-0`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A per-pod parent below it: `<path>/pod<name>`.
    pub fn pod_parent(&self, pod: &str) -> String {
        format!("{}/pod{pod}", self.path)
    }

    /// Directories below `cgroup` (a cgroupfs path) in any hierarchy, e.g.
    /// `/sys/fs/cgroup/memory/wasmpod-test-1-0/podx/<container id>`.
    pub fn dirs_below(cgroup: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for root in cgroup_mounts() {
            let top = root.join(cgroup.trim_start_matches('/'));
            walk_dirs(&top, &mut out);
        }
        out
    }

    /// Remove every directory of the subtree (deepest first); returns what could not be
    /// removed (still holding processes).
    pub fn remove(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for root in cgroup_mounts() {
            let top = root.join(self.path.trim_start_matches('/'));
            if top.is_dir() {
                walk_dirs(&top, &mut dirs);
                dirs.push(top);
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs.into_iter()
            .filter(|d| fs::remove_dir(d).is_err() && d.exists())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let left = self.remove();
        if !left.is_empty() {
            eprintln!("wasmpod-test: cgroups not removable (busy): {left:?}");
        }
    }
}

/// Mount points of cgroup (v1) and cgroup2 filesystems, deduplicated.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mount = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let p = e.path();
            walk_dirs(&p, out);
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_parsed_and_partials_joined() {
        let text = "2024-01-01T00:00:00.000000001Z stdout F hello from wasm\n\
                    2024-01-01T00:00:00.000000002Z stderr P par\n\
                    2024-01-01T00:00:00.000000003Z stderr F tial\n\
                    2024-01-01T00:00:00.000000004Z stdout F \n\
                    garbage";
        let lines = parse_log(text);
        assert_eq!(
            lines,
            [
                LogLine {
                    stream: "stdout".into(),
                    message: "hello from wasm".into()
                },
                LogLine {
                    stream: "stderr".into(),
                    message: "partial".into()
                },
                LogLine {
                    stream: "stdout".into(),
                    message: String::new()
                },
                LogLine {
                    stream: "?".into(),
                    message: "garbage".into()
                },
            ]
        );
    }

    #[test]
    fn pod_config_maps_host_network_and_cgroup_parent() {
        let pod = PodConfig::new("p", Path::new("/tmp/logs"))
            .host_network(true)
            .cgroup_parent("/wasmpod-test-1/podp");
        let c = pod.to_cri();
        let linux = c.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/wasmpod-test-1/podp");
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
        assert_eq!(c.log_directory, "/tmp/logs/p");
        assert_eq!(c.hostname, "");
    }

    #[test]
    fn container_config_maps_mounts_and_limits() {
        let pod = PodConfig::new("p", Path::new("/tmp/logs"));
        let c = ContainerConfig::new("c", "localhost/x:latest")
            .args(["/data"])
            .mount("/tmp/vol", "/data", true)
            .memory_limit(32 << 20)
            .to_cri(&pod);
        assert_eq!(c.log_path, "c/0.log");
        assert_eq!(c.mounts[0].container_path, "/data");
        assert!(c.mounts[0].readonly);
        assert_eq!(
            c.linux.unwrap().resources.unwrap().memory_limit_in_bytes,
            32 << 20
        );
    }
}
