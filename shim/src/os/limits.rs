//! Per-process limits from the spec: `process.rlimits` (setrlimit) and
//! `process.oomScoreAdj` (`/proc/self/oom_score_adj`).
//!
//! Both are process-wide, so they may be set from any thread. Without `CAP_SYS_RESOURCE`
//! (dropped with the other capabilities, and missing on some nodes even for root) a hard
//! limit can only be lowered and `oom_score_adj` only raised: a spec asking for more than
//! the runner inherited gets the inherited value, with a warning, rather than failing the
//! container. Lower is the safe direction for both (fewer resources, killed earlier).
//!
//! A spec without `RLIMIT_NOFILE` gets [`DEFAULT_NOFILE`] (or the inherited hard limit when
//! that is lower) instead of containerd's own limit, which is often a million or more.

use log::warn;
use oci_spec::runtime::{PosixRlimitType, Spec};

/// Open files of a container process whose spec sets no `RLIMIT_NOFILE`, soft and hard.
pub const DEFAULT_NOFILE: u64 = 65_536;

/// A bad or unappliable limit.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("process.rlimits: {name} soft limit {soft} is above its hard limit {hard}")]
    SoftAboveHard { name: String, soft: u64, hard: u64 },
    #[error("setrlimit {name} soft {soft} hard {hard}: {source}")]
    Set {
        name: String,
        soft: u64,
        hard: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value} to /proc/self/oom_score_adj (process.oomScoreAdj): {source}")]
    OomScoreAdj {
        value: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("process.oomScoreAdj {0} is outside -1000..=1000")]
    OomScoreRange(i32),
}

/// `RLIMIT_NOFILE` as [`Rlimit::resource`] holds it.
#[allow(clippy::unnecessary_cast)] // `__rlimit_resource_t` is u32 with glibc, i32 elsewhere.
const NOFILE: u32 = libc::RLIMIT_NOFILE as u32;

/// What getrlimit/setrlimit take a resource as: `__rlimit_resource_t` with glibc, `c_int` with
/// musl (the static builds).
#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

/// One resource limit to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` as libc numbers it.
    pub resource: u32,
    /// Its OCI name, for messages.
    pub name: &'static str,
    pub soft: u64,
    pub hard: u64,
}

/// The OCI name and libc number of `typ`.
fn resource(typ: PosixRlimitType) -> (&'static str, u32) {
    use PosixRlimitType::*;
    let (name, resource) = match typ {
        RlimitCpu => ("RLIMIT_CPU", libc::RLIMIT_CPU),
        RlimitFsize => ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
        RlimitData => ("RLIMIT_DATA", libc::RLIMIT_DATA),
        RlimitStack => ("RLIMIT_STACK", libc::RLIMIT_STACK),
        RlimitCore => ("RLIMIT_CORE", libc::RLIMIT_CORE),
        RlimitRss => ("RLIMIT_RSS", libc::RLIMIT_RSS),
        RlimitNproc => ("RLIMIT_NPROC", libc::RLIMIT_NPROC),
        RlimitNofile => ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
        RlimitMemlock => ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK),
        RlimitAs => ("RLIMIT_AS", libc::RLIMIT_AS),
        RlimitLocks => ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS),
        RlimitSigpending => ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING),
        RlimitMsgqueue => ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE),
        RlimitNice => ("RLIMIT_NICE", libc::RLIMIT_NICE),
        RlimitRtprio => ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO),
        RlimitRttime => ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME),
    };
    // `__rlimit_resource_t` is u32 with glibc, i32 elsewhere.
    #[allow(clippy::unnecessary_cast)]
    let resource = resource as u32;
    (name, resource)
}

/// The limits `spec` asks for, plus [`DEFAULT_NOFILE`] when it sets no `RLIMIT_NOFILE`.
pub fn rlimits_from_spec(spec: &Spec) -> Result<Vec<Rlimit>, LimitsError> {
    let mut limits = Vec::new();
    let asked = spec
        .process()
        .as_ref()
        .and_then(|p| p.rlimits().clone())
        .unwrap_or_default();
    for limit in asked {
        let (name, resource) = resource(limit.typ());
        let (soft, hard) = (limit.soft(), limit.hard());
        if soft > hard {
            return Err(LimitsError::SoftAboveHard {
                name: name.to_owned(),
                soft,
                hard,
            });
        }
        limits.retain(|l: &Rlimit| l.resource != resource);
        limits.push(Rlimit {
            resource,
            name,
            soft,
            hard,
        });
    }
    if !limits.iter().any(|l| l.resource == NOFILE) {
        limits.push(Rlimit {
            resource: NOFILE,
            name: "RLIMIT_NOFILE",
            soft: DEFAULT_NOFILE,
            hard: DEFAULT_NOFILE,
        });
    }
    Ok(limits)
}

