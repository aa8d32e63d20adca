//! The server's open connections: the cap on them, what happens at the cap, and what an
//! accept error does.
//!
//! **The cap** is [`HttpConfig::max_connections`], lowered when the process's soft
//! `RLIMIT_NOFILE` leaves less room ([`connection_cap`]): containerd's default spec gives
//! a container 1024 descriptors, and the server keeps [`RESERVE`] plus one per
//! concurrency slot for itself and its guests (engine, stdio, a guest's files and
//! outgoing sockets).
//!
//! **At the cap** a new connection is accepted and the open connection that has waited
//! longest for a request head (a half-sent head, or a keep-alive connection idle between
//! requests) is closed to make room. A connection serving a request is never evicted.
//! Why: refusing new connections (or leaving them in the kernel's queue) at the cap
//! would let a few hundred slow clients hold the server until their header timeouts
//! fire, starving every healthy client; evicting the oldest waiting one lets a healthy
//! client, which sends its head at once, always get in, while a flood only pushes out
//! its own oldest connections. Keep-alive clients are built to reconnect when an idle
//! connection closes. Only when every open connection is serving a request does the
//! server stop accepting until one finishes (the kernel queues the new ones meanwhile;
//! the request timeout bounds the wait), as requests wait for a concurrency slot.
//!
//! **Accept errors** never end the server: a connection aborted before it was accepted
//! is skipped at once; running out of descriptors (EMFILE/ENFILE) or buffers closes the
//! oldest waiting connection and pauses accepting with a doubling back-off.
//!
//! [`HttpConfig::max_connections`]: super::HttpConfig::max_connections

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, Id, JoinSet};

use super::guard::ConnState;

/// Descriptors kept back from the connection cap for the server itself (engine, epoll,
/// stdio, listener, cache files), on top of one per concurrency slot for its guests.
pub(crate) const RESERVE: u64 = 128;
/// First pause after an accept error for lack of resources; doubles up to
/// [`MAX_BACKOFF`] while the errors go on.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The connection cap for a configured `max_connections` and `max_concurrency` under a
/// soft open-files limit `nofile` (`None`: unlimited): the configured cap, lowered to the
/// limit minus ([`RESERVE`] + `max_concurrency`) descriptors (at least half the limit).
pub(crate) fn connection_cap(
    max_connections: u32,
    max_concurrency: u32,
    nofile: Option<u64>,
) -> usize {
    let configured = u64::from(max_connections).max(1);
    let cap = match nofile {
        Some(limit) => {
            let reserve = RESERVE + u64::from(max_concurrency);
            configured.min(limit.saturating_sub(reserve).max(limit / 2).max(1))
        }
        None => configured,
    };
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// The process's soft `RLIMIT_NOFILE`, `None` when unlimited or unknown.
pub(crate) fn nofile_soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct passed, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// What to do after a failed accept.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AcceptFailure {
    /// The connection went away before it was accepted (or a signal): accept the next one.
    Skip,
    /// Out of descriptors or memory: make room and pause.
    Exhausted,
    /// Anything else: pause, then try again.
    Other,
}

impl AcceptFailure {
    pub(crate) fn of(error: &io::Error) -> Self {
        match error.raw_os_error() {
            Some(
                libc::ECONNABORTED
                | libc::EINTR
                | libc::EAGAIN
                | libc::EPROTO
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::EPERM,
            ) => AcceptFailure::Skip,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                AcceptFailure::Exhausted
            }
            _ if error.kind() == io::ErrorKind::ConnectionAborted => AcceptFailure::Skip,
            _ => AcceptFailure::Other,
        }
    }
}

/// The pause after the `failures`-th accept error in a row (1-based).
pub(crate) fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// One open connection, as the accept loop sees it.
struct Open {
    state: Arc<ConnState>,
    abort: AbortHandle,
}

/// The connection tasks and what the cap needs to know of each.
pub(crate) struct Connections {
    tasks: JoinSet<()>,
    open: HashMap<Id, Open>,
    cap: usize,
}

