//! A process named by a pidfd rather than by its pid.
//!
//! The shim reaps its children as soon as they exit, but records the exit later (after the
//! output is read); in between, the pid is free and could name another process. A pidfd
//! opened while the process was still ours (a child not yet reaped) names that process
//! only: a signal through it reaches it or nobody, and [`Pidfd::is_alive`] says whether
//! anything opened by pid meanwhile (`/proc/<pid>/ns/*`) was still that process's.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
}

impl Pidfd {
    /// Opens a pidfd for `pid`; the caller makes sure `pid` is still the process it means
    /// (its own child, not yet reaped).
    pub fn open(pid: u32) -> std::io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor returned by pidfd_open, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Pidfd { fd })
    }

    /// Sends `signal` (0: only checks); `Ok(false)` when the process has exited.
    pub fn send(&self, signal: i32) -> std::io::Result<bool> {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if sent == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(false),
            _ => Err(e),
        }
    }

    /// Whether the process has not exited yet.
    pub fn is_alive(&self) -> bool {
        self.send(0).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_follows_its_process_only_until_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = Pidfd::open(child.id()).unwrap();
        assert!(pidfd.is_alive());
        assert!(pidfd.send(libc::SIGKILL).unwrap());
        child.wait().unwrap();
        // Reaped: its pid is free, and the pidfd names nobody.
        assert!(!pidfd.is_alive());
        assert!(!pidfd.send(libc::SIGTERM).unwrap());
    }
}
