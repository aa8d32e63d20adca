//! Linux namespaces of a container process, from the OCI spec.
//!
//! A namespace with a `path` is joined (`setns`): CRI gives every container of a pod the
//! pod's network namespace and the sandbox's IPC and UTS namespaces this way. A network,
//! IPC or UTS namespace without a path is created (`unshare`), and the hostname set in a new
//! UTS namespace.
//!
//! Two kinds are made by `clone3` itself, because their effect must cover every thread the
//! process will have (`unshare` would move only the calling thread of a threaded process):
//! - **mount**: every wasm container and sandbox process gets a mount namespace of its own,
//!   whatever the spec says (a path there is not joined): it leaves the host's view for a
//!   private root once prepared (`runner::rootview`). The child makes every mount a slave
//!   before anything else, so nothing it mounts propagates to the host.
//! - **PID**: without a path, a new PID namespace (the process is its PID 1); with a path
//!   (CRI's `shareProcessNamespace`: the sandbox's `/proc/<pause>/ns/pid`) the *spawning
//!   thread* joins it before the clone, since `setns(CLONE_NEWPID)` only places children
//!   ([`crate::os::spawn`] does that on a short-lived thread of its own). No PID namespace in
//!   the spec (`hostPID`) keeps the host's.
//!
//! Cgroup and user namespaces are not made for wasm processes here.
//!
//! Files are opened before `fork` ([`NamespacePlan::open`]); [`OpenNamespaces::enter`] only
//! makes syscalls, so it is safe between clone and exec in a multi-threaded shim
//! ([`crate::os::spawn`]).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use log::debug;
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
    /// Joined by the child (network, IPC, UTS).
    join: Vec<(CloneFlags, File)>,
    /// A PID namespace joined by the spawning thread before the clone.
    pid: Option<File>,
    /// Created by the child with `unshare` (network, IPC, UTS).
    unshare: CloneFlags,
    /// Created by `clone3` (mount, PID).
    clone: CloneFlags,
    hostname: Option<CString>,
}

fn clone_flag(kind: LinuxNamespaceType) -> Option<CloneFlags> {
    match kind {
        LinuxNamespaceType::Network => Some(CloneFlags::CLONE_NEWNET),
        LinuxNamespaceType::Ipc => Some(CloneFlags::CLONE_NEWIPC),
        LinuxNamespaceType::Uts => Some(CloneFlags::CLONE_NEWUTS),
        LinuxNamespaceType::Pid => Some(CloneFlags::CLONE_NEWPID),
        LinuxNamespaceType::Mount => Some(CloneFlags::CLONE_NEWNS),
        _ => None,
    }
}

/// The namespaces `clone3` must create itself.
const CREATED_BY_CLONE: CloneFlags = CloneFlags::CLONE_NEWNS.union(CloneFlags::CLONE_NEWPID);

impl NamespacePlan {
    pub fn from_spec(spec: &Spec) -> Self {
        let mut plan = NamespacePlan::default();
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.namespaces().clone())
            .unwrap_or_default();
        // Always a mount namespace of its own (see the module docs).
        plan.create.push(LinuxNamespaceType::Mount);
        for ns in namespaces {
            if clone_flag(ns.typ()).is_none() {
                continue;
            }
            if ns.typ() == LinuxNamespaceType::Mount {
                if let Some(path) = ns.path() {
                    debug!(
                        "not joining mount namespace {}: a wasm container gets its own",
                        path.display()
                    );
                }
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
        let mut pid = None;
        for (kind, path) in &self.join {
            let file = File::open(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("opening {kind:?} namespace {}: {e}", path.display()),
                )
            })?;
            let flag = clone_flag(*kind).expect("filtered in from_spec");
            if flag == CloneFlags::CLONE_NEWPID {
                pid = Some(file);
            } else {
                join.push((flag, file));
            }
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
            pid,
            unshare: create - CREATED_BY_CLONE,
            clone: create & CREATED_BY_CLONE,
            hostname,
        })
    }
}

impl OpenNamespaces {
    /// The `CLONE_NEW*` flags `clone3` must be given.
    pub fn clone_flags(&self) -> u64 {
        self.clone.bits() as u64
    }

    /// The PID namespace the spawning thread must join before it clones, if any.
    pub fn pid_to_join(&self) -> Option<&File> {
        self.pid.as_ref()
    }

    /// Joins and creates the namespaces in the calling process (after clone, before exec).
    /// `cloned`: the process came from `clone3` with [`Self::clone_flags`]; otherwise (a
    /// plain `fork`) it creates the mount namespace itself.
    pub fn enter(&self, cloned: bool) -> std::io::Result<()> {
        if self.clone.contains(CloneFlags::CLONE_NEWNS) {
            if !cloned {
                unshare(CloneFlags::CLONE_NEWNS)?;
            }
            // Nothing mounted in this namespace may reach the host's (a shared mount's
            // copy would still be the host mount's peer).
            // SAFETY: static NUL-terminated strings and null data; a plain syscall.
            let rc = unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        for (flag, file) in &self.join {
            setns(file.as_fd(), *flag)?;
        }
        if !self.unshare.is_empty() {
            unshare(self.unshare)?;
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
            [
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Pid
            ]
        );
        assert_eq!(plan.hostname.as_deref(), Some("pod-a"));
    }

    #[test]
    fn mount_and_pid_are_made_by_clone_and_a_pid_path_by_the_spawning_thread() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"ipc"}]}}"#,
        )
        .unwrap();
        let open = NamespacePlan::from_spec(&spec).open().unwrap();
        let flags = CloneFlags::from_bits_truncate(open.clone_flags() as _);
        assert_eq!(flags, CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID);
        assert_eq!(open.unshare, CloneFlags::CLONE_NEWIPC);
        assert!(open.pid_to_join().is_none());

        // CRI's shareProcessNamespace; a mount namespace path is not joined.
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[
                {"type":"pid","path":"/proc/self/ns/pid"},{"type":"mount","path":"/proc/1/ns/mnt"}]}}"#,
        )
        .unwrap();
        let open = NamespacePlan::from_spec(&spec).open().unwrap();
        assert_eq!(open.clone_flags(), libc::CLONE_NEWNS as u64);
        assert!(open.pid_to_join().is_some());
        assert!(open.join.is_empty(), "{:?}", open.join);
    }

    #[test]
    fn no_pid_namespace_in_the_spec_keeps_the_hosts() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"mount"}]}}"#,
        )
        .unwrap();
        let open = NamespacePlan::from_spec(&spec).open().unwrap();
        assert_eq!(open.clone_flags(), libc::CLONE_NEWNS as u64);
        assert!(open.pid_to_join().is_none());
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
