//! Wasm containers and the pod sandbox as processes of this binary.
//!
//! Create re-executes the shim as `__run` (a wasm container) or `__pause` (the sandbox),
//! inside the container's cgroup and namespaces (entered between fork and exec), sends it
//! what the dispatch resolved on the request pipe and waits for its verdict on the status
//! pipe ([`super::protocol`]): a failure keeps its kind, and with it its gRPC code. Start is
//! one byte on the start pipe.

use oci_spec::runtime::LinuxResources;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{debug, warn};
use oci_spec::runtime::Spec;

use super::exec::ExecContext;
use super::protocol::{
    ContainerdApi, Entrypoint, OOM_MARKER_FILE, PAUSE_SUBCOMMAND, PAYLOAD_FD, PrepareTiming,
    REQUEST_FD, RUNNER_PID_FILE, RUNNER_SUBCOMMAND, RunnerRequest, RunnerStatus, START_FD,
    STATUS_FD,
};
use super::spec::GuestSpec;
use crate::error::{TaskError, TaskResult};
use crate::os::cgroup::{Cgroup, CgroupUsage, SpawnEntry};
use crate::os::namespaces::NamespacePlan;
use crate::os::spawn::{self, CgroupJoin, SpawnRequest};
use crate::os::{fd, signals};
use crate::process::{ContainerKind, ContainerProcess, CreateRequest, ExecLauncher, ProcessCore};
use std::sync::Arc;

struct RunnerProcess {
    core: ProcessCore,
    bundle: PathBuf,
    /// What an exec needs (a wasm container's; the sandbox runs nothing to exec into).
    exec: Option<Arc<ExecContext>>,
    start: Option<std::fs::File>,
    /// Read ends of the output FIFOs: the exit is published once they are read.
    output: std::sync::Arc<crate::os::drain::OutputDrain>,
}

/// How this shim starts its children; the same for every container of the daemon.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// The binary re-executed as `__run` / `__pause`: the shim's own (a test names the shim
    /// binary, its own being the test harness).
    pub exe: PathBuf,
    /// containerd's API, for payloads in an image layer.
    pub containerd: Option<ContainerdApi>,
    /// The node's compiled-module cache ([`super::child::cache_dir`]).
    pub cache_dir: Option<PathBuf>,
}

/// What the dispatch resolved for one container: the child gets it as is.
#[derive(Debug)]
pub struct Resolved {
    pub kind: ContainerKind,
    pub spec: Spec,
    pub guest: GuestSpec,
    pub entrypoint: Entrypoint,
    /// The rootfs Create mounted, to unmount at release.
    pub mounted_rootfs: Option<PathBuf>,
}

/// Creates a wasm container or the sandbox.
pub fn create(
    request: &CreateRequest,
    resolved: Resolved,
    settings: &RunnerSettings,
) -> TaskResult<Box<dyn ContainerProcess>> {
    let id = &request.id;
    let began = Instant::now();
    let Resolved {
        kind,
        spec,
        guest,
        entrypoint,
        mounted_rootfs,
    } = resolved;
    let cgroup = create_cgroup(id, &spec)?;
    let runner_request = RunnerRequest {
        build: super::protocol::this_build(),
        id: id.clone(),
        exec_id: None,
        bundle: request.bundle.clone(),
        rootfs: request.bundle.join("rootfs"),
        stdin: request.stdin.clone(),
        stdout: request.stdout.clone(),
        stderr: request.stderr.clone(),
        containerd: settings.containerd.clone(),
        cache_dir: settings.cache_dir.clone(),
        spec,
        guest,
        entrypoint,
    };
    let pid_file = request.bundle.join(RUNNER_PID_FILE);
    match spawn(
        &runner_request,
        kind,
        cgroup.as_ref(),
        &settings.exe,
        Some(&pid_file),
        None,
    ) {
        Ok((pid, start, timing)) => {
            let total = began.elapsed();
            // What the runner did not see: cgroup, fork, namespaces, exec, process start.
            let spawn_ms =
                (total.as_micros() as u64).saturating_sub(timing.total_us) as f64 / 1000.0;
            debug!(
                "container {id}: {kind:?} process {pid} ready in {total:?} (spawn {spawn_ms:.2}ms, {timing})"
            );
            let core = ProcessCore::new(id, pid, cgroup, mounted_rootfs);
            let exec = (kind == ContainerKind::Wasm).then(|| {
                Arc::new(ExecContext {
                    container_id: id.clone(),
                    pid,
                    pidfd: core.pidfd.clone(),
                    cgroup: core.cgroup.clone(),
                    bundle: request.bundle.clone(),
                    // Moved out of the request, not cloned: a spec with a seccomp profile
                    // is large, and Create is the hot path.
                    spec: runner_request.spec,
                    settings: settings.clone(),
                })
            });
            Ok(Box::new(RunnerProcess {
                core,
                bundle: request.bundle.clone(),
                exec,
                start: Some(start),
                output: std::sync::Arc::new(crate::os::drain::OutputDrain::open([
                    request.stdout.as_str(),
                    request.stderr.as_str(),
                ])),
            }))
        }
        Err(e) => {
            if let Some(cgroup) = &cgroup
                && let Err(e) = cgroup.remove()
            {
                warn!("container {id}: {e}");
            }
            Err(e)
        }
    }
}

