//! The pod sandbox's pause process (`containerd-shim-wasmpod-v1 __pause`).
//!
//! It is created inside the pod's namespaces (the shim enters them between fork and exec),
//! so it only has to exist: it holds the IPC and UTS namespaces the pod's containers join
//! through `/proc/<pid>/ns/*`, reports ready, and sleeps until SIGTERM/SIGINT (exit 0).

use std::io::{Read, Write};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use crate::os::fd;
use crate::protocol::{RunnerStatus, START_FD, STATUS_FD};

/// Runs the pause role; returns the exit code.
pub fn main() -> i32 {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Blocked and taken with sigwait: delivered even to a PID-namespace init.
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    // SAFETY: the shim passes these two descriptors and nothing else owns them.
    let (mut status, mut start) = unsafe { (fd::inherited(STATUS_FD), fd::inherited(START_FD)) };
    let ready = serde_json::to_string(&RunnerStatus::Ready {
        timing: Default::default(),
    })
    .expect("status serialises");
    let _ = status.write_all(ready.as_bytes());
    drop(status);
    let mut go = [0u8; 1];
    if !matches!(start.read(&mut go), Ok(1)) {
        return 0;
    }
    drop(start);
    let _ = set.wait();
    0
}
