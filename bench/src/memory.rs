//! Memory of the wasmpod shims of one containerd, from `/proc`.
//!
//! [`shim_memory`] finds the shim daemons of the bench's containerd (a
//! `containerd-shim-wasmpod-v1` whose command line carries `-address <socket>`, as
//! `scripts/private-containerd.sh` finds them for cleanup), adds all their descendants (the
//! runners, one per container) and sums PSS and RSS from each process's
//! `/proc/<pid>/smaps_rollup`. PSS splits shared pages (the shim binary's text, mmapped
//! compiled modules) between the processes mapping them, so the sum is what these processes
//! cost the machine together.

use std::collections::{BTreeSet, HashMap};
use std::fs;

use serde::Serialize;

/// Sum over the shim daemons and their descendants.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ShimMemory {
    pub shims: usize,
    pub processes: usize,
    pub pss_kib: u64,
    pub rss_kib: u64,
    /// The shim daemons' own share of `pss_kib`.
    pub daemon_pss_kib: u64,
}

/// Measures the wasmpod shims started by the containerd listening on `socket`.
pub fn shim_memory(socket: &str) -> ShimMemory {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut shims = Vec::new();
    let needle = format!("-address\0{socket}\0");
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent(pid) {
            parents.entry(ppid).or_default().push(pid);
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let is_wasmpod = cmdline.starts_with("containerd-shim-wasmpod-v1")
            || cmdline.contains("/containerd-shim-wasmpod-v1\0");
        if is_wasmpod && cmdline.contains(&needle) {
            shims.push(pid);
        }
    }
    let mut all = BTreeSet::new();
    let mut stack = shims.clone();
    while let Some(pid) = stack.pop() {
        if all.insert(pid) {
            stack.extend(parents.get(&pid).into_iter().flatten());
        }
    }
    let mut total = ShimMemory {
        shims: shims.len(),
        processes: all.len(),
        ..ShimMemory::default()
    };
    for pid in all {
        let (pss, rss) = rollup(pid);
        total.pss_kib += pss;
        total.rss_kib += rss;
        if shims.contains(&pid) {
            total.daemon_pss_kib += pss;
        }
    }
    total
}

fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// `(Pss, Rss)` in KiB of one process; zeros when it is gone.
fn rollup(pid: u32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(parent(me).is_some());
        let (pss, rss) = rollup(me);
        assert!(pss > 0 && rss >= pss, "pss {pss} rss {rss}");
        assert_eq!(shim_memory("/nonexistent.sock").processes, 0);
    }
}
