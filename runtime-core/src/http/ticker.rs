//! The epoch ticker of an HTTP server: a thread that moves the engine's epoch every
//! [`EPOCH_TICK`] (so request deadlines hold even in a tight loop) and forwards the
//! [`Interrupter`]'s interrupt count to the server (so an interrupt from the signal
//! thread reaches the async accept loop within one tick).
//!
//! Only HTTP servers tick: a command's epoch moves only on interrupts, so it pays no
//! callback per tick.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use crate::Interrupter;

/// How often the epoch moves: the granularity of request timeouts and of the yield of a
/// spinning guest to the other requests.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The running ticker; dropping it stops and joins the thread.
pub(crate) struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts ticking `engine`; interrupt counts go to `interrupts`.
    pub(crate) fn start(
        engine: wasmtime::Engine,
        interrupter: Interrupter,
        interrupts: watch::Sender<u32>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wasmpod-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                    let count = interrupter.interrupts();
                    interrupts.send_if_modified(|seen| {
                        let changed = *seen != count;
                        *seen = count;
                        changed
                    });
                }
            })?;
        Ok(Ticker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
