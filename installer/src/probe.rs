//! Checking that containerd came back with the runtime registered (or gone, after
//! `uninstall`).
//!
//! Two checks, in order: containerd's socket accepts connections again (it restarted and
//! serves), and — when a dump command is configured (`containerd config dump`, run on the
//! host) — the configuration containerd loads, imports merged and migrated, holds the
//! `wasmpod` runtime with our `runtime_type` at the plugin path of *its* schema version.
//! That second check catches a runtime written where this containerd does not read it.
//!
//! Hook: a CRI `Status(verbose)` or `RunPodSandbox` with handler `wasmpod` is the stronger
//! proof that the running daemon loaded it; it plugs in as another [`Prober`].

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::hostfs::HostRoot;
use crate::restart::{HostExec, RestartError};
use crate::tomledit::{self, ConfigVersion};

/// Probe failures.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The socket did not answer in time.
    #[error("containerd socket {} did not accept connections within {timeout:?}", socket.display())]
    Socket {
        /// The socket (installer-side path).
        socket: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
    /// The dump command failed.
    #[error("dumping containerd's config: {0}")]
    Dump(#[from] RestartError),
    /// The dump is not TOML.
    #[error("containerd's config dump: {0}")]
    Toml(#[from] tomledit::TomlError),
    /// The runtime is missing, or present when it should be gone.
    #[error("containerd's loaded config {0}")]
    Runtime(String),
}

/// What the probe should find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// containerd's socket (host path).
    pub socket: PathBuf,
    /// The command dumping containerd's merged config on the host, when the flavour has
    /// one (`containerd --config <root> config dump`).
    pub dump: Option<Vec<String>>,
    /// The runtime handler.
    pub handler: String,
    /// Its runtime type.
    pub runtime_type: String,
    /// Whether it should be registered (install) or gone (uninstall); `None`: either (after
    /// a rollback, only that containerd serves and loads its config matters).
    pub present: Option<bool>,
    /// The version the installer wrote (used when the dump does not state one).
    pub version: ConfigVersion,
}

/// Checks containerd after a (possible) restart.
pub trait Prober {
    /// Succeed when containerd serves and matches `expect`.
    fn probe(&self, expect: &Expect) -> Result<(), ProbeError>;
}

/// Which dump command the probe runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dump {
    /// The flavour's own ([`Expect::dump`]).
    Auto,
    /// None: the socket check only.
    Skip,
    /// This command line.
    Command(Vec<String>),
}

/// The real probe: socket, then an optional config dump.
#[derive(Debug, Clone)]
pub struct ContainerdProbe<E> {
    /// The host root.
    pub host: HostRoot,
    /// How long to wait for the socket.
    pub timeout: Duration,
    /// How host commands run.
    pub exec: E,
    /// The dump command to use.
    pub dump: Dump,
    /// containerd's socket as the installer sees it, overriding the detected host path
    /// joined under the host root (for a containerd whose config names paths outside it).
    pub socket: Option<PathBuf>,
}

impl<E: HostExec> Prober for ContainerdProbe<E> {
    fn probe(&self, expect: &Expect) -> Result<(), ProbeError> {
        let socket = self
            .socket
            .clone()
            .unwrap_or_else(|| self.host.join(&expect.socket));
        let start = Instant::now();
        log::info!("waiting for containerd at {}", socket.display());
        while UnixStream::connect(&socket).is_err() {
            if start.elapsed() > self.timeout {
                return Err(ProbeError::Socket {
                    socket,
                    timeout: self.timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let argv = match &self.dump {
            Dump::Auto => expect.dump.clone(),
            Dump::Skip => None,
            Dump::Command(argv) => Some(argv.clone()),
        };
        let Some(argv) = argv else {
            log::info!("containerd answers (no config dump for this flavour)");
            return Ok(());
        };
        let out = self.exec.run(&argv)?;
        check_dump(&out.stdout, expect)?;
        log::info!(
            "containerd answers; its config {} runtime {:?}",
            match expect.present {
                Some(true) => "has",
                Some(false) => "no longer has",
                None => "loads, with or without the",
            },
            expect.handler
        );
        Ok(())
    }
}

/// Check a `containerd config dump` output against `expect`.
pub fn check_dump(dump: &str, expect: &Expect) -> Result<(), ProbeError> {
    let doc = tomledit::parse("containerd config dump", dump)?;
    let version = tomledit::config_version(&doc).unwrap_or(expect.version);
    let path = tomledit::dotted(&version.runtime_table(&expect.handler));
    let found = tomledit::runtime_type(&doc, version, &expect.handler);
    match (expect.present, found) {
        (None, _) => Ok(()),
        (Some(true), Some(t)) if t == expect.runtime_type => Ok(()),
        (Some(true), Some(t)) => Err(ProbeError::Runtime(format!(
            "has {path} with runtime_type {t:?}, expected {:?}",
            expect.runtime_type
        ))),
        (Some(true), None) => Err(ProbeError::Runtime(format!("has no {path}"))),
        (Some(false), None) => Ok(()),
        (Some(false), Some(_)) => Err(ProbeError::Runtime(format!("still has {path}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(present: bool) -> Expect {
        let present = Some(present);
        Expect {
            socket: PathBuf::new(),
            dump: None,
            handler: "wasmpod".into(),
            runtime_type: "io.containerd.wasmpod.v1".into(),
            present,
            version: ConfigVersion::V2,
        }
    }

    #[test]
    fn dump_is_read_at_its_own_version_path() {
        // A 2.x dump of a migrated config: the runtime is under the version 3 path.
        let v3 = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmpod]\nruntime_type = \"io.containerd.wasmpod.v1\"\n";
        check_dump(v3, &expect(true)).unwrap();
        assert!(check_dump(v3, &expect(false)).is_err());
        // The 1.x path in a version 3 dump is the silently ignored mistake.
        let wrong = "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmpod]\nruntime_type = \"io.containerd.wasmpod.v1\"\n";
        let err = check_dump(wrong, &expect(true)).unwrap_err();
        assert!(
            err.to_string().contains("io.containerd.cri.v1.runtime"),
            "{err}"
        );
        check_dump("version = 2\n", &expect(false)).unwrap();
    }
}