/// The cgroup a spec asks for, created with its resources applied.
pub fn create_cgroup(id: &str, spec: &Spec) -> TaskResult<Option<Cgroup>> {
    let Some(linux) = spec.linux() else {
        return Ok(None);
    };
    let Some(path) = linux.cgroups_path().as_ref() else {
        return Ok(None);
    };
    let cgroup = Cgroup::new(&path.display().to_string())
        .map_err(|e| TaskError::InvalidArgument(format!("container {id}: {e}")))?;
    cgroup
        .create(linux.resources().as_ref())
        .map_err(|e| TaskError::internal(format!("container {id}: cgroup"), e))?;
    Ok(Some(cgroup))
}

/// Spawns `exe` as the runner (or pause process) of `request` in `cgroup` (joined, not
/// created) and the spec's namespaces, and waits for its verdict. `pid_file`: where to
/// record the process for the `delete` subcommand; `payload`: an exec's program, passed as
/// [`PAYLOAD_FD`].
pub(super) fn spawn(
    request: &RunnerRequest,
    kind: ContainerKind,
    cgroup: Option<&Cgroup>,
    exe: &Path,
    pid_file: Option<&Path>,
    payload: Option<&std::fs::File>,
) -> TaskResult<(u32, std::fs::File, PrepareTiming)> {
    let id = match &request.exec_id {
        Some(exec_id) => format!("{} exec {exec_id}", request.id),
        None => request.id.clone(),
    };
    let id = &id;
    let io_err =
        |what: &str, e: std::io::Error| TaskError::internal(format!("container {id}: {what}"), e);
    let namespaces = NamespacePlan::from_spec(&request.spec)
        .open()
        .map_err(|e| TaskError::InvalidArgument(format!("container {id}: {e}")))?;
    let cgroup_entry = cgroup
        .map(Cgroup::open_for_spawn)
        .transpose()
        .map_err(|e| TaskError::internal(format!("container {id}"), e))?;
    let (request_r, mut request_w) = fd::pipe().map_err(|e| io_err("creating request pipe", e))?;
    let (mut status_r, status_w) = fd::pipe().map_err(|e| io_err("creating status pipe", e))?;
    let (start_r, start_w) = fd::pipe().map_err(|e| io_err("creating start pipe", e))?;
    let request_json = serde_json::to_vec(request).expect("runner request serialises");
    let subcommand = match kind {
        ContainerKind::Sandbox => PAUSE_SUBCOMMAND,
        ContainerKind::Wasm | ContainerKind::Linux => RUNNER_SUBCOMMAND,
    };
    let args = [
        OsStr::new("containerd-shim-wasmpod-v1"),
        OsStr::new(subcommand),
    ];
    let mut fds = vec![
        (status_w.as_raw_fd(), STATUS_FD),
        (start_r.as_raw_fd(), START_FD),
        (request_r.as_raw_fd(), REQUEST_FD),
    ];
    if let Some(payload) = payload {
        fds.push((payload.as_raw_fd(), PAYLOAD_FD));
    }
    let pid = spawn::spawn(&SpawnRequest {
        exe,
        args: &args,
        cwd: &request.bundle,
        cgroup: cgroup_entry
            .as_ref()
            .map_or(CgroupJoin::None, SpawnEntry::join),
        namespaces: &namespaces,
        fds: &fds,
    })
    .map_err(|e| io_err("starting the container process", e))?;
    drop(cgroup_entry);
    // Lets the `delete` subcommand find the process, and prove it is this one, if this
    // shim dies (the child is not reaped yet: its pid and start time are stable).
    if let Some(pid_file) = pid_file {
        let recorded = crate::os::pidfile::RecordedProcess::of(pid).and_then(|p| p.write(pid_file));
        if let Err(e) = recorded {
            warn!("container {id}: writing {}: {e}", pid_file.display());
        }
    }
    // Our copies of the child's ends must close, or EOF never comes.
    drop(status_w);
    drop(start_r);
    drop(request_r);
    // A child that died before reading it makes this fail (EPIPE); its status says why.
    let sent = request_w.write_all(&request_json);
    drop(request_w);
    let mut status = String::new();
    let verdict = match read_until_eof(&mut status_r, &mut status, status_deadline()) {
        Ok(_) if status.trim().is_empty() => Err(TaskError::Internal(match sent {
            Ok(()) => format!("container {id}: process {pid} exited before reporting"),
            Err(e) => format!(
                "container {id}: process {pid} exited before reporting (sending its request: {e})"
            ),
        })),
        Ok(_) => serde_json::from_str::<RunnerStatus>(status.trim()).map_err(|e| {
            TaskError::internal(format!("container {id}: runner answered {status:?}"), e)
        }),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(TaskError::Internal(format!(
            "container {id}: process {pid} did not report within {:?} (the compile deadline and a minute); killed",
            status_deadline()
        ))),
        Err(e) => Err(io_err("reading the runner's status", e)),
    };
    match verdict {
        Ok(RunnerStatus::Ready { timing }) => Ok((pid, start_w, timing)),
        Ok(RunnerStatus::Failed { kind, error }) => Err(TaskError::runner_failed(
            kind,
            format!("container {id}: {error}"),
        )),
        Err(e) => {
            let _ = signals::send(pid, libc::SIGKILL as u32);
            Err(e)
        }
    }
}

