//! The runner's private root: what is left of the filesystem once preparation is done.
//!
//! The runner is born in a mount namespace of its own (the spawn creates it and makes every
//! mount a slave, so nothing propagates back to the host). It prepares with the host's view
//! (bundle, FIFOs, compile cache), then [`enter`] replaces that view with a small read-only
//! tmpfs holding only what the guest's host calls need, and detaches the host's mounts:
//!
//! ```text
//! /                    tmpfs, read-only, nosuid,nodev,noexec
//! /preopens/0          the rootfs (bind from its descriptor; read-only when root.readonly)
//! /preopens/<n>        each directory bind mount of the spec (read-only when `ro`)
//! /etc/hosts           the pod's files when the spec binds them (kubelet: hostAliases,
//! /etc/resolv.conf       cluster DNS), else localhost-only / empty ones: the runner's
//! /etc/hostname          getaddrinfo (wasi:sockets ip-name-lookup) reads these
//! /etc/nsswitch.conf   `hosts: files dns`
//! ```
//!
//! Every source is opened once, as a descriptor, before anything is mounted: a preopened
//! directory's source must not be a symlink (`O_NOFOLLOW`: the guest gets the directory the
//! spec names, never where a link points), no source may cross a magic link, and a missing
//! source fails Create naming it, as runc does. The bind mounts are made from those
//! descriptors (`open_tree`), so nothing is looked up twice. The guest's preopens point at
//! `/preopens/<n>`: when wasmtime-wasi opens them (once per run, once per wasi:http request)
//! it resolves a path of the private root, never a host path, and whatever the guest does
//! below a preopen resolves beneath it (wasmtime-wasi's cap-std) and, were that escaped,
//! still inside this root. There is no `/proc`, `/sys` or `/dev`.
//!
//! Binds of single files other than the DNS files (kubelet's `/dev/termination-log`,
//! `subPath` files) cannot be WASI preopens, which are directories: they are skipped with a
//! log line (debug under `/dev`, a warning elsewhere), after their source was checked.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use log::{debug, warn};
use wasmpod_runtime_core::Preopen;

use super::spec::BindMount;
use crate::os::mountns::{self, Attrs, Kind, Last};

/// The directory of the private root holding the preopens, `/preopens/<n>`.
const PREOPENS: &CStr = c"preopens";
/// The pod's DNS files: destinations the runner's own name lookups read.
const DNS_FILES: [&str; 3] = ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"];
/// `/etc/hosts` when the spec binds none: localhost only, never the node's file.
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
/// `/etc/resolv.conf` when the spec binds none: no name server.
const DEFAULT_RESOLV_CONF: &str = "# wasmpod: no DNS configuration was given to this container\n";
/// glibc 2.34+ has `files` and `dns` built in: no NSS module is loaded after the pivot.
const NSSWITCH_CONF: &str = "hosts: files dns\n";
/// The tmpfs only holds directories, empty mount points and three small files.
const ROOT_SIZE: &str = "256k";

/// Why the private root could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RootViewError {
    #[error("mount source {path} (for {destination}) does not exist")]
    MissingSource { path: PathBuf, destination: String },
    #[error(
        "mount source {path} (for {destination}) is a symbolic link: name the directory it points to"
    )]
    SymlinkSource { path: PathBuf, destination: String },
    #[error("the rootfs {path} is not a directory")]
    RootNotDirectory { path: PathBuf },
    #[error("opening mount source {path} (for {destination}): {error}")]
    OpenSource {
        path: PathBuf,
        destination: String,
        error: std::io::Error,
    },
    #[error("building the container's private root: {step}: {error}")]
    Build { step: String, error: std::io::Error },
}

/// A directory the guest gets, opened.
#[derive(Debug)]
struct PinnedDir {
    fd: OwnedFd,
    destination: String,
    read_only: bool,
}

