//! The store data of one request's instance ([`HttpHost`]) and the per-container
//! template every request's WASI context is built from ([`RequestTemplate`]).
//!
//! The container's stdout/stderr files are opened once and shared by every request
//! ([`LineOutput`] clones an `Arc`, no `dup` per request; each request writes whole lines);
//! the rest of the WASI surface is rebuilt per request from the container's
//! [`WasiConfig`], so requests share nothing.

use std::fs::File;
use std::io::Write as _;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::output::LineOutput;
use crate::limits::GuestLimits;
use crate::{Result, WasiConfig};

/// Store data of one request's guest instance.
pub(crate) struct HttpHost {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    pub(crate) limits: GuestLimits,
}

impl WasiView for HttpHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            // wasmtime's defaults: forbidden headers, http/https, the rustls client.
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

/// What each request's WASI context is made of.
pub(crate) struct RequestTemplate {
    config: WasiConfig,
    stdout: Option<LineOutput>,
    stderr: Option<LineOutput>,
    /// The container's stderr, for the host's own lines (a request that trapped).
    log: Option<Arc<File>>,
}

impl RequestTemplate {
    /// Takes the stdio out of `config` (stdin is not given to handlers: they read the
    /// request body) and checks once that the WASI context can be built.
    pub(crate) fn new(mut config: WasiConfig) -> Result<Self> {
        config.stdin = None;
        let log = config
            .stderr
            .as_ref()
            .and_then(|file| file.try_clone().ok())
            .map(Arc::new);
        let template = RequestTemplate {
            stdout: config.stdout.take().map(LineOutput::new),
            stderr: config.stderr.take().map(LineOutput::new),
            config,
            log,
        };
        template.host()?;
        Ok(template)
    }

    /// Fresh store data for one request.
    pub(crate) fn host(&self) -> Result<HttpHost> {
        let mut builder = self.config.builder_without_stdio()?;
        if let Some(stdout) = &self.stdout {
            builder.stdout(stdout.clone());
        }
        if let Some(stderr) = &self.stderr {
            builder.stderr(stderr.clone());
        }
        Ok(HttpHost {
            wasi: builder.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            limits: GuestLimits::new(self.config.memory_limit)
                .following(self.config.memory_limit_now.clone()),
        })
    }

    /// Writes one line of the host's own to the container's stderr (or the log when the
    /// container has none).
    pub(crate) fn log_line(&self, line: &str) {
        match &self.log {
            Some(file) => {
                let _ = (&**file).write_all(format!("wasmpod: {line}\n").as_bytes());
            }
            None => log::warn!("{line}"),
        }
    }
}
