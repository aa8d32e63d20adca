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

/// The argv[1] that turns the shim binary into a runner.
pub const RUNNER_SUBCOMMAND: &str = "__run";
/// The argv[1] that turns the shim binary into a pod sandbox's pause process.
pub const PAUSE_SUBCOMMAND: &str = "__pause";
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
}

/// The runner's answer once the container is prepared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunnerStatus {
    Ready,
    Failed { error: String },
}
