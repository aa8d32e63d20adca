//! One request: wait for a concurrency slot, instantiate the guest in a fresh store, call
//! `wasi:http/incoming-handler.handle`, and turn what happened into a response.
//!
//! | what happened                                      | response |
//! |----------------------------------------------------|----------|
//! | the guest set a response                           | the guest's |
//! | the guest set an `error-code`                      | 500 |
//! | the guest trapped / returned without a response    | 500 (trap written to the container's stderr) |
//! | [`HttpConfig::request_timeout`](super::HttpConfig) passed (running or waiting for a slot) | 504 / 503 |
//! | the server was stopped (second interrupt, drain ran out) | 503 |
//! | no `Host` header (HTTP/1.0)                        | 400 |
//! | `Content-Length` over [`HttpConfig::max_body_size`](super::HttpConfig) (the guest never runs) | 413, connection closed |
//! | a body of unknown length passed the cap before the guest answered | 413, connection closed |
//!
//! (A head over the header cap gets hyper's 431 before reaching here.)
//!
//! The guest runs in its own tokio task holding the concurrency permit, so it may go on
//! streaming the body after the response head is sent, and the drain waits for it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::{Request, Response, StatusCode, header};
use tokio::sync::{Semaphore, oneshot};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::HttpHost;
use super::body::{CappedBody, Overflow};
use super::host::RequestTemplate;
use crate::Interrupter;
use crate::interrupt::InterruptedBySignal;

/// Everything the requests of one server share.
pub(crate) struct Handler {
    pub(crate) name: String,
    pub(crate) engine: wasmtime::Engine,
    pub(crate) pre: ProxyPre<HttpHost>,
    pub(crate) template: RequestTemplate,
    /// One permit per request that may run; the drain takes them all.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) request_timeout: Duration,
    /// Largest request body in bytes (see [`super::body`]).
    pub(crate) max_body_size: u64,
    /// Set when running requests must end now (second interrupt, drain out of time).
    pub(crate) stop_now: Arc<AtomicBool>,
    pub(crate) interrupter: Interrupter,
}

/// The trap raised in a guest whose request ran out of time.
#[derive(Debug)]
struct RequestTimedOut;

impl std::fmt::Display for RequestTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request timed out")
    }
}

impl std::error::Error for RequestTimedOut {}

/// Why a guest ended without the response it should have sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Trapped, failed to instantiate, or returned without setting the response.
    Guest,
    TimedOut,
    Stopped,
}

impl Handler {
    /// Serves one request (hyper's service function).
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<HyperOutgoingBody>, Infallible> {
        let deadline = Instant::now() + self.request_timeout;
        if request.uri().authority().is_none() && !request.headers().contains_key(header::HOST) {
            return Ok(plain(StatusCode::BAD_REQUEST, "missing Host header\n"));
        }
        if request.body().size_hint().lower() > self.max_body_size {
            return Ok(too_large(self.max_body_size));
        }
        // Only a body of unknown length can pass the cap while the guest reads it.
        let overflow = request
            .body()
            .size_hint()
            .exact()
            .is_none()
            .then(|| Arc::new(Overflow::default()));
        let overflowed = || overflow.as_ref().is_some_and(|o| o.happened());
        let request =
            request.map(|body| CappedBody::new(body, self.max_body_size, overflow.clone()));
        let permit = match tokio::time::timeout_at(
            deadline.into(),
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => {
                return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "server stopping\n"));
            }
            Err(_elapsed) => {
                return Ok(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no free slot within the request timeout\n",
                ));
            }
        };
        let (sender, receiver) = oneshot::channel();
        let guest = tokio::spawn({
            let handler = self.clone();
            async move {
                let _permit = permit;
                let run = handler.run_guest(request, sender, deadline);
                let outcome = match tokio::time::timeout_at(deadline.into(), run).await {
                    Ok(outcome) => outcome,
                    Err(_elapsed) => Err(RequestTimedOut.into()),
                };
                outcome.map_err(|e| handler.failure(&e))
            }
        });
        let answer = receiver.await;
        if overflowed() {
            // The guest answered (or failed) after its body was cut at the cap.
            return Ok(too_large(self.max_body_size));
        }
        match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Ok(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the handler failed: {code:?}\n"),
            )),
            Err(_no_response) => Ok(match guest.await {
                _ if overflowed() => too_large(self.max_body_size),
                Ok(Err(Failure::TimedOut)) => {
                    plain(StatusCode::GATEWAY_TIMEOUT, "the handler timed out\n")
                }
                Ok(Err(Failure::Stopped)) => {
                    plain(StatusCode::SERVICE_UNAVAILABLE, "server stopping\n")
                }
                Ok(Err(Failure::Guest)) => {
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed\n")
                }
                Ok(Ok(())) => {
                    self.template.log_line(&format!(
                        "{}: the handler returned without a response",
                        self.name
                    ));
                    plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the handler returned without a response\n",
                    )
                }
                Err(join) => {
                    self.template
                        .log_line(&format!("{}: request task failed: {join}", self.name));
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed\n")
                }
            }),
        }
    }

    /// Instantiates the guest in a fresh store and calls its handler.
    async fn run_guest(
        &self,
        request: Request<CappedBody>,
        sender: oneshot::Sender<
            Result<
                Response<HyperOutgoingBody>,
                wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
            >,
        >,
        deadline: Instant,
    ) -> wasmtime::Result<()> {
        let mut store = Store::new(&self.engine, self.template.host()?);
        store.limiter(|host| &mut host.limits);
        let stop_now = self.stop_now.clone();
        let interrupter = self.interrupter.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if stop_now.load(Ordering::SeqCst) {
                let signal = interrupter.requested().unwrap_or_default();
                return Err(InterruptedBySignal(signal).into());
            }
            if Instant::now() >= deadline {
                return Err(RequestTimedOut.into());
            }
            // Let the other requests on this worker run between ticks.
            Ok(UpdateDeadline::Yield(1))
        });
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let response = store.data_mut().http().new_response_outparam(sender)?;
        let proxy = self.pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, request, response)
            .await
    }

    /// Classifies a guest's error and writes it to the container's stderr.
    fn failure(&self, error: &wasmtime::Error) -> Failure {
        if error.downcast_ref::<RequestTimedOut>().is_some() {
            self.template.log_line(&format!(
                "{}: request timed out after {:?}",
                self.name, self.request_timeout
            ));
            Failure::TimedOut
        } else if error.downcast_ref::<InterruptedBySignal>().is_some() {
            Failure::Stopped
        } else {
            self.template
                .log_line(&format!("{}: request trapped: {error:?}", self.name));
            Failure::Guest
        }
    }
}

/// 413 for a body over `cap` bytes; the rest of the body is not read, so the connection
/// closes.
fn too_large(cap: u64) -> Response<HyperOutgoingBody> {
    let mut response = plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than {cap} bytes\n"),
    );
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// A short plain-text response made by the host.
fn plain(status: StatusCode, text: &str) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
