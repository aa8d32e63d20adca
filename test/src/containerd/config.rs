//! How a private containerd is set up: the options of [`ContainerdBuilder`], the
//! `config.toml` they render to (schema 2 or 3, CRI off or on, the wasmpod runtime and its
//! options) and, for [`ContainerdBuilder::with_cri`], the private CNI bin and conf dirs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;

use super::{CRI_HANDLER, ConfigVersion, Containerd, ContainerdVersion, PAUSE_IMAGE, RUNTIME};

/// The test CNI plugin, chained after `loopback`: reports `lo`'s 127.0.0.1 as the pod
/// interface and creates nothing.
pub const CNI_REPORT_LO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/cni/wasmpod-report-lo");
/// Where Debian's `containernetworking-plugins` puts the `loopback` plugin.
pub const CNI_LOOPBACK: &str = "/usr/lib/cni/loopback";

/// How the harness finds the wasmpod shim.
#[derive(Debug, Clone, Default)]
pub(super) enum ShimLocation {
    /// `$WASMPOD_SHIM`, else next to the test binary's `deps/` directory.
    #[default]
    Auto,
    /// This exact binary.
    Path(PathBuf),
    /// No wasmpod shim (runc-only tests of the harness itself).
    None,
}

/// Options for a private containerd; build one with [`Containerd::builder`].
#[derive(Debug, Clone)]
pub struct ContainerdBuilder {
    pub(super) containerd_bin: PathBuf,
    pub(super) ctr_bin: PathBuf,
    config_version: ConfigVersion,
    cri: Option<String>,
    pub(super) cri_defaults: bool,
    runtime_options: Vec<(String, String)>,
    extra_config: String,
    pub(super) shim: ShimLocation,
    log_level: String,
    pub(super) start_timeout: Duration,
    pub(super) ctr_timeout: Duration,
}

impl Default for ContainerdBuilder {
    fn default() -> Self {
        Self {
            containerd_bin: PathBuf::from("containerd"),
            ctr_bin: PathBuf::from("ctr"),
            config_version: ConfigVersion::V2,
            cri: None,
            cri_defaults: false,
            runtime_options: Vec::new(),
            extra_config: String::new(),
            shim: ShimLocation::Auto,
            log_level: "debug".to_owned(),
            start_timeout: Duration::from_secs(20),
            ctr_timeout: Duration::from_secs(120),
        }
    }
}

impl ContainerdBuilder {
    /// The `containerd` binary to run (default: `containerd` on `PATH`).
    pub fn containerd_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.containerd_bin = path.into();
        self
    }

    /// The `ctr` binary to use (default: `ctr` on `PATH`).
    pub fn ctr_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.ctr_bin = path.into();
        self
    }

    /// Take both `containerd` and `ctr` from `dir` (e.g. a cached containerd 1.7 `bin/`).
    pub fn bin_dir(self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        self.containerd_bin(dir.join("containerd"))
            .ctr_bin(dir.join("ctr"))
    }

    /// The config schema version (must match the containerd binary).
    pub fn config_version(mut self, version: ConfigVersion) -> Self {
        self.config_version = version;
        self
    }

    /// Enable the CRI plugin, registering runtime handler `wasmpod`; `extra_toml` is
    /// appended to the config verbatim (CNI, sandbox image, `restrict_oom_score_adj`...).
    pub fn cri(mut self, extra_toml: impl Into<String>) -> Self {
        self.cri = Some(extra_toml.into());
        self
    }

    /// Enable the CRI plugin with everything a kubelet-style test needs on this machine
    /// (see the [module docs](super)); combine with [`ContainerdBuilder::cri`] for more.
    /// At start the CNI dirs are filled and [`PAUSE_IMAGE`] is imported.
    pub fn with_cri(mut self) -> Self {
        self.cri_defaults = true;
        self.cri.get_or_insert_with(String::new);
        self
    }

    /// Use the binaries and config schema of `version` (see [`ContainerdVersion`]).
    pub fn version(self, version: ContainerdVersion) -> Self {
        let b = self.config_version(version.config_version());
        match version.bin_dir() {
            Some(dir) => b.bin_dir(dir),
            None => b.containerd_bin("containerd").ctr_bin("ctr"),
        }
    }

    /// Add `key = value` (value is TOML, e.g. `"\"/x\""` or `"true"`) to the wasmpod
    /// runtime's `options` table (only written when CRI is enabled: that is where
    /// containerd 1.x reads runtime options from).
    pub fn runtime_option(mut self, key: impl Into<String>, toml_value: impl Into<String>) -> Self {
        self.runtime_options.push((key.into(), toml_value.into()));
        self
    }

    /// Append raw TOML to the generated config.
    pub fn extra_config(mut self, toml: impl AsRef<str>) -> Self {
        self.extra_config.push_str(toml.as_ref());
        self.extra_config.push('\n');
        self
    }

    /// Use this shim binary instead of locating it.
    pub fn shim(mut self, path: impl Into<PathBuf>) -> Self {
        self.shim = ShimLocation::Path(path.into());
        self
    }

    /// Start without the wasmpod shim on `PATH` (for runc-only tests).
    pub fn without_shim(mut self) -> Self {
        self.shim = ShimLocation::None;
        self
    }

    /// containerd's log level (default `debug`).
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// How long to wait for `ctr version` to answer after starting.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long one `ctr` invocation may take before it is killed.
    pub fn ctr_timeout(mut self, timeout: Duration) -> Self {
        self.ctr_timeout = timeout;
        self
    }

    /// Write the config, start containerd and wait until it answers.
    pub fn start(self) -> anyhow::Result<Containerd> {
        Containerd::start_with(self)
    }
}

