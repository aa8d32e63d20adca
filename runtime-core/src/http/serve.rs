//! The server's life: bind (at prepare time, see [`bind`]), accept until the first
//! interrupt, drain, stop.
//!
//! One multi-threaded tokio runtime runs the accept loop, one task per connection (hyper
//! HTTP/1.1, keep-alive) and one task per request's guest ([`super::handle`]). The first
//! interrupt closes the listener (new connections are refused), asks every connection to
//! shut down gracefully (an idle keep-alive connection closes now, a busy one after its
//! response), then waits for the connections and for every concurrency slot to come back.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

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

/// Accepts until the first interrupt, then drains; returns how the server ended.
async fn run(
    listener: TcpListener,
    handler: &Arc<Handler>,
    max_concurrency: u32,
    http: &HttpConfig,
    mut interrupts: watch::Receiver<u32>,
) -> ExitStatus {
    let (stopping_tx, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    if *interrupts.borrow_and_update() == 0 {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        connections.spawn(connection(stream, handler.clone(), stopping.clone()));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        log::warn!("{}: accept failed: {e}", handler.name);
                        tokio::time::sleep(super::EPOCH_TICK).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = interrupts.changed() => break,
            }
        }
    }
    drop(listener);
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

/// Serves one connection until the client closes it or the server stops.
async fn connection(
    stream: tokio::net::TcpStream,
    handler: Arc<Handler>,
    mut stopping: watch::Receiver<bool>,
) {
    let service = service_fn(move |request| handler.clone().handle(request));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
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
