//! Confining a container process once its privileged preparation is done: after this the
//! runner (or the pause process) holds nothing a runc container process would not.
//!
//! [`begin`] and [`Confinement::finish`] take everything from the spec and apply it in the
//! one order that works (the runner leaves the host's filesystem between the two):
//! 1. the calling thread must be the only one ([`threads::require_single`]): capabilities
//!    are per thread, and threads made later inherit what this one holds;
//! 2. `process.oomScoreAdj` and `process.rlimits` (plus a bounded `RLIMIT_NOFILE` when the
//!    spec sets none), while the runner may still lower them;
//! 3. the bounding set, `process.user` (groups, gid, uid; uid 0 too) and the other four
//!    capability sets ([`caps::become_user`]);
//! 4. wasmpod's own seccomp allowlist (and, for a runner, its unlogged clone3 filter), then
//!    the spec's `linux.seccomp` (kubelet's RuntimeDefault or Localhost profile), all
//!    synchronised to every thread.
//!
//! User namespaces (`linux.uidMappings`) are refused before the process is spawned
//! ([`refuse_user_namespace`], called by the shim in Create).

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::os::caps::{self, CapSets, User};
use crate::os::seccomp;
pub use crate::os::seccomp::Role;
use crate::os::{limits, threads};

/// A confinement step that failed; the message names the step and the spec field.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("confining the container process: {0}")]
    Threads(#[from] threads::ThreadsError),
    #[error("{0}")]
    Limits(#[from] limits::LimitsError),
    #[error("{0}")]
    Caps(#[from] caps::CapsError),
    #[error("{0}")]
    Seccomp(#[from] seccomp::SeccompError),
}

/// What [`begin`] read from the spec and [`Confinement::finish`] applies.
pub struct Confinement {
    user: User,
    sets: CapSets,
    own: libseccomp::ScmpFilterContext,
    quiet: Option<libseccomp::ScmpFilterContext>,
    from_spec: Option<libseccomp::ScmpFilterContext>,
}

/// The first half, while the process still sees the host's `/proc`: reads and checks
/// everything from the spec (nothing changes if any of it is wrong), requires the calling
/// thread to be the only one, and applies `process.oomScoreAdj` and `process.rlimits`.
/// The runner then leaves the host's filesystem (which needs its capabilities) and calls
/// [`Confinement::finish`]; no thread may be made in between.
pub fn begin(spec: &Spec, role: Role) -> Result<Confinement, ConfineError> {
    let rlimits = limits::rlimits_from_spec(spec)?;
    let oom_score_adj = limits::oom_score_adj_from_spec(spec)?;
    let user = User::from_spec(spec);
    let sets = CapSets::from_spec(spec)?;
    let own = seccomp::allowlist(role, std::process::id())?;
    let quiet = match role {
        Role::Runner => Some(seccomp::quiet()?),
        Role::Pause => None,
    };
    let from_spec = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.seccomp().as_ref())
        .map(seccomp::from_oci)
        .transpose()?;

    threads::require_single()?;
    if let Some(value) = oom_score_adj {
        limits::set_oom_score_adj(value)?;
    }
    limits::apply_rlimits(&rlimits)?;
    Ok(Confinement {
        user,
        sets,
        own,
        quiet,
        from_spec,
    })
}

impl Confinement {
    /// The second half, for good: `process.user`, the capability sets, then wasmpod's
    /// seccomp allowlist (and, for a runner, its unlogged clone3 filter) and the spec's
    /// `linux.seccomp`, all synchronised to every thread.
    pub fn finish(self) -> Result<(), ConfineError> {
        caps::become_user(&self.user, &self.sets)?;
        seccomp::load(self.own, "wasmpod's seccomp allowlist")?;
        if let Some(quiet) = self.quiet {
            seccomp::load(quiet, "wasmpod's clone3 filter")?;
        }
        if let Some(filter) = self.from_spec {
            seccomp::load(filter, "the seccomp profile of linux.seccomp")?;
        }
        Ok(())
    }
}

/// Fails when the spec asks for a user namespace (`linux.uidMappings`/`gidMappings`, or a
/// `user` namespace: Kubernetes `hostUsers: false`): wasmpod does not make one, and running
/// the guest as the host's uids instead would silently void what the pod asked for.
pub fn refuse_user_namespace(spec: &Spec) -> Result<(), String> {
    let Some(linux) = spec.linux().as_ref() else {
        return Ok(());
    };
    let mapped = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    let user_ns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|ns| ns.typ() == LinuxNamespaceType::User);
    if mapped || user_ns {
        return Err(
            "user namespaces (linux.uidMappings/gidMappings or a user namespace; Kubernetes \
             hostUsers: false) are not supported by wasmpod"
                .to_owned(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_namespaces_are_refused_by_name() {
        let spec = |linux: &str| -> Spec {
            serde_json::from_str(&format!(r#"{{"ociVersion":"1.0.2","linux":{linux}}}"#)).unwrap()
        };
        assert!(refuse_user_namespace(&spec(r#"{"namespaces":[{"type":"network"}]}"#)).is_ok());
        let mapped = spec(
            r#"{"uidMappings":[{"containerID":0,"hostID":100000,"size":65536}],
                "gidMappings":[{"containerID":0,"hostID":100000,"size":65536}]}"#,
        );
        let err = refuse_user_namespace(&mapped).unwrap_err();
        assert!(err.contains("user namespaces") && err.contains("not supported by wasmpod"));
        assert!(refuse_user_namespace(&spec(r#"{"namespaces":[{"type":"user"}]}"#)).is_err());
    }
}
