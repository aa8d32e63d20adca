//! The pod sandbox's pause process (`containerd-shim-wasmpod-v1 __pause`).
//!
//! It is created inside the pod's namespaces (the shim enters them between fork and exec),
//! so it only has to exist: it holds the IPC and UTS namespaces the pod's containers join
//! through `/proc/<pid>/ns/*`, reports ready, and sleeps until SIGTERM/SIGINT (exit 0).
//! Before it reports it is confined like a runner ([`super::confine`]) with the sandbox
//! spec's (`config.json` in its working directory, the bundle) capabilities, limits and
//! seccomp profile, and a seccomp allowlist of the few calls it makes.

use std::io::{Read, Write};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use oci_spec::runtime::Spec;

use crate::os::fd;
use crate::protocol::{RunnerStatus, START_FD, STATUS_FD};

use super::confine::{Role, confine};

/// Runs the pause role; returns the exit code.
pub fn main() -> i32 {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Blocked and taken with sigwait: delivered even to a PID-namespace init.
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    // SAFETY: the shim passes these two descriptors and nothing else owns them.
    let (mut status, mut start) = unsafe { (fd::inherited(STATUS_FD), fd::inherited(START_FD)) };
    let confined = Spec::load("config.json")
        .map_err(|e| format!("invalid OCI spec config.json: {e}"))
        .and_then(|spec| confine(&spec, Role::Pause).map_err(|e| e.to_string()));
    let verdict = match &confined {
        Ok(()) => RunnerStatus::Ready {
            timing: Default::default(),
        },
        Err(error) => RunnerStatus::Failed {
            error: error.clone(),
        },
    };
    let line = serde_json::to_string(&verdict).expect("status serialises");
    let _ = status.write_all(line.as_bytes());
    drop(status);
    if confined.is_err() {
        return 1;
    }
    let mut go = [0u8; 1];
    if !matches!(start.read(&mut go), Ok(1)) {
        return 0;
    }
    drop(start);
    let _ = set.wait();
    0
}
