//! Linux namespaces of a container process, from the OCI spec.
//!
//! A namespace with a `path` is joined (`setns`): CRI gives every container of a pod the
//! pod's network namespace and the sandbox's IPC and UTS namespaces this way. A network,
//! IPC or UTS namespace without a path is created (`unshare`), and the hostname set in a new
//! UTS namespace. PID, mount, cgroup and user namespaces are not made for wasm processes: a
//! guest has no process, mount or cgroup API to see them through (WASI exposes none), and
//! the preopened directories are host paths.
//!
//! Files are opened before `fork` ([`NamespacePlan::open`]); [`OpenNamespaces::enter`] only
//! makes syscalls, so it is safe between clone and exec in a multi-threaded shim
//! ([`crate::os::spawn`]).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns, unshare};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// What to join and create.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespacePlan {
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    pub create: Vec<LinuxNamespaceType>,
    pub hostname: Option<String>,
}

/// Namespace files opened, ready to enter after fork.
#[derive(Debug)]
pub struct OpenNamespaces {
    join: Vec<(CloneFlags, File)>,
    create: CloneFlags,
    hostname: Option<CString>,
}

fn clone_flag(kind: LinuxNamespaceType) -> Option<CloneFlags> {
    match kind {
        LinuxNamespaceType::Network => Some(CloneFlags::CLONE_NEWNET),
        LinuxNamespaceType::Ipc => Some(CloneFlags::CLONE_NEWIPC),
        LinuxNamespaceType::Uts => Some(CloneFlags::CLONE_NEWUTS),
        _ => None,
    }
}

impl NamespacePlan {
    pub fn from_spec(spec: &Spec) -> Self {
        let mut plan = NamespacePlan::default();
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.namespaces().clone())
            .unwrap_or_default();
        for ns in namespaces {
            if clone_flag(ns.typ()).is_none() {
                continue;
            }
            match ns.path() {
                Some(path) if !path.as_os_str().is_empty() => {
                    plan.join.push((ns.typ(), path.clone()))
                }
                _ => plan.create.push(ns.typ()),
            }
        }
        if plan.create.contains(&LinuxNamespaceType::Uts) {
            plan.hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        }
        plan
    }

    /// Opens the namespaces to join (before fork).
    pub fn open(&self) -> std::io::Result<OpenNamespaces> {
        let mut join = Vec::new();
        for (kind, path) in &self.join {
            let file = File::open(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("opening {kind:?} namespace {}: {e}", path.display()),
                )
            })?;
            join.push((clone_flag(*kind).expect("filtered in from_spec"), file));
        }
        let create = self
            .create
            .iter()
            .filter_map(|kind| clone_flag(*kind))
            .fold(CloneFlags::empty(), |all, flag| all | flag);
        let hostname = self
            .hostname
            .as_deref()
            .map(CString::new)
            .transpose()
            .map_err(|_| std::io::Error::other("hostname holds a NUL byte"))?;
        Ok(OpenNamespaces {
            join,
            create,
            hostname,
        })
    }
}

impl OpenNamespaces {
    /// Joins and creates the namespaces in the calling process (after fork, before exec).
    pub fn enter(&self) -> std::io::Result<()> {
        for (flag, file) in &self.join {
            setns(file.as_fd(), *flag)?;
        }
        if !self.create.is_empty() {
            unshare(self.create)?;
        }
        if let Some(hostname) = &self.hostname {
            // SAFETY: a valid NUL-terminated string and its length.
            let rc = unsafe { libc::sethostname(hostname.as_ptr(), hostname.as_bytes().len()) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_and_the_rest_created() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","hostname":"pod-a","linux":{"namespaces":[
                {"type":"network","path":"/var/run/netns/cni-1"},
                {"type":"ipc"},{"type":"uts"},{"type":"pid"},{"type":"mount"}]}}"#,
        )
        .unwrap();
        let plan = NamespacePlan::from_spec(&spec);
        assert_eq!(
            plan.join,
            [(LinuxNamespaceType::Network, "/var/run/netns/cni-1".into())]
        );
        assert_eq!(
            plan.create,
            [LinuxNamespaceType::Ipc, LinuxNamespaceType::Uts]
        );
        assert_eq!(plan.hostname.as_deref(), Some("pod-a"));
    }

    #[test]
    fn joined_uts_keeps_its_hostname() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","hostname":"x","linux":{"namespaces":[
                {"type":"uts","path":"/proc/1/ns/uts"}]}}"#,
        )
        .unwrap();
        assert_eq!(NamespacePlan::from_spec(&spec).hostname, None);
    }

    #[test]
    fn missing_namespace_file_is_a_named_error() {
        let plan = NamespacePlan {
            join: vec![(LinuxNamespaceType::Network, "/nonexistent/netns".into())],
            ..Default::default()
        };
        let err = plan.open().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/netns"), "{err}");
    }
}
