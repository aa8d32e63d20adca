//! Authentication of the cache's files: the node key (`cache.key`), the tag of each compiled
//! file (its identity, sha256 and an HMAC under the node key), the check that the directory
//! is private, and file identity checks (the same open file as at a path).
//! A file that does not authenticate is never deserialized (see the parent module's docs).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{KEY_FILE, Miss, ModuleCache, TEMP_PREFIX, euid, io_err};
use crate::Result;

pub(super) const TAG_MAGIC: &[u8; 8] = b"wpcache1";
/// magic, 5 identity fields, sha256 of the file, HMAC.
pub(super) const TAG_LEN: usize = 8 + 5 * 8 + 32 + 32;

/// The node key; zeroed when dropped.
pub(super) struct NodeKey([u8; 32]);

impl Drop for NodeKey {
    fn drop(&mut self) {
        for byte in self.0.iter_mut() {
            // SAFETY: a valid, aligned, exclusive reference to a byte of our own array; the
            // volatile write keeps the zeroing from being optimised away.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

/// True when `path` names the same file as `file` is open on.
pub(super) fn same_file(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The identity of a file as the tag records it: a write changes the ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Identity {
    pub(super) fn of(meta: &Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    pub(super) fn to_bytes(self) -> [u8; 40] {
        let mut out = [0u8; 40];
        for (chunk, value) in out.chunks_exact_mut(8).zip([
            self.dev,
            self.ino,
            self.size,
            self.ctime as u64,
            self.ctime_nsec as u64,
        ]) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let field =
            |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Identity {
            dev: field(0),
            ino: field(1),
            size: field(2),
            ctime: field(3) as i64,
            ctime_nsec: field(4) as i64,
        }
    }
}

/// The directory must be ours alone to write: owned by this process's user, not group- or
/// world-writable.
pub(super) fn check_private_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| io_err(dir, e))?;
    if !meta.is_dir() {
        return Err(io_err(dir, "not a directory"));
    }
    if meta.uid() != euid() {
        return Err(io_err(
            dir,
            format!(
                "owned by uid {}, not by uid {} (the shim's user): compiled code there could be anyone's",
                meta.uid(),
                euid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(io_err(
            dir,
            format!(
                "writable by group or others (mode {:o}): compiled code there could be anyone's",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

impl NodeKey {
    /// Reads `<dir>/cache.key`, making it (32 random bytes, mode 0600) on first use.
    pub(super) fn load_or_create(dir: &Path) -> Result<Self> {
        let path = dir.join(KEY_FILE);
        for _ in 0..3 {
            match Self::read(&path) {
                Ok(key) => return Ok(key),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
            let mut temp = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .tempfile_in(dir)
                .map_err(|e| io_err(dir, e))?;
            let mut key = NodeKey([0; 32]);
            fill_random(&mut key.0).map_err(|e| io_err(&path, e))?;
            temp.write_all(&key.0)
                .and_then(|()| temp.as_file().sync_all())
                .map_err(|e| io_err(temp.path(), e))?;
            // A link never replaces: of two first starts, one key wins and both read it.
            match std::fs::hard_link(temp.path(), &path) {
                Ok(()) => return Ok(key),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        Err(io_err(&path, "could not be read or created"))
    }

    fn read(path: &Path) -> std::io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.uid() != euid() || meta.mode() & 0o077 != 0 || meta.len() != 32 {
            return Err(std::io::Error::other(format!(
                "must be a 32-byte regular file owned by uid {} and readable by it alone (is uid {}, mode {:o}, {} bytes)",
                euid(),
                meta.uid(),
                meta.mode() & 0o7777,
                meta.len()
            )));
        }
        let mut key = NodeKey([0; 32]);
        file.read_exact(&mut key.0)?;
        Ok(key)
    }
}

fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: writes at most `rest.len()` bytes into `rest`, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        filled += n as usize;
    }
    Ok(())
}

fn sha256_of(file: &File) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    std::io::copy(&mut reader, &mut hasher)?;
    Ok(hasher.finalize().into())
}

impl ModuleCache {
    /// Opens `key`'s compiled file and authenticates it (see the module docs).
    pub(super) fn open_verified(&self, key: &str) -> std::result::Result<File, Miss> {
        let path = self.path_of(key);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(e) => return Err(Miss::Refused(format!("opening: {e}"))),
        };
        let meta = file
            .metadata()
            .map_err(|e| Miss::Refused(format!("stat: {e}")))?;
        if !meta.is_file() || meta.uid() != euid() || meta.mode() & 0o022 != 0 {
            return Err(Miss::Refused(format!(
                "not a private regular file (uid {}, mode {:o})",
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
        let tag = match std::fs::read(self.tag_path_of(key)) {
            Ok(tag) => tag,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Miss::Refused("no tag".to_owned()));
            }
            Err(e) => return Err(Miss::Refused(format!("reading its tag: {e}"))),
        };
        if tag.len() != TAG_LEN || &tag[..8] != TAG_MAGIC {
            return Err(Miss::Refused("malformed tag".to_owned()));
        }
        let (header, mac) = tag.split_at(TAG_LEN - 32);
        if !crate::hmac::equal(&self.mac(key, header), mac) {
            return Err(Miss::Refused(
                "tag does not authenticate (damaged, foreign, or made for another module)"
                    .to_owned(),
            ));
        }
        let recorded = Identity::from_bytes(&header[8..48]);
        if Identity::of(&meta) != recorded {
            // Changed since it was written (or copied): only its content can vouch for it.
            let digest = sha256_of(&file).map_err(|e| Miss::Refused(format!("reading: {e}")))?;
            if digest.as_slice() != &header[48..80] {
                return Err(Miss::Refused(
                    "content differs from what was compiled".to_owned(),
                ));
            }
        }
        Ok(file)
    }

    /// HMAC-SHA256 under the node key of a cache key and a tag header.
    pub(super) fn mac(&self, key: &str, header: &[u8]) -> [u8; 32] {
        crate::hmac::hmac_sha256(&self.key.0, &[key.as_bytes(), header])
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::cache::test_support::*;

    #[test]
    fn damaged_files_and_tags_are_recompiled_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let src = source(wasmpod_fixtures::wat::HELLO);
        let cache = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let key = ModuleCache::key(&engine, &src);
        let (path, tag) = (cache.path_of(&key), cache.tag_path_of(&key));
        cache.load_or_compile(&engine, &src, &job()).unwrap();
        let good = std::fs::read(&path).unwrap();
        let good_tag = std::fs::read(&tag).unwrap();
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x01; // same size, one bit of code
        let mut bad_tag = good_tag.clone();
        bad_tag[20] ^= 0x01;
        for (file, tag_bytes) in [
            (flipped, good_tag.clone()),
            (good[..good.len() / 2].to_vec(), good_tag.clone()),
            (b"not an elf file at all".to_vec(), good_tag.clone()),
            (good.clone(), bad_tag),
            (good.clone(), Vec::new()),
        ] {
            std::fs::write(&path, &file).unwrap();
            std::fs::write(&tag, &tag_bytes).unwrap();
            assert!(
                cache.load(&engine, &src).is_none(),
                "refused before deserialize"
            );
            let before = counts(&cache);
            cache.load_or_compile(&engine, &src, &job()).unwrap();
            let after = counts(&cache);
            assert_eq!(after.0, before.0 + 1, "recompiled");
            assert_eq!(after.2, before.2 + 1, "discarded");
            assert_eq!(std::fs::read(&path).unwrap(), good);
            assert!(cache.load(&engine, &src).is_some());
        }
    }

    #[test]
    fn a_rewritten_file_with_the_same_bytes_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let src = source(wasmpod_fixtures::wat::HELLO);
        let cache = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let path = cache.path_of(&ModuleCache::key(&engine, &src));
        cache.load_or_compile(&engine, &src, &job()).unwrap();
        // Another inode and ctime, the same content: vouched for by the recorded digest.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.load(&engine, &src).is_some());
    }

    #[test]
    fn another_modules_file_under_this_key_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let (a, b) = (
            source(wasmpod_fixtures::wat::HELLO),
            source(wasmpod_fixtures::wat::EXIT_42),
        );
        let (ka, kb) = (ModuleCache::key(&engine, &a), ModuleCache::key(&engine, &b));
        cache.load_or_compile(&engine, &a, &job()).unwrap();
        cache.load_or_compile(&engine, &b, &job()).unwrap();
        // B's file and tag renamed over A's: B's tag names B's key.
        std::fs::rename(cache.path_of(&kb), cache.path_of(&ka)).unwrap();
        std::fs::rename(cache.tag_path_of(&kb), cache.tag_path_of(&ka)).unwrap();
        assert!(cache.load(&engine, &a).is_none());
        // B's file alone under A's tag: identity and digest differ.
        cache.load_or_compile(&engine, &b, &job()).unwrap();
        cache.load_or_compile(&engine, &a, &job()).unwrap();
        std::fs::copy(cache.path_of(&kb), cache.path_of(&ka)).unwrap();
        assert!(cache.load(&engine, &a).is_none());
        // A tag made under another node key does not authenticate.
        let other = tempfile::tempdir().unwrap();
        let foreign = ModuleCache::open(other.path(), DEFAULT_MAX_BYTES).unwrap();
        foreign.load_or_compile(&engine, &a, &job()).unwrap();
        std::fs::copy(foreign.path_of(&ka), cache.path_of(&ka)).unwrap();
        std::fs::copy(foreign.tag_path_of(&ka), cache.tag_path_of(&ka)).unwrap();
        assert!(cache.load(&engine, &a).is_none());
    }

    #[test]
    fn group_or_world_writable_directories_and_loose_keys_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o777, 0o775, 0o757] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap_err();
            assert!(
                err.to_string().contains("writable by group or others"),
                "{err}"
            );
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let key = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap_err();
        assert!(err.to_string().contains("readable by it alone"), "{err}");
    }

    #[test]
    fn a_directory_owned_by_another_user_is_refused() {
        if euid() != 0 {
            panic!(
                "needs root (chown to another uid); run as root: cargo test -p wasmpod-runtime-core --lib cache"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(4242), None).unwrap();
        let err = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap_err();
        assert!(err.to_string().contains("owned by uid 4242"), "{err}");
        std::os::unix::fs::chown(dir.path(), Some(0), None).unwrap();
        let cache = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        // A compiled file owned by someone else is not loaded either.
        let engine = engine();
        let src = source(wasmpod_fixtures::wat::HELLO);
        cache.load_or_compile(&engine, &src, &job()).unwrap();
        let path = cache.path_of(&ModuleCache::key(&engine, &src));
        std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        assert!(cache.load(&engine, &src).is_none());
    }
}
