//! What a test left behind, and removing it: the shim processes of a harness' containerd
//! ([`ShimProcess`]), mounts and FIFOs under its temp dir and shim sockets under
//! `/run/containerd/s` ([`Leftovers`]); on drop the harness kills, unmounts and removes
//! them.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use super::procfs::{find_fifos, is_named, mounts_under, processes_of, unix_sockets_of};
use super::{CRI_NAMESPACE, Containerd, SHIM_BINARY};

/// The runc shim; killed at drop as well if it carries our socket address.
const RUNC_SHIM_BINARY: &str = "containerd-shim-runc-v2";
/// Where containerd (any instance) puts shim sockets; not configurable.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// A process found by [`Containerd::shim_processes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimProcess {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// Its argv.
    pub cmdline: Vec<String>,
}

impl ShimProcess {
    /// True for the transient `start`/`delete` invocations of a shim binary.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.cmdline.last().map(String::as_str),
            Some("start" | "delete")
        )
    }
}

/// What a test left behind; see [`Containerd::leftovers`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Shim processes (and their descendants) carrying our containerd address.
    pub processes: Vec<ShimProcess>,
    /// Mount points under the harness temp dir (its containerd root and state).
    pub mounts: Vec<PathBuf>,
    /// FIFOs under the harness temp dir (containerd state and the `ctr` FIFO dir).
    pub fifos: Vec<PathBuf>,
    /// Shim sockets under `/run/containerd/s` held by our shims, or left for our containers.
    pub sockets: Vec<PathBuf>,
}

impl Leftovers {
    /// True when nothing was left behind.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.mounts.is_empty()
            && self.fifos.is_empty()
            && self.sockets.is_empty()
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "nothing left behind");
        }
        for p in &self.processes {
            writeln!(
                f,
                "process {} (ppid {}): {}",
                p.pid,
                p.ppid,
                p.cmdline.join(" ")
            )?;
        }
        for m in &self.mounts {
            writeln!(f, "mount {}", m.display())?;
        }
        for p in &self.fifos {
            writeln!(f, "fifo {}", p.display())?;
        }
        for s in &self.sockets {
            writeln!(f, "socket {}", s.display())?;
        }
        Ok(())
    }
}

impl Containerd {
    /// Shim processes started by this containerd (`containerd-shim-wasmpod-v1` or
    /// `containerd-shim-runc-v2` whose cmdline carries our socket address), and every
    /// descendant of them, sorted by pid.
    pub fn all_shim_processes(&self) -> Vec<ShimProcess> {
        shim_processes_of(&self.socket())
    }

    /// `containerd-shim-wasmpod-v1` processes of this containerd (by `-address <our
    /// socket>` in the cmdline) and their descendants, sorted by pid.
    pub fn shim_processes(&self) -> Vec<ShimProcess> {
        processes_of(&[SHIM_BINARY], &self.address())
    }

    /// The long-lived wasmpod shim daemons only: matching processes whose parent is not
    /// itself a shim process, excluding transient `start`/`delete` invocations.
    pub fn shim_daemons(&self) -> Vec<ShimProcess> {
        let all = self.shim_processes();
        let pids: BTreeSet<i32> = all.iter().map(|p| p.pid).collect();
        all.iter()
            .filter(|p| !pids.contains(&p.ppid) && !p.is_transient())
            .filter(|p| is_named(&p.cmdline, &[SHIM_BINARY]))
            .cloned()
            .collect()
    }

    /// Mount points at or under `path` (from `/proc/self/mountinfo`), deepest first.
    pub fn mounts_under(path: impl AsRef<Path>) -> Vec<PathBuf> {
        mounts_under(path.as_ref())
    }

