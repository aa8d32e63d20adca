//! The containerd process of one harness: [`Containerd`] makes the temp dir, writes the
//! config, starts containerd with the shim's directory first on its `PATH`, waits until it
//! answers, names the files and sockets under the temp dir, and on drop stops containerd,
//! removes what it left and prints the log tail of a failing test.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::ContainerdBuilder;
use super::config::{ShimLocation, render_config, setup_cni};
use super::locate::{locate_shim, resolve_bin};
use crate::poll::wait_until;

static NEXT_HARNESS: AtomicUsize = AtomicUsize::new(0);

/// A running private containerd; stopped and cleaned up on drop.
pub struct Containerd {
    dir: Option<tempfile::TempDir>,
    pub(super) path: PathBuf,
    child: Option<Child>,
    /// The containerd started by [`Containerd::restart`], if any.
    restarted: Mutex<Option<Child>>,
    /// How containerd was started: its binary and `PATH` (for [`Containerd::restart`]).
    launch: (PathBuf, std::ffi::OsString),
    pub(super) events: Option<Child>,
    pub(super) namespace: String,
    pub(super) ctr_bin: PathBuf,
    pub(super) ctr_timeout: Duration,
    shim: Option<PathBuf>,
    /// Container / group ids seen, for finding stale shim sockets.
    pub(super) ids: Mutex<BTreeSet<String>>,
    /// Numbers the output files of `ctr` invocations.
    pub(super) counter: AtomicUsize,
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

    pub(super) fn start_with(opts: ContainerdBuilder) -> anyhow::Result<Self> {
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
        let path_env = std::env::join_paths(search_path)?;
        let child = Command::new(&containerd_bin)
            .arg("--config")
            .arg(path.join("config.toml"))
            .env("PATH", &path_env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", containerd_bin.display()))?;

        let mut harness = Self {
            dir: Some(dir),
            path,
            child: Some(child),
            restarted: Mutex::new(None),
            launch: (containerd_bin.clone(), path_env),
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
        let answered = wait_until(timeout, "containerd answering `ctr version`", || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Some(Err(status));
            }
            (self.socket().exists() && self.answers_version(Duration::from_secs(5)))
                .then_some(Ok(()))
        });
        match answered {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => bail!(
                "containerd exited during start-up with {status}; log tail:\n{}",
                self.log_tail(40)
            ),
            Err(_) => bail!(
                "containerd did not answer `ctr version` within {timeout:?}; log tail:\n{}",
                self.log_tail(40)
            ),
        }
    }

    /// containerd's pid, until it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

    /// Where CRI reads registry `hosts.toml` files from (its `config_path`).
    pub fn registry_hosts_dir(&self) -> PathBuf {
        super::config::registry_hosts_dir(self.dir())
    }

    /// The CRI gRPC endpoint (containerd's own socket).
    pub fn cri_socket(&self) -> PathBuf {
        self.socket()
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

    /// Restarts containerd itself, as a node's containerd upgrade or crash does: SIGTERM,
    /// wait for it to exit, start it again with the same config. Its shims and their
    /// containers keep running. `ctr events` is not restarted (use CRI or `ctr` state).
    pub fn restart(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut restarted = self.restarted.lock().unwrap_or_else(|p| p.into_inner());
        let old = match restarted.as_ref() {
            Some(child) => child.id(),
            None => self
                .child
                .as_ref()
                .map(Child::id)
                .context("containerd not running")?,
        };
        let old = Pid::from_raw(old as i32);
        kill(old, Signal::SIGTERM).context("SIGTERM to containerd")?;
        wait_until(
            timeout,
            "containerd exiting after SIGTERM",
            || match nix::sys::wait::waitpid(old, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => None,
                _ => Some(()),
            },
        )?;
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.path.join("containerd.log"))?;
        let child = Command::new(&self.launch.0)
            .arg("--config")
            .arg(self.path.join("config.toml"))
            .env("PATH", &self.launch.1)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd again")?;
        *restarted = Some(child);
        drop(restarted);
        wait_until(
            timeout,
            "containerd answering again after its restart",
            || {
                (self.socket().exists() && self.answers_version(Duration::from_secs(5)))
                    .then_some(())
            },
        )?;
        Ok(())
    }

    /// Stop `ctr events` and containerd (SIGTERM, SIGKILL after 10 s), then remove what
    /// they left.
    fn stop(&mut self) {
        let restarted = self
            .restarted
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(restarted) = restarted {
            // The first containerd was reaped by `restart`: this one is the one to stop.
            self.child = Some(restarted);
        }
        if let Some(mut child) = self.events.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Find the shims before containerd goes: their cmdline names our socket either way.
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let exited = wait_until(Duration::from_secs(10), "containerd exiting", || {
                (!matches!(child.try_wait(), Ok(None))).then_some(())
            });
            if exited.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.remove_leftovers();
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

/// The last `lines` lines of the file at `path` (read from its last 64 KiB).
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
