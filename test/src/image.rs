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

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

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
/// Annotation containerd uses as the image name on import.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// OCI annotation holding the tag of a manifest in an image layout.
pub const OCI_REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Where the host's static busybox lives (Debian package `busybox-static`).
pub const HOST_BUSYBOX: &str = "/bin/busybox";
/// The applets [`ImageBuilder::busybox`] links to `/bin/busybox`.
pub const BUSYBOX_APPLETS: &[&str] = &["sh", "true", "sleep", "echo", "cat", "nc", "wget"];

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
    /// The host architecture has no OCI name known to [`oci_arch`].
    #[error("no OCI architecture name for host architecture {0:?}")]
    UnknownHostArch(&'static str),
}

impl ImageError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// One entry of the tar layer, keyed by its path relative to `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// Collects what goes into an image; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    name: String,
    platform: Option<(String, String)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: Option<String>,
    /// Paths relative to `/` ("bin/sh"); the BTreeMap order puts parents before children.
    entries: BTreeMap<String, Entry>,
    wasm_layers: Vec<Vec<u8>>,
}

impl ImageBuilder {
    /// Starts an image called `name`, e.g. `localhost/wasmpod/hello:latest`. A name
    /// without a tag gets `:latest`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            platform: None,
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            entries: BTreeMap::new(),
            wasm_layers: Vec::new(),
        }
    }

    /// A `linux/<host arch>` image holding the host's static busybox as `/bin/busybox`,
    /// with [`BUSYBOX_APPLETS`] as symlinks to it and `Cmd` `/bin/sh`.
    pub fn busybox(name: impl Into<String>) -> Result<Self, ImageError> {
        let arch = oci_arch(std::env::consts::ARCH)
            .ok_or(ImageError::UnknownHostArch(std::env::consts::ARCH))?;
        let data = std::fs::read(HOST_BUSYBOX).map_err(|e| {
            ImageError::io(
                format!("reading {HOST_BUSYBOX} (install Debian package busybox-static)"),
                e,
            )
        })?;
        let mut builder = Self::new(name)
            .platform("linux", arch)
            .env("PATH", "/bin")
            .cmd(["/bin/sh"])
            .file("/bin/busybox", data, 0o755);
        for applet in BUSYBOX_APPLETS {
            builder = builder.symlink(format!("/bin/{applet}"), "busybox");
        }
        Ok(builder)
    }

    /// Sets the platform (`os`, `architecture`) of the config and the index descriptor.
    ///
    /// Defaults to `wasip1`/`wasm`.
    pub fn platform(mut self, os: impl Into<String>, architecture: impl Into<String>) -> Self {
        self.platform = Some((os.into(), architecture.into()));
        self
    }

    /// Sets `config.Entrypoint`.
    pub fn entrypoint<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entrypoint = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `config.Cmd` (the default arguments after the entrypoint).
    pub fn cmd<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = args.into_iter().map(Into::into).collect();
        self
    }

    /// Appends `KEY=VALUE` to `config.Env`.
    pub fn env(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.env
            .push(format!("{}={}", key.as_ref(), value.as_ref()));
        self
    }

    /// Sets `config.WorkingDir`.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Adds a regular file at the absolute `path` of the tar layer. Missing parent
    /// directories are added with mode 0755. A later call for the same path wins.
    pub fn file(mut self, path: impl AsRef<str>, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        let data = data.into();
        self.entries
            .insert(path.as_ref().to_owned(), Entry::File { data, mode });
        self
    }

    /// Adds a directory at the absolute `path` of the tar layer.
    pub fn dir(mut self, path: impl AsRef<str>, mode: u32) -> Self {
        self.entries
            .insert(path.as_ref().to_owned(), Entry::Dir { mode });
        self
    }

    /// Adds a symlink at the absolute `path` pointing at `target` (stored verbatim, so it
    /// may be relative).
    pub fn symlink(mut self, path: impl AsRef<str>, target: impl Into<String>) -> Self {
        let target = target.into();
        self.entries
            .insert(path.as_ref().to_owned(), Entry::Symlink { target });
        self
    }

    /// Adds a raw [`WASM_LAYER_MEDIA_TYPE`] layer after the tar layer (if any). Such
    /// layers are not unpacked into a rootfs, so they add nothing to `rootfs.diff_ids`.
    pub fn wasm_layer(mut self, wasm: impl Into<Vec<u8>>) -> Self {
        self.wasm_layers.push(wasm.into());
        self
    }

    /// Builds all blobs.
    pub fn build(&self) -> Result<Image, ImageError> {
        let (repository, tag) = split_name(&self.name)?;
        let full_name = format!("{repository}:{tag}");
        let (os, architecture) = self
            .platform
            .clone()
            .unwrap_or_else(|| ("wasip1".into(), "wasm".into()));

        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        if !self.entries.is_empty() {
            let tar = self.layer_tar()?;
            // Uncompressed, so the diff ID is the digest of the blob itself.
            let blob = Blob::new(TAR_LAYER_MEDIA_TYPE, tar);
            diff_ids.push(blob.digest.clone());
            layers.push(blob);
        }
        layers.extend(
            self.wasm_layers
                .iter()
                .map(|wasm| Blob::new(WASM_LAYER_MEDIA_TYPE, wasm.clone())),
        );

        let config = ImageConfig {
            architecture: &architecture,
            os: &os,
            config: ProcessConfig {
                entrypoint: &self.entrypoint,
                cmd: &self.cmd,
                env: &self.env,
                working_dir: self.working_dir.as_deref(),
            },
            rootfs: RootFs {
                kind: "layers",
                diff_ids,
            },
            history: vec![History {
                created_by: "wasmpod-image",
                empty_layer: layers.is_empty().then_some(true),
            }],
        };
        let config = Blob::new(CONFIG_MEDIA_TYPE, to_json(&config));

        let manifest = Manifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE,
            config: config.descriptor(),
            layers: layers.iter().map(Blob::descriptor).collect(),
        };
        let manifest = Blob::new(MANIFEST_MEDIA_TYPE, to_json(&manifest));

        let index = Index {
            schema_version: 2,
            media_type: INDEX_MEDIA_TYPE,
            manifests: vec![Descriptor {
                platform: Some(Platform {
                    architecture: &architecture,
                    os: &os,
                }),
                annotations: Some(BTreeMap::from([
                    (CONTAINERD_NAME_ANNOTATION, full_name.clone()),
                    (OCI_REF_NAME_ANNOTATION, tag.to_owned()),
                ])),
                ..manifest.descriptor()
            }],
        };
        let index = to_json(&index);

        Ok(Image {
            name: full_name,
            index,
            manifest,
            config,
            layers,
        })
    }

    /// The manifest digest (`sha256:…`) the image will have.
    pub fn digest(&self) -> Result<String, ImageError> {
        Ok(self.build()?.manifest_digest().to_owned())
    }

    /// Builds the image and writes its OCI layout tarball to `path`.
    pub fn write_tar(&self, path: impl AsRef<Path>) -> Result<Image, ImageError> {
        let image = self.build()?;
        image.write_tar(path)?;
        Ok(image)
    }

    /// The tar layer: every entry plus its missing parent directories, in path order.
    fn layer_tar(&self) -> Result<Vec<u8>, ImageError> {
        let mut entries = BTreeMap::new();
        for (path, entry) in &self.entries {
            let rel = relative_path(path)?;
            let mut parent = Path::new(&rel).parent();
            while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
                entries
                    .entry(dir.to_str().expect("paths are UTF-8").to_owned())
                    .or_insert(Entry::Dir { mode: 0o755 });
                parent = dir.parent();
            }
            entries.insert(rel, entry.clone());
        }

        let mut tar = TarWriter::new();
        for (path, entry) in &entries {
            match entry {
                Entry::Dir { mode } => tar.dir(&format!("{path}/"), *mode)?,
                Entry::File { data, mode } => tar.file(path, data, *mode)?,
                Entry::Symlink { target } => tar.symlink(path, target)?,
            }
        }
        tar.finish()
    }
}

