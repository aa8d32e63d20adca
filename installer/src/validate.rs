//! Asking the node's own containerd whether it accepts the new configuration, before it is
//! written and containerd restarted.
//!
//! For plain containerd the candidate files are written beside the real ones under hidden
//! names that no `imports` glob matches (`.config.toml.wasmpod-candidate`): the root config
//! stays in its directory so relative `imports` resolve as they will, and a changed drop-in
//! is imported by its candidate path instead of its real one. Then
//! `containerd --config <candidate root> config dump` runs on the host: containerd loads
//! the candidate with its imports, migrates it and decodes every plugin's section, so a
//! value of the wrong type (`Can't convert yes(string) to bool`), a broken import or a
//! schema it cannot read is refused here, with containerd's own message, instead of after
//! a restart that would leave the node without a container runtime. The candidates are
//! removed whatever the outcome.
//!
//! k3s/RKE2 templates are rendered by their supervisor and k0s/microk8s run their own
//! containerd build: those candidates are not validated (the probe after the restart, and
//! the rollback, still apply).

use std::path::{Path, PathBuf};

use crate::detect::{Detected, Layout};
use crate::hostfs::{HostError, HostRoot};
use crate::plan::FileEdit;
use crate::restart::{HostExec, RestartError};
use crate::tomledit::{self, TomlError};

/// Suffix of candidate files (never ends in `.toml`, so no `imports` glob picks one up).
pub const CANDIDATE_SUFFIX: &str = ".wasmpod-candidate";

/// Validation failures.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// containerd refused the candidate.
    #[error("containerd refuses the new configuration (nothing was changed): {message}")]
    Rejected {
        /// containerd's message.
        message: String,
    },
    /// Writing the candidate files.
    #[error("writing the candidate configuration: {0}")]
    Host(#[from] HostError),
    /// The root config is not TOML.
    #[error(transparent)]
    Toml(#[from] TomlError),
}

/// Validate the edits of a plain-containerd layout with `containerd` (the host's binary).
pub fn validate(
    host: &HostRoot,
    exec: &dyn HostExec,
    containerd: &str,
    detected: &Detected,
    edits: &[FileEdit],
) -> Result<(), ValidateError> {
    let Layout::Containerd { root, dropin } = &detected.layout else {
        log::info!(
            "{} configuration: not validated before the restart",
            detected.flavour
        );
        return Ok(());
    };
    let changed = |path: &Path| edits.iter().find(|e| e.path == path && e.changed());
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| {
        let root_text = match changed(root) {
            Some(edit) => edit.after.clone().unwrap_or_default(),
            None => host.read_text(root)?.unwrap_or_default(),
        };
        let mut doc = tomledit::parse(&root.display().to_string(), &root_text)?;
        if let Some(edit) = changed(dropin) {
            let candidate = candidate_path(dropin);
            host.write_atomic(
                &candidate,
                edit.after.as_deref().unwrap_or("").as_bytes(),
                0o600,
            )?;
            written.push(candidate.clone());
            let dropin_name = dropin.display().to_string();
            tomledit::remove_import(&mut doc, &dropin_name);
            let seen = exec.host_path(host, &candidate).display().to_string();
            tomledit::ensure_import(&root.display().to_string(), &mut doc, &seen)?;
        }
        let candidate_root = candidate_path(root);
        host.write_atomic(&candidate_root, doc.to_string().as_bytes(), 0o600)?;
        written.push(candidate_root.clone());
        let argv = [
            containerd.to_owned(),
            "--config".to_owned(),
            exec.host_path(host, &candidate_root).display().to_string(),
            "config".to_owned(),
            "dump".to_owned(),
        ];
        match exec.run(&argv) {
            Ok(_) => {
                log::info!("containerd accepts the new configuration");
                Ok(())
            }
            Err(RestartError::Failed { stderr, status, .. }) => Err(ValidateError::Rejected {
                message: format!(
                    "`{containerd} --config {} config dump` failed ({status}): {stderr}",
                    candidate_root.display()
                ),
            }),
            Err(e) => Err(ValidateError::Rejected {
                message: e.to_string(),
            }),
        }
    })();
    for path in written {
        if let Err(e) = host.remove(&path) {
            log::warn!("could not remove the candidate {}: {e}", path.display());
        }
    }
    result
}

