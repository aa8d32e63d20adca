//! The Wasm side of wasmpod, free of containerd types so it is testable as an ordinary user.
//!
//! A container's life through this crate:
//! 1. [`locate::resolve_entrypoint`] finds the `.wasm` named by `process.args[0]` in a rootfs;
//! 2. [`WasmSource`] holds its bytes and digest, [`PayloadKind`] says module or component;
//! 3. [`Runtime::prepare`] loads it from the node's [`ModuleCache`] or compiles it with the one [`wasmtime::Engine`] built by
//!    [`engine::EngineSettings`] and checks it can run (imports satisfied, entrypoint present),
//!    so bad payloads fail before the container is reported as created;
//! 4. [`Prepared::run`] builds the WASI context from a [`WasiConfig`] and runs the guest to
//!    an [`ExitStatus`]; an [`Interrupter`] stops it from another thread (kill, signals).
//!    A component exporting `wasi:http/incoming-handler` is served instead, one instance
//!    per request, until interrupted ([`http`]; pick its engine with
//!    [`EngineSettings::for_source`]).

pub mod bounds;
pub mod cache;
pub mod engine;
pub mod error;
pub mod exit;
mod hmac;
pub mod http;
pub mod interrupt;
pub mod limits;
pub mod locate;
mod run;
pub mod source;
pub mod wasi;

pub use bounds::PrepareBounds;
pub use cache::ModuleCache;
pub use engine::EngineSettings;
pub use error::Error;
pub use exit::ExitStatus;
pub use http::HttpConfig;
pub use interrupt::Interrupter;
pub use run::{Prepared, Runtime};
pub use source::{PayloadKind, WasmSource};
pub use wasi::{Preopen, WasiConfig};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
