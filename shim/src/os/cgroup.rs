//! The cgroup of one container: create it at `linux.cgroupsPath`, apply the spec's limits
//! (and later changes of them: Update), put the container process in it, freeze and thaw it
//! (Pause, Resume), read its usage, remove it.
//!
//! Works on cgroup v2 (unified) and v1 (one hierarchy per controller; this machine's hybrid
//! layout), with the cgroupfs driver (`/parent/child` paths) and the systemd driver
//! (`slice:prefix:name`, expanded to the slice hierarchy). The systemd driver needs systemd
//! as PID 1; without it the error says so instead of inventing units.
//!
//! The container process is in its cgroup from its first instruction: on v2 it is created
//! there (`clone3` with `CLONE_INTO_CGROUP`), on v1 it writes `0` to `cgroup.procs` files
//! opened before the clone ([`Cgroup::open_for_spawn`], [`crate::os::spawn`]).
//!
//! `cgroupsPath` is untrusted input (anyone who can create a container chooses it): a path
//! with a `..` or `.` component, a NUL, a systemd part holding `/` or an empty slice segment,
//! or one that names a hierarchy root itself is refused before anything is created
//! ([`CgroupError::Escapes`]), and a directory is only made where the nearest existing
//! ancestor is on a cgroup filesystem. cgroupfs has no symlinks, so a path made of plain
//! components below a controller's mount stays below it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use crate::os::spawn::CgroupJoin;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// v1 controllers a container cgroup is made in (those mounted on the node).
const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];
/// How long Pause and Resume wait for the kernel to report the cgroup frozen or thawed.
const FREEZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "cgroupsPath {path:?} asks for the systemd cgroup driver (SystemdCgroup = true), but systemd is not running on this node (PID 1 is {pid1:?}); configure the cgroupfs driver"
    )]
    SystemdNotRunning { path: String, pid1: String },
    #[error("cgroupsPath {0:?} is not of the form slice:prefix:name")]
    BadSystemdPath(String),
    #[error(
        "cgroupsPath {path:?} is refused: {reason} (it must name a cgroup below the cgroup hierarchy root)"
    )]
    Escapes { path: String, reason: &'static str },
    #[error(
        "the node has no cgroup freezer (cgroup v1 without the freezer controller mounted); pause is not possible"
    )]
    NoFreezer,
    #[error("{path} did not reach {wanted:?} within {timeout:?} (it reads {found:?})")]
    FreezeTimeout {
        path: PathBuf,
        wanted: &'static str,
        found: String,
        timeout: std::time::Duration,
    },
    #[error("cgroup directory {0} is not on a cgroup filesystem; refusing to create it")]
    NotCgroupFs(PathBuf),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io {
        action,
        path,
        source,
    }
}

/// CPU and memory use of a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit: u64,
    pub oom_kills: u64,
    pub pids: u64,
}

/// One container's cgroup (a directory per hierarchy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    v2: bool,
    dirs: Vec<PathBuf>,
}

/// A cgroup's files, opened before a process is spawned into it.
pub struct SpawnEntry {
    /// The v2 directory (for `CLONE_INTO_CGROUP`); `None` on v1.
    dir: Option<File>,
    procs: Vec<File>,
}

impl SpawnEntry {
    /// How [`crate::os::spawn::spawn`] puts the process in this cgroup.
    pub fn join(&self) -> CgroupJoin<'_> {
        match (&self.dir, self.procs.first()) {
            (Some(dir), Some(procs)) => CgroupJoin::CloneInto {
                dir: dir.as_fd(),
                procs,
            },
            _ => CgroupJoin::WriteProcs(&self.procs),
        }
    }
}

/// Refuses a `cgroupsPath` that could leave the hierarchy (see the module docs); checks the
/// text only, so it also guards paths handed to runc and to `delete`.
pub fn check_path(cgroups_path: &str) -> Result<(), CgroupError> {
    let refuse = |reason| CgroupError::Escapes {
        path: cgroups_path.to_owned(),
        reason,
    };
    if cgroups_path.contains('\0') {
        return Err(refuse("it holds a NUL byte"));
    }
    if cgroups_path.contains(':') {
        return check_systemd_parts(cgroups_path).map_err(refuse);
    }
    let mut components = cgroups_path.split('/').filter(|c| !c.is_empty()).peekable();
    if components.peek().is_none() {
        return Err(refuse("it names the hierarchy root itself"));
    }
    if components.any(|c| c == ".." || c == ".") {
        return Err(refuse("it has a `..` or `.` component"));
    }
    Ok(())
}

