//! A private containerd for one integration test.
//!
//! [`Containerd::start`] (or [`Containerd::builder`] for options) makes a temp dir holding
//! containerd's root, state, sockets, `config.toml` and log, starts containerd with the
//! directory of the freshly built `containerd-shim-wasmpod-v1` first on its `PATH` (that is
//! how `ctr run --runtime io.containerd.wasmpod.v1` finds the shim), and waits until
//! `ctr version` answers. [`Containerd::ctr`] runs `ctr` against it in a namespace unique to
//! this harness (per-namespace runtime state dirs are shared between containerd instances
//! on one machine, so two tests must never share a namespace).
//!
//! [`Containerd::leftovers`] reports what a test should have cleaned up (shim processes,
//! mounts, FIFOs, shim sockets); dropping the harness stops containerd, kills whatever shims
//! it started, unmounts what is still mounted under the temp dir and removes it, and prints
//! the containerd log tail if the test is failing.
//!
//! CRI: [`ContainerdBuilder::with_cri`] writes the config kubelet-style tests need on this
//! machine (see `shared/FIELD-NOTES.md`): runtime handler `wasmpod`, `restrict_oom_score_adj`,
//! pod netns mounts under the state dir, runc state under the temp dir, a private CNI bin and
//! conf dir holding `loopback` chained with the test plugin `test/cni/wasmpod-report-lo`,
//! sandbox image [`PAUSE_IMAGE`] (built and imported into [`CRI_NAMESPACE`] at start), NRI
//! off. [`ContainerdVersion`] picks the binaries (system 1.6, or 1.7 / 2.1 cached by
//! `scripts/fetch-containerd.sh`) and the config schema (version 2 for 1.x, 3 for 2.x).
//!
//! Trade-off: everything is found by scanning `/proc` (cmdlines carrying our socket address,
//! `/proc/self/mountinfo`, `/proc/net/unix`) rather than by asking containerd, so the report
//! still works when containerd or the shim is the thing that broke.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

/// File name of the wasmpod shim binary, as containerd looks it up on its `PATH`.
pub const SHIM_BINARY: &str = "containerd-shim-wasmpod-v1";
/// Runtime type that selects the wasmpod shim (`ctr run --runtime ...`).
pub const RUNTIME: &str = "io.containerd.wasmpod.v1";
/// The runc shim; killed at drop as well if it carries our socket address.
const RUNC_SHIM_BINARY: &str = "containerd-shim-runc-v2";
/// Where containerd (any instance) puts shim sockets; not configurable.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// Environment variable naming the shim binary explicitly.
pub const SHIM_ENV: &str = "WASMPOD_SHIM";

static NEXT_HARNESS: AtomicUsize = AtomicUsize::new(0);

/// The containerd namespace CRI works in (images for pods are imported here).
pub const CRI_NAMESPACE: &str = "k8s.io";
/// CRI runtime handler (RuntimeClass handler) that selects wasmpod.
pub const CRI_HANDLER: &str = "wasmpod";
/// The pod sandbox image [`ContainerdBuilder::with_cri`] configures and imports.
pub const PAUSE_IMAGE: &str = "localhost/pause:latest";
/// The test CNI plugin, chained after `loopback`: reports `lo`'s 127.0.0.1 as the pod
/// interface and creates nothing.
pub const CNI_REPORT_LO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/cni/wasmpod-report-lo");
/// Where Debian's `containernetworking-plugins` puts the `loopback` plugin.
pub const CNI_LOOPBACK: &str = "/usr/lib/cni/loopback";
/// Environment variable overriding the cache dir of `scripts/fetch-containerd.sh`.
pub const CONTAINERD_CACHE_ENV: &str = "WASMPOD_CONTAINERD_CACHE";
/// The script that fetches containerd 1.7 and 2.1 into the cache.
pub const FETCH_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scripts/fetch-containerd.sh"
);

/// The `config.toml` schema version to write.
///
/// containerd 1.x reads version 2; 2.x wants version 3 (CRI split into
/// `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConfigVersion {
    /// containerd 1.6 / 1.7.
    #[default]
    V2,
    /// containerd 2.x.
    V3,
}

/// The containerd releases the test suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerdVersion {
    /// 1.6 from Debian 12: the system's `containerd` on `PATH`.
    V1_6,
    /// 1.7 from Debian trixie, cached by `scripts/fetch-containerd.sh`.
    V1_7,
    /// 2.1 from Debian sid, cached by `scripts/fetch-containerd.sh`.
    V2_1,
}

