//! The `ctr` command against a harness' containerd: running it with a timeout and
//! collecting its output ([`CtrOutput`]), spawning it, and the invocations tests repeat
//! (importing images, killing and deleting tasks, asking whether containerd answers).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{CRI_NAMESPACE, Containerd, PAUSE_IMAGE};
use crate::image::ImageBuilder;

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

impl Containerd {
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

    /// Run `ctr -a <sock> -n <namespace> ARGS...` in another namespace (e.g.
    /// [`CRI_NAMESPACE`]).
    pub fn ctr_in<I, S>(&self, namespace: &str, args: I) -> anyhow::Result<CtrOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_ctr(
            prefixed(["-n".into(), namespace.into()], args),
            false,
            self.ctr_timeout,
        )
    }

    /// `ctr run --fifo-dir <fifo_dir> ARGS...` (FIFOs stay inside the harness dir).
    pub fn run<I, S>(&self, args: I) -> anyhow::Result<CtrOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.ctr(prefixed(
            ["run".into(), "--fifo-dir".into(), self.fifo_dir().into()],
            args,
        ))
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

    /// `ctr tasks kill -s SIGNAL ID`; fails unless `ctr` exits 0.
    pub fn kill_task(&self, id: &str, signal: &str) -> anyhow::Result<CtrOutput> {
        self.ctr(["tasks", "kill", "-s", signal, id])?
            .ok()
            .with_context(|| format!("killing task {id} with {signal}"))
    }

    /// `ctr tasks delete ID`, then `ctr containers rm ID`: what a stopped container needs
    /// to be gone; fails unless both exit 0.
    pub fn delete_container(&self, id: &str) -> anyhow::Result<()> {
        self.ctr(["tasks", "delete", id])?
            .ok()
            .with_context(|| format!("deleting task {id}"))?;
        self.ctr(["containers", "rm", id])?
            .ok()
            .with_context(|| format!("removing container {id}"))?;
        Ok(())
    }

    /// `ctr images import --all-platforms TAR` (wasm images have platform `wasip1/wasm`).
    pub fn import(&self, tar: impl AsRef<Path>) -> anyhow::Result<CtrOutput> {
        let tar = tar.as_ref();
        self.ctr(import_args(tar))?
            .ok()
            .with_context(|| format!("importing {}", tar.display()))
    }

    /// `ctr -n k8s.io images import --all-platforms TAR`: makes an image available to CRI
    /// without a pull (kubelet's `IfNotPresent` then never calls PullImage).
    pub fn import_cri(&self, tar: impl AsRef<Path>) -> anyhow::Result<CtrOutput> {
        let tar = tar.as_ref();
        self.ctr_in(CRI_NAMESPACE, import_args(tar))?
            .ok()
            .with_context(|| format!("importing {} into {CRI_NAMESPACE}", tar.display()))
    }

    /// Build `image`, write its tarball into the harness dir and [`import`](Self::import)
    /// it; returns the image's full name (`REPOSITORY:TAG`).
    pub fn import_image(&self, image: &ImageBuilder) -> anyhow::Result<String> {
        self.import_built(image, |tar| self.import(tar))
    }

    /// [`Containerd::import_image`] into [`CRI_NAMESPACE`] (see [`Containerd::import_cri`]).
    pub fn import_image_cri(&self, image: &ImageBuilder) -> anyhow::Result<String> {
        self.import_built(image, |tar| self.import_cri(tar))
    }

    fn import_built(
        &self,
        image: &ImageBuilder,
        import: impl FnOnce(&Path) -> anyhow::Result<CtrOutput>,
    ) -> anyhow::Result<String> {
        let image = image.build().context("building the image")?;
        let tar = self.image_tar_path(image.name());
        image
            .write_tar(&tar)
            .with_context(|| format!("writing {}", tar.display()))?;
        import(&tar)?;
        let _ = fs::remove_file(&tar);
        Ok(image.name().to_owned())
    }

    /// `<dir>/<name with every character but [A-Za-z0-9._] made `-`>.tar`.
    fn image_tar_path(&self, name: &str) -> PathBuf {
        let file: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        self.path.join(format!("{file}.tar"))
    }

    /// Build [`PAUSE_IMAGE`] (busybox; a shell that sleeps until SIGTERM) and import it
    /// for CRI. The wasmpod shim runs the sandbox itself, but CRI still resolves and
    /// unpacks the sandbox image (and runc would run it for other handlers).
    pub(super) fn import_pause_image(&self) -> anyhow::Result<()> {
        let pause = ImageBuilder::busybox(PAUSE_IMAGE)?
            .entrypoint(["/bin/sh", "-c"])
            .cmd(["trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"]);
        self.import_image_cri(&pause)?;
        Ok(())
    }

    /// Whether containerd still answers `ctr version`.
    pub fn is_alive(&self) -> bool {
        self.answers_version(Duration::from_secs(10))
    }

    /// Whether `ctr version` exits 0 within `timeout`.
    pub(super) fn answers_version(&self, timeout: Duration) -> bool {
        matches!(self.run_ctr(["version"], false, timeout), Ok(o) if o.success())
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
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
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
}

/// `head` followed by `args`, as one argv.
fn prefixed<const N: usize, I, S>(head: [OsString; N], args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut full = Vec::from(head);
    full.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    full
}

/// `images import --all-platforms TAR`.
fn import_args(tar: &Path) -> [&OsStr; 4] {
    [
        OsStr::new("images"),
        OsStr::new("import"),
        OsStr::new("--all-platforms"),
        tar.as_os_str(),
    ]
}

/// The file at `path` as lossy UTF-8; empty if it cannot be read.
pub(super) fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