impl Connections {
    pub(crate) fn new(cap: usize) -> Self {
        Connections {
            tasks: JoinSet::new(),
            open: HashMap::new(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Whether another connection may be accepted: under the cap, or one can be evicted.
    pub(crate) fn can_accept(&self) -> bool {
        self.open.len() < self.cap || self.oldest_waiting().is_some()
    }

    /// Brings the open connections under the cap, evicting the oldest waiting ones;
    /// `false` (nothing evicted beyond what was waiting) when every open connection is
    /// serving a request. Checked when a connection is in hand, not only before
    /// accepting: a connection accepted while another still waited for its head may
    /// find, by the time it arrives, that one serving a request.
    pub(crate) fn make_room(&mut self) -> bool {
        while self.open.len() >= self.cap {
            if !self.evict_oldest_waiting() {
                return false;
            }
        }
        true
    }

    /// Runs `connection` (whose state is `state`) as a task, evicting first if at the cap.
    pub(crate) fn spawn(
        &mut self,
        state: Arc<ConnState>,
        connection: impl Future<Output = ()> + Send + 'static,
    ) {
        while self.open.len() >= self.cap && self.evict_oldest_waiting() {}
        let abort = self.tasks.spawn(connection);
        self.open.insert(abort.id(), Open { state, abort });
    }

    /// Closes the connection that has waited longest for a request head; `false` when
    /// every connection is serving a request.
    pub(crate) fn evict_oldest_waiting(&mut self) -> bool {
        let Some(id) = self.oldest_waiting() else {
            return false;
        };
        if let Some(open) = self.open.remove(&id) {
            open.abort.abort();
        }
        true
    }

    fn oldest_waiting(&self) -> Option<Id> {
        self.open
            .iter()
            .filter_map(|(id, open)| open.state.waiting_since().map(|since| (since, *id)))
            .min_by_key(|(since, _)| *since)
            .map(|(_, id)| id)
    }

    /// Waits for a connection task to end and forgets it; `None` when none is left.
    pub(crate) async fn join_next(&mut self) -> Option<()> {
        let id = match self.tasks.join_next_with_id().await? {
            Ok((id, ())) => id,
            Err(e) => {
                if e.is_panic() {
                    log::warn!("a connection task panicked: {e}");
                }
                e.id()
            }
        };
        self.open.remove(&id);
        Some(())
    }

    /// Whether a connection task is still running (or not yet reaped).
    pub(crate) fn has_tasks(&self) -> bool {
        !self.tasks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::guard::Tracked;
    use super::*;

    #[test]
    fn the_cap_fits_the_open_files_limit() {
        // containerd's default spec: 1024 descriptors, default concurrency 100.
        assert_eq!(connection_cap(1024, 100, Some(1024)), 1024 - 128 - 100);
        assert_eq!(connection_cap(1024, 100, Some(65536)), 1024);
        assert_eq!(connection_cap(1024, 100, None), 1024);
        assert_eq!(connection_cap(50, 100, Some(1024)), 50);
        // A reserve larger than the limit: half the limit.
        assert_eq!(connection_cap(1024, 1000, Some(1024)), 512);
        assert_eq!(connection_cap(1024, 100, Some(1)), 1);
        assert_eq!(connection_cap(1024, 100, Some(0)), 1);
        assert!(nofile_soft_limit().is_none_or(|limit| limit > 0));
    }

    #[test]
    fn accept_errors_are_classified_and_backed_off() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(
            AcceptFailure::of(&os(libc::ECONNABORTED)),
            AcceptFailure::Skip
        );
        assert_eq!(
            AcceptFailure::of(&os(libc::EMFILE)),
            AcceptFailure::Exhausted
        );
        assert_eq!(
            AcceptFailure::of(&os(libc::ENFILE)),
            AcceptFailure::Exhausted
        );
        assert_eq!(AcceptFailure::of(&os(libc::EBADF)), AcceptFailure::Other);
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(2), Duration::from_millis(20));
        assert_eq!(backoff(7), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_waiting_connection_is_evicted_never_a_busy_one() {
        let mut connections = Connections::new(3);
        let states: Vec<Arc<ConnState>> = (0..3)
            .map(|since| Arc::new(ConnState::new(since)))
            .collect();
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        for (i, state) in states.iter().enumerate() {
            let ended_tx = ended_tx.clone();
            connections.spawn(state.clone(), async move {
                // Reports its end when aborted (dropped) or finished.
                let _guard = scopeguard(move || {
                    let _ = ended_tx.send(i);
                });
                std::future::pending::<()>().await;
            });
        }
        // Let the tasks start (an unpolled task has no guard to drop yet).
        tokio::task::yield_now().await;
        states[0].request_started();
        assert!(connections.can_accept());
        connections.spawn(Arc::new(ConnState::new(10)), std::future::pending());
        assert_eq!(connections.open.len(), 3);
        assert_eq!(ended.recv().await, Some(1), "the oldest waiting one went");
        states[2].request_started();
        assert!(
            connections.can_accept(),
            "the newest one waits for its head"
        );
        let newest = Arc::new(ConnState::new(11));
        connections.spawn(newest.clone(), std::future::pending());
        newest.request_started();
        assert!(
            !connections.can_accept(),
            "every open connection serves a request"
        );
        assert!(!connections.evict_oldest_waiting());
        assert_eq!(connections.open.len(), 3);
    }

    #[tokio::test]
    async fn room_is_checked_when_a_connection_comes_not_only_before() {
        let mut connections = Connections::new(2);
        let states: Vec<Arc<ConnState>> = (0..2)
            .map(|since| Arc::new(ConnState::new(since)))
            .collect();
        for state in &states {
            connections.spawn(state.clone(), std::future::pending());
        }
        // Both wait for a head: the accept loop may accept.
        assert!(connections.can_accept());
        // Meanwhile both heads arrive: the accepted connection finds no room.
        states[0].request_started();
        states[1].request_started();
        assert!(!connections.make_room());
        assert_eq!(connections.open.len(), 2);
        // Once one waits again (its response sent), it gives way.
        drop(Tracked::new((), states[1].clone()));
        assert!(connections.make_room());
        assert_eq!(connections.open.len(), 1);
    }

    /// Runs `f` when dropped.
    fn scopeguard(f: impl FnOnce()) -> impl Drop {
        struct Guard<F: FnOnce()>(Option<F>);
        impl<F: FnOnce()> Drop for Guard<F> {
            fn drop(&mut self) {
                if let Some(f) = self.0.take() {
                    f();
                }
            }
        }
        Guard(Some(f))
    }
}