impl ContainerdVersion {
    /// All supported versions, oldest first.
    pub const ALL: [Self; 3] = [Self::V1_6, Self::V1_7, Self::V2_1];

    /// `"1.6"`, `"1.7"`, `"2.1"`.
    pub fn label(self) -> &'static str {
        match self {
            Self::V1_6 => "1.6",
            Self::V1_7 => "1.7",
            Self::V2_1 => "2.1",
        }
    }

    /// The config schema this version reads.
    pub fn config_version(self) -> ConfigVersion {
        match self {
            Self::V1_6 | Self::V1_7 => ConfigVersion::V2,
            Self::V2_1 => ConfigVersion::V3,
        }
    }

    /// The directory holding `containerd` and `ctr`: `None` for the system's (on `PATH`),
    /// else `<cache>/<label>/usr/bin` (the cache is `$WASMPOD_CONTAINERD_CACHE` or
    /// `~/.cache/wasmpod/containerd`).
    pub fn bin_dir(self) -> Option<PathBuf> {
        if self == Self::V1_6 {
            return None;
        }
        let cache = std::env::var_os(CONTAINERD_CACHE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/wasmpod/containerd")
            });
        Some(cache.join(self.label()).join("usr/bin"))
    }

    /// Whether this version's binaries are there.
    pub fn is_available(self) -> bool {
        match self.bin_dir() {
            None => resolve_bin(Path::new("containerd")).is_ok(),
            Some(dir) => dir.join("containerd").is_file() && dir.join("ctr").is_file(),
        }
    }

    /// Make the binaries available: run `scripts/fetch-containerd.sh` when they are
    /// missing (it is idempotent and only downloads what the cache lacks).
    pub fn ensure_available(self) -> anyhow::Result<()> {
        if self.is_available() {
            return Ok(());
        }
        if self == Self::V1_6 {
            bail!("containerd not found on PATH; install it (scripts/setup.sh)");
        }
        let mut cmd = Command::new("bash");
        cmd.arg(FETCH_SCRIPT);
        if let Some(cache) = std::env::var_os(CONTAINERD_CACHE_ENV) {
            cmd.arg(cache);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {FETCH_SCRIPT}"))?;
        if !out.status.success() || !self.is_available() {
            bail!(
                "{FETCH_SCRIPT} did not provide containerd {} ({}):\n{}",
                self.label(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "containerd {}", self.label())
    }
}

/// How the harness finds the wasmpod shim.
#[derive(Debug, Clone, Default)]
enum ShimLocation {
    /// `$WASMPOD_SHIM`, else next to the test binary's `deps/` directory.
    #[default]
    Auto,
    /// This exact binary.
    Path(PathBuf),
    /// No wasmpod shim (runc-only tests of the harness itself).
    None,
}

/// Options for a private containerd; build one with [`Containerd::builder`].
#[derive(Debug, Clone)]
pub struct ContainerdBuilder {
    containerd_bin: PathBuf,
    ctr_bin: PathBuf,
    config_version: ConfigVersion,
    cri: Option<String>,
    cri_defaults: bool,
    runtime_options: Vec<(String, String)>,
    extra_config: String,
    shim: ShimLocation,
    log_level: String,
    start_timeout: Duration,
    ctr_timeout: Duration,
}

impl Default for ContainerdBuilder {
    fn default() -> Self {
        Self {
            containerd_bin: PathBuf::from("containerd"),
            ctr_bin: PathBuf::from("ctr"),
            config_version: ConfigVersion::V2,
            cri: None,
            cri_defaults: false,
            runtime_options: Vec::new(),
            extra_config: String::new(),
            shim: ShimLocation::Auto,
            log_level: "debug".to_owned(),
            start_timeout: Duration::from_secs(20),
            ctr_timeout: Duration::from_secs(120),
        }
    }
}

impl ContainerdBuilder {
    /// The `containerd` binary to run (default: `containerd` on `PATH`).
    pub fn containerd_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.containerd_bin = path.into();
        self
    }

    /// The `ctr` binary to use (default: `ctr` on `PATH`).
    pub fn ctr_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.ctr_bin = path.into();
        self
    }

    /// Take both `containerd` and `ctr` from `dir` (e.g. a cached containerd 1.7 `bin/`).
    pub fn bin_dir(self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        self.containerd_bin(dir.join("containerd"))
            .ctr_bin(dir.join("ctr"))
    }

    /// The config schema version (must match the containerd binary).
    pub fn config_version(mut self, version: ConfigVersion) -> Self {
        self.config_version = version;
        self
    }

    /// Enable the CRI plugin, registering runtime handler `wasmpod`; `extra_toml` is
    /// appended to the config verbatim (CNI, sandbox image, `restrict_oom_score_adj`...).
    pub fn cri(mut self, extra_toml: impl Into<String>) -> Self {
        self.cri = Some(extra_toml.into());
        self
    }

    /// Enable the CRI plugin with everything a kubelet-style test needs on this machine
    /// (see the [module docs](self)); combine with [`ContainerdBuilder::cri`] for more.
    /// At start the CNI dirs are filled and [`PAUSE_IMAGE`] is imported.
    pub fn with_cri(mut self) -> Self {
        self.cri_defaults = true;
        self.cri.get_or_insert_with(String::new);
        self
    }

    /// Use the binaries and config schema of `version` (see [`ContainerdVersion`]).
    pub fn version(self, version: ContainerdVersion) -> Self {
        let b = self.config_version(version.config_version());
        match version.bin_dir() {
            Some(dir) => b.bin_dir(dir),
            None => b.containerd_bin("containerd").ctr_bin("ctr"),
        }
    }

    /// Add `key = value` (value is TOML, e.g. `"\"/x\""` or `"true"`) to the wasmpod
    /// runtime's `options` table (only written when CRI is enabled: that is where
    /// containerd 1.x reads runtime options from).
    pub fn runtime_option(mut self, key: impl Into<String>, toml_value: impl Into<String>) -> Self {
        self.runtime_options.push((key.into(), toml_value.into()));
        self
    }

    /// Append raw TOML to the generated config.
    pub fn extra_config(mut self, toml: impl AsRef<str>) -> Self {
        self.extra_config.push_str(toml.as_ref());
        self.extra_config.push('\n');
        self
    }

    /// Use this shim binary instead of locating it.
    pub fn shim(mut self, path: impl Into<PathBuf>) -> Self {
        self.shim = ShimLocation::Path(path.into());
        self
    }

    /// Start without the wasmpod shim on `PATH` (for runc-only tests).
    pub fn without_shim(mut self) -> Self {
        self.shim = ShimLocation::None;
        self
    }

    /// containerd's log level (default `debug`).
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// How long to wait for `ctr version` to answer after starting.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long one `ctr` invocation may take before it is killed.
    pub fn ctr_timeout(mut self, timeout: Duration) -> Self {
        self.ctr_timeout = timeout;
        self
    }

    /// Write the config, start containerd and wait until it answers.
    pub fn start(self) -> anyhow::Result<Containerd> {
        Containerd::start_with(self)
    }
}

