//! Capabilities and identity of a container process: the spec's five capability sets and
//! `process.user`, applied the way runc leaves a container process.
//!
//! [`CapSets::from_spec`] reads `process.capabilities` (a missing set is empty: a spec that
//! names no capabilities gets none). [`become_user`] then, on the calling thread:
//! 1. drops from the bounding set every capability the spec's bounding set lacks (needs
//!    `CAP_SETPCAP`, so before anything else is dropped);
//! 2. sets the supplementary groups, gid and uid of `process.user` — uid 0 included, so a
//!    root guest loses the groups the shim had — keeping the permitted set across `setuid`
//!    (`PR_SET_KEEPCAPS`);
//! 3. sets the inheritable, permitted, effective and ambient sets and reads them back.
//!
//! runc does the same and then executes the container's program; a runner executes
//! nothing, so the sets are made what that exec would leave: for uid 0, the spec's sets as
//! given; for any other uid, permitted and effective become the ambient set (an exec
//! without file capabilities keeps only those), so a `runAsUser` guest's file access is
//! checked as that user, with no `CAP_DAC_OVERRIDE`, exactly as in a runc container.
//!
//! capset(2), the bounding set and the ambient set are per thread: the caller must be the
//! only thread of its process ([`crate::os::threads`]); threads made later inherit the sets.
//! setgroups/setgid/setuid through glibc apply to every thread.

use std::collections::HashSet;
use std::fmt;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{LinuxCapabilities, Spec};

/// A failure while reading or applying capabilities or the user.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("process.capabilities: unknown capability {0}")]
    Unknown(String),
    #[error("{what}: {source}")]
    Caps {
        what: String,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{set} is {got} after setting it to {want}")]
    Mismatch {
        set: &'static str,
        got: String,
        want: String,
    },
}

/// The identity a container process takes (`process.user`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl User {
    /// `process.user`, or root when the spec has no process.
    pub fn from_spec(spec: &Spec) -> Self {
        spec.process()
            .as_ref()
            .map(|p| User {
                uid: p.user().uid(),
                gid: p.user().gid(),
                additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
            })
            .unwrap_or_default()
    }
}

/// The five capability sets of `process.capabilities`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

impl CapSets {
    /// Reads `process.capabilities`; a missing set (or section) is empty.
    pub fn from_spec(spec: &Spec) -> Result<Self, CapsError> {
        let Some(caps) = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
        else {
            return Ok(CapSets::default());
        };
        Self::from_oci(&caps)
    }

    fn from_oci(caps: &LinuxCapabilities) -> Result<Self, CapsError> {
        let set =
            |names: &Option<oci_spec::runtime::Capabilities>| -> Result<CapsHashSet, CapsError> {
                names
                    .iter()
                    .flatten()
                    .map(|cap| {
                        // The OCI name (`CAP_CHOWN`) is the serde form of oci-spec's enum.
                        let name = serde_json::to_value(cap)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_else(|| format!("{cap:?}"));
                        name.parse::<Capability>()
                            .map_err(|_| CapsError::Unknown(name))
                    })
                    .collect()
            };
        Ok(CapSets {
            bounding: set(caps.bounding())?,
            effective: set(caps.effective())?,
            permitted: set(caps.permitted())?,
            inheritable: set(caps.inheritable())?,
            ambient: set(caps.ambient())?,
        })
    }

    /// What a process of `uid` holds once runc has set these sets and executed a program
    /// without file capabilities (see the module docs). The ambient set keeps only what is
    /// both permitted and inheritable (the kernel refuses anything else).
    pub fn after_exec_as(&self, uid: u32) -> CapSets {
        let ambient: CapsHashSet = self
            .ambient
            .iter()
            .filter(|c| self.permitted.contains(c) && self.inheritable.contains(c))
            .copied()
            .collect();
        if uid == 0 {
            let permitted = self.permitted.clone();
            return CapSets {
                bounding: self.bounding.clone(),
                effective: self.effective.intersection(&permitted).copied().collect(),
                permitted,
                inheritable: self.inheritable.clone(),
                ambient,
            };
        }
        CapSets {
            bounding: self.bounding.clone(),
            effective: ambient.clone(),
            permitted: ambient.clone(),
            inheritable: self.inheritable.clone(),
            ambient,
        }
    }
}

