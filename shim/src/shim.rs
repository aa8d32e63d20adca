//! The shim's process-level entry points for containerd: `start` (find or spawn the pod's
//! shim daemon), `delete` (clean up after a dead shim) and the daemon's task service.
//!
//! Grouping: all containers whose spec carries the same `io.kubernetes.cri.sandbox-id`
//! annotation share one daemon (one shim per pod); other containers get one each.

use std::path::Path;
use std::sync::Arc;

use containerd_shim::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, ExitSignal, Flags, StartOpts};
use log::{debug, info, warn};

use crate::events::{EventSink, RemoteEvents, to_timestamp};
use crate::lifecycle::Containers;
use crate::os::pidfile::{KillOutcome, RecordedProcess};
use crate::os::rootfs;
use crate::process::dispatch::ShimLauncher;
use crate::process::runner::parent::RunnerSettings;
use crate::process::runner::protocol::{RUNNER_PID_FILE, is_exec_pid_file};
use crate::service::TaskService;

/// The spec annotation CRI sets on every container of a pod.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

pub struct WasmpodShim {
    namespace: String,
    debug: bool,
    id: String,
    /// The daemon's socket (`unix://...`), empty for `start`/`delete`.
    socket: String,
    /// containerd's gRPC socket (`-address`), for payloads read from images.
    containerd_address: String,
    exit: Arc<ExitSignal>,
}

