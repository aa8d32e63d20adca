//! A process recorded so that it can be found again, and proven to be the same process,
//! after the shim that started it died: `runner.pid` in the bundle holds `PID STARTTIME`
//! (the kernel's start time in clock ticks since boot, field 22 of `/proc/PID/stat`).
//!
//! `shim delete` runs after a crash, possibly much later: the pid may have been reused by an
//! unrelated process. [`RecordedProcess::kill`] opens a pidfd first, then checks the start
//! time of the process the pidfd names, and signals through the pidfd, so the signal can
//! only reach the recorded process (a reused pid has another start time; a process that
//! dies after the pidfd is opened makes the signal fail with `ESRCH`, never hit a
//! newcomer). Pids 0 and 1, negatives and values beyond the kernel's pid range are refused
//! when the file is read, whatever the rest says. A file without a start time (written by
//! an older shim) is not trusted: nothing is signalled.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Largest pid Linux hands out (`PID_MAX_LIMIT` on 64-bit).
const PID_MAX_LIMIT: u32 = 4_194_304;

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds {content:?}: not `PID STARTTIME` with 1 < PID <= {PID_MAX_LIMIT}")]
    Malformed { path: String, content: String },
}

/// A process as recorded at spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedProcess {
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// What [`RecordedProcess::kill`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum KillOutcome {
    Killed,
    /// No process with that pid (it already exited and was reaped).
    Gone,
    /// A process has the pid but another start time: not ours, left alone.
    NotOurs,
}

/// The start time of `pid` (field 22 of `/proc/PID/stat`), in clock ticks since boot.
pub fn start_time(pid: u32) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat)
        .ok_or_else(|| std::io::Error::other(format!("unexpected /proc/{pid}/stat: {stat:?}")))
}

/// Field 22 of a `/proc/PID/stat` line; the command (field 2) may hold spaces and `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow; the start time is field 22, the 20th after the command.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

impl RecordedProcess {
    /// Records `pid`, which must be alive (a child not yet reaped).
    pub fn of(pid: u32) -> std::io::Result<Self> {
        Ok(RecordedProcess {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// Writes `PID STARTTIME` to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, format!("{} {}\n", self.pid, self.start_time))
    }

    /// Reads a file written by [`RecordedProcess::write`]; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>, PidFileError> {
        let content = match std::fs::read_to_string(path) {
            Ok(content) => content,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PidFileError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::parse(&content)
            .map(Some)
            .ok_or(PidFileError::Malformed {
                path: path.display().to_string(),
                content,
            })
    }

    fn parse(content: &str) -> Option<Self> {
        let mut fields = content.split_whitespace();
        let (Some(pid), Some(start_time), None) = (fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        // Digits only: Rust's integer parsing takes a leading `+`, and "-5" must never
        // become a pid (nor wrap into kill(-1)).
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(pid) || !digits(start_time) {
            return None;
        }
        let pid: u32 = pid
            .parse()
            .ok()
            .filter(|p| (2..=PID_MAX_LIMIT).contains(p))?;
        let start_time: u64 = start_time.parse().ok()?;
        Some(RecordedProcess { pid, start_time })
    }

    /// Sends `signal` to the recorded process if, and only if, it is still that process.
    pub fn kill(&self, signal: i32) -> std::io::Result<KillOutcome> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid as libc::pid_t, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESRCH) => Ok(KillOutcome::Gone),
                _ => Err(e),
            };
        }
        // SAFETY: a fresh descriptor returned by pidfd_open, owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // The pidfd pins the process it names: if that one is ours, the signal below reaches
        // it or nobody.
        match start_time(self.pid) {
            Ok(now) if now == self.start_time => {}
            Ok(_) => return Ok(KillOutcome::NotOurs),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KillOutcome::Gone),
            Err(e) => return Err(e),
        }
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if sent == 0 {
            return Ok(KillOutcome::Killed);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(KillOutcome::Gone),
            _ => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987_654));
        let own = start_time(std::process::id()).unwrap();
        assert!(own > 0);
    }

    #[test]
    fn absurd_pids_are_refused() {
        for content in [
            "0 5",
            "1 5",
            "-5 5",
            "99999999999 5",
            "4294967297 5",
            "4194305 5",
            "+7 5",
            "7",
            "7 5 9",
            "7 -5",
            "",
            "seven 5",
        ] {
            assert_eq!(RecordedProcess::parse(content), None, "{content:?}");
        }
        assert_eq!(
            RecordedProcess::parse("1234 5678\n"),
            Some(RecordedProcess {
                pid: 1234,
                start_time: 5678
            })
        );
    }

    #[test]
    fn only_the_recorded_process_is_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        let real = RecordedProcess::of(pid).unwrap();
        let stale = RecordedProcess {
            pid,
            start_time: real.start_time - 1,
        };
        assert_eq!(stale.kill(libc::SIGKILL).unwrap(), KillOutcome::NotOurs);
        assert!(
            child.try_wait().unwrap().is_none(),
            "an unrelated process was killed"
        );
        assert_eq!(real.kill(libc::SIGKILL).unwrap(), KillOutcome::Killed);
        child.wait().unwrap();
        assert_eq!(real.kill(libc::SIGKILL).unwrap(), KillOutcome::Gone);
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runner.pid");
        assert_eq!(RecordedProcess::read(&path).unwrap(), None);
        let me = RecordedProcess::of(std::process::id()).unwrap();
        me.write(&path).unwrap();
        assert_eq!(RecordedProcess::read(&path).unwrap(), Some(me));
        std::fs::write(&path, "1").unwrap();
        assert!(RecordedProcess::read(&path).is_err());
    }
}
