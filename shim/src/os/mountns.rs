//! Mount-namespace mechanics of a container process: pinning host paths as descriptors,
//! building a private root from descriptors, and pivoting into it.
//!
//! Everything here works on descriptors through the new mount API (`open_tree`,
//! `move_mount`, `mount_setattr`, `fsopen`/`fsmount`, Linux 5.12+), so no path is looked up
//! twice: a directory is opened once ([`pin`]), then cloned as a bind mount from that
//! descriptor ([`clone_tree`]) and attached in the private root ([`attach_at`]). Nothing
//! needs `/proc`. The caller must already be alone in its mount namespace with every mount
//! a slave (the spawn does that between clone and exec), so nothing here propagates to the
//! host and everything disappears with the namespace.
//!
//! [`pivot_into`] makes a mount the root of the namespace and detaches the old root: from
//! then on no host path resolves, for every thread of the process.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What a pinned path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
    Symlink,
    /// A device, socket or FIFO.
    Other,
}

/// A host path opened as an `O_PATH` descriptor, and what it is.
#[derive(Debug)]
pub struct Pinned {
    pub fd: OwnedFd,
    pub kind: Kind,
}

/// Mount attributes (`MOUNT_ATTR_*`) for [`set_attrs`] and [`new_tmpfs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs(u64);

impl Attrs {
    pub const READ_ONLY: Attrs = Attrs(libc::MOUNT_ATTR_RDONLY);
    /// `nosuid`, `nodev`, `noexec`: nothing a guest reaches is a program or a device.
    pub const INERT: Attrs =
        Attrs(libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC);

    pub fn with(self, other: Attrs) -> Attrs {
        Attrs(self.0 | other.0)
    }
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other(format!("{} holds a NUL byte", path.display())))
}

/// An owned descriptor from a syscall's return value.
fn owned(rc: libc::c_long) -> std::io::Result<OwnedFd> {
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

fn check(rc: libc::c_long) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether [`pin`] follows a symlink at the last component of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// A symlink there is pinned itself (and comes back as [`Kind::Symlink`]).
    NoFollow,
    Follow,
}

/// Opens `path` as an `O_PATH` descriptor without crossing any magic link
/// (`/proc/<pid>/root`, `/proc/self/fd/N`) on the way; `last` says whether a symlink at
/// its last component is followed.
pub fn pin(path: &Path, last: Last) -> std::io::Result<Pinned> {
    let c = c_path(path)?;
    let mut flags = libc::O_PATH | libc::O_CLOEXEC;
    if last == Last::NoFollow {
        flags |= libc::O_NOFOLLOW;
    }
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: a NUL-terminated path and a `struct open_how` of the size passed.
    let fd = owned(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    let meta = nix::sys::stat::fstat(&fd)?;
    let kind = match meta.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Directory,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    };
    Ok(Pinned { fd, kind })
}

/// Opens `path` for reading as if `root` were `/`: every component, `..` and symlink is
/// resolved inside `root` by the kernel (`RESOLVE_IN_ROOT`, no magic links), so a tree that
/// changes meanwhile (a running guest swapping in a symlink) cannot lead outside it.
/// Non-blocking, so a FIFO there does not hang the caller.
pub fn open_in_root(root: &Path, path: &str) -> std::io::Result<std::fs::File> {
    let root = std::fs::File::open(root)?;
    let c = CString::new(path.trim_start_matches('/'))
        .map_err(|_| std::io::Error::other(format!("{path} holds a NUL byte")))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: a directory descriptor, a NUL-terminated path and a `struct open_how` of the
    // size passed.
    let fd = owned(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    Ok(std::fs::File::from(fd))
}

/// A new, detached tmpfs mount (`mode=0755`, at most `size` bytes, `nosuid,nodev,noexec`);
/// the descriptor is its root directory.
pub fn new_tmpfs(size: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: a static NUL-terminated filesystem name.
    let fs =
        owned(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    let size = CString::new(size).map_err(|_| std::io::Error::other("size holds a NUL byte"))?;
    for (key, value) in [(c"mode", c"0755"), (c"size", size.as_c_str())] {
        // SAFETY: NUL-terminated key and value for FSCONFIG_SET_STRING on our fs context.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                libc::FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        })?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: our fs context, FSMOUNT_CLOEXEC and valid MOUNT_ATTR_* bits.
    owned(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            Attrs::INERT.0,
        )
    })
}

/// A detached copy of the mount tree at `dir` (a bind mount of it, with every mount below
/// it, as `rbind`): a directory or a file.
pub fn clone_tree(dir: BorrowedFd) -> std::io::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE
        | libc::OPEN_TREE_CLOEXEC
        | libc::AT_EMPTY_PATH as u32
        | libc::AT_RECURSIVE as u32;
    // SAFETY: an empty path with AT_EMPTY_PATH on a descriptor we hold.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c"".as_ptr(), flags) })
}

