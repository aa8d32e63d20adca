//! `private-containerd`: the test harness's private containerd ([`Containerd`]) for the
//! shell scripts (`scripts/private-containerd.sh`, sourced by `make demo`,
//! `scripts/measure-start.sh`, `bench/bench.sh`, `bench/http.sh`), so there is one way to
//! start and clean up a private containerd, not a Rust one and a shell one.
//!
//! ```text
//! private-containerd --shim PATH [--log-level LEVEL]
//! ```
//!
//! Starts containerd (own root, state, sockets and config in a temp dir; the system
//! containerd is never touched) with the directory of `--shim` first on its `PATH`, then
//! prints shell assignments on stdout, one a line, and `ready`:
//!
//! ```text
//! work=/tmp/wasmpod-ctrd-XXXXXX
//! sock=/tmp/wasmpod-ctrd-XXXXXX/c.sock
//! ns=wasmpod-test-PID-0
//! containerd_pid=PID
//! ready
//! ```
//!
//! `$work/containerd.log` is containerd's log (with its shims' at `--log-level debug`, the
//! harness's default); `$work/fifo` is a FIFO dir for `ctr run --fifo-dir`. On SIGTERM,
//! SIGINT or SIGHUP, or when its parent dies, it stops containerd, kills the shims it
//! started, unmounts what is left under `$work` and removes it (the harness's drop), then
//! exits 0. Exit codes: 1 containerd could not start, 2 bad usage.

// This binary's output is the assignments on stdout.
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use wasmpod_test::containerd::Containerd;

const USAGE: &str = "usage: private-containerd --shim PATH [--log-level LEVEL]";

fn main() -> ExitCode {
    let (shim, log_level) = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("private-containerd: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(shim, log_level) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("private-containerd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse(argv: impl IntoIterator<Item = String>) -> anyhow::Result<(PathBuf, Option<String>)> {
    let mut argv = argv.into_iter();
    let (mut shim, mut log_level) = (None, None);
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--shim" => shim = Some(PathBuf::from(value)),
            "--log-level" => log_level = Some(value),
            _ => bail!("unknown flag {flag:?}"),
        }
    }
    Ok((shim.context("--shim is required")?, log_level))
}

fn serve(shim: PathBuf, log_level: Option<String>) -> anyhow::Result<()> {
    // Blocked before any thread or child exists, and taken with sigwait below: every thread
    // the harness starts inherits the mask (children get an empty one from std).
    let mut stop = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop.add(signal);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop), None).context("blocking signals")?;
    // A script killed without its cleanup still gets its containerd stopped.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).context("setting the parent-death signal")?;
    let mut builder = Containerd::builder().shim(shim);
    if let Some(level) = log_level {
        builder = builder.log_level(level);
    }
    let containerd = builder.start()?;
    let pid = containerd.pid().context("containerd has no pid")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "work={}\nsock={}\nns={}\ncontainerd_pid={pid}\nready",
        containerd.dir().display(),
        containerd.socket().display(),
        containerd.namespace(),
    )?;
    out.flush()?;
    drop(out);
    let signal = stop.wait().context("waiting for a signal")?;
    eprintln!(
        "private-containerd: {signal}: stopping containerd and removing {}",
        containerd.dir().display()
    );
    drop(containerd);
    Ok(())
}