/// The hidden candidate beside `path`.
pub fn candidate_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{CANDIDATE_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::detect::Flavour;
    use crate::plan::EditKind;
    use crate::restart::Output;

    /// Records the candidate root it was given (and what it imports) and refuses when the
    /// text contains `bad`.
    struct FakeContainerd {
        host: HostRoot,
        seen: RefCell<Vec<String>>,
    }

    impl HostExec for FakeContainerd {
        fn run(&self, argv: &[String]) -> Result<Output, RestartError> {
            let text = std::fs::read_to_string(&argv[2]).unwrap();
            let mut all = text.clone();
            for import in tomledit::imports("x", &tomledit::parse("x", &text).unwrap()).unwrap() {
                all.push_str(&std::fs::read_to_string(&import).unwrap_or_default());
            }
            self.seen.borrow_mut().push(text);
            if all.contains("bad") {
                return Err(RestartError::Failed {
                    command: argv.join(" "),
                    status: "exit status: 1".into(),
                    stderr: "containerd: (4, 1): Can't convert bad(string) to bool".into(),
                });
            }
            Ok(Output {
                stdout: String::new(),
                stderr: String::new(),
            })
        }
        fn host_path(&self, _: &HostRoot, path: &Path) -> PathBuf {
            self.host.join(path)
        }
    }

    fn detected() -> Detected {
        Detected {
            flavour: Flavour::Containerd,
            layout: Layout::Containerd {
                root: "/etc/containerd/config.toml".into(),
                dropin: "/etc/containerd/conf.d/wasmpod.toml".into(),
            },
            unit: "containerd".into(),
            socket: "/run/containerd/containerd.sock".into(),
            version: None,
        }
    }

    fn edits(dropin: &str) -> Vec<FileEdit> {
        vec![
            FileEdit {
                path: "/etc/containerd/conf.d/wasmpod.toml".into(),
                kind: EditKind::DropIn,
                before: None,
                after: Some(dropin.to_owned()),
            },
            FileEdit {
                path: "/etc/containerd/config.toml".into(),
                kind: EditKind::Config,
                before: Some("version = 2\n".into()),
                after: Some(
                    "version = 2\nimports = [\"/etc/containerd/conf.d/wasmpod.toml\"]\n".into(),
                ),
            },
        ]
    }

    #[test]
    fn candidate_imports_the_candidate_dropin_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        host.write_atomic("/etc/containerd/config.toml", b"version = 2\n", 0o644)
            .unwrap();
        let fake = FakeContainerd {
            host: host.clone(),
            seen: RefCell::default(),
        };
        validate(&host, &fake, "containerd", &detected(), &edits("x = 1\n")).unwrap();
        let seen = fake.seen.borrow().clone();
        let candidate = host.join("/etc/containerd/conf.d/.wasmpod.toml.wasmpod-candidate");
        assert!(
            seen[0].contains(&candidate.display().to_string())
                && !seen[0].contains("\"/etc/containerd/conf.d/wasmpod.toml\""),
            "{}",
            seen[0]
        );
        // Only the real config is left; it was not touched.
        assert_eq!(
            host.read_text("/etc/containerd/config.toml")
                .unwrap()
                .unwrap(),
            "version = 2\n"
        );
        assert!(!candidate.exists());
        assert!(!host.exists(candidate_path(Path::new("/etc/containerd/config.toml"))));

        let err = validate(
            &host,
            &fake,
            "containerd",
            &detected(),
            &edits("x = \"bad\"\n"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("Can't convert bad(string) to bool"),
            "{err}"
        );
        assert!(!candidate.exists());
    }
}
