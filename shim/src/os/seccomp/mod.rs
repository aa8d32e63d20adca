//! Seccomp filters of a container process, built with libseccomp (never hand-written BPF).
//!
//! Two filters, stacked (the kernel runs both on every syscall; the stricter verdict wins):
//! - [`from_oci`]: `linux.seccomp` of the spec, as kubelet sends RuntimeDefault and
//!   Localhost profiles. Mapped the way runc, crun and youki map it: default action (with
//!   `defaultErrnoRet`), architectures, flags, and per rule its names, action, `errnoRet`
//!   and argument comparisons. A name this kernel or libseccomp does not know is skipped;
//!   several comparisons of one argument become one rule each (libseccomp cannot AND
//!   them); `SCMP_ACT_NOTIFY` (a listener process) is refused.
//! - [`allowlist()`]: wasmpod's own, whatever the spec says. Only what wasmtime, WASI
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
//!
//! This file holds what both share (errors, [`Role`], loading); `allowlist.rs` builds
//! wasmpod's own filters, `oci.rs` translates the spec's profile.

mod allowlist;
mod oci;

use libseccomp::{ScmpFilterContext, ScmpSyscall};
use log::debug;

#[allow(unused_imports)] // The lists are the module's API (documented above), used or not.
pub use allowlist::{KILL, PAUSE_ALLOW, RUNNER_ALLOW, allowlist, quiet};
pub use oci::from_oci;

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

fn syscall(name: &str) -> Option<ScmpSyscall> {
    match ScmpSyscall::from_name(name) {
        Ok(call) => Some(call),
        Err(_) => {
            debug!("seccomp: {name} does not exist on this architecture; skipped");
            None
        }
    }
}

/// Loads `ctx` into the calling process, synchronised to all of its threads.
pub fn load(mut ctx: ScmpFilterContext, what: &str) -> Result<(), SeccompError> {
    ctx.set_ctl_tsync(true)
        .map_err(lib_err(format!("{what}: thread synchronisation")))?;
    ctx.load().map_err(lib_err(format!("loading {what}")))
}

#[cfg(test)]
mod test_support {
    use super::*;

    /// Runs `f` on a thread of its own after loading `ctx` there (no TSYNC: only that
    /// thread is filtered) and returns what `f` returned.
    pub(super) fn filtered<T: Send + 'static>(
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

    pub(super) struct SendCtx(pub(super) ScmpFilterContext);
    // SAFETY: the context is only moved to the thread that loads it, never shared.
    unsafe impl Send for SendCtx {}

    pub(super) fn errno_of(rc: libc::c_long) -> Option<i32> {
        (rc < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}
