//! Errors of the runtime core. Each says what was being done and to which payload, so a
//! `ctr run` or a kubelet event shows the cause without reading logs.

use std::path::PathBuf;

/// Everything that can go wrong between finding a payload and running it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `process.args` was empty: there is nothing to run.
    #[error("no entrypoint: process.args is empty")]
    NoEntrypoint,

    /// The entrypoint does not exist in the container's root filesystem.
    #[error(
        "entrypoint {name:?} not found in the container's root filesystem (looked at {looked_at})"
    )]
    EntrypointNotFound { name: String, looked_at: String },

    /// The entrypoint path leaves the root filesystem (e.g. through `..` or a symlink).
    #[error("entrypoint {0:?} resolves outside the container's root filesystem")]
    EntrypointEscapesRootfs(String),

    /// Reading a payload or opening a directory failed.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file does not start with the `\0asm` magic.
    #[error("{name} is not a WebAssembly binary (no \\0asm header)")]
    NotWasm { name: String },

    /// The header names a binary encoding this runtime does not know.
    #[error("{name} has an unsupported WebAssembly encoding (version/layer bytes {version:02x?})")]
    UnknownEncoding { name: String, version: [u8; 4] },

    /// The payload is larger than its bound ([`crate::bounds`]); it was not read whole.
    #[error(
        "{name} is {size} bytes, above the payload size bound of {max} bytes (WASMPOD_MAX_PAYLOAD_BYTES on the node, annotation wasmpod.dev/max-payload-bytes)"
    )]
    PayloadTooLarge { name: String, size: u64, max: u64 },

    /// Getting compiled code took longer than the compile deadline ([`crate::bounds`]).
    #[error(
        "compiling {name} did not finish within the compile deadline of {timeout:?} ({while_doing}; WASMPOD_COMPILE_TIMEOUT on the node, annotation wasmpod.dev/compile-timeout)"
    )]
    CompileTimeout {
        name: String,
        timeout: std::time::Duration,
        while_doing: &'static str,
    },

    /// A wasmpod setting (environment or annotation) does not parse or is out of range.
    #[error("invalid setting {key}={value:?}: {reason}")]
    Setting {
        key: String,
        value: String,
        reason: String,
    },

    /// Validation or compilation failed (truncated, malformed or unsupported features).
    #[error("compiling {name}: {message}")]
    Compile { name: String, message: String },

    /// A core module without the WASI command entry point.
    #[error(
        "{name} is a core module without a `_start` function export; wasmpod runs WASI command modules"
    )]
    MissingStart { name: String },

    /// A component that is neither a WASI command nor a wasi:http server.
    #[error(
        "{name} is a component that does not export `wasi:cli/run` (exports: {exports}); wasmpod runs WASI command components and `wasi:http/incoming-handler` servers"
    )]
    MissingCliRun { name: String, exports: String },

    /// The payload needs imports that wasmpod does not provide.
    #[error("linking {name}: {message}")]
    Link { name: String, message: String },

    /// Building the WASI context failed (e.g. a preopened directory cannot be opened).
    #[error("preparing WASI for {what}: {message}")]
    Wasi { what: String, message: String },

    /// The compiled-module cache could not be used.
    #[error("module cache {path}: {message}")]
    Cache { path: PathBuf, message: String },

    /// Creating the wasmtime engine failed.
    #[error("creating the wasmtime engine: {0}")]
    Engine(String),

    /// Instantiation failed (e.g. the start function trapped or memory could not be allocated).
    #[error("instantiating {name}: {message}")]
    Instantiate { name: String, message: String },

    /// A wasi:http server setting (port, concurrency, timeout, size) does not parse or is
    /// out of range; `key` says where it came from (`annotation wasmpod.dev/http-port`).
    #[error("{key}: {value:?} {problem}")]
    HttpSetting {
        key: String,
        value: String,
        problem: String,
    },

    /// The wasi:http server cannot listen on its address (port in use, no permission).
    #[error("listening on {address} for wasi:http: {source}")]
    HttpBind {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// The wasi:http server could not start (runtime or ticker thread).
    #[error("serving {name}: {message}")]
    HttpServer { name: String, message: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
