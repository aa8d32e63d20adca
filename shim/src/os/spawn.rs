//! Starting a container process: `clone3` and `execve`, with the steps a container needs in
//! between (cgroup, namespaces, descriptors, working directory) made with raw syscalls only,
//! since the shim is multi-threaded.
//!
//! Why not `std::process::Command`: it can only `fork`, so the child has to move itself into
//! its cgroup by writing `cgroup.procs`. Moving a process into a new cgroup waits for an RCU
//! grace period (the cgroup core's thread-group lock), and that wait was 10-13 ms of a 16 ms
//! spawn on this machine, on v1 and v2 alike; `clone3(CLONE_INTO_CGROUP)` creates the child
//! inside its v2 cgroup with no move at all (3.1 ms, the same as a spawn with no cgroup).
//! The child also sets `no_new_privs` before it executes anything.
//!
//! The mount and PID namespaces are made by `clone3` itself
//! ([`OpenNamespaces::clone_flags`]), so every thread the process will ever have shares
//! them; a PID namespace to join (a pod's shared one) is joined first by a short-lived thread
//! that then makes the clone, since `setns(CLONE_NEWPID)` only places the caller's children.
//! The pid returned is the host's, whatever namespace the child is PID 1 of.
//! Figures: `python3 bench/spawn-paths.py` (run by `make bench`). On cgroup v1, or a kernel
//! older than 5.7, the child still writes `0` to each `cgroup.procs`.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::os::fd;
use crate::os::namespaces::OpenNamespaces;

/// How the child gets into its cgroup.
pub enum CgroupJoin<'a> {
    /// Stay in the shim's cgroup.
    None,
    /// Created inside the cgroup whose directory is `dir` (v2); `procs` is that cgroup's
    /// `cgroup.procs`, written instead where the kernel lacks `CLONE_INTO_CGROUP`.
    CloneInto {
        dir: BorrowedFd<'a>,
        procs: &'a File,
    },
    /// The child writes `0` to each of these `cgroup.procs` files (v1: one per controller).
    WriteProcs(&'a [File]),
}

/// What to start.
pub struct SpawnRequest<'a> {
    pub exe: &'a Path,
    /// The whole argv, `args[0]` included.
    pub args: &'a [&'a OsStr],
    pub cwd: &'a Path,
    pub cgroup: CgroupJoin<'a>,
    pub namespaces: &'a OpenNamespaces,
    /// Descriptors to hand over: `(ours, number in the child)`. Stdin, stdout and stderr
    /// are `/dev/null`.
    pub fds: &'a [(RawFd, RawFd)],
}

