//! File descriptors for stdio and the runner's control pipes.

use std::fs::{File, OpenOptions};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Opens a stdout/stderr destination from containerd: a FIFO is opened read-write so the open
/// never blocks and a slow reader cannot make writes fail with EPIPE (what the Go shims do
/// with a second reader); a regular file is appended to. An empty path means "discard".
pub fn open_output(path: &str) -> std::io::Result<Option<File>> {
    if path.is_empty() {
        return Ok(None);
    }
    let path = path.strip_prefix("file://").unwrap_or(path);
    let is_fifo = std::fs::metadata(path)
        .map(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
        .unwrap_or(false);
    let file = if is_fifo {
        OpenOptions::new().read(true).write(true).open(path)?
    } else {
        OpenOptions::new().create(true).append(true).open(path)?
    };
    Ok(Some(file))
}

/// Opens containerd's stdin FIFO without waiting for a writer; reads then block as usual.
pub fn open_input(path: &str) -> std::io::Result<Option<File>> {
    if path.is_empty() {
        return Ok(None);
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(&file, FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK))?;
    Ok(Some(file))
}

/// A close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> std::io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

/// Takes ownership of an inherited descriptor number (runner side).
///
/// # Safety
/// `fd` must be open, and owned by nothing else in this process.
pub unsafe fn inherited(fd: i32) -> File {
    // SAFETY: forwarded to the caller.
    File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}
