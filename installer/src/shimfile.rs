//! Copying the shim binary onto the host.
//!
//! The source is the binary shipped in the installer image; its expected sha256 comes from
//! `--shim-sha256` or a `<binary>.sha256` file next to it (written by the image build), so a
//! corrupted image layer is caught before anything is installed. The copy is written to a
//! temp file in the install directory and renamed over the target (a running shim keeps its
//! old inode; the next pod starts the new one), then read back and checked again.
//!
//! A binary that is already there with the same digest is left alone (idempotence). A
//! different binary that the installer did not put there is saved to a backup path first,
//! so `uninstall` can put it back.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::hostfs::{self, HostError, HostRoot, sha256_hex};

/// Shim copy failures.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The source binary could not be read.
    #[error("reading the shim binary {}: {source}", path.display())]
    Source {
        /// The source path (inside the installer's filesystem).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The source does not have the expected digest.
    #[error("shim binary {} has sha256 {actual}, expected {expected}", path.display())]
    Digest {
        /// The checked file.
        path: PathBuf,
        /// What it should have.
        expected: String,
        /// What it has.
        actual: String,
    },
    /// Writing to the host.
    #[error(transparent)]
    Host(#[from] HostError),
}

/// The outcome of [`install_shim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimInstall {
    /// sha256 of the installed binary.
    pub sha256: String,
    /// Whether the target was written (false: already identical).
    pub changed: bool,
    /// A foreign binary saved before overwriting it (host path of the backup).
    pub backup: Option<PathBuf>,
}

/// The expected digest: `explicit`, else the first word of `<source>.sha256` if present.
pub fn expected_digest(source: &Path, explicit: Option<&str>) -> Result<Option<String>, ShimError> {
    if let Some(d) = explicit {
        return Ok(Some(d.trim().to_lowercase()));
    }
    let mut sidecar = source.as_os_str().to_owned();
    sidecar.push(".sha256");
    match fs::read_to_string(&sidecar) {
        Ok(text) => Ok(text.split_whitespace().next().map(str::to_lowercase)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ShimError::Source {
            path: sidecar.into(),
            source,
        }),
    }
}

/// Copy `source` to the host path `target`, verifying `expected` (if any) before and after.
/// `ours` is the digest a previous install recorded for `target`: a different existing
/// binary is backed up to `backup` before it is replaced.
pub fn install_shim(
    host: &HostRoot,
    source: &Path,
    expected: Option<&str>,
    target: &Path,
    ours: Option<&str>,
    backup: &Path,
    dry_run: bool,
) -> Result<ShimInstall, ShimError> {
    let bytes = fs::read(source).map_err(|e| ShimError::Source {
        path: source.to_path_buf(),
        source: e,
    })?;
    let sha256 = sha256_hex(&bytes);
    if let Some(expected) = expected
        && expected != sha256
    {
        return Err(ShimError::Digest {
            path: source.to_path_buf(),
            expected: expected.to_owned(),
            actual: sha256,
        });
    }
    let existing = host.read(target)?;
    let existing_sha = existing.as_deref().map(sha256_hex);
    if existing_sha.as_deref() == Some(sha256.as_str()) {
        log::info!(
            "{} is already installed (sha256 {sha256})",
            target.display()
        );
        return Ok(ShimInstall {
            sha256,
            changed: false,
            backup: None,
        });
    }
    let mut saved = None;
    if let (Some(old), Some(old_sha)) = (&existing, &existing_sha)
        && ours != Some(old_sha.as_str())
    {
        log::info!(
            "{} exists and was not installed by us (sha256 {old_sha}); saving it to {}",
            target.display(),
            backup.display()
        );
        if !dry_run {
            host.write_atomic(backup, old, 0o755)?;
        }
        saved = Some(backup.to_path_buf());
    }
    log::info!("installing {} (sha256 {sha256})", target.display());
    if !dry_run {
        hostfs::write_atomic(&host.join(target), &bytes, 0o755)?;
        let written = host.read(target)?.unwrap_or_default();
        let actual = sha256_hex(&written);
        if actual != sha256 {
            return Err(ShimError::Digest {
                path: host.join(target),
                expected: sha256,
                actual,
            });
        }
    }
    Ok(ShimInstall {
        sha256,
        changed: true,
        backup: saved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_verifies_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("shim");
        fs::write(&src, b"binary").unwrap();
        let host = HostRoot::new(dir.path().join("host"));
        let target = Path::new("/usr/local/bin/containerd-shim-wasmpod-v1");
        let backup = Path::new("/var/lib/wasmpod/backup/containerd-shim-wasmpod-v1");
        let sha = sha256_hex(b"binary");
        let first = install_shim(&host, &src, Some(&sha), target, None, backup, false).unwrap();
        assert!(first.changed);
        assert_eq!(host.read(target).unwrap().unwrap(), b"binary");
        let second =
            install_shim(&host, &src, Some(&sha), target, Some(&sha), backup, false).unwrap();
        assert!(!second.changed);
        let err = install_shim(&host, &src, Some("00"), target, None, backup, false).unwrap_err();
        assert!(matches!(err, ShimError::Digest { .. }), "{err}");
    }

    #[test]
    fn foreign_binary_is_backed_up_and_sidecar_digest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("shim");
        fs::write(&src, b"new").unwrap();
        fs::write(
            dir.path().join("shim.sha256"),
            format!("{}  shim\n", sha256_hex(b"new")),
        )
        .unwrap();
        let expected = expected_digest(&src, None).unwrap();
        assert_eq!(expected.as_deref(), Some(sha256_hex(b"new").as_str()));
        let host = HostRoot::new(dir.path().join("host"));
        let target = Path::new("/usr/local/bin/shim");
        let backup = Path::new("/var/lib/wasmpod/backup/shim");
        host.write_atomic(target, b"old", 0o755).unwrap();
        let r = install_shim(
            &host,
            &src,
            expected.as_deref(),
            target,
            None,
            backup,
            false,
        )
        .unwrap();
        assert_eq!(r.backup.as_deref(), Some(backup));
        assert_eq!(host.read(backup).unwrap().unwrap(), b"old");
    }
}