/// The grouping id of the container whose bundle is `bundle`.
pub fn grouping_id(bundle: &Path, container_id: &str) -> String {
    let annotation = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|spec| {
            spec.pointer(&format!(
                "/annotations/{}",
                SANDBOX_ID_ANNOTATION.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(|v| v.as_str().map(str::to_owned))
        });
    annotation.unwrap_or_else(|| container_id.to_owned())
}

/// Whether a shim daemon answers on `address` (`unix:///run/containerd/s/...`).
fn shim_listening(address: &str) -> bool {
    // The crate's `connect` takes a socket path, not the `unix://` address it hands out.
    let path = address.strip_prefix("unix://").unwrap_or(address);
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Replaces the crate's SIGCHLD and SIGPIPE handlers (installed in every role, `start`
/// included) with the default action and, for SIGPIPE, Rust's usual "ignore".
fn restore_default_signals() {
    for (signal, action) in [
        (libc::SIGCHLD, libc::SIG_DFL),
        (libc::SIGPIPE, libc::SIG_IGN),
    ] {
        // SAFETY: plain dispositions, no handler code involved.
        unsafe { libc::signal(signal, action) };
    }
}

impl WasmpodShim {
    /// SIGKILLs the runner recorded in `bundle` if it still runs, proven by its start time
    /// ([`RecordedProcess::kill`]); a pid file that is malformed, names pid 0/1 or a process
    /// started at another time is refused and nothing is signalled. Returns the pid.
    fn kill_leftover_runner(&self, bundle: &Path) -> Option<u32> {
        // Exec runners first (recorded as `runner-exec-<id>.pid`): after a shim crash they
        // would otherwise keep the pod's network, ports and cgroup.
        let execs = std::fs::read_dir(bundle).into_iter().flatten().flatten();
        for entry in execs.filter(|e| is_exec_pid_file(&e.file_name().to_string_lossy())) {
            self.kill_recorded(&entry.path());
        }
        self.kill_recorded(&bundle.join(RUNNER_PID_FILE))
    }

    /// SIGKILL to the process a pid file records, if it is still that process.
    fn kill_recorded(&self, path: &Path) -> Option<u32> {
        let recorded = match RecordedProcess::read(path) {
            Ok(recorded) => recorded?,
            Err(e) => {
                warn!("cleaning up {}: not signalling anything: {e}", self.id);
                return None;
            }
        };
        let pid = recorded.pid;
        match recorded.kill(libc::SIGKILL) {
            Ok(KillOutcome::Killed) => info!("killed leftover runner {pid} of {}", self.id),
            Ok(KillOutcome::Gone) => {}
            Ok(KillOutcome::NotOurs) => {
                warn!(
                    "cleaning up {}: pid {pid} now belongs to another process (start time differs); left alone",
                    self.id
                );
                return None;
            }
            Err(e) => warn!("killing leftover runner {pid} of {}: {e}", self.id),
        }
        Some(pid)
    }
}

impl containerd_shim::Shim for WasmpodShim {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        WasmpodShim {
            namespace: args.namespace.clone(),
            debug: args.debug,
            id: args.id.clone(),
            socket: args.socket.clone(),
            containerd_address: args.address.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let bundle = std::env::current_dir().map_err(|e| containerd_shim::Error::IoError {
            context: "reading the bundle directory".into(),
            err: e,
        })?;
        let grouping = grouping_id(&bundle, &opts.id);
        let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &grouping);
        // The pod's shim already runs: hand containerd its socket instead of a new daemon.
        if shim_listening(&address) {
            containerd_shim::util::write_address(&address)?;
            return Ok(address);
        }
        // Two containers of a new pod may both get here; the daemon that loses the bind
        // sees the winner answering, hands over its address and exits. Its exit must not
        // reach the crate's signal handlers in this short-lived process: they write to a
        // self-pipe nobody reads in `start`, and a SIGPIPE from that write re-enters them
        // forever (seen once in 500 pod starts). This process needs no signal handling.
        restore_default_signals();
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().map_err(|e| containerd_shim::Error::IoError {
            context: "reading the bundle directory".into(),
            err: e,
        })?;
        let pid = self.kill_leftover_runner(&bundle);
        crate::process::runc::force_delete(
            &self.id,
            &bundle,
            &crate::process::runc::root_for(&self.namespace),
        );
        if let Err(e) = rootfs::unmount(&bundle.join("rootfs")) {
            warn!("cleaning up {}: {e}", self.id);
        }
        // `Cgroup::new` refuses a path that leaves the hierarchy: nothing outside is removed.
        if let Ok(spec) = oci_spec::runtime::Spec::load(bundle.join("config.json"))
            && let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone())
            && let Ok(cgroup) = crate::os::cgroup::Cgroup::new(&path.display().to_string())
            && let Err(e) = cgroup.remove()
        {
            warn!("cleaning up {}: {e}", self.id);
        }
        Ok(DeleteResponse {
            pid: pid.unwrap_or(0),
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(to_timestamp(std::time::SystemTime::now())).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
        // The crate removes the socket named in the first container's bundle, which
        // containerd may have deleted already in a shared shim: remove it here.
        let path = self.socket.trim_start_matches("unix://");
        if !path.is_empty()
            && let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!("removing shim socket {path}: {e}");
        }
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        crate::logging::init(self.debug);
        let cache_dir = crate::process::runner::child::cache_dir();
        crate::process::runner::warn_if_cache_off(cache_dir.as_deref());
        let events: Arc<dyn EventSink> = Arc::new(RemoteEvents::new(
            publisher,
            self.namespace.clone(),
            std::env::var("TTRPC_ADDRESS").ok(),
        ));
        let exe = own_binary();
        let launcher = ShimLauncher::new(
            RunnerSettings {
                exe,
                containerd: Some(crate::image::ContainerdApi {
                    address: self.containerd_address.clone(),
                    namespace: self.namespace.clone(),
                }),
                cache_dir,
            },
            crate::process::runc::root_for(&self.namespace),
        );
        let containers = Arc::new(Containers::new(Box::new(launcher), events));
        crate::reaper::forward_exits(containers.clone());
        let service = TaskService::new(containers, self.exit.clone());
        if let Some(began) = crate::MAIN_BEGAN.get() {
            debug!(
                "shim daemon for {}: task service ready {:?} after main",
                self.id,
                began.elapsed()
            );
        }
        service
    }
}

/// The binary runners are started from: this daemon's own, held open from its start so that
/// a shim upgrade that replaces (renames over) the file on disk does not change what runs.
/// The child execs `/proc/self/fd/N`, its inherited copy of that descriptor (as `fexecve`).
fn own_binary() -> std::path::PathBuf {
    static OWN: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let file = OWN.get_or_init(|| match std::fs::File::open("/proc/self/exe") {
        Ok(file) => Some(file),
        Err(e) => {
            warn!("opening /proc/self/exe: {e}; runners start from the binary's path");
            None
        }
    });
    match file {
        Some(file) => {
            use std::os::fd::AsRawFd;
            format!("/proc/self/fd/{}", file.as_raw_fd()).into()
        }
        None => std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_pod_shim_is_found_by_its_unix_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let address = format!("unix://{}", path.display());
        assert!(!shim_listening(&address));
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(shim_listening(&address));
    }

    #[test]
    fn groups_by_sandbox_annotation_else_container_id() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(grouping_id(dir.path(), "c1"), "c1");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod-123"}}"#,
        )
        .unwrap();
        assert_eq!(grouping_id(dir.path(), "c1"), "pod-123");
    }
}
