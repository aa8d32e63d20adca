//! `install` and `uninstall`: the order of the steps and the decisions between them; each
//! verb in its own file ([`register`], [`unregister`]), the rollback of a refused install in
//! [`refusal`], what both share here (options, seams, report, probe expectations, labels).
//!
//! install: detect → resolve version and cgroup driver → plan → (dry run: report the diffs and
//! stop) → keep every file it may touch ([`Snapshot`](crate::rollback::Snapshot)) → the node's containerd validates the
//! candidate config → copy the shim → run it on the host (`--version`, `--self-check`) →
//! save state → write files → restart containerd *only if a config file changed* → probe →
//! label the node.
//!
//! Any failure after the snapshot is a refusal that leaves the node as it was: every file
//! is put back byte for byte (config, shim, its backup, the state file), containerd is
//! restarted again when it had been restarted (and must serve again), the node label is
//! removed, and the error says what failed and what the rollback did. The RuntimeClass
//! never sends pods to a node whose containerd lacks the runtime or whose shim cannot run.
//!
//! uninstall: unlabel first (no new pods arrive) → refuse while wasmpod tasks still run
//! (unless `force`) → revert each recorded file (byte-for-byte
//! original when it still holds what we wrote) → restart if anything changed → remove the
//! shim (or restore the binary it replaced) → probe that the runtime is gone → drop the state.
//!
//! Every side effect goes through a seam in [`Seams`]; the tests drive both verbs with
//! recording fakes (`fakes.rs`).

mod refusal;
mod register;
mod unregister;

#[cfg(test)]
mod fakes;

pub use register::install;
pub use unregister::uninstall;

use std::path::PathBuf;

use crate::detect::{self, CgroupDriverChoice, DetectOptions, Detected};
use crate::hostfs::HostRoot;
use crate::label::NodeLabeler;
use crate::plan::FileEdit;
use crate::probe::{Expect, Prober};
use crate::restart::{HostExec, Restarter};
use crate::shimcheck::ShimChecker;
use crate::tasks::TaskFinder;
use crate::tomledit::ConfigVersion;
use crate::{Error, HANDLER, NODE_LABEL, RUNTIME_TYPE, SHIM_BINARY};

/// Where a foreign shim binary is saved before it is replaced (host path).
pub(super) const BACKUP_DIR: &str = "/var/lib/wasmpod/backup";

/// What to install and where (paths are host paths unless noted).
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the host's root is mounted.
    pub host: HostRoot,
    /// Flavour and config locations.
    pub detect: DetectOptions,
    /// The schema version to write when the config files do not state one.
    pub config_version: Option<ConfigVersion>,
    /// `--cgroup-driver`.
    pub cgroup_driver: CgroupDriverChoice,
    /// The shim binary to copy (installer-side path); `None` skips the copy.
    pub shim_source: Option<PathBuf>,
    /// Its expected sha256 (else read from `<shim_source>.sha256`).
    pub shim_sha256: Option<String>,
    /// Host directory the shim goes to.
    pub install_dir: PathBuf,
    /// Write `runtime_path` (the shim's absolute path) into the runtime table.
    pub runtime_path: bool,
    /// Extra runtime `options` (`key`, TOML value).
    pub runtime_options: Vec<(String, String)>,
    /// Host path of the state file.
    pub state_file: PathBuf,
    /// The node to label (`None`: do not label).
    pub node_name: Option<String>,
    /// Report the changes without making them.
    pub dry_run: bool,
    /// The host's containerd binary (asked its version, and to validate the candidate).
    pub containerd_bin: String,
    /// Validate the candidate config with `containerd config dump` before writing it.
    pub validate: bool,
    /// Run the installed shim (`--version`, `--self-check`) before labelling the node.
    pub shim_check: bool,
    /// `uninstall` even while wasmpod tasks run.
    pub force: bool,
}

impl Options {
    /// Defaults for the host root `host`.
    pub fn new(host: HostRoot) -> Self {
        Self {
            host,
            detect: DetectOptions::default(),
            config_version: None,
            cgroup_driver: CgroupDriverChoice::Auto,
            shim_source: None,
            shim_sha256: None,
            install_dir: PathBuf::from("/usr/local/bin"),
            runtime_path: true,
            runtime_options: Vec::new(),
            state_file: PathBuf::from("/var/lib/wasmpod/install-state.json"),
            node_name: None,
            dry_run: false,
            containerd_bin: "containerd".to_owned(),
            validate: true,
            shim_check: true,
            force: false,
        }
    }

    pub(super) fn shim_target(&self) -> PathBuf {
        self.install_dir.join(SHIM_BINARY)
    }
}

/// The side effects, injected.
pub struct Seams<'a> {
    /// Runs host commands (`containerd --version`).
    pub exec: &'a dyn HostExec,
    /// Restarts containerd.
    pub restarter: &'a dyn Restarter,
    /// Checks containerd afterwards.
    pub prober: &'a dyn Prober,
    /// Labels the node (`None`: no labelling possible).
    pub labeler: Option<&'a dyn NodeLabeler>,
    /// Runs the installed shim on the host.
    pub shim_checker: &'a dyn ShimChecker,
    /// Finds wasmpod tasks still running.
    pub tasks: &'a dyn TaskFinder,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Host paths of config files written (or that would be).
    pub changed_files: Vec<PathBuf>,
    /// Whether the shim binary was written or removed.
    pub shim_changed: bool,
    /// Whether containerd was restarted.
    pub restarted: bool,
    /// Whether the node label was set (install) or removed (uninstall).
    pub labelled: bool,
    /// Unified diffs of the file changes.
    pub diff: String,
}

pub(super) fn expect(
    detected: &Detected,
    opts: &Options,
    version: ConfigVersion,
    present: Option<bool>,
) -> Expect {
    let dump = match &detected.layout {
        detect::Layout::Containerd { root, .. } => Some(vec![
            opts.containerd_bin.clone(),
            "--config".to_owned(),
            root.display().to_string(),
            "config".to_owned(),
            "dump".to_owned(),
        ]),
        _ => None,
    };
    Expect {
        socket: detected.socket.clone(),
        dump,
        handler: HANDLER.to_owned(),
        runtime_type: RUNTIME_TYPE.to_owned(),
        present,
        version,
    }
}

pub(super) fn set_label(
    seams: &Seams<'_>,
    opts: &Options,
    value: Option<&str>,
) -> Result<bool, Error> {
    let (Some(labeler), Some(node)) = (seams.labeler, opts.node_name.as_deref()) else {
        log::info!("no node name or API access: node label {NODE_LABEL} left alone");
        return Ok(false);
    };
    match value {
        Some(v) => log::info!("labelling node {node} {NODE_LABEL}={v}"),
        None => log::info!("removing label {NODE_LABEL} from node {node}"),
    }
    labeler.set_label(node, NODE_LABEL, value)?;
    Ok(true)
}

pub(super) fn apply(host: &HostRoot, edit: &FileEdit) -> Result<(), Error> {
    match &edit.after {
        Some(text) => host.write_atomic(&edit.path, text.as_bytes(), 0o644)?,
        None => host.remove(&edit.path)?,
    }
    log::info!("wrote {}", edit.path.display());
    Ok(())
}