/// Sets each limit; a hard limit above the inherited one is clamped to it (see the module
/// docs).
pub fn apply_rlimits(limits: &[Rlimit]) -> Result<(), LimitsError> {
    for limit in limits {
        let resource = limit.resource as RlimitResource;
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        unsafe { libc::getrlimit(resource, &mut current) };
        let mut want = libc::rlimit {
            rlim_cur: limit.soft,
            rlim_max: limit.hard,
        };
        // SAFETY: setrlimit reads the struct we own.
        let mut rc = unsafe { libc::setrlimit(resource, &want) };
        if rc != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
            && limit.hard > current.rlim_max
        {
            warn!(
                "{}: hard limit {} is above the inherited {} and raising it needs CAP_SYS_RESOURCE; keeping {}",
                limit.name, limit.hard, current.rlim_max, current.rlim_max
            );
            want.rlim_max = current.rlim_max;
            want.rlim_cur = want.rlim_cur.min(current.rlim_max);
            // SAFETY: as above.
            rc = unsafe { libc::setrlimit(resource, &want) };
        }
        if rc != 0 {
            return Err(LimitsError::Set {
                name: limit.name.to_owned(),
                soft: limit.soft,
                hard: limit.hard,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// `process.oomScoreAdj`, checked.
pub fn oom_score_adj_from_spec(spec: &Spec) -> Result<Option<i32>, LimitsError> {
    match spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        Some(value) if !(-1000..=1000).contains(&value) => Err(LimitsError::OomScoreRange(value)),
        other => Ok(other),
    }
}

/// Writes `value` to `/proc/self/oom_score_adj`. Lowering it below the inherited value
/// needs `CAP_SYS_RESOURCE`; without it the inherited (higher) value stays, with a warning.
pub fn set_oom_score_adj(value: i32) -> Result<(), LimitsError> {
    const PATH: &str = "/proc/self/oom_score_adj";
    match std::fs::write(PATH, value.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            let current = std::fs::read_to_string(PATH).unwrap_or_default();
            let current: i32 = current.trim().parse().unwrap_or(i32::MIN);
            if current > value {
                warn!(
                    "oom_score_adj {value} is below the inherited {current} and lowering it needs CAP_SYS_RESOURCE; keeping {current}"
                );
                Ok(())
            } else {
                Err(LimitsError::OomScoreAdj { value, source: e })
            }
        }
        Err(source) => Err(LimitsError::OomScoreAdj { value, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(process: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","process":{{"cwd":"/","user":{{"uid":0,"gid":0}}{process}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn rlimits_are_read_and_nofile_gets_a_bounded_default() {
        let limits = rlimits_from_spec(&spec(
            r#","rlimits":[{"type":"RLIMIT_CORE","soft":0,"hard":0},
                           {"type":"RLIMIT_NPROC","soft":10,"hard":20}]"#,
        ))
        .unwrap();
        let as_tuples: Vec<(&str, u64, u64)> =
            limits.iter().map(|l| (l.name, l.soft, l.hard)).collect();
        assert_eq!(
            as_tuples,
            [
                ("RLIMIT_CORE", 0, 0),
                ("RLIMIT_NPROC", 10, 20),
                ("RLIMIT_NOFILE", DEFAULT_NOFILE, DEFAULT_NOFILE)
            ]
        );
        assert_eq!(limits[0].resource, resource(PosixRlimitType::RlimitCore).1);
        let none = rlimits_from_spec(&spec("")).unwrap();
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].name, "RLIMIT_NOFILE");
    }

    #[test]
    fn the_spec_nofile_wins_and_the_last_duplicate_counts() {
        let limits = rlimits_from_spec(&spec(
            r#","rlimits":[{"type":"RLIMIT_NOFILE","soft":1,"hard":2},
                           {"type":"RLIMIT_NOFILE","soft":1024,"hard":4096}]"#,
        ))
        .unwrap();
        assert_eq!(
            limits,
            [Rlimit {
                resource: NOFILE,
                name: "RLIMIT_NOFILE",
                soft: 1024,
                hard: 4096
            }]
        );
    }

    #[test]
    fn a_soft_limit_above_its_hard_limit_is_refused() {
        let err = rlimits_from_spec(&spec(
            r#","rlimits":[{"type":"RLIMIT_NOFILE","soft":2048,"hard":1024}]"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("RLIMIT_NOFILE soft limit 2048"), "{err}");
    }

    #[test]
    fn oom_score_adj_is_range_checked() {
        assert_eq!(oom_score_adj_from_spec(&spec("")).unwrap(), None);
        assert_eq!(
            oom_score_adj_from_spec(&spec(r#","oomScoreAdj":-998"#)).unwrap(),
            Some(-998)
        );
        assert!(oom_score_adj_from_spec(&spec(r#","oomScoreAdj":1001"#)).is_err());
    }
}
