//! Serving `wasi:http/incoming-handler` components (the `wasi:http/proxy` world) as HTTP
//! servers.
//!
//! A component that exports `wasi:http/incoming-handler` is not run once like a command:
//! [`crate::Runtime::prepare`] notices the export ([`crate::Prepared::is_http_server`]) and
//! [`crate::Prepared::run`] serves it until interrupted:
//!
//! - **listening** on [`HttpConfig::address`]:[`HttpConfig::port`] (default `0.0.0.0:8080`)
//!   in the current network namespace (the runner sits in the pod's), HTTP/1.1 with
//!   keep-alive through hyper; a request hyper cannot parse gets its 400 without reaching
//!   the guest.
//! - **configuration**: the port comes from the container's env var [`PORT_ENV`]
//!   (`WASMPOD_HTTP_PORT`), else the pod annotation [`PORT_ANNOTATION`]
//!   (`wasmpod.dev/http-port`), else 8080; annotations `wasmpod.dev/http-max-concurrency`,
//!   `-request-timeout`, `-drain-timeout`, `-header-read-timeout`, `-idle-timeout`,
//!   `-max-connections`, `-max-header-size` and `-max-body-size` set the bounds
//!   ([`HttpConfig::from_settings`] parses and range-checks them; the shim maps the spec
//!   onto it).
//! - **hostile clients**: a request head must arrive within
//!   [`HttpConfig::header_read_timeout`], a keep-alive connection may idle
//!   [`HttpConfig::idle_timeout`] ([`guard`]); a head over
//!   [`HttpConfig::max_header_size`] gets 431, a body over [`HttpConfig::max_body_size`]
//!   413 ([`body`]); at most [`HttpConfig::max_connections`] connections are open (fewer
//!   under a low open-files limit), and at the cap the one waiting longest for its head
//!   makes room ([`conns`]). Accept errors never end the server.
//! - **a fresh instance per request** from a `ProxyPre` (imports resolved once, at
//!   prepare), in an engine with the pooling allocator sized from the memory limit and
//!   [`HttpConfig::max_concurrency`] ([`crate::EngineSettings::http_server`]); at most
//!   `max_concurrency` requests run at once, the others wait for a slot.
//! - **each request's WASI context** is the container's: args, env, cwd, preopens, and the
//!   container's stdout/stderr files (kept, not dropped: the handler's output reaches the
//!   container log). Outgoing `wasi:http/outgoing-handler` requests are allowed (wasmtime's
//!   default client, http and https).
//! - **bounded requests**: a ticker thread moves the engine's epoch every
//!   [`EPOCH_TICK`]; a request past [`HttpConfig::request_timeout`] is stopped (even in a
//!   tight loop) and answered 504. A guest that traps answers 500 for that request only
//!   (the trap is written to the container's stderr); the server keeps serving.
//! - **interrupts** ([`crate::Interrupter::interrupt`]): the first one stops accepting
//!   (new connections are refused), lets in-flight requests finish for up to
//!   [`HttpConfig::drain_timeout`] (idle keep-alive connections are closed), and the run
//!   ends as `ExitStatus::Exited(0)`. A second interrupt, or a drain that runs out of time,
//!   stops the remaining requests at once and ends as `ExitStatus::Interrupted` (128 +
//!   the first signal).
//!
//! The trade-off: one multi-threaded tokio runtime per container process (one worker per
//! core) rather than per-request threads; guests run on wasmtime fibers and yield to the
//! runtime at every epoch tick, so a spinning handler cannot starve the others.

mod body;
mod config;
mod conns;
mod guard;
mod handle;
mod host;
mod output;
mod serve;
mod ticker;

use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use config::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_SIZE, DEFAULT_PORT, DEFAULT_REQUEST_TIMEOUT, DRAIN_TIMEOUT_ANNOTATION,
    HEADER_READ_TIMEOUT_ANNOTATION, HttpConfig, IDLE_TIMEOUT_ANNOTATION, MAX_BODY_SIZE_ANNOTATION,
    MAX_CONCURRENCY_ANNOTATION, MAX_CONNECTIONS_ANNOTATION, MAX_HEADER_SIZE_ANNOTATION,
    PORT_ANNOTATION, PORT_ENV, REQUEST_TIMEOUT_ANNOTATION,
};
pub use ticker::EPOCH_TICK;

pub(crate) use host::HttpHost;
pub(crate) use serve::{bind, serve};

/// The interface a wasi:http server component exports (any `0.2.x` version).
pub const INCOMING_HANDLER_INTERFACE: &str = "wasi:http/incoming-handler";

/// Whether the component `bytes` exports [`INCOMING_HANDLER_INTERFACE`], read from its
/// top-level export section without compiling it (so the shim can pick the engine for an
/// HTTP server before compiling). Core modules and unparsable input answer `false`.
pub fn exports_incoming_handler(bytes: &[u8]) -> bool {
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { return false };
        match payload {
            wasmparser::Payload::Version { encoding, .. }
                if depth == 0 && encoding != wasmparser::Encoding::Component =>
            {
                return false;
            }
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => match depth.checked_sub(1) {
                Some(outer) => depth = outer,
                None => return false,
            },
            wasmparser::Payload::ComponentExportSection(exports) if depth == 0 => {
                let found = exports
                    .into_iter()
                    .flatten()
                    .any(|export| is_incoming_handler(export.name.name));
                if found {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// Whether an export name (`wasi:http/incoming-handler@0.2.12`) is the handler interface.
pub(crate) fn is_incoming_handler(export: &str) -> bool {
    export
        .strip_prefix(INCOMING_HANDLER_INTERFACE)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('@'))
}

/// Links `component` against WASI p2 and wasi:http (async) and pre-instantiates it.
pub(crate) fn prepare(
    engine: &wasmtime::Engine,
    component: &Component,
) -> wasmtime::Result<ProxyPre<HttpHost>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    ProxyPre::new(linker.instantiate_pre(component)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_export_names() {
        assert!(is_incoming_handler("wasi:http/incoming-handler@0.2.12"));
        assert!(is_incoming_handler("wasi:http/incoming-handler"));
        assert!(!is_incoming_handler("wasi:http/incoming-handler-x@0.2.0"));
        assert!(!is_incoming_handler("wasi:cli/run@0.2.0"));
    }

    #[test]
    fn modules_and_garbage_are_not_handlers() {
        assert!(!exports_incoming_handler(b"\0asm\x01\0\0\0"));
        assert!(!exports_incoming_handler(b"not wasm"));
        assert!(!exports_incoming_handler(b""));
    }
}
