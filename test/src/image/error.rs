//! Why an image could not be built or written: [`ImageError`].

/// Why an image could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image name is empty, has a digest, or an empty tag.
    #[error("invalid image name {0:?}: expected REPOSITORY[:TAG] without a digest")]
    InvalidName(String),
    /// A file path in the layer is not absolute or contains `..`.
    #[error("invalid path {0:?} in image layer: must be absolute, without `..`")]
    InvalidPath(String),
    /// Reading an input or writing the tarball failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The host architecture has no OCI name known to [`oci_arch`](super::oci_arch).
    #[error("no OCI architecture name for host architecture {0:?}")]
    UnknownHostArch(&'static str),
}

impl ImageError {
    pub(super) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