/// The result of one `ctr` invocation.
#[derive(Debug, Clone)]
pub struct CtrOutput {
    /// Exit status of `ctr`.
    pub status: ExitStatus,
    /// Everything `ctr` wrote to stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything `ctr` wrote to stderr (lossy UTF-8).
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

impl CtrOutput {
    /// The exit code, or `None` if `ctr` died of a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Whether `ctr` exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout split into lines, trailing `\r` removed.
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .collect()
    }

    /// Fail with the whole output unless `ctr` exited 0.
    pub fn ok(self) -> anyhow::Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            bail!("ctr failed: {self}")
        }
    }
}

impl fmt::Display for CtrOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} after {:?}\n--- stdout\n{}--- stderr\n{}---",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

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

/// A running private containerd; stopped and cleaned up on drop.
pub struct Containerd {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    child: Option<Child>,
    events: Option<Child>,
    namespace: String,
    ctr_bin: PathBuf,
    ctr_timeout: Duration,
    shim: Option<PathBuf>,
    /// Container / group ids seen, for finding stale shim sockets.
    ids: Mutex<BTreeSet<String>>,
    counter: AtomicUsize,
}

impl fmt::Debug for Containerd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Containerd")
            .field("dir", &self.path)
            .field("namespace", &self.namespace)
            .field("shim", &self.shim)
            .finish_non_exhaustive()
    }
}

impl Containerd {
    /// Default options: containerd and `ctr` from `PATH`, CRI disabled, wasmpod shim
    /// located automatically.
    pub fn builder() -> ContainerdBuilder {
        ContainerdBuilder::default()
    }

    /// Start a private containerd with default options.
    pub fn start() -> anyhow::Result<Self> {
        Self::builder().start()
    }

