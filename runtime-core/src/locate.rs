//! Finds the payload named by `process.args[0]` inside a container's root filesystem.
//!
//! Resolution follows what a Linux container user expects of `execve` + `PATH`:
//! an absolute name is taken from the rootfs root, a name with a `/` is taken relative to
//! `cwd`, a bare name is looked up in `cwd` and then in each `PATH` directory. Symlinks are
//! followed but must stay inside the rootfs.

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// Where an entrypoint was found: the path the guest knows and the host path to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrypoint {
    /// Path inside the container (e.g. `/app/hello.wasm`).
    pub guest_path: String,
    /// The same file on the host (under the rootfs).
    pub host_path: PathBuf,
}

/// Resolves `args0` in `rootfs`, with `cwd` and the `PATH` from the container's env.
pub fn resolve_entrypoint(
    rootfs: &Path,
    args0: &str,
    cwd: &str,
    path_env: Option<&str>,
) -> Result<Entrypoint> {
    if args0.is_empty() {
        return Err(Error::NoEntrypoint);
    }
    let candidates: Vec<String> = if args0.starts_with('/') {
        vec![args0.to_owned()]
    } else if args0.contains('/') {
        vec![join_guest(cwd, args0)]
    } else {
        std::iter::once(join_guest(cwd, args0))
            .chain(
                path_env
                    .unwrap_or_default()
                    .split(':')
                    .filter(|dir| dir.starts_with('/'))
                    .map(|dir| join_guest(dir, args0)),
            )
            .collect()
    };
    let rootfs_real = rootfs.canonicalize().map_err(|e| Error::io(rootfs, e))?;
    for guest_path in &candidates {
        let host_path = rootfs.join(guest_path.trim_start_matches('/'));
        match host_path.canonicalize() {
            Ok(real) if !real.starts_with(&rootfs_real) => {
                return Err(Error::EntrypointEscapesRootfs(guest_path.clone()));
            }
            Ok(real) if real.is_file() => {
                return Ok(Entrypoint {
                    guest_path: guest_path.clone(),
                    host_path: real,
                });
            }
            _ => continue,
        }
    }
    Err(Error::EntrypointNotFound {
        name: args0.to_owned(),
        looked_at: candidates.join(", "),
    })
}

/// Joins two guest paths and normalises `.` and `..` lexically (never above `/`).
fn join_guest(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let joined = PathBuf::from(if base.is_empty() { "/" } else { base }).join(rel);
    for component in joined.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"\0asm\x01\0\0\0").unwrap();
        }
        dir
    }

    #[test]
    fn absolute_name_is_taken_from_rootfs_root() {
        let root = rootfs_with(&["/app/hello.wasm"]);
        let found = resolve_entrypoint(root.path(), "/app/hello.wasm", "/tmp", None).unwrap();
        assert_eq!(found.guest_path, "/app/hello.wasm");
        assert!(found.host_path.ends_with("app/hello.wasm"));
    }

    #[test]
    fn relative_name_is_resolved_against_cwd() {
        let root = rootfs_with(&["/app/bin/hello.wasm"]);
        let found = resolve_entrypoint(root.path(), "bin/hello.wasm", "/app", None).unwrap();
        assert_eq!(found.guest_path, "/app/bin/hello.wasm");
    }

    #[test]
    fn bare_name_is_searched_in_path() {
        let root = rootfs_with(&["/usr/bin/hello.wasm"]);
        let found =
            resolve_entrypoint(root.path(), "hello.wasm", "/", Some("/bin:/usr/bin")).unwrap();
        assert_eq!(found.guest_path, "/usr/bin/hello.wasm");
    }

    #[test]
    fn missing_entrypoint_names_what_was_tried() {
        let root = rootfs_with(&[]);
        let err = resolve_entrypoint(root.path(), "hello.wasm", "/", Some("/bin")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"hello.wasm\" not found"), "{msg}");
        assert!(msg.contains("/hello.wasm, /bin/hello.wasm"), "{msg}");
    }

    #[test]
    fn empty_args_is_no_entrypoint() {
        let root = rootfs_with(&[]);
        assert!(matches!(
            resolve_entrypoint(root.path(), "", "/", None),
            Err(Error::NoEntrypoint)
        ));
    }

    #[test]
    fn dot_dot_cannot_leave_the_rootfs() {
        assert_eq!(join_guest("/app", "../../../etc/passwd"), "/etc/passwd");
    }

    #[test]
    fn symlink_out_of_rootfs_is_refused() {
        let root = rootfs_with(&[]);
        let outside = rootfs_with(&["/secret.wasm"]);
        std::os::unix::fs::symlink(
            outside.path().join("secret.wasm"),
            root.path().join("link.wasm"),
        )
        .unwrap();
        let err = resolve_entrypoint(root.path(), "/link.wasm", "/", None).unwrap_err();
        assert!(matches!(err, Error::EntrypointEscapesRootfs(_)), "{err}");
    }
}
