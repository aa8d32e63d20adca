//! The process boundary: what the task lifecycle asks of a container's process, and the
//! two ways wasmpod makes one.
//!
//! | container | how it runs | where |
//! |---|---|---|
//! | CRI sandbox (`io.kubernetes.cri.container-type: sandbox`) | a pause process made by the shim: holds the pod's namespaces, no image is run | [`runner`] (`__pause`) |
//! | wasm (`\0asm` entrypoint, or anything not ELF/`#!`) | a runner: this binary re-executed as `__run` | [`runner`] |
//! | Linux (ELF or `#!` entrypoint: sidecars) | runc, as any Linux container | [`runc`] |
//!
//! Imports run one way: this module holds the shared types and the [`Launcher`] seam and
//! imports no implementation; [`runc`] and [`runner`] implement [`ContainerProcess`];
//! [`dispatch`] loads the spec once, decides the kind and calls one of them; the task
//! lifecycle ([`crate::lifecycle`]) sees only [`Launcher`] (its tests use a fake). Exits are
//! not seen here: the shim's reaper reports them to
//! [`crate::lifecycle::Containers::process_exited`].

pub mod dispatch;
pub mod runc;
pub mod runner;

use std::path::PathBuf;

use log::warn;
use oci_spec::runtime::LinuxResources;

use crate::error::{TaskError, TaskResult};
use crate::os::cgroup::{Cgroup, CgroupUsage};
use crate::os::pidfd::Pidfd;
use crate::os::rootfs;

/// What Create asks for.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs_mounts: Vec<rootfs::RootfsMount>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// What Exec asks for: one more process in a running container.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub container_id: String,
    pub exec_id: String,
    /// The exec's process (args, env, cwd, user), as containerd sent it.
    pub process: oci_spec::runtime::Process,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// What a wasm container can exec, said whenever an exec target is refused.
pub const EXEC_TARGETS: &str = "wasm containers can exec the .wasm programs of their image";

/// An exec process: made by Exec, let run by Start, its exit reaped like the container's.
pub trait ExecProcess: Send {
    /// Its pid; 0 while it has none yet (runc makes it at Start).
    fn pid(&self) -> u32;
    /// Lets it run; returns its pid.
    fn start(&mut self) -> TaskResult<u32>;
    /// Sends a signal; `Ok(false)` when the process is already gone.
    fn signal(&self, signal: u32) -> TaskResult<bool>;
    /// Its output FIFOs, to wait until they are read before its exit is published.
    fn output(&self) -> Option<std::sync::Arc<crate::os::drain::OutputDrain>> {
        None
    }
    /// Releases what Exec set up (files in the bundle). Called once, at delete, after exit.
    fn release(&mut self) {}
}

/// Makes exec processes of one container: one more process in it, prepared, waiting for
/// Start. The container's process must be running (its namespaces are joined through it).
pub trait ExecLauncher: Send + Sync {
    fn exec(&self, request: &ExecRequest) -> TaskResult<Box<dyn ExecProcess>>;
}

/// A created container process, waiting for Start.
pub trait ContainerProcess: Send {
    fn pid(&self) -> u32;
    /// Lets the prepared process run.
    fn start(&mut self) -> TaskResult<()>;
    /// Sends a signal; `Ok(false)` when the process is already gone.
    fn signal(&self, signal: u32) -> TaskResult<bool>;
    /// CPU and memory of the container, when it has a cgroup.
    fn usage(&self) -> Option<CgroupUsage>;
    /// The container's processes (its cgroup's, else its one process while it runs).
    fn pids(&self) -> Vec<u32>;
    /// True when the container ran out of memory (guest limit or cgroup OOM kill).
    fn out_of_memory(&self) -> bool;
    /// Releases what Create set up (rootfs mount, cgroup). Called once, at delete, after exit.
    fn release(&mut self) -> TaskResult<()>;
    /// Freezes (`true`, Pause) or thaws (Resume) every process of the container.
    fn set_frozen(&self, frozen: bool) -> TaskResult<()>;
    /// Applies changed limits (Update) to the running container.
    fn update(&self, resources: &LinuxResources) -> TaskResult<()>;
    /// The container's output FIFOs, to wait until they are read before its exit is
    /// published (`None`: the process's output goes through something that flushes itself).
    fn output(&self) -> Option<std::sync::Arc<crate::os::drain::OutputDrain>> {
        None
    }
    /// What makes exec processes of this container (Exec), used without the container's
    /// lock: an exec's preparation may compile its program.
    fn exec_launcher(&self) -> TaskResult<std::sync::Arc<dyn ExecLauncher>>;
}

