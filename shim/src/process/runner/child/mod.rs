//! The runner: the process of one wasm container (`containerd-shim-wasmpod-v1 __run`).
//!
//! It prepares the container while the shim waits in Create, from what the shim resolved
//! ([`super::protocol::RunnerRequest`]: spec, guest view, entrypoint): opens stdio, compiles
//! the payload, confines itself; reports on the status pipe (a failure with its kind), waits
//! for Start, runs the guest and exits with its code (see [`wasmpod_runtime_core::exit`] for the table). Signals: SIGTERM, SIGINT, SIGHUP and
//! SIGQUIT interrupt the guest (exit 128 + signal) even in a tight loop; a guest blocked in
//! a host call is ended after [`signals::BLOCKED_GUEST_GRACE`]. SIGKILL is the kernel's.

pub mod confine;
mod failure;
pub mod pause;
mod payload;
mod rootview;
mod signals;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmpod_runtime_core::cache::{self, ModuleCache};
use wasmpod_runtime_core::limits::MemoryLimitNow;
use wasmpod_runtime_core::{
    EngineSettings, ExitStatus, HttpConfig, PrepareBounds, Prepared, Runtime, WasiConfig,
};

// `super::spec` for the modules below (rootview names `super::spec::BindMount`).
use super::protocol::{
    Failure, FailureKind, PAYLOAD_FD, PrepareTiming, REQUEST_FD, RunnerRequest, RunnerStatus,
    START_FD, STATUS_FD,
};
use super::spec;
use crate::os::fd;

/// Exit code of a runner that could not prepare its container (the shim reports why).
const PREPARE_FAILED: i32 = 1;
/// Exit code when wasmpod itself could not run a prepared guest (e.g. the HTTP server's
/// runtime could not start).
const RUN_FAILED: i32 = 125;

/// A container ready to start.
struct PreparedContainer {
    runtime: Runtime,
    prepared: Prepared,
    config: WasiConfig,
    stderr: Option<File>,
    /// `<bundle>/oom`, made empty while still root; a byte written means out of memory.
    oom_marker: File,
}

/// Runs the runner role; returns the process exit code.
pub fn main() -> i32 {
    crate::os::memory::one_arena_while_preparing();
    crate::os::exec::name_process();
    let mut laps = Laps::new();
    // SAFETY: the shim passes these three descriptors to every runner and nothing else owns
    // them.
    let (request_pipe, mut status_pipe, mut start_pipe) = unsafe {
        (
            fd::inherited(REQUEST_FD),
            fd::inherited(STATUS_FD),
            fd::inherited(START_FD),
        )
    };
    let interrupts = signals::install();
    let prepared = RunnerRequest::read_from(request_pipe)
        .map_err(|e| Failure::new(FailureKind::Protocol, e))
        .and_then(|request| prepare(request, &mut laps));
    let status = match &prepared {
        Ok(_) => RunnerStatus::Ready {
            timing: laps.finish(),
        },
        Err(failure) => RunnerStatus::from(failure.clone()),
    };
    if prepared.is_ok() {
        // Only now: the runner was confined while it was its only thread.
        interrupts.start();
    }
    let line = serde_json::to_string(&status).expect("status serialises");
    let _ = status_pipe.write_all(line.as_bytes());
    drop(status_pipe);
    let Ok(container) = prepared else {
        return PREPARE_FAILED;
    };
    let mut go = [0u8; 1];
    if !matches!(start_pipe.read(&mut go), Ok(1)) {
        // Deleted before it was started.
        return 0;
    }
    drop(start_pipe);
    run(container, &interrupts)
}

/// Times the phases of [`prepare`] for [`PrepareTiming`].
struct Laps {
    began: Instant,
    lap: Instant,
    timing: PrepareTiming,
}

impl Laps {
    fn new() -> Self {
        let now = Instant::now();
        Laps {
            began: now,
            lap: now,
            timing: PrepareTiming::default(),
        }
    }