/// Names of a set, sorted, for messages.
struct Names<'a>(&'a CapsHashSet);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        names.sort();
        if names.is_empty() {
            return f.write_str("{}");
        }
        write!(f, "{{{}}}", names.join(","))
    }
}

fn caps_err(what: impl Into<String>) -> impl FnOnce(caps::errors::CapsError) -> CapsError {
    let what = what.into();
    move |source| CapsError::Caps { what, source }
}

fn os_err(what: &str) -> CapsError {
    CapsError::Os {
        what: what.to_owned(),
        source: std::io::Error::last_os_error(),
    }
}

/// Becomes `user` holding only `sets` (as [`CapSets::after_exec_as`] the user's uid), for
/// good. The calling thread must be the process's only thread.
pub fn become_user(user: &User, sets: &CapSets) -> Result<(), CapsError> {
    let target = sets.after_exec_as(user.uid);
    // 1. The bounding set, while CAP_SETPCAP is still effective. Capabilities this kernel
    //    does not know are not in any set anyway.
    let supported = caps::runtime::thread_all_supported();
    for cap in supported.iter().filter(|c| !target.bounding.contains(c)) {
        if caps::has_cap(None, CapSet::Bounding, *cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, *cap)
                .map_err(caps_err(format!("dropping {cap} from the bounding set")))?;
        }
    }
    // 2. Groups, gid, uid; the permitted set survives the uid change.
    switch_ids(user)?;
    // 3. The other sets, each change leaving a valid state: inheritable while the full
    //    permitted set still covers it, effective before permitted (effective must stay
    //    within permitted), ambient last (within both).
    let apply = |set: CapSet, value: &CapsHashSet, name: &str| {
        caps::set(None, set, value).map_err(caps_err(format!("setting the {name} set")))
    };
    apply(CapSet::Inheritable, &target.inheritable, "inheritable")?;
    apply(CapSet::Effective, &target.effective, "effective")?;
    apply(CapSet::Permitted, &target.permitted, "permitted")?;
    if caps::runtime::ambient_set_supported().is_ok() {
        apply(CapSet::Ambient, &target.ambient, "ambient")?;
    }
    verify(&target, &supported)
}

/// setgroups, setgid, setuid with `PR_SET_KEEPCAPS` around the uid change.
fn switch_ids(user: &User) -> Result<(), CapsError> {
    let groups: Vec<libc::gid_t> = user.additional_gids.clone();
    // SAFETY: plain credential and prctl syscalls with a valid buffer and its length.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(os_err("prctl(PR_SET_KEEPCAPS)"));
        }
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            return Err(os_err(&format!("setgroups({groups:?})")));
        }
        if libc::setgid(user.gid) != 0 {
            return Err(os_err(&format!("setgid({})", user.gid)));
        }
        if libc::setuid(user.uid) != 0 {
            return Err(os_err(&format!("setuid({})", user.uid)));
        }
        if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 {
            return Err(os_err("prctl(PR_SET_KEEPCAPS, 0)"));
        }
    }
    // SAFETY: these getters cannot fail.
    let (uid, euid, gid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if (uid, euid, gid, egid) != (user.uid, user.uid, user.gid, user.gid) {
        return Err(CapsError::Os {
            what: format!(
                "switching to uid {} gid {}: now uid {uid} euid {euid} gid {gid} egid {egid}",
                user.uid, user.gid
            ),
            source: std::io::Error::other("credentials did not change"),
        });
    }
    Ok(())
}