/// Sets `attrs` on the mount `mount` refers to (and, `recursive`, on every mount below it).
pub fn set_attrs(mount: BorrowedFd, attrs: Attrs, recursive: bool) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs.0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: an empty path with AT_EMPTY_PATH, and a `struct mount_attr` of the size passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// Attaches the detached mount `mount` at `name` below the directory `dir` (or at `dir`
/// itself when `name` is empty); `name` must exist and not be a symlink.
pub fn attach_at(mount: BorrowedFd, dir: BorrowedFd, name: &CStr) -> std::io::Result<()> {
    let mut flags = libc::MOVE_MOUNT_F_EMPTY_PATH;
    if name.is_empty() {
        flags |= libc::MOVE_MOUNT_T_EMPTY_PATH;
    }
    // SAFETY: descriptors we hold, NUL-terminated paths, valid MOVE_MOUNT_* flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            flags,
        )
    })
}

/// Attaches the detached mount `mount` over the directory `path` of this namespace.
pub fn attach_over(mount: BorrowedFd, path: &Path) -> std::io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: a descriptor we hold and NUL-terminated paths; AT_FDCWD resolves `path`.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// Makes the attached mount whose root is `new_root` the root of this mount namespace and
/// detaches the old root with everything mounted under it (runc's `pivot_root(".", ".")`).
/// Changes the root and working directory of every thread of the process.
pub fn pivot_into(new_root: BorrowedFd) -> std::io::Result<()> {
    nix::unistd::fchdir(new_root)?;
    // The old root ends up stacked on the new one at "."; detaching it is safe because
    // every mount of this namespace is a slave (or private): nothing reaches the host.
    nix::unistd::pivot_root(".", ".")?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)?;
    nix::unistd::chdir("/")?;
    Ok(())
}

/// Pivots into an empty read-only tmpfs mounted over `at`: for a process that needs no
/// file at all (the pod sandbox's pause).
pub fn enter_empty_root(at: &Path) -> std::io::Result<()> {
    let root = new_tmpfs("4k")?;
    attach_over(root.as_fd(), at)?;
    set_attrs(root.as_fd(), Attrs::READ_ONLY, false)?;
    pivot_into(root.as_fd())
}

/// Creates directory `name` (mode 0755, whatever the umask) below `dir`.
pub fn make_dir(dir: BorrowedFd, name: &CStr) -> std::io::Result<()> {
    // SAFETY: a descriptor we hold and a NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) }.into())?;
    // SAFETY: as above.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), 0o755, 0) }.into())
}

/// Creates file `name` (mode 0644, whatever the umask) below `dir` holding `contents`.
pub fn write_file(dir: BorrowedFd, name: &CStr, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a descriptor we hold and a NUL-terminated name.
    let fd = owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o644) }.into())?;
    let mut file = std::fs::File::from(fd);
    file.write_all(contents)?;
    // SAFETY: a descriptor we own.
    check(unsafe { libc::fchmod(file.as_raw_fd(), 0o644) }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_in_root_keeps_every_symlink_and_dotdot_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(dir.path().join("secret.wasm"), b"\0asmSECRET").unwrap();
        std::fs::write(root.join("app/probe.wasm"), b"\0asmPROBE").unwrap();
        // What a guest could swap in: relative and absolute links out of its rootfs.
        std::os::unix::fs::symlink("../../secret.wasm", root.join("app/rel.wasm")).unwrap();
        let outside = dir.path().join("secret.wasm");
        std::os::unix::fs::symlink(&outside, root.join("app/abs.wasm")).unwrap();
        let read = |path: &str| open_in_root(&root, path).map(std::io::read_to_string);
        assert_eq!(read("/app/probe.wasm").unwrap().unwrap(), "\0asmPROBE");
        for path in [
            "/app/rel.wasm",
            "/app/abs.wasm",
            "/../secret.wasm",
            "app/../../secret.wasm",
        ] {
            let opened = read(path);
            assert!(
                matches!(&opened, Err(e) if e.kind() == std::io::ErrorKind::NotFound),
                "{path}: {opened:?}"
            );
        }
    }

    #[test]
    fn open_in_root_does_not_block_on_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("probe.wasm"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .unwrap();
        let file = open_in_root(dir.path(), "/probe.wasm").expect("opened at once");
        assert!(!file.metadata().unwrap().file_type().is_file());
    }
}
