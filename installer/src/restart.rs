//! Running commands on the host, and restarting containerd with them.
//!
//! From the DaemonSet (hostPID, privileged) a host command runs through
//! `nsenter -t 1 -m -u -i -n -p --`: in PID 1's namespaces, so `systemctl` talks to the
//! host's systemd and `containerd --version` is the host's binary. On the node itself
//! (`--host-root /`) commands run directly. [`HostExec`] is that choice; [`Restarter`] is what
//! restarts containerd: `systemctl restart <unit>` when the host runs systemd, or a
//! configured shell command (`--restart-command`) for other inits and for tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::hostfs::HostRoot;

/// Command failures.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// The command could not be started.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The command failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
    /// No way to restart containerd is known.
    #[error("the host does not run systemd; pass --restart-command to restart containerd")]
    NoRestartMethod,
}

/// What a host command printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// stdout (lossy UTF-8).
    pub stdout: String,
    /// stderr (lossy UTF-8).
    pub stderr: String,
}

/// Runs a command on the host; fails unless it exits 0.
pub trait HostExec {
    /// Run `argv`.
    fn run(&self, argv: &[String]) -> Result<Output, RestartError>;

    /// How a command run by [`HostExec::run`] names the host path `path`: the path itself
    /// when commands run in the host's mount namespace, else the path under the host root.
    fn host_path(&self, host: &HostRoot, path: &Path) -> PathBuf {
        host.join(path)
    }
}

/// Runs commands as child processes of the installer, optionally through `nsenter` into
/// PID 1's namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessExec {
    /// Prefix commands with `nsenter -t 1 -m -u -i -n -p --`.
    pub nsenter: bool,
}

impl HostExec for ProcessExec {
    fn run(&self, argv: &[String]) -> Result<Output, RestartError> {
        let mut full: Vec<String> = Vec::new();
        if self.nsenter {
            full.extend(
                ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--"].map(str::to_owned),
            );
        }
        full.extend(argv.iter().cloned());
        run_argv(&full, &[])
    }

    fn host_path(&self, host: &HostRoot, path: &Path) -> PathBuf {
        if self.nsenter {
            path.to_path_buf()
        } else {
            host.join(path)
        }
    }
}

fn run_argv(argv: &[String], env: &[(&str, &str)]) -> Result<Output, RestartError> {
    let command = argv.join(" ");
    let (program, args) = argv.split_first().ok_or_else(|| RestartError::Spawn {
        command: command.clone(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    log::debug!("running {command}");
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RestartError::Spawn {
            command: command.clone(),
            source,
        })?;
    let output = Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !out.status.success() {
        return Err(RestartError::Failed {
            command,
            status: out.status.to_string(),
            stderr: output.stderr.trim().to_owned(),
        });
    }
    Ok(output)
}

/// Restarts the service that runs containerd.
pub trait Restarter {
    /// Restart `unit` and return once the restart command finished.
    fn restart(&self, unit: &str) -> Result<(), RestartError>;
}

/// `systemctl restart <unit>` on the host.
#[derive(Debug, Clone)]
pub struct Systemctl<E> {
    /// How host commands run.
    pub exec: E,
}

impl<E: HostExec> Restarter for Systemctl<E> {
    fn restart(&self, unit: &str) -> Result<(), RestartError> {
        log::info!("restarting {unit} with systemctl");
        self.exec
            .run(&[
                "systemctl".to_owned(),
                "restart".to_owned(),
                unit.to_owned(),
            ])
            .map(drop)
    }
}

/// A shell command (`sh -c`), given the unit as `$WASMPOD_UNIT`.
#[derive(Debug, Clone)]
pub struct ShellCommand {
    /// The command line.
    pub command: String,
}

impl Restarter for ShellCommand {
    fn restart(&self, unit: &str) -> Result<(), RestartError> {
        log::info!("restarting {unit} with `{}`", self.command);
        let argv = ["sh".to_owned(), "-c".to_owned(), self.command.clone()];
        run_argv(&argv, &[("WASMPOD_UNIT", unit)]).map(drop)
    }
}

/// Used when no restart method exists: fails if a restart is needed.
#[derive(Debug, Clone, Copy)]
pub struct NoRestart;

impl Restarter for NoRestart {
    fn restart(&self, _unit: &str) -> Result<(), RestartError> {
        Err(RestartError::NoRestartMethod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_command_sees_the_unit_and_failures_carry_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("unit");
        ShellCommand {
            command: format!("echo \"$WASMPOD_UNIT\" > {}", out.display()),
        }
        .restart("containerd")
        .unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "containerd\n");
        let err = ShellCommand {
            command: "echo boom >&2; exit 3".into(),
        }
        .restart("containerd")
        .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert!(matches!(
            NoRestart.restart("x"),
            Err(RestartError::NoRestartMethod)
        ));
    }
}
