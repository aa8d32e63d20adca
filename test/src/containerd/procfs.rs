//! The `/proc` scans behind the leftover checks: processes by name and `-address` argument
//! with their descendants, the unix sockets processes hold, mounts from
//! `/proc/self/mountinfo`, and FIFOs under a directory. Nothing here asks containerd, so
//! it still works when containerd or the shim is what broke.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::ShimProcess;

/// One line of `/proc/self/mountinfo`: where something is mounted, and its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// The mount point, octal escapes decoded.
    pub(crate) point: PathBuf,
    /// The filesystem type (`cgroup2`, `overlay`, ...).
    pub(crate) fstype: String,
}

/// Every mount of this process' mount namespace, in `/proc/self/mountinfo` order.
pub(crate) fn mounts() -> Vec<Mount> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            // `id parent major:minor root mount-point options... - fstype source super-options`
            let (pre, post) = l.split_once(" - ")?;
            Some(Mount {
                point: PathBuf::from(unescape_mountinfo(pre.split(' ').nth(4)?)),
                fstype: post.split(' ').next()?.to_owned(),
            })
        })
        .collect()
}

/// Mount points at or under `path`, deepest first.
pub(super) fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|m| m.point)
        .filter(|m| m.starts_with(path))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `argv[0]`'s file name is one of `names`.
pub(super) fn is_named(cmdline: &[String], names: &[&str]) -> bool {
    cmdline
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(OsStr::to_str)
        .is_some_and(|n| names.contains(&n))
}

/// All processes: pid -> (ppid, argv).
fn all_processes() -> HashMap<i32, (i32, Vec<String>)> {
    let mut out = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces and parens.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let argv = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.insert(pid, (ppid, argv));
    }
    out
}

/// Processes named one of `names` with `-address <address>` in argv, plus descendants.
pub(super) fn processes_of(names: &[&str], address: &str) -> Vec<ShimProcess> {
    let procs = all_processes();
    let mut matched: BTreeSet<i32> = procs
        .iter()
        .filter(|(_, (_, argv))| {
            is_named(argv, names)
                && argv
                    .windows(2)
                    .any(|w| w[0].trim_start_matches('-') == "address" && w[1] == address)
        })
        .map(|(pid, _)| *pid)
        .collect();
    loop {
        let before = matched.len();
        for (pid, (ppid, _)) in &procs {
            if matched.contains(ppid) {
                matched.insert(*pid);
            }
        }
        if matched.len() == before {
            break;
        }
    }
    matched
        .into_iter()
        .filter_map(|pid| {
            procs.get(&pid).map(|(ppid, argv)| ShimProcess {
                pid,
                ppid: *ppid,
                cmdline: argv.clone(),
            })
        })
        .collect()
}

/// Paths of unix sockets held open by `pids` (via `/proc/<pid>/fd` and `/proc/net/unix`).
pub(super) fn unix_sockets_of(pids: &[i32]) -> Vec<PathBuf> {
    let mut inodes = BTreeSet::new();
    for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(ino) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(ino.to_owned());
                }
            }
        }
    }
    let table = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path
            (cols.len() >= 8 && inodes.contains(cols[6])).then(|| PathBuf::from(cols[7]))
        })
        .collect()
}

/// Append every FIFO at any depth under `dir` to `out`.
pub(super) fn find_fifos(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_fifo() {
            out.push(e.path());
        } else if ft.is_dir() {
            find_fifos(&e.path(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_octal_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
