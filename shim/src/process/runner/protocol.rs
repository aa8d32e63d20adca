//! What the shim and a container's child process (runner or pause) say to each other.
//!
//! The shim re-executes its own binary as `containerd-shim-wasmpod-v1 __run` (or `__pause`)
//! with three pipes. It writes one JSON [`RunnerRequest`] on [`REQUEST_FD`] and closes it:
//! the spec as the shim loaded it, the guest's view of it and the entrypoint the shim
//! resolved, so the child neither reads `config.json` nor resolves anything again (a pipe,
//! not argv: a spec with a seccomp profile can approach the kernel's 128 KiB bound on one
//! argument, and argv is readable by every process of the node). The child prepares the
//! container (opens stdio, compiles the payload) and writes one [`RunnerStatus`] line on
//! [`STATUS_FD`], a failure with its [`FailureKind`] so the shim can give Create the right
//! gRPC code ([`crate::error`]); it then blocks on [`START_FD`] until the shim writes a byte
//! (task Start) or closes it (task deleted before start, the child exits quietly). This is
//! runc's create/start split, so a bad payload fails `Create` with its real error and
//! `Start` costs one write.

use std::io::Read;
use std::path::PathBuf;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use wasmpod_runtime_core::Error as CoreError;

pub use super::spec::GuestSpec;
pub use crate::image::ContainerdApi;

/// The `argv[1]` that turns the shim binary into a runner.
pub const RUNNER_SUBCOMMAND: &str = "__run";
/// The `argv[1]` that turns the shim binary into a pod sandbox's pause process.
pub const PAUSE_SUBCOMMAND: &str = "__pause";
/// File in the bundle holding the child's pid and start time ([`crate::os::pidfile`]).
pub const RUNNER_PID_FILE: &str = "runner.pid";
/// File in the bundle recording an exec runner, as [`RUNNER_PID_FILE`] does the container's.
pub fn exec_pid_file_name(exec_id: &str) -> String {
    format!("runner-exec-{exec_id}.pid")
}

/// Whether a bundle file name is an exec runner's [`exec_pid_file_name`].
pub fn is_exec_pid_file(name: &str) -> bool {
    name.starts_with("runner-exec-") && name.ends_with(".pid")
}

/// File a runner writes into its bundle when its guest ran out of memory.
pub const OOM_MARKER_FILE: &str = "oom";
/// The OOM marker's file name in the bundle ([`RunnerRequest::oom_marker`]).
pub fn oom_marker_name(exec_id: Option<&str>) -> String {
    match exec_id {
        None => OOM_MARKER_FILE.to_owned(),
        Some(exec_id) => format!("{OOM_MARKER_FILE}-exec-{exec_id}"),
    }
}

/// Runner → shim: one JSON [`RunnerStatus`] line, then EOF.
pub const STATUS_FD: i32 = 3;
/// Shim → runner: one byte means start; EOF means never start.
pub const START_FD: i32 = 4;
/// Shim → exec runner: the exec's program, opened by the shim inside the rootfs (its
/// entrypoint's `host_path` is [`PAYLOAD_FD_PATH`]), so nothing re-resolves its path.
pub const PAYLOAD_FD: i32 = 6;
/// The path an exec runner reads its program from.
pub const PAYLOAD_FD_PATH: &str = "/proc/self/fd/6";
/// Shim → runner: one JSON [`RunnerRequest`], then EOF.
pub const REQUEST_FD: i32 = 5;

/// Everything a child needs, resolved by the shim once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerRequest {
    /// The shim build that wrote the request ([`this_build`]); a runner of another build
    /// refuses it rather than misread it.
    #[serde(default)]
    pub build: String,
    pub id: String,
    /// Set for an exec process of the container `id` (Exec), absent for its main process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Paths of containerd's stdio FIFOs or files; empty means none.
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    /// containerd's API, where a payload that is not in the rootfs is read from
    /// ([`crate::image`]); absent for runners made without a containerd (tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdApi>,
    /// The node's compiled-module cache; `None` compiles in memory on every start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// The bundle's `config.json` as the shim loaded it: confinement (user, capabilities,
    /// rlimits, seccomp) and wasmpod's annotations are read from it.
    pub spec: Spec,
    /// The guest's view of the spec (args, env, cwd, mounts, memory limit, user).
    pub guest: GuestSpec,
    /// Where the shim found the payload.
    pub entrypoint: Entrypoint,
}

impl RunnerRequest {
    /// Where this runner marks that its guest ran out of memory: `oom` for the container's
    /// process, `oom-exec-<exec id>` for an exec (whose OOM is not the container's).
    pub fn oom_marker(&self) -> PathBuf {
        self.bundle.join(oom_marker_name(self.exec_id.as_deref()))
    }

