//! The file changes one install needs, computed without writing anything.
//!
//! A [`FileEdit`] is a host path with the text before and after; `--dry-run` prints their
//! diffs, the installer applies them, and the state file keeps the first `before` so
//! `uninstall` can put the original back byte for byte.
//!
//! Where the runtime goes (plain containerd):
//! - **in place** in the root config when it already has a CRI plugin section for its
//!   version (or already has our runtime). A drop-in is not safe there: containerd 1.x
//!   replaces a whole plugin section with the one from an imported file (`mergeConfig`:
//!   "maps merged by keys, but values are replaced entirely"), so a drop-in holding only our
//!   runtime would silently drop the user's CRI settings (sandbox image, runc options, registry
//!   config). Only comments-preserving `toml_edit` edits touch the file.
//! - **in a drop-in** (`/etc/containerd/conf.d/wasmpod.toml`) otherwise, added to the root
//!   config's `imports` unless an entry (a glob such as `conf.d/*.toml`) already covers it.
//!
//! k3s/RKE2 templates are Go templates, not TOML: the runtime goes in a block between
//! [`BEGIN_MARK`] and [`END_MARK`] appended to the template (created as
//! `{{ template "base" . }}` plus the block when missing). k0s gets a drop-in of its own,
//! microk8s an in-place edit of its TOML template.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::detect::{Detected, Layout};
use crate::hostfs::HostRoot;
use crate::tomledit::{self, ConfigVersion, RuntimeSpec};

/// First line of the block the installer owns in a k3s/RKE2 template.
pub const BEGIN_MARK: &str = "# BEGIN wasmpod-installer (removed by `wasmpod-installer uninstall`)";
/// Last line of that block.
pub const END_MARK: &str = "# END wasmpod-installer";
/// The base template line a new k3s/RKE2 template starts with.
pub const K3S_BASE: &str = "{{ template \"base\" . }}";

/// What role a changed file plays (decides how an edited-since-install file is reverted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EditKind {
    /// A TOML config edited in place (runtime table and/or `imports`).
    Config,
    /// A TOML file that holds only our runtime.
    DropIn,
    /// A Go template holding our marked block.
    Template,
}

/// One file's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEdit {
    /// Host path.
    pub path: PathBuf,
    /// Its role.
    pub kind: EditKind,
    /// Current content (`None`: the file does not exist).
    pub before: Option<String>,
    /// Wanted content (`None`: remove the file).
    pub after: Option<String>,
}

impl FileEdit {
    /// Whether applying it changes anything.
    pub fn changed(&self) -> bool {
        self.before != self.after
    }

    /// A unified diff of the change (empty when nothing changes).
    pub fn diff(&self) -> String {
        if !self.changed() {
            return String::new();
        }
        let name = self.path.display().to_string();
        let before = self.before.as_deref().unwrap_or("");
        let after = self.after.as_deref().unwrap_or("");
        similar::TextDiff::from_lines(before, after)
            .unified_diff()
            .context_radius(3)
            .header(
                if self.before.is_some() {
                    &name
                } else {
                    "/dev/null"
                },
                if self.after.is_some() {
                    &name
                } else {
                    "/dev/null"
                },
            )
            .to_string()
    }
}

/// The edits that register `spec` on the detected layout. `version` is the schema version
/// to write (already resolved by the caller when the files do not say).
pub fn plan_install(
    host: &HostRoot,
    detected: &Detected,
    version: ConfigVersion,
    spec: &RuntimeSpec,
) -> Result<Vec<FileEdit>, Error> {
    match &detected.layout {
        Layout::Containerd { root, dropin } => plan_containerd(host, root, dropin, version, spec),
        Layout::Template { template, .. } => {
            let before = host.read_text(template)?;
            let block = format!(
                "{BEGIN_MARK}\n{}{END_MARK}\n",
                tomledit::render_runtime_file(version, spec, false)
            );
            let after = match &before {
                None => format!("{K3S_BASE}\n\n{block}"),
                Some(text) => match strip_block(text) {
                    Some(rest) => format!("{}\n{block}", rest.trim_end_matches('\n')),
                    None => format!("{}\n\n{block}", text.trim_end_matches('\n')),
                },
            };
            // Keep an unchanged template byte-identical.
            let after = match (&before, strip_block_exact(before.as_deref(), &block)) {
                (Some(text), true) => text.clone(),
                _ => after,
            };
            Ok(vec![FileEdit {
                path: template.clone(),
                kind: EditKind::Template,
                before,
                after: Some(after),
            }])
        }
        Layout::K0s { dropin } => Ok(vec![dropin_edit(host, dropin, version, spec)?]),
        Layout::MicroK8s { template } => {
            let name = template.display().to_string();
            let before = host.read_text(template)?;
            let mut doc = tomledit::parse(&name, before.as_deref().unwrap_or(""))?;
            tomledit::set_runtime(&name, &mut doc, version, spec)?;
            Ok(vec![FileEdit {
                path: template.clone(),
                kind: EditKind::Config,
                before,
                after: Some(doc.to_string()),
            }])
        }
    }
}

