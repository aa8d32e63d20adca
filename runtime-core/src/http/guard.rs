//! The deadlines of one connection: a client gets [`HttpConfig::header_read_timeout`] to
//! send a request head and a keep-alive connection [`HttpConfig::idle_timeout`] to start
//! its next request; past either the connection is closed (the peer sees EOF).
//!
//! A connection is in one of three phases, kept in its [`ConnState`]:
//!
//! | phase  | begins                                   | deadline              |
//! |--------|------------------------------------------|-----------------------|
//! | `HEAD` | accept; first byte after an idle wait    | header read timeout   |
//! | `BUSY` | hyper parsed the head (service called)   | none: the request timeout bounds the guest |
//! | `IDLE` | the response body was dropped (done)     | idle timeout          |
//!
//! The deadlines are enforced by [`Guarded`], the connection's socket as hyper sees it:
//! a read that would block past the deadline fails with `TimedOut`, so hyper ends the
//! connection. The service marks `BUSY` ([`ConnState::request_started`]) and the
//! response body ([`Tracked`]) marks `IDLE` when hyper drops it.
//!
//! Why not hyper's own `header_read_timeout`: hyper restarts that timer as soon as a
//! keep-alive connection goes idle, so it also is the idle timeout and the two cannot
//! differ; and it resets a timer entry (a lock in tokio's timer wheel) on every request.
//! Here each connection owns one timer, armed lazily: it is moved only when the new
//! deadline is earlier than the armed one, or when it fires before the current
//! deadline, so a busy keep-alive connection pays two clock reads and a few atomic
//! stores per request, and a timer operation at most about once per timeout period.
//!
//! [`HttpConfig::header_read_timeout`]: super::HttpConfig::header_read_timeout
//! [`HttpConfig::idle_timeout`]: super::HttpConfig::idle_timeout

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// The two deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
}

/// What the server knows of one connection: its phase, and since when it has been
/// waiting for a request head (for eviction at the connection cap).
#[derive(Debug)]
pub(crate) struct ConnState {
    phase: AtomicU8,
    /// Nanoseconds after the server's epoch at which the connection began waiting for
    /// its current request head: its accept, or the end of its previous response.
    waiting_since: AtomicU64,
}

impl ConnState {
    /// A connection accepted at `since` (nanoseconds after the server's epoch).
    pub(crate) fn new(since: u64) -> Self {
        ConnState {
            phase: AtomicU8::new(HEAD),
            waiting_since: AtomicU64::new(since),
        }
    }

    /// hyper parsed a request head: no connection deadline until the response is done.
    pub(crate) fn request_started(&self) {
        self.phase.store(BUSY, Ordering::Relaxed);
    }

    /// Since when the connection has been waiting for a request head, or `None` while it
    /// is serving one.
    pub(crate) fn waiting_since(&self) -> Option<u64> {
        (self.phase.load(Ordering::Relaxed) != BUSY)
            .then(|| self.waiting_since.load(Ordering::Relaxed))
    }
}

/// Nanoseconds from `epoch` to `now` (saturating; a server runs far less than 584 years).
pub(crate) fn nanos_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// A connection's socket with the header-read and idle deadlines (see the module doc).
pub(crate) struct Guarded<S> {
    io: S,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    epoch: Instant,
    /// The phase as this side last saw it.
    seen: u8,
    /// When the current phase runs out; `None` while busy.
    deadline: Option<Instant>,
    /// One timer for the connection's whole life, armed at `armed`.
    timer: Pin<Box<Sleep>>,
    armed: Instant,
}

impl<S> Guarded<S> {
    /// Wraps a socket accepted at `accepted` (the header deadline runs from there).
    pub(crate) fn new(
        io: S,
        state: Arc<ConnState>,
        timeouts: Timeouts,
        epoch: Instant,
        accepted: Instant,
    ) -> Self {
        let deadline = accepted + timeouts.header_read;
        Guarded {
            io,
            state,
            timeouts,
            epoch,
            seen: HEAD,
            deadline: Some(deadline),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            armed: deadline,
        }
    }

