//! Preopened directories of a guest that runs as another user.
//!
//! The runner prepares as root (it reads the bundle, writes the node's compile cache and
//! opens containerd's FIFOs), then becomes `process.user` ([`super::confine`]); the
//! guest's files are then checked against that user like any Linux process's, and what it
//! creates is owned by it.
//!
//! The preopened directories (the rootfs, volumes) usually sit below root-only directories
//! (the bundle, kubelet's pod dirs) that the user may not traverse; runc gets past this by
//! mounting them into the container's root before it switches. Here each is opened while
//! still root and the guest's preopen is pointed at `/proc/self/fd/N`: reopening through
//! that link checks only the directory itself, as entering a mount would. (A process may
//! always open its own `/proc/self/fd/N`; the runner stays non-dumpable, so no other
//! process of the same uid can reach these descriptors through `/proc/<pid>/fd`.)

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use wasmpod_runtime_core::Preopen;

/// Directories opened before the switch; must live as long as the guest may open them.
pub struct PinnedDirs {
    _dirs: Vec<File>,
}

/// Opens every preopen's host directory now and points the preopen at the open descriptor.
pub fn pin_preopens(preopens: &mut [Preopen]) -> std::io::Result<PinnedDirs> {
    let mut pinned = Vec::with_capacity(preopens.len());
    for preopen in preopens {
        let dir = File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&preopen.host_path)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("opening {}: {e}", preopen.host_path.display()),
                )
            })?;
        preopen.host_path = format!("/proc/self/fd/{}", dir.as_raw_fd()).into();
        pinned.push(dir);
    }
    Ok(PinnedDirs { _dirs: pinned })
}
