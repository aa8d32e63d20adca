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
//!
//! One job per submodule: `client` (the gRPC calls), `error` ([`CriError`]), `config`
//! (what kubelet sends for pods and containers), `logs` (CRI log files) and `cgroup`
//! (the test-owned cgroup subtree), `security` (capabilities, seccomp, user namespaces).
//! Everything public is re-exported here.

mod cgroup;
mod client;
mod config;
mod error;
mod logs;
mod security;

pub use k8s_cri::v1 as api;

pub use cgroup::{TestCgroup, cgroup_mounts};
pub use client::CriClient;
pub use config::{ContainerConfig, Pod, PodConfig, VolumeMount};
pub use error::CriError;
pub use logs::{LogLine, parse_log, read_log, stdout_lines};
pub use security::{ContainerSecurity, SeccompProfile, with_user_namespace};

/// The CRI runtime handler of wasmpod (the RuntimeClass `handler`).
pub use crate::containerd::CRI_HANDLER;

/// Container state `CONTAINER_EXITED`.
pub const CONTAINER_EXITED: i32 = api::ContainerState::ContainerExited as i32;
/// Container state `CONTAINER_RUNNING`.
pub const CONTAINER_RUNNING: i32 = api::ContainerState::ContainerRunning as i32;
