//! Translation of the spec's `linux.seccomp` profile into a libseccomp filter, the way runc,
//! crun and youki map it (default action and errno, architectures, flags, per-rule actions
//! and argument comparisons). A listener (`SCMP_ACT_NOTIFY`, `listenerPath`) is refused.

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use super::{SeccompError, lib_err, syscall};

/// The libseccomp action of an OCI action (`errno` for ERRNO and TRACE; EPERM by default).
fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported(
                "SCMP_ACT_NOTIFY (a seccomp listener) is not supported by wasmpod".into(),
            ));
        }
    })
}

fn operator(op: LinuxSeccompOperator, value: u64) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // OCI: `value` is the mask, `valueTwo` the value compared.
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value),
    }
}

/// The filter of an OCI profile (`linux.seccomp`).
pub fn from_oci(profile: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    if profile.listener_path().is_some() {
        return Err(SeccompError::Unsupported(
            "listenerPath (a seccomp listener) is not supported by wasmpod".into(),
        ));
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx =
        ScmpFilterContext::new(default).map_err(lib_err("creating the seccomp filter"))?;
    let _ = ctx.set_ctl_optimize(2);
    for arch in profile.architectures().iter().flatten() {
        let name = arch.to_string();
        let arch: ScmpArch = name
            .parse()
            .map_err(|_| SeccompError::Unsupported(format!("unknown architecture {name}")))?;
        ctx.add_arch(arch)
            .map_err(lib_err(format!("linux.seccomp: architecture {name}")))?;
    }
    for flag in profile.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        }
        .map_err(lib_err(format!("linux.seccomp: flag {flag}")))?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let rule_action = action(rule.action(), rule.errno_ret())?;
        if rule_action == default {
            // libseccomp refuses a rule that repeats the default; it changes nothing.
            continue;
        }
        let compares: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|arg| {
                let op = operator(arg.op(), arg.value());
                let datum = match arg.op() {
                    LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
                    _ => arg.value(),
                };
                ScmpArgCompare::new(arg.index() as u32, op, datum)
            })
            .collect();
        let mut indexes: Vec<usize> = rule.args().iter().flatten().map(|a| a.index()).collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            let Some(call) = syscall(name) else {
                continue;
            };
            let what = || format!("linux.seccomp: rule for {name}");
            if repeated {
                // One rule per comparison: any of them matching applies the action (runc).
                for compare in &compares {
                    ctx.add_rule_conditional(rule_action, call, std::slice::from_ref(compare))
                        .map_err(lib_err(what()))?;
                }
            } else {
                ctx.add_rule_conditional(rule_action, call, &compares)
                    .map_err(lib_err(what()))?;
            }
        }
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::seccomp::test_support::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_oci_profile_maps_actions_errno_and_arguments() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "syscalls":[
                  {"names":["getppid","no_such_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                  {"names":["getpriority"],"action":"SCMP_ACT_ERRNO",
                   "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
                  {"names":["getpgid"],"action":"SCMP_ACT_ERRNO","errnoRet":22,
                   "args":[{"index":0,"value":255,"valueTwo":7,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        );
        let ctx = from_oci(&p).unwrap();
        let (ppid, prio_process, prio_group, pgid_masked, pgid_other) = filtered(ctx, || {
            // SAFETY: side-effect-free getters with plain integer arguments.
            unsafe {
                (
                    errno_of(libc::syscall(libc::SYS_getppid)),
                    errno_of(libc::syscall(libc::SYS_getpriority, 0, 0)),
                    errno_of(libc::syscall(libc::SYS_getpriority, 1, 0)),
                    errno_of(libc::syscall(libc::SYS_getpgid, 0x107)),
                    errno_of(libc::syscall(libc::SYS_getpgid, 0)),
                )
            }
        });
        assert_eq!(ppid, Some(38), "errnoRet");
        assert_eq!(prio_process, None, "argument 0 is 0: allowed");
        assert_eq!(
            prio_group,
            Some(libc::EPERM),
            "argument 0 is 1: default errno EPERM"
        );
        assert_eq!(pgid_masked, Some(22), "0x107 & 0xff == 7");
        assert_eq!(pgid_other, None);
    }

    #[test]
    fn repeated_argument_indexes_become_separate_rules() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":1,
                 "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},
                         {"index":0,"value":2,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let denied = filtered(from_oci(&p).unwrap(), || {
            // SAFETY: as above.
            unsafe {
                [0, 1, 2].map(|which| errno_of(libc::syscall(libc::SYS_getpriority, which, 0)))
            }
        });
        assert_eq!(denied, [None, Some(1), Some(1)]);
    }

    #[test]
    fn a_notify_profile_is_refused_by_name() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getpid"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        let err = from_oci(&p).unwrap_err().to_string();
        assert!(err.contains("SCMP_ACT_NOTIFY"), "{err}");
    }
}
