//! What goes into an image: [`ImageBuilder`] collects the name, platform, process config,
//! the files, directories and symlinks of the tar layer and raw Wasm layers, and builds
//! them into an [`Image`].

use std::collections::BTreeMap;
use std::path::Path;

use super::names::{oci_arch, relative_path, split_name};
use super::oci::{self, Blob, Platform, ProcessConfig};
use super::tarball::TarWriter;
use super::{
    BUSYBOX_APPLETS, HOST_BUSYBOX, Image, ImageError, TAR_LAYER_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE,
};

/// One entry of the tar layer, keyed by its path relative to `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// Collects what goes into an image; see the [module docs](super).
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
    /// Raw layers: `(media type, bytes)`.
    wasm_layers: Vec<(String, Vec<u8>)>,
    /// A wasm artifact's config media type, instead of an OCI image config.
    config_media_type: Option<String>,
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
            config_media_type: None,
        }
    }

    /// A `wasip1/wasm` image whose entrypoint is the file at the absolute path `entry`,
    /// holding `wasm` (mode 0755).
    pub fn wasm(name: impl Into<String>, entry: &str, wasm: impl Into<Vec<u8>>) -> Self {
        Self::new(name)
            .platform("wasip1", "wasm")
            .entrypoint([entry])
            .file(entry, wasm, 0o755)
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
    pub fn wasm_layer(self, wasm: impl Into<Vec<u8>>) -> Self {
        self.raw_layer(WASM_LAYER_MEDIA_TYPE, wasm)
    }

    /// Adds a raw (non-tar) layer of `media_type` (a wasm media type, or anything else to
    /// make a bad image) after the tar layer (if any).
    pub fn raw_layer(mut self, media_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        self.wasm_layers.push((media_type.into(), data.into()));
        self
    }

    /// Makes the image a wasm OCI artifact: a config of `media_type` (e.g.
    /// [`WASM_CONFIG_V0_MEDIA_TYPE`](super::WASM_CONFIG_V0_MEDIA_TYPE)) instead of an OCI
    /// image config; entrypoint, cmd, env and working dir are then not written.
    pub fn artifact_config(mut self, media_type: impl Into<String>) -> Self {
        self.config_media_type = Some(media_type.into());
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
        let platform = Platform {
            architecture: &architecture,
            os: &os,
        };

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
                .map(|(media_type, data)| Blob::new(media_type.clone(), data.clone())),
        );

        let process = ProcessConfig {
            entrypoint: &self.entrypoint,
            cmd: &self.cmd,
            env: &self.env,
            working_dir: self.working_dir.as_deref(),
        };
        let config = match &self.config_media_type {
            Some(media_type) => oci::artifact_config_blob(media_type, platform, &layers),
            None => oci::config_blob(platform, process, diff_ids, layers.is_empty()),
        };
        let manifest = oci::manifest_blob(&config, &layers);
        let index = oci::index_json(&manifest, platform, &full_name, tag);

        Ok(Image {
            name: full_name,
            index,
            manifest,
            config,
            layers,
            platform: (os, architecture),
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
