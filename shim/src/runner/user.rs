//! Switching the runner to the container's user before guest code runs.
//!
//! The runner prepares as root (it reads the bundle, writes the node's compile cache and
//! opens containerd's FIFOs), then becomes `process.user`: supplementary groups, group,
//! user, in that order. From a uid other than 0 the kernel clears every capability, so the
//! guest's files are checked against that user like any Linux process's, and what it
//! creates is owned by it. glibc applies each call to all threads.
//!
//! The preopened directories usually sit below root-only directories (the bundle,
//! kubelet's pod dirs) that the user may not traverse; they are bind-mounted into the
//! runner's private root before the switch ([`super::rootview`]), as runc mounts them into
//! the container's root, so only each directory's own permissions apply.

use super::spec::GuestUser;

/// Becomes `user` for good (no way back to root).
pub fn switch(user: &GuestUser) -> std::io::Result<()> {
    let groups: Vec<libc::gid_t> = user.additional_gids.clone();
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain credential syscalls with a valid buffer and its length.
    unsafe {
        check(libc::setgroups(groups.len(), groups.as_ptr()))?;
        check(libc::setgid(user.gid))?;
        check(libc::setuid(user.uid))?;
    }
    // SAFETY: getuid/geteuid cannot fail.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if uid != user.uid || euid != user.uid {
        return Err(std::io::Error::other(format!(
            "still uid {uid} (euid {euid}) after setuid"
        )));
    }
    Ok(())
}
