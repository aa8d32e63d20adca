//! The `install` verb: register the runtime and the shim, prove both work, label the node
//! (the order is in [`super`]).

use std::path::Path;

use super::refusal::refuse;
use super::{BACKUP_DIR, Options, Report, Seams, apply, expect, set_label};
use crate::detect::{self, CgroupDriver, Detected, Flavour};
use crate::hostfs::sha256_hex;
use crate::plan::{self, FileEdit};
use crate::restart::HostExec;
use crate::rollback::Snapshot;
use crate::shimcheck::ShimChecker;
use crate::shimfile;
use crate::state::{self, InstallState, ShimRecord};
use crate::tomledit::{ConfigVersion, RuntimeSpec};
use crate::{Error, HANDLER, RUNTIME_TYPE, SHIM_BINARY, validate};

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

    // The shim copied over (or, dry, what would be): the hash recorded last time says
    // whether the binary there is ours to replace without a backup.
    let ours = previous
        .as_ref()
        .and_then(|s| s.shim.as_ref())
        .map(|s| s.sha256.as_str());
    let copy_shim = |source: &Path, dry_run: bool| {
        shimfile::install_shim(
            host,
            source,
            expected.as_deref(),
            &target,
            ours,
            &backup,
            dry_run,
        )
    };

    if opts.dry_run {
        if let Some(source) = &opts.shim_source {
            let result = copy_shim(source, true)?;
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
        let result = copy_shim(source, false).map_err(|e| undo(e.into(), false))?;
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

#[cfg(test)]
mod tests {
    use super::super::fakes::{ORIGINAL, assert_as_before_the_install, files, setup};
    use super::*;

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
        assert_as_before_the_install(&opts);
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
