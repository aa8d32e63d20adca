//! A built image ([`Image`]): its config, manifest and layer blobs and `index.json`, and
//! the OCI image layout tarball they make.

use std::collections::BTreeMap;
use std::path::Path;

use super::ImageError;
use super::oci::Blob;
use super::tarball::TarWriter;

/// The built blobs of an image; see [`ImageBuilder::build`](super::ImageBuilder::build).
#[derive(Debug, Clone)]
pub struct Image {
    pub(super) name: String,
    pub(super) index: Vec<u8>,
    pub(super) manifest: Blob,
    pub(super) config: Blob,
    pub(super) layers: Vec<Blob>,
    /// `(os, architecture)`.
    pub(super) platform: (String, String),
}

impl Image {
    /// The full image name with tag, e.g. `localhost/wasmpod/hello:latest`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The manifest digest, `sha256:<hex>`.
    pub fn manifest_digest(&self) -> &str {
        &self.manifest.digest
    }

    /// The `index.json` document.
    pub fn index_json(&self) -> &[u8] {
        &self.index
    }

    /// The manifest document.
    pub fn manifest_json(&self) -> &[u8] {
        &self.manifest.data
    }

    /// The config document.
    pub fn config_json(&self) -> &[u8] {
        &self.config.data
    }

    /// The layers in manifest order: `(media type, bytes)`.
    pub fn layers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.layers
            .iter()
            .map(|blob| (blob.media_type.as_str(), blob.data.as_slice()))
    }

    /// The manifest's `(media type, digest, bytes)`.
    pub fn manifest_blob(&self) -> (&str, &str, &[u8]) {
        let m = &self.manifest;
        (&m.media_type, &m.digest, &m.data)
    }

    /// The config's `(media type, digest, bytes)`.
    pub fn config_blob(&self) -> (&str, &str, &[u8]) {
        let c = &self.config;
        (&c.media_type, &c.digest, &c.data)
    }

    /// The layers' `(media type, digest, bytes)` in manifest order.
    pub fn layer_blobs(&self) -> impl Iterator<Item = (&str, &str, &[u8])> {
        self.layers
            .iter()
            .map(|b| (b.media_type.as_str(), b.digest.as_str(), b.data.as_slice()))
    }

    /// An image index naming the manifest for this image's platform: `(digest, bytes)`,
    /// for pushing the image "inside an index" to a registry.
    pub fn registry_index(&self) -> (String, Vec<u8>) {
        let (os, architecture) = &self.platform;
        let blob = super::oci::registry_index_blob(
            &self.manifest,
            super::oci::Platform { architecture, os },
        );
        (blob.digest, blob.data)
    }

    /// The OCI image layout as a tarball.
    pub fn to_tar(&self) -> Result<Vec<u8>, ImageError> {
        let mut tar = TarWriter::new();
        tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
        tar.file("index.json", &self.index, 0o644)?;
        tar.dir("blobs/", 0o755)?;
        tar.dir("blobs/sha256/", 0o755)?;
        let mut blobs: BTreeMap<&str, &[u8]> = BTreeMap::new();
        for blob in [&self.config, &self.manifest]
            .into_iter()
            .chain(&self.layers)
        {
            blobs.insert(blob.hex(), &blob.data);
        }
        for (hex, data) in blobs {
            tar.file(&format!("blobs/sha256/{hex}"), data, 0o644)?;
        }
        tar.finish()
    }

    /// Writes [`Image::to_tar`] to `path`.
    pub fn write_tar(&self, path: impl AsRef<Path>) -> Result<(), ImageError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_tar()?)
            .map_err(|e| ImageError::io(format!("writing {}", path.display()), e))
    }
}
