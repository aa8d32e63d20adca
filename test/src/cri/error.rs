//! Why a CRI call failed: [`CriError`], one variant per way a blocking call of
//! [`CriClient`](super::CriClient) can end without an answer.

use std::path::PathBuf;
use std::time::Duration;

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The tokio runtime could not be built.
    #[error("building the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Connecting to the CRI socket failed.
    #[error("connecting to CRI at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The runtime answered with an error status.
    #[error("{call} failed: {code:?}: {message}")]
    Rpc {
        /// The CRI method.
        call: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// The status message (containerd's error text).
        message: String,
    },
    /// The call did not finish in time.
    #[error("{call} did not answer within {timeout:?}")]
    Timeout {
        /// The CRI method.
        call: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// A response lacked a field the runtime must fill.
    #[error("{call}: response without {field}")]
    Missing {
        /// The CRI method.
        call: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A wait for a container state ran out of time.
    #[error("container {id} not {want} within {timeout:?} (last state {last})")]
    WaitTimeout {
        /// The container.
        id: String,
        /// The state waited for.
        want: &'static str,
        /// The last state seen.
        last: i32,
        /// The limit.
        timeout: Duration,
    },
}
