//! The ttrpc Task service: a thin adapter from containerd's messages to [`Containers`].
//!
//! Each RPC unpacks its request, calls one lifecycle method and packs the answer; the
//! lifecycle never sees ttrpc types. RPCs that make no sense for a wasm container answer
//! `Unimplemented` with a message saying so, at once. An empty exec id names the container's
//! own process, any other one of its execs.

use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, Empty, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics,
};
use containerd_shim::protos::shim::shim::{
    CheckpointTaskRequest, CloseIORequest, PauseRequest, ResumeRequest,
};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{ExitSignal, Task, TtrpcContext, protos::ttrpc};
use log::debug;

use crate::error::{TaskError, TaskResult};
use crate::events::to_timestamp;
use crate::lifecycle::Containers;
use crate::os::cgroup::CgroupUsage;
use crate::os::{proc_stats, rootfs::RootfsMount};
use crate::process::{CreateRequest, ExecRequest};

/// The Task service containerd talks to.
pub struct TaskService {
    containers: Arc<Containers>,
    exit: Arc<ExitSignal>,
}

/// The LinuxResources JSON that containerd sends in an Update (`resources` is an `Any`
/// holding `opencontainers/runtime-spec/1/LinuxResources` as JSON).
fn resources_of(req: &UpdateTaskRequest) -> TaskResult<oci_spec::runtime::LinuxResources> {
    let Some(any) = req.resources.as_ref() else {
        return Err(TaskError::InvalidArgument(format!(
            "container {}: update without resources",
            req.id
        )));
    };
    serde_json::from_slice(&any.value).map_err(|e| {
        TaskError::InvalidArgument(format!(
            "container {}: update resources ({}) are not LinuxResources JSON: {e}",
            req.id, any.type_url
        ))
    })
}

impl TaskService {
    pub fn new(containers: Arc<Containers>, exit: Arc<ExitSignal>) -> Self {
        TaskService { containers, exit }
    }
}

/// The exec a request names: containerd sends an empty exec id for the container's process.
fn exec_id(exec_id: &str) -> Option<&str> {
    Some(exec_id).filter(|e| !e.is_empty())
}

/// The exec's process, sent as an `Any` holding the runtime spec's `Process` as JSON.
fn exec_request(req: ExecProcessRequest) -> TaskResult<ExecRequest> {
    let what = format!("container {} exec {}", req.id, req.exec_id);
    if req.terminal {
        return Err(TaskError::InvalidArgument(format!(
            "{what}: a terminal (tty) is not supported for wasm containers; exec without -t"
        )));
    }
    let Some(any) = req.spec.as_ref() else {
        return Err(TaskError::InvalidArgument(format!(
            "{what}: exec without a process spec"
        )));
    };
    let process: oci_spec::runtime::Process = serde_json::from_slice(&any.value).map_err(|e| {
        TaskError::InvalidArgument(format!(
            "{what}: the process ({}) is not an OCI runtime Process: {e}",
            any.type_url
        ))
    })?;
    Ok(ExecRequest {
        container_id: req.id,
        exec_id: req.exec_id,
        process,
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
    })
}

fn create_request(req: CreateTaskRequest) -> TaskResult<CreateRequest> {
    if req.terminal {
        return Err(TaskError::InvalidArgument(format!(
            "container {}: a terminal (tty) is not supported for wasm containers",
            req.id
        )));
    }
    if !req.checkpoint.is_empty() {
        return Err(TaskError::unsupported("restoring from a checkpoint"));
    }
    Ok(CreateRequest {
        id: req.id,
        bundle: PathBuf::from(req.bundle),
        rootfs_mounts: req
            .rootfs
            .into_iter()
            .map(|m| RootfsMount {
                fs_type: m.type_,
                source: m.source,
                options: m.options,
            })
            .collect(),
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
    })
}