/// Turns a spec `cgroupsPath` into a path below the hierarchy roots.
pub fn resolve_path(cgroups_path: &str) -> Result<String, CgroupError> {
    check_path(cgroups_path)?;
    if !cgroups_path.contains(':') {
        let components: Vec<&str> = cgroups_path.split('/').filter(|c| !c.is_empty()).collect();
        return Ok(format!("/{}", components.join("/")));
    }
    let pid1 = std::fs::read_to_string("/proc/1/comm")
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(CgroupError::SystemdNotRunning {
            path: cgroups_path.to_owned(),
            pid1,
        });
    }
    let mut parts = cgroups_path.splitn(3, ':');
    let (Some(slice), Some(prefix), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(CgroupError::BadSystemdPath(cgroups_path.to_owned()));
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    Ok(format!("{}/{prefix}-{name}.scope", expand_slice(slice)))
}

/// The parts of `slice:prefix:name` must be single path components; the slice's
/// `-`-separated segments must not be empty (systemd and runc refuse those too).
fn check_systemd_parts(cgroups_path: &str) -> Result<(), &'static str> {
    let mut parts = cgroups_path.splitn(3, ':');
    let (slice, prefix, name) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    for part in [slice, prefix, name] {
        if part.contains('/') {
            return Err("a systemd slice, prefix or name holds a `/`");
        }
        if part == "." || part == ".." {
            return Err("a systemd slice, prefix or name is `.` or `..`");
        }
    }
    if name.is_empty() {
        return Err("the systemd unit name is empty");
    }
    if slice.is_empty() || slice == "-.slice" {
        return Ok(());
    }
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err("the systemd slice does not end in `.slice`");
    };
    if stem.split('-').any(str::is_empty) {
        return Err("the systemd slice has an empty `-` segment");
    }
    Ok(())
}

/// True when `path` is on a cgroup (v1 or v2) filesystem.
fn on_cgroup_fs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| {
        let kind = fs.filesystem_type();
        kind == nix::sys::statfs::CGROUP_SUPER_MAGIC
            || kind == nix::sys::statfs::CGROUP2_SUPER_MAGIC
    })
}

/// `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice` (systemd's slice nesting).
fn expand_slice(slice: &str) -> String {
    if slice == "-.slice" {
        return String::new(); // systemd's root slice
    }
    let stem = slice.trim_end_matches(".slice");
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push_str(&format!("/{prefix}.slice"));
    }
    path
}

