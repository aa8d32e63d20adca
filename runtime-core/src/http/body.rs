//! The request body as the guest reads it, capped at [`HttpConfig::max_body_size`].
//!
//! A `Content-Length` over the cap is refused before anything is read (see
//! [`super::handle`]: 413 at once, the guest never runs). A body of unknown length
//! (chunked) is counted as the guest reads it: the frame that passes the cap becomes the
//! error `HTTP-request-body-size` for the guest, and the request's [`Overflow`] flag tells
//! the handler to answer 413 instead of whatever the guest makes of the error. The wrapper
//! lives inside the box wasmtime-wasi-http makes of every body anyway: no allocation of its
//! own, one subtraction per frame; the flag is allocated only for bodies of unknown length.
//!
//! [`HttpConfig::max_body_size`]: super::HttpConfig::max_body_size

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Set when a body of unknown length went past the cap.
#[derive(Debug, Default)]
pub(crate) struct Overflow(AtomicBool);

impl Overflow {
    pub(crate) fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// hyper's request body, at most `cap` bytes of it.
pub(crate) struct CappedBody {
    inner: Incoming,
    cap: u64,
    left: u64,
    overflow: Option<Arc<Overflow>>,
}

impl CappedBody {
    pub(crate) fn new(inner: Incoming, cap: u64, overflow: Option<Arc<Overflow>>) -> Self {
        CappedBody {
            inner,
            cap,
            left: cap,
            overflow,
        }
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > this.left {
                this.left = 0;
                if let Some(overflow) = &this.overflow {
                    overflow.0.store(true, Ordering::Relaxed);
                }
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                    Some(this.cap),
                ))));
            }
            this.left -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
