//! The OCI documents of an image (index, manifest, config) and which layer of them is the
//! wasm payload. Pure: no containerd, no I/O, so every form and every refusal is unit-tested.
//!
//! | form | config media type | payload layer |
//! |---|---|---|
//! | OCI image (`os` wasip1/wasip2, `architecture` wasm) | OCI/Docker image config | the one layer with a [wasm media type](WASM_LAYER_MEDIA_TYPES) |
//! | CNCF wasm artifact | [`WASM_CONFIG_V0`] (or the older [`WASM_CONFIG_V1`]) | layer 0 |
//!
//! Tar layers are the rootfs's business (classic images): they are never a payload here.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Config of the CNCF TAG wasm OCI artifact (what `wkg oci push` writes).
pub const WASM_CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";
/// The older config media type of `wasm-to-oci` and early runwasi/Spin tooling.
pub const WASM_CONFIG_V1: &str = "application/vnd.wasm.config.v1+json";
/// Layer media types whose bytes are a `.wasm` file (not a tar).
pub const WASM_LAYER_MEDIA_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];
/// The layer annotation naming the file a layer holds (`wkg` and ORAS set it).
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

const INDEX_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// What was wrong with an image's documents.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    #[error("image {what} is not valid JSON: {message}")]
    Json { what: &'static str, message: String },
    #[error(
        "image index has no manifest for a wasm platform (os wasip1/wasip2/wasi, architecture wasm) among {count}"
    )]
    NoWasmManifest { count: usize },
    #[error("image has no wasm layer (media type one of {}); layers: [{layers}]", WASM_LAYER_MEDIA_TYPES.join(", "))]
    NoWasmLayer { layers: String },
    #[error(
        "image has {count} wasm layers ({digests}) and its form allows only one: which is the entrypoint is ambiguous"
    )]
    TooManyWasmLayers { count: usize, digests: String },
    #[error("wasm artifact's layer 0 ({digest}) has media type {media_type:?}, which is not wasm")]
    LayerNotWasm { digest: String, media_type: String },
}

/// A content descriptor (the fields wasmpod reads).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// The `os` of an image config (OCI image config and wasm artifact config alike).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ConfigPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

/// How an image carries its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// OCI/Docker image config over a non-tar wasm layer: args as for a classic image.
    OciImage,
    /// A wasm artifact config: the guest's `argv[0]` is the module's name.
    Artifact,
}

/// The layer to run and how the image carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub form: Form,
    pub layer: Descriptor,
}

fn json<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T, ManifestError> {
    serde_json::from_slice(bytes).map_err(|e| ManifestError::Json {
        what,
        message: e.to_string(),
    })
}

/// True for the media types of an image index (OCI or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    INDEX_MEDIA_TYPES.contains(&media_type)
}

/// The manifest of an index to run: the one whose platform is wasm, else the only one.
pub fn pick_manifest(index_json: &[u8]) -> Result<Descriptor, ManifestError> {
    let index: Index = json("index", index_json)?;
    let is_wasm = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            p.architecture == "wasm" && matches!(p.os.as_str(), "wasip1" | "wasip2" | "wasi")
        })
    };
    if let Some(found) = index.manifests.iter().find(is_wasm) {
        return Ok(found.clone());
    }
    match index.manifests.as_slice() {
        [only] => Ok(only.clone()),
        all => Err(ManifestError::NoWasmManifest { count: all.len() }),
    }
}

/// Parses a manifest document.
pub fn parse_manifest(manifest_json: &[u8]) -> Result<Manifest, ManifestError> {
    json("manifest", manifest_json)
}

/// Parses the `os`/`architecture` of a config document.
pub fn parse_config(config_json: &[u8]) -> Result<ConfigPlatform, ManifestError> {
    json("config", config_json)
}

fn is_wasm_layer(d: &Descriptor) -> bool {
    WASM_LAYER_MEDIA_TYPES.contains(&d.media_type.as_str())
}