/// The built blobs of an image; see [`ImageBuilder::build`].
#[derive(Debug, Clone)]
pub struct Image {
    name: String,
    index: Vec<u8>,
    manifest: Blob,
    config: Blob,
    layers: Vec<Blob>,
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
            .map(|blob| (blob.media_type, blob.data.as_slice()))
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

/// The OCI architecture name of a Rust `std::env::consts::ARCH` value.
pub fn oci_arch(rust_arch: &str) -> Option<&'static str> {
    Some(match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        _ => return None,
    })
}

/// Splits `repo[:tag]` into repository and tag (default `latest`).
fn split_name(name: &str) -> Result<(&str, &str), ImageError> {
    let invalid = || ImageError::InvalidName(name.to_owned());
    if name.is_empty() || name.contains('@') {
        return Err(invalid());
    }
    let last_component = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_component..].rfind(':') {
        Some(i) => {
            let (repo, tag) = name.split_at(last_component + i);
            let tag = &tag[1..];
            if repo.is_empty() || tag.is_empty() {
                return Err(invalid());
            }
            Ok((repo, tag))
        }
        None => Ok((name, "latest")),
    }
}

/// `/a/b` → `a/b`, refusing relative paths, `..` and the root itself.
fn relative_path(path: &str) -> Result<String, ImageError> {
    let invalid = || ImageError::InvalidPath(path.to_owned());
    let path_buf = PathBuf::from(path);
    if !path_buf.is_absolute() {
        return Err(invalid());
    }
    let mut parts = Vec::new();
    for component in path_buf.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(invalid)?),
            Component::ParentDir | Component::Prefix(_) => return Err(invalid()),
        }
    }
    if parts.is_empty() {
        return Err(invalid());
    }
    Ok(parts.join("/"))
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("image documents always serialize")
}

