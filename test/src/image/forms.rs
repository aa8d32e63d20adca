//! The forms a wasm image comes in ([`Form`]), each a recipe over [`ImageBuilder`]: what
//! `wasmpod-image` writes with one flag per form and what the image tests push.

use super::{
    CONFIG_MEDIA_TYPE, ImageBuilder, TAR_LAYER_MEDIA_TYPE, WASM_COMPONENT_LAYER_MEDIA_TYPE,
    WASM_CONFIG_V0_MEDIA_TYPE, WASM_CONFIG_V1_MEDIA_TYPE, WASM_CONTENT_LAYER_V1_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE,
};

/// How an image carries its `.wasm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// OCI image config, a tar layer holding `/<name>.wasm`, entrypoint naming it.
    Classic,
    /// OCI image config (`os` wasip1/wasip2, `architecture` wasm), entrypoint `<name>.wasm`,
    /// one `application/wasm` layer (not a tar), empty rootfs.
    OciWasm,
    /// As [`Form::OciWasm`] with runwasi's component layer media type.
    ComponentLayer,
    /// The CNCF wasm OCI artifact (`wkg oci push`): wasm config v0, `application/wasm`.
    Artifact,
    /// The older artifact media types (`wasm-to-oci`): wasm config v1, content layer v1.
    ArtifactV1,
}

impl Form {
    pub const ALL: [Form; 5] = [
        Form::Classic,
        Form::OciWasm,
        Form::ComponentLayer,
        Form::Artifact,
        Form::ArtifactV1,
    ];

    /// The `wasmpod-image` flag that selects this form.
    pub fn flag(self) -> &'static str {
        match self {
            Form::Classic => "--classic",
            Form::OciWasm => "--oci-wasm",
            Form::ComponentLayer => "--component-layer",
            Form::Artifact => "--artifact",
            Form::ArtifactV1 => "--artifact-v1",
        }
    }

    /// The form of a `wasmpod-image` flag.
    pub fn from_flag(flag: &str) -> Option<Form> {
        Form::ALL.into_iter().find(|f| f.flag() == flag)
    }

    /// `(config media type, layer media type)`.
    pub fn media_types(self) -> (&'static str, &'static str) {
        match self {
            Form::Classic => (CONFIG_MEDIA_TYPE, TAR_LAYER_MEDIA_TYPE),
            Form::OciWasm => (CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE),
            Form::ComponentLayer => (CONFIG_MEDIA_TYPE, WASM_COMPONENT_LAYER_MEDIA_TYPE),
            Form::Artifact => (WASM_CONFIG_V0_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE),
            Form::ArtifactV1 => (WASM_CONFIG_V1_MEDIA_TYPE, WASM_CONTENT_LAYER_V1_MEDIA_TYPE),
        }
    }

    /// True for the wasm artifact forms (no entrypoint: a CRI container names a command).
    pub fn is_artifact(self) -> bool {
        matches!(self, Form::Artifact | Form::ArtifactV1)
    }

    /// True when the `.wasm` is a non-tar layer (containerd ≥ 1.6.25/1.7.7 unpacks these).
    pub fn is_non_tar(self) -> bool {
        self != Form::Classic
    }

    /// An image `name` of this form holding `wasm` as `<module>.wasm`, platform `os`/wasm.
    pub fn image(self, name: &str, module: &str, os: &str, wasm: &[u8]) -> ImageBuilder {
        let (config, layer) = self.media_types();
        let file = format!("{module}.wasm");
        match self {
            Form::Classic => {
                ImageBuilder::wasm(name, &format!("/{file}"), wasm).platform(os, "wasm")
            }
            Form::OciWasm | Form::ComponentLayer => ImageBuilder::new(name)
                .platform(os, "wasm")
                .entrypoint([file.as_str()])
                .raw_layer(layer, wasm),
            Form::Artifact | Form::ArtifactV1 => ImageBuilder::new(name)
                .platform(os, "wasm")
                .artifact_config(config)
                .raw_layer(layer, wasm),
        }
    }
}
