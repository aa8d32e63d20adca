//! What the shim and a container's runner process say to each other.
//!
//! The shim re-executes its own binary as `containerd-shim-wasmpod-v1 __run <json>` with two
//! pipes: the runner prepares the container (reads the spec, opens stdio, compiles the
//! payload) and writes one [`RunnerStatus`] line on [`STATUS_FD`]; it then blocks on
//! [`START_FD`] until the shim writes a byte (task Start) or closes it (task deleted before
//! start, the runner exits quietly). This is runc's create/start split, so a bad payload
//! fails `Create` with its real error and `Start` costs one write.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::image::ContainerdApi;

/// The argv[1] that turns the shim binary into a runner.
pub const RUNNER_SUBCOMMAND: &str = "__run";
/// The argv[1] that turns the shim binary into a pod sandbox's pause process.
pub const PAUSE_SUBCOMMAND: &str = "__pause";
/// File in the bundle holding the runner's pid and start time ([`crate::os::pidfile`]).
pub const RUNNER_PID_FILE: &str = "runner.pid";
/// File a runner writes into its bundle when its guest ran out of memory.
pub const OOM_MARKER_FILE: &str = "oom";
/// Runner → shim: one JSON [`RunnerStatus`] line, then EOF.
pub const STATUS_FD: i32 = 3;
/// Shim → runner: one byte means start; EOF means never start.
pub const START_FD: i32 = 4;

/// Everything a runner needs besides the bundle's `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunnerRequest {
    pub id: String,
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
