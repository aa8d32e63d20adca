//! Where a runner's payload comes from: the entrypoint's file in the rootfs (classic images;
//! the shim found it, [`Entrypoint`]), else, when the rootfs does not hold it, the wasm layer
//! of the container's image read from containerd ([`crate::image`]). Runs during preparation, before any confinement, and
//! leaves no client, runtime or connection behind.
//!
//! For a wasm artifact the guest's `argv[0]` is the module's name and the container's
//! command/args follow (CRI requires a command for an image config without one); an OCI
//! image config's entrypoint keeps the classic meaning. The payload's header decides how it
//! runs: a core module under a config saying `wasip2` runs as the WASI preview 1 command it
//! is (the header cannot lie; the config's `os` is a label).

use wasmpod_runtime_core::WasmSource;

use super::failure;
use crate::image::{self, manifest::Form};
use crate::process::runner::protocol::{Entrypoint, Failure, FailureKind, RunnerRequest};
use crate::process::runner::spec::GuestSpec;

/// The payload of `request`'s container, and `guest` with the argv the guest will see; a
/// payload above `max_bytes` is refused from its size, before it is read.
pub fn source(
    request: &RunnerRequest,
    mut guest: GuestSpec,
    max_bytes: u64,
) -> Result<(WasmSource, GuestSpec), Failure> {
    let args0 = guest.args.first().map(String::as_str).unwrap_or_default();
    let not_in_rootfs = match &request.entrypoint {
        Entrypoint::Rootfs {
            guest_path,
            host_path,
        } => {
            let source = WasmSource::from_file_bounded(guest_path, host_path, max_bytes)
                .map_err(failure::core)?;
            return Ok((source, guest));
        }
        Entrypoint::NotInRootfs { reason } => reason,
        Entrypoint::None => {
            return Err(Failure::new(
                FailureKind::Protocol,
                "a runner was started without an entrypoint",
            ));
        }
    };
    let Some(api) = &request.containerd else {
        return Err(Failure::new(FailureKind::Payload, not_in_rootfs));
    };
    let payload = image::read_payload(api, &request.id, max_bytes).map_err(|e| {
        if failure::image_has_no_payload(&e) {
            // Neither place has it: say both.
            Failure::new(
                FailureKind::Payload,
                format!("{not_in_rootfs}; the image has no wasm layer either: {e}"),
            )
        } else {
            Failure::new(
                failure::image_kind(&e),
                format!("reading the wasm layer of the container's image: {e}"),
            )
        }
    })?;
    let name = match payload.form {
        Form::Artifact => payload.module_name.clone(),
        Form::OciImage => args0.to_owned(),
    };
    let bytes = payload.bytes;
    let source = match payload.sha256 {
        Some(sha256) => WasmSource::from_verified_bytes(&name, bytes, sha256),
        None => WasmSource::from_bytes(&name, bytes),
    }
    .map_err(|e| {
        let message = format!(
            "layer {} ({}) of image {}: {e}",
            payload.layer.digest, payload.layer.media_type, payload.image
        );
        Failure::new(FailureKind::of_core_error(&e), message)
    })?;
    if payload.form == Form::Artifact {
        guest.args.insert(0, payload.module_name);
    }
    Ok((source, guest))
}
