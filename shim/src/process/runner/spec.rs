//! Maps an OCI runtime spec onto the WASI surface of a guest. The shim computes it in Create
//! (it also finds the entrypoint with it) and sends it to the runner in its request.
//!
//! args, env and cwd come from `process`; the rootfs is mounted at `/` (read-only when
//! `root.readonly`), followed by every bind mount of the spec at its destination, read-only
//! when its options say `ro`. What a bind becomes (a preopened directory, one of the pod's
//! DNS files, nothing) depends on what its source is, which the runner finds out when it
//! opens it (`child/rootview.rs`); nothing here touches the filesystem. Kernel filesystems (`proc`,
//! `sysfs`, `tmpfs`, ...) have no WASI meaning and are skipped. `process.user` (Kubernetes
//! `runAsUser`, `runAsGroup`, supplemental groups) is the identity the guest's file access
//! is checked against.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use wasmpod_runtime_core::WasiConfig;

/// The parts of a spec that shape a guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestSpec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// The rootfs at `/`, then the spec's bind mounts in order.
    pub mounts: Vec<BindMount>,
    pub memory_limit: Option<usize>,
    /// Who the guest runs as; `None` for root (uid 0, gid 0, no extra groups).
    pub user: Option<GuestUser>,
}

/// A host path the container asked to see at `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// A non-root identity from `process.user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl GuestSpec {
    /// Reads what the guest needs from `spec`; `rootfs` is the mounted root on the host.
    pub fn from_spec(spec: &Spec, rootfs: &Path) -> Self {
        let process = spec.process().as_ref();
        let args = process.and_then(|p| p.args().clone()).unwrap_or_default();
        let env = WasiConfig::parse_env(
            process
                .and_then(|p| p.env().as_ref())
                .into_iter()
                .flatten()
                .map(String::as_str),
        );
        let cwd = process
            .map(|p| p.cwd().display().to_string())
            .filter(|cwd| !cwd.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        let root_read_only = spec
            .root()
            .as_ref()
            .and_then(|root| root.readonly())
            .unwrap_or(false);
        let mut mounts = vec![BindMount {
            source: rootfs.to_owned(),
            destination: "/".to_owned(),
            read_only: root_read_only,
        }];
        for mount in spec.mounts().iter().flatten() {
            let options = mount.options().clone().unwrap_or_default();
            let is_bind = mount.typ().as_deref() == Some("bind")
                || options.iter().any(|o| o == "bind" || o == "rbind");
            let Some(source) = mount.source().as_ref().filter(|_| is_bind) else {
                continue;
            };
            mounts.push(BindMount {
                source: source.clone(),
                destination: mount.destination().display().to_string(),
                read_only: options.iter().any(|o| o == "ro"),
            });
        }
        let memory_limit = spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.resources().as_ref())
            .and_then(|resources| resources.memory().as_ref())
            .and_then(|memory| memory.limit())
            .filter(|limit| *limit > 0)
            .map(|limit| limit as usize);
        let user = process
            .map(|p| p.user())
            .map(|user| GuestUser {
                uid: user.uid(),
                gid: user.gid(),
                additional_gids: user.additional_gids().clone().unwrap_or_default(),
            })
            .filter(|user| user.uid != 0 || user.gid != 0 || !user.additional_gids.is_empty());
        GuestSpec {
            args,
            env,
            cwd,
            mounts,
            memory_limit,
            user,
        }
    }

    /// The `PATH` of the container's environment, used to find a bare entrypoint name.
    pub fn path_env(&self) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn process_fields_reach_the_guest() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs","readonly":true},
               "process":{"args":["/app.wasm","x"],"env":["A=1","PATH=/bin"],"cwd":"/work",
                          "user":{"uid":0,"gid":0}}}"#,
        );
        let guest = GuestSpec::from_spec(&s, Path::new("/b/rootfs"));
        assert_eq!(guest.args, ["/app.wasm", "x"]);
        assert_eq!(guest.cwd, "/work");
        assert_eq!(guest.path_env(), Some("/bin"));
        assert_eq!(guest.user, None, "root needs no switch");
        assert_eq!(
            guest.mounts,
            [BindMount {
                source: "/b/rootfs".into(),
                destination: "/".into(),
                read_only: true
            }]
        );
    }

    #[test]
    fn a_non_root_user_is_kept_with_its_groups() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/",
                "user":{"uid":1000,"gid":3000,"additionalGids":[2000]}}}"#,
        );
        assert_eq!(
            GuestSpec::from_spec(&s, Path::new("/r")).user,
            Some(GuestUser {
                uid: 1000,
                gid: 3000,
                additional_gids: vec![2000]
            })
        );
    }

    #[test]
    fn binds_are_kept_in_order_and_kernel_filesystems_skipped() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","mounts":[
                {"destination":"/proc","type":"proc","source":"proc"},
                {"destination":"/data","type":"bind","source":"/v/data","options":["rbind","rw"]},
                {"destination":"/config","source":"/v/config","options":["bind","ro"]},
                {"destination":"/dev/shm","type":"tmpfs","source":"shm"},
                {"destination":"/etc/hosts","type":"bind","source":"/missing/hosts","options":["bind"]}],
              "linux":{"resources":{"memory":{"limit":67108864}}}}"#,
        );
        let guest = GuestSpec::from_spec(&s, Path::new("/r"));
        let mounted: Vec<(&str, &str, bool)> = guest
            .mounts
            .iter()
            .map(|m| {
                (
                    m.source.to_str().unwrap(),
                    m.destination.as_str(),
                    m.read_only,
                )
            })
            .collect();
        assert_eq!(
            mounted,
            [
                ("/r", "/", false),
                ("/v/data", "/data", false),
                ("/v/config", "/config", true),
                ("/missing/hosts", "/etc/hosts", false)
            ]
        );
        assert_eq!(guest.memory_limit, Some(64 << 20));
    }
}
