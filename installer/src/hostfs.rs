//! The node's filesystem as the installer sees it: every host path (`/etc/containerd/...`)
//! is resolved under `--host-root` (`/host` in the DaemonSet, `/` on the node itself, a temp
//! dir in tests), and every write is atomic (temp file in the same directory, fsync, rename,
//! fsync of the directory), so containerd never reads a half-written config and a crash
//! leaves either the old or the new file.
//!
//! Paths recorded in the state file are host paths, never joined ones, so the state stays
//! valid whatever the mount point of the host root.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// A host file operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct HostError {
    /// What was being done (`reading`, `writing`...).
    pub op: &'static str,
    /// The path as seen by the installer (under the host root).
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl HostError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The root of the host's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

impl HostRoot {
    /// A host root mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where the host root is mounted.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the host root is `/` (the installer runs on the node itself).
    pub fn is_slash(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The installer-side path of the host path `host_path` (`..` components are dropped,
    /// so a host path cannot escape the host root).
    pub fn join(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let mut out = self.root.clone();
        for c in host_path.as_ref().components() {
            if let Component::Normal(part) = c {
                out.push(part);
            }
        }
        out
    }

    /// Whether the host path exists.
    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        self.join(host_path).exists()
    }

    /// The bytes of a host file, or `None` when it does not exist.
    pub fn read(&self, host_path: impl AsRef<Path>) -> Result<Option<Vec<u8>>, HostError> {
        let path = self.join(host_path);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HostError::new("reading", &path, e)),
        }
    }

    /// A host text file, or `None` when it does not exist.
    pub fn read_text(&self, host_path: impl AsRef<Path>) -> Result<Option<String>, HostError> {
        let path = self.join(&host_path);
        match self.read(host_path)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|e| {
                HostError::new(
                    "reading",
                    &path,
                    io::Error::new(io::ErrorKind::InvalidData, e),
                )
            }),
        }
    }

    /// Write a host file atomically with `mode`, creating parent directories. An existing
    /// file keeps its permission bits.
    pub fn write_atomic(
        &self,
        host_path: impl AsRef<Path>,
        bytes: &[u8],
        mode: u32,
    ) -> Result<(), HostError> {
        let path = self.join(host_path);
        write_atomic(&path, bytes, mode)
    }

    /// Remove a host file; a missing file is not an error.
    pub fn remove(&self, host_path: impl AsRef<Path>) -> Result<(), HostError> {
        let path = self.join(host_path);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(HostError::new("removing", &path, e)),
        }
    }
}

/// Write `path` atomically: temp file next to it, fsync, rename over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), HostError> {
    let dir = path
        .parent()
        .ok_or_else(|| HostError::new("writing", path, io::ErrorKind::InvalidInput.into()))?;
    fs::create_dir_all(dir).map_err(|e| HostError::new("creating", dir, e))?;
    let mode = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(_) => mode,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.wasmpod-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(HostError::new("writing", path, e));
    }
    Ok(())
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_stays_under_the_root() {
        let host = HostRoot::new("/host");
        assert_eq!(
            host.join("/etc/containerd/config.toml"),
            Path::new("/host/etc/containerd/config.toml")
        );
        assert_eq!(host.join("/../../etc/x"), Path::new("/host/etc/x"));
        assert!(HostRoot::new("/").is_slash());
    }

    #[test]
    fn atomic_write_keeps_existing_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        host.write_atomic("/a/b/c.toml", b"one", 0o600).unwrap();
        let path = dir.path().join("a/b/c.toml");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        host.write_atomic("/a/b/c.toml", b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path().join("a/b")).unwrap().count(), 1);
        assert_eq!(host.read("/a/missing").unwrap(), None);
    }
}
