//! Waiting until a container's output has been read, before its exit is published.
//!
//! A wasm guest writes containerd's stdout/stderr FIFOs itself. When it exits, its last
//! lines may still sit in a FIFO's buffer; if TaskExit reached containerd first, a reader
//! such as `ctr run --rm` could stop before reading them (about 1 run in 200 lost its line
//! before this). The shim holds a read end of each FIFO, which it never reads from, to ask
//! the kernel how many bytes are still unread (`FIONREAD`), and publishes the exit once
//! that is zero, or after a bound, so a reader that never reads cannot hold the exit back.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::time::{Duration, Instant};

/// Read ends of a container's output FIFOs, only to count their unread bytes.
#[derive(Debug, Default)]
pub struct OutputDrain {
    fifos: Vec<File>,
}

impl OutputDrain {
    /// Opens each path that is a FIFO (files and empty paths are skipped: nothing to wait for).
    pub fn open<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let fifos = paths
            .into_iter()
            .filter(|p| !p.is_empty())
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo()))
            .filter_map(|p| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(p)
                    .ok()
            })
            .collect();
        OutputDrain { fifos }
    }

    /// Bytes written and not yet read, summed over the FIFOs.
    pub fn unread(&self) -> usize {
        self.fifos
            .iter()
            .map(|fifo| {
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int through the pointer, which is valid.
                let rc = unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &mut n) };
                if rc == 0 {
                    usize::try_from(n).unwrap_or(0)
                } else {
                    0
                }
            })
            .sum()
    }

    /// Waits until every FIFO is read empty or `bound` passed; returns the bytes left.
    pub fn wait_read(&self, bound: Duration) -> usize {
        let deadline = Instant::now() + bound;
        let mut pause = Duration::from_micros(200);
        loop {
            let left = self.unread();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn waits_for_the_reader_and_gives_up_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let path_str = path.to_str().unwrap();
        let drain = OutputDrain::open([path_str, "", "/nonexistent"]);
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        writer.write_all(b"last line\n").unwrap();
        assert_eq!(drain.unread(), 10);
        // Nobody reads: the bound ends the wait.
        let began = Instant::now();
        assert_eq!(drain.wait_read(Duration::from_millis(50)), 10);
        assert!(began.elapsed() >= Duration::from_millis(50));
        // A reader reads it: the wait ends.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(reader.read(&mut buf).unwrap(), 10);
        assert_eq!(drain.wait_read(Duration::from_secs(5)), 0);
    }
}
