//! Which containerd configuration a node uses, and what to restart after changing it.
//!
//! | flavour | file the installer edits | restart |
//! |---|---|---|
//! | containerd | `/etc/containerd/config.toml` (in place) or a drop-in `/etc/containerd/conf.d/wasmpod.toml` it imports | `containerd` |
//! | k3s / RKE2 | the Go template `config.toml.tmpl` (`config-v3.toml.tmpl` for containerd 2) next to the config k3s renders at every start | `k3s`/`k3s-agent`, `rke2-server`/`rke2-agent` |
//! | k0s | a drop-in in `/etc/k0s/containerd.d/` (k0s merges its CRI section itself) | `k0sworker`/`k0scontroller` |
//! | microk8s | `/var/snap/microk8s/current/args/containerd-template.toml` (in place) | `snap.microk8s.daemon-containerd` |
//!
//! Detection looks for each distribution's own directories and falls back to plain
//! containerd; `--flavour` overrides it. The schema version comes from the `version` key of
//! the file containerd really reads (for k3s/RKE2: the rendered config), else from
//! `containerd --version` on the host, else `--config-version`. The kubelet's cgroup driver
//! is read from its config file when asked to (`--cgroup-driver auto`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::hostfs::{HostError, HostRoot};
use crate::tomledit::{self, ConfigVersion, TomlError};

/// Detection failures.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A file could not be read.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A file is not valid TOML.
    #[error(transparent)]
    Toml(#[from] TomlError),
    /// `--flavour` named something unknown.
    #[error("unknown flavour {0:?} (expected containerd, k3s, rke2, k0s or microk8s)")]
    UnknownFlavour(String),
    /// `--cgroup-driver` named something unknown.
    #[error("unknown cgroup driver {0:?} (expected systemd, cgroupfs or auto)")]
    UnknownCgroupDriver(String),
}

/// The Kubernetes distribution owning containerd's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// A containerd installed on its own (kubeadm, kind, managed clouds...).
    Containerd,
    /// k3s (embedded containerd, config rendered from a template at every start).
    K3s,
    /// RKE2 (like k3s).
    Rke2,
    /// k0s (drop-ins in `/etc/k0s/containerd.d`).
    K0s,
    /// microk8s (snap, a template with `${SNAP}` placeholders).
    MicroK8s,
}

impl FromStr for Flavour {
    type Err = DetectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "containerd" => Ok(Self::Containerd),
            "k3s" => Ok(Self::K3s),
            "rke2" => Ok(Self::Rke2),
            "k0s" => Ok(Self::K0s),
            "microk8s" => Ok(Self::MicroK8s),
            other => Err(DetectError::UnknownFlavour(other.to_owned())),
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Containerd => "containerd",
            Self::K3s => "k3s",
            Self::Rke2 => "rke2",
            Self::K0s => "k0s",
            Self::MicroK8s => "microk8s",
        })
    }
}

/// Where the runtime registration goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Plain containerd: the root config and the drop-in to use when that is safe.
    Containerd {
        /// The root config (host path); may not exist yet.
        root: PathBuf,
        /// The drop-in file (host path).
        dropin: PathBuf,
    },
    /// k3s/RKE2: a Go template; containerd reads `rendered`, rewritten from it at start.
    Template {
        /// The template to write (host path).
        template: PathBuf,
        /// The rendered config (host path), read for its version.
        rendered: PathBuf,
    },
    /// k0s: one drop-in file of our own.
    K0s {
        /// The drop-in file (host path).
        dropin: PathBuf,
    },
    /// microk8s: a TOML template edited in place.
    MicroK8s {
        /// The template (host path).
        template: PathBuf,
    },
}

/// What detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The distribution.
    pub flavour: Flavour,
    /// The files involved.
    pub layout: Layout,
    /// The systemd unit to restart after a change.
    pub unit: String,
    /// containerd's socket (host path).
    pub socket: PathBuf,
    /// The schema version found in the file containerd reads, if it says.
    pub version: Option<ConfigVersion>,
}

