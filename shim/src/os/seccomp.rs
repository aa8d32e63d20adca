//! Seccomp filters of a container process, built with libseccomp (never hand-written BPF).
//!
//! Two filters, stacked (the kernel runs both on every syscall; the stricter verdict wins):
//! - [`from_oci`]: `linux.seccomp` of the spec, as kubelet sends RuntimeDefault and
//!   Localhost profiles. Mapped the way runc, crun and youki map it: default action (with
//!   `defaultErrnoRet`), architectures, flags, and per rule its names, action, `errnoRet`
//!   and argument comparisons. A name this kernel or libseccomp does not know is skipped;
//!   several comparisons of one argument become one rule each (libseccomp cannot AND
//!   them); `SCMP_ACT_NOTIFY` (a listener process) is refused.
//! - [`allowlist`]: wasmpod's own, whatever the spec says. Only what wasmtime, WASI
//!   (files, clocks, random, sockets, name lookup through glibc), the wasi:http server
//!   (tokio, hyper) and thread creation need (see [`RUNNER_ALLOW`]). The escape toolkit
//!   ([`KILL`]: namespaces, mounts, ptrace, bpf, keys, modules, exec, credential changes,
//!   ...) kills the process (`SCMP_ACT_KILL_PROCESS`: the container exits 159, SIGSYS, and
//!   the kernel logs an audit record). Anything else unlisted fails with `EPERM` and is
//!   logged too (the filter carries `SECCOMP_FILTER_FLAG_LOG`), so a missing entry degrades
//!   one call instead of killing a healthy guest, and shows in `dmesg` as
//!   `audit: type=1326 ... syscall=N ... code=0x50001`.
//!   `clone3` fails with `ENOSYS` (glibc then uses `clone`, whose flags a filter can see;
//!   refused by a second, [`quiet`] filter so that each new thread is not logged);
//!   `clone` must create a thread (`CLONE_THREAD`) and no namespace; signals may only go to
//!   this process; sockets only IPv4/IPv6 stream or datagram and netlink route (glibc's
//!   address checks) — no raw, packet or unix sockets (a hostNetwork pod could otherwise
//!   reach the host's abstract unix sockets); `ioctl` only the few requests std, tokio,
//!   the resolver and wasmtime's pooling allocator (`PAGEMAP_SCAN`) make.
//!
//! Filters apply per thread unless loaded with TSYNC; both are (and the runner is single
//! threaded when it loads them, so every later thread inherits them anyway).

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use log::debug;
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

/// A profile that cannot be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp: {0}")]
    Unsupported(String),
    #[error("{what}: {source}")]
    Library {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
}

fn lib_err(
    what: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let what = what.into();
    move |source| SeccompError::Library { what, source }
}

/// Whose allowlist: a runner running a guest, or the pod's pause process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Runner,
    Pause,
}

/// Syscalls a runner may make without conditions after confinement.
pub const RUNNER_ALLOW: &[&str] = &[
    // memory: allocator, wasmtime's linear memories, code (mmap + mprotect to R+X),
    // pooling-allocator resets, copy-on-write memory images (memfd), icache sync (aarch64)
    "brk",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "msync",
    "mincore",
    "membarrier",
    "memfd_create",
    // descriptors and files: WASI p1/p2 through cap-std (openat2 RESOLVE_BENEATH, *at calls)
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "lseek",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "ftruncate",
    "fallocate",
    "fsync",
    "fdatasync",
    "fadvise64",
    "open",
    "openat",
    "openat2",
    "stat",
    "lstat",
    "fstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "getdents64",
    "mkdirat",
    "unlinkat",
    "renameat",
    "renameat2",
    "linkat",
    "symlinkat",
    "readlink",
    "readlinkat",
    "utimensat",
    "access",
    "faccessat",
    "faccessat2",
    "getcwd",
    "pipe2",
    // clocks, sleeps, randomness
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "time",
    "getrandom",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    // threads: glibc pthread_create/exit, Rust std, futexes
    "futex",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "set_tid_address",
    "sched_yield",
    "sched_getaffinity",
    "getcpu",
    "gettid",
    "getpid",
    "getppid",
    "exit",
    "exit_group",
    "restart_syscall",
    "arch_prctl",
    // signals: wasmtime's trap handlers on their alternate stacks, the signal thread
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigtimedwait",
    "rt_sigpending",
    "sigaltstack",
    // sockets: wasi:sockets, name lookup (glibc resolver: sendmmsg), the wasi:http server
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "poll",
    "ppoll",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd2",
    // read-only facts about the process and the system
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getgroups",
    "getresuid",
    "getresgid",
    "uname",
    "sysinfo",
    "getrusage",
    "getrlimit",
    "capget",
    // libseccomp loading the spec's filter after this one
    "seccomp",
];

