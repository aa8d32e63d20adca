//! Unit tests of the image builder: layout entries, layer contents, digests, determinism,
//! Wasm layers, name and path validation, and the busybox image.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::names::split_name;
use super::*;

const WASM: &[u8] = b"\0asm\x01\0\0\0";

fn hello() -> ImageBuilder {
    ImageBuilder::new("localhost/wasmpod/hello:latest")
        .platform("wasip1", "wasm")
        .entrypoint(["/hello.wasm"])
        .env("GREETING", "hi")
        .file("/hello.wasm", WASM, 0o755)
        .file("/etc/app/conf.txt", "x=1\n", 0o644)
        .symlink("/app.wasm", "hello.wasm")
}

/// `(path, entry type, mode, uid, gid, mtime, contents)` of every entry.
type TarEntry = (String, tar::EntryType, u32, u64, u64, u64, Vec<u8>);

fn tar_entries(bytes: &[u8]) -> Vec<TarEntry> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            (
                entry.path().unwrap().to_str().unwrap().to_owned(),
                header.entry_type(),
                header.mode().unwrap(),
                header.uid().unwrap(),
                header.gid().unwrap(),
                header.mtime().unwrap(),
                data,
            )
        })
        .collect()
}

fn blobs(layout: &[TarEntry]) -> BTreeMap<String, Vec<u8>> {
    layout
        .iter()
        .filter_map(|(path, _, _, _, _, _, data)| {
            let hex = path.strip_prefix("blobs/sha256/")?;
            (!hex.is_empty()).then(|| (format!("sha256:{hex}"), data.clone()))
        })
        .collect()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn layout_tarball_has_the_expected_entries() {
    let image = hello().build().unwrap();
    let layout = tar_entries(&image.to_tar().unwrap());
    let names: Vec<&str> = layout.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        &names[..4],
        ["oci-layout", "index.json", "blobs/", "blobs/sha256/"]
    );
    assert_eq!(names.len(), 7, "config, manifest and one layer: {names:?}");
    assert_eq!(json(&layout[0].6), json!({"imageLayoutVersion": "1.0.0"}));
}

#[test]
fn layer_has_parents_symlinks_and_zeroed_metadata() {
    let image = hello().build().unwrap();
    let (media_type, layer) = image.layers().next().unwrap();
    assert_eq!(media_type, TAR_LAYER_MEDIA_TYPE);
    let entries = tar_entries(layer);
    let summary: Vec<(&str, tar::EntryType, u32)> = entries
        .iter()
        .map(|(path, kind, mode, ..)| (path.as_str(), *kind, *mode))
        .collect();
    use tar::EntryType::{Directory, Regular, Symlink};
    assert_eq!(
        summary,
        [
            ("app.wasm", Symlink, 0o777),
            ("etc/", Directory, 0o755),
            ("etc/app/", Directory, 0o755),
            ("etc/app/conf.txt", Regular, 0o644),
            ("hello.wasm", Regular, 0o755),
        ]
    );
    for (path, _, _, uid, gid, mtime, _) in &entries {
        assert_eq!((*uid, *gid, *mtime), (0, 0, 0), "{path}");
    }
    assert_eq!(entries[4].6, WASM);
    let mut archive = tar::Archive::new(layer);
    let link = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(
        link.link_name().unwrap().unwrap().to_str(),
        Some("hello.wasm")
    );
}

