//! Hands process exits to the lifecycle.
//!
//! The `containerd-shim` crate makes this process a child subreaper and reaps every child on
//! SIGCHLD, publishing `(pid, status)` on its monitor; nothing else may call `waitpid`. A
//! thread subscribed to that monitor forwards each exit to [`Containers::process_exited`],
//! on a thread of its own.

use std::sync::Arc;

use containerd_shim::monitor::{Subject, Topic, monitor_subscribe};
use log::error;

use crate::lifecycle::Containers;

/// Starts the forwarding thread. Subscribe happens before any container exists, so no exit
/// can be missed.
pub fn forward_exits(containers: Arc<Containers>) {
    let subscription = match monitor_subscribe(Topic::Pid) {
        Ok(subscription) => subscription,
        Err(e) => {
            error!("subscribing to process exits failed: {e}");
            return;
        }
    };
    std::thread::Builder::new()
        .name("exits".into())
        .spawn(move || {
            for event in subscription.rx.iter() {
                if let Subject::Pid(pid) = event.subject {
                    // A thread per exit: recording one waits for its output to be read
                    // (bounded) and for its container's lock (held through slow work such as
                    // a runc call); neither may hold up the exits of other containers.
                    let containers = containers.clone();
                    let (pid, status) = (pid as u32, event.exit_code as u32);
                    let spawned = std::thread::Builder::new()
                        .name(format!("exit-{pid}"))
                        .spawn(move || containers.process_exited(pid, status));
                    if let Err(e) = spawned {
                        error!("recording the exit of pid {pid}: no thread: {e}");
                    }
                }
            }
        })
        .expect("spawn exits thread");
}