/// Syscalls the pause process may make once confined: wait for a signal, exit.
pub const PAUSE_ALLOW: &[&str] = &[
    "read",
    "write",
    "close",
    "rt_sigtimedwait",
    "rt_sigprocmask",
    "rt_sigaction",
    "rt_sigreturn",
    "sigaltstack",
    "restart_syscall",
    "exit",
    "exit_group",
    "munmap",
    "mmap",
    "brk",
    "madvise",
    "mprotect",
    "futex",
    "getpid",
    "gettid",
    "sched_yield",
    "fcntl",
    "clock_gettime",
    "clock_nanosleep",
    "nanosleep",
    "seccomp",
];

/// Syscalls whose only use in a runner would be an escape: they kill the process.
pub const KILL: &[&str] = &[
    // running something else, or another process
    "execve",
    "execveat",
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    // namespaces and mounts
    "setns",
    "unshare",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    // kernel attack surface
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
    "iopl",
    "ioperm",
    "uselib",
    "personality",
    // the machine
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "vhangup",
    "nfsservctl",
    "mknod",
    "mknodat",
    // credentials: fixed before the filter is loaded
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "setgroups",
    "capset",
];

const CLONE_NEW_ANY: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;
const CLONE_THREAD: u64 = libc::CLONE_THREAD as u64;

/// `_IOWR('f', 16, struct pm_scan_arg)` (96 bytes): wasmtime's pooling allocator resets
/// only the pages a request dirtied with it (Linux 6.7+).
const PAGEMAP_SCAN: u64 = (3 << 30) | (96 << 16) | ((b'f' as u64) << 8) | 16;

/// The `ioctl` requests a runner makes: non-blocking and close-on-exec flags (std, tokio),
/// bytes pending (glibc's resolver), terminal checks on stdio, `PAGEMAP_SCAN`.
#[allow(clippy::unnecessary_cast)] // `c_ulong` here, `c_int` on other targets.
const IOCTLS: &[u64] = &[
    libc::FIONBIO as u64,
    libc::FIOCLEX as u64,
    libc::FIONCLEX as u64,
    libc::FIONREAD as u64,
    libc::TCGETS as u64,
    libc::TIOCGWINSZ as u64,
    PAGEMAP_SCAN,
];

/// The `prctl` options a runner uses: thread names, naming anonymous mappings, reading
/// its own state, and libseccomp setting no_new_privs (already set) for the next filter.
const PRCTLS: &[u64] = &[
    libc::PR_SET_NAME as u64,
    libc::PR_GET_NAME as u64,
    libc::PR_SET_VMA as u64,
    libc::PR_GET_DUMPABLE as u64,
    libc::PR_GET_SECCOMP as u64,
    libc::PR_GET_NO_NEW_PRIVS as u64,
    libc::PR_SET_NO_NEW_PRIVS as u64,
    libc::PR_CAPBSET_READ as u64,
];

fn syscall(name: &str) -> Option<ScmpSyscall> {
    match ScmpSyscall::from_name(name) {
        Ok(call) => Some(call),
        Err(_) => {
            debug!("seccomp: {name} does not exist on this architecture; skipped");
            None
        }
    }
}

