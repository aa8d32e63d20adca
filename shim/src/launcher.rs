//! Creating a container's process: mount the rootfs, start a runner, wait for its verdict.
//!
//! [`Launcher`] is the seam between the task lifecycle and the OS: the shim uses
//! [`RunnerLauncher`] (a re-exec of this binary per container, see [`crate::protocol`]);
//! lifecycle tests use a fake. Exits are not seen here: the shim's reaper reports them to
//! [`crate::lifecycle::Containers::process_exited`].

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use log::{debug, warn};

use crate::error::{TaskError, TaskResult};
use crate::os::{fd, rootfs, signals};
use crate::protocol::{RUNNER_SUBCOMMAND, RunnerRequest, RunnerStatus, START_FD, STATUS_FD};

/// File in the bundle holding the runner's pid.
pub const RUNNER_PID_FILE: &str = "runner.pid";

/// The runner pid recorded in `bundle`, if any.
pub fn read_runner_pid(bundle: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(bundle.join(RUNNER_PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

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
    /// Lets the prepared process run its payload.
    fn start(&mut self) -> TaskResult<()>;
    /// Sends a signal; `Ok(false)` when the process is already gone.
    fn signal(&self, signal: u32) -> TaskResult<bool>;
    /// Releases what Create set up (rootfs mount). Called once, at delete, after exit.
    fn release(&mut self) -> TaskResult<()>;
}

/// Makes container processes.
pub trait Launcher: Send + Sync {
    fn create(&self, request: &CreateRequest) -> TaskResult<Box<dyn ContainerProcess>>;
}

/// Launches each container as `containerd-shim-wasmpod-v1 __run` (a re-exec of the shim).
#[derive(Debug, Default)]
pub struct RunnerLauncher;

struct RunnerProcess {
    id: String,
    pid: u32,
    start: Option<std::fs::File>,
    rootfs: Option<PathBuf>,
}

impl Launcher for RunnerLauncher {
    fn create(&self, request: &CreateRequest) -> TaskResult<Box<dyn ContainerProcess>> {
        let began = Instant::now();
        let rootfs = request.bundle.join("rootfs");
        let mounted = !request.rootfs_mounts.is_empty();
        if mounted {
            rootfs::mount(&request.rootfs_mounts, &rootfs).map_err(|e| {
                TaskError::internal(format!("container {}: mounting rootfs", request.id), e)
            })?;
        }
        let runner_request = RunnerRequest {
            id: request.id.clone(),
            bundle: request.bundle.clone(),
            rootfs: rootfs.clone(),
            stdin: request.stdin.clone(),
            stdout: request.stdout.clone(),
            stderr: request.stderr.clone(),
        };
        let process = spawn_runner(&runner_request).map(|mut process| {
            process.rootfs = mounted.then(|| rootfs.clone());
            process
        });
        match process {
            Ok(process) => {
                debug!(
                    "container {} prepared by runner pid {} in {:?}",
                    request.id,
                    process.pid,
                    began.elapsed()
                );
                Ok(Box::new(process))
            }
            Err(e) => {
                if mounted && let Err(unmount) = rootfs::unmount(&rootfs) {
                    warn!("container {}: {unmount}", request.id);
                }
                Err(e)
            }
        }
    }
}

fn spawn_runner(request: &RunnerRequest) -> TaskResult<RunnerProcess> {
    let id = &request.id;
    let io_err =
        |what: &str, e: std::io::Error| TaskError::internal(format!("container {id}: {what}"), e);
    let (mut status_r, status_w) = fd::pipe().map_err(|e| io_err("creating status pipe", e))?;
    let (start_r, start_w) = fd::pipe().map_err(|e| io_err("creating start pipe", e))?;
    let request_json = serde_json::to_string(request).expect("runner request serialises");
    let exe = std::env::current_exe().map_err(|e| io_err("finding the shim binary", e))?;
    let (status_w_raw, start_r_raw) = (fd::raw(&status_w), fd::raw(&start_r));
    let mut command = Command::new(exe);
    command
        .arg0("containerd-shim-wasmpod-v1")
        .args([RUNNER_SUBCOMMAND, &request_json])
        .current_dir(&request.bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for (from, to) in [(status_w_raw, STATUS_FD), (start_r_raw, START_FD)] {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| io_err("starting the runner process", e))?;
    let pid = child.id();
    // Lets the `delete` subcommand find the runner if this shim dies.
    if let Err(e) = std::fs::write(request.bundle.join(RUNNER_PID_FILE), pid.to_string()) {
        warn!("container {id}: writing {RUNNER_PID_FILE}: {e}");
    }
    // Our copies of the child's ends must close, or EOF never comes.
    drop(status_w);
    drop(start_r);
    let mut status = String::new();
    let read = status_r.read_to_string(&mut status);
    let verdict = match read {
        Ok(_) if status.trim().is_empty() => Err(TaskError::Internal(format!(
            "container {id}: runner process {pid} exited before reporting"
        ))),
        Ok(_) => serde_json::from_str::<RunnerStatus>(status.trim()).map_err(|e| {
            TaskError::internal(format!("container {id}: runner answered {status:?}"), e)
        }),
        Err(e) => Err(io_err("reading the runner's status", e)),
    };
    let process = RunnerProcess {
        id: id.clone(),
        pid,
        start: Some(start_w),
        rootfs: None,
    };
    match verdict {
        Ok(RunnerStatus::Ready) => Ok(process),
        Ok(RunnerStatus::Failed { error }) => {
            drop(process);
            Err(TaskError::InvalidArgument(format!(
                "container {id}: {error}"
            )))
        }
        Err(e) => {
            let _ = signals::send(pid, libc::SIGKILL as u32);
            Err(e)
        }
    }
}

impl ContainerProcess for RunnerProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn start(&mut self) -> TaskResult<()> {
        let mut pipe = self.start.take().ok_or_else(|| {
            TaskError::FailedPrecondition(format!("container {}: already started", self.id))
        })?;
        pipe.write_all(b"s").map_err(|e| {
            TaskError::internal(
                format!("container {}: starting runner {}", self.id, self.pid),
                e,
            )
        })
    }

    fn signal(&self, signal: u32) -> TaskResult<bool> {
        signals::send(self.pid, signal).map_err(|e| {
            TaskError::internal(
                format!("container {}: signal {signal} to pid {}", self.id, self.pid),
                e,
            )
        })
    }

    fn release(&mut self) -> TaskResult<()> {
        self.start = None;
        if let Some(rootfs) = self.rootfs.take() {
            rootfs::unmount(&rootfs).map_err(|e| {
                TaskError::internal(format!("container {}: unmounting rootfs", self.id), e)
            })?;
        }
        Ok(())
    }
}
