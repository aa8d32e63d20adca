//! Exec in a wasm container: one more runner, for a `.wasm` program of the container's image.
//!
//! An exec process is the container's own kind of process, made the same way: this binary
//! re-executed as `__run`, with a request derived from the container's spec
//! ([`exec_spec`]): the exec's `process` (args, env, cwd, user) in place of the container's,
//! every namespace the container's process is in joined through its pid
//! (`/proc/<pid>/ns/*`, so a namespace the container created is shared, not made again;
//! opened, then checked through the process's pidfd, so a pid that was freed and taken
//! over meanwhile is never joined),
//! its cgroup joined (not created: the limits an Update set stay), its mounts as
//! preopens, its confinement (capabilities, seccomp, no_new_privs) applied again by the new
//! runner. Only a `.wasm` file of the image can be exec'd: `sh` or any Linux program is
//! refused with [`EXEC_TARGETS`], so `kubectl exec`, exec probes and `ctr task exec` say
//! what is possible.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::debug;
use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

use super::parent::{RunnerSettings, spawn};
use super::protocol::{
    Entrypoint, FailureKind, PAYLOAD_FD_PATH, RunnerRequest, exec_pid_file_name, oom_marker_name,
};
use super::spec::GuestSpec;
use crate::error::{TaskError, TaskResult};
use crate::os::cgroup::Cgroup;
use crate::os::drain::OutputDrain;
use crate::os::mountns::open_in_root;
use crate::os::pidfd::Pidfd;
use crate::process::dispatch::resolve_entrypoint;
use crate::process::{ContainerKind, EXEC_TARGETS, ExecLauncher, ExecProcess, ExecRequest};

/// What an exec needs of its container, shared with the container's process.
pub struct ExecContext {
    pub container_id: String,
    /// The container's process, whose namespaces an exec joins.
    pub pid: u32,
    pub pidfd: Option<Arc<Pidfd>>,
    pub cgroup: Option<Cgroup>,
    pub bundle: PathBuf,
    pub spec: Spec,
    pub settings: RunnerSettings,
}

impl ExecLauncher for ExecContext {
    fn exec(&self, request: &ExecRequest) -> TaskResult<Box<dyn ExecProcess>> {
        create(self, request)
    }
}

/// The namespaces an exec joins through the container process's `/proc/<pid>/ns/`.
const SHARED_NAMESPACES: [(LinuxNamespaceType, &str); 4] = [
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Pid, "pid"),
];

/// The spec of an exec process of the container: `namespace("net")` names the container
/// process's network namespace, etc.
pub fn exec_spec(
    container: &Spec,
    process: oci_spec::runtime::Process,
    namespace: impl Fn(&str) -> PathBuf,
) -> TaskResult<Spec> {
    let mut spec = container.clone();
    spec.set_process(Some(process));
    // Joined, never set again.
    spec.set_hostname(None);
    if let Some(linux) = spec.linux_mut() {
        let namespaces = linux.namespaces().clone().unwrap_or_default();
        let mut joined = Vec::with_capacity(namespaces.len());
        for ns in namespaces {
            let shared = SHARED_NAMESPACES.iter().find(|(t, _)| *t == ns.typ());
            joined.push(match shared {
                Some((typ, name)) => LinuxNamespaceBuilder::default()
                    .typ(*typ)
                    .path(namespace(name))
                    .build()
                    .map_err(|e| TaskError::internal("exec namespaces", e))?,
                None => ns,
            });
        }
        linux.set_namespaces(Some(joined));
    }
    Ok(spec)
}

