//! The OCI documents of an image (config, manifest, `index.json`) and the content-addressed
//! [`Blob`]s they describe each other with.
//!
//! Field order in the document types is the order in the JSON, which is part of the
//! digest, so it must not depend on anything but these definitions.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{
    CONFIG_MEDIA_TYPE, CONTAINERD_NAME_ANNOTATION, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
    OCI_REF_NAME_ANNOTATION,
};

/// A content-addressed blob.
#[derive(Debug, Clone)]
pub(super) struct Blob {
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) data: Vec<u8>,
}

impl Blob {
    pub(super) fn new(media_type: impl Into<String>, data: Vec<u8>) -> Self {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        Self {
            media_type: media_type.into(),
            digest,
            data,
        }
    }

    /// The digest without its `sha256:` prefix.
    pub(super) fn hex(&self) -> &str {
        &self.digest["sha256:".len()..]
    }

    fn descriptor(&self) -> Descriptor<'_> {
        Descriptor {
            media_type: &self.media_type,
            digest: &self.digest,
            size: self.data.len() as u64,
            platform: None,
            annotations: None,
        }
    }
}

/// The config of a wasm OCI artifact (`config_media_type`): the CNCF v0 document (`os`,
/// `architecture`, `layerDigests`, and `component` for wasip2), or `{}` as `wasm-to-oci`
/// writes under the older v1 media type.
pub(super) fn artifact_config_blob(
    config_media_type: &str,
    platform: Platform<'_>,
    layers: &[Blob],
) -> Blob {
    if config_media_type != super::WASM_CONFIG_V0_MEDIA_TYPE {
        return Blob::new(config_media_type, b"{}".to_vec());
    }
    let config = serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "layerDigests": layers.iter().map(|l| l.digest.as_str()).collect::<Vec<_>>(),
    });
    let mut config = config;
    if platform.os == "wasip2" {
        config["component"] = serde_json::json!({ "exports": [], "imports": [] });
    }
    Blob::new(config_media_type, to_json(&config))
}

/// An index (for a registry) holding `manifest` for `platform`.
pub(super) fn registry_index_blob(manifest: &Blob, platform: Platform<'_>) -> Blob {
    let index = Index {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE,
        manifests: vec![Descriptor {
            platform: Some(platform),
            ..manifest.descriptor()
        }],
    };
    Blob::new(INDEX_MEDIA_TYPE, to_json(&index))
}

/// The config blob: `platform`, the process config, and the `rootfs.diff_ids` of the tar
/// layers. `empty` marks an image without layers in its history.
pub(super) fn config_blob(
    platform: Platform<'_>,
    process: ProcessConfig<'_>,
    diff_ids: Vec<String>,
    empty: bool,
) -> Blob {
    let config = ImageConfig {
        architecture: platform.architecture,
        os: platform.os,
        config: process,
        rootfs: RootFs {
            kind: "layers",
            diff_ids,
        },
        history: vec![History {
            created_by: "wasmpod-image",
            empty_layer: empty.then_some(true),
        }],
    };
    Blob::new(CONFIG_MEDIA_TYPE, to_json(&config))
}

/// The manifest blob naming `config` and `layers`.
pub(super) fn manifest_blob(config: &Blob, layers: &[Blob]) -> Blob {
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: config.descriptor(),
        layers: layers.iter().map(Blob::descriptor).collect(),
    };
    Blob::new(MANIFEST_MEDIA_TYPE, to_json(&manifest))
}

/// `index.json`: one descriptor of `manifest` for `platform`, named `full_name`
/// (containerd's annotation) and `tag` (the OCI ref name).
pub(super) fn index_json(
    manifest: &Blob,
    platform: Platform<'_>,
    full_name: &str,
    tag: &str,
) -> Vec<u8> {
    let index = Index {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE,
        manifests: vec![Descriptor {
            platform: Some(platform),
            annotations: Some(BTreeMap::from([
                (CONTAINERD_NAME_ANNOTATION, full_name.to_owned()),
                (OCI_REF_NAME_ANNOTATION, tag.to_owned()),
            ])),
            ..manifest.descriptor()
        }],
    };
    to_json(&index)
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("image documents always serialize")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, String>>,
}

/// The `os` and `architecture` of an image.
#[derive(Serialize, Clone, Copy)]
pub(super) struct Platform<'a> {
    pub(super) architecture: &'a str,
    pub(super) os: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'a str,
    os: &'a str,
    config: ProcessConfig<'a>,
    rootfs: RootFs,
    history: Vec<History>,
}

/// The process part of the config: `Entrypoint`, `Cmd`, `Env`, `WorkingDir`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ProcessConfig<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(super) entrypoint: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(super) cmd: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(super) env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) working_dir: Option<&'a str>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created_by: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    empty_layer: Option<bool>,
}
