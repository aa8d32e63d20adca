//! The server's life: bind (at prepare time, see [`bind`]), accept until the first
//! interrupt, drain, stop.
//!
//! One multi-threaded tokio runtime runs the accept loop, one task per connection (hyper
//! HTTP/1.1, keep-alive) and one task per request's guest ([`super::handle`]). The first
//! interrupt closes the listener (new connections are refused), asks every connection to
//! shut down gracefully (an idle keep-alive connection closes now, a busy one after its
//! response), then waits for the connections and for every concurrency slot to come back.
//!
//! Hostile clients: each connection's socket is [`Guarded`] (header-read and idle
//! deadlines), hyper refuses a head over [`HttpConfig::max_header_size`] with 431, the
//! handler a body over [`HttpConfig::max_body_size`] with 413, and the open connections
//! are capped ([`Connections`]: at the cap the one waiting longest for a head is evicted).
//! Nothing of this allocates or locks per request: the hyper builder is made once, the
//! timer once per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::conns::{self, AcceptFailure, Connections};
use super::guard::{ConnState, Guarded, Timeouts, Tracked, nanos_since};
use super::handle::Handler;
use super::host::RequestTemplate;
use super::ticker::Ticker;
use super::{HttpConfig, HttpHost};
use crate::{Error, ExitStatus, Interrupter, Result, WasiConfig};

/// Pending connections the kernel queues for the server (tokio's default; std's is 128).
const LISTEN_BACKLOG: libc::c_int = 1024;

/// Binds and listens on the server's address (non-blocking, for [`serve`]).
pub(crate) fn bind(http: &HttpConfig) -> Result<std::net::TcpListener> {
    let address = SocketAddr::new(http.address, http.port);
    let bind_error = |source| Error::HttpBind { address, source };
    let listener = std::net::TcpListener::bind(address).map_err(bind_error)?;
    // SAFETY: listen(2) on a socket this function owns; a second listen only resizes the queue.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(bind_error(std::io::Error::last_os_error()));
    }
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok(listener)
}