impl Cgroup {
    /// The cgroup at `cgroups_path` (not created yet).
    pub fn new(cgroups_path: &str) -> Result<Self, CgroupError> {
        let relative = resolve_path(cgroups_path)?;
        let v2 = Path::new(CGROUP_ROOT).join("cgroup.controllers").exists();
        let rel = relative.trim_start_matches('/');
        let dirs = if v2 {
            vec![Path::new(CGROUP_ROOT).join(rel)]
        } else {
            V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(CGROUP_ROOT).join(c))
                .filter(|root| root.is_dir())
                .map(|root| root.join(rel))
                .collect()
        };
        Ok(Cgroup { v2, dirs })
    }

    /// Makes the directories and applies `resources`.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        // Every directory is checked before any is made, so a refusal creates nothing.
        for dir in &self.dirs {
            let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(dir);
            if !on_cgroup_fs(existing) {
                return Err(CgroupError::NotCgroupFs(dir.clone()));
            }
        }
        for dir in &self.dirs {
            std::fs::create_dir_all(dir).map_err(io("creating cgroup", dir))?;
        }
        if let Some(resources) = resources {
            self.apply(resources)?;
        }
        Ok(())
    }

    fn controller_dir(&self, controller: &str) -> Option<&Path> {
        if self.v2 {
            return self.dirs.first().map(PathBuf::as_path);
        }
        let root = Path::new(CGROUP_ROOT).join(controller);
        self.dirs
            .iter()
            .find(|d| d.starts_with(&root))
            .map(PathBuf::as_path)
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> Result<(), CgroupError> {
        let Some(dir) = self.controller_dir(controller) else {
            return Ok(());
        };
        let path = dir.join(file);
        std::fs::write(&path, value).map_err(io("writing", &path))
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.controller_dir(controller)?.join(file)).ok()
    }

    /// Applies changed limits to the running container (containerd's Update, CRI's
    /// UpdateContainerResources): only what `resources` sets is written.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.apply(resources)
    }

    /// The name of the file holding the memory limit.
    fn memory_limit_name(&self) -> &'static str {
        if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        }
    }

    /// The memory limit in force, bytes (`None`: unlimited or unreadable).
    pub fn memory_limit(&self) -> Option<u64> {
        self.read("memory", self.memory_limit_name())?
            .trim()
            .parse()
            .ok()
    }

    /// The file holding the memory limit in force, for a process that reads it after it
    /// can no longer see the cgroup filesystem (`None` without a memory controller).
    pub fn memory_limit_file(&self) -> Option<PathBuf> {
        Some(
            self.controller_dir("memory")?
                .join(self.memory_limit_name()),
        )
    }

    /// Freezes (`true`) or thaws every process of the cgroup and waits until the kernel
    /// reports it done (v1 `freezer.state`, v2 `cgroup.freeze` and `cgroup.events`).
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let (control, value, state_file, wanted) = match (self.v2, frozen) {
            (true, true) => ("cgroup.freeze", "1", "cgroup.events", "frozen 1"),
            (true, false) => ("cgroup.freeze", "0", "cgroup.events", "frozen 0"),
            (false, true) => ("freezer.state", "FROZEN", "freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED", "freezer.state", "THAWED"),
        };
        let dir = self
            .controller_dir("freezer")
            .ok_or(CgroupError::NoFreezer)?
            .to_owned();
        let control_path = dir.join(control);
        std::fs::write(&control_path, value).map_err(io("writing", &control_path))?;
        let state_path = dir.join(state_file);
        let reached = |text: &str| text.lines().any(|line| line.trim() == wanted);
        let deadline = std::time::Instant::now() + FREEZE_TIMEOUT;
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            let found = std::fs::read_to_string(&state_path).map_err(io("reading", &state_path))?;
            if reached(&found) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(CgroupError::FreezeTimeout {
                    path: state_path,
                    wanted,
                    found: found.trim().to_owned(),
                    timeout: FREEZE_TIMEOUT,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }

    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(limit) = resources
            .memory()
            .as_ref()
            .and_then(|m| m.limit())
            .filter(|l| *l > 0)
        {
            self.write("memory", self.memory_limit_name(), &limit.to_string())?;
        }
        if let Some(cpu) = resources.cpu() {
            if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
                if self.v2 {
                    let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
                    self.write("cpu", "cpu.weight", &weight.to_string())?;
                } else {
                    self.write("cpu", "cpu.shares", &shares.to_string())?;
                }
            }
            let period = cpu.period().unwrap_or(100_000);
            if let Some(quota) = cpu.quota().filter(|q| *q > 0) {
                if self.v2 {
                    self.write("cpu", "cpu.max", &format!("{quota} {period}"))?;
                } else {
                    self.write("cpu", "cpu.cfs_period_us", &period.to_string())?;
                    self.write("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
                }
            }
        }
        if let Some(pids) = resources
            .pids()
            .as_ref()
            .map(|p| p.limit())
            .filter(|l| *l > 0)
        {
            self.write("pids", "pids.max", &pids.to_string())?;
        }
        Ok(())
    }

    /// Opens what [`crate::os::spawn`] needs to start a process in this cgroup.
    pub fn open_for_spawn(&self) -> Result<SpawnEntry, CgroupError> {
        let procs = self.open_procs()?;
        let dir = match (self.v2, self.dirs.first()) {
            (true, Some(dir)) => Some(File::open(dir).map_err(io("opening", dir))?),
            _ => None,
        };
        Ok(SpawnEntry { dir, procs })
    }

    /// Opens every `cgroup.procs` file, for the child to write `0` into after fork.
    fn open_procs(&self) -> Result<Vec<File>, CgroupError> {
        self.dirs
            .iter()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io("opening", &path))
            })
            .collect()
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        self.dirs
            .first()
            .and_then(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .map(|procs| {
                procs
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Current usage.
    pub fn usage(&self) -> CgroupUsage {
        let num = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
        let field = |s: &Option<String>, key: &str| {
            s.as_deref()
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0)
        };
        let mut usage = CgroupUsage {
            pids: num(self.read("pids", "pids.current")),
            ..Default::default()
        };
        if self.v2 {
            let cpu = self.read("cpu", "cpu.stat");
            usage.cpu_ns = field(&cpu, "usage_usec") * 1000;
            usage.user_ns = field(&cpu, "user_usec") * 1000;
            usage.system_ns = field(&cpu, "system_usec") * 1000;
            usage.memory_bytes = num(self.read("memory", "memory.current"));
            usage.memory_limit = num(self.read("memory", "memory.max"));
            usage.oom_kills = field(&self.read("memory", "memory.events"), "oom_kill");
        } else {
            usage.cpu_ns = num(self.read("cpuacct", "cpuacct.usage"));
            let ticks = self.read("cpuacct", "cpuacct.stat");
            // USER_HZ is 100 on Linux: ticks of 10 ms.
            usage.user_ns = field(&ticks, "user") * 10_000_000;
            usage.system_ns = field(&ticks, "system") * 10_000_000;
            usage.memory_bytes = num(self.read("memory", "memory.usage_in_bytes"));
            usage.memory_limit = num(self.read("memory", "memory.limit_in_bytes"));
            usage.oom_kills = field(&self.read("memory", "memory.oom_control"), "oom_kill");
        }
        usage
    }

    /// Removes the directories (the processes must be gone). Missing ones are fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let mut attempt = 0;
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // A reaped process may take a moment to leave the cgroup.
                    Err(_) if attempt < 50 => {
                        attempt += 1;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(e) => return Err(io("removing cgroup", dir)(e)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_paths_are_rooted() {
        assert_eq!(
            resolve_path("/kubepods/pod1/c1").unwrap(),
            "/kubepods/pod1/c1"
        );
        assert_eq!(resolve_path("default/c1").unwrap(), "/default/c1");
    }

    #[test]
    fn escaping_paths_are_refused() {
        for path in [
            "../../../../tmp/x",
            "/kubepods/../../tmp/x",
            "a/./b",
            "a/..",
            "..",
            "",
            "/",
            "//",
            "a\0b",
            "kubepods.slice:cri:../../x",
            "kubepods.slice:..:x",
            "../x.slice:cri:x",
            "kube/pods.slice:cri:x",
            "kubepods--x.slice:cri:x",
            "-x.slice:cri:x",
            "kubepods:cri:x",
            "kubepods.slice:cri:",
            "..:cri:x",
        ] {
            let err = resolve_path(path).unwrap_err();
            assert!(
                matches!(err, CgroupError::Escapes { .. }),
                "{path:?}: {err}"
            );
            assert!(err.to_string().contains("refused"), "{err}");
            assert!(Cgroup::new(path).is_err(), "{path:?}");
        }
        // Odd but contained names are fine.
        assert_eq!(resolve_path("a/..b/c..").unwrap(), "/a/..b/c..");
        assert_eq!(resolve_path("//a//b/").unwrap(), "/a/b");
    }

    #[test]
    fn only_cgroup_filesystems_get_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!on_cgroup_fs(dir.path()));
        let cgroup = Cgroup {
            v2: true,
            dirs: vec![dir.path().join("a/b")],
        };
        assert!(matches!(
            cgroup.create(None),
            Err(CgroupError::NotCgroupFs(_))
        ));
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn systemd_slices_expand() {
        assert_eq!(
            expand_slice("kubepods-besteffort-pod12.slice"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice"
        );
    }

    #[test]
    fn systemd_driver_without_systemd_says_so() {
        if Path::new("/run/systemd/system").is_dir() {
            return; // systemd runs here: the error path does not apply.
        }
        let err = resolve_path("kubepods.slice:cri-containerd:abc").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("systemd is not running"), "{msg}");
        assert!(msg.contains("cgroupfs"), "{msg}");
    }

    #[test]
    #[ignore = "needs root"]
    fn create_apply_join_usage_remove() {
        if !nix::unistd::Uid::effective().is_root() {
            panic!("needs root (writes /sys/fs/cgroup); run via `make test` as root");
        }
        let name = format!("/wasmpod-unit-{}", std::process::id());
        let cgroup = Cgroup::new(&name).unwrap();
        let resources: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":67108864},"cpu":{"shares":512,"quota":50000,"period":100000},"pids":{"limit":64}}"#,
        )
        .unwrap();
        cgroup.create(Some(&resources)).unwrap();
        assert_eq!(cgroup.usage().memory_limit, 64 << 20);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        for mut procs in cgroup.open_procs().unwrap() {
            use std::io::Write;
            procs.write_all(child.id().to_string().as_bytes()).unwrap();
        }
        assert_eq!(cgroup.usage().pids, 1);
        assert_eq!(cgroup.pids(), [child.id()]);
        // Update: new limits land in the files.
        let changed: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":134217728},"pids":{"limit":32}}"#).unwrap();
        cgroup.update(&changed).unwrap();
        assert_eq!(cgroup.memory_limit(), Some(128 << 20));
        // Pause and resume: set_frozen returns once the kernel reports the state.
        cgroup.set_frozen(true).unwrap();
        cgroup.set_frozen(false).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        cgroup.remove().unwrap();
        assert!(cgroup.dirs.iter().all(|d| !d.exists()));
    }
}
