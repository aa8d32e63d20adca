//! wasmpod's own filters, whatever the spec says: the allowlist of a runner or a pause
//! process ([`RUNNER_ALLOW`], [`PAUSE_ALLOW`], conditional rules for `clone`, `kill`,
//! `socket`, `ioctl`, `prctl`), the [`KILL`] list of escape syscalls, and the runner's
//! [`quiet`] filter of expected refusals. See the parent module's docs for the policy.

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};

use super::{Role, SeccompError, lib_err, syscall};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::seccomp::test_support::*;

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
