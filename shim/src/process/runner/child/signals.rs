//! Turning termination signals into guest interrupts.
//!
//! The signals get a no-op handler (so the kernel delivers them even when the runner is the
//! init of a PID namespace, which drops signals left at their default action), are blocked
//! in every thread, and are taken by one thread with `sigwait`. That thread interrupts the
//! guest through wasmtime's epoch and, should the guest sit in a blocking host call, ends
//! the process after a short grace. A wasi:http server drains on the first signal (it
//! stops accepting and finishes in-flight requests) and is stopped by the second.
//!
//! The runner is often PID 1 of its container's PID namespace: processes orphaned there
//! are handed to it, so the same thread reaps on SIGCHLD (a guest has no process API, so
//! the runner never waits for a child of its own).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, pthread_sigmask, signal};
use wasmpod_runtime_core::Interrupter;

/// How long a guest blocked in a host call (sleep, read) has to return after an interrupt.
pub const BLOCKED_GUEST_GRACE: Duration = Duration::from_millis(20);

const TERMINATING: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The guest signals go to once it runs.
#[derive(Clone)]
struct Target {
    interrupter: Interrupter,
    /// A wasi:http server drains on the first signal instead of stopping.
    drains: bool,
}

/// Where signals go once a guest runs.
#[derive(Clone, Default)]
pub struct Interrupts {
    target: Arc<Mutex<Option<Target>>>,
}

impl Interrupts {
    /// Sends later signals to the guest run by `interrupter`; `drains` when the guest is an
    /// HTTP server whose first signal means "stop accepting, finish in-flight requests".
    pub fn attach(&self, interrupter: Interrupter, drains: bool) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(Target {
            interrupter,
            drains,
        });
    }
}

extern "C" fn ignore(_: libc::c_int) {}

/// Collects every exited child (orphans handed to a PID-namespace init).
pub fn reap_children() {
    loop {
        // SAFETY: waitpid with a null status pointer only reaps.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

/// The signals taken by the signal thread: the terminating ones and SIGCHLD.
fn terminating() -> SigSet {
    let mut set = SigSet::empty();
    for sig in TERMINATING.into_iter().chain([Signal::SIGCHLD]) {
        set.add(sig);
    }
    set
}

/// Installs the handlers and blocks the signals (every thread made later inherits the
/// mask). Call before any other thread exists. Until [`Interrupts::start`] the signals
/// stay pending: the runner is confined on a single thread, so the signal thread is only
/// started once that is done, and then takes what arrived meanwhile.
pub fn install() -> Interrupts {
    let set = terminating();
    for sig in TERMINATING.into_iter().chain([Signal::SIGCHLD]) {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        let _ = unsafe { signal(sig, SigHandler::Handler(ignore)) };
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    Interrupts::default()
}

impl Interrupts {
    /// Starts the signal thread: before a guest is attached a signal ends the runner with
    /// 128 + its number.
    pub fn start(&self) {
        spawn_signal_thread(terminating(), self.target.clone());
    }
}

fn spawn_signal_thread(set: SigSet, target: Arc<Mutex<Option<Target>>>) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let Ok(sig) = set.wait() else { continue };
                if sig == Signal::SIGCHLD {
                    reap_children();
                    continue;
                }
                let attached = target.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let Some(Target {
                    interrupter,
                    drains,
                }) = attached
                else {
                    std::process::exit(128 + sig as i32);
                };
                interrupter.interrupt(sig as i32);
                if drains && interrupter.interrupts() == 1 {
                    // The server drains and returns on its own (within its drain timeout).
                    continue;
                }
                std::thread::sleep(BLOCKED_GUEST_GRACE);
                let first = interrupter.requested().unwrap_or(sig as i32);
                std::process::exit(128 + first);
            }
        })
        .expect("spawn signal thread");
}