    /// Catches up with a phase the service or the response body set.
    fn sync(&mut self) {
        let phase = self.state.phase.load(Ordering::Relaxed);
        if phase == self.seen {
            return;
        }
        self.seen = phase;
        match phase {
            BUSY => self.deadline = None,
            IDLE => {
                let now = Instant::now();
                self.state
                    .waiting_since
                    .store(nanos_since(self.epoch, now), Ordering::Relaxed);
                self.set_deadline(now + self.timeouts.idle);
            }
            _ => {}
        }
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn on_bytes(&mut self) {
        self.sync();
        if self.seen == IDLE {
            self.seen = HEAD;
            self.state.phase.store(HEAD, Ordering::Relaxed);
            self.set_deadline(Instant::now() + self.timeouts.header_read);
        }
    }

    /// Moves the deadline; the timer only when it would otherwise fire too late.
    fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
        if deadline < self.armed {
            self.timer.as_mut().reset(deadline);
            self.armed = deadline;
        }
    }

    /// Whether `deadline` has passed; otherwise the timer will wake the task by then.
    fn expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            // Fired at `armed`, which is never later than the deadline.
            if self.armed >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
            self.armed = deadline;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.sync();
                let deadline = this.deadline;
                match deadline {
                    Some(deadline) if this.expired(cx, deadline) => {
                        let what = if this.seen == IDLE {
                            "idle timeout"
                        } else {
                            "header read timeout"
                        };
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    /// hyper flushes after every response and, without its own header timer, does not
    /// read again until the socket is readable: arm the idle deadline here, so its timer
    /// wakes the connection (whose next read then fails with the timeout).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.sync();
        if let Some(deadline) = this.deadline
            && this.expired(cx, deadline)
        {
            cx.waker().wake_by_ref();
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that marks its connection idle when hyper is done with it.
pub(crate) struct Tracked<B> {
    body: B,
    state: Arc<ConnState>,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, state: Arc<ConnState>) -> Self {
        Tracked { body, state }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.state.phase.store(IDLE, Ordering::Relaxed);
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    //! Real time with short timeouts: each bound checks the mechanism (not before the
    //! deadline, and not much after), never speed.
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_millis(200),
        idle: Duration::from_millis(600),
    };
    /// Slack for a loaded machine past a deadline.
    const LATE: Duration = Duration::from_secs(10);

    fn guarded(state: &Arc<ConnState>) -> (Guarded<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1024);
        let now = Instant::now();
        (
            Guarded::new(server, state.clone(), TIMEOUTS, now, now),
            client,
        )
    }

    /// Reads until the guard's error; returns how long that took and the error's text.
    async fn time_out(io: &mut Guarded<DuplexStream>) -> (Duration, String) {
        let started = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(LATE * 2, io.read(&mut buf)).await {
                Err(_) => panic!("no timeout within {:?}", LATE * 2),
                Ok(Ok(0)) => panic!("EOF instead of a timeout"),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
                    return (started.elapsed(), e.to_string());
                }
            }
        }
    }

    fn assert_about(took: Duration, want: Duration) {
        assert!(
            took >= want && took < want + LATE,
            "took {took:?}, want {want:?}"
        );
    }

    #[tokio::test]
    async fn a_new_connection_gets_the_header_timeout_even_while_sending() {
        let state = Arc::new(ConnState::new(0));
        let (mut io, mut client) = guarded(&state);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (took, what) = time_out(&mut io).await;
        assert!(took < TIMEOUTS.header_read + LATE, "took {took:?}");
        assert_eq!(what, "header read timeout");
    }

    #[tokio::test]
    async fn busy_has_no_deadline_and_idle_gets_the_idle_timeout() {
        let state = Arc::new(ConnState::new(0));
        let (mut io, _client) = guarded(&state);
        state.request_started();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(TIMEOUTS.idle * 2, io.read(&mut buf)).await;
        assert!(read.is_err(), "a busy connection timed out: {read:?}");
        assert_eq!(state.waiting_since(), None);

        drop(Tracked::new((), state.clone()));
        let (took, what) = time_out(&mut io).await;
        assert_about(took, TIMEOUTS.idle);
        assert_eq!(what, "idle timeout");
        assert!(state.waiting_since().is_some());
    }

    #[tokio::test]
    async fn a_request_after_an_idle_wait_gets_the_header_timeout_from_its_first_byte() {
        let state = Arc::new(ConnState::new(0));
        let (mut io, mut client) = guarded(&state);
        state.request_started();
        drop(Tracked::new((), state.clone()));
        // Idle past the header timeout: still open.
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(TIMEOUTS.header_read * 2, io.read(&mut buf)).await;
        assert!(read.is_err(), "closed before the idle timeout: {read:?}");
        client.write_all(b"G").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        let (took, what) = time_out(&mut io).await;
        assert_about(took, TIMEOUTS.header_read);
        assert_eq!(what, "header read timeout");
    }
}