    /// Reads the request the shim wrote on `pipe` (to EOF).
    pub fn read_from(mut pipe: impl Read) -> Result<Self, String> {
        let mut json = String::new();
        pipe.read_to_string(&mut json)
            .map_err(|e| format!("reading the runner request: {e}"))?;
        match serde_json::from_str::<RunnerRequest>(&json) {
            Ok(request) => check_build(&request.build).map(|()| request),
            // A request of another build may not even parse: name the build if it does.
            Err(e) => {
                let build = serde_json::from_str::<serde_json::Value>(&json)
                    .ok()
                    .and_then(|v| v.get("build")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                check_build(&build)?;
                Err(format!("invalid runner request: {e}"))
            }
        }
    }
}

/// The build of this binary: version and commit. The shim daemon and the runners it starts
/// are one binary (re-executed through a descriptor opened at daemon start, so replacing
/// the file on disk does not change it); the check catches anything else.
pub fn this_build() -> String {
    format!("{} {}", crate::version::VERSION, crate::version::COMMIT)
}

/// Refuses a request written by another build.
pub fn check_build(build: &str) -> Result<(), String> {
    let ours = this_build();
    if build == ours {
        Ok(())
    } else {
        Err(format!(
            "the shim daemon (build {build:?}) started a runner of another build ({ours:?}); refusing: restart the pod to use the new shim"
        ))
    }
}

/// Where the payload of a wasm container is, as the shim resolved `process.args[0]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum Entrypoint {
    /// A file of the rootfs.
    Rootfs {
        /// The path the guest knows (`/app/hello.wasm`).
        guest_path: String,
        /// The same file on the host.
        host_path: PathBuf,
    },
    /// Not in the rootfs (or `process.args` is empty): the runner reads the image's wasm
    /// layer instead; `reason` is what it reports when the image has none either.
    NotInRootfs { reason: String },
    /// The pod sandbox runs no payload.
    None,
}

/// Why a child could not prepare its container: the shim turns each kind into a gRPC code
/// ([`crate::error::TaskError::runner_failed`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The spec or a wasmpod setting (annotation, node environment) is wrong.
    Spec,
    /// The payload: missing, too large, not wasm, not compiling or linking in time, no wasm
    /// layer in the image.
    Payload,
    /// An operation of the node failed: stdio, the bundle, the private root, containerd's API.
    Io,
    /// The compiled-module cache could not be used.
    Cache,
    /// wasmtime's engine could not be built.
    Engine,
    /// The wasi:http server's port is already taken in the pod's network namespace.
    PortTaken,
    /// The child could not read what the shim sent (a bug, not an input).
    Protocol,
}

impl FailureKind {
    /// The kind of a runtime-core error.
    pub fn of_core_error(e: &CoreError) -> Self {
        match e {
            CoreError::NoEntrypoint
            | CoreError::EntrypointNotFound { .. }
            | CoreError::EntrypointEscapesRootfs(_)
            | CoreError::NotWasm { .. }
            | CoreError::UnknownEncoding { .. }
            | CoreError::PayloadTooLarge { .. }
            | CoreError::CompileTimeout { .. }
            | CoreError::Compile { .. }
            | CoreError::MissingStart { .. }
            | CoreError::MissingCliRun { .. }
            | CoreError::Link { .. }
            | CoreError::Instantiate { .. } => FailureKind::Payload,
            CoreError::Setting { .. } | CoreError::HttpSetting { .. } => FailureKind::Spec,
            CoreError::HttpBind { source, .. }
                if source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                FailureKind::PortTaken
            }
            CoreError::Io { .. }
            | CoreError::Wasi { .. }
            | CoreError::HttpBind { .. }
            | CoreError::HttpServer { .. } => FailureKind::Io,
            CoreError::Cache { .. } => FailureKind::Cache,
            CoreError::Engine(_) => FailureKind::Engine,
        }
    }
}

/// A failed preparation: its kind and the message the user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub error: String,
}

impl Failure {
    pub fn new(kind: FailureKind, error: impl std::fmt::Display) -> Self {
        Failure {
            kind,
            error: error.to_string(),
        }
    }
}

/// The runner's answer once the container is prepared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunnerStatus {
    Ready {
        #[serde(default)]
        timing: PrepareTiming,
    },
    Failed {
        kind: FailureKind,
        error: String,
    },
}

/// Where a runner's time went before it reported ready, in microseconds: the shim logs it
/// (debug) and `make bench` reads it for its start breakdown.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrepareTiming {
    /// Reading `config.json` and turning it into the guest's view.
    pub spec_us: u64,
    /// Opening containerd's stdio FIFOs.
    pub stdio_us: u64,
    /// Finding the `.wasm` in the rootfs, reading and hashing it.
    pub locate_us: u64,
    /// Building the wasmtime engine for the payload's kind.
    pub engine_us: u64,
    /// Compile-cache lookup, loading (or compiling) and linking the payload.
    pub load_us: u64,
    /// Opening the mount sources and pivoting into the private root.
    #[serde(default)]
    pub root_us: u64,

    /// From the runner's `main` to ready (the sum of the above and the rest).
    pub total_us: u64,
}

impl From<Failure> for RunnerStatus {
    fn from(failure: Failure) -> Self {
        RunnerStatus::Failed {
            kind: failure.kind,
            error: failure.error,
        }
    }
}

impl std::fmt::Display for PrepareTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "spec {:.2}ms, stdio {:.2}ms, locate {:.2}ms, engine {:.2}ms, load {:.2}ms, root {:.2}ms",
            ms(self.spec_us),
            ms(self.stdio_us),
            ms(self.locate_us),
            ms(self.engine_us),
            ms(self.load_us),
            ms(self.root_us)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_of_another_build_is_refused_by_name() {
        assert!(check_build(&this_build()).is_ok());
        let err =
            RunnerRequest::read_from(&br#"{"build":"0.0.1 deadbeef","id":"x"}"#[..]).unwrap_err();
        assert!(
            err.contains("0.0.1 deadbeef") && err.contains("another build"),
            "{err}"
        );
    }
}