/// The sources of a container's mounts, opened and sorted by what they become.
#[derive(Debug)]
pub struct PinnedMounts {
    /// The rootfs first, then the directory binds in spec order.
    dirs: Vec<PinnedDir>,
    /// `(destination, file)`; a later bind of the same destination wins, as it would stack.
    dns: Vec<(&'static str, OwnedFd)>,
}

/// Opens every source, builds the private root over `at` (a directory of this namespace;
/// hidden by it) and pivots into it; returns the guest's preopens. The last step with the
/// host's view: afterwards no host path resolves in this process.
pub fn enter(mounts: &[BindMount], at: &Path) -> Result<Vec<Preopen>, RootViewError> {
    PinnedMounts::open(mounts)?.enter(at)
}

impl PinnedMounts {
    /// Opens the source of each mount; `mounts[0]` is the rootfs.
    pub fn open(mounts: &[BindMount]) -> Result<Self, RootViewError> {
        let mut pinned = PinnedMounts {
            dirs: Vec::new(),
            dns: Vec::new(),
        };
        for (index, mount) in mounts.iter().enumerate() {
            let dns_file = DNS_FILES
                .into_iter()
                .find(|dest| *dest == mount.destination);
            // A DNS file may be a symlink (the node's /etc/resolv.conf under
            // systemd-resolved, bound by `ctr run --net-host`): the runner only reads it.
            let last = if dns_file.is_some() {
                Last::Follow
            } else {
                Last::NoFollow
            };
            let source = &mount.source;
            let destination = mount.destination.clone();
            let found = mountns::pin(source, last).map_err(|error| match error.kind() {
                std::io::ErrorKind::NotFound => RootViewError::MissingSource {
                    path: source.clone(),
                    destination: destination.clone(),
                },
                _ => RootViewError::OpenSource {
                    path: source.clone(),
                    destination: destination.clone(),
                    error,
                },
            })?;
            match (found.kind, dns_file) {
                (Kind::Directory, _) => pinned.dirs.push(PinnedDir {
                    fd: found.fd,
                    destination,
                    read_only: mount.read_only,
                }),
                _ if index == 0 => {
                    return Err(RootViewError::RootNotDirectory {
                        path: source.clone(),
                    });
                }
                (Kind::Symlink, _) => {
                    return Err(RootViewError::SymlinkSource {
                        path: source.clone(),
                        destination,
                    });
                }
                (Kind::File, Some(dns)) => {
                    pinned.dns.retain(|(dest, _)| *dest != dns);
                    pinned.dns.push((dns, found.fd));
                }
                _ if destination.starts_with("/dev/") => debug!(
                    "mount {} -> {destination}: not a directory, a guest cannot see it",
                    source.display()
                ),
                _ => warn!(
                    "mount {} -> {destination}: not a directory, a wasm guest cannot see it (WASI preopens are directories)",
                    source.display()
                ),
            }
        }
        Ok(pinned)
    }

