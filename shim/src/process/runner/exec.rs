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

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::debug;
use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

use super::parent::{RunnerSettings, spawn};
use super::protocol::{Entrypoint, FailureKind, RunnerRequest, oom_marker_name};
use super::spec::GuestSpec;
use crate::error::{TaskError, TaskResult};
use crate::os::drain::OutputDrain;
use crate::os::pidfd::Pidfd;
use crate::process::dispatch::resolve_entrypoint;
use crate::process::{ContainerKind, EXEC_TARGETS, ExecProcess, ExecRequest, ProcessCore};

/// What an exec needs of its container.
pub struct Container<'a> {
    pub core: &'a ProcessCore,
    pub bundle: &'a Path,
    pub spec: &'a Spec,
    pub settings: &'a RunnerSettings,
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
    core: &ProcessCore,
    request: &ExecRequest,
) -> TaskResult<Vec<(&'static str, std::fs::File)>> {
    let what = format!(
        "container {} exec {}",
        request.container_id, request.exec_id
    );
    let gone =
        || TaskError::FailedPrecondition(format!("{what}: the container's process has exited"));
    let pidfd = core.pidfd.as_ref().ok_or_else(|| {
        TaskError::FailedPrecondition(format!(
            "{what}: no handle on the container's process (pidfd) to join its namespaces"
        ))
    })?;
    let mut opened = Vec::with_capacity(SHARED_NAMESPACES.len());
    for (_, name) in SHARED_NAMESPACES {
        let path = format!("/proc/{}/ns/{name}", core.pid);
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

/// Whether `path` starts like a WebAssembly binary (`\0asm`).
fn is_wasm_file(path: &Path) -> bool {
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == *b"\0asm")
}

/// The program an exec names, when it is a `.wasm` of the image.
fn exec_target(request: &ExecRequest, guest: &GuestSpec, rootfs: &Path) -> TaskResult<Entrypoint> {
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
    match &entrypoint {
        Entrypoint::Rootfs { host_path, .. }
            if crate::process::dispatch::classify(&entrypoint) == ContainerKind::Wasm
                && is_wasm_file(host_path) =>
        {
            Ok(entrypoint)
        }
        Entrypoint::Rootfs { guest_path, .. } => Err(refuse(format!(
            "{args0:?} ({guest_path}) is not a WebAssembly program"
        ))),
        Entrypoint::NotInRootfs { .. } | Entrypoint::None => {
            Err(refuse(format!("{args0:?} is not in the image")))
        }
    }
}

/// Prepares the exec process: a runner waiting for Start.
pub fn create(
    container: &Container<'_>,
    request: &ExecRequest,
) -> TaskResult<Box<dyn ExecProcess>> {
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
    // Held until the runner is spawned: the spec names them as /proc/self/fd/N.
    let namespaces = open_namespaces(container.core, request)?;
    let spec = exec_spec(container.spec, request.process.clone(), |name| {
        let (_, file) = namespaces
            .iter()
            .find(|(n, _)| *n == name)
            .expect("every shared namespace is opened");
        PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
    })?;
    let guest = GuestSpec::from_spec(&spec, &rootfs);
    let entrypoint = exec_target(request, &guest, &rootfs)?;
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
    let (pid, start, timing) = spawn(
        &runner_request,
        ContainerKind::Wasm,
        container.core.cgroup.as_ref(),
        &container.settings.exe,
        None,
    )?;
    drop(namespaces);
    debug!("container {container_id} exec {exec_id}: process {pid} ready ({timing})");
    Ok(Box::new(RunnerExec {
        container_id: container_id.clone(),
        exec_id: exec_id.clone(),
        pid,
        pidfd: Pidfd::open(pid).ok(),
        start: Some(start),
        oom_marker: container
            .bundle
            .join(oom_marker_name(Some(exec_id.as_str()))),
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
        crate::os::signals::send_to(self.pidfd.as_ref(), self.pid, signal).map_err(|e| {
            TaskError::internal(
                format!(
                    "container {} exec {}: signal {signal} to pid {}",
                    self.container_id, self.exec_id, self.pid
                ),
                e,
            )
        })
    }

    fn output(&self) -> Option<Arc<OutputDrain>> {
        Some(self.output.clone())
    }

    fn release(&mut self) {
        self.start = None;
        let _ = std::fs::remove_file(&self.oom_marker);
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
            Ok(Entrypoint::Rootfs { .. })
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
}
