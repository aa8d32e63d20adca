//! Linux containers in a wasm pod (sidecars), run by runc.
//!
//! An ELF or `#!` entrypoint is a Linux container: the spec CRI wrote is a complete runc
//! spec, so the shim only drives `runc create` / `start` / `delete` on the bundle, with the
//! container's stdio FIFOs as runc's stdio. runc makes the container's cgroup and joins the
//! pod's namespaces itself; the container's init is re-parented to this shim (a subreaper),
//! whose reaper reports its exit like any other.

use oci_spec::runtime::LinuxResources;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use log::warn;
use oci_spec::runtime::Spec;

use super::{ContainerProcess, CreateRequest, ExecLauncher, ExecProcess, ExecRequest, ProcessCore};
use crate::error::{TaskError, TaskResult};
use crate::os::cgroup::{Cgroup, CgroupUsage};
use crate::os::{exec, fd};

/// runc's state directories for wasmpod's Linux containers: one per containerd namespace
/// ([`root_for`]), as containerd's runc shim keeps them, so a container id used in two
/// namespaces (or by two containerds) names two runc containers.
pub const RUNC_ROOT: &str = "/run/wasmpod/runc";

/// runc's `--root` for containers of containerd namespace `namespace`.
pub fn root_for(namespace: &str) -> PathBuf {
    // containerd validates namespace names; a name that could leave RUNC_ROOT is refused
    // by that rule, and mapped to one that cannot here all the same.
    let safe = !namespace.is_empty()
        && !namespace.starts_with('.')
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let name = if safe {
        namespace
    } else {
        "_invalid_namespace"
    };
    std::path::Path::new(RUNC_ROOT).join(name)
}
const PID_FILE: &str = "runc.pid";
const LOG_FILE: &str = "runc-log.json";

struct RuncProcess {
    core: ProcessCore,
    bundle: PathBuf,
    /// runc's `--root` and `--log`.
    runc: Runc,
}

/// How runc is called for one container: its state root and its log file.
#[derive(Debug, Clone)]
struct Runc {
    root: PathBuf,
    log: PathBuf,
}

impl Runc {
    fn command(&self, args: &[&str]) -> Command {
        runc(&self.root, &self.log, args)
    }

    fn run(&self, id: &str, what: &str, args: &[&str]) -> TaskResult<()> {
        run_runc(id, what, &self.log, &mut self.command(args))
    }
}

