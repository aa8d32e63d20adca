//! `install` and `uninstall`: the order of the steps and the decisions between them.
//!
//! install: detect → resolve version and cgroup driver → plan → (dry run: report the diffs and
//! stop) → keep every file it may touch ([`Snapshot`]) → the node's containerd validates the
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
//! Every side effect goes through a seam in [`Seams`]; the tests below drive both verbs with
//! recording fakes.

use std::path::{Path, PathBuf};

use crate::detect::{self, CgroupDriver, CgroupDriverChoice, DetectOptions, Detected, Flavour};
use crate::hostfs::{HostRoot, sha256_hex};
use crate::label::NodeLabeler;
use crate::plan::{self, FileEdit};
use crate::probe::{Expect, Prober};
use crate::restart::{HostExec, Restarter};
use crate::rollback::Snapshot;
use crate::shimcheck::ShimChecker;
use crate::shimfile;
use crate::state::{self, InstallState, ShimRecord};
use crate::tasks::TaskFinder;
use crate::tomledit::{ConfigVersion, RuntimeSpec};
use crate::{Error, HANDLER, NODE_LABEL, RUNTIME_TYPE, SHIM_BINARY, validate};

/// Where a foreign shim binary is saved before it is replaced (host path).
const BACKUP_DIR: &str = "/var/lib/wasmpod/backup";

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

    fn shim_target(&self) -> PathBuf {
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

/// The schema version to write: what the file says, else `--config-version`, else what the
/// host's containerd binary is, else 2 (which containerd 2.x also reads, migrating it).
fn resolve_version(detected: &Detected, opts: &Options, exec: &dyn HostExec) -> ConfigVersion {
    if let Some(v) = detected.version {
        if let Some(flag) = opts.config_version
            && flag != v
        {
            log::warn!(
                "--config-version {} ignored: the config says {v}",
                flag.number()
            );
        }
        return v;
    }
    if let Some(v) = opts.config_version {
        log::info!(
            "config does not state its version; using --config-version {}",
            v.number()
        );
        return v;
    }
    if matches!(detected.flavour, Flavour::Containerd | Flavour::MicroK8s) {
        match exec.run(&[opts.containerd_bin.clone(), "--version".to_owned()]) {
            Ok(out) => {
                if let Some(v) = detect::version_from_containerd(&out.stdout) {
                    log::info!(
                        "config does not state its version; containerd is {} so writing {v}",
                        out.stdout.trim()
                    );
                    return v;
                }
            }
            Err(e) => log::warn!("could not ask containerd its version: {e}"),
        }
    }
    log::info!("config version unknown; writing version 2 (containerd 2.x migrates it)");
    ConfigVersion::V2
}

fn expect(
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

fn set_label(seams: &Seams<'_>, opts: &Options, value: Option<&str>) -> Result<bool, Error> {
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

fn apply(host: &HostRoot, edit: &FileEdit) -> Result<(), Error> {
    match &edit.after {
        Some(text) => host.write_atomic(&edit.path, text.as_bytes(), 0o644)?,
        None => host.remove(&edit.path)?,
    }
    log::info!("wrote {}", edit.path.display());
    Ok(())
}

/// Install the shim and register the runtime.
pub fn install(opts: &Options, seams: &Seams<'_>) -> Result<Report, Error> {
    let host = &opts.host;
    let detected = detect::detect(host, &opts.detect)?;
    let version = resolve_version(&detected, opts, seams.exec);
    let driver = detect::cgroup_driver(host, opts.cgroup_driver)?;
    let spec = RuntimeSpec {
        handler: HANDLER.to_owned(),
        runtime_type: RUNTIME_TYPE.to_owned(),
        runtime_path: opts
            .runtime_path
            .then(|| opts.shim_target().display().to_string()),
        systemd_cgroup: driver == CgroupDriver::Systemd,
        options: opts.runtime_options.clone(),
    };
    let edits = plan::plan_install(host, &detected, version, &spec)?;
    let changed: Vec<&FileEdit> = edits.iter().filter(|e| e.changed()).collect();
    let mut report = Report {
        changed_files: changed.iter().map(|e| e.path.clone()).collect(),
        diff: changed.iter().map(|e| e.diff()).collect(),
        ..Report::default()
    };
    for edit in &edits {
        if !edit.changed() {
            log::info!(
                "{} already registers the runtime: unchanged",
                edit.path.display()
            );
        }
    }
    let previous = state::load(host, &opts.state_file)?;
    let expected = match &opts.shim_source {
        Some(source) => shimfile::expected_digest(source, opts.shim_sha256.as_deref())?,
        None => None,
    };
    let backup = Path::new(BACKUP_DIR).join(SHIM_BINARY);
    let target = opts.shim_target();

    if opts.dry_run {
        if let Some(source) = &opts.shim_source {
            let ours = previous
                .as_ref()
                .and_then(|s| s.shim.as_ref())
                .map(|s| s.sha256.as_str());
            let result = shimfile::install_shim(
                host,
                source,
                expected.as_deref(),
                &target,
                ours,
                &backup,
                true,
            )?;
            report.shim_changed = result.changed;
        }
        log::info!(
            "dry run: {} file(s) would change{}",
            changed.len(),
            if changed.is_empty() {
                ""
            } else {
                " and containerd would be restarted"
            }
        );
        return Ok(report);
    }

    // From here on, a failure puts every one of these files back.
    let touched = [
        target.as_path(),
        backup.as_path(),
        opts.state_file.as_path(),
    ]
    .into_iter()
    .chain(changed.iter().map(|e| e.path.as_path()));
    let snapshot = Snapshot::take(host, touched)?;
    let undo =
        |cause: Error, restarted: bool| refuse(opts, seams, &detected, &snapshot, cause, restarted);

    if !changed.is_empty() && opts.validate {
        validate::validate(host, seams.exec, &opts.containerd_bin, &detected, &edits)
            .map_err(|e| undo(e.into(), false))?;
    }

    let mut st = previous
        .clone()
        .unwrap_or_else(|| new_state(&detected, version));
    if let Some(source) = &opts.shim_source {
        let ours = previous
            .as_ref()
            .and_then(|s| s.shim.as_ref())
            .map(|s| s.sha256.as_str());
        let result = shimfile::install_shim(
            host,
            source,
            expected.as_deref(),
            &target,
            ours,
            &backup,
            false,
        )
        .map_err(|e| undo(e.into(), false))?;
        report.shim_changed = result.changed;
        let keep_backup = st.shim.as_ref().and_then(|s| s.backup.clone());
        st.shim = Some(ShimRecord {
            path: target.clone(),
            sha256: result.sha256,
            backup: result.backup.or(keep_backup),
        });
    }
    if opts.shim_check {
        if host.exists(&target) {
            check_shim(seams.shim_checker, &target).map_err(|e| undo(e, false))?;
        } else {
            log::warn!(
                "{} is not there (--no-shim): not checking that the shim runs",
                target.display()
            );
        }
    }

    st.config_version = version;
    if let detect::Layout::Containerd { dropin, .. } = &detected.layout
        && edits.iter().any(|e| e.path == *dropin)
    {
        st.dropin = Some(dropin.display().to_string());
    }
    for edit in &changed {
        let written = sha256_hex(edit.after.as_deref().unwrap_or("").as_bytes());
        st.record_file(&edit.path, edit.kind, edit.before.as_deref(), written);
    }
    let written = (|| {
        state::save(host, &opts.state_file, &st)?;
        for edit in &changed {
            apply(host, edit)?;
        }
        Ok::<(), Error>(())
    })();
    written.map_err(|e| undo(e, false))?;

    if changed.is_empty() {
        log::info!("configuration unchanged: containerd not restarted");
    } else {
        seams
            .restarter
            .restart(&detected.unit)
            .map_err(|e| undo(e.into(), true))?;
        report.restarted = true;
    }
    if let Err(e) = seams
        .prober
        .probe(&expect(&detected, opts, version, Some(true)))
    {
        return Err(undo(e.into(), report.restarted));
    }
    report.labelled = set_label(seams, opts, Some("true"))?;
    log::info!("wasmpod is installed");
    Ok(report)
}

/// Run the installed shim on the host; logs what it says about itself.
fn check_shim(checker: &dyn ShimChecker, target: &Path) -> Result<(), Error> {
    log::info!("checking that {} runs on this node", target.display());
    let report = checker.check(target)?;
    for line in report.version.lines().filter(|l| !l.trim().is_empty()) {
        log::info!("shim: {}", line.trim_end());
    }
    log::info!("shim: {}", report.self_check.trim());
    Ok(())
}

/// Undo an install that failed after its snapshot: put every file back, restart containerd
/// again if it was restarted (it must serve again), remove the node label. Returns the error
/// to report: `cause` and what the rollback did.
fn refuse(
    opts: &Options,
    seams: &Seams<'_>,
    detected: &Detected,
    snapshot: &Snapshot,
    cause: Error,
    restarted: bool,
) -> Error {
    log::error!("{cause}");
    log::warn!("refusing the install: putting every file back as it was");
    let mut rollback = match snapshot.restore(&opts.host) {
        Ok(()) => "every file was put back as it was".to_owned(),
        Err(e) => format!("putting the files back FAILED ({e}); check the node"),
    };
    if restarted {
        let again = seams
            .restarter
            .restart(&detected.unit)
            .map_err(Error::from)
            .and_then(|()| {
                let version = detected.version.unwrap_or(ConfigVersion::V2);
                seams
                    .prober
                    .probe(&expect(detected, opts, version, None))
                    .map_err(Error::from)
            });
        rollback.push_str(&match again {
            Ok(()) => ", containerd was restarted with its previous configuration and serves".to_owned(),
            Err(e) => format!(
                ", but containerd did not come back with its previous configuration either ({e}): the node needs attention"
            ),
        });
    } else {
        rollback.push_str(", containerd was not restarted");
    }
    if let Err(e) = set_label(seams, opts, None) {
        log::warn!("could not remove the node label: {e}");
    }
    rollback.push_str(", the node is not labelled");
    log::warn!("{rollback}");
    Error::RolledBack {
        cause: Box::new(cause),
        rollback,
    }
}

fn new_state(detected: &Detected, version: ConfigVersion) -> InstallState {
    InstallState {
        format: state::FORMAT,
        flavour: detected.flavour,
        config_version: version,
        handler: HANDLER.to_owned(),
        unit: detected.unit.clone(),
        dropin: None,
        shim: None,
        files: Vec::new(),
    }
}

/// Revert what the recorded install did.
pub fn uninstall(opts: &Options, seams: &Seams<'_>) -> Result<Report, Error> {
    let host = &opts.host;
    let mut report = Report::default();
    let Some(st) = state::load(host, &opts.state_file)? else {
        log::info!(
            "no install state at {}: nothing to revert",
            opts.state_file.display()
        );
        if !opts.dry_run {
            report.labelled = set_label(seams, opts, None)?;
        }
        return Ok(report);
    };
    if !opts.dry_run {
        report.labelled = set_label(seams, opts, None)?;
    }
    let socket = detect::detect(
        host,
        &DetectOptions {
            flavour: Some(st.flavour),
            ..opts.detect.clone()
        },
    )
    .map(|d| d.socket)
    .ok();
    let running = seams.tasks.running(socket.as_slice());
    if !running.is_empty() {
        let list = running
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if opts.force {
            log::warn!("--force: uninstalling while wasmpod tasks still run: {list}");
        } else if opts.dry_run {
            log::warn!("uninstall would be refused: wasmpod tasks still run: {list}");
        } else {
            return Err(Error::TasksRunning { tasks: running });
        }
    }

    let mut edits = Vec::new();
    for rec in st.files.iter().rev() {
        let Some(current) = host.read_text(&rec.path)? else {
            log::warn!("{} is gone; nothing to revert there", rec.path.display());
            continue;
        };
        let after = if sha256_hex(current.as_bytes()) == rec.written_sha256 {
            log::info!(
                "restoring {} as it was before the install",
                rec.path.display()
            );
            rec.original.clone()
        } else {
            log::warn!(
                "{} changed since the install: removing only wasmpod's entries",
                rec.path.display()
            );
            plan::revert_entries(
                rec.kind,
                &rec.path,
                &current,
                st.config_version,
                &st.handler,
                st.dropin.as_deref(),
                rec.original.is_none(),
            )?
        };
        edits.push(FileEdit {
            path: rec.path.clone(),
            kind: rec.kind,
            before: Some(current),
            after,
        });
    }
    let changed: Vec<&FileEdit> = edits.iter().filter(|e| e.changed()).collect();
    report.changed_files = changed.iter().map(|e| e.path.clone()).collect();
    report.diff = changed.iter().map(|e| e.diff()).collect();
    if opts.dry_run {
        log::info!("dry run: {} file(s) would be reverted", changed.len());
        return Ok(report);
    }
    for edit in &changed {
        apply(host, edit)?;
    }
    let redetected = detect::detect(
        host,
        &DetectOptions {
            flavour: Some(st.flavour),
            ..opts.detect.clone()
        },
    )?;
    let detected = Detected {
        unit: st.unit.clone(),
        version: Some(st.config_version),
        ..redetected
    };
    if changed.is_empty() {
        log::info!("configuration already reverted: containerd not restarted");
    } else {
        seams.restarter.restart(&st.unit)?;
        report.restarted = true;
    }

    if let Some(shim) = &st.shim {
        match host.read(&shim.path)? {
            Some(bytes) if sha256_hex(&bytes) == shim.sha256 => {
                match &shim.backup {
                    Some(backup) if host.exists(backup) => {
                        let old = host.read(backup)?.unwrap_or_default();
                        host.write_atomic(&shim.path, &old, 0o755)?;
                        host.remove(backup)?;
                        log::info!("restored the previous {}", shim.path.display());
                    }
                    _ => {
                        host.remove(&shim.path)?;
                        log::info!("removed {}", shim.path.display());
                    }
                }
                report.shim_changed = true;
            }
            Some(_) => log::warn!(
                "{} was replaced since the install; left alone",
                shim.path.display()
            ),
            None => log::info!("{} is already gone", shim.path.display()),
        }
    }
    seams
        .prober
        .probe(&expect(&detected, opts, st.config_version, Some(false)))?;
    state::remove(host, &opts.state_file)?;
    log::info!("wasmpod is uninstalled");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::label::LabelError;
    use crate::probe::ProbeError;
    use crate::restart::{Output, RestartError};
    use crate::shimcheck::{Reason, ShimCheckError, ShimReport};
    use crate::tasks::ShimTask;

    /// Fake seams that record every side effect, in order; the prober succeeds when
    /// `probe_ok`, containerd accepts a config unless `config_ok` is false, the shim runs
    /// when `shim_ok`, the first restart fails when `restart_fails`, and `tasks` run.
    struct Fakes {
        log: RefCell<Vec<String>>,
        probe_ok: bool,
        config_ok: bool,
        shim_ok: bool,
        restart_fails: std::cell::Cell<bool>,
        tasks: Vec<ShimTask>,
    }

    impl Fakes {
        fn new(probe_ok: bool) -> Self {
            Self {
                log: RefCell::default(),
                probe_ok,
                config_ok: true,
                shim_ok: true,
                restart_fails: std::cell::Cell::new(false),
                tasks: Vec::new(),
            }
        }

        fn seams(&self) -> Seams<'_> {
            Seams {
                exec: self,
                restarter: self,
                prober: self,
                labeler: Some(self),
                shim_checker: self,
                tasks: self,
            }
        }

        fn record(&self, effect: String) {
            self.log.borrow_mut().push(effect);
        }

        /// The side effects recorded since the last call.
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.borrow_mut())
        }
    }

    impl HostExec for Fakes {
        fn run(&self, argv: &[String]) -> Result<Output, RestartError> {
            if argv.ends_with(&["config".to_owned(), "dump".to_owned()]) {
                self.record("validate".to_owned());
                if !self.config_ok {
                    return Err(RestartError::Failed {
                        command: argv.join(" "),
                        status: "exit status: 1".into(),
                        stderr: "containerd: (4, 1): Can't convert yes(string) to bool".into(),
                    });
                }
            } else {
                self.record(format!("exec {}", argv.join(" ")));
            }
            Ok(Output {
                stdout: "containerd github.com/containerd/containerd 1.6.20\n".into(),
                stderr: String::new(),
            })
        }
    }
    impl Restarter for Fakes {
        fn restart(&self, unit: &str) -> Result<(), RestartError> {
            self.record(format!("restart {unit}"));
            if self.restart_fails.replace(false) {
                return Err(RestartError::Failed {
                    command: "restart".into(),
                    status: "exit status: 1".into(),
                    stderr: "containerd failed to start".into(),
                });
            }
            Ok(())
        }
    }
    impl ShimChecker for Fakes {
        fn check(&self, path: &Path) -> Result<ShimReport, ShimCheckError> {
            self.record("check-shim".to_owned());
            if !self.shim_ok {
                return Err(ShimCheckError {
                    path: path.to_path_buf(),
                    reason: Reason::Failed {
                        command: "shim --version".into(),
                        status: "exit status: 127".into(),
                        stderr: "version `GLIBC_2.34' not found".into(),
                    },
                });
            }
            Ok(ShimReport {
                version: "containerd-shim-wasmpod-v1 0.1.0\n".into(),
                self_check: "self-check: ok\n".into(),
            })
        }
    }
    impl TaskFinder for Fakes {
        fn running(&self, _: &[PathBuf]) -> Vec<ShimTask> {
            self.tasks.clone()
        }
    }
    impl Prober for Fakes {
        fn probe(&self, expect: &Expect) -> Result<(), ProbeError> {
            let present = match expect.present {
                Some(p) => p.to_string(),
                None => "any".to_owned(),
            };
            self.record(format!("probe present={present}"));
            if self.probe_ok || expect.present.is_none() {
                Ok(())
            } else {
                Err(ProbeError::Runtime("has no runtime".into()))
            }
        }
    }
    impl NodeLabeler for Fakes {
        fn set_label(&self, node: &str, key: &str, value: Option<&str>) -> Result<(), LabelError> {
            self.record(format!("label {node} {key}={value:?}"));
            Ok(())
        }
    }

    const ORIGINAL: &str = "# my containerd\nversion = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.9\" # pinned\n";

    /// A host root holding [`ORIGINAL`] and a shim to install, options for node `node-1`,
    /// and fakes whose probe succeeds.
    fn setup() -> (tempfile::TempDir, Options, Fakes) {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path().join("host"));
        host.write_atomic("/etc/containerd/config.toml", ORIGINAL.as_bytes(), 0o644)
            .unwrap();
        let shim = dir.path().join(SHIM_BINARY);
        std::fs::write(&shim, b"shim").unwrap();
        let mut opts = Options::new(host);
        opts.shim_source = Some(shim);
        opts.node_name = Some("node-1".into());
        opts.cgroup_driver = "systemd".parse().unwrap();
        (dir, opts, Fakes::new(true))
    }

    #[test]
    fn install_restarts_once_then_labels_and_second_run_changes_nothing() {
        let (_d, opts, f) = setup();
        let r = install(&opts, &f.seams()).unwrap();
        assert!(r.restarted && r.labelled && r.shim_changed);
        assert_eq!(
            f.take(),
            [
                "validate",
                "check-shim",
                "restart containerd",
                "probe present=true",
                "label node-1 wasmpod.dev/installed=Some(\"true\")"
            ]
        );
        let text = opts
            .host
            .read_text("/etc/containerd/config.toml")
            .unwrap()
            .unwrap();
        assert!(text.starts_with(ORIGINAL), "{text}");
        assert!(text.contains("SystemdCgroup = true"), "{text}");

        let r = install(&opts, &f.seams()).unwrap();
        assert!(!r.restarted && !r.shim_changed && r.changed_files.is_empty());
        assert_eq!(
            f.take(),
            [
                "check-shim",
                "probe present=true",
                "label node-1 wasmpod.dev/installed=Some(\"true\")"
            ]
        );
    }

    /// Every file under the host root, with its bytes.
    fn files(opts: &Options) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(opts.host.root(), &mut out);
        out.sort();
        out
    }

    #[test]
    fn failed_probe_rolls_back_restarts_again_and_unlabels() {
        let (_d, opts, mut f) = setup();
        f.probe_ok = false;
        let before = files(&opts);
        let err = install(&opts, &f.seams()).unwrap_err();
        assert!(matches!(err.root(), Error::Probe(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("every file was put back")
                && text.contains("containerd was restarted with its previous configuration"),
            "{text}"
        );
        assert_eq!(
            f.take(),
            [
                "validate",
                "check-shim",
                "restart containerd",
                "probe present=true",
                "restart containerd",
                "probe present=any",
                "label node-1 wasmpod.dev/installed=None"
            ]
        );
        assert_eq!(files(&opts), before, "every file byte for byte");
    }

    #[test]
    fn failed_restart_rolls_back_and_restarts_again() {
        let (_d, opts, f) = setup();
        f.restart_fails.set(true);
        let before = files(&opts);
        let err = install(&opts, &f.seams()).unwrap_err();
        assert!(matches!(err.root(), Error::Restart(_)), "{err}");
        assert_eq!(
            f.take(),
            [
                "validate",
                "check-shim",
                "restart containerd",
                "restart containerd",
                "probe present=any",
                "label node-1 wasmpod.dev/installed=None"
            ]
        );
        assert_eq!(files(&opts), before);
    }

    #[test]
    fn rejected_config_changes_nothing_and_restarts_nothing() {
        let (_d, opts, mut f) = setup();
        f.config_ok = false;
        let before = files(&opts);
        let err = install(&opts, &f.seams()).unwrap_err();
        assert!(matches!(err.root(), Error::Validate(_)), "{err}");
        assert!(
            err.to_string()
                .contains("Can't convert yes(string) to bool"),
            "{err}"
        );
        assert_eq!(
            f.take(),
            ["validate", "label node-1 wasmpod.dev/installed=None"]
        );
        assert_eq!(files(&opts), before);
    }

    #[test]
    fn a_shim_that_cannot_run_is_put_back_and_the_node_not_labelled() {
        let (_d, opts, mut f) = setup();
        // A shim of ours is installed and works; the new one does not run.
        install(&opts, &f.seams()).unwrap();
        f.take();
        let source = opts.shim_source.clone().unwrap();
        std::fs::write(&source, b"new shim").unwrap();
        f.shim_ok = false;
        let before = files(&opts);
        let err = install(&opts, &f.seams()).unwrap_err();
        assert!(matches!(err.root(), Error::ShimCheck(_)), "{err}");
        assert!(err.to_string().contains("GLIBC_2.34"), "{err}");
        assert_eq!(
            f.take(),
            ["check-shim", "label node-1 wasmpod.dev/installed=None"]
        );
        assert_eq!(files(&opts), before, "old shim and state put back");
    }

    #[test]
    fn uninstall_refuses_while_tasks_run_unless_forced() {
        let (_d, mut opts, mut f) = setup();
        install(&opts, &f.seams()).unwrap();
        f.take();
        f.tasks = vec![ShimTask {
            pid: 42,
            namespace: "k8s.io".into(),
            id: "pod-1".into(),
        }];
        let before = files(&opts);
        let err = uninstall(&opts, &f.seams()).unwrap_err();
        assert!(matches!(err, Error::TasksRunning { .. }), "{err}");
        assert!(err.to_string().contains("k8s.io/pod-1 (pid 42)"), "{err}");
        // The label goes first; nothing else changes.
        assert_eq!(f.take(), ["label node-1 wasmpod.dev/installed=None"]);
        assert_eq!(files(&opts), before);
        opts.force = true;
        uninstall(&opts, &f.seams()).unwrap();
        assert!(!opts.host.exists(&opts.state_file));
    }

    #[test]
    fn dry_run_writes_nothing_and_reports_the_diff() {
        let (_d, mut opts, f) = setup();
        opts.dry_run = true;
        let r = install(&opts, &f.seams()).unwrap();
        assert!(
            r.diff
                .contains("+[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmpod]"),
            "{}",
            r.diff
        );
        assert!(f.take().is_empty());
        assert_eq!(
            opts.host
                .read_text("/etc/containerd/config.toml")
                .unwrap()
                .unwrap(),
            ORIGINAL
        );
        assert!(!opts.host.exists(opts.shim_target()));
        assert!(!opts.host.exists(&opts.state_file));
    }

    #[test]
    fn uninstall_unlabels_first_and_restores_byte_for_byte() {
        let (_d, opts, f) = setup();
        install(&opts, &f.seams()).unwrap();
        f.take();
        let r = uninstall(&opts, &f.seams()).unwrap();
        assert!(r.restarted && r.shim_changed);
        // (no task runs: the fakes find none)
        assert_eq!(
            f.take(),
            [
                "label node-1 wasmpod.dev/installed=None",
                "restart containerd",
                "probe present=false"
            ]
        );
        assert_eq!(
            opts.host
                .read_text("/etc/containerd/config.toml")
                .unwrap()
                .unwrap(),
            ORIGINAL
        );
        assert!(!opts.host.exists(opts.shim_target()));
        assert!(!opts.host.exists(&opts.state_file));
        // Nothing recorded any more: a second uninstall only makes sure the label is gone.
        let r = uninstall(&opts, &f.seams()).unwrap();
        assert!(!r.restarted);
    }

    #[test]
    fn uninstall_after_a_later_edit_removes_only_our_entries() {
        let (_d, opts, f) = setup();
        install(&opts, &f.seams()).unwrap();
        let path = "/etc/containerd/config.toml";
        let edited = format!(
            "{}\n# added later\n",
            opts.host.read_text(path).unwrap().unwrap()
        );
        opts.host
            .write_atomic(path, edited.as_bytes(), 0o644)
            .unwrap();
        uninstall(&opts, &f.seams()).unwrap();
        let text = opts.host.read_text(path).unwrap().unwrap();
        assert!(!text.contains("wasmpod]"), "{text}");
        assert!(
            text.contains("# added later") && text.contains("sandbox_image"),
            "{text}"
        );
    }

    #[test]
    fn no_node_name_means_no_label_calls() {
        let (_d, mut opts, f) = setup();
        opts.node_name = None;
        let r = install(&opts, &f.seams()).unwrap();
        assert!(!r.labelled);
        assert_eq!(
            f.take(),
            [
                "validate",
                "check-shim",
                "restart containerd",
                "probe present=true"
            ]
        );
    }
}