/// Opens the container process's namespaces, proving through its pidfd that the pid was
/// still that process when they were opened (it may have exited, and its pid been taken).
fn open_namespaces(
    container: &ExecContext,
    request: &ExecRequest,
) -> TaskResult<Vec<(&'static str, std::fs::File)>> {
    let what = format!(
        "container {} exec {}",
        request.container_id, request.exec_id
    );
    let gone =
        || TaskError::FailedPrecondition(format!("{what}: the container's process has exited"));
    let pidfd = container.pidfd.as_ref().ok_or_else(|| {
        TaskError::FailedPrecondition(format!(
            "{what}: no handle on the container's process (pidfd) to join its namespaces"
        ))
    })?;
    let mut opened = Vec::with_capacity(SHARED_NAMESPACES.len());
    for (_, name) in SHARED_NAMESPACES {
        let path = format!("/proc/{}/ns/{name}", container.pid);
        match std::fs::File::open(&path) {
            Ok(file) => opened.push((name, file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone()),
            Err(e) => return Err(TaskError::internal(format!("{what}: opening {path}"), e)),
        }
    }
    if !pidfd.is_alive() {
        return Err(gone());
    }
    Ok(opened)
}

/// The program an exec names, when it is a `.wasm` of the image: found as the entrypoint
/// would be, then opened inside the rootfs by the kernel ([`open_in_root`]: the guest may
/// be swapping symlinks in its rootfs right now), checked to be a regular file starting
/// with `\0asm` through that descriptor, which the runner then reads.
fn exec_target(
    request: &ExecRequest,
    guest: &GuestSpec,
    rootfs: &Path,
) -> TaskResult<(Entrypoint, std::fs::File)> {
    let ExecRequest {
        container_id,
        exec_id,
        ..
    } = request;
    let args0 = guest.args.first().cloned().unwrap_or_default();
    let refuse = |why: String| {
        TaskError::FailedPrecondition(format!(
            "container {container_id} exec {exec_id}: {why}: {EXEC_TARGETS}"
        ))
    };
    if args0.is_empty() {
        return Err(refuse("no program given".into()));
    }
    let entrypoint = resolve_entrypoint(guest, rootfs).map_err(|e| {
        TaskError::runner_failed(
            FailureKind::of_core_error(&e),
            format!("container {container_id} exec {exec_id}: {e}"),
        )
    })?;
    let Entrypoint::Rootfs { guest_path, .. } = entrypoint else {
        return Err(refuse(format!("{args0:?} is not in the image")));
    };
    let not_wasm = || {
        refuse(format!(
            "{args0:?} ({guest_path}) is not a WebAssembly program"
        ))
    };
    let file = match open_in_root(rootfs, &guest_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(format!("{args0:?} is not in the image")));
        }
        Err(e) => {
            return Err(refuse(format!(
                "{args0:?} ({guest_path}) cannot be opened: {e}"
            )));
        }
    };
    let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
    let mut head = [0u8; 4];
    if !regular || file.read_exact_at(&mut head, 0).is_err() || head != *b"\0asm" {
        return Err(not_wasm());
    }
    Ok((
        Entrypoint::Rootfs {
            guest_path,
            host_path: PathBuf::from(PAYLOAD_FD_PATH),
        },
        file,
    ))
}

/// The exec's process, never allowed more than the container's: capabilities within the
/// container's sets, its `oomScoreAdj` at least the container's, hard rlimits at most the
/// container's. (runc takes an exec's process as given; CRI sends the container's own with
/// other args, which this leaves as it is.)
fn clamp_to_container(
    mut process: oci_spec::runtime::Process,
    container: Option<&oci_spec::runtime::Process>,
) -> oci_spec::runtime::Process {
    let Some(container) = container else {
        return process;
    };
    let allowed = container.capabilities().clone().unwrap_or_default();
    let within = |asked: Option<oci_spec::runtime::Capabilities>,
                  allowed: Option<&oci_spec::runtime::Capabilities>| {
        let allowed = allowed.cloned().unwrap_or_default();
        asked.map(|asked| asked.intersection(&allowed).copied().collect())
    };
    let mut caps = process.capabilities().clone().unwrap_or_default();
    caps.set_bounding(within(caps.bounding().clone(), allowed.bounding().as_ref()));
    caps.set_effective(within(
        caps.effective().clone(),
        allowed.effective().as_ref(),
    ));
    caps.set_inheritable(within(
        caps.inheritable().clone(),
        allowed.inheritable().as_ref(),
    ));
    caps.set_permitted(within(
        caps.permitted().clone(),
        allowed.permitted().as_ref(),
    ));
    caps.set_ambient(within(caps.ambient().clone(), allowed.ambient().as_ref()));
    process.set_capabilities(Some(caps));
    let oom = match (process.oom_score_adj(), container.oom_score_adj()) {
        (Some(asked), Some(theirs)) => Some(asked.max(theirs)),
        (_, theirs) => theirs,
    };
    process.set_oom_score_adj(oom);
    if let Some(theirs) = container.rlimits() {
        let mut limits = process.rlimits().clone().unwrap_or_default();
        for limit in theirs {
            match limits.iter_mut().find(|l| l.typ() == limit.typ()) {
                Some(asked) => {
                    let hard = asked.hard().min(limit.hard());
                    *asked = oci_spec::runtime::PosixRlimitBuilder::default()
                        .typ(asked.typ())
                        .hard(hard)
                        .soft(asked.soft().min(hard))
                        .build()
                        .expect("every field is set");
                }
                None => limits.push(*limit),
            }
        }
        process.set_rlimits(Some(limits));
    }
    process
}