/// The `config.toml` for `opts`, with root, state and sockets under `dir`.
pub(super) fn render_config(opts: &ContainerdBuilder, dir: &Path) -> String {
    let v3 = opts.config_version == ConfigVersion::V3;
    let mut c = String::new();
    c.push_str(if v3 { "version = 3\n" } else { "version = 2\n" });
    c.push_str(&format!("root = {:?}\n", dir.join("root")));
    c.push_str(&format!("state = {:?}\n", dir.join("state")));
    if opts.cri.is_none() {
        if v3 {
            c.push_str("disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.cri.v1.runtime\", \"io.containerd.cri.v1.images\", \"io.containerd.nri.v1.nri\"]\n");
        } else {
            c.push_str("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n");
        }
    } else if v3 {
        // NRI is on by default in 2.x and would listen on /var/run/nri/nri.sock.
        c.push_str("disabled_plugins = [\"io.containerd.nri.v1.nri\"]\n");
    }
    c.push_str(&format!(
        "\n[grpc]\n  address = {:?}\n\n[ttrpc]\n  address = {:?}\n\n[debug]\n  level = {:?}\n\n[metrics]\n  address = \"\"\n",
        dir.join("c.sock"),
        dir.join("c.ttrpc.sock"),
        opts.log_level
    ));
    // Keep the `opt` plugin out of the system's /opt/containerd.
    c.push_str(&format!(
        "\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {:?}\n",
        dir.join("root/opt")
    ));
    if let Some(extra) = &opts.cri {
        // Where runtimes live: 1.x `grpc.v1.cri.containerd`, 2.x `cri.v1.runtime.containerd`.
        let runtime_plugin = if v3 {
            "plugins.\"io.containerd.cri.v1.runtime\""
        } else {
            "plugins.\"io.containerd.grpc.v1.cri\""
        };
        let runtimes = format!("{runtime_plugin}.containerd.runtimes");
        if opts.cri_defaults {
            c.push_str(&cri_defaults(dir, v3, runtime_plugin));
        }
        c.push_str(&format!(
            "\n[{runtimes}.wasmpod]\n  runtime_type = {RUNTIME:?}\n"
        ));
        if !opts.runtime_options.is_empty() {
            c.push_str(&format!("\n[{runtimes}.wasmpod.options]\n"));
            for (k, v) in &opts.runtime_options {
                c.push_str(&format!("  {k} = {v}\n"));
            }
        }
        c.push('\n');
        c.push_str(extra);
        c.push('\n');
    }
    c.push('\n');
    c.push_str(&opts.extra_config);
    c
}