/// Detection inputs (host paths).
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// Force a flavour instead of detecting it.
    pub flavour: Option<Flavour>,
    /// containerd's root config (plain containerd).
    pub containerd_config: PathBuf,
    /// Directory for our drop-in (plain containerd).
    pub dropin_dir: PathBuf,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            flavour: None,
            containerd_config: PathBuf::from("/etc/containerd/config.toml"),
            dropin_dir: PathBuf::from("/etc/containerd/conf.d"),
        }
    }
}

/// Name of our drop-in file.
pub const DROPIN_NAME: &str = "wasmpod.toml";
const K3S_DIR: &str = "/var/lib/rancher/k3s/agent/etc/containerd";
const RKE2_DIR: &str = "/var/lib/rancher/rke2/agent/etc/containerd";
const K0S_DROPIN_DIR: &str = "/etc/k0s/containerd.d";
const MICROK8S_TEMPLATE: &str = "/var/snap/microk8s/current/args/containerd-template.toml";

/// Find the flavour (unless forced) and its files.
pub fn detect(host: &HostRoot, opts: &DetectOptions) -> Result<Detected, DetectError> {
    let flavour = match opts.flavour {
        Some(f) => f,
        None if host.exists(K3S_DIR) => Flavour::K3s,
        None if host.exists(RKE2_DIR) => Flavour::Rke2,
        None if host.exists("/etc/k0s") || host.exists("/var/lib/k0s") => Flavour::K0s,
        None if host.exists(MICROK8S_TEMPLATE) => Flavour::MicroK8s,
        None => Flavour::Containerd,
    };
    let unit_if = |primary: &str, other: &str| {
        let unit_file = |u: &str| {
            [
                "/etc/systemd/system",
                "/lib/systemd/system",
                "/usr/lib/systemd/system",
            ]
            .iter()
            .any(|d| host.exists(Path::new(d).join(format!("{u}.service"))))
        };
        if unit_file(primary) || !unit_file(other) {
            primary.to_owned()
        } else {
            other.to_owned()
        }
    };
    let detected = match flavour {
        Flavour::Containerd => {
            let root = opts.containerd_config.clone();
            let (version, socket) = match host.read_text(&root)? {
                Some(text) => {
                    let doc = tomledit::parse(&root.display().to_string(), &text)?;
                    let socket = doc
                        .get("grpc")
                        .and_then(|g| g.get("address"))
                        .and_then(|a| a.as_str())
                        .filter(|a| !a.is_empty())
                        .map(PathBuf::from);
                    let version = tomledit::config_version(&doc).or_else(|| {
                        // No version key but settings: containerd 1.x reads it as version 1.
                        (!tomledit::is_empty(&doc)).then_some(ConfigVersion::V1)
                    });
                    (version, socket)
                }
                None => (None, None),
            };
            Detected {
                flavour,
                layout: Layout::Containerd {
                    root,
                    dropin: opts.dropin_dir.join(DROPIN_NAME),
                },
                unit: "containerd".to_owned(),
                socket: socket.unwrap_or_else(|| "/run/containerd/containerd.sock".into()),
                version,
            }
        }
        Flavour::K3s | Flavour::Rke2 => {
            let dir = Path::new(if flavour == Flavour::K3s {
                K3S_DIR
            } else {
                RKE2_DIR
            });
            let rendered = dir.join("config.toml");
            let mut version = match host.read_text(&rendered)? {
                // Rendered from a template: parse errors here are k3s's business.
                Some(text) => tomledit::parse("", &text)
                    .ok()
                    .and_then(|d| tomledit::config_version(&d)),
                None => None,
            };
            if version.is_none() && host.exists(dir.join("config-v3.toml.tmpl")) {
                version = Some(ConfigVersion::V3);
            }
            let template = dir.join(if version == Some(ConfigVersion::V3) {
                "config-v3.toml.tmpl"
            } else {
                "config.toml.tmpl"
            });
            let unit = if flavour == Flavour::K3s {
                unit_if("k3s", "k3s-agent")
            } else {
                unit_if("rke2-server", "rke2-agent")
            };
            Detected {
                flavour,
                layout: Layout::Template { template, rendered },
                unit,
                socket: "/run/k3s/containerd/containerd.sock".into(),
                version,
            }
        }
        Flavour::K0s => Detected {
            flavour,
            layout: Layout::K0s {
                dropin: Path::new(K0S_DROPIN_DIR).join(DROPIN_NAME),
            },
            unit: unit_if("k0sworker", "k0scontroller"),
            socket: "/run/k0s/containerd.sock".into(),
            version: None,
        },
        Flavour::MicroK8s => {
            let version = match host.read_text(MICROK8S_TEMPLATE)? {
                Some(text) => tomledit::config_version(&tomledit::parse(MICROK8S_TEMPLATE, &text)?),
                None => None,
            };
            Detected {
                flavour,
                layout: Layout::MicroK8s {
                    template: MICROK8S_TEMPLATE.into(),
                },
                unit: "snap.microk8s.daemon-containerd".to_owned(),
                socket: "/var/snap/microk8s/common/run/containerd.sock".into(),
                version,
            }
        }
    };
    log::info!(
        "detected {} (restart unit {}, socket {}, config {})",
        detected.flavour,
        detected.unit,
        detected.socket.display(),
        detected
            .version
            .map_or_else(|| "version not stated".to_owned(), |v| v.to_string())
    );
    Ok(detected)
}

