//! Hands process exits to the lifecycle.
//!
//! The `containerd-shim` crate makes this process a child subreaper and reaps every child on
//! SIGCHLD, publishing `(pid, status)` on its monitor; nothing else may call `waitpid`. A
//! thread subscribed to that monitor forwards each exit to [`Containers::process_exited`],
//! on a thread of its own.

use std::sync::{Arc, Mutex, MutexGuard};

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
                    // Whose exit it is, at once; recording it waits for its output to be
                    // read (bounded) and for its container's lock (held through slow work
                    // such as a runc call): on a thread of its own, so neither holds up the
                    // exits of other containers. Exits of no container's process (runc's
                    // helpers, orphans) end here, without a thread.
                    let Some(pending) = containers.take_exit(pid as u32, event.exit_code as u32)
                    else {
                        continue;
                    };
                    // Taken by whichever runs it: the thread, or this loop if no thread starts.
                    let slot = Arc::new(Mutex::new(Some(pending)));
                    let (theirs, finishing) = (slot.clone(), containers.clone());
                    let spawned = std::thread::Builder::new()
                        .name(format!("exit-{pid}"))
                        .spawn(move || {
                            if let Some(pending) = lock(&theirs).take() {
                                finishing.finish_exit(pending);
                            }
                        });
                    if let Err(e) = spawned {
                        error!(
                            "recording the exit of pid {pid}: no thread ({e}); recording it here"
                        );
                        if let Some(pending) = lock(&slot).take() {
                            containers.finish_exit(pending);
                        }
                    }
                }
            }
        })
        .expect("spawn exits thread");
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
