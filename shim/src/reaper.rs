//! Hands process exits to the lifecycle.
//!
//! The `containerd-shim` crate makes this process a child subreaper and reaps every child on
//! SIGCHLD, publishing `(pid, status)` on its monitor; nothing else may call `waitpid`. A
//! thread subscribed to that monitor forwards each exit to [`Containers::process_exited`].

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
                    containers.process_exited(pid as u32, event.exit_code as u32);
                }
            }
        })
        .expect("spawn exits thread");
}
