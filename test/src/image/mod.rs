//! Builds OCI image layout tarballs for tests, the kind `ctr images import` accepts.
//!
//! [`ImageBuilder`] collects a name, a platform, the process config and the files of one
//! uncompressed tar layer (plus, optionally, raw `application/wasm` layers, the "Wasm OCI
//! artifact" form), and [`ImageBuilder::build`] turns them into an [`Image`]: the config,
//! manifest and layer blobs with their digests, which [`Image::to_tar`] packs as
//!
//! ```text
//! oci-layout
//! index.json              one manifest descriptor, named by annotations
//! blobs/sha256/<digest>   config, manifest, layers
//! ```
//!
//! Output is deterministic: every tar entry has mtime 0, uid/gid 0 and a fixed order, and
//! the config carries no timestamp, so the same input always gives the same bytes and the
//! same manifest digest. The trade-off is that this is not a general image tool: one tar
//! layer, no compression, no multi-platform index.
//!
//! ```
//! use wasmpod_test::image::ImageBuilder;
//!
//! let image = ImageBuilder::new("localhost/wasmpod/hello:latest")
//!     .platform("wasip1", "wasm")
//!     .entrypoint(["/hello.wasm"])
//!     .file("/hello.wasm", b"\0asm\x01\0\0\0".to_vec(), 0o755)
//!     .build()
//!     .unwrap();
//! assert!(image.manifest_digest().starts_with("sha256:"));
//! ```
//!
//! One job per submodule: `builder` ([`ImageBuilder`]: what goes in), `oci` (the config,
//! manifest and index documents and their content-addressed blobs), `layout` ([`Image`]
//! and its OCI layout tarball), `tarball` (deterministic tar entries), `names` (image
//! names, layer paths, architectures) and `error` ([`ImageError`]). Everything public is
//! re-exported here.

mod builder;
mod error;
mod forms;
mod layout;
mod names;
mod oci;
mod tarball;
#[cfg(test)]
mod tests;

pub use builder::ImageBuilder;
pub use error::ImageError;
pub use forms::Form;
pub use layout::Image;
pub use names::oci_arch;

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index (`index.json`).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed tar layer.
pub const TAR_LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a raw Wasm layer (a `.wasm` file, not a tar).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Config media type of the CNCF wasm OCI artifact (`wkg oci push`).
pub const WASM_CONFIG_V0_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The older wasm config media type (`wasm-to-oci`, early runwasi/Spin tooling).
pub const WASM_CONFIG_V1_MEDIA_TYPE: &str = "application/vnd.wasm.config.v1+json";
/// The older wasm layer media type that goes with [`WASM_CONFIG_V1_MEDIA_TYPE`].
pub const WASM_CONTENT_LAYER_V1_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The component layer media type of runwasi's image builder.
pub const WASM_COMPONENT_LAYER_MEDIA_TYPE: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Annotation containerd uses as the image name on import.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// OCI annotation holding the tag of a manifest in an image layout.
pub const OCI_REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Where the host's static busybox lives (Debian package `busybox-static`).
pub const HOST_BUSYBOX: &str = "/bin/busybox";
/// The applets [`ImageBuilder::busybox`] links to `/bin/busybox`.
pub const BUSYBOX_APPLETS: &[&str] = &["sh", "true", "sleep", "echo", "cat", "nc", "wget"];
