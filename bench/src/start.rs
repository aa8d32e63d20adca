//! Figures 1 and 2: wall time of `ctr run --rm`, and where a start's time goes.
//!
//! [`Ctr`] runs `ctr run --rm` against the bench's containerd and times the whole command,
//! as a user (or `hyperfine`) would. The runs of the different images are interleaved — one
//! of each per round — so a burst of load from the machine's other work hits every image
//! alike and the ratios stay meaningful. [`crate::breakdown`] reads the shim's own debug
//! line `container ID: Wasm process PID ready in D` (logged when containerd runs at debug
//! level, which passes `-debug` to shims) out of containerd's log: the time from Create
//! reaching the shim's launcher to the runner reporting the payload compiled or loaded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The wasmpod runtime type.
pub const WASMPOD: &str = "io.containerd.wasmpod.v1";

/// `ctr` against the bench's containerd.
#[derive(Debug, Clone)]
pub struct Ctr {
    pub socket: String,
    pub namespace: String,
    pub fifo_dir: PathBuf,
}

/// One image to start: the runtime (None = containerd's default, runc), image and args.
#[derive(Debug, Clone)]
pub struct Payload {
    pub runtime: Option<&'static str>,
    pub image: String,
    pub args: Vec<String>,
}

impl Ctr {
    fn command(&self) -> Command {
        let mut command = Command::new("ctr");
        command.args(["-a", &self.socket, "-n", &self.namespace]);
        command.stdin(Stdio::null()).stdout(Stdio::null());
        command
    }

    /// `ctr run --rm` of `payload` as container `id`; returns the wall time. Fails when the
    /// container does not exit 0.
    pub fn run_rm(&self, payload: &Payload, id: &str) -> anyhow::Result<Duration> {
        let mut command = self.command();
        command
            .args(["run", "--rm", "--fifo-dir"])
            .arg(&self.fifo_dir);
        if let Some(runtime) = payload.runtime {
            command.args(["--runtime", runtime]);
        }
        command.args([&payload.image, id]).args(&payload.args);
        let began = Instant::now();
        let output = command
            .stderr(Stdio::piped())
            .output()
            .context("running ctr")?;
        let elapsed = began.elapsed();
        if !output.status.success() {
            bail!(
                "ctr run --rm {} {id}: {}: {}",
                payload.image,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(elapsed)
    }

    /// `ctr containers create` of `payload` as container `id` (a template for the gRPC
    /// driver).
    pub fn create_container(&self, payload: &Payload, id: &str) -> anyhow::Result<()> {
        let mut command = self.command();
        command.args(["containers", "create"]);
        if let Some(runtime) = payload.runtime {
            command.args(["--runtime", runtime]);
        }
        command.args([&payload.image, id]).args(&payload.args);
        let output = command.stderr(Stdio::piped()).output()?;
        if !output.status.success() {
            bail!(
                "ctr containers create {} {id}: {}",
                payload.image,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Ctr {
    /// `ctr run -d --null-io` of `payload` as container `id` (a long-running task to exec
    /// into).
    pub fn run_detached(&self, payload: &Payload, id: &str) -> anyhow::Result<()> {
        let mut command = self.command();
        command.args(["run", "-d", "--null-io"]);
        if let Some(runtime) = payload.runtime {
            command.args(["--runtime", runtime]);
        }
        command.args([&payload.image, id]).args(&payload.args);
        check(command, &format!("ctr run -d {} {id}", payload.image))
    }

    /// `ctr task exec --exec-id EXEC ID ARGS...`; returns the wall time. Fails when the
    /// exec does not exit 0.
    pub fn exec(&self, id: &str, exec_id: &str, args: &[&str]) -> anyhow::Result<Duration> {
        let mut command = self.command();
        command
            .args(["task", "exec", "--fifo-dir"])
            .arg(&self.fifo_dir)
            .args(["--exec-id", exec_id, id])
            .args(args);
        let began = Instant::now();
        check(command, &format!("ctr task exec {id} {exec_id}"))?;
        Ok(began.elapsed())
    }

    /// SIGKILL to task `id`, then its task and container removed.
    pub fn kill_and_remove(&self, id: &str) -> anyhow::Result<()> {
        let mut kill = self.command();
        kill.args(["task", "kill", "-s", "SIGKILL", id]);
        check(kill, &format!("ctr task kill {id}"))?;
        let mut rm = self.command();
        rm.args(["task", "rm", "-f", id]);
        // The task may still be stopping: retry briefly.
        for _ in 0..50 {
            if rm.status().is_ok_and(|s| s.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut container = self.command();
        container.args(["containers", "rm", id]);
        check(container, &format!("ctr containers rm {id}"))
    }
}

/// Runs `command`; fails with its stderr unless it exits 0.
fn check(mut command: Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Interleaved `ctr task exec` rounds into running containers: one exec of each
/// `(name, container, args)` per round; returns the times per target, in order.
pub fn interleaved_execs(
    ctr: &Ctr,
    targets: &[(&str, &str, &[&str])],
    rounds: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    let mut times = vec![Vec::with_capacity(rounds); targets.len()];
    for round in 0..rounds {
        for (i, (name, container, args)) in targets.iter().enumerate() {
            times[i].push(ctr.exec(container, &format!("{name}-{round}"), args)?);
        }
    }
    Ok(times)
}

/// Interleaved `ctr run --rm` rounds: `rounds` times one run of each payload (ids
/// `<prefix>-<name>-<round>`); returns the times per payload, in `payloads` order.
pub fn interleaved(
    ctr: &Ctr,
    payloads: &[(&str, &Payload)],
    prefix: &str,
    rounds: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    let mut times = vec![Vec::with_capacity(rounds); payloads.len()];
    for round in 0..rounds {
        for (i, (name, payload)) in payloads.iter().enumerate() {
            times[i].push(ctr.run_rm(payload, &format!("{prefix}-{name}-{round}"))?);
        }
    }
    Ok(times)
}

/// Removes everything in the compile cache dir (not the dir itself).
pub fn clear_cache(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