    /// Microseconds since the previous lap (or since the runner began).
    fn lap(&mut self) -> u64 {
        let now = Instant::now();
        let micros = now.duration_since(self.lap).as_micros() as u64;
        self.lap = now;
        micros
    }

    fn finish(mut self) -> PrepareTiming {
        self.timing.total_us = self.began.elapsed().as_micros() as u64;
        self.timing
    }
}

fn prepare(request: RunnerRequest, laps: &mut Laps) -> Result<PreparedContainer, Failure> {
    // The request was read (the spec and the guest's view of it come in it).
    laps.timing.spec_us = laps.lap();
    let RunnerRequest {
        spec,
        guest,
        cache_dir,
        ..
    } = &request;
    let open_err = |what: &str, path: &str, e: std::io::Error| {
        Failure::new(FailureKind::Io, format!("opening {what} {path}: {e}"))
    };
    let stdin = fd::open_input(&request.stdin).map_err(|e| open_err("stdin", &request.stdin, e))?;
    let stdout =
        fd::open_output(&request.stdout).map_err(|e| open_err("stdout", &request.stdout, e))?;
    let stderr =
        fd::open_output(&request.stderr).map_err(|e| open_err("stderr", &request.stderr, e))?;
    laps.timing.stdio_us = laps.lap();
    let annotations = spec.annotations().clone().unwrap_or_default();
    let bounds = PrepareBounds::from_settings(
        |key| std::env::var(key).ok(),
        |key| annotations.get(key).map(String::as_str),
    )
    .map_err(failure::core)?;
    // From the rootfs, else from the image's wasm layer (fetched now, before confinement).
    let (source, guest) = payload::source(&request, guest.clone(), bounds.max_payload_bytes)?;
    if request.exec_id.is_some() {
        // The exec's program, read: the descriptor the shim passed has no other use.
        // SAFETY: PAYLOAD_FD is the descriptor the shim placed there for an exec runner
        // and nothing in this process owns it.
        unsafe { libc::close(PAYLOAD_FD) };
    }
    laps.timing.locate_us = laps.lap();
    let http =
        HttpConfig::from_settings(|key| annotations.get(key).map(String::as_str), &guest.env)
            .map_err(failure::core)?;
    let settings = EngineSettings::for_source(&source, guest.memory_limit, &http);
    let runtime = Runtime::new(&settings)
        .map_err(failure::core)?
        .with_compile_timeout(bounds.compile_timeout);
    laps.timing.engine_us = laps.lap();
    let runtime = match open_cache(cache_dir.as_deref()) {
        Some(cache) => runtime.with_cache(cache),
        None => runtime,
    };
    let mut prepared = runtime
        .prepare(&source)
        .map_err(failure::core)?
        .with_http(http);
    // In the pod's network namespace already: a port in use fails Create, with its reason.
    prepared.bind_http().map_err(failure::core)?;
    laps.timing.load_us = laps.lap();
    let stderr_for_traps = stderr.as_ref().and_then(|f| f.try_clone().ok());
    // Opened now: the guest's user may not write in the bundle.
    let oom_marker_path = request.oom_marker();
    let oom_marker = File::create(&oom_marker_path).map_err(|e| {
        Failure::new(
            FailureKind::Io,
            format!("creating {}: {e}", oom_marker_path.display()),
        )
    })?;
    // Checked and limited while the host's /proc is still there; then the last step with
    // the host's view: from there on only the guest's directories and the pod's DNS files
    // are reachable; then the user, capabilities and seccomp, for good.
    // Opened while the cgroup filesystem is still visible: the guest's memory cap follows a
    // raised limit (in-place resize) by reading it here.
    let memory_limit_now = guest.memory_limit.and_then(|_| memory_limit_now(spec));
    let confinement = confine::begin(spec, confine::Role::Runner).map_err(failure::confine)?;
    let preopens = rootview::enter(&guest.mounts, &request.bundle).map_err(failure::root_view)?;
    laps.timing.root_us = laps.lap();
    confinement.finish().map_err(failure::confine)?;
    // Preparation is over: what the compile thread and the filter building freed is given
    // back, so an idle container holds only what its guest uses.
    crate::os::memory::release_free_memory();
    crate::os::memory::drop_code_mappings();

    let config = WasiConfig {
        args: guest.args,
        env: guest.env,
        cwd: Some(guest.cwd),
        preopens,
        stdin,
        stdout,
        stderr,
        memory_limit: guest.memory_limit,
        memory_limit_now,
        allow_network: true,
    };
    Ok(PreparedContainer {
        runtime,
        prepared,
        config,
        stderr: stderr_for_traps,
        oom_marker,
    })
}

