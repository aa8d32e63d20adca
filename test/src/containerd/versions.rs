//! Which containerd a test runs: the supported releases ([`ContainerdVersion`]), where their
//! binaries are (the system's 1.6 on `PATH`, 1.7 and 2.1 in a cache), fetching the cached
//! ones with `scripts/fetch-containerd.sh`, and the `config.toml` schema each reads
//! ([`ConfigVersion`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::locate::resolve_bin;

/// Environment variable overriding the cache dir of `scripts/fetch-containerd.sh`.
pub const CONTAINERD_CACHE_ENV: &str = "WASMPOD_CONTAINERD_CACHE";
/// The script that fetches containerd 1.7 and 2.1 into the cache.
pub const FETCH_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scripts/fetch-containerd.sh"
);

/// The `config.toml` schema version to write.
///
/// containerd 1.x reads version 2; 2.x wants version 3 (CRI split into
/// `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConfigVersion {
    /// containerd 1.6 / 1.7.
    #[default]
    V2,
    /// containerd 2.x.
    V3,
}

/// The containerd releases the test suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerdVersion {
    /// 1.6 from Debian 12: the system's `containerd` on `PATH`.
    V1_6,
    /// 1.7 from Debian trixie, cached by `scripts/fetch-containerd.sh`.
    V1_7,
    /// 2.1 from Debian sid, cached by `scripts/fetch-containerd.sh`.
    V2_1,
}

impl ContainerdVersion {
    /// All supported versions, oldest first.
    pub const ALL: [Self; 3] = [Self::V1_6, Self::V1_7, Self::V2_1];

    /// `"1.6"`, `"1.7"`, `"2.1"`.
    pub fn label(self) -> &'static str {
        match self {
            Self::V1_6 => "1.6",
            Self::V1_7 => "1.7",
            Self::V2_1 => "2.1",
        }
    }

    /// The config schema this version reads.
    pub fn config_version(self) -> ConfigVersion {
        match self {
            Self::V1_6 | Self::V1_7 => ConfigVersion::V2,
            Self::V2_1 => ConfigVersion::V3,
        }
    }

    /// The directory holding `containerd` and `ctr`: `None` for the system's (on `PATH`),
    /// else `<cache>/<label>/usr/bin` (the cache is `$WASMPOD_CONTAINERD_CACHE` or
    /// `~/.cache/wasmpod/containerd`).
    pub fn bin_dir(self) -> Option<PathBuf> {
        if self == Self::V1_6 {
            return None;
        }
        let cache = std::env::var_os(CONTAINERD_CACHE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/wasmpod/containerd")
            });
        Some(cache.join(self.label()).join("usr/bin"))
    }

    /// Whether this version's binaries are there.
    pub fn is_available(self) -> bool {
        match self.bin_dir() {
            None => resolve_bin(Path::new("containerd")).is_ok(),
            Some(dir) => dir.join("containerd").is_file() && dir.join("ctr").is_file(),
        }
    }

    /// Make the binaries available: run `scripts/fetch-containerd.sh` when they are
    /// missing (it is idempotent and only downloads what the cache lacks).
    pub fn ensure_available(self) -> anyhow::Result<()> {
        if self.is_available() {
            return Ok(());
        }
        if self == Self::V1_6 {
            bail!("containerd not found on PATH; install it (scripts/setup.sh)");
        }
        let mut cmd = Command::new("bash");
        cmd.arg(FETCH_SCRIPT);
        if let Some(cache) = std::env::var_os(CONTAINERD_CACHE_ENV) {
            cmd.arg(cache);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {FETCH_SCRIPT}"))?;
        if !out.status.success() || !self.is_available() {
            bail!(
                "{FETCH_SCRIPT} did not provide containerd {} ({}):\n{}",
                self.label(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "containerd {}", self.label())
    }
}