/// The payload layer of `manifest` (see the module's table).
pub fn payload(manifest: &Manifest) -> Result<Payload, ManifestError> {
    let config_type = manifest.config.media_type.as_str();
    if config_type == WASM_CONFIG_V0 || config_type == WASM_CONFIG_V1 {
        let Some(first) = manifest.layers.first() else {
            return Err(ManifestError::NoWasmLayer {
                layers: String::new(),
            });
        };
        if !is_wasm_layer(first) {
            return Err(ManifestError::LayerNotWasm {
                digest: first.digest.clone(),
                media_type: first.media_type.clone(),
            });
        }
        return Ok(Payload {
            form: Form::Artifact,
            layer: first.clone(),
        });
    }
    let wasm: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|d| is_wasm_layer(d))
        .collect();
    match wasm.as_slice() {
        [one] => Ok(Payload {
            form: Form::OciImage,
            layer: (*one).clone(),
        }),
        [] => Err(ManifestError::NoWasmLayer {
            layers: manifest
                .layers
                .iter()
                .map(|d| d.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        many => Err(ManifestError::TooManyWasmLayers {
            count: many.len(),
            digests: many
                .iter()
                .map(|d| d.digest.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The module's name for an artifact's `argv[0]`: the layer's title annotation, else the
/// last path segment of the image name (without tag or digest) with `.wasm`.
pub fn module_name(layer: &Descriptor, image_name: &str) -> String {
    if let Some(title) = layer.annotations.get(TITLE_ANNOTATION)
        && !title.is_empty()
    {
        return title.clone();
    }
    let without_digest = image_name.split('@').next().unwrap_or_default();
    let last = without_digest.rsplit('/').next().unwrap_or_default();
    let repo = last.split(':').next().unwrap_or_default();
    if repo.is_empty() {
        "module.wasm".to_owned()
    } else {
        format!("{repo}.wasm")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, layers: &[&str]) -> Manifest {
        let layers: Vec<String> = layers
            .iter()
            .enumerate()
            .map(|(i, t)| format!(r#"{{"mediaType":"{t}","digest":"sha256:{i}","size":1}}"#))
            .collect();
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{config}","digest":"sha256:c","size":2}},"layers":[{}]}}"#,
            layers.join(",")
        );
        parse_manifest(doc.as_bytes()).unwrap()
    }

    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

    #[test]
    fn oci_image_with_one_wasm_layer_is_that_layer() {
        for t in WASM_LAYER_MEDIA_TYPES {
            let p = payload(&manifest(OCI_CONFIG, &[t])).unwrap();
            assert_eq!(p.form, Form::OciImage);
            assert_eq!(p.layer.digest, "sha256:0");
        }
    }

    #[test]
    fn artifact_runs_layer_zero() {
        for config in [WASM_CONFIG_V0, WASM_CONFIG_V1] {
            let p = payload(&manifest(config, &["application/wasm", "application/wasm"])).unwrap();
            assert_eq!(p.form, Form::Artifact);
            assert_eq!(p.layer.digest, "sha256:0");
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        assert!(matches!(
            payload(&manifest(OCI_CONFIG, &[TAR])),
            Err(ManifestError::NoWasmLayer { .. })
        ));
        assert!(matches!(
            payload(&manifest(WASM_CONFIG_V0, &[])),
            Err(ManifestError::NoWasmLayer { .. })
        ));
        let err = payload(&manifest(
            OCI_CONFIG,
            &["application/wasm", "application/wasm"],
        ))
        .unwrap_err();
        assert!(err.to_string().contains("2 wasm layers"), "{err}");
        let err = payload(&manifest(WASM_CONFIG_V0, &["application/octet-stream"])).unwrap_err();
        assert!(err.to_string().contains("not wasm"), "{err}");
    }

    #[test]
    fn index_prefers_the_wasm_platform() {
        let doc = br#"{"manifests":[
            {"mediaType":"m","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"m","digest":"sha256:b","size":1,"platform":{"os":"wasip2","architecture":"wasm"}}]}"#;
        assert_eq!(pick_manifest(doc).unwrap().digest, "sha256:b");
        let single = br#"{"manifests":[{"mediaType":"m","digest":"sha256:a","size":1}]}"#;
        assert_eq!(pick_manifest(single).unwrap().digest, "sha256:a");
        let none = br#"{"manifests":[]}"#;
        assert_eq!(
            pick_manifest(none),
            Err(ManifestError::NoWasmManifest { count: 0 })
        );
    }

    #[test]
    fn module_name_from_title_else_image_name() {
        let mut layer = manifest(WASM_CONFIG_V0, &["application/wasm"]).layers[0].clone();
        assert_eq!(
            module_name(&layer, "localhost:5000/a/hello:1"),
            "hello.wasm"
        );
        assert_eq!(module_name(&layer, "r/x@sha256:ab"), "x.wasm");
        layer
            .annotations
            .insert(TITLE_ANNOTATION.into(), "app.wasm".into());
        assert_eq!(module_name(&layer, "r/x:1"), "app.wasm");
    }
}
