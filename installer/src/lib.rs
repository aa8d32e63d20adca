//! `wasmpod-installer`: puts the wasmpod shim on a Kubernetes node and registers the
//! `wasmpod` runtime handler with the node's containerd, and takes both away again.
//!
//! One run is a short pipeline, one module per step, each behind a small seam so the
//! decision logic is tested without a node:
//!
//! - [`hostfs`]: the node's filesystem seen through `--host-root` (atomic writes, sha256);
//! - [`detect`]: which containerd configuration is in use (plain containerd, k3s/RKE2
//!   templates, k0s drop-ins, microk8s template), its schema version, the kubelet's cgroup
//!   driver;
//! - [`tomledit`]: the comment-preserving TOML edits (runtime table, `imports`);
//! - [`plan`]: the file changes one install needs, as before/after texts (what `--dry-run`
//!   prints and what `uninstall` reverts);
//! - [`validate`]: the node's containerd loads the candidate config before anything changes;
//! - [`shimfile`]: the shim binary copy (temp + rename, sha256 verified);
//! - [`shimcheck`]: the installed shim runs on this node (`--version`, `--self-check`);
//! - [`rollback`]: every file the install touches, kept to be put back byte for byte;
//! - [`tasks`]: wasmpod tasks still running (uninstall refuses while there are);
//! - [`restart`], [`probe`], [`label`]: restarting containerd, checking it came back with
//!   the runtime loaded, labelling the node — each a trait with a real and a fake side;
//! - [`state`]: what an install did, so `uninstall` reverts exactly that;
//! - [`install`]: the orchestration (`install`, `uninstall`) over those seams.
//!
//! Library errors are typed per module and gathered in [`Error`]; the binary maps them to
//! exit codes.

pub mod detect;
pub mod hostfs;
pub mod install;
pub mod label;
pub mod plan;
pub mod probe;
pub mod restart;
pub mod rollback;
pub mod shimcheck;
pub mod shimfile;
pub mod state;
pub mod tasks;
pub mod tomledit;
pub mod validate;

/// Runtime handler name (CRI `runtimeHandler`, RuntimeClass `handler`).
pub const HANDLER: &str = "wasmpod";
/// containerd runtime type of the wasmpod shim.
pub const RUNTIME_TYPE: &str = "io.containerd.wasmpod.v1";
/// File name of the shim binary, as containerd looks it up.
pub const SHIM_BINARY: &str = "containerd-shim-wasmpod-v1";
/// The node label set after a successful install.
pub const NODE_LABEL: &str = "wasmpod.dev/installed";

/// Everything an install or uninstall can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a host file.
    #[error(transparent)]
    Host(#[from] hostfs::HostError),
    /// Finding the containerd configuration.
    #[error(transparent)]
    Detect(#[from] detect::DetectError),
    /// A configuration file is not valid TOML.
    #[error(transparent)]
    Toml(#[from] tomledit::TomlError),
    /// Copying the shim binary.
    #[error(transparent)]
    Shim(#[from] shimfile::ShimError),
    /// Reading or writing the state file.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// Restarting containerd.
    #[error(transparent)]
    Restart(#[from] restart::RestartError),
    /// containerd did not come back with the expected configuration.
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    /// Setting or removing the node label.
    #[error(transparent)]
    Label(#[from] label::LabelError),
    /// The installed shim does not run on this node.
    #[error(transparent)]
    ShimCheck(#[from] shimcheck::ShimCheckError),
    /// containerd refuses the candidate configuration.
    #[error(transparent)]
    Validate(#[from] validate::ValidateError),
    /// `uninstall` without `--force` while wasmpod tasks run.
    #[error(
        "{} wasmpod task(s) still run on this node: {}; the node label is removed so no new \
         wasm pods arrive: drain the node (or delete those pods) and run uninstall again, or \
         pass --force",
        tasks.len(),
        tasks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    TasksRunning {
        /// The running shims.
        tasks: Vec<tasks::ShimTask>,
    },
    /// An install step failed after files were changed: they were put back.
    #[error("{cause}; {rollback}")]
    RolledBack {
        /// What failed.
        cause: Box<Error>,
        /// What the rollback did.
        rollback: String,
    },
}

impl Error {
    /// The error that caused it (through [`Error::RolledBack`]).
    pub fn root(&self) -> &Error {
        match self {
            Error::RolledBack { cause, .. } => cause.root(),
            other => other,
        }
    }
}