/// Prepares the exec process: a runner waiting for Start.
fn create(container: &ExecContext, request: &ExecRequest) -> TaskResult<Box<dyn ExecProcess>> {
    let ExecRequest {
        container_id,
        exec_id,
        ..
    } = request;
    if request.process.terminal() == Some(true) {
        return Err(TaskError::InvalidArgument(format!(
            "container {container_id} exec {exec_id}: a terminal (tty) is not supported for wasm containers"
        )));
    }
    let rootfs = container.bundle.join("rootfs");
    let process = clamp_to_container(request.process.clone(), container.spec.process().as_ref());
    // Held until the runner is spawned: the spec names them as /proc/self/fd/N.
    let namespaces = open_namespaces(container, request)?;
    let spec = exec_spec(&container.spec, process, |name| {
        let (_, file) = namespaces
            .iter()
            .find(|(n, _)| *n == name)
            .expect("every shared namespace is opened");
        PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
    })?;
    let guest = GuestSpec::from_spec(&spec, &rootfs);
    let (entrypoint, program) = exec_target(request, &guest, &rootfs)?;
    let runner_request = RunnerRequest {
        build: super::protocol::this_build(),
        id: container_id.clone(),
        exec_id: Some(exec_id.clone()),
        bundle: container.bundle.to_owned(),
        rootfs,
        stdin: request.stdin.clone(),
        stdout: request.stdout.clone(),
        stderr: request.stderr.clone(),
        containerd: container.settings.containerd.clone(),
        cache_dir: container.settings.cache_dir.clone(),
        spec,
        guest,
        entrypoint,
    };
    let pid_file = container.bundle.join(exec_pid_file_name(exec_id));
    let oom_marker = container
        .bundle
        .join(oom_marker_name(Some(exec_id.as_str())));
    let spawned = spawn(
        &runner_request,
        ContainerKind::Wasm,
        container.cgroup.as_ref(),
        &container.settings.exe,
        Some(&pid_file),
        Some(&program),
    );
    drop(namespaces);
    let (pid, start, timing) = spawned.map_err(|e| {
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(&oom_marker);
        // The container stopped meanwhile (its PID namespace took the new runner with it):
        // say so, rather than an internal error.
        match &container.pidfd {
            Some(pidfd) if !pidfd.is_alive() => TaskError::FailedPrecondition(format!(
                "container {container_id} exec {exec_id}: the container's process exited while the exec was prepared"
            )),
            _ => e,
        }
    })?;
    debug!("container {container_id} exec {exec_id}: process {pid} ready ({timing})");
    Ok(Box::new(RunnerExec {
        container_id: container_id.clone(),
        exec_id: exec_id.clone(),
        pid,
        pidfd: Pidfd::open(pid).ok(),
        start: Some(start),
        oom_marker,
        pid_file,
        output: Arc::new(OutputDrain::open([
            request.stdout.as_str(),
            request.stderr.as_str(),
        ])),
    }))
}

/// A prepared or running exec runner.
struct RunnerExec {
    container_id: String,
    exec_id: String,
    pid: u32,
    /// Opened while the runner was an unreaped child: signals reach it or nobody.
    pidfd: Option<Pidfd>,
    start: Option<std::fs::File>,
    oom_marker: PathBuf,
    /// Its record for the `delete` subcommand (a shim that died leaves no exec running).
    pid_file: PathBuf,
    output: Arc<OutputDrain>,
}

impl ExecProcess for RunnerExec {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn start(&mut self) -> TaskResult<u32> {
        let Self {
            container_id,
            exec_id,
            pid,
            ..
        } = self;
        let mut pipe = self.start.take().ok_or_else(|| {
            TaskError::FailedPrecondition(format!(
                "container {container_id} exec {exec_id}: already started"
            ))
        })?;
        pipe.write_all(b"s").map_err(|e| {
            TaskError::internal(
                format!("container {container_id} exec {exec_id}: starting process {pid}"),
                e,
            )
        })?;
        Ok(*pid)
    }

    fn signal(&self, signal: u32) -> TaskResult<bool> {
        crate::process::signal_process(
            self.pidfd.as_ref(),
            self.pid,
            signal,
            &format!("container {} exec {}", self.container_id, self.exec_id),
        )
    }

    fn output(&self) -> Option<Arc<OutputDrain>> {
        Some(self.output.clone())
    }

    fn release(&mut self) {
        self.start = None;
        let _ = std::fs::remove_file(&self.oom_marker);
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespace, ProcessBuilder, SpecBuilder};

