//! [`CriClient`]: the blocking CRI v1 client. Each call runs the `k8s-cri` gRPC client on a
//! private current-thread tokio runtime, over containerd's unix socket, with a timeout.

use std::fmt;
use std::fs;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{CONTAINER_EXITED, ContainerConfig, CriError, Pod, PodConfig};
use crate::poll::wait_until;

/// A blocking CRI v1 client; see the [module docs](super).
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
        self.call_within(call, self.timeout, fut)
    }

    fn call_within<T, F>(
        &self,
        call: &'static str,
        timeout: Duration,
        fut: F,
    ) -> Result<T, CriError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
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

    /// `PullImage` as kubelet sends it (no runtime handler, no auth); returns the image
    /// reference CRI answers with. containerd reads registry hosts from its `config_path`.
    pub fn pull_image(&self, image: &str) -> Result<String, CriError> {
        self.pull_image_for(image, "")
    }

    /// `PullImage` naming the pod's `runtime_handler` (kubelet's RuntimeClassInImageCriApi):
    /// containerd 2.x then picks an index's manifest by that handler's `runtime_platforms`.
    pub fn pull_image_for(&self, image: &str, runtime_handler: &str) -> Result<String, CriError> {
        let mut c = self.images.clone();
        let resp = self.call(
            "PullImage",
            c.pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_owned(),
                    runtime_handler: runtime_handler.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )?;
        Ok(resp.image_ref)
    }

    /// Polls [`CriClient::image_present`] until it answers yes or `timeout` passes: CRI
    /// learns about images imported with `ctr` from containerd's events, which can lag (2.x).
    pub fn wait_image(&self, image: &str, timeout: Duration) -> Result<bool, CriError> {
        let present = crate::poll::wait_until(timeout, format!("image {image} in CRI"), || {
            match self.image_present(image) {
                Ok(false) => None,
                answer => Some(answer),
            }
        });
        present.unwrap_or(Ok(false))
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

    /// `RunPodSandbox` of `config` after `edit` changed its CRI message (e.g.
    /// [`with_user_namespace`](super::with_user_namespace)).
    pub fn run_pod_with(
        &self,
        config: &PodConfig,
        edit: impl FnOnce(&mut cri::PodSandboxConfig),
    ) -> Result<Pod, CriError> {
        let _ = fs::create_dir_all(&config.log_directory);
        let mut sandbox_config = config.to_cri();
        edit(&mut sandbox_config);
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

    /// `CreateContainer` of `config` in `pod` after `edit` changed its CRI message (e.g.
    /// [`ContainerSecurity::apply`](super::ContainerSecurity::apply)); returns the id.
    pub fn create_container_with(
        &self,
        pod: &Pod,
        config: &ContainerConfig,
        edit: impl FnOnce(&mut cri::ContainerConfig),
    ) -> Result<String, CriError> {
        let mut container = config.to_cri(&pod.config);
        edit(&mut container);
        let mut c = self.runtime.clone();
        let resp = self.call(
            "CreateContainer",
            c.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(container),
                sandbox_config: Some(pod.sandbox_config.clone()),
            }),
        )?;
        Ok(resp.container_id)
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

    /// `UpdateContainerResources` (what kubelet sends for an in-place resize).
    pub fn update_container_resources(
        &self,
        id: &str,
        resources: cri::LinuxContainerResources,
    ) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        self.call(
            "UpdateContainerResources",
            c.update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.to_owned(),
                linux: Some(resources),
                ..Default::default()
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

    /// The host pid of container `id`'s process, from verbose `ContainerStatus` (`info`).
    pub fn container_pid(&self, id: &str) -> Result<u32, CriError> {
        let mut c = self.runtime.clone();
        let resp = self.call(
            "ContainerStatus",
            c.container_status(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: true,
            }),
        )?;
        info_pid(&resp.info).ok_or(CriError::Missing {
            call: "ContainerStatus",
            field: "info.pid",
        })
    }

    /// The host pid of pod `id`'s sandbox process, from verbose `PodSandboxStatus`.
    pub fn pod_pid(&self, id: &str) -> Result<u32, CriError> {
        info_pid(&self.pod_status(id)?.info).ok_or(CriError::Missing {
            call: "PodSandboxStatus",
            field: "info.pid",
        })
    }

    /// Poll `ContainerStatus` until the container is in `state` or `timeout` passes.
    pub fn wait_state(
        &self,
        id: &str,
        state: i32,
        timeout: Duration,
    ) -> Result<cri::ContainerStatus, CriError> {
        let want = cri::ContainerState::try_from(state)
            .map(|s| s.as_str_name())
            .unwrap_or("?");
        // The check runs at least once: a timeout always has a last state.
        let mut last = 0;
        let waited = wait_until(timeout, format!("container {id} {want}"), || {
            match self.container_status(id) {
                Ok(status) if status.state == state => Some(Ok(status)),
                Ok(status) => {
                    last = status.state;
                    None
                }
                Err(e) => Some(Err(e)),
            }
        });
        waited.unwrap_or_else(|_| {
            Err(CriError::WaitTimeout {
                id: id.to_owned(),
                want,
                last,
                timeout,
            })
        })
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

    /// `ExecSync` of `cmd` in container `id`, as kubelet sends it for an exec probe or
    /// `kubectl exec` without streams: CRI's `timeout` is whole seconds (0: none), and the
    /// call may last that long plus the per-call timeout (kubelet's deadline). A non-zero
    /// exit is an answer (`exit_code`), not an error; a timeout is an error
    /// (`DeadlineExceeded`).
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<cri::ExecSyncResponse, CriError> {
        let mut c = self.runtime.clone();
        self.call_within(
            "ExecSync",
            self.timeout + timeout,
            c.exec_sync(cri::ExecSyncRequest {
                container_id: id.to_owned(),
                cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
                timeout: timeout.as_secs() as i64,
            }),
        )
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

/// The `pid` of the JSON containerd puts under `info` in a verbose status.
fn info_pid(info: &std::collections::HashMap<String, String>) -> Option<u32> {
    let json: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    json.get("pid")?
        .as_u64()
        .map(|pid| pid as u32)
        .filter(|pid| *pid > 0)
}