fn runc(root: &std::path::Path, log: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new("runc");
    command
        .arg("--root")
        .arg(root)
        .args(["--log-format", "json", "--log"])
        .arg(log)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// The last error runc logged (its `--log` file holds JSON lines).
fn last_runc_error(log: &std::path::Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .find_map(|v| v["msg"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "no error logged".into())
}

fn run_runc(id: &str, what: &str, log: &std::path::Path, command: &mut Command) -> TaskResult<()> {
    let code = exec::run(command).map_err(|e| {
        TaskError::internal(
            format!("container {id}: running runc {what} (is runc installed?)"),
            e,
        )
    })?;
    if code != 0 {
        return Err(TaskError::Internal(format!(
            "container {id}: runc {what} failed ({code}): {}",
            last_runc_error(log)
        )));
    }
    Ok(())
}

/// `runc create` for `request` with the spec the dispatch loaded; the rootfs is already
/// mounted (`rootfs`, when Create mounted it).
pub fn create(
    request: &CreateRequest,
    spec: &Spec,
    rootfs: Option<PathBuf>,
    runc_root: &std::path::Path,
) -> TaskResult<Box<dyn ContainerProcess>> {
    let id = &request.id;
    let open_err = |what: &str, e: std::io::Error| {
        TaskError::internal(format!("container {id}: opening {what}"), e)
    };
    let stdin = fd::open_input(&request.stdin).map_err(|e| open_err("stdin", e))?;
    let stdout = fd::open_output(&request.stdout).map_err(|e| open_err("stdout", e))?;
    let stderr = fd::open_output(&request.stderr).map_err(|e| open_err("stderr", e))?;
    let as_stdio = |f: Option<std::fs::File>| f.map_or_else(Stdio::null, Stdio::from);
    let bundle = request.bundle.display().to_string();
    let pid_file = request.bundle.join(PID_FILE);
    let log = request.bundle.join(LOG_FILE);
    let mut command = runc(
        runc_root,
        &log,
        &[
            "create",
            "--bundle",
            &bundle,
            "--pid-file",
            &pid_file.display().to_string(),
            id,
        ],
    );
    // The container's init inherits runc's stdio: give it the container's FIFOs.
    command
        .stdin(as_stdio(stdin))
        .stdout(as_stdio(stdout))
        .stderr(as_stdio(stderr));
    run_runc(id, "create", &log, &mut command)?;
    let pid: u32 = wait_for_pid_file(&pid_file).ok_or_else(|| {
        TaskError::Internal(format!(
            "container {id}: runc create did not write {}",
            pid_file.display()
        ))
    })?;
    // runc made it; this handle reads its usage and lists its processes.
    let cgroup = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.cgroups_path().as_ref())
        .and_then(|path| Cgroup::new(&path.display().to_string()).ok());
    Ok(Box::new(RuncProcess {
        core: ProcessCore::new(id, pid, cgroup, rootfs),
        bundle: request.bundle.clone(),
        runc: Runc {
            root: runc_root.to_owned(),
            log,
        },
    }))
}

fn wait_for_pid_file(path: &std::path::Path) -> Option<u32> {
    for _ in 0..500 {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

impl ContainerProcess for RuncProcess {
    fn pid(&self) -> u32 {
        self.core.pid
    }

    fn start(&mut self) -> TaskResult<()> {
        let id = &self.core.id;
        self.runc.run(id, "start", &["start", id])
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
        self.core.oom_killed()
    }

    fn release(&mut self) -> TaskResult<()> {
        if let Err(e) = delete_force(&self.core.id, &self.runc.root, &self.runc.log) {
            warn!("{e}");
        }
        self.core.unmount_rootfs()
    }

    fn set_frozen(&self, frozen: bool) -> TaskResult<()> {
        let id = &self.core.id;
        let what = if frozen { "pause" } else { "resume" };
        self.runc.run(id, what, &[what, id])
    }

    fn update(&self, resources: &LinuxResources) -> TaskResult<()> {
        let id = &self.core.id;
        // `runc update --resources FILE`: the same LinuxResources JSON, from the bundle.
        let file = self.bundle.join("update-resources.json");
        let json = serde_json::to_vec(resources)
            .map_err(|e| TaskError::internal(format!("container {id}: update"), e))?;
        std::fs::write(&file, json).map_err(|e| {
            TaskError::internal(format!("container {id}: writing {}", file.display()), e)
        })?;
        let path = file.to_string_lossy().into_owned();
        let result = self
            .runc
            .run(id, "update", &["update", "--resources", &path, id]);
        let _ = std::fs::remove_file(&file);
        result
    }

    fn exec_launcher(&self) -> TaskResult<std::sync::Arc<dyn ExecLauncher>> {
        Ok(std::sync::Arc::new(RuncExecLauncher {
            bundle: self.bundle.clone(),
            runc: self.runc.clone(),
        }))
    }
}

/// Makes the execs of one Linux container.
struct RuncExecLauncher {
    bundle: PathBuf,
    runc: Runc,
}

impl ExecLauncher for RuncExecLauncher {
    fn exec(&self, request: &ExecRequest) -> TaskResult<Box<dyn ExecProcess>> {
        if request.process.terminal() == Some(true) {
            return Err(TaskError::InvalidArgument(format!(
                "container {} exec {}: a terminal (tty) is not supported by wasmpod",
                request.container_id, request.exec_id
            )));
        }
        Ok(Box::new(RuncExec {
            request: request.clone(),
            files: self.bundle.clone(),
            runc: self.runc.clone(),
            pid: 0,
            pidfd: None,
        }))
    }
}

/// An exec in a Linux container: `runc exec --detach` at Start (runc has no create step
/// for execs); the process is re-parented to this shim, whose reaper sees its exit.
struct RuncExec {
    request: ExecRequest,
    pidfd: Option<crate::os::pidfd::Pidfd>,
    /// The bundle, where `exec-<exec id>.json` (the process) and `.pid` are written.
    files: PathBuf,
    runc: Runc,
    pid: u32,
}

impl RuncExec {
    fn file(&self, extension: &str) -> PathBuf {
        self.files
            .join(format!("exec-{}.{extension}", self.request.exec_id))
    }
}

impl ExecProcess for RuncExec {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn start(&mut self) -> TaskResult<u32> {
        let ExecRequest {
            container_id,
            exec_id,
            ..
        } = &self.request;
        let what = format!("container {container_id} exec {exec_id}");
        if self.pid != 0 {
            return Err(TaskError::FailedPrecondition(format!(
                "{what}: already started"
            )));
        }
        let process_file = self.file("json");
        let pid_file = self.file("pid");
        let json =
            serde_json::to_vec(&self.request.process).map_err(|e| TaskError::internal(&what, e))?;
        std::fs::write(&process_file, json).map_err(|e| {
            TaskError::internal(format!("{what}: writing {}", process_file.display()), e)
        })?;
        let open_err = |stdio: &str, e: std::io::Error| {
            TaskError::internal(format!("{what}: opening {stdio}"), e)
        };
        let stdin = fd::open_input(&self.request.stdin).map_err(|e| open_err("stdin", e))?;
        let stdout = fd::open_output(&self.request.stdout).map_err(|e| open_err("stdout", e))?;
        let stderr = fd::open_output(&self.request.stderr).map_err(|e| open_err("stderr", e))?;
        let as_stdio = |f: Option<std::fs::File>| f.map_or_else(Stdio::null, Stdio::from);
        let mut command = self.runc.command(&[
            "exec",
            "--detach",
            "--pid-file",
            &pid_file.display().to_string(),
            "--process",
            &process_file.display().to_string(),
            container_id,
        ]);
        command
            .stdin(as_stdio(stdin))
            .stdout(as_stdio(stdout))
            .stderr(as_stdio(stderr));
        run_runc(container_id, "exec", &self.runc.log, &mut command)?;
        self.pid = wait_for_pid_file(&pid_file).ok_or_else(|| {
            TaskError::Internal(format!(
                "{what}: runc exec did not write {}",
                pid_file.display()
            ))
        })?;
        // Re-parented to this shim: if it is not reaped yet, the pidfd names it; if it was,
        // its exit is already recorded and nothing signals it any more.
        self.pidfd = crate::os::pidfd::Pidfd::open(self.pid).ok();
        Ok(self.pid)
    }

    fn signal(&self, signal: u32) -> TaskResult<bool> {
        if self.pid == 0 {
            return Ok(false);
        }
        let ExecRequest {
            container_id,
            exec_id,
            ..
        } = &self.request;
        super::signal_process(
            self.pidfd.as_ref(),
            self.pid,
            signal,
            &format!("container {container_id} exec {exec_id}"),
        )
    }

    fn release(&mut self) {
        for extension in ["json", "pid"] {
            let _ = std::fs::remove_file(self.file(extension));
        }
    }
}

/// Best-effort `runc delete --force` after a shim crash (no-op for wasm containers).
pub fn force_delete(id: &str, bundle: &std::path::Path, runc_root: &std::path::Path) {
    if runc_root.join(id).exists()
        && let Err(e) = delete_force(id, runc_root, &bundle.join(LOG_FILE))
    {
        warn!("{e}");
    }
}

/// `runc delete --force ID`.
fn delete_force(id: &str, root: &std::path::Path, log: &std::path::Path) -> TaskResult<()> {
    run_runc(
        id,
        "delete",
        log,
        &mut runc(root, log, &["delete", "--force", id]),
    )
}