/// Serves `pre` on `listener` with the WASI surface of `config` until interrupted (see
/// [`crate::http`]).
pub(crate) fn serve(
    name: &str,
    engine: &wasmtime::Engine,
    pre: ProxyPre<HttpHost>,
    listener: std::net::TcpListener,
    config: WasiConfig,
    http: &HttpConfig,
    interrupter: &Interrupter,
) -> Result<ExitStatus> {
    let runtime_error = |e: std::io::Error| Error::HttpServer {
        name: name.to_owned(),
        message: format!("starting the server runtime: {e}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .enable_time()
        .thread_name("wasmpod-http")
        .build()
        .map_err(runtime_error)?;
    let max_concurrency = http.max_concurrency.max(1);
    let handler = Arc::new(Handler {
        name: name.to_owned(),
        engine: engine.clone(),
        pre,
        template: RequestTemplate::new(config)?,
        slots: Arc::new(Semaphore::new(max_concurrency as usize)),
        request_timeout: http.request_timeout,
        max_body_size: http.max_body_size,
        stop_now: Arc::new(AtomicBool::new(false)),
        interrupter: interrupter.clone(),
    });
    let (interrupts_tx, interrupts) = watch::channel(0);
    let ticker =
        Ticker::start(engine.clone(), interrupter.clone(), interrupts_tx).map_err(runtime_error)?;
    let address = SocketAddr::new(http.address, http.port);
    let status = runtime.block_on(async {
        let listener = TcpListener::from_std(listener)
            .map_err(|source| Error::HttpBind { address, source })?;
        log::info!(
            "{name}: serving wasi:http on {}",
            listener.local_addr().unwrap_or(address)
        );
        Ok::<_, Error>(run(listener, &handler, max_concurrency, http, interrupts).await)
    });
    // Requests still running (second interrupt, drain out of time) are trapped at the next
    // epoch tick or dropped with the runtime; nothing waits for them.
    handler.stop_now.store(true, Ordering::SeqCst);
    runtime.shutdown_background();
    drop(ticker);
    status
}

/// What every connection of a server shares: made once, not per connection or request.
struct ConnSettings {
    builder: http1::Builder,
    timeouts: Timeouts,
    /// Origin of the connections' `waiting_since` times.
    epoch: Instant,
}

/// Pause before looking again when every open connection is serving a request at the cap.
const FULL_RECHECK: std::time::Duration = super::EPOCH_TICK;

/// Accepts until the first interrupt, then drains; returns how the server ended.
async fn run(
    listener: TcpListener,
    handler: &Arc<Handler>,
    max_concurrency: u32,
    http: &HttpConfig,
    mut interrupts: watch::Receiver<u32>,
) -> ExitStatus {
    let (stopping_tx, stopping) = watch::channel(false);
    let nofile = conns::nofile_soft_limit();
    let mut connections = Connections::new(conns::connection_cap(
        http.max_connections,
        max_concurrency,
        nofile,
    ));
    if connections.cap() < http.max_connections as usize {
        log::info!(
            "{}: at most {} open connections (soft open-files limit {} minus {} kept for the server and its guests)",
            handler.name,
            connections.cap(),
            nofile.unwrap_or_default(),
            conns::RESERVE + u64::from(max_concurrency),
        );
    }
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        // The deadlines are Guarded's (see super::guard for why not hyper's).
        .header_read_timeout(None)
        .max_header_size(http.max_header_size as usize);
    let settings = Arc::new(ConnSettings {
        builder,
        timeouts: Timeouts {
            header_read: http.header_read_timeout,
            idle: http.idle_timeout,
        },
        epoch: Instant::now(),
    });
    // Accept errors in a row, and when accepting may go on after the last one.
    let mut failures = 0u32;
    let mut paused_until: Option<Instant> = None;
    // A connection accepted when every open one turned out to be serving a request: it
    // waits here, unserved, until one ends or waits for a head (as it would have in the
    // kernel's queue), and nothing more is accepted meanwhile.
    let mut parked: Option<tokio::net::TcpStream> = None;
    let start = |stream: tokio::net::TcpStream, connections: &mut Connections| {
        let accepted = Instant::now();
        let state = Arc::new(ConnState::new(nanos_since(settings.epoch, accepted)));
        let connection = connection(
            stream,
            accepted,
            state.clone(),
            handler.clone(),
            settings.clone(),
            stopping.clone(),
        );
        connections.spawn(state, connection);
    };
    if *interrupts.borrow_and_update() == 0 {
        loop {
            if parked.is_some()
                && connections.make_room()
                && let Some(stream) = parked.take()
            {
                start(stream, &mut connections);
            }
            let accepting = parked.is_none() && paused_until.is_none() && connections.can_accept();
            let wake_at = paused_until.unwrap_or_else(|| Instant::now() + FULL_RECHECK);
            tokio::select! {
                accepted = listener.accept(), if accepting => match accepted {
                    Ok((stream, _peer)) => {
                        failures = 0;
                        let _ = stream.set_nodelay(true);
                        // `accepting` was decided before this connection came: the
                        // connections waiting for a head then may be serving one now.
                        if connections.make_room() {
                            start(stream, &mut connections);
                        } else {
                            parked = Some(stream);
                        }
                    }
                    Err(e) => {
                        let failure = AcceptFailure::of(&e);
                        if failure == AcceptFailure::Skip {
                            log::debug!("{}: accept: {e}", handler.name);
                            continue;
                        }
                        if failure == AcceptFailure::Exhausted {
                            // Descriptors or memory: the oldest waiting client gives way.
                            connections.evict_oldest_waiting();
                        }
                        failures = failures.saturating_add(1);
                        if failures == 1 {
                            log::warn!("{}: accept failed: {e}; backing off", handler.name);
                        }
                        paused_until = Some(Instant::now() + conns::backoff(failures));
                    }
                },
                () = tokio::time::sleep_until(wake_at), if !accepting => paused_until = None,
                Some(()) = connections.join_next(), if connections.has_tasks() => {}
                _ = interrupts.changed() => break,
            }
        }
    }
    drop(listener);
    drop(parked);
    let _ = stopping_tx.send(true);
    let signal = handler.interrupter.requested().unwrap_or_default();
    log::info!("{}: interrupted, draining", handler.name);

    let drained = async {
        while connections.join_next().await.is_some() {}
        // Every slot back: no guest task is left, even one streaming a body.
        let _ = handler.slots.acquire_many(max_concurrency).await;
    };
    let second_interrupt = async {
        let _ = interrupts.wait_for(|count| *count >= 2).await;
    };
    tokio::select! {
        () = drained => ExitStatus::Exited(0),
        () = tokio::time::sleep(http.drain_timeout) => {
            handler.template.log_line(&format!(
                "{}: drain timeout ({:?}) passed, stopping the requests still running",
                handler.name, http.drain_timeout
            ));
            ExitStatus::Interrupted { signal }
        }
        () = second_interrupt => ExitStatus::Interrupted { signal },
    }
}

/// Serves one connection until the client closes it, a deadline passes (see
/// [`super::guard`]), it is evicted (the task is aborted) or the server stops.
async fn connection(
    stream: tokio::net::TcpStream,
    accepted: Instant,
    state: Arc<ConnState>,
    handler: Arc<Handler>,
    settings: Arc<ConnSettings>,
    mut stopping: watch::Receiver<bool>,
) {
    let io = Guarded::new(
        stream,
        state.clone(),
        settings.timeouts,
        settings.epoch,
        accepted,
    );
    let service = service_fn(move |request| {
        state.request_started();
        let state = state.clone();
        let handler = handler.clone();
        async move {
            let response = handler.handle(request).await?;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, state)))
        }
    });
    let conn = settings.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                log::debug!("connection ended: {e}");
            }
            return;
        }
        _ = stopping.wait_for(|stopping| *stopping) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        log::debug!("connection ended while draining: {e}");
    }
}