/// Reads the memory limit in force on the container's cgroup through a descriptor opened
/// now (`memory.max` / `memory.limit_in_bytes`; `max` reads as unlimited). `None` without
/// a cgroup or a memory controller: the starting limit then stays the guest's cap.
fn memory_limit_now(spec: &oci_spec::runtime::Spec) -> Option<MemoryLimitNow> {
    let path = spec.linux().as_ref()?.cgroups_path().as_ref()?;
    let file = crate::os::cgroup::Cgroup::new(&path.display().to_string())
        .ok()?
        .memory_limit_file()?;
    let file = File::open(file).ok()?;
    Some(MemoryLimitNow::new(move || {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?.trim();
        if text == "max" {
            return Some(usize::MAX);
        }
        text.parse::<u64>()
            .ok()
            .map(|v| usize::try_from(v).unwrap_or(usize::MAX))
    }))
}

/// The node's compiled-module cache directory: `$WASMPOD_CACHE_DIR`, else
/// [`cache::DEFAULT_CACHE_DIR`]; `None` for `WASMPOD_CACHE_DIR=off` (compile on every start).
/// Read by the shim daemon, which sends it to its runners ([`RunnerRequest::cache_dir`]).
pub fn cache_dir() -> Option<PathBuf> {
    let dir =
        std::env::var("WASMPOD_CACHE_DIR").unwrap_or_else(|_| cache::DEFAULT_CACHE_DIR.to_owned());
    (dir != "off").then(|| PathBuf::from(dir))
}

/// The node's compiled-module cache. A cache that cannot be opened, or is not private to
/// root, is not an error: it is off and the payload is compiled in memory instead (the shim
/// daemon said why once, [`warn_if_cache_off`]; a runner has no log).
fn open_cache(dir: Option<&Path>) -> Option<ModuleCache> {
    ModuleCache::open(dir?, cache::DEFAULT_MAX_BYTES).ok()
}

/// Logs, once per shim daemon, why the runners it starts will run without the cache.
pub fn warn_if_cache_off(dir: Option<&Path>) {
    if let Some(dir) = dir
        && let Err(e) = ModuleCache::open(dir, cache::DEFAULT_MAX_BYTES)
    {
        log::warn!("compile cache off, modules are compiled in memory on every start: {e}");
    }
}

fn run(container: PreparedContainer, interrupts: &signals::Interrupts) -> i32 {
    let interrupter = container.runtime.interrupter();
    interrupts.attach(interrupter.clone(), container.prepared.is_http_server());
    let status = container.prepared.run(container.config, &interrupter);
    let mut stderr = container.stderr;
    let mut oom_marker = container.oom_marker;
    let mut report = |line: String| {
        if let Some(stderr) = stderr.as_mut() {
            let _ = writeln!(stderr, "{line}");
        }
    };
    match status {
        Ok(ExitStatus::Trapped { message }) => {
            report(format!("wasmpod: guest trapped: {message}"));
            wasmpod_runtime_core::exit::TRAP_EXIT_CODE
        }
        Ok(ExitStatus::OutOfMemory { message }) => {
            // The shim reports TaskOOM when it finds this marker non-empty at exit.
            let _ = oom_marker.write_all(b"1");
            report(format!(
                "wasmpod: guest ran out of memory (container memory limit): {message}"
            ));
            wasmpod_runtime_core::exit::OUT_OF_MEMORY_EXIT_CODE
        }
        Ok(status) => status.code(),
        Err(e) => {
            report(format!("wasmpod: {e}"));
            RUN_FAILED
        }
    }
}
