//! `containerd-shim-wasmpod-v1`: containerd's shim v2 for WebAssembly containers.
//!
//! One binary, two roles: the shim (started by containerd with `start`/`delete` or as the
//! daemon serving the Task API) and, re-executed as `__run`, the runner process of one
//! container. Nothing is printed to stdout (containerd reads it), except by the operator's
//! `--version` and `--self-check` (see `version`, `selfcheck`).

mod error;
mod events;
mod image;
mod launcher;
mod lifecycle;
mod logging;
mod os;
mod protocol;
mod reaper;
mod runc;
mod runner;
mod runner_process;
mod selfcheck;
mod service;
mod shim;
mod state;
mod version;

// Static (musl) builds: musl's malloc serialises wasmtime's multi-threaded allocations.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The runtime type containerd knows this shim by.
const RUNTIME_ID: &str = "io.containerd.wasmpod.v1";

/// When this process's `main` began: the daemon logs how long it took to serve.
static MAIN_BEGAN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn main() {
    MAIN_BEGAN.get_or_init(std::time::Instant::now);
    let mut args = std::env::args_os();
    match args.nth(1).as_ref().and_then(|a| a.to_str()) {
        Some(protocol::RUNNER_SUBCOMMAND) => std::process::exit(runner::main(args.next())),
        Some(protocol::PAUSE_SUBCOMMAND) => std::process::exit(runner::pause::main()),
        Some(flag) if version::is_flag(flag) => std::process::exit(version::main()),
        Some(selfcheck::FLAG) => std::process::exit(selfcheck::main()),
        _ => {}
    }
    // The crate's FIFO logger livelocks when the FIFO loses its reader; see `logging`.
    let config = containerd_shim::Config {
        no_setup_logger: true,
        ..Default::default()
    };
    containerd_shim::run::<shim::WasmpodShim>(RUNTIME_ID, Some(config));
}