#[test]
fn digests_match_blob_contents() {
    let image = hello().build().unwrap();
    let layout = tar_entries(&image.to_tar().unwrap());
    let blobs = blobs(&layout);
    for (digest, data) in &blobs {
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        assert_eq!(&actual, digest);
    }

    let index = json(&layout[1].6);
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], INDEX_MEDIA_TYPE);
    let desc = &index["manifests"][0];
    assert_eq!(desc["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(desc["digest"], image.manifest_digest());
    assert_eq!(
        desc["annotations"],
        json!({
            "io.containerd.image.name": "localhost/wasmpod/hello:latest",
            "org.opencontainers.image.ref.name": "latest",
        })
    );
    assert_eq!(
        desc["platform"],
        json!({"architecture": "wasm", "os": "wasip1"})
    );
    let manifest_bytes = &blobs[desc["digest"].as_str().unwrap()];
    assert_eq!(desc["size"], manifest_bytes.len());

    let manifest = json(manifest_bytes);
    let config_desc = &manifest["config"];
    assert_eq!(config_desc["mediaType"], CONFIG_MEDIA_TYPE);
    let config_bytes = &blobs[config_desc["digest"].as_str().unwrap()];
    assert_eq!(config_desc["size"], config_bytes.len());
    let layer_desc = &manifest["layers"][0];
    assert_eq!(layer_desc["mediaType"], TAR_LAYER_MEDIA_TYPE);
    let layer = &blobs[layer_desc["digest"].as_str().unwrap()];
    assert_eq!(layer_desc["size"], layer.len());

    let config = json(config_bytes);
    assert_eq!(config["os"], "wasip1");
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(
        config["config"],
        json!({"Entrypoint": ["/hello.wasm"], "Env": ["GREETING=hi"]})
    );
    assert_eq!(config["rootfs"]["type"], "layers");
    // An uncompressed layer's diff ID is its blob digest.
    assert_eq!(config["rootfs"]["diff_ids"], json!([layer_desc["digest"]]));
}

#[test]
fn output_is_deterministic() {
    let first = hello().build().unwrap().to_tar().unwrap();
    let second = hello().build().unwrap().to_tar().unwrap();
    assert_eq!(first, second);
    assert_eq!(hello().digest().unwrap(), hello().digest().unwrap());
    let other = hello().env("MORE", "1").digest().unwrap();
    assert_ne!(other, hello().digest().unwrap());
}

#[test]
fn wasm_layer_image_has_no_diff_ids() {
    let image = ImageBuilder::new("localhost/wasmpod/artifact")
        .wasm_layer(WASM)
        .build()
        .unwrap();
    assert_eq!(image.name(), "localhost/wasmpod/artifact:latest");
    let manifest = json(image.manifest_json());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], WASM_LAYER_MEDIA_TYPE);
    assert_eq!(layers[0]["size"], WASM.len());
    assert_eq!(
        layers[0]["digest"],
        format!("sha256:{}", hex::encode(Sha256::digest(WASM)))
    );
    let config = json(image.config_json());
    assert_eq!(config["os"], "wasip1");
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["rootfs"], json!({"type": "layers", "diff_ids": []}));
}

#[test]
fn names_and_paths_are_validated() {
    assert_eq!(split_name("a/b:1").unwrap(), ("a/b", "1"));
    assert_eq!(
        split_name("host:5000/a").unwrap(),
        ("host:5000/a", "latest")
    );
    assert_eq!(split_name("host:5000/a:v2").unwrap(), ("host:5000/a", "v2"));
    for bad in ["", "a:", "a@sha256:00", ":x"] {
        assert!(
            matches!(split_name(bad), Err(ImageError::InvalidName(_))),
            "{bad}"
        );
    }
    for bad in ["rel.wasm", "/a/../b", "/"] {
        let err = ImageBuilder::new("x").file(bad, WASM, 0o644).build();
        assert!(matches!(err, Err(ImageError::InvalidPath(_))), "{bad}");
    }
}

#[test]
fn busybox_image_links_applets() {
    if !Path::new(HOST_BUSYBOX).exists() {
        panic!("{HOST_BUSYBOX} missing: apt-get install busybox-static");
    }
    let image = ImageBuilder::busybox("localhost/busybox:latest")
        .unwrap()
        .build()
        .unwrap();
    let config = json(image.config_json());
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["architecture"],
        oci_arch(std::env::consts::ARCH).unwrap()
    );
    let (_, layer) = image.layers().next().unwrap();
    let entries = tar_entries(layer);
    let sh = entries.iter().find(|e| e.0 == "bin/sh").unwrap();
    assert_eq!(sh.1, tar::EntryType::Symlink);
    assert!(entries.iter().any(|e| e.0 == "bin/"));
    assert!(entries.iter().any(|e| e.0 == "bin/busybox" && e.2 == 0o755));
}