/// How long a runner may take to report: the node's compile deadline (the longest step),
/// plus a minute for the rest (payload from containerd, stdio, confinement).
fn status_deadline() -> std::time::Duration {
    let compile = wasmpod_runtime_core::bounds::PrepareBounds::from_settings(
        |key| std::env::var(key).ok(),
        |_| None,
    )
    .map(|b| b.compile_timeout)
    .unwrap_or(wasmpod_runtime_core::bounds::DEFAULT_COMPILE_TIMEOUT);
    compile + std::time::Duration::from_secs(60)
}

/// Reads `pipe` to EOF, or fails with `TimedOut` once `within` has passed: a runner that
/// hangs before reporting cannot hold Create (or Exec) for ever.
fn read_until_eof(
    pipe: &mut std::fs::File,
    out: &mut String,
    within: std::time::Duration,
) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let deadline = Instant::now() + within;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    out.push_str(&String::from_utf8_lossy(&bytes));
    Ok(())
}

impl ContainerProcess for RunnerProcess {
    fn pid(&self) -> u32 {
        self.core.pid
    }

    fn start(&mut self) -> TaskResult<()> {
        let ProcessCore { id, pid, .. } = &self.core;
        let mut pipe = self.start.take().ok_or_else(|| {
            TaskError::FailedPrecondition(format!("container {id}: already started"))
        })?;
        pipe.write_all(b"s")
            .map_err(|e| TaskError::internal(format!("container {id}: starting process {pid}"), e))
    }

    fn signal(&self, signal: u32) -> TaskResult<bool> {
        self.core.signal(signal)
    }

    fn pids(&self) -> Vec<u32> {
        self.core.pids()
    }

    fn usage(&self) -> Option<CgroupUsage> {
        self.core.usage()
    }

    fn out_of_memory(&self) -> bool {
        let marked =
            std::fs::metadata(self.bundle.join(OOM_MARKER_FILE)).is_ok_and(|m| m.len() > 0);
        marked || self.core.oom_killed()
    }

    fn release(&mut self) -> TaskResult<()> {
        self.start = None;
        self.core.remove_cgroup();
        self.core.unmount_rootfs()
    }

    fn set_frozen(&self, frozen: bool) -> TaskResult<()> {
        self.core.set_frozen(frozen)
    }

    fn update(&self, resources: &LinuxResources) -> TaskResult<()> {
        self.core.update(resources)
    }

    fn output(&self) -> Option<std::sync::Arc<crate::os::drain::OutputDrain>> {
        Some(self.output.clone())
    }

    fn exec_launcher(&self) -> TaskResult<Arc<dyn ExecLauncher>> {
        match &self.exec {
            Some(exec) => Ok(exec.clone()),
            None => Err(TaskError::FailedPrecondition(format!(
                "container {}: the pod sandbox runs no program to exec into",
                self.core.id
            ))),
        }
    }
}
