//! Payloads that are not files in the rootfs: the wasm layer of an OCI image (OCI image
//! config + `application/wasm` layer) or of a wasm OCI artifact, read from containerd's
//! content store over containerd's API.
//!
//! A runner comes here, during preparation, only when its entrypoint is not in the rootfs
//! (classic images never pay for it): container record → image record → index (the wasm
//! platform's manifest) → manifest → config → the payload layer ([`manifest`] decides which).
//! The layer's digest is the payload's sha256 as containerd verified it on ingest, so the
//! compile cache is keyed by it without hashing the bytes again.
//!
//! Trade-off: the bytes are fetched even when the compile cache already holds the layer's
//! code, because the engine chosen for a payload depends on its exports (a wasi:http
//! component gets the server engine) and those are read from the bytes.

pub mod manifest;
mod store;

use serde::{Deserialize, Serialize};

use manifest::{Descriptor, Form};

/// Where containerd's gRPC API is and the namespace of the shim's containers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerdApi {
    /// containerd's socket (the shim's `-address` flag).
    pub address: String,
    pub namespace: String,
}

/// Why an image's payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("connecting to containerd at {address}: {message}")]
    Connect { address: String, message: String },
    #[error("containerd API: {0}")]
    Api(String),
    #[error("reading the image from containerd took longer than {0:?}")]
    Timeout(std::time::Duration),
    #[error("the container record names no image")]
    NoImage,
    #[error("image {0} is not in containerd's image store")]
    ImageMissing(String),
    #[error(
        "content {0} is missing from containerd's content store (garbage-collected or never fetched); pull the image again"
    )]
    ContentMissing(String),
    #[error("blob {digest} is {size} bytes, more than the {max} allowed")]
    TooLarge { digest: String, size: i64, max: i64 },
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
}

/// A payload read from an image.
#[derive(Debug)]
pub struct ImagePayload {
    /// The image name the container record gave.
    pub image: String,
    pub form: Form,
    /// What the guest calls the module (`argv[0]` of an artifact).
    pub module_name: String,
    pub layer: Descriptor,
    /// The layer's sha256 (from its digest), when it is a sha256 digest.
    pub sha256: Option<[u8; 32]>,
    pub bytes: Vec<u8>,
}

/// Reads the wasm payload of container `id`'s image from containerd at `api`; a layer
/// above `max_layer_bytes` (the node's payload size bound) is refused before it is read.
pub fn read_payload(
    api: &ContainerdApi,
    id: &str,
    max_layer_bytes: u64,
) -> Result<ImagePayload, ImageError> {
    let max_layer_bytes = i64::try_from(max_layer_bytes).unwrap_or(i64::MAX);
    store::with_store(&api.address, &api.namespace, async |store| {
        let image = store.container_image(id).await?;
        if image.is_empty() {
            return Err(ImageError::NoImage);
        }
        let mut target = store.image_target(&image).await?;
        if manifest::is_index(&target.media_type) {
            let index = store.read(&target, store::MAX_DOCUMENT_BYTES).await?;
            target = manifest::pick_manifest(&index)?;
        }
        let manifest_json = store.read(&target, store::MAX_DOCUMENT_BYTES).await?;
        let parsed = manifest::parse_manifest(&manifest_json)?;
        let config_json = store
            .read(&parsed.config, store::MAX_DOCUMENT_BYTES)
            .await?;
        // Only checked: the payload's header, not the config's `os`, decides how it runs.
        manifest::parse_config(&config_json)?;
        let payload = manifest::payload(&parsed)?;
        let bytes = store.read(&payload.layer, max_layer_bytes).await?;
        Ok(ImagePayload {
            module_name: manifest::module_name(&payload.layer, &image),
            sha256: sha256_of_digest(&payload.layer.digest),
            image,
            form: payload.form,
            layer: payload.layer,
            bytes,
        })
    })
}

/// The 32 bytes of a `sha256:<hex>` digest.
fn sha256_of_digest(digest: &str) -> Option<[u8; 32]> {
    let hex_part = digest.strip_prefix("sha256:")?;
    hex::decode(hex_part).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_digests_decode_others_do_not() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(sha256_of_digest(&d), Some([0xab; 32]));
        assert_eq!(sha256_of_digest("sha512:abcd"), None);
        assert_eq!(sha256_of_digest("sha256:zz"), None);
    }

    #[test]
    fn missing_content_says_what_to_do() {
        let e = ImageError::ContentMissing("sha256:1".into()).to_string();
        assert!(e.contains("missing from containerd's content store"), "{e}");
    }
}
