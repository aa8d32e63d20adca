//! What kind each preparation error is ([`FailureKind`]): the shim gives Create the gRPC
//! code of the kind ([`crate::error::TaskError::runner_failed`]), so a bad payload or setting
//! is InvalidArgument, a node problem Internal and a taken port FailedPrecondition. The
//! message is the error's own text, unchanged.

use wasmpod_runtime_core::Error as CoreError;

use super::confine::ConfineError;
use super::rootview::RootViewError;
use crate::image::{ImageError, manifest::ManifestError};
use crate::os::caps::CapsError;
use crate::os::limits::LimitsError;
use crate::os::seccomp::SeccompError;
use crate::process::runner::protocol::{Failure, FailureKind};

/// A runtime-core error as a failure.
pub fn core(e: CoreError) -> Failure {
    Failure::new(FailureKind::of_core_error(&e), e)
}

/// The kind of an error reading the payload from the image: a missing or unusable image is
/// the payload's problem, containerd not answering the node's.
pub fn image_kind(e: &ImageError) -> FailureKind {
    match e {
        ImageError::Connect { .. } | ImageError::Api(_) | ImageError::Timeout(_) => FailureKind::Io,
        ImageError::NoImage
        | ImageError::ImageMissing(_)
        | ImageError::ContentMissing(_)
        | ImageError::TooLarge { .. }
        | ImageError::Manifest(_) => FailureKind::Payload,
    }
}

/// A confinement failure: a spec value that cannot be applied is the spec's problem; a
/// system call that fails on good values the node's.
pub fn confine(e: ConfineError) -> Failure {
    let kind = match &e {
        ConfineError::Threads(_) => FailureKind::Io,
        ConfineError::Limits(LimitsError::SoftAboveHard { .. } | LimitsError::OomScoreRange(_))
        | ConfineError::Caps(CapsError::Unknown(_))
        | ConfineError::Seccomp(SeccompError::Unsupported(_) | SeccompError::Library { .. }) => {
            FailureKind::Spec
        }
        ConfineError::Limits(LimitsError::Set { .. } | LimitsError::OomScoreAdj { .. })
        | ConfineError::Caps(_) => FailureKind::Io,
    };
    Failure::new(kind, e)
}

/// A private-root failure: a volume whose source is missing or of the wrong type is the
/// spec's problem; a mount that fails the node's.
pub fn root_view(e: RootViewError) -> Failure {
    let kind = match &e {
        RootViewError::MissingSource { .. }
        | RootViewError::SymlinkSource { .. }
        | RootViewError::RootNotDirectory { .. } => FailureKind::Spec,
        RootViewError::OpenSource { .. } | RootViewError::Build { .. } => FailureKind::Io,
    };
    Failure::new(kind, e)
}

/// Whether an image error says the image has no wasm payload at all.
pub fn image_has_no_payload(e: &ImageError) -> bool {
    matches!(
        e,
        ImageError::NoImage | ImageError::Manifest(ManifestError::NoWasmLayer { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_its_own_kind_and_other_bind_errors_are_io() {
        let bind = |kind| CoreError::HttpBind {
            address: "0.0.0.0:8080".parse().unwrap(),
            source: std::io::Error::from(kind),
        };
        assert_eq!(
            FailureKind::of_core_error(&bind(std::io::ErrorKind::AddrInUse)),
            FailureKind::PortTaken
        );
        assert_eq!(
            FailureKind::of_core_error(&bind(std::io::ErrorKind::PermissionDenied)),
            FailureKind::Io
        );
    }

    #[test]
    fn payload_setting_cache_and_engine_errors_keep_their_kind_and_text() {
        let not_wasm = core(CoreError::NotWasm {
            name: "/app.txt".into(),
        });
        assert_eq!(not_wasm.kind, FailureKind::Payload);
        assert_eq!(
            not_wasm.error,
            "/app.txt is not a WebAssembly binary (no \\0asm header)"
        );
        let setting = CoreError::Setting {
            key: "k".into(),
            value: "v".into(),
            reason: "r".into(),
        };
        assert_eq!(FailureKind::of_core_error(&setting), FailureKind::Spec);
        let cache = CoreError::Cache {
            path: "/c".into(),
            message: "m".into(),
        };
        assert_eq!(FailureKind::of_core_error(&cache), FailureKind::Cache);
        assert_eq!(
            FailureKind::of_core_error(&CoreError::Engine("e".into())),
            FailureKind::Engine
        );
    }

    #[test]
    fn containerd_not_answering_is_io_and_a_missing_image_the_payloads() {
        assert_eq!(image_kind(&ImageError::Api("x".into())), FailureKind::Io);
        assert_eq!(image_kind(&ImageError::NoImage), FailureKind::Payload);
    }
}