    fn namespace(typ: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut ns = LinuxNamespaceBuilder::default().typ(typ).build().unwrap();
        ns.set_path(path.map(PathBuf::from));
        ns
    }

    #[test]
    fn an_exec_joins_every_namespace_of_the_container_process_but_mounts() {
        let container = SpecBuilder::default()
            .hostname("pod")
            .process(
                ProcessBuilder::default()
                    .args(vec!["/app.wasm".into()])
                    .build()
                    .unwrap(),
            )
            .linux(
                LinuxBuilder::default()
                    .namespaces(vec![
                        namespace(LinuxNamespaceType::Network, Some("/var/run/netns/cni-1")),
                        namespace(LinuxNamespaceType::Pid, None),
                        namespace(LinuxNamespaceType::Ipc, None),
                        namespace(LinuxNamespaceType::Uts, None),
                        namespace(LinuxNamespaceType::Mount, None),
                        namespace(LinuxNamespaceType::Cgroup, None),
                    ])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let process = ProcessBuilder::default()
            .args(vec!["/probe.wasm".into(), "ok".into()])
            .build()
            .unwrap();
        let spec = exec_spec(&container, process, |name| {
            PathBuf::from(format!("/proc/4242/ns/{name}"))
        })
        .unwrap();
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_ref().unwrap(),
            &["/probe.wasm", "ok"]
        );
        assert_eq!(spec.hostname(), &None);
        let namespaces: Vec<_> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .map(|ns| (ns.typ(), ns.path().clone()))
            .collect();
        let at = |name: &str| Some(PathBuf::from(format!("/proc/4242/ns/{name}")));
        assert_eq!(
            namespaces,
            [
                (LinuxNamespaceType::Network, at("net")),
                (LinuxNamespaceType::Pid, at("pid")),
                (LinuxNamespaceType::Ipc, at("ipc")),
                (LinuxNamespaceType::Uts, at("uts")),
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Cgroup, None),
            ]
        );
    }

    fn exec_request(args: &[&str]) -> ExecRequest {
        ExecRequest {
            container_id: "c".into(),
            exec_id: "e".into(),
            process: ProcessBuilder::default()
                .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
                .build()
                .unwrap(),
            stdin: String::new(),
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    fn guest_of(request: &ExecRequest, rootfs: &Path) -> GuestSpec {
        let spec = SpecBuilder::default()
            .process(request.process.clone())
            .build()
            .unwrap();
        GuestSpec::from_spec(&spec, rootfs)
    }

    #[test]
    fn only_wasm_programs_of_the_image_are_exec_targets() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::write(rootfs.path().join("probe.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(rootfs.path().join("tool"), b"\x7fELF\x02\x01\x01").unwrap();
        std::fs::write(rootfs.path().join("notes.wasm"), b"hello").unwrap();
        let target = |args: &[&str]| {
            let request = exec_request(args);
            exec_target(&request, &guest_of(&request, rootfs.path()), rootfs.path())
        };
        assert!(matches!(
            target(&["/probe.wasm"]),
            Ok((Entrypoint::Rootfs { .. }, _))
        ));
        for args in [&["sh", "-c", "true"][..], &["/tool"], &["/notes.wasm"], &[]] {
            match target(args) {
                Err(TaskError::FailedPrecondition(message)) => {
                    assert!(message.contains(EXEC_TARGETS), "{args:?}: {message}")
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_exec_gets_no_capability_oom_score_or_rlimit_beyond_the_containers() {
        let container: oci_spec::runtime::Process = serde_json::from_value(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0}, "oomScoreAdj": 500,
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
                             "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        }))
        .unwrap();
        let asked: oci_spec::runtime::Process = serde_json::from_value(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0}, "oomScoreAdj": -1000,
            "capabilities": {"bounding": ["CAP_SYS_ADMIN", "CAP_CHOWN"],
                             "effective": ["CAP_SYS_ADMIN", "CAP_CHOWN"],
                             "ambient": ["CAP_SYS_ADMIN"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]
        }))
        .unwrap();
        let process = clamp_to_container(asked, Some(&container));
        let json = serde_json::to_value(&process).unwrap();
        assert_eq!(
            json["capabilities"]["bounding"],
            serde_json::json!(["CAP_CHOWN"])
        );
        assert_eq!(
            json["capabilities"]["effective"],
            serde_json::json!(["CAP_CHOWN"])
        );
        assert_eq!(json["capabilities"]["ambient"], serde_json::json!([]));
        assert_eq!(json["oomScoreAdj"], 500);
        assert_eq!(json["rlimits"][0]["hard"], 1024);
        assert_eq!(json["rlimits"][0]["soft"], 1024);
    }
}