    /// Everything a finished test should have cleaned up: shim processes of this
    /// containerd, mounts and FIFOs under the harness dir, and shim sockets (held by our
    /// running shims, or stale ones named for our containers and noted groups).
    pub fn leftovers(&self) -> Leftovers {
        let processes = self.all_shim_processes();
        let mut mounts = mounts_under(&self.path);
        mounts.sort();
        let mut fifos = Vec::new();
        find_fifos(&self.path, &mut fifos);
        fifos.sort();

        let pids: Vec<i32> = processes.iter().map(|p| p.pid).collect();
        let mut sockets: BTreeSet<PathBuf> = unix_sockets_of(&pids)
            .into_iter()
            .filter(|s| s.starts_with(SHIM_SOCKET_DIR))
            .collect();
        sockets.extend(self.shim_socket_paths().into_iter().filter(|p| p.exists()));
        Leftovers {
            processes,
            mounts,
            fifos,
            sockets: sockets.into_iter().collect(),
        }
    }

    /// Poll [`Containerd::leftovers`] until it is empty or `timeout` passes (shims exit
    /// asynchronously after `ctr` returns); returns the last report.
    pub fn wait_no_leftovers(&self, timeout: Duration) -> Leftovers {
        crate::poll::wait_until(timeout, "no leftovers", || {
            let l = self.leftovers();
            l.is_empty().then_some(l)
        })
        .unwrap_or_else(|_| self.leftovers())
    }

    /// After containerd stopped: kill our shims, unmount what is mounted under the harness
    /// dir, remove the shim sockets of our containers and the per-namespace runtime dirs.
    pub(super) fn remove_leftovers(&self) {
        for p in self.all_shim_processes() {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        // Give killed processes a moment to release their mounts.
        let _ = crate::poll::wait_until(Duration::from_secs(2), "killed shims gone", || {
            self.all_shim_processes().is_empty().then_some(())
        });
        for m in mounts_under(&self.path) {
            if nix::mount::umount2(&m, nix::mount::MntFlags::empty()).is_err() {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for p in self.shim_socket_paths() {
            let _ = fs::remove_file(p);
        }
        // Per-namespace runtime dirs (e.g. /run/containerd/runc/<ns>), if empty.
        if let Ok(entries) = fs::read_dir("/run/containerd") {
            for e in entries.flatten() {
                let _ = fs::remove_dir(e.path().join(&self.namespace));
            }
        }
    }

    /// Our containerd address as shims see it (`-address` in their cmdline).
    fn address(&self) -> String {
        self.socket().to_string_lossy().into_owned()
    }

    /// Where the shim socket of every known container or group would be, in our namespace
    /// and in [`CRI_NAMESPACE`].
    fn shim_socket_paths(&self) -> Vec<PathBuf> {
        let address = self.address();
        let mut paths = Vec::new();
        for id in self.known_ids() {
            for ns in [self.namespace.as_str(), CRI_NAMESPACE] {
                paths.push(Path::new(SHIM_SOCKET_DIR).join(shim_socket_name(&address, ns, &id)));
            }
        }
        paths
    }
}

/// Shim processes (`containerd-shim-wasmpod-v1` or `containerd-shim-runc-v2`) started by the
/// containerd listening on `address` (by `-address <address>` in their cmdline) and every
/// descendant of them, sorted by pid: for tests that run a containerd of their own.
pub fn shim_processes_of(address: &Path) -> Vec<ShimProcess> {
    processes_of(&[SHIM_BINARY, RUNC_SHIM_BINARY], &address.to_string_lossy())
}

/// The name containerd and the shim give a shim socket under `/run/containerd/s`:
/// hex sha256 of `<containerd address>/<namespace>/<group id>`.
pub fn shim_socket_name(address: &str, namespace: &str, id: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{address}/{namespace}/{id}").as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_name_matches_containerd_scheme() {
        // sha256("/run/containerd/containerd.sock/default/abc")
        let n = shim_socket_name("/run/containerd/containerd.sock", "default", "abc");
        let want = hex::encode(Sha256::digest(
            b"/run/containerd/containerd.sock/default/abc",
        ));
        assert_eq!(n, want);
        assert_eq!(n.len(), 64);
    }
}
