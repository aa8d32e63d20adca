//! The names and paths an image is made of: `REPOSITORY[:TAG]` image names, absolute paths
//! of layer entries, and OCI architecture names.

use std::path::{Component, PathBuf};

use super::ImageError;

/// The OCI architecture name of a Rust `std::env::consts::ARCH` value.
pub fn oci_arch(rust_arch: &str) -> Option<&'static str> {
    Some(match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        _ => return None,
    })
}

/// Splits `repo[:tag]` into repository and tag (default `latest`).
pub(super) fn split_name(name: &str) -> Result<(&str, &str), ImageError> {
    let invalid = || ImageError::InvalidName(name.to_owned());
    if name.is_empty() || name.contains('@') {
        return Err(invalid());
    }
    let last_component = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_component..].rfind(':') {
        Some(i) => {
            let (repo, tag) = name.split_at(last_component + i);
            let tag = &tag[1..];
            if repo.is_empty() || tag.is_empty() {
                return Err(invalid());
            }
            Ok((repo, tag))
        }
        None => Ok((name, "latest")),
    }
}

/// `/a/b` → `a/b`, refusing relative paths, `..` and the root itself.
pub(super) fn relative_path(path: &str) -> Result<String, ImageError> {
    let invalid = || ImageError::InvalidPath(path.to_owned());
    let path_buf = PathBuf::from(path);
    if !path_buf.is_absolute() {
        return Err(invalid());
    }
    let mut parts = Vec::new();
    for component in path_buf.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(invalid)?),
            Component::ParentDir | Component::Prefix(_) => return Err(invalid()),
        }
    }
    if parts.is_empty() {
        return Err(invalid());
    }
    Ok(parts.join("/"))
}
