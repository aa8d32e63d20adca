//! `containerd-shim-wasmpod-v1`: containerd's shim v2 for WebAssembly containers.
//!
//! One binary, three roles: the shim (started by containerd with `start`/`delete` or as the
//! daemon serving the Task API) and, re-executed as `__run` / `__pause`, the runner of one
//! wasm container or the pod sandbox's pause process. Everything is in the library
//! ([`wasmpod_shim`]); this picks the role. Nothing is printed to stdout (containerd reads
//! it), except by the operator's `--version` and `--self-check` (see `version`,
//! `selfcheck`).

use wasmpod_shim::process::runner::child;
use wasmpod_shim::process::runner::protocol::{PAUSE_SUBCOMMAND, RUNNER_SUBCOMMAND};
use wasmpod_shim::{MAIN_BEGAN, RUNTIME_ID, selfcheck, shim, version};

// Static (musl) builds: mimalloc for runners and the self-check (musl's malloc serialises
// wasmtime's multi-threaded allocations), musl's for the daemon (see `os::allocator`).
#[cfg(target_env = "musl")]
use wasmpod_shim::os::allocator::ByRole;
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: ByRole = ByRole::new();

/// Roles that run wasmtime take their memory from mimalloc in the static build.
fn allocate_for_wasmtime() {
    #[cfg(target_env = "musl")]
    ALLOCATOR.use_mimalloc();
}

fn main() {
    MAIN_BEGAN.get_or_init(std::time::Instant::now);
    let mut args = std::env::args_os();
    match args.nth(1).as_ref().and_then(|a| a.to_str()) {
        Some(RUNNER_SUBCOMMAND) => {
            allocate_for_wasmtime();
            std::process::exit(child::main())
        }
        Some(PAUSE_SUBCOMMAND) => std::process::exit(child::pause::main()),
        Some(flag) if version::is_flag(flag) => std::process::exit(version::main()),
        Some(selfcheck::FLAG) => {
            allocate_for_wasmtime();
            std::process::exit(selfcheck::main())
        }
        _ => {}
    }
    // The crate's FIFO logger livelocks when the FIFO loses its reader; see `logging`.
    let config = containerd_shim::Config {
        no_setup_logger: true,
        ..Default::default()
    };
    containerd_shim::run::<shim::WasmpodShim>(RUNTIME_ID, Some(config));
}