/// cgroup v1-shaped metrics (containerd's CRI reads `io.containerd.cgroups.v1.Metrics`
/// on any host): from the container's cgroup, else from its process in `/proc`.
fn metrics(pid: u32, cgroup: Option<CgroupUsage>) -> TaskResult<Metrics> {
    let usage = match cgroup {
        Some(c) => proc_stats::ProcessUsage {
            user_ns: c.user_ns,
            system_ns: c.system_ns.max(c.cpu_ns.saturating_sub(c.user_ns)),
            rss_bytes: c.memory_bytes,
        },
        None => proc_stats::read(pid)
            .map_err(|e| TaskError::internal(format!("reading usage of pid {pid}"), e))?,
    };
    let mut metrics = Metrics::new();
    metrics.cpu = Some(CPUStat {
        usage: Some(CPUUsage {
            total: usage.user_ns + usage.system_ns,
            user: usage.user_ns,
            kernel: usage.system_ns,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    metrics.memory = Some(MemoryStat {
        rss: usage.rss_bytes,
        usage: Some(MemoryEntry {
            usage: usage.rss_bytes,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    Ok(metrics)
}

impl Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        debug!("create {}", req.id);
        let pid = self.containers.create(create_request(req)?)?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let pid = match exec_id(&req.exec_id) {
            Some(exec_id) => self.containers.start_exec(&req.id, exec_id)?,
            None => self.containers.start(&req.id)?,
        };
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.containers
            .kill(&req.id, exec_id(&req.exec_id), req.signal, req.all)?;
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let exit = self.containers.wait(&req.id, exec_id(&req.exec_id))?;
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: Some(to_timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let (pid, exit) = self.containers.delete(&req.id, exec_id(&req.exec_id))?;
        Ok(DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: Some(to_timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let info = self.containers.info(&req.id, exec_id(&req.exec_id))?;
        Ok(StateResponse {
            id: info.id,
            exec_id: info.exec_id.unwrap_or_default(),
            bundle: info.bundle.display().to_string(),
            pid: info.pid,
            status: info.state.api_status().into(),
            stdin: info.stdin,
            stdout: info.stdout,
            stderr: info.stderr,
            exit_status: info.exit.map_or(0, |e| e.status),
            exited_at: info.exit.map(|e| to_timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let processes = self
            .containers
            .pids(&req.id)?
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let info = self.containers.info(&req.id, None)?;
        if info.exit.is_some() {
            return Err(TaskError::NotFound(format!(
                "container {}: process already finished",
                req.id
            ))
            .into());
        }
        let usage = self.containers.usage(&req.id)?;
        let any = containerd_shim::util::convert_to_any(Box::new(metrics(info.pid, usage)?))
            .map_err(|e| TaskError::internal("encoding metrics", e))?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let task_pid = self
            .containers
            .info(&req.id, None)
            .map_or(0, |info| info.pid);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        if self.containers.is_empty() {
            debug!("no containers left: shutting down");
            self.exit.signal();
        }
        Ok(Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        debug!("exec {} {}", req.id, req.exec_id);
        self.containers.exec(exec_request(req)?)?;
        Ok(Empty::new())
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        self.containers.pause(&req.id)?;
        Ok(Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        self.containers.resume(&req.id)?;
        Ok(Empty::new())
    }

    fn checkpoint(&self, _ctx: &TtrpcContext, _req: CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        Err(TaskError::unsupported("checkpoint").into())
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let resources = resources_of(&req)?;
        self.containers.update(&req.id, &resources)?;
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, _req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        // No process of wasmpod has a terminal (Create and Exec refuse one).
        Err(TaskError::unsupported("a terminal (tty), and so resizing one,").into())
    }

    fn close_io(&self, _ctx: &TtrpcContext, _req: CloseIORequest) -> ttrpc::Result<Empty> {
        // Stdin is read by the guest directly from containerd's FIFO; nothing to close here.
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim::protos::protobuf::well_known_types::any::Any;

    use super::*;

    const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

    fn exec_with(terminal: bool, spec: Option<&str>) -> ExecProcessRequest {
        ExecProcessRequest {
            id: "c".into(),
            exec_id: "probe".into(),
            terminal,
            stdout: "/fifo/probe-stdout".into(),
            spec: spec
                .map(|json| Any {
                    type_url: PROCESS_TYPE.into(),
                    value: json.as_bytes().to_vec(),
                    ..Default::default()
                })
                .into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_exec_request_carries_the_process_containerd_sent() {
        let json = r#"{"args":["/probe.wasm","ok"],"env":["A=1"],"cwd":"/data","user":{"uid":1000,"gid":1000}}"#;
        let request = exec_request(exec_with(false, Some(json))).unwrap();
        assert_eq!(
            (request.container_id.as_str(), request.exec_id.as_str()),
            ("c", "probe")
        );
        assert_eq!(request.stdout, "/fifo/probe-stdout");
        assert_eq!(
            request.process.args().as_deref(),
            Some(&["/probe.wasm".to_owned(), "ok".to_owned()][..])
        );
        assert_eq!(request.process.user().uid(), 1000);
    }

    #[test]
    fn an_exec_with_a_terminal_or_without_a_process_is_refused_by_name() {
        for (request, says) in [
            (
                exec_with(true, Some(r#"{"args":["/probe.wasm"],"cwd":"/"}"#)),
                "terminal (tty)",
            ),
            (exec_with(false, None), "without a process spec"),
            (
                exec_with(false, Some("{\"args\": 5}")),
                "not an OCI runtime Process",
            ),
        ] {
            match exec_request(request) {
                Err(TaskError::InvalidArgument(message)) => {
                    assert!(message.contains(says), "{message}")
                }
                other => panic!("{says}: {other:?}"),
            }
        }
    }
}
