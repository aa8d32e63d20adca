//! The `uninstall` verb: unlabel, refuse while tasks run, revert what the recorded install
//! did (the order is in [`super`]).

use super::{Options, Report, Seams, apply, expect, set_label};
use crate::Error;
use crate::detect::{self, DetectOptions, Detected};
use crate::hostfs::sha256_hex;
use crate::plan::{self, FileEdit};
use crate::state;

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
    use super::super::fakes::{assert_as_before_the_install, files, setup};
    use super::super::install;
    use super::*;
    use crate::tasks::ShimTask;

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
        assert_as_before_the_install(&opts);
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
}
