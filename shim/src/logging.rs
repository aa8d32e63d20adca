//! The shim daemon's log: text lines on the `log` FIFO containerd reads from the bundle of
//! the first container (containerd copies them into its own log).
//!
//! In a shim shared by several containers that FIFO can lose its reader while the shim
//! lives on (the first container is deleted before the others). Writes then fail with
//! EPIPE and raise SIGPIPE, which the `containerd-shim` crate's signal thread logs, which
//! writes again: a livelock that starves child reaping. So the first failed write closes
//! the log for good; nothing is retried.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;
use std::time::SystemTime;

use log::{LevelFilter, Log, Metadata, Record};

struct FifoLog {
    file: Mutex<Option<File>>,
}

impl Log for FifoLog {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let Some(out) = file.as_mut() else { return };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!(
            "time=\"{}.{:06}\" level={} msg={:?} runtime=wasmpod\n",
            now.as_secs(),
            now.subsec_micros(),
            record.level().as_str().to_lowercase(),
            record.args().to_string()
        );
        if out.write_all(line.as_bytes()).is_err() {
            *file = None;
        }
    }

    fn flush(&self) {}
}

/// Logs to the `log` FIFO in the current directory (the bundle) at `info`, or `debug` when
/// containerd runs the shim with `-debug`. Without a reader, logging is off.
pub fn init(debug: bool) {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
        .ok()
        .and_then(|file| {
            // Back to blocking writes, so lines are never cut short.
            let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).ok()?;
            let flags =
                nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
            Some(file)
        });
    let logger = Box::new(FifoLog {
        file: Mutex::new(file),
    });
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(if debug {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
}
