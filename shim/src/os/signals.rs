//! Sending signals and naming exit codes.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Sends `signal` through `pidfd` when there is one (it cannot reach a process that took
/// the pid over), else to `pid`; `Ok(false)` when the process is gone.
pub fn send_to(
    pidfd: Option<&super::pidfd::Pidfd>,
    pid: u32,
    signal: u32,
) -> std::io::Result<bool> {
    match pidfd {
        Some(pidfd) => {
            let signal = Signal::try_from(signal as i32)
                .map_err(|_| std::io::Error::other(format!("invalid signal number {signal}")))?;
            pidfd.send(signal as i32)
        }
        None => send(pid, signal),
    }
}

/// Sends signal number `signal` to `pid`. `ESRCH` (already gone) is reported as `Ok(false)`.
pub fn send(pid: u32, signal: u32) -> std::io::Result<bool> {
    let signal = Signal::try_from(signal as i32)
        .map_err(|_| std::io::Error::other(format!("invalid signal number {signal}")))?;
    match kill(Pid::from_raw(pid as i32), signal) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
