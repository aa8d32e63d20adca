//! A private OCI registry for tests: Debian's `docker-registry` (the CNCF distribution
//! registry) serving plain HTTP on `127.0.0.1:<free port>` from its own storage directory,
//! and a push client ([`Registry::push`]) built on `oci-client`, the OCI client `wkg` uses.
//!
//! containerd reaches it two ways: `ctr images pull --plain-http`, and CRI's `PullImage`
//! through a `hosts.toml` in containerd's `config_path` ([`Registry::trust`]). The
//! registry is killed and its storage removed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::image::Image;
use crate::poll::wait_until;

/// Debian's package puts the registry here (`apt-get install docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long the registry may take to answer after starting.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running registry on 127.0.0.1; stopped and its storage removed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    pusher: Pusher,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// A port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True when `GET /v2/` answers with HTTP 200.
fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

impl Registry {
    /// Starts a registry with its own config and storage directory on a free port.
    pub fn start() -> anyhow::Result<Self> {
        if !Path::new(REGISTRY_BIN).is_file() {
            bail!("{REGISTRY_BIN} missing: apt-get install docker-registry (scripts/setup.sh)");
        }
        let dir = tempfile::Builder::new()
            .prefix("wasmpod-registry-")
            .tempdir()?;
        let port = free_port()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {:?}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage")
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {REGISTRY_BIN}"))?;
        let mut registry = Registry {
            child,
            port,
            dir,
            pusher: Pusher::plain_http()?,
        };
        let answered = wait_until(START_TIMEOUT, "the registry answering", || {
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Some(Err(status));
            }
            answers(port).then_some(Ok(()))
        });
        match answered {
            Ok(Ok(())) => Ok(registry),
            Ok(Err(status)) => bail!("registry exited with {status}: {}", registry.log()),
            Err(_) => bail!(
                "registry did not answer within {START_TIMEOUT:?}: {}",
                registry.log()
            ),
        }
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Lets containerd's CRI pull from this registry over plain HTTP: writes
    /// `<hosts_dir>/<host>/hosts.toml` (`hosts_dir` is containerd's `config_path`).
    pub fn trust(&self, hosts_dir: &Path) -> anyhow::Result<PathBuf> {
        let host = self.host();
        let dir = hosts_dir.join(&host);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("hosts.toml");
        std::fs::write(
            &path,
            format!(
                "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
            ),
        )?;
        Ok(path)
    }

    /// Pushes `image` as `<host>/<repository>:<tag>`, alone or inside an index naming its
    /// platform; returns the full reference.
    pub fn push(
        &self,
        image: &Image,
        repository: &str,
        tag: &str,
        in_index: bool,
    ) -> anyhow::Result<String> {
        let reference = format!("{}/{repository}:{tag}", self.host());
        self.pusher.push(image, &reference, in_index)?;
        Ok(reference)
    }
}

/// Pushes built images to a registry over plain HTTP with `oci-client`.
pub struct Pusher {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").finish_non_exhaustive()
    }
}

impl Pusher {
    /// A client speaking plain HTTP (no TLS: local and in-cluster registries).
    pub fn plain_http() -> anyhow::Result<Self> {
        // reqwest wants a process-wide crypto provider even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        Ok(Pusher { rt, client })
    }

    /// Pushes `image` (blobs, then the manifest) as `reference` (`host/repo:tag`), or with
    /// `in_index` the manifest by digest and an index naming its platform as `reference`;
    /// returns the digest `reference` now names.
    pub fn push(&self, image: &Image, reference: &str, in_index: bool) -> anyhow::Result<String> {
        let parsed: Reference = reference
            .parse()
            .with_context(|| format!("image reference {reference:?}"))?;
        let client = &self.client;
        self.rt.block_on(async {
            client
                .store_auth_if_needed(parsed.resolve_registry(), &RegistryAuth::Anonymous)
                .await;
            let (_, config_digest, config) = image.config_blob();
            client
                .push_blob(&parsed, config.to_vec(), config_digest)
                .await
                .context("pushing the config")?;
            for (media_type, digest, data) in image.layer_blobs() {
                client
                    .push_blob(&parsed, data.to_vec(), digest)
                    .await
                    .with_context(|| format!("pushing layer {digest} ({media_type})"))?;
            }
            let (media_type, digest, manifest) = image.manifest_blob();
            let manifest_ref = if in_index {
                parsed.clone_with_digest(digest.to_owned())
            } else {
                parsed.clone()
            };
            client
                .push_manifest_raw(&manifest_ref, manifest.to_vec(), media_type.parse()?)
                .await
                .context("pushing the manifest")?;
            if !in_index {
                return anyhow::Ok(digest.to_owned());
            }
            let (index_digest, index) = image.registry_index();
            client
                .push_manifest_raw(&parsed, index, crate::image::INDEX_MEDIA_TYPE.parse()?)
                .await
                .context("pushing the index")?;
            anyhow::Ok(index_digest)
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