/// The CRI settings of [`ContainerdBuilder::with_cri`], without the wasmpod runtime table.
fn cri_defaults(dir: &Path, v3: bool, runtime_plugin: &str) -> String {
    let cni_bin = dir.join("cni/bin");
    let cni_conf = dir.join("cni/conf");
    let runc_root = dir.join("runc");
    let mut c = String::new();
    // Settings of the runtime side (1.x: all in grpc.v1.cri).
    c.push_str(&format!(
        "\n[{runtime_plugin}]\n  restrict_oom_score_adj = true\n  netns_mounts_under_state_dir = true\n  enable_selinux = false\n  disable_apparmor = true\n  enable_cdi = false\n"
    ));
    if v3 {
        c.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n\n[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = {PAUSE_IMAGE:?}\n\n[plugins.\"io.containerd.cri.v1.images\".runtime_platforms.{CRI_HANDLER}]\n  platform = \"wasip1/wasm\"\n"
        ));
    } else {
        c.push_str(&format!(
            "  sandbox_image = {PAUSE_IMAGE:?}\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n"
        ));
    }
    // 2.1 deprecates `bin_dir` (a deprecation warning shows as a CRI condition).
    let bin_key = if v3 { "bin_dirs" } else { "bin_dir" };
    let bin_value = if v3 {
        format!("[{cni_bin:?}]")
    } else {
        format!("{cni_bin:?}")
    };
    c.push_str(&format!(
        "\n[{runtime_plugin}.cni]\n  {bin_key} = {bin_value}\n  conf_dir = {cni_conf:?}\n  max_conf_num = 1\n"
    ));
    c.push_str(&registry_hosts(dir, v3));
    c.push_str(&format!(
        "\n[{runtime_plugin}.containerd]\n  default_runtime_name = \"runc\"\n\n[{runtime_plugin}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[{runtime_plugin}.containerd.runtimes.runc.options]\n  Root = {runc_root:?}\n"
    ));
    c
}

/// Where CRI reads registry hosts (`<host>/hosts.toml`) from: `<dir>/certs.d`, so a test
/// registry on 127.0.0.1 can be reached over plain HTTP (see
/// [`Registry::trust`](crate::registry::Registry::trust)).
pub(super) fn registry_hosts_dir(dir: &Path) -> PathBuf {
    dir.join("certs.d")
}

/// CRI's `registry.config_path` (1.x in `grpc.v1.cri`, 2.x in `cri.v1.images`).
fn registry_hosts(dir: &Path, v3: bool) -> String {
    let plugin = if v3 {
        "plugins.\"io.containerd.cri.v1.images\""
    } else {
        "plugins.\"io.containerd.grpc.v1.cri\""
    };
    format!(
        "\n[{plugin}.registry]\n  config_path = {:?}\n",
        registry_hosts_dir(dir)
    )
}

/// Fill `<dir>/cni/bin` (`loopback` and the test plugin) and `<dir>/cni/conf` (a
/// conflist chaining them).
pub(super) fn setup_cni(dir: &Path) -> anyhow::Result<()> {
    let bin = dir.join("cni/bin");
    let conf = dir.join("cni/conf");
    fs::create_dir_all(&bin)?;
    fs::create_dir_all(&conf)?;
    if !Path::new(CNI_LOOPBACK).is_file() {
        bail!(
            "{CNI_LOOPBACK} missing: apt-get install containernetworking-plugins (scripts/setup.sh)"
        );
    }
    std::os::unix::fs::symlink(CNI_LOOPBACK, bin.join("loopback"))?;
    std::os::unix::fs::symlink(CNI_REPORT_LO, bin.join("wasmpod-report-lo"))?;
    fs::write(
        conf.join("10-wasmpod-test.conflist"),
        r#"{
  "cniVersion": "1.0.0",
  "name": "wasmpod-test-lo",
  "plugins": [
    { "type": "loopback" },
    { "type": "wasmpod-report-lo" }
  ]
}
"#,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_disables_cri_by_default() {
        let c = render_config(&ContainerdBuilder::default(), Path::new("/tmp/x"));
        assert!(c.starts_with("version = 2\n"));
        assert!(c.contains("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"));
        assert!(c.contains("address = \"/tmp/x/c.sock\""));
        assert!(!c.contains("runtimes.wasmpod"));
    }

    #[test]
    fn config_with_cri_registers_runtime() {
        let b = ContainerdBuilder::default()
            .cri("[plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = true")
            .runtime_option("cache_dir", "\"/var/cache\"");
        let c = render_config(&b, Path::new("/tmp/x"));
        assert!(!c.contains("disabled_plugins"));
        assert!(c.contains("runtime_type = \"io.containerd.wasmpod.v1\""));
        assert!(c.contains("runtimes.wasmpod.options]\n  cache_dir = \"/var/cache\""));
        assert!(c.contains("restrict_oom_score_adj = true"));
    }
}