/// Sends `signal` to a container's or an exec's process (through its pidfd when there is
/// one); `what` names it in the error. `Ok(false)` when it is already gone.
pub fn signal_process(
    pidfd: Option<&Pidfd>,
    pid: u32,
    signal: u32,
    what: &str,
) -> TaskResult<bool> {
    crate::os::signals::send_to(pidfd, pid, signal)
        .map_err(|e| TaskError::internal(format!("{what}: signal {signal} to pid {pid}"), e))
}

/// What every container process has: its id, its pid and, usually, its cgroup. The kinds
/// of [`ContainerProcess`] delegate signals, pids and usage to it.
#[derive(Debug)]
pub struct ProcessCore {
    pub id: String,
    pub pid: u32,
    pub cgroup: Option<Cgroup>,
    /// The rootfs Create mounted, to unmount at release.
    pub rootfs: Option<PathBuf>,
    /// The process itself, opened while it was an unreaped child: signals and exec's
    /// namespace lookups cannot reach another process that took the pid over.
    pub pidfd: Option<std::sync::Arc<Pidfd>>,
}

impl ProcessCore {
    pub fn new(id: &str, pid: u32, cgroup: Option<Cgroup>, rootfs: Option<PathBuf>) -> Self {
        let pidfd = Pidfd::open(pid)
            .map_err(|e| warn!("container {id}: no pidfd for pid {pid}: {e}"))
            .ok()
            .map(std::sync::Arc::new);
        ProcessCore {
            id: id.to_owned(),
            pid,
            cgroup,
            rootfs,
            pidfd,
        }
    }

    pub fn signal(&self, signal: u32) -> TaskResult<bool> {
        signal_process(
            self.pidfd.as_deref(),
            self.pid,
            signal,
            &format!("container {}", self.id),
        )
    }

    pub fn pids(&self) -> Vec<u32> {
        match &self.cgroup {
            Some(cgroup) => cgroup.pids(),
            None => vec![self.pid],
        }
    }

    pub fn usage(&self) -> Option<CgroupUsage> {
        self.cgroup.as_ref().map(Cgroup::usage)
    }

    /// True when the kernel OOM-killed a process of the cgroup.
    pub fn oom_killed(&self) -> bool {
        self.cgroup
            .as_ref()
            .is_some_and(|c| c.usage().oom_kills > 0)
    }

    /// Unmounts the rootfs Create mounted (once).
    pub fn unmount_rootfs(&mut self) -> TaskResult<()> {
        match self.rootfs.take() {
            Some(rootfs) => rootfs::unmount(&rootfs).map_err(|e| {
                TaskError::internal(format!("container {}: unmounting rootfs", self.id), e)
            }),
            None => Ok(()),
        }
    }

    /// The container's cgroup, or why an operation that needs one cannot be done.
    fn cgroup_for(&self, what: &str) -> TaskResult<&Cgroup> {
        self.cgroup.as_ref().ok_or_else(|| {
            TaskError::FailedPrecondition(format!(
                "container {}: {what} needs a cgroup and the container has none (no linux.cgroupsPath)",
                self.id
            ))
        })
    }

    /// Freezes or thaws the container's cgroup.
    pub fn set_frozen(&self, frozen: bool) -> TaskResult<()> {
        let what = if frozen { "pause" } else { "resume" };
        self.cgroup_for(what)?
            .set_frozen(frozen)
            .map_err(|e| match e {
                crate::os::cgroup::CgroupError::NoFreezer => {
                    TaskError::FailedPrecondition(format!("container {}: {e}", self.id))
                }
                e => TaskError::internal(format!("container {}: {what}", self.id), e),
            })
    }

    /// Writes changed limits into the container's cgroup.
    pub fn update(&self, resources: &LinuxResources) -> TaskResult<()> {
        self.cgroup_for("update")?
            .update(resources)
            .map_err(|e| TaskError::internal(format!("container {}: update", self.id), e))
    }

    /// Removes the cgroup (after the processes are gone).
    pub fn remove_cgroup(&mut self) {
        if let Some(cgroup) = self.cgroup.take()
            && let Err(e) = cgroup.remove()
        {
            warn!("container {}: {e}", self.id);
        }
    }
}

/// What kind of container a spec describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Sandbox,
    Wasm,
    Linux,
}

/// Makes container processes.
pub trait Launcher: Send + Sync {
    fn create(&self, request: &CreateRequest) -> TaskResult<Box<dyn ContainerProcess>>;
}
