//! What kubelet sends for a pod and its containers: [`PodConfig`] and [`ContainerConfig`]
//! (metadata, labels, log directory and path, `cgroup_parent`, namespace options,
//! hostNetwork, mounts, resources) and their CRI messages, plus the [`Pod`] a
//! `RunPodSandbox` made of one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;

use super::CRI_HANDLER;

/// A pod sandbox as kubelet describes it; [`CriClient::run_pod`](super::CriClient::run_pod) turns it into a
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

    /// Sets `shareProcessNamespace` (PID namespace mode POD).
    pub fn share_pid(mut self, on: bool) -> Self {
        self.share_pid = on;
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
    pub(super) sandbox_config: cri::PodSandboxConfig,
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

/// A container as kubelet describes it; [`CriClient::create_container`](super::CriClient::create_container) sends it.
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
    /// `securityContext.runAsUser` / `runAsGroup`.
    pub run_as: Option<(i64, i64)>,
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

    /// Adds `KEY=VALUE` to the environment.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
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

    /// Runs as `uid`:`gid` (`runAsUser`, `runAsGroup`).
    pub fn run_as(mut self, uid: i64, gid: i64) -> Self {
        self.run_as = Some((uid, gid));
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
                    run_as_user: self.run_as.map(|(uid, _)| cri::Int64Value { value: uid }),
                    run_as_group: self.run_as.map(|(_, gid)| cri::Int64Value { value: gid }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