/// `struct clone_args` of clone3(2), the first version with `cgroup`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Starts the process and returns its pid once `execve` succeeded; an error names the step
/// that failed in the child.
pub fn spawn(request: &SpawnRequest) -> std::io::Result<u32> {
    let c_string = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| std::io::Error::other("argument holds a NUL byte"))
    };
    let exe = c_string(request.exe.as_os_str().as_bytes())?;
    let args = request
        .args
        .iter()
        .map(|arg| c_string(arg.as_bytes()))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let cwd = c_string(request.cwd.as_os_str().as_bytes())?;
    // Every descriptor the child dup2s from, and its error pipe, sits above every target
    // number, so no dup2 in the child can close a descriptor it still needs, and each
    // target is a fresh copy without close-on-exec.
    let lowest = request
        .fds
        .iter()
        .map(|(_, to)| to + 1)
        .max()
        .unwrap_or(0)
        .max(3);
    let above = |fd: RawFd| -> std::io::Result<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor that we own from here on.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, lowest) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: just made, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(copy) })
    };
    // The originals close at the end of each block: only the copies stay open.
    let dev_null = {
        let original = File::options().read(true).write(true).open("/dev/null")?;
        above(original.as_raw_fd())?
    };
    let (mut error_r, error_w) = {
        let (read, write) = fd::pipe()?;
        (read, above(write.as_raw_fd())?)
    };
    let sources = request
        .fds
        .iter()
        .map(|(from, _)| above(*from))
        .collect::<std::io::Result<Vec<_>>>()?;
    let moves: Vec<(RawFd, RawFd)> = sources
        .iter()
        .zip(request.fds)
        .map(|(source, (_, to))| (source.as_raw_fd(), *to))
        .collect();
    let child = ChildSteps {
        exe: &exe,
        argv: &argv,
        cwd: &cwd,
        dev_null: dev_null.as_raw_fd(),
        error_pipe: error_w.as_raw_fd(),
        namespaces: request.namespaces,
        fds: &moves,
        first_unlisted: lowest,
    };

    let pid = match request.namespaces.pid_to_join() {
        None => clone_child(&child, &request.cgroup)?,
        // setns(CLONE_NEWPID) places only the caller's later children, and for good: done
        // on a thread that lives just for this clone, so no other thread of the shim is
        // affected.
        Some(pid_ns) => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(pid_ns, nix::sched::CloneFlags::CLONE_NEWPID).map_err(
                        |e| std::io::Error::other(format!("joining the PID namespace: {e}")),
                    )?;
                    clone_child(&child, &request.cgroup)
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("spawn thread panicked")))
        })?,
    };
    drop(error_w);
    drop(sources);
    drop(dev_null);
    let mut report = [0u8; 8];
    let mut read = 0;
    while read < report.len() {
        match error_r.read(&mut report[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if read == 0 {
        return Ok(pid as u32);
    }
    let step = u32::from_ne_bytes(report[..4].try_into().expect("4 bytes"));
    let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
    let error = std::io::Error::from_raw_os_error(errno);
    Err(std::io::Error::new(
        error.kind(),
        format!(
            "{} in the new process: {error}",
            Step::from_code(step).name()
        ),
    ))
}

/// Clones the child (which runs `child` and never returns here) into its cgroup and
/// namespaces; returns its pid.
fn clone_child(child: &ChildSteps, cgroup: &CgroupJoin) -> std::io::Result<libc::pid_t> {
    let flags = child.namespaces.clone_flags();
    match cgroup {
        CgroupJoin::CloneInto { dir, procs } => {
            match clone3(flags | CLONE_INTO_CGROUP, dir.as_raw_fd()) {
                Ok(0) => child.run(&[], true),
                Ok(pid) => Ok(pid),
                // Kernels before 5.7 (no CLONE_INTO_CGROUP: E2BIG or EINVAL), and seccomp
                // profiles that refuse clone3 (EPERM, or ENOSYS): clone without the cgroup
                // and write `cgroup.procs`, which surfaces a real permission problem on its
                // own.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM)
                    ) =>
                {
                    clone_without_cgroup(child, &[procs.as_raw_fd()], flags)
                }
                Err(e) => Err(e),
            }
        }
        CgroupJoin::WriteProcs(files) => {
            let procs: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
            clone_without_cgroup(child, &procs, flags)
        }
        CgroupJoin::None => clone_without_cgroup(child, &[], flags),
    }
}

/// `clone3` with `flags` and no cgroup (the child writes `procs`); a plain `fork` where
/// clone3 is missing or refused, unless a new PID namespace is asked for (only a clone
/// flag makes the child itself PID 1).
fn clone_without_cgroup(
    child: &ChildSteps,
    procs: &[RawFd],
    flags: u64,
) -> std::io::Result<libc::pid_t> {
    match clone3(flags, -1) {
        Ok(0) => child.run(procs, true),
        Ok(pid) => Ok(pid),
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
                && flags & libc::CLONE_NEWPID as u64 == 0 =>
        {
            fork(child, procs)
        }
        Err(e) => Err(e),
    }
}

/// `clone3` without `CLONE_VM`: a fork with namespace flags and, when `cgroup_dir` is a
/// descriptor (flags holding `CLONE_INTO_CGROUP`), created inside that cgroup.
fn clone3(flags: u64, cgroup_dir: RawFd) -> std::io::Result<libc::pid_t> {
    let args = CloneArgs {
        // The child starts with default signal handlers: the shim's (signal-hook's) must
        // not run in it before exec.
        flags: flags | CLONE_CLEAR_SIGHAND,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir.max(0) as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM gives the child a copy of this address space, like
    // fork; the child only runs `ChildSteps::run`, which makes raw syscalls and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid as libc::pid_t)
}

fn fork(child: &ChildSteps, procs: &[RawFd]) -> std::io::Result<libc::pid_t> {
    // SAFETY: as for clone3: the child only runs `ChildSteps::run`.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => child.run(procs, false),
        pid => Ok(pid),
    }
}

/// The steps between clone and exec, for the error report (sent as the discriminant, which
/// is the step's index in [`Step::ALL`]).
#[derive(Clone, Copy)]
enum Step {
    SignalMask,
    NoNewPrivs,
    Cgroup,
    Namespaces,
    Descriptors,
    WorkingDir,
    Exec,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::SignalMask,
        Step::NoNewPrivs,
        Step::Cgroup,
        Step::Namespaces,
        Step::Descriptors,
        Step::WorkingDir,
        Step::Exec,
    ];

    fn from_code(code: u32) -> Step {
        Step::ALL.get(code as usize).copied().unwrap_or(Step::Exec)
    }

    fn name(self) -> &'static str {
        match self {
            Step::SignalMask => "resetting the signal mask",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::Cgroup => "joining the cgroup",
            Step::Namespaces => "entering the namespaces",
            Step::Descriptors => "setting up descriptors",
            Step::WorkingDir => "changing to the bundle directory",
            Step::Exec => "executing the program",
        }
    }
}

