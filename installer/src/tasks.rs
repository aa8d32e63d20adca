//! Finding wasmpod tasks still running on the node, so `uninstall` does not pull the
//! runtime out from under them.
//!
//! Every running wasmpod task is served by a `containerd-shim-wasmpod-v1` daemon that
//! containerd started (`-namespace NS -address SOCKET -id ID`, no `start`/`delete` action;
//! a pod's containers share their sandbox's daemon). [`ProcScan`] lists those daemons from
//! `/proc` (the DaemonSet runs with `hostPID`, so this is the node's process table),
//! keeping only the shims of *this* containerd (their `-address` is its socket), so another
//! containerd on the machine does not count. The runners a daemon starts
//! (`containerd-shim-wasmpod-v1 __run`) are its children and not counted separately.

use std::path::{Path, PathBuf};

use crate::SHIM_BINARY;

/// A running shim daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimTask {
    /// Its pid.
    pub pid: u32,
    /// containerd namespace (`-namespace`).
    pub namespace: String,
    /// The task (for a pod: its sandbox) id (`-id`).
    pub id: String,
}

impl std::fmt::Display for ShimTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} (pid {})", self.namespace, self.id, self.pid)
    }
}

/// Lists running wasmpod tasks.
pub trait TaskFinder {
    /// The shim daemons of the containerd listening at one of `addresses` (host paths).
    fn running(&self, addresses: &[PathBuf]) -> Vec<ShimTask>;
}

/// Scans a procfs for shim daemons whose `-address` is one of the given addresses or of
/// `extra`.
#[derive(Debug, Clone)]
pub struct ProcScan {
    /// The procfs (`/proc`).
    pub proc: PathBuf,
    /// More addresses (`--containerd-socket`).
    pub extra: Vec<PathBuf>,
}

impl TaskFinder for ProcScan {
    fn running(&self, addresses: &[PathBuf]) -> Vec<ShimTask> {
        let addresses: Vec<PathBuf> = addresses.iter().chain(&self.extra).cloned().collect();
        let Ok(entries) = std::fs::read_dir(&self.proc) else {
            return Vec::new();
        };
        let mut found: Vec<ShimTask> = entries
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let argv: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                shim_daemon(pid, &argv, &addresses)
            })
            .collect();
        found.sort_by_key(|t| t.pid);
        found
    }
}

/// The task a shim command line serves, when it is a wasmpod shim daemon of one of
/// `addresses`.
pub fn shim_daemon(pid: u32, argv: &[String], addresses: &[PathBuf]) -> Option<ShimTask> {
    let program = Path::new(argv.first()?).file_name()?;
    if program != SHIM_BINARY {
        return None;
    }
    let mut flags = std::collections::HashMap::new();
    let mut positional = Vec::new();
    let mut args = argv[1..].iter();
    while let Some(arg) = args.next() {
        match arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
            Some(flag)
                if matches!(
                    flag,
                    "namespace" | "address" | "id" | "publish-binary" | "bundle" | "socket"
                ) =>
            {
                flags.insert(flag.to_owned(), args.next().cloned().unwrap_or_default());
            }
            Some(_) => {}
            None => positional.push(arg.as_str()),
        }
    }
    // `start`/`delete` are short-lived invocations; `__run`/`__pause` are a daemon's children.
    if !positional.is_empty() {
        return None;
    }
    let address = flags.get("address")?;
    if !addresses.iter().any(|a| Path::new(address) == a) {
        return None;
    }
    Some(ShimTask {
        pid,
        namespace: flags.get("namespace").cloned().unwrap_or_default(),
        id: flags.get("id").cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn only_daemons_of_this_containerd_count() {
        let ours = [PathBuf::from("/run/containerd/containerd.sock")];
        let daemon = "/usr/local/bin/containerd-shim-wasmpod-v1 -namespace k8s.io -id abc -address /run/containerd/containerd.sock";
        assert_eq!(
            shim_daemon(7, &argv(daemon), &ours),
            Some(ShimTask {
                pid: 7,
                namespace: "k8s.io".into(),
                id: "abc".into()
            })
        );
        let start = format!("{daemon} -publish-binary /usr/bin/containerd start");
        assert_eq!(shim_daemon(8, &argv(&start), &ours), None);
        let other = daemon.replace("/run/containerd/containerd.sock", "/tmp/other.sock");
        assert_eq!(shim_daemon(9, &argv(&other), &ours), None);
        let runner = "/usr/local/bin/containerd-shim-wasmpod-v1 __run 3";
        assert_eq!(shim_daemon(10, &argv(runner), &ours), None);
        let runc = "/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id abc -address /run/containerd/containerd.sock";
        assert_eq!(shim_daemon(11, &argv(runc), &ours), None);
    }

    #[test]
    fn scan_reads_a_procfs() {
        let dir = tempfile::tempdir().unwrap();
        let write = |pid: &str, cmd: &str| {
            std::fs::create_dir_all(dir.path().join(pid)).unwrap();
            std::fs::write(dir.path().join(pid).join("cmdline"), cmd.replace(' ', "\0")).unwrap();
        };
        write(
            "12",
            "containerd-shim-wasmpod-v1 -namespace default -id t1 -address /c.sock",
        );
        write("13", "sleep 10");
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        let scan = ProcScan {
            proc: dir.path().to_path_buf(),
            extra: Vec::new(),
        };
        assert!(scan.running(&["/other.sock".into()]).is_empty());
        let found = scan.running(&["/c.sock".into()]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].to_string(), "default/t1 (pid 12)");
    }
}
