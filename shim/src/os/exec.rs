//! Running a helper command (runc) to completion in a shim that reaps all its children.
//!
//! The `containerd-shim` crate's signal thread calls `waitpid(-1)` on every SIGCHLD, so
//! `std::process::Command::status` would lose the race for the exit status. Instead the exit
//! is taken from the crate's monitor, subscribed before the command starts.

use std::process::Command;

use containerd_shim::monitor::{Topic, monitor_subscribe, wait_pid};

/// Runs `command` with the stdio the caller set and returns its exit code.
pub fn run(command: &mut Command) -> std::io::Result<i32> {
    let subscription = monitor_subscribe(Topic::Pid)
        .map_err(|e| std::io::Error::other(format!("subscribing to exits: {e}")))?;
    let child = command.spawn()?;
    Ok(wait_pid(child.id() as i32, subscription))
}

/// Names the calling process `containerd-shim` (its `comm`, what `ps`, `top` and the
/// kernel's logs show). A runner is exec'd through a descriptor (`/proc/self/fd/N`, so a
/// shim upgrade cannot swap its binary), which would otherwise name it `N`.
pub fn name_process() {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which this is.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"containerd-shim".as_ptr());
    }
}