/// A content-addressed blob.
#[derive(Debug, Clone)]
struct Blob {
    media_type: &'static str,
    digest: String,
    data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, data: Vec<u8>) -> Self {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        Self {
            media_type,
            digest,
            data,
        }
    }

    fn hex(&self) -> &str {
        &self.digest["sha256:".len()..]
    }

    fn descriptor(&self) -> Descriptor<'_> {
        Descriptor {
            media_type: self.media_type,
            digest: &self.digest,
            size: self.data.len() as u64,
            platform: None,
            annotations: None,
        }
    }
}

/// Writes deterministic tar entries: mtime 0, uid/gid 0, no user or group names.
struct TarWriter(tar::Builder<Vec<u8>>);

impl TarWriter {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<(), ImageError> {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0
            .append_data(&mut header, path, data)
            .map_err(|e| ImageError::io(format!("adding {path} to tar"), e))
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<(), ImageError> {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        self.0
            .append_data(&mut header, path, std::io::empty())
            .map_err(|e| ImageError::io(format!("adding {path} to tar"), e))
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0
            .append_link(&mut header, path, target)
            .map_err(|e| ImageError::io(format!("adding {path} to tar"), e))
    }

    fn finish(self) -> Result<Vec<u8>, ImageError> {
        self.0
            .into_inner()
            .map_err(|e| ImageError::io("finishing tar", e))
    }
}

// --- OCI documents. Field order here is the order in the JSON, which is part of the
// --- digest, so it must not depend on anything but these definitions.

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

#[derive(Serialize)]
struct Platform<'a> {
    architecture: &'a str,
    os: &'a str,
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

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessConfig<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    entrypoint: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cmd: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

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
}