/// wasmpod's own filter for `role`; `pid` is this process (signals may only go to it).
pub fn allowlist(role: Role, pid: u32) -> Result<ScmpFilterContext, SeccompError> {
    let mut ctx = ScmpFilterContext::new(ScmpAction::Errno(libc::EPERM))
        .map_err(lib_err("creating the seccomp filter"))?;
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .map_err(lib_err("seccomp: bad-architecture action"))?;
    ctx.set_ctl_log(true)
        .map_err(lib_err("seccomp: logging denied calls"))?;
    let _ = ctx.set_ctl_optimize(2);
    let allow = match role {
        Role::Runner => RUNNER_ALLOW,
        Role::Pause => PAUSE_ALLOW,
    };
    let add =
        |ctx: &mut ScmpFilterContext, name: &str, action: ScmpAction, args: &[ScmpArgCompare]| {
            let Some(call) = syscall(name) else {
                return Ok(());
            };
            ctx.add_rule_conditional(action, call, args)
                .map(drop)
                .map_err(lib_err(format!("seccomp: rule for {name}")))
        };
    for name in allow {
        add(&mut ctx, name, ScmpAction::Allow, &[])?;
    }
    for name in KILL {
        add(&mut ctx, name, ScmpAction::KillProcess, &[])?;
    }
    let pid = u64::from(pid);
    let eq = |arg: u32, value: u64| ScmpArgCompare::new(arg, ScmpCompareOp::Equal, value);
    let masked = |arg: u32, mask: u64, value: u64| {
        ScmpArgCompare::new(arg, ScmpCompareOp::MaskedEqual(mask), value)
    };
    // Signals only to this process (uid 0 may otherwise signal every root process).
    for name in ["kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"] {
        add(&mut ctx, name, ScmpAction::Allow, &[eq(0, pid)])?;
    }
    // Resource limits of this process only (pid 0), read or lowered.
    add(&mut ctx, "prlimit64", ScmpAction::Allow, &[eq(0, 0)])?;
    if role == Role::Pause {
        return Ok(ctx);
    }
    // Threads, never processes or namespaces.
    add(
        &mut ctx,
        "clone",
        ScmpAction::Allow,
        &[masked(0, CLONE_NEW_ANY | CLONE_THREAD, CLONE_THREAD)],
    )?;
    // clone3's flags are behind a pointer no filter can read: it is refused with ENOSYS by
    // [`quiet`] (so glibc falls back to `clone`), allowed here so that the expected
    // refusal of every thread creation is not logged.
    add(&mut ctx, "clone3", ScmpAction::Allow, &[])?;
    let sock_type = |value: i32| masked(1, 0xf, value as u64);
    for domain in [libc::AF_INET, libc::AF_INET6] {
        for typ in [libc::SOCK_STREAM, libc::SOCK_DGRAM] {
            add(
                &mut ctx,
                "socket",
                ScmpAction::Allow,
                &[eq(0, domain as u64), sock_type(typ)],
            )?;
        }
    }
    for typ in [libc::SOCK_RAW, libc::SOCK_DGRAM] {
        add(
            &mut ctx,
            "socket",
            ScmpAction::Allow,
            &[
                eq(0, libc::AF_NETLINK as u64),
                sock_type(typ),
                eq(2, libc::NETLINK_ROUTE as u64),
            ],
        )?;
    }
    for request in IOCTLS {
        add(
            &mut ctx,
            "ioctl",
            ScmpAction::Allow,
            &[masked(1, 0xffff_ffff, *request)],
        )?;
    }
    for option in PRCTLS {
        add(&mut ctx, "prctl", ScmpAction::Allow, &[eq(0, *option)])?;
    }
    Ok(ctx)
}

/// The runner's second filter, without logging, for refusals that are expected: `clone3`
/// fails with `ENOSYS` (glibc and Rust then create threads with `clone`, whose flags
/// [`allowlist`] checks) and unix sockets with `EPERM` (glibc's nscd probe). Of two filters
/// refusing alike, the kernel reports the one installed last: load this after
/// [`allowlist`]. Everything else is left to the other filters.
pub fn quiet() -> Result<ScmpFilterContext, SeccompError> {
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow)
        .map_err(lib_err("creating the seccomp filter"))?;
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .map_err(lib_err("seccomp: bad-architecture action"))?;
    if let Some(clone3) = syscall("clone3") {
        ctx.add_rule(ScmpAction::Errno(libc::ENOSYS), clone3)
            .map_err(lib_err("seccomp: rule for clone3"))?;
    }
    // glibc asks nscd (a unix socket) before every name lookup; the allowlist refuses unix
    // sockets, and this expected refusal is not worth a log line per lookup.
    if let Some(socket) = syscall("socket") {
        let unix = ScmpArgCompare::new(0, ScmpCompareOp::Equal, libc::AF_UNIX as u64);
        ctx.add_rule_conditional(ScmpAction::Errno(libc::EPERM), socket, &[unix])
            .map_err(lib_err("seccomp: rule for socket"))?;
    }
    Ok(ctx)
}

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

