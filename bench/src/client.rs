//! A small containerd gRPC client for the bench: containers from a template, tasks.
//!
//! [`Client::template`] reads a container that `ctr containers create` made (its OCI spec,
//! image, runtime, snapshotter and the parent of its snapshot), so the bench never writes
//! an OCI spec by hand and both runtimes get exactly what `ctr run` would give them.
//! [`Client::create_container`] copies it under a new id (own cgroup path, optional
//! annotations and args), records the container and prepares its snapshot — in that order,
//! so the snapshot is referenced before containerd's garbage collector could see it.
//! The task verbs are one RPC each; [`Client::remove_container`] deletes the record and
//! the snapshot as the Go client's `WithSnapshotCleanup` does.

use anyhow::Context as _;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, KillRequest, ListTasksRequest, StartRequest,
    WaitRequest, containers_client::ContainersClient, tasks_client::TasksClient,
};
use containerd_client::types::Mount;
use containerd_client::types::v1::Status;
use prost_types::Any;
use tonic::Request;
use tonic::transport::Channel;

/// The annotation that groups containers into one shim (one pod).
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// A connection to containerd in one namespace; cheap to clone (one HTTP/2 channel).
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    namespace: String,
}

/// A container to copy: what `ctr containers create` recorded for it.
#[derive(Clone)]
pub struct Template {
    container: Container,
    spec: serde_json::Value,
    parent: String,
}

/// What a copy of a template changes.
#[derive(Debug, Default, Clone)]
pub struct Variant {
    /// `io.kubernetes.cri.sandbox-id`, to put the container in that pod's shim.
    pub pod: Option<String>,
    /// Replaces `process.args` when set.
    pub args: Option<Vec<String>>,
}