/// The config version for containerd's `--version` output (`containerd <repo> 1.7.24 ...`):
/// 2.x reads version 3, older ones version 2.
pub fn version_from_containerd(output: &str) -> Option<ConfigVersion> {
    let word = output.split_whitespace().find(|w| {
        let w = w.trim_start_matches('v');
        w.split('.').count() >= 2 && w.chars().next().is_some_and(|c| c.is_ascii_digit())
    })?;
    let major: u32 = word
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()?;
    Some(if major >= 2 {
        ConfigVersion::V3
    } else {
        ConfigVersion::V2
    })
}

/// The kubelet's cgroup driver, which the runtime's `SystemdCgroup` option must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// `systemd`: cgroups are systemd slices/scopes.
    Systemd,
    /// `cgroupfs`: cgroups are plain directories.
    Cgroupfs,
}

/// `--cgroup-driver`: a fixed driver or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriverChoice {
    /// Use this driver.
    Fixed(CgroupDriver),
    /// Read the kubelet's configuration.
    Auto,
}

impl FromStr for CgroupDriverChoice {
    type Err = DetectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "systemd" => Ok(Self::Fixed(CgroupDriver::Systemd)),
            "cgroupfs" => Ok(Self::Fixed(CgroupDriver::Cgroupfs)),
            "auto" => Ok(Self::Auto),
            other => Err(DetectError::UnknownCgroupDriver(other.to_owned())),
        }
    }
}

/// Kubelet files that name the cgroup driver, in the order they are consulted.
const KUBELET_CONFIGS: [&str; 3] = [
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/default/kubelet",
];

/// Resolve `--cgroup-driver`. `auto` reads `cgroupDriver:` from the kubelet's config file or
/// `--cgroup-driver=` from its flag files; with neither it is the kubelet's own default,
/// `cgroupfs`.
pub fn cgroup_driver(
    host: &HostRoot,
    choice: CgroupDriverChoice,
) -> Result<CgroupDriver, DetectError> {
    if let CgroupDriverChoice::Fixed(driver) = choice {
        return Ok(driver);
    }
    for file in KUBELET_CONFIGS {
        let Some(text) = host.read_text(file)? else {
            continue;
        };
        if let Some(driver) = driver_in(&text) {
            log::info!("kubelet cgroup driver {driver:?} (from {file})");
            return Ok(driver);
        }
    }
    log::info!("no kubelet cgroup driver configured; using the kubelet default, cgroupfs");
    Ok(CgroupDriver::Cgroupfs)
}

