//! Mounting the container's root filesystem at `<bundle>/rootfs` and unmounting it.
//!
//! containerd passes the snapshot as mounts in `CreateTask` (an overlay, or a bind for the
//! native snapshotter); the shim mounts them and must unmount them at delete, also after a
//! crash (`delete` subcommand).

use std::path::Path;

use nix::mount::{MntFlags, umount2};

/// One mount from the CreateTask request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    pub fs_type: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Mounts `mounts` (in order) at `target`.
pub fn mount(mounts: &[RootfsMount], target: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    for m in mounts {
        containerd_shim::mount::mount_rootfs(
            Some(m.fs_type.as_str()),
            Some(m.source.as_str()),
            &m.options,
            target,
        )
        .map_err(|e| {
            std::io::Error::other(format!(
                "mounting {} ({}) at {}: {e}",
                m.source,
                m.fs_type,
                target.display()
            ))
        })?;
    }
    Ok(())
}

/// Unmounts everything stacked at `target`; a target that is not mounted is fine.
pub fn unmount(target: &Path) -> std::io::Result<()> {
    loop {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH).map_err(std::io::Error::from)?;
                return Ok(());
            }
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "unmounting {}: {e}",
                    target.display()
                )));
            }
        }
    }
}