/// Reads the thread's sets back and compares them with `want`.
fn verify(want: &CapSets, supported: &CapsHashSet) -> Result<(), CapsError> {
    let check = |set: CapSet, name: &'static str, want: &CapsHashSet| {
        let got = caps::read(None, set).map_err(caps_err(format!("reading the {name} set")))?;
        let want: HashSet<Capability> = want.intersection(supported).copied().collect();
        if got != want {
            return Err(CapsError::Mismatch {
                set: name,
                got: Names(&got).to_string(),
                want: Names(&want).to_string(),
            });
        }
        Ok(())
    };
    check(CapSet::Bounding, "bounding", &want.bounding)?;
    check(CapSet::Permitted, "permitted", &want.permitted)?;
    check(CapSet::Effective, "effective", &want.effective)?;
    check(CapSet::Inheritable, "inheritable", &want.inheritable)?;
    if caps::runtime::ambient_set_supported().is_ok() {
        check(CapSet::Ambient, "ambient", &want.ambient)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    fn set(names: &[Capability]) -> CapsHashSet {
        names.iter().copied().collect()
    }

    #[test]
    fn spec_sets_are_read_and_missing_ones_are_empty() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},
               "capabilities":{"bounding":["CAP_CHOWN","CAP_NET_BIND_SERVICE"],
                               "effective":["CAP_CHOWN"],"permitted":["CAP_CHOWN"]}}}"#,
        );
        let sets = CapSets::from_spec(&s).unwrap();
        use Capability::*;
        assert_eq!(sets.bounding, set(&[CAP_CHOWN, CAP_NET_BIND_SERVICE]));
        assert_eq!(sets.effective, set(&[CAP_CHOWN]));
        assert!(sets.inheritable.is_empty() && sets.ambient.is_empty());
        let none = spec(r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0}}}"#);
        assert_eq!(CapSets::from_spec(&none).unwrap(), CapSets::default());
    }

    #[test]
    fn a_non_root_user_keeps_only_the_ambient_set_as_after_exec() {
        use Capability::*;
        let sets = CapSets {
            bounding: set(&[CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_NET_BIND_SERVICE]),
            effective: set(&[CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_NET_BIND_SERVICE]),
            permitted: set(&[CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_NET_BIND_SERVICE]),
            inheritable: set(&[CAP_NET_BIND_SERVICE]),
            ambient: set(&[CAP_NET_BIND_SERVICE, CAP_SYS_ADMIN]),
        };
        let user = sets.after_exec_as(1000);
        assert_eq!(user.effective, set(&[CAP_NET_BIND_SERVICE]));
        assert_eq!(user.permitted, set(&[CAP_NET_BIND_SERVICE]));
        assert_eq!(user.bounding, sets.bounding);
        let root = sets.after_exec_as(0);
        assert_eq!(root.effective, sets.effective);
        assert_eq!(root.permitted, sets.permitted);
        assert_eq!(
            root.ambient,
            set(&[CAP_NET_BIND_SERVICE]),
            "not permitted: dropped"
        );
    }

    /// Needs root: runs [`become_user`] on a thread of its own (capabilities are per
    /// thread) in a forked child, so the test process keeps its own.
    #[test]
    #[ignore = "needs root"]
    fn become_user_leaves_exactly_the_sets() {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "needs root; run via `make test` as root"
        );
        use Capability::*;
        let sets = CapSets {
            bounding: set(&[CAP_CHOWN, CAP_KILL]),
            effective: set(&[CAP_KILL]),
            permitted: set(&[CAP_CHOWN, CAP_KILL]),
            inheritable: CapsHashSet::new(),
            ambient: CapsHashSet::new(),
        };
        // SAFETY: the child only makes syscalls and reads /proc before _exit; no lock the
        // parent's other threads could hold is taken (no allocation after fork but in
        // caps' small Vecs, which the test accepts).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let user = User {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
            };
            let result = become_user(&user, &sets);
            let effective = caps::read(None, CapSet::Effective).ok();
            let bounding = caps::read(None, CapSet::Bounding).ok();
            let ok = result.is_ok()
                && effective == Some(set(&[CAP_KILL]))
                && bounding == Some(set(&[CAP_CHOWN, CAP_KILL]));
            if !ok {
                // The test harness captures stderr per thread of the parent: write directly.
                let line = format!("{result:?} effective {effective:?} bounding {bounding:?}\n");
                // SAFETY: writes our own buffer to stderr.
                unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            }
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
    }
}
