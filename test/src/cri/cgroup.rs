//! The cgroup subtree test pods are placed under: [`TestCgroup`] names it (their
//! `cgroup_parent`), lists what is below it and removes it on drop, in every mounted
//! hierarchy ([`cgroup_mounts`]), as kubelet removes pod cgroups in a cluster.

use std::fs;
use std::path::{Path, PathBuf};

use crate::containerd::procfs::mounts;

/// A cgroup subtree (cgroupfs driver path, e.g. `/wasmpod-test-123-0`) that test pods
/// use as `cgroup_parent`; on drop every empty directory of it is removed from every
/// mounted hierarchy (cgroup v1 controllers and v2), deepest first.
#[derive(Debug)]
pub struct TestCgroup {
    path: String,
}

impl TestCgroup {
    /// A subtree named `/wasmpod-test-<pid>-<tag>`; nothing is created (runc and the
    /// shim create what they use).
    pub fn new(tag: &str) -> Self {
        Self {
            path: format!("/wasmpod-test-{}-{tag}", std::process::id()),
        }
    }

    /// The cgroupfs path, e.g. `/wasmpod-test-123-0`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A per-pod parent below it: `<path>/pod<name>`.
    pub fn pod_parent(&self, pod: &str) -> String {
        format!("{}/pod{pod}", self.path)
    }

    /// Directories below `cgroup` (a cgroupfs path) in any hierarchy, e.g.
    /// `/sys/fs/cgroup/memory/wasmpod-test-1-0/podx/<container id>`.
    pub fn dirs_below(cgroup: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for root in cgroup_mounts() {
            let top = root.join(cgroup.trim_start_matches('/'));
            walk_dirs(&top, &mut out);
        }
        out
    }

    /// Remove every directory of the subtree (deepest first); returns what could not be
    /// removed (still holding processes).
    pub fn remove(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for root in cgroup_mounts() {
            let top = root.join(self.path.trim_start_matches('/'));
            if top.is_dir() {
                walk_dirs(&top, &mut dirs);
                dirs.push(top);
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs.into_iter()
            .filter(|d| fs::remove_dir(d).is_err() && d.exists())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let left = self.remove();
        if !left.is_empty() {
            eprintln!("wasmpod-test: cgroups not removable (busy): {left:?}");
        }
    }
}

/// Mount points of cgroup (v1) and cgroup2 filesystems, deduplicated.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mounts()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.point)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let p = e.path();
            walk_dirs(&p, out);
            out.push(p);
        }
    }
}