    /// Builds the private root over `at`, pivots into it and returns the guest's preopens
    /// (`/preopens/<n>` at each destination). Closes the pinned descriptors: the mounts
    /// hold what they pinned.
    pub fn enter(self, at: &Path) -> Result<Vec<Preopen>, RootViewError> {
        let build = |step: &str| {
            let step = step.to_owned();
            move |error| RootViewError::Build { step, error }
        };
        let root = mountns::new_tmpfs(ROOT_SIZE).map_err(build("creating the tmpfs"))?;
        mountns::attach_over(root.as_fd(), at)
            .map_err(build(&format!("mounting it over {}", at.display())))?;
        let mut preopens = Vec::with_capacity(self.dirs.len());
        mountns::make_dir(root.as_fd(), PREOPENS).map_err(build("creating /preopens"))?;
        for (n, dir) in self.dirs.iter().enumerate() {
            let name = CString::new(format!("preopens/{n}")).expect("no NUL");
            let step = format!("binding {} at /{}", dir.destination, name.to_string_lossy());
            let tree = mountns::clone_tree(dir.fd.as_fd()).map_err(build(&step))?;
            let mut attrs = Attrs::INERT;
            if dir.read_only {
                attrs = attrs.with(Attrs::READ_ONLY);
            }
            // Recursive: a read-only volume's submounts are read-only too (Kubernetes'
            // "recursive read-only"), and nothing in a volume is a program or device.
            mountns::set_attrs(tree.as_fd(), attrs, true).map_err(build(&step))?;
            mountns::make_dir(root.as_fd(), &name).map_err(build(&step))?;
            mountns::attach_at(tree.as_fd(), root.as_fd(), &name).map_err(build(&step))?;
            preopens.push(Preopen {
                host_path: PathBuf::from("/").join(name.to_string_lossy().as_ref()),
                guest_path: dir.destination.clone(),
                read_only: dir.read_only,
            });
        }
        mountns::make_dir(root.as_fd(), c"etc").map_err(build("creating /etc"))?;
        mountns::write_file(root.as_fd(), c"etc/nsswitch.conf", NSSWITCH_CONF.as_bytes())
            .map_err(build("writing /etc/nsswitch.conf"))?;
        for dest in DNS_FILES {
            let name = CString::new(&dest[1..]).expect("no NUL");
            let step = format!("placing {dest}");
            match self.dns.iter().find(|(d, _)| *d == dest) {
                Some((_, file)) => {
                    mountns::write_file(root.as_fd(), &name, b"").map_err(build(&step))?;
                    let tree = mountns::clone_tree(file.as_fd()).map_err(build(&step))?;
                    mountns::set_attrs(tree.as_fd(), Attrs::INERT.with(Attrs::READ_ONLY), true)
                        .map_err(build(&step))?;
                    mountns::attach_at(tree.as_fd(), root.as_fd(), &name).map_err(build(&step))?;
                }
                None => {
                    let contents = match dest {
                        "/etc/hosts" => DEFAULT_HOSTS,
                        "/etc/resolv.conf" => DEFAULT_RESOLV_CONF,
                        _ => continue,
                    };
                    mountns::write_file(root.as_fd(), &name, contents.as_bytes())
                        .map_err(build(&step))?;
                }
            }
        }
        mountns::set_attrs(root.as_fd(), Attrs::READ_ONLY, false)
            .map_err(build("making the root read-only"))?;
        mountns::pivot_into(root.as_fd()).map_err(build("pivot_root"))?;
        Ok(preopens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    fn bind(source: &Path, destination: &str, read_only: bool) -> BindMount {
        BindMount {
            source: source.to_owned(),
            destination: destination.to_owned(),
            read_only,
        }
    }

    #[test]
    fn a_missing_source_fails_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let gone = root.path().join("gone");
        let err = PinnedMounts::open(&[bind(root.path(), "/", false), bind(&gone, "/data", false)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("mount source {} (for /data) does not exist", gone.display())
        );
    }

    #[test]
    fn a_directory_source_must_not_be_a_symlink_but_a_dns_file_may_be() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = PinnedMounts::open(&[bind(root.path(), "/", false), bind(&link, "/data", false)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a symbolic link"), "{err}");

        let hosts = root.path().join("hosts");
        std::fs::write(&hosts, "").unwrap();
        let hosts_link = root.path().join("hosts-link");
        std::os::unix::fs::symlink(&hosts, &hosts_link).unwrap();
        let pinned = PinnedMounts::open(&[
            bind(root.path(), "/", false),
            bind(&hosts_link, "/etc/hosts", false),
        ])
        .unwrap();
        assert_eq!(pinned.dns.len(), 1);
    }

    #[test]
    fn only_directories_and_dns_files_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("termination-log");
        std::fs::write(&file, "").unwrap();
        let pinned = PinnedMounts::open(&[
            bind(root.path(), "/", true),
            bind(&file, "/dev/termination-log", false),
            bind(&file, "/app/config.yaml", false),
            bind(&file, "/etc/resolv.conf", false),
            bind(root.path(), "/data", false),
        ])
        .unwrap();
        let dirs: Vec<(&str, bool)> = pinned
            .dirs
            .iter()
            .map(|d| (d.destination.as_str(), d.read_only))
            .collect();
        assert_eq!(dirs, [("/", true), ("/data", false)]);
        let dns: Vec<&str> = pinned.dns.iter().map(|(d, _)| *d).collect();
        assert_eq!(dns, ["/etc/resolv.conf"]);
        let err = PinnedMounts::open(&[bind(&file, "/", false)]).unwrap_err();
        assert!(
            matches!(err, RootViewError::RootNotDirectory { .. }),
            "{err}"
        );
    }

    /// Runs `f` on a thread of its own in a new mount namespace whose mounts are slaves (as
    /// the spawn makes a runner's), so pivoting there leaves the test process alone.
    fn in_own_mount_namespace<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
                    nix::mount::mount(
                        None::<&str>,
                        "/",
                        None::<&str>,
                        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
                        None::<&str>,
                    )
                    .unwrap();
                    f()
                })
                .join()
                .unwrap()
        })
    }

    /// Needs root (mounts in a mount namespace of its own); run by `make test` as root.
    #[test]
    #[ignore = "needs root"]
    fn the_private_root_holds_the_guest_view_and_nothing_of_the_host() {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "needs root (mount namespace); run via `make test` as root"
        );
        let host = tempfile::tempdir().unwrap();
        let rootfs = host.path().join("rootfs");
        let volume = host.path().join("volume");
        let at = host.path().join("bundle");
        for dir in [&rootfs, &volume, &at] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(rootfs.join("app.wasm"), "wasm").unwrap();
        std::fs::write(volume.join("data.txt"), "data").unwrap();
        let hosts = host.path().join("hosts");
        std::fs::write(&hosts, "10.0.0.7 pod-alias\n").unwrap();
        let mounts = [
            bind(&rootfs, "/", false),
            bind(&volume, "/data", true),
            bind(&hosts, "/etc/hosts", false),
        ];
        let host_file = host.path().join("secret");
        std::fs::write(&host_file, "host").unwrap();

        let seen = in_own_mount_namespace(|| {
            let preopens = enter(&mounts, &at).unwrap();
            let read = |p: &str| std::fs::read_to_string(p).map_err(|e| e.kind());
            let mut top: Vec<String> = std::fs::read_dir("/")
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            top.sort();
            (
                preopens,
                top,
                read("/preopens/0/app.wasm"),
                read("/preopens/1/data.txt"),
                std::fs::write("/preopens/1/new", "x").map_err(|e| e.kind()),
                std::fs::write("/preopens/0/new", "x").map_err(|e| e.kind()),
                std::fs::write("/new", "x").map_err(|e| e.kind()),
                read("/etc/hosts"),
                read("/etc/resolv.conf"),
                read("/etc/nsswitch.conf"),
                Path::new("/proc/self").exists(),
                read(host_file.to_str().unwrap()),
            )
        });
        let (
            preopens,
            top,
            app,
            data,
            ro_write,
            rw_write,
            root_write,
            hosts,
            resolv,
            nss,
            proc,
            secret,
        ) = seen;
        let view: Vec<(&str, &str, bool)> = preopens
            .iter()
            .map(|p| {
                (
                    p.host_path.to_str().unwrap(),
                    p.guest_path.as_str(),
                    p.read_only,
                )
            })
            .collect();
        assert_eq!(
            view,
            [("/preopens/0", "/", false), ("/preopens/1", "/data", true)]
        );
        assert_eq!(top, ["etc", "preopens"]);
        assert_eq!(app, Ok("wasm".into()));
        assert_eq!(data, Ok("data".into()));
        assert_eq!(ro_write, Err(ErrorKind::ReadOnlyFilesystem), "ro volume");
        assert_eq!(rw_write, Ok(()), "rw rootfs");
        assert_eq!(root_write, Err(ErrorKind::ReadOnlyFilesystem), "the root");
        assert_eq!(hosts, Ok("10.0.0.7 pod-alias\n".into()));
        assert_eq!(resolv, Ok(DEFAULT_RESOLV_CONF.into()));
        assert_eq!(nss, Ok(NSSWITCH_CONF.into()));
        assert!(!proc, "a /proc in the private root");
        assert_eq!(secret, Err(ErrorKind::NotFound), "a host file");
        // Nothing of it reached the host.
        assert!(
            rootfs.join("new").exists(),
            "the rootfs write is on the host"
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(host.path().to_str().unwrap()),
            "{mountinfo}"
        );
        assert!(std::fs::read_dir(&at).unwrap().next().is_none());
    }
}
