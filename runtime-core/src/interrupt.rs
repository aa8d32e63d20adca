//! Stopping a running guest from another thread.
//!
//! The engine runs with epoch interruption; every store's deadline is one epoch ahead, and
//! the epoch only moves when [`Interrupter::interrupt`] is called. The guest then traps at
//! its next loop back-edge or function entry (microseconds, even in a tight loop), and the
//! run ends as [`crate::ExitStatus::Interrupted`] with the signal that asked for it.
//!
//! An HTTP server reads interrupts differently (see [`crate::http`]): it also counts them
//! ([`Interrupter::interrupts`]), drains on the first and stops at once on the second.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use wasmtime::Engine;

/// A handle that stops the guests of one engine on behalf of a signal.
#[derive(Clone)]
pub struct Interrupter {
    engine: Engine,
    signal: Arc<AtomicI32>,
    count: Arc<AtomicU32>,
}

impl std::fmt::Debug for Interrupter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupter")
            .field("signal", &self.requested())
            .finish()
    }
}

impl Interrupter {
    pub(crate) fn new(engine: Engine) -> Self {
        Interrupter {
            engine,
            signal: Arc::new(AtomicI32::new(0)),
            count: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Asks the running guest to stop because of `signal` (e.g. `libc::SIGTERM` = 15).
    /// Safe to call from any thread, any number of times; the first signal wins.
    pub fn interrupt(&self, signal: i32) {
        let _ = self
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
        self.engine.increment_epoch();
    }

    /// How many times [`Interrupter::interrupt`] was called.
    pub fn interrupts(&self) -> u32 {
        self.count.load(Ordering::SeqCst)
    }

    /// The signal an interrupt was requested for, if any.
    pub fn requested(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
}

/// The trap a store's epoch callback raises once an interrupt was requested.
#[derive(Debug)]
pub(crate) struct InterruptedBySignal(pub i32);

impl std::fmt::Display for InterruptedBySignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "guest interrupted by signal {}", self.0)
    }
}

impl std::error::Error for InterruptedBySignal {}