    fn start_with(opts: ContainerdBuilder) -> anyhow::Result<Self> {
        let shim = match &opts.shim {
            ShimLocation::Auto => Some(locate_shim()?),
            ShimLocation::Path(p) => {
                if !p.is_file() {
                    bail!(
                        "wasmpod shim {} does not exist; build the shim first: cargo build -p containerd-shim-wasmpod",
                        p.display()
                    );
                }
                Some(p.clone())
            }
            ShimLocation::None => None,
        };
        let containerd_bin = resolve_bin(&opts.containerd_bin)?;
        let ctr_bin = resolve_bin(&opts.ctr_bin)?;

        // Short paths: the sockets must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("wasmpod-ctrd-")
            .tempdir_in("/tmp")
            .context("creating containerd temp dir")?;
        let path = dir.path().to_path_buf();
        for sub in ["root", "state", "fifo"] {
            fs::create_dir_all(path.join(sub))?;
        }
        if opts.cri_defaults {
            setup_cni(&path)?;
        }
        let n = NEXT_HARNESS.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("wasmpod-test-{}-{n}", std::process::id());

        let config = render_config(&opts, &path);
        fs::write(path.join("config.toml"), config)?;

        let mut search_path = Vec::new();
        if let Some(shim) = &shim {
            search_path.push(
                shim.parent()
                    .context("shim path has no parent")?
                    .to_path_buf(),
            );
        }
        search_path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ));
        let log = File::create(path.join("containerd.log"))?;
        let child = Command::new(&containerd_bin)
            .arg("--config")
            .arg(path.join("config.toml"))
            .env("PATH", std::env::join_paths(search_path)?)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", containerd_bin.display()))?;

        let mut harness = Self {
            dir: Some(dir),
            path,
            child: Some(child),
            events: None,
            namespace,
            ctr_bin,
            ctr_timeout: opts.ctr_timeout,
            shim,
            ids: Mutex::new(BTreeSet::new()),
            counter: AtomicUsize::new(0),
        };
        harness.wait_ready(opts.start_timeout)?;
        harness.start_events()?;
        if opts.cri_defaults {
            harness.import_pause_image()?;
        }
        Ok(harness)
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "containerd exited during start-up with {status}; log tail:\n{}",
                    self.log_tail(40)
                );
            }
            if self.socket().exists() {
                let out = self.run_ctr(["version"], false, Duration::from_secs(5));
                if matches!(&out, Ok(o) if o.success()) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd did not answer `ctr version` within {timeout:?}; log tail:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr events` in the background, to learn the ids of every container this
    /// containerd saw (for finding stale shim sockets).
    fn start_events(&mut self) -> anyhow::Result<()> {
        let out = File::create(self.path.join("events.log"))?;
        let child = Command::new(&self.ctr_bin)
            .arg("-a")
            .arg(self.socket())
            .arg("events")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .context("spawning ctr events")?;
        self.events = Some(child);
        Ok(())
    }

    /// The harness temp dir (root, state, sockets, config, log).
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// containerd's root directory.
    pub fn root(&self) -> PathBuf {
        self.path.join("root")
    }

    /// containerd's state directory.
    pub fn state(&self) -> PathBuf {
        self.path.join("state")
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.path.join("c.sock")
    }

    /// containerd's ttrpc socket.
    pub fn ttrpc_socket(&self) -> PathBuf {
        self.path.join("c.ttrpc.sock")
    }

    /// containerd's log file.
    pub fn log_path(&self) -> PathBuf {
        self.path.join("containerd.log")
    }

    /// A directory for `ctr run --fifo-dir`, inside the harness temp dir so that
    /// [`Containerd::leftovers`] sees FIFOs left there.
    pub fn fifo_dir(&self) -> PathBuf {
        self.path.join("fifo")
    }

    /// The namespace every [`Containerd::ctr`] call uses.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The wasmpod shim binary on containerd's `PATH`, if any.
    pub fn shim(&self) -> Option<&Path> {
        self.shim.as_deref()
    }

    /// Last `lines` lines of the containerd log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    /// Run `ctr -a <sock> -n <namespace> ARGS...` and collect its output.
    ///
    /// Errors only if `ctr` cannot be spawned or outlives the harness' ctr timeout; a
    /// non-zero exit is returned as a [`CtrOutput`].
    pub fn ctr<I, S>(&self, args: I) -> anyhow::Result<CtrOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_ctr(args, true, self.ctr_timeout)
    }

    /// `ctr run --fifo-dir <fifo_dir> ARGS...` (FIFOs stay inside the harness dir).
    pub fn run<I, S>(&self, args: I) -> anyhow::Result<CtrOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut full: Vec<std::ffi::OsString> =
            vec!["run".into(), "--fifo-dir".into(), self.fifo_dir().into()];
        full.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self.ctr(full)
    }

    /// Spawn `ctr -a <sock> -n <namespace> ARGS...` without waiting (stdout and stderr
    /// piped), e.g. a foreground `ctr run` a test signals from outside.
    pub fn ctr_spawn<I, S>(&self, args: I) -> anyhow::Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.ctr_command(true)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning ctr")
    }

    fn ctr_command(&self, with_namespace: bool) -> Command {
        let mut cmd = Command::new(&self.ctr_bin);
        cmd.arg("-a").arg(self.socket());
        if with_namespace {
            cmd.arg("-n").arg(&self.namespace);
        }
        cmd
    }

    fn run_ctr<I, S>(
        &self,
        args: I,
        with_namespace: bool,
        timeout: Duration,
    ) -> anyhow::Result<CtrOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let out_path = self.path.join(format!("ctr-{n}.out"));
        let err_path = self.path.join(format!("ctr-{n}.err"));
        let start = Instant::now();
        let mut child = self
            .ctr_command(with_namespace)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(File::create(&out_path)?)
            .stderr(File::create(&err_path)?)
            .spawn()
            .context("spawning ctr")?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "ctr {:?} did not finish within {timeout:?}\n--- stdout\n{}--- stderr\n{}",
                    args,
                    read_lossy(&out_path),
                    read_lossy(&err_path)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = start.elapsed();
        let output = CtrOutput {
            status,
            stdout: read_lossy(&out_path),
            stderr: read_lossy(&err_path),
            elapsed,
        };
        let _ = fs::remove_file(&out_path);
        let _ = fs::remove_file(&err_path);
        Ok(output)
    }

    /// `ctr images import --all-platforms TAR` (wasm images have platform `wasip1/wasm`).
    pub fn import(&self, tar: impl AsRef<Path>) -> anyhow::Result<CtrOutput> {
        let tar = tar.as_ref();
        self.ctr([
            OsStr::new("images"),
            OsStr::new("import"),
            OsStr::new("--all-platforms"),
            tar.as_os_str(),
        ])?
        .ok()
        .with_context(|| format!("importing {}", tar.display()))
    }

    /// Run `ctr -a <sock> -n <namespace> ARGS...` in another namespace (e.g.
    /// [`CRI_NAMESPACE`]).
    pub fn ctr_in<I, S>(&self, namespace: &str, args: I) -> anyhow::Result<CtrOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut full: Vec<std::ffi::OsString> = vec!["-n".into(), namespace.into()];
        full.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self.run_ctr(full, false, self.ctr_timeout)
    }

    /// `ctr -n k8s.io images import --all-platforms TAR`: makes an image available to CRI
    /// without a pull (kubelet's `IfNotPresent` then never calls PullImage).
    pub fn import_cri(&self, tar: impl AsRef<Path>) -> anyhow::Result<CtrOutput> {
        let tar = tar.as_ref();
        self.ctr_in(
            CRI_NAMESPACE,
            [
                OsStr::new("images"),
                OsStr::new("import"),
                OsStr::new("--all-platforms"),
                tar.as_os_str(),
            ],
        )?
        .ok()
        .with_context(|| format!("importing {} into {CRI_NAMESPACE}", tar.display()))
    }

    /// Build [`PAUSE_IMAGE`] (busybox; a shell that sleeps until SIGTERM) and import it
    /// for CRI. The wasmpod shim runs the sandbox itself, but CRI still resolves and
    /// unpacks the sandbox image (and runc would run it for other handlers).
    fn import_pause_image(&self) -> anyhow::Result<()> {
        let tar = self.path.join("pause.tar");
        crate::image::ImageBuilder::busybox(PAUSE_IMAGE)?
            .entrypoint(["/bin/sh", "-c"])
            .cmd(["trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"])
            .write_tar(&tar)?;
        self.import_cri(&tar)?;
        let _ = fs::remove_file(&tar);
        Ok(())
    }

    /// The CRI gRPC endpoint (containerd's own socket).
    pub fn cri_socket(&self) -> PathBuf {
        self.socket()
    }

    /// Whether containerd still answers `ctr version`.
    pub fn is_alive(&self) -> bool {
        matches!(self.run_ctr(["version"], false, Duration::from_secs(10)), Ok(o) if o.success())
    }

    /// Record a shim group id (e.g. a sandbox id) so [`Containerd::leftovers`] also looks
    /// for a stale socket of that group. Container ids are learnt from `ctr events`.
    pub fn note_group(&self, id: impl Into<String>) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into());
    }

    /// Shim processes started by this containerd (`containerd-shim-wasmpod-v1` or
    /// `containerd-shim-runc-v2` whose cmdline carries our socket address), and every
    /// descendant of them, sorted by pid.
    pub fn all_shim_processes(&self) -> Vec<ShimProcess> {
        let address = self.socket().to_string_lossy().into_owned();
        processes_of(&[SHIM_BINARY, RUNC_SHIM_BINARY], &address)
    }

    /// `containerd-shim-wasmpod-v1` processes of this containerd (by `-address <our
    /// socket>` in the cmdline) and their descendants, sorted by pid.
    pub fn shim_processes(&self) -> Vec<ShimProcess> {
        let address = self.socket().to_string_lossy().into_owned();
        processes_of(&[SHIM_BINARY], &address)
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

        let mut sockets: BTreeSet<PathBuf> = BTreeSet::new();
        let pids: Vec<i32> = processes.iter().map(|p| p.pid).collect();
        for s in unix_sockets_of(&pids) {
            if s.starts_with(SHIM_SOCKET_DIR) {
                sockets.insert(s);
            }
        }
        let address = self.socket().to_string_lossy().into_owned();
        for id in self.known_ids() {
            for ns in [self.namespace.as_str(), CRI_NAMESPACE] {
                let p = Path::new(SHIM_SOCKET_DIR).join(shim_socket_name(&address, ns, &id));
                if p.exists() {
                    sockets.insert(p);
                }
            }
        }
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
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.leftovers();
            if l.is_empty() || Instant::now() >= deadline {
                return l;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Exit status of the init process of container `id`, from the `/tasks/exit` event
    /// containerd published (`ctr task delete` on 1.6 does not report it), if it exited.
    pub fn exit_status(&self, id: &str) -> Option<u32> {
        let events = read_lossy(&self.path.join("events.log"));
        let container = format!("\"container_id\":\"{id}\"");
        let init = format!("\"id\":\"{id}\"");
        events
            .lines()
            .filter(|l| l.contains(" /tasks/exit ") && l.contains(&container) && l.contains(&init))
            .map(|l| {
                // protobuf JSON omits a zero exit_status.
                l.split_once("\"exit_status\":")
                    .and_then(|(_, rest)| {
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        digits.parse().ok()
                    })
                    .unwrap_or(0)
            })
            .next_back()
    }

    /// Poll [`Containerd::exit_status`] until container `id`'s task exited or `timeout`.
    pub fn wait_exit(&self, id: &str, timeout: Duration) -> Option<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.exit_status(id);
            if status.is_some() || Instant::now() >= deadline {
                return status;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Container ids from `ctr events` plus noted groups.
    fn known_ids(&self) -> BTreeSet<String> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let events = read_lossy(&self.path.join("events.log"));
        for line in events.lines() {
            // `TIMESTAMP NAMESPACE TOPIC {json}`
            if !line.contains(&self.namespace) && !line.contains(CRI_NAMESPACE) {
                continue;
            }
            for key in ["\"container_id\":\"", "\"id\":\""] {
                if let Some(start) = line.find(key) {
                    let rest = &line[start + key.len()..];
                    if let Some(end) = rest.find('"') {
                        ids.insert(rest[..end].to_owned());
                    }
                }
            }
        }
        ids
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.events.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Find the shims before containerd goes: their cmdline names our socket either way.
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        for p in self.all_shim_processes() {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        // Give killed processes a moment to release their mounts.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.all_shim_processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for m in mounts_under(&self.path) {
            if nix::mount::umount2(&m, nix::mount::MntFlags::empty()).is_err() {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let address = self.socket().to_string_lossy().into_owned();
        for id in self.known_ids() {
            for ns in [self.namespace.as_str(), CRI_NAMESPACE] {
                let p = Path::new(SHIM_SOCKET_DIR).join(shim_socket_name(&address, ns, &id));
                let _ = fs::remove_file(p);
            }
        }
        // Per-namespace runtime dirs (e.g. /run/containerd/runc/<ns>), if empty.
        if let Ok(entries) = fs::read_dir("/run/containerd") {
            for e in entries.flatten() {
                let _ = fs::remove_dir(e.path().join(&self.namespace));
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        // `ctr run` puts containers at cgroupsPath `/<namespace>/<id>`; runtimes remove the
        // leaf, and the namespace level is containerd's to clean (kubelet's, in a cluster).
        if let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") {
            for hierarchy in hierarchies.flatten() {
                let _ = fs::remove_dir(hierarchy.path().join(&self.namespace));
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "=== containerd log tail ({}) ===\n{}\n=== end of containerd log ===",
                self.log_path().display(),
                self.log_tail(60)
            );
        }
        if let Some(dir) = self.dir.take()
            && let Err(e) = dir.close()
        {
            eprintln!("wasmpod-test: removing {}: {e}", self.path.display());
        }
    }
}

/// Panic with a clear message unless we are root and `containerd`, `ctr` and `runc` are on
/// `PATH`. Call it first in every test that starts a [`Containerd`]: such a test must fail
/// loudly where it cannot run, never pass silently.
pub fn require_root_and_containerd() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it starts a private containerd): run it as root, e.g. `sudo -E make test`"
    );
    for bin in ["containerd", "ctr", "runc"] {
        if let Err(e) = resolve_bin(Path::new(bin)) {
            panic!("this test needs {bin}: {e:#}");
        }
    }
}

/// Find the built shim: `$WASMPOD_SHIM`, else `<target>/<profile>/containerd-shim-wasmpod-v1`
/// next to the `deps/` dir this test binary lives in.
pub fn locate_shim() -> anyhow::Result<PathBuf> {
    let hint = "build the shim first: cargo build -p containerd-shim-wasmpod";
    if let Some(p) = std::env::var_os(SHIM_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("{SHIM_ENV}={} does not exist; {hint}", p.display());
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().context("test binary has no parent dir")?;
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir = dir.parent().context("deps dir has no parent")?;
    }
    let shim = dir.join(SHIM_BINARY);
    if shim.is_file() {
        Ok(shim)
    } else {
        bail!("{} not found; {hint}", shim.display())
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

fn render_config(opts: &ContainerdBuilder, dir: &Path) -> String {
    let v3 = opts.config_version == ConfigVersion::V3;
    let mut c = String::new();
    c.push_str(if v3 { "version = 3\n" } else { "version = 2\n" });
    c.push_str(&format!("root = {:?}\n", dir.join("root")));
    c.push_str(&format!("state = {:?}\n", dir.join("state")));
    if opts.cri.is_none() {
        if v3 {
            c.push_str("disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.cri.v1.runtime\", \"io.containerd.cri.v1.images\", \"io.containerd.nri.v1.nri\"]\n");
        } else {
            c.push_str("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n");
        }
    } else if v3 {
        // NRI is on by default in 2.x and would listen on /var/run/nri/nri.sock.
        c.push_str("disabled_plugins = [\"io.containerd.nri.v1.nri\"]\n");
    }
    c.push_str(&format!(
        "\n[grpc]\n  address = {:?}\n\n[ttrpc]\n  address = {:?}\n\n[debug]\n  level = {:?}\n\n[metrics]\n  address = \"\"\n",
        dir.join("c.sock"),
        dir.join("c.ttrpc.sock"),
        opts.log_level
    ));
    // Keep the `opt` plugin out of the system's /opt/containerd.
    c.push_str(&format!(
        "\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {:?}\n",
        dir.join("root/opt")
    ));
    if let Some(extra) = &opts.cri {
        // Where runtimes live: 1.x `grpc.v1.cri.containerd`, 2.x `cri.v1.runtime.containerd`.
        let runtime_plugin = if v3 {
            "plugins.\"io.containerd.cri.v1.runtime\""
        } else {
            "plugins.\"io.containerd.grpc.v1.cri\""
        };
        let runtimes = format!("{runtime_plugin}.containerd.runtimes");
        if opts.cri_defaults {
            c.push_str(&cri_defaults(dir, v3, runtime_plugin));
        }
        c.push_str(&format!(
            "\n[{runtimes}.wasmpod]\n  runtime_type = {RUNTIME:?}\n"
        ));
        if !opts.runtime_options.is_empty() {
            c.push_str(&format!("\n[{runtimes}.wasmpod.options]\n"));
            for (k, v) in &opts.runtime_options {
                c.push_str(&format!("  {k} = {v}\n"));
            }
        }
        c.push('\n');
        c.push_str(extra);
        c.push('\n');
    }
    c.push('\n');
    c.push_str(&opts.extra_config);
    c
}

/// The CRI settings of [`ContainerdBuilder::with_cri`], without the wasmpod runtime table.
fn cri_defaults(dir: &Path, v3: bool, runtime_plugin: &str) -> String {
    let cni_bin = dir.join("cni/bin");
    let cni_conf = dir.join("cni/conf");
    let runc_root = dir.join("runc");
    let mut c = String::new();
    // Settings of the runtime side (1.x: all in grpc.v1.cri).
    c.push_str(&format!(
        "\n[{runtime_plugin}]\n  restrict_oom_score_adj = true\n  netns_mounts_under_state_dir = true\n  enable_selinux = false\n  disable_apparmor = true\n  enable_cdi = false\n"
    ));
    if v3 {
        c.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n\n[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = {PAUSE_IMAGE:?}\n\n[plugins.\"io.containerd.cri.v1.images\".runtime_platforms.{CRI_HANDLER}]\n  platform = \"wasip1/wasm\"\n"
        ));
    } else {
        c.push_str(&format!(
            "  sandbox_image = {PAUSE_IMAGE:?}\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n"
        ));
    }
    // 2.1 deprecates `bin_dir` (a deprecation warning shows as a CRI condition).
    let bin_key = if v3 { "bin_dirs" } else { "bin_dir" };
    let bin_value = if v3 {
        format!("[{cni_bin:?}]")
    } else {
        format!("{cni_bin:?}")
    };
    c.push_str(&format!(
        "\n[{runtime_plugin}.cni]\n  {bin_key} = {bin_value}\n  conf_dir = {cni_conf:?}\n  max_conf_num = 1\n"
    ));
    c.push_str(&format!(
        "\n[{runtime_plugin}.containerd]\n  default_runtime_name = \"runc\"\n\n[{runtime_plugin}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[{runtime_plugin}.containerd.runtimes.runc.options]\n  Root = {runc_root:?}\n"
    ));
    c
}

/// Fill `<dir>/cni/bin` (`loopback` and the test plugin) and `<dir>/cni/conf` (a
/// conflist chaining them).
fn setup_cni(dir: &Path) -> anyhow::Result<()> {
    let bin = dir.join("cni/bin");
    let conf = dir.join("cni/conf");
    fs::create_dir_all(&bin)?;
    fs::create_dir_all(&conf)?;
    if !Path::new(CNI_LOOPBACK).is_file() {
        bail!(
            "{CNI_LOOPBACK} missing: apt-get install containernetworking-plugins (scripts/setup.sh)"
        );
    }
    std::os::unix::fs::symlink(CNI_LOOPBACK, bin.join("loopback"))?;
    std::os::unix::fs::symlink(CNI_REPORT_LO, bin.join("wasmpod-report-lo"))?;
    fs::write(
        conf.join("10-wasmpod-test.conflist"),
        r#"{
  "cniVersion": "1.0.0",
  "name": "wasmpod-test-lo",
  "plugins": [
    { "type": "loopback" },
    { "type": "wasmpod-report-lo" }
  ]
}
"#,
    )?;
    Ok(())
}

fn resolve_bin(bin: &Path) -> anyhow::Result<PathBuf> {
    if bin.components().count() > 1 {
        if bin.is_file() {
            return Ok(bin.to_path_buf());
        }
        bail!("{} does not exist", bin.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{} not found on PATH; install containerd (scripts/setup.sh)",
                bin.display()
            )
        })
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn is_named(cmdline: &[String], names: &[&str]) -> bool {
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
fn processes_of(names: &[&str], address: &str) -> Vec<ShimProcess> {
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
fn unix_sockets_of(pids: &[i32]) -> Vec<PathBuf> {
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

/// Mount points at or under `path`, deepest first.
fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(path))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

fn find_fifos(dir: &Path, out: &mut Vec<PathBuf>) {
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
    fn config_disables_cri_by_default() {
        let c = render_config(&ContainerdBuilder::default(), Path::new("/tmp/x"));
        assert!(c.starts_with("version = 2\n"));
        assert!(c.contains("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"));
        assert!(c.contains("address = \"/tmp/x/c.sock\""));
        assert!(!c.contains("runtimes.wasmpod"));
    }

    #[test]
    fn config_with_cri_registers_runtime() {
        let b = ContainerdBuilder::default()
            .cri("[plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = true")
            .runtime_option("cache_dir", "\"/var/cache\"");
        let c = render_config(&b, Path::new("/tmp/x"));
        assert!(!c.contains("disabled_plugins"));
        assert!(c.contains("runtime_type = \"io.containerd.wasmpod.v1\""));
        assert!(c.contains("runtimes.wasmpod.options]\n  cache_dir = \"/var/cache\""));
        assert!(c.contains("restrict_oom_score_adj = true"));
    }

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

    #[test]
    fn mountinfo_octal_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
