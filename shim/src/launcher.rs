//! Creating a container's process: mount the rootfs, decide what the container is, and
//! start the process that will run it, waiting for Start.
//!
//! | container | how it runs |
//! |---|---|
//! | CRI sandbox (`io.kubernetes.cri.container-type: sandbox`) | a pause process made by the shim: holds the pod's namespaces, no image is run |
//! | wasm (`\0asm` entrypoint, or anything not ELF/`#!`) | a runner: this binary re-executed as `__run` ([`crate::protocol`]) |
//! | Linux (ELF or `#!` entrypoint: sidecars) | runc, as any Linux container ([`crate::runc`]) |
//!
//! [`Launcher`] is the seam between the task lifecycle and the OS: lifecycle tests use a
//! fake. Exits are not seen here: the shim's reaper reports them to
//! [`crate::lifecycle::Containers::process_exited`].

use std::path::{Path, PathBuf};

use log::warn;
use oci_spec::runtime::Spec;

use crate::error::{TaskError, TaskResult};
use crate::os::cgroup::{Cgroup, CgroupUsage};
use crate::os::rootfs;

/// The CRI annotation saying whether a container is the pod sandbox.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
/// File in the bundle holding the runner's pid and start time ([`crate::os::pidfile`]).
pub const RUNNER_PID_FILE: &str = "runner.pid";
/// File a runner writes into its bundle when its guest ran out of memory.
pub const OOM_MARKER_FILE: &str = "oom";

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
}

impl ProcessCore {
    pub fn signal(&self, signal: u32) -> TaskResult<bool> {
        crate::os::signals::send(self.pid, signal).map_err(|e| {
            TaskError::internal(
                format!("container {}: signal {signal} to pid {}", self.id, self.pid),
                e,
            )
        })
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

    /// Removes the cgroup (after the processes are gone).
    pub fn remove_cgroup(&mut self) {
        if let Some(cgroup) = self.cgroup.take()
            && let Err(e) = cgroup.remove()
        {
            warn!("container {}: {e}", self.id);
        }
    }
}

/// Makes container processes.
pub trait Launcher: Send + Sync {
    fn create(&self, request: &CreateRequest) -> TaskResult<Box<dyn ContainerProcess>>;
}

/// What kind of container a spec describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Sandbox,
    Wasm,
    Linux,
}

/// Classifies by the CRI annotation, then by the entrypoint's first bytes.
pub fn classify(spec: &Spec, rootfs: &Path) -> ContainerKind {
    let annotation = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION));
    if annotation.is_some_and(|t| t == "sandbox") {
        return ContainerKind::Sandbox;
    }
    let process = spec.process().as_ref();
    let args0 = process
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default();
    let cwd = process
        .map(|p| p.cwd().display().to_string())
        .unwrap_or_else(|| "/".into());
    let path_env = process
        .and_then(|p| p.env().as_ref())
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
        .map(str::to_owned);
    let found =
        wasmpod_runtime_core::locate::resolve_entrypoint(rootfs, &args0, &cwd, path_env.as_deref());
    let Ok(entry) = found else {
        // The runner reports a missing entrypoint with the full story.
        return ContainerKind::Wasm;
    };
    let mut head = [0u8; 4];
    let read = std::fs::File::open(&entry.host_path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head));
    match read {
        Ok(n) if n >= 4 && head == *b"\x7fELF" => ContainerKind::Linux,
        Ok(n) if n >= 2 && head[..2] == *b"#!" => ContainerKind::Linux,
        _ => ContainerKind::Wasm,
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

/// The launcher of the real shim.
#[derive(Debug, Default)]
pub struct ShimLauncher {
    /// containerd's API, for runners whose payload is in an image layer.
    pub containerd: Option<crate::protocol::ContainerdApi>,
}

impl Launcher for ShimLauncher {
    fn create(&self, request: &CreateRequest) -> TaskResult<Box<dyn ContainerProcess>> {
        let id = &request.id;
        let config = request.bundle.join("config.json");
        let spec = Spec::load(&config).map_err(|e| {
            TaskError::InvalidArgument(format!(
                "container {id}: invalid OCI spec {}: {e}",
                config.display()
            ))
        })?;
        // Before anything is mounted: an idmapped rootfs would fail to mount with a less
        // helpful error, and a Linux container's rootfs is mounted here too.
        crate::runner::confine::refuse_user_namespace(&spec)
            .map_err(|e| TaskError::InvalidArgument(format!("container {id}: {e}")))?;
        // Before anything else is made, for every kind (runc sidecars included).
        if let Some(path) = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
        {
            crate::os::cgroup::check_path(&path.display().to_string())
                .map_err(|e| TaskError::InvalidArgument(format!("container {id}: {e}")))?;
        }
        let rootfs = request.bundle.join("rootfs");
        let mounted = !request.rootfs_mounts.is_empty();
        if mounted {
            rootfs::mount(&request.rootfs_mounts, &rootfs)
                .map_err(|e| TaskError::internal(format!("container {id}: mounting rootfs"), e))?;
        }
        let unmount = || {
            if mounted && let Err(e) = rootfs::unmount(&rootfs) {
                warn!("container {id}: {e}");
            }
        };
        let kind = classify(&spec, &rootfs);
        log::info!("container {id}: {kind:?}");
        let created = match kind {
            ContainerKind::Linux => crate::runc::create(request, mounted.then(|| rootfs.clone())),
            ContainerKind::Wasm | ContainerKind::Sandbox => crate::runner_process::create(
                request,
                &spec,
                kind,
                mounted.then(|| rootfs.clone()),
                self.containerd.clone(),
            ),
        };
        if created.is_err() {
            unmount();
        }
        created
    }
}
