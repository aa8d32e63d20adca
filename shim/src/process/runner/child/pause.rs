//! The pod sandbox's pause process (`containerd-shim-wasmpod-v1 __pause`).
//!
//! It is created inside the pod's namespaces (the shim enters them between fork and exec),
//! so it only has to exist: it holds the IPC, UTS and, when the pod shares one
//! (`shareProcessNamespace`), PID namespaces the pod's containers join through
//! `/proc/<pid>/ns/*`, reports ready, and sleeps until SIGTERM/SIGINT (exit 0). As the PID 1
//! of a shared PID namespace it reaps the orphans handed to it. Before it reports it is
//! confined like a runner ([`super::confine`]) with the sandbox spec's (sent by the shim in
//! its request) capabilities, limits and seccomp profile, and a seccomp
//! allowlist of the few calls it makes; it needs no file, so between the two halves of
//! that it pivots into an empty read-only tmpfs of its own mount namespace.

use std::io::{Read, Write};

use crate::os::{fd, mountns};
use crate::process::runner::protocol::{
    Failure, FailureKind, REQUEST_FD, RunnerRequest, RunnerStatus, START_FD, STATUS_FD,
};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use super::confine::{self, Role};
use super::failure;
use super::signals::reap_children;

/// Runs the pause role; returns the exit code.
pub fn main() -> i32 {
    crate::os::exec::name_process();
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGCHLD);
    // Blocked and taken with sigwait: delivered even to a PID-namespace init.
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    // SAFETY: the shim passes these three descriptors and nothing else owns them.
    let (request, mut status, mut start) = unsafe {
        (
            fd::inherited(REQUEST_FD),
            fd::inherited(STATUS_FD),
            fd::inherited(START_FD),
        )
    };
    let confined = RunnerRequest::read_from(request)
        .map_err(|e| Failure::new(FailureKind::Protocol, e))
        .and_then(|request| confine_pause(&request));
    let verdict = match &confined {
        Ok(()) => RunnerStatus::Ready {
            timing: Default::default(),
        },
        Err(failure) => RunnerStatus::from(failure.clone()),
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
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => reap_children(),
            _ => return 0,
        }
    }
}

/// Leaves the host's filesystem and confines the process as the sandbox spec says.
fn confine_pause(request: &RunnerRequest) -> Result<(), Failure> {
    let confinement = confine::begin(&request.spec, Role::Pause).map_err(failure::confine)?;
    // The working directory is the bundle: the empty root is mounted over it.
    mountns::enter_empty_root(std::path::Path::new(".")).map_err(|e| {
        Failure::new(
            FailureKind::Io,
            format!("sandbox: leaving the host's filesystem: {e}"),
        )
    })?;
    confinement.finish().map_err(failure::confine)
}