/// Loads `ctx` into the calling process, synchronised to all of its threads.
pub fn load(mut ctx: ScmpFilterContext, what: &str) -> Result<(), SeccompError> {
    ctx.set_ctl_tsync(true)
        .map_err(lib_err(format!("{what}: thread synchronisation")))?;
    ctx.load().map_err(lib_err(format!("loading {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    /// Runs `f` on a thread of its own after loading `ctx` there (no TSYNC: only that
    /// thread is filtered) and returns what `f` returned.
    fn filtered<T: Send + 'static>(
        ctx: ScmpFilterContext,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let ctx = SendCtx(ctx);
        std::thread::spawn(move || {
            let ctx = ctx;
            ctx.0.load().expect("load the filter on this thread");
            f()
        })
        .join()
        .expect("filtered thread")
    }

    struct SendCtx(ScmpFilterContext);
    // SAFETY: the context is only moved to the thread that loads it, never shared.
    unsafe impl Send for SendCtx {}

    fn errno_of(rc: libc::c_long) -> Option<i32> {
        (rc < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
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

    #[test]
    fn the_runner_allowlist_keeps_threads_and_inet_sockets_and_refuses_the_rest() {
        // SAFETY: getpid cannot fail.
        let pid = unsafe { libc::getpid() } as u32;
        let ctx = allowlist(Role::Runner, pid).unwrap();
        let quiet = SendCtx(quiet().unwrap());
        let seen = filtered(ctx, move || {
            let quiet = quiet;
            quiet.0.load().expect("load the quiet filter");
            let thread = std::thread::spawn(|| 7).join().ok();
            let command = std::process::Command::new("/bin/true").status().is_ok();
            // SAFETY: socket(2) and clone3(2) with plain arguments; every socket made is
            // closed, and clone3 with a NULL argument never creates anything.
            let (inet, unix, packet, clone3) = unsafe {
                let socket = |domain, typ| {
                    let fd = libc::socket(domain, typ, 0);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    errno_of(fd as libc::c_long)
                };
                (
                    socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC),
                    socket(libc::AF_UNIX, libc::SOCK_STREAM),
                    socket(libc::AF_PACKET, libc::SOCK_RAW),
                    errno_of(libc::syscall(libc::SYS_clone3, 0, 0)),
                )
            };
            (thread, command, inet, unix, packet, clone3)
        });
        assert_eq!(seen.0, Some(7), "threads can be made");
        assert!(!seen.1, "a process was started");
        assert_eq!(seen.2, None, "AF_INET stream socket");
        assert_eq!(seen.3, Some(libc::EPERM), "AF_UNIX socket");
        assert_eq!(seen.4, Some(libc::EPERM), "AF_PACKET socket");
        assert_eq!(seen.5, Some(libc::ENOSYS), "clone3");
    }

    /// What the filters cost per syscall (no assertion: a figure for the docs). Run with
    /// `cargo test --workspace --bins -- --ignored --nocapture seccomp_cost`.
    #[test]
    #[ignore = "a measurement, not a test"]
    fn seccomp_cost() {
        fn per_call() -> f64 {
            const N: u32 = 2_000_000;
            let began = std::time::Instant::now();
            for _ in 0..N {
                // SAFETY: getppid has no arguments and no effect.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            began.elapsed().as_nanos() as f64 / f64::from(N)
        }
        let bare = std::thread::spawn(per_call).join().unwrap();
        // SAFETY: getpid cannot fail.
        let pid = unsafe { libc::getpid() } as u32;
        let own = allowlist(Role::Runner, pid).unwrap();
        let quiet = SendCtx(quiet().unwrap());
        let filtered_ns = filtered(own, move || {
            let quiet = quiet;
            quiet.0.load().unwrap();
            per_call()
        });
        eprintln!(
            "getppid: {bare:.0} ns bare, {filtered_ns:.0} ns under wasmpod's two filters (+{:.0} ns)",
            filtered_ns - bare
        );
    }

    #[test]
    fn an_escape_syscall_kills_the_process() {
        // SAFETY: getpid cannot fail.
        let ctx = allowlist(Role::Runner, unsafe { libc::getpid() } as u32).unwrap();
        // SAFETY: the child loads the filter and makes one syscall; glibc's malloc is
        // fork-safe for the allocations libseccomp makes while loading.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let _ = ctx.load();
            // SAFETY: unshare(0) changes nothing even where allowed.
            unsafe {
                libc::unshare(0);
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "status {status:#x}"
        );
    }
}
