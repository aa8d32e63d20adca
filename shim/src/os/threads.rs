//! The threads of this process, from `/proc/self/task`.
//!
//! Capability sets (capset(2), the bounding and ambient sets) belong to a thread, not a
//! process: a thread that exists when the runner drops its capabilities keeps all of them.
//! [`require_single`] proves there is none: it is called right before confinement and
//! fails naming every other thread, so a future change that starts a thread too early (a
//! compile pool, a runtime, a ticker) fails Create loudly instead of leaving a privileged
//! thread beside the guest.

use std::path::Path;
use std::time::{Duration, Instant};

/// One thread of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub tid: u32,
    /// Its `comm` (e.g. `signals`, `rayon-worker`); empty when unreadable.
    pub name: String,
}

/// A process with more than one thread where only one may exist.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    #[error("reading /proc/self/task: {0}")]
    Read(#[source] std::io::Error),
    #[error(
        "{} threads exist where only one may (capabilities are per thread, so the others \
         would stay privileged): {}",
        .0.len(),
        .0.iter().map(|t| format!("{} ({})", t.tid, t.name)).collect::<Vec<_>>().join(", ")
    )]
    NotSingle(Vec<Thread>),
}

/// Every thread of the calling process.
pub fn list() -> Result<Vec<Thread>, ThreadsError> {
    list_in(Path::new("/proc/self/task"))
}

fn list_in(task_dir: &Path) -> Result<Vec<Thread>, ThreadsError> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(task_dir).map_err(ThreadsError::Read)? {
        let entry = entry.map_err(ThreadsError::Read)?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let name = std::fs::read_to_string(entry.path().join("comm"))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default();
        threads.push(Thread { tid, name });
    }
    threads.sort_by_key(|t| t.tid);
    Ok(threads)
}

/// How long threads that were joined may take to leave `/proc/self/task`: a joined
/// thread has finished running code but the kernel reaps it a moment later.
const EXITING_GRACE: Duration = Duration::from_millis(500);

/// Fails unless the calling thread is the only thread of its process (after giving
/// threads that are exiting [`EXITING_GRACE`] to go).
pub fn require_single() -> Result<(), ThreadsError> {
    let deadline = Instant::now() + EXITING_GRACE;
    loop {
        let threads = list()?;
        if threads.len() == 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ThreadsError::NotSingle(threads));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_thread_is_seen_and_named() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::Builder::new()
            .name("confine-probe".into())
            .spawn(move || {
                let _ = started_tx.send(());
                let _ = rx.recv();
            })
            .unwrap();
        // Named by then: std names a thread before it runs the closure.
        started.recv().unwrap();
        let threads = list().unwrap();
        assert!(threads.len() >= 2, "{threads:?}");
        assert!(
            threads.iter().any(|t| t.name == "confine-probe"),
            "{threads:?}"
        );
        let err = require_single().unwrap_err().to_string();
        assert!(err.contains("confine-probe"), "{err}");
        drop(tx);
        helper.join().unwrap();
    }
}