fn dropin_edit(
    host: &HostRoot,
    path: &Path,
    version: ConfigVersion,
    spec: &RuntimeSpec,
) -> Result<FileEdit, Error> {
    let before = host.read_text(path)?;
    // An existing drop-in of ours is edited (keeps anything added to it); else written new.
    let after = match &before {
        Some(text) => {
            let name = path.display().to_string();
            let mut doc = tomledit::parse(&name, text)?;
            tomledit::set_runtime(&name, &mut doc, version, spec)?;
            doc.to_string()
        }
        None => tomledit::render_runtime_file(version, spec, true),
    };
    Ok(FileEdit {
        path: path.to_path_buf(),
        kind: EditKind::DropIn,
        before,
        after: Some(after),
    })
}

fn plan_containerd(
    host: &HostRoot,
    root: &Path,
    dropin: &Path,
    version: ConfigVersion,
    spec: &RuntimeSpec,
) -> Result<Vec<FileEdit>, Error> {
    let name = root.display().to_string();
    let before = host.read_text(root)?;
    let mut doc = tomledit::parse(&name, before.as_deref().unwrap_or(""))?;
    let cri: Vec<String> = version
        .cri_plugin()
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let in_place = version == ConfigVersion::V1
        || tomledit::has_runtime(&doc, version, &spec.handler)
        || tomledit::get(&doc, &cri).is_some();
    if in_place {
        log::info!(
            "{name} has a {} section: registering the runtime in place (a drop-in would replace that section on containerd 1.x)",
            tomledit::dotted(&cri)
        );
        tomledit::set_runtime(&name, &mut doc, version, spec)?;
        return Ok(vec![FileEdit {
            path: root.to_path_buf(),
            kind: EditKind::Config,
            before,
            after: Some(doc.to_string()),
        }]);
    }
    let dropin_path = dropin.display().to_string();
    log::info!("registering the runtime in the drop-in {dropin_path}, imported by {name}");
    if tomledit::is_empty(&doc) {
        doc.insert("version", toml_edit::value(version.number()));
    }
    tomledit::ensure_import(&name, &mut doc, &dropin_path)?;
    let root_edit = FileEdit {
        path: root.to_path_buf(),
        kind: EditKind::Config,
        after: Some(if before.is_some() || !tomledit::is_empty(&doc) {
            doc.to_string()
        } else {
            String::new()
        }),
        before,
    };
    Ok(vec![dropin_edit(host, dropin, version, spec)?, root_edit])
}

/// `text` without our marked block, if it has one.
pub fn strip_block(text: &str) -> Option<String> {
    let start = text.find(BEGIN_MARK)?;
    let end_rel = text[start..].find(END_MARK)?;
    let mut end = start + end_rel + END_MARK.len();
    if text[end..].starts_with('\n') {
        end += 1;
    }
    let mut out = text[..start].trim_end_matches('\n').to_owned();
    out.push('\n');
    out.push_str(&text[end..]);
    Some(out)
}

fn strip_block_exact(text: Option<&str>, block: &str) -> bool {
    text.is_some_and(|t| t.contains(block))
}

/// Remove only the installer's entries from a file that changed since install (the state's
/// byte-for-byte original no longer applies). `None` means the file should be removed.
pub fn revert_entries(
    kind: EditKind,
    path: &Path,
    text: &str,
    version: ConfigVersion,
    handler: &str,
    dropin: Option<&str>,
    created: bool,
) -> Result<Option<String>, Error> {
    let name = path.display().to_string();
    match kind {
        EditKind::Config => {
            let mut doc = tomledit::parse(&name, text)?;
            tomledit::remove_runtime(&mut doc, version, handler);
            if let Some(d) = dropin {
                tomledit::remove_import(&mut doc, d);
            }
            Ok(Some(doc.to_string()))
        }
        EditKind::DropIn => {
            let mut doc = tomledit::parse(&name, text)?;
            tomledit::remove_runtime(&mut doc, version, handler);
            let only_version = doc.iter().all(|(k, _)| k == "version");
            Ok(if only_version {
                None
            } else {
                Some(doc.to_string())
            })
        }
        EditKind::Template => {
            let rest = strip_block(text).unwrap_or_else(|| text.to_owned());
            Ok(if created && rest.trim() == K3S_BASE {
                None
            } else {
                Some(rest)
            })
        }
    }
}
