//! What an install did, kept on the host so `uninstall` reverts exactly that.
//!
//! The state file (default `/var/lib/wasmpod/install-state.json` on the host) records, for
//! each file the installer wrote, its content before the *first* install (or that it did not
//! exist) and the sha256 of what the installer last wrote. `uninstall` restores the original
//! byte for byte when the file still holds what we wrote; when someone changed it since, only
//! our entries are removed ([`crate::plan::revert_entries`]). A re-install keeps the first
//! original, so running install twice never makes our own output the "original".
//!
//! The state is written before the files it describes, so an install interrupted half-way
//! can still be uninstalled.

use std::path::{Path, PathBuf};

use crate::detect::Flavour;
use crate::hostfs::{HostError, HostRoot};
use crate::plan::EditKind;
use crate::tomledit::ConfigVersion;

/// State file failures.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing it.
    #[error(transparent)]
    Host(#[from] HostError),
    /// It is not ours or is damaged.
    #[error("state file {}: {source}", path.display())]
    Json {
        /// Host path of the state file.
        path: PathBuf,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
}

/// Format version of the state file.
pub const FORMAT: u32 = 1;

/// One file the installer wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    /// Host path.
    pub path: PathBuf,
    /// Its role.
    pub kind: EditKind,
    /// Content before the first install; `None`: it did not exist.
    pub original: Option<String>,
    /// sha256 of the content the installer last wrote.
    pub written_sha256: String,
}

/// The installed shim binary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShimRecord {
    /// Host path of the binary.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: String,
    /// Host path of a foreign binary saved before it was replaced.
    pub backup: Option<PathBuf>,
}

/// The whole state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstallState {
    /// [`FORMAT`].
    pub format: u32,
    /// The flavour installed into.
    pub flavour: Flavour,
    /// The schema version written.
    pub config_version: ConfigVersion,
    /// The runtime handler.
    pub handler: String,
    /// The systemd unit restarted.
    pub unit: String,
    /// Host path of the drop-in named in `imports`, if one was used.
    pub dropin: Option<String>,
    /// The shim, once installed.
    pub shim: Option<ShimRecord>,
    /// The files written, in the order they were written.
    pub files: Vec<FileRecord>,
}

impl InstallState {
    /// The record for `path`.
    pub fn file(&self, path: &Path) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Record that `path` now holds content with digest `written_sha256`; the original is
    /// taken only the first time a path is recorded.
    pub fn record_file(
        &mut self,
        path: &Path,
        kind: EditKind,
        before: Option<&str>,
        written_sha256: String,
    ) {
        match self.files.iter_mut().find(|f| f.path == path) {
            Some(rec) => rec.written_sha256 = written_sha256,
            None => self.files.push(FileRecord {
                path: path.to_path_buf(),
                kind,
                original: before.map(str::to_owned),
                written_sha256,
            }),
        }
    }
}

/// Read the state, `None` when there is none.
pub fn load(host: &HostRoot, path: &Path) -> Result<Option<InstallState>, StateError> {
    let Some(bytes) = host.read(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Json {
            path: path.to_path_buf(),
            source,
        })
}

/// Write the state atomically (mode 0600: it holds copies of config files).
pub fn save(host: &HostRoot, path: &Path, state: &InstallState) -> Result<(), StateError> {
    let mut text = serde_json::to_vec_pretty(state).map_err(|source| StateError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    text.push(b'\n');
    Ok(host.write_atomic(path, &text, 0o600)?)
}

/// Remove the state file.
pub fn remove(host: &HostRoot, path: &Path) -> Result<(), StateError> {
    Ok(host.remove(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_original_is_kept_and_state_round_trips() {
        let mut state = InstallState {
            format: FORMAT,
            flavour: Flavour::Containerd,
            config_version: ConfigVersion::V2,
            handler: "wasmpod".into(),
            unit: "containerd".into(),
            dropin: None,
            shim: None,
            files: Vec::new(),
        };
        let p = Path::new("/etc/containerd/config.toml");
        state.record_file(p, EditKind::Config, Some("original"), "a".into());
        state.record_file(p, EditKind::Config, Some("ours"), "b".into());
        let rec = state.file(p).unwrap();
        assert_eq!(rec.original.as_deref(), Some("original"));
        assert_eq!(rec.written_sha256, "b");

        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        let sp = Path::new("/var/lib/wasmpod/install-state.json");
        assert_eq!(load(&host, sp).unwrap(), None);
        save(&host, sp, &state).unwrap();
        assert_eq!(load(&host, sp).unwrap(), Some(state));
    }
}