/// Everything the child needs, prepared before clone: no allocation after it.
struct ChildSteps<'a> {
    exe: &'a CString,
    argv: &'a [*const libc::c_char],
    cwd: &'a CString,
    dev_null: RawFd,
    error_pipe: RawFd,
    namespaces: &'a OpenNamespaces,
    fds: &'a [(RawFd, RawFd)],
    /// The lowest descriptor above stdio and every target of `fds`: it and all above it
    /// close at the exec.
    first_unlisted: RawFd,
}

// SAFETY: the raw pointers in `argv` point into `CString`s of the `spawn` call that made
// this value and outlives every thread that sees it; they are only read.
unsafe impl Sync for ChildSteps<'_> {}

impl ChildSteps<'_> {
    /// Runs in the child; never returns. `cloned`: made by clone3 with the namespaces'
    /// clone flags (not a plain fork).
    fn run(&self, procs: &[RawFd], cloned: bool) -> ! {
        let (step, errno) = match self.steps(procs, cloned) {
            Err((step, errno)) => (step, errno),
            Ok(()) => (Step::Exec, errno()),
        };
        let mut report = [0u8; 8];
        report[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        report[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: raw syscalls on descriptors this process owns; _exit skips atexit handlers
        // and destructors that belong to the parent.
        unsafe {
            libc::write(self.error_pipe, report.as_ptr().cast(), report.len());
            libc::_exit(127)
        }
    }

    /// Returns only on failure (after a failed `execve` with `Ok`).
    fn steps(&self, procs: &[RawFd], cloned: bool) -> Result<(), (Step, i32)> {
        let check =
            |step: Step, rc: libc::c_int| if rc < 0 { Err((step, errno())) } else { Ok(()) };
        // SAFETY: plain syscalls on values prepared before the clone.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            // pthread_sigmask returns the error number instead of setting errno.
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if rc != 0 {
                return Err((Step::SignalMask, rc));
            }
            // Rust ignores SIGPIPE; an exec'd program should start with the default.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            // Nothing a container process runs may gain privileges (a guest cannot exec, so
            // this costs nothing and closes setuid/file-capability paths for good).
            check(
                Step::NoNewPrivs,
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            )?;
            for procs in procs {
                if libc::write(*procs, b"0".as_ptr().cast(), 1) != 1 {
                    return Err((Step::Cgroup, errno()));
                }
            }
            if let Err(e) = self.namespaces.enter(cloned) {
                return Err((Step::Namespaces, e.raw_os_error().unwrap_or(libc::EINVAL)));
            }
            for stdio in 0..3 {
                check(Step::Descriptors, libc::dup2(self.dev_null, stdio))?;
            }
            for (from, to) in self.fds {
                check(Step::Descriptors, libc::dup2(*from, *to))?;
            }
            // Nothing else crosses the exec: a descriptor the shim inherited without
            // close-on-exec would otherwise reach the container. (Marked, not closed: the
            // error pipe is needed until the exec.) Kernels before 5.11 lack the flag.
            let marked = libc::syscall(
                libc::SYS_close_range,
                self.first_unlisted as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if marked != 0 && !matches!(errno(), libc::ENOSYS | libc::EINVAL) {
                return Err((Step::Descriptors, errno()));
            }
            check(Step::WorkingDir, libc::chdir(self.cwd.as_ptr()))?;
            // Read without std's environment lock: the shim never calls `set_var`.
            unsafe extern "C" {
                static environ: *const *const libc::c_char;
            }
            libc::execve(self.exe.as_ptr(), self.argv.as_ptr(), environ);
        }
        Ok(())
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::namespaces::NamespacePlan;
    use std::os::fd::AsFd;

    fn request<'a>(
        args: &'a [&'a OsStr],
        namespaces: &'a OpenNamespaces,
        cgroup: CgroupJoin<'a>,
    ) -> SpawnRequest<'a> {
        SpawnRequest {
            exe: Path::new("/bin/sleep"),
            args,
            cwd: Path::new("/"),
            cgroup,
            namespaces,
            fds: &[],
        }
    }

    /// Needs root and a cgroup v2 hierarchy (`/sys/fs/cgroup` or this machine's hybrid
    /// `/sys/fs/cgroup/unified`); run by `make test` as root.
    #[test]
    #[ignore = "needs root"]
    fn clone3_starts_the_process_inside_its_v2_cgroup() {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "needs root (makes a cgroup); run via `make test` as root"
        );
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|root| {
                root.join("cgroup.procs").exists() && root.join("cgroup.subtree_control").exists()
            })
            .expect("a cgroup v2 hierarchy");
        let dir = root.join(format!("wasmpod-spawn-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let dir_fd = File::open(&dir).unwrap();
        let procs = File::options()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .unwrap();
        let namespaces = NamespacePlan::default().open().unwrap();
        let args = [OsStr::new("sleep"), OsStr::new("5")];
        let pid = spawn(&request(
            &args,
            &namespaces,
            CgroupJoin::CloneInto {
                dir: dir_fd.as_fd(),
                procs: &procs,
            },
        ))
        .unwrap();
        let members = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        // SAFETY: our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(members.trim(), pid.to_string());
    }

    #[test]
    fn the_process_cannot_gain_privileges() {
        let namespaces = NamespacePlan::default().open().unwrap();
        let args = [OsStr::new("sleep"), OsStr::new("5")];
        let pid = spawn(&request(&args, &namespaces, CgroupJoin::None)).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        // SAFETY: our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    }

    #[test]
    fn descriptors_reach_their_numbers_even_when_sources_and_targets_cross() {
        use std::io::Read;
        let namespaces = NamespacePlan::default().open().unwrap();
        let (mut a_r, a_w) = fd::pipe().unwrap();
        let (mut b_r, b_w) = fd::pipe().unwrap();
        // A's write end sits at 61 and goes to 60; B's sits at 60 and goes to 61: a naive
        // dup2 sequence would close B before moving it.
        // SAFETY: 60/61 are free in this test process and closed again below (close-on-exec,
        // so processes other tests start meanwhile do not keep the pipes open).
        unsafe {
            assert_eq!(libc::dup3(a_w.as_raw_fd(), 61, libc::O_CLOEXEC), 61);
            assert_eq!(libc::dup3(b_w.as_raw_fd(), 60, libc::O_CLOEXEC), 60);
        }
        drop((a_w, b_w));
        // bash: dash takes only one-digit descriptors in redirections.
        let args = [
            OsStr::new("bash"),
            OsStr::new("-c"),
            OsStr::new("echo a >&60; echo b >&61"),
        ];
        let mut req = request(&args, &namespaces, CgroupJoin::None);
        req.exe = Path::new("/bin/bash");
        req.fds = &[(61, 60), (60, 61)];
        let pid = spawn(&req).unwrap();
        // SAFETY: ours, from the dup2 above.
        unsafe {
            libc::close(60);
            libc::close(61);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
        let (mut a, mut b) = (String::new(), String::new());
        a_r.read_to_string(&mut a).unwrap();
        b_r.read_to_string(&mut b).unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("a\n", "b\n"));
    }

    #[test]
    fn a_descriptor_inherited_without_close_on_exec_does_not_reach_the_process() {
        use std::io::Read;
        let namespaces = NamespacePlan::default().open().unwrap();
        let (mut report_r, report_w) = fd::pipe().unwrap();
        // SAFETY: 62 is free in this test process and closed again below.
        unsafe {
            assert_eq!(libc::dup2(report_w.as_raw_fd(), 62), 62);
        }
        let args = [
            OsStr::new("bash"),
            OsStr::new("-c"),
            OsStr::new("if [ -e /proc/$$/fd/62 ]; then echo open; else echo closed; fi >&3"),
        ];
        let mut req = request(&args, &namespaces, CgroupJoin::None);
        req.exe = Path::new("/bin/bash");
        let fds = [(report_w.as_raw_fd(), 3)];
        req.fds = &fds;
        let pid = spawn(&req);
        // SAFETY: ours, from the dup2 above.
        unsafe { libc::close(62) };
        drop(report_w);
        let pid = pid.unwrap();
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
        let mut report = String::new();
        report_r.read_to_string(&mut report).unwrap();
        assert_eq!(report, "closed\n");
    }

    fn ns_pids(pid: u32) -> Vec<u32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .map(|l| l.split_whitespace().map(|p| p.parse().unwrap()).collect())
            .unwrap()
    }

    fn kill_and_reap(pid: u32) {
        // SAFETY: our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
    }

    /// Needs root (makes namespaces); run by `make test` as root.
    #[test]
    #[ignore = "needs root"]
    fn a_new_pid_namespace_makes_the_process_its_init_and_a_path_is_joined() {
        use oci_spec::runtime::LinuxNamespaceType;
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "needs root (makes namespaces); run via `make test` as root"
        );
        let args = [OsStr::new("sleep"), OsStr::new("5")];
        let create = NamespacePlan {
            create: vec![LinuxNamespaceType::Pid, LinuxNamespaceType::Mount],
            ..Default::default()
        }
        .open()
        .unwrap();
        let init = spawn(&request(&args, &create, CgroupJoin::None)).unwrap();
        let join = NamespacePlan {
            join: vec![(
                LinuxNamespaceType::Pid,
                format!("/proc/{init}/ns/pid").into(),
            )],
            ..Default::default()
        }
        .open()
        .unwrap();
        let member = spawn(&request(&args, &join, CgroupJoin::None)).unwrap();
        let link = |pid: u32, ns: &str| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
        let seen = (
            ns_pids(init),
            ns_pids(member),
            link(init, "pid") == link(member, "pid"),
            link(init, "mnt") != link(std::process::id(), "mnt"),
            link(member, "mnt") == link(std::process::id(), "mnt"),
        );
        kill_and_reap(member);
        kill_and_reap(init);
        let (init_pids, member_pids, same_pid_ns, own_mnt, host_mnt) = seen;
        assert_eq!(init_pids, [init, 1]);
        assert_eq!(member_pids, [member, 2]);
        assert!(same_pid_ns, "the joined PID namespace");
        assert!(own_mnt, "a mount namespace of its own");
        assert!(host_mnt, "no mount namespace was asked for");
    }

    #[test]
    fn step_codes_round_trip() {
        for (code, step) in Step::ALL.iter().enumerate() {
            assert_eq!(*step as usize, code);
            assert_eq!(Step::from_code(code as u32).name(), step.name());
        }
    }

    #[test]
    fn a_failed_exec_is_reported_with_its_step() {
        let namespaces = NamespacePlan::default().open().unwrap();
        let args = [OsStr::new("nothing")];
        let mut bad = request(&args, &namespaces, CgroupJoin::None);
        bad.exe = Path::new("/nonexistent/binary");
        let err = spawn(&bad).unwrap_err().to_string();
        assert!(err.contains("executing the program"), "{err}");
        assert!(err.contains("No such file"), "{err}");
        bad.exe = Path::new("/bin/true");
        bad.cwd = Path::new("/nonexistent/bundle");
        let err = spawn(&bad).unwrap_err().to_string();
        assert!(err.contains("changing to the bundle directory"), "{err}");
    }
}
