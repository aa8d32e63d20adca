//! Putting host files back byte for byte when an install is refused or containerd does not
//! come back.
//!
//! Before the first write, [`Snapshot::take`] keeps the bytes and mode of every host file the
//! install may touch (the shim, its backup, the state file, each config file it edits), or
//! that the file did not exist. [`Snapshot::restore`] writes each one back atomically (or
//! removes what did not exist), so a refused install leaves the node as it found it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::hostfs::{HostError, HostRoot};

/// One file as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Saved {
    /// Host path.
    path: PathBuf,
    /// Bytes and permission bits; `None`: it did not exist.
    content: Option<(Vec<u8>, u32)>,
}

/// The files an install may touch, as they were before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    files: Vec<Saved>,
}

impl Snapshot {
    /// Keep `paths` (host paths; duplicates are kept once).
    pub fn take<'a>(
        host: &HostRoot,
        paths: impl IntoIterator<Item = &'a Path>,
    ) -> Result<Self, HostError> {
        let mut files: Vec<Saved> = Vec::new();
        for path in paths {
            if files.iter().any(|f| f.path == path) {
                continue;
            }
            let content = match host.read(path)? {
                None => None,
                Some(bytes) => {
                    let mode = std::fs::metadata(host.join(path))
                        .map(|m| m.permissions().mode() & 0o7777)
                        .unwrap_or(0o644);
                    Some((bytes, mode))
                }
            };
            files.push(Saved {
                path: path.to_path_buf(),
                content,
            });
        }
        Ok(Self { files })
    }

    /// Put every file back (in reverse order); tries them all and returns the first error.
    /// Files that are as they were are left alone.
    pub fn restore(&self, host: &HostRoot) -> Result<(), HostError> {
        let mut first = None;
        for saved in self.files.iter().rev() {
            let result = match &saved.content {
                None if !host.exists(&saved.path) => Ok(false),
                None => host.remove(&saved.path).map(|()| true),
                Some((bytes, mode)) => restore_file(host, &saved.path, bytes, *mode),
            };
            match result {
                Ok(true) => log::info!(
                    "{} {}",
                    if saved.content.is_some() {
                        "put back"
                    } else {
                        "removed"
                    },
                    saved.path.display()
                ),
                Ok(false) => log::debug!("{} unchanged", saved.path.display()),
                Err(e) => {
                    log::error!("could not put back {}: {e}", saved.path.display());
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Write `bytes` with `mode` back unless the file holds them already; whether it wrote.
fn restore_file(host: &HostRoot, path: &Path, bytes: &[u8], mode: u32) -> Result<bool, HostError> {
    let local = host.join(path);
    let same_mode =
        std::fs::metadata(&local).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode);
    if same_mode && host.read(path)?.as_deref() == Some(bytes) {
        return Ok(false);
    }
    host.write_atomic(path, bytes, mode)?;
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(mode))
        .map(|()| true)
        .map_err(|source| HostError {
            op: "setting the mode of",
            path: local,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_bytes_modes_and_absence() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        host.write_atomic("/etc/a.toml", b"original", 0o640)
            .unwrap();
        host.write_atomic("/bin/shim", b"old shim", 0o755).unwrap();
        let snap = Snapshot::take(
            &host,
            [
                Path::new("/etc/a.toml"),
                Path::new("/bin/shim"),
                Path::new("/var/new"),
                Path::new("/etc/a.toml"),
            ],
        )
        .unwrap();
        host.write_atomic("/etc/a.toml", b"changed", 0o644).unwrap();
        std::fs::set_permissions(
            host.join("/etc/a.toml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        host.remove("/bin/shim").unwrap();
        host.write_atomic("/var/new", b"created", 0o600).unwrap();
        snap.restore(&host).unwrap();
        assert_eq!(host.read("/etc/a.toml").unwrap().unwrap(), b"original");
        let mode = |p: &str| {
            std::fs::metadata(host.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("/etc/a.toml"), 0o640);
        assert_eq!(host.read("/bin/shim").unwrap().unwrap(), b"old shim");
        assert_eq!(mode("/bin/shim"), 0o755);
        assert!(!host.exists("/var/new"));
    }
}