fn driver_in(text: &str) -> Option<CgroupDriver> {
    for line in text.lines() {
        let line = line.trim();
        let value = if let Some(rest) = line.strip_prefix("cgroupDriver:") {
            rest
        } else if let Some(idx) = line.find("--cgroup-driver=") {
            &line[idx + "--cgroup-driver=".len()..]
        } else {
            continue;
        };
        let value = value
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .next()
            .unwrap_or("");
        match value {
            "systemd" => return Some(CgroupDriver::Systemd),
            "cgroupfs" => return Some(CgroupDriver::Cgroupfs),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        for (path, text) in files {
            host.write_atomic(path, text.as_bytes(), 0o644).unwrap();
        }
        (dir, host)
    }

    #[test]
    fn plain_containerd_reads_version_and_socket() {
        let (_d, host) = host_with(&[(
            "/etc/containerd/config.toml",
            "version = 3\n[grpc]\naddress = \"/tmp/c.sock\"\n",
        )]);
        let d = detect(&host, &DetectOptions::default()).unwrap();
        assert_eq!(d.flavour, Flavour::Containerd);
        assert_eq!(d.version, Some(ConfigVersion::V3));
        assert_eq!(d.socket, Path::new("/tmp/c.sock"));
        assert_eq!(d.unit, "containerd");
    }

    #[test]
    fn missing_or_empty_config_has_no_version_and_unversioned_settings_are_v1() {
        let (_d, host) = host_with(&[]);
        assert_eq!(
            detect(&host, &DetectOptions::default()).unwrap().version,
            None
        );
        let (_d, host) = host_with(&[("/etc/containerd/config.toml", "# nothing\n")]);
        assert_eq!(
            detect(&host, &DetectOptions::default()).unwrap().version,
            None
        );
        let (_d, host) = host_with(&[("/etc/containerd/config.toml", "[plugins.cri]\n")]);
        assert_eq!(
            detect(&host, &DetectOptions::default()).unwrap().version,
            Some(ConfigVersion::V1)
        );
    }

    #[test]
    fn k3s_template_follows_the_rendered_version() {
        let (_d, host) = host_with(&[
            (
                "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
                "version = 3\n",
            ),
            ("/etc/systemd/system/k3s-agent.service", ""),
        ]);
        let d = detect(&host, &DetectOptions::default()).unwrap();
        assert_eq!(d.flavour, Flavour::K3s);
        assert_eq!(d.unit, "k3s-agent");
        assert_eq!(
            d.layout,
            Layout::Template {
                template: "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl".into(),
                rendered: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml".into(),
            }
        );
    }

    #[test]
    fn k0s_and_microk8s_are_recognised() {
        let (_d, host) = host_with(&[("/etc/k0s/k0s.yaml", "")]);
        let d = detect(&host, &DetectOptions::default()).unwrap();
        assert_eq!(d.flavour, Flavour::K0s);
        assert_eq!(d.unit, "k0sworker");
        let (_d, host) = host_with(&[(MICROK8S_TEMPLATE, "version = 2\n")]);
        let d = detect(&host, &DetectOptions::default()).unwrap();
        assert_eq!(d.flavour, Flavour::MicroK8s);
        assert_eq!(d.version, Some(ConfigVersion::V2));
    }

    #[test]
    fn containerd_version_output() {
        let v = |s| version_from_containerd(s);
        assert_eq!(
            v("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"),
            Some(ConfigVersion::V2)
        );
        assert_eq!(
            v("containerd github.com/containerd/containerd/v2 v2.1.9 abc"),
            Some(ConfigVersion::V3)
        );
        assert_eq!(v("garbage"), None);
    }

    #[test]
    fn cgroup_driver_auto_reads_the_kubelet() {
        let (_d, host) = host_with(&[(
            "/var/lib/kubelet/config.yaml",
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n",
        )]);
        assert_eq!(
            cgroup_driver(&host, CgroupDriverChoice::Auto).unwrap(),
            CgroupDriver::Systemd
        );
        let (_d, host) = host_with(&[(
            "/var/lib/kubelet/kubeadm-flags.env",
            "KUBELET_KUBEADM_ARGS=\"--cgroup-driver=cgroupfs --pod-infra-container-image=x\"\n",
        )]);
        assert_eq!(
            cgroup_driver(&host, CgroupDriverChoice::Auto).unwrap(),
            CgroupDriver::Cgroupfs
        );
        let (_d, host) = host_with(&[]);
        assert_eq!(
            cgroup_driver(&host, CgroupDriverChoice::Auto).unwrap(),
            CgroupDriver::Cgroupfs
        );
        assert_eq!(
            cgroup_driver(&host, "systemd".parse().unwrap()).unwrap(),
            CgroupDriver::Systemd
        );
    }
}