impl Client {
    /// Connects to containerd's gRPC socket.
    pub async fn connect(socket: &str, namespace: &str) -> anyhow::Result<Self> {
        let channel = containerd_client::connect(socket)
            .await
            .with_context(|| format!("connecting to containerd at {socket}"))?;
        Ok(Client {
            channel,
            namespace: namespace.to_owned(),
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "containerd-namespace",
            self.namespace.parse().expect("namespace is ASCII"),
        );
        request
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    /// Reads container `id` (made by `ctr containers create`) as a template.
    pub async fn template(&self, id: &str) -> anyhow::Result<Template> {
        let container = self
            .containers()
            .get(self.request(GetContainerRequest { id: id.to_owned() }))
            .await
            .with_context(|| format!("getting container {id}"))?
            .into_inner()
            .container
            .with_context(|| format!("container {id}: empty answer"))?;
        let spec = container
            .spec
            .as_ref()
            .with_context(|| format!("container {id} has no spec"))?;
        let spec = serde_json::from_slice(&spec.value)
            .with_context(|| format!("container {id}: spec is not JSON"))?;
        let info = self
            .snapshots()
            .stat(self.request(StatSnapshotRequest {
                snapshotter: container.snapshotter.clone(),
                key: container.snapshot_key.clone(),
            }))
            .await
            .with_context(|| format!("stat of container {id}'s snapshot"))?
            .into_inner()
            .info
            .with_context(|| format!("container {id}: snapshot without info"))?;
        Ok(Template {
            container,
            spec,
            parent: info.parent,
        })
    }

    /// Records a copy of `template` as container `id` and prepares its snapshot; returns
    /// the rootfs mounts for [`Client::create_task`].
    pub async fn create_container(
        &self,
        template: &Template,
        id: &str,
        variant: &Variant,
    ) -> anyhow::Result<Vec<Mount>> {
        let mut spec = template.spec.clone();
        spec["linux"]["cgroupsPath"] = format!("/{}/{id}", self.namespace).into();
        if let Some(pod) = &variant.pod {
            if !spec["annotations"].is_object() {
                spec["annotations"] = serde_json::json!({});
            }
            spec["annotations"][SANDBOX_ID_ANNOTATION] = pod.clone().into();
        }
        if let Some(args) = &variant.args {
            spec["process"]["args"] = args.clone().into();
        }
        let mut container = template.container.clone();
        container.id = id.to_owned();
        container.snapshot_key = id.to_owned();
        container.created_at = None;
        container.updated_at = None;
        container.spec = Some(Any {
            type_url: template
                .container
                .spec
                .as_ref()
                .map(|s| s.type_url.clone())
                .unwrap_or_default(),
            value: serde_json::to_vec(&spec)?,
        });
        let snapshotter = container.snapshotter.clone();
        self.containers()
            .create(self.request(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .with_context(|| format!("creating container {id}"))?;
        let mounts = self
            .snapshots()
            .prepare(self.request(PrepareSnapshotRequest {
                snapshotter,
                key: id.to_owned(),
                parent: template.parent.clone(),
                labels: Default::default(),
            }))
            .await
            .with_context(|| format!("preparing the snapshot of {id}"))?
            .into_inner()
            .mounts;
        Ok(mounts)
    }

    /// Creates the task of container `id` (no stdio); returns its pid.
    pub async fn create_task(&self, id: &str, rootfs: Vec<Mount>) -> anyhow::Result<u32> {
        let response = self
            .tasks()
            .create(self.request(CreateTaskRequest {
                container_id: id.to_owned(),
                rootfs,
                ..Default::default()
            }))
            .await
            .with_context(|| format!("creating task {id}"))?;
        Ok(response.into_inner().pid)
    }

    /// Starts task `id`.
    pub async fn start(&self, id: &str) -> anyhow::Result<()> {
        self.tasks()
            .start(self.request(StartRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
            .with_context(|| format!("starting task {id}"))?;
        Ok(())
    }

    /// Waits until task `id` exits; returns its exit status.
    pub async fn wait(&self, id: &str) -> anyhow::Result<u32> {
        let response = self
            .tasks()
            .wait(self.request(WaitRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
            .with_context(|| format!("waiting for task {id}"))?;
        Ok(response.into_inner().exit_status)
    }

    /// Sends `signal` to task `id`'s process.
    pub async fn kill(&self, id: &str, signal: u32) -> anyhow::Result<()> {
        self.tasks()
            .kill(self.request(KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal,
                all: false,
            }))
            .await
            .with_context(|| format!("killing task {id}"))?;
        Ok(())
    }

    /// Deletes the (exited) task `id`; returns its exit status.
    pub async fn delete_task(&self, id: &str) -> anyhow::Result<u32> {
        let response = self
            .tasks()
            .delete(self.request(DeleteTaskRequest {
                container_id: id.to_owned(),
            }))
            .await
            .with_context(|| format!("deleting task {id}"))?;
        Ok(response.into_inner().exit_status)
    }

    /// Deletes container `id` and its snapshot.
    pub async fn remove_container(&self, id: &str) -> anyhow::Result<()> {
        let container = self
            .containers()
            .get(self.request(GetContainerRequest { id: id.to_owned() }))
            .await
            .with_context(|| format!("getting container {id}"))?
            .into_inner()
            .container
            .with_context(|| format!("container {id}: empty answer"))?;
        // Snapshot first (as the Go client's `WithSnapshotCleanup`): once the container
        // record is gone, containerd's garbage collector may remove the snapshot itself.
        let removed = self
            .snapshots()
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: container.snapshotter,
                key: container.snapshot_key,
            }))
            .await;
        match removed {
            Err(status) if status.code() != tonic::Code::NotFound => {
                return Err(status).with_context(|| format!("removing the snapshot of {id}"));
            }
            _ => {}
        }
        self.containers()
            .delete(self.request(DeleteContainerRequest { id: id.to_owned() }))
            .await
            .with_context(|| format!("deleting container {id}"))?;
        Ok(())
    }

    /// Kills (SIGKILL), waits for, deletes and removes container `id`, whatever state its
    /// task is in.
    pub async fn destroy(&self, id: &str) -> anyhow::Result<()> {
        if self.kill(id, 9).await.is_ok() {
            let _ = self.wait(id).await;
        }
        let _ = self.delete_task(id).await;
        self.remove_container(id).await
    }

    /// How many tasks whose container id starts with `prefix` are running, of how many.
    pub async fn count_running(&self, prefix: &str) -> anyhow::Result<(usize, usize)> {
        let tasks = self
            .tasks()
            .list(self.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .context("listing tasks")?
            .into_inner()
            .tasks;
        let ours: Vec<_> = tasks
            .iter()
            // containerd 1.6 fills `id` (the container id) and leaves `container_id` empty.
            .filter(|t| t.container_id.starts_with(prefix) || t.id.starts_with(prefix))
            .collect();
        let running = ours
            .iter()
            .filter(|t| t.status == Status::Running as i32)
            .count();
        Ok((running, ours.len()))
    }
}
