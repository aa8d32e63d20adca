//! The pod sandbox's pause process (`containerd-shim-wasmpod-v1 __pause`).
//!
//! It is created inside the pod's namespaces (the shim enters them between fork and exec),
//! so it only has to exist: it holds the IPC, UTS and, when the pod shares one
//! (`shareProcessNamespace`), PID namespaces the pod's containers join through
//! `/proc/<pid>/ns/*`, reports ready, and sleeps until SIGTERM/SIGINT (exit 0). As the PID 1
//! of a shared PID namespace it reaps the orphans handed to it. It needs no file: it pivots
//! into an empty read-only tmpfs of its own mount namespace first.

use std::io::{Read, Write};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use crate::os::{fd, mountns};
use crate::protocol::{RunnerStatus, START_FD, STATUS_FD};

use super::signals::reap_children;

/// Runs the pause role; returns the exit code.
pub fn main() -> i32 {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGCHLD);
    // Blocked and taken with sigwait: delivered even to a PID-namespace init.
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    // SAFETY: the shim passes these two descriptors and nothing else owns them.
    let (mut status, mut start) = unsafe { (fd::inherited(STATUS_FD), fd::inherited(START_FD)) };
    // The working directory is the bundle: the empty root is mounted over it.
    let answer = match mountns::enter_empty_root(std::path::Path::new(".")) {
        Ok(()) => RunnerStatus::Ready {
            timing: Default::default(),
        },
        Err(e) => RunnerStatus::Failed {
            error: format!("sandbox: leaving the host's filesystem: {e}"),
        },
    };
    let failed = matches!(answer, RunnerStatus::Failed { .. });
    let ready = serde_json::to_string(&answer).expect("status serialises");
    let _ = status.write_all(ready.as_bytes());
    drop(status);
    if failed {
        return 1;
    }
    let mut go = [0u8; 1];
    if !matches!(start.read(&mut go), Ok(1)) {
        return 0;
    }
    drop(start);
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => reap_children(),
            _ => return 0,
        }
    }
}
