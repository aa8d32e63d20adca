//! Writing into the cache: the per-key lock (`<key>.lock`, an exclusive `flock` bounded by
//! the job's deadline, removed while still held) and the atomic write of the compiled file
//! and its tag (temp file, then rename).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::debug;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use super::auth::{Identity, TAG_LEN, TAG_MAGIC, same_file};
use super::{CompileJob, ModuleCache, TEMP_PREFIX, io_err};
use crate::{Result, WasmSource};

const LOCK_POLL: Duration = Duration::from_millis(10);

/// A held `<key>.lock`; removed (while still held) when dropped.
pub(super) struct HeldLock<'a> {
    path: PathBuf,
    flock: Flock<File>,
    job: &'a CompileJob,
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        let mut state = self.job.state();
        // Unless the job was abandoned (which removed it already, and the path may now be
        // another start's lock), remove our lock file before the flock is released.
        if state.held_lock.take().is_some() && same_file(&self.path, &self.flock) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ModuleCache {
    /// Takes `<key>.lock`, waiting within `job`'s deadline; `Ok(None)` when no lock can be
    /// made (read-only directory): the caller compiles without storing.
    pub(super) fn lock<'j>(
        &self,
        key: &str,
        source: &WasmSource,
        job: &'j CompileJob,
    ) -> Result<Option<HeldLock<'j>>> {
        let path = self.lock_path_of(key);
        loop {
            if job.is_over() {
                return Err(job.timed_out(source.name(), "compiling"));
            }
            let file = match OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(file) => file,
                Err(e) => {
                    debug!("cannot lock {}: {e}", path.display());
                    return Ok(None);
                }
            };
            let mut file = file;
            let flock = loop {
                match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(flock) => break flock,
                    Err((f, Errno::EWOULDBLOCK)) => {
                        if job.is_over() {
                            return Err(job.timed_out(
                                source.name(),
                                "waiting for another start compiling the same module",
                            ));
                        }
                        file = f;
                        std::thread::sleep(LOCK_POLL);
                    }
                    Err((_, e)) => {
                        debug!("cannot lock {}: {e}", path.display());
                        return Ok(None);
                    }
                }
            };
            // The previous holder removes the file before releasing it: only the file still
            // at the path is the lock.
            if !same_file(&path, &flock) {
                continue;
            }
            let mut state = job.state();
            if state.abandoned {
                let _ = std::fs::remove_file(&path);
                return Err(job.timed_out(source.name(), "compiling"));
            }
            state.held_lock = Some(path.clone());
            drop(state);
            return Ok(Some(HeldLock { path, flock, job }));
        }
    }

    pub(super) fn store(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path_of(key);
        let file = self.write_atomically(&path, bytes)?;
        // The identity once in place (the rename changed the ctime).
        let meta = file.metadata().map_err(|e| io_err(&path, e))?;
        let mut tag = Vec::with_capacity(TAG_LEN);
        tag.extend_from_slice(TAG_MAGIC);
        tag.extend_from_slice(&Identity::of(&meta).to_bytes());
        tag.extend_from_slice(&Sha256::digest(bytes));
        let mac = self.mac(key, &tag);
        tag.extend_from_slice(&mac);
        self.write_atomically(&self.tag_path_of(key), &tag)?;
        Ok(())
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<File> {
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(|e| io_err(&self.dir, e))?;
        temp.write_all(bytes)
            .and_then(|()| temp.as_file().sync_data())
            .map_err(|e| io_err(temp.path(), e))?;
        temp.persist(path).map_err(|e| io_err(path, e.error))
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::cache::test_support::*;

    #[test]
    fn a_lock_wait_is_bounded_by_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let src = source(wasmpod_fixtures::wat::HELLO);
        let cache = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let lock = cache.lock_path_of(&ModuleCache::key(&engine, &src));
        let held = Flock::lock(File::create(&lock).unwrap(), FlockArg::LockExclusive).unwrap();
        let began = Instant::now();
        let err = match cache.load_or_compile(
            &engine,
            &src,
            &CompileJob::new(Duration::from_millis(200)),
        ) {
            Err(e) => e,
            Ok(_) => panic!("compiled while another start held the lock"),
        };
        assert!(began.elapsed() >= Duration::from_millis(200));
        assert!(matches!(err, Error::CompileTimeout { .. }), "{err}");
        assert!(
            err.to_string().contains("waiting for another start"),
            "{err}"
        );
        // The holder finishes (removing its lock file): the next start compiles.
        std::fs::remove_file(&lock).unwrap();
        drop(held);
        cache.load_or_compile(&engine, &src, &job()).unwrap();
        assert!(!lock.exists());
    }

    #[test]
    fn concurrent_first_starts_compile_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let src = source(wasmpod_fixtures::p2::HELLO);
        let caches: Vec<ModuleCache> = (0..4)
            .map(|_| ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap())
            .collect();
        std::thread::scope(|s| {
            for cache in &caches {
                let (engine, src) = (&engine, &src);
                s.spawn(move || cache.load_or_compile(engine, src, &job()).unwrap());
            }
        });
        let compiles: u64 = caches.iter().map(|c| counts(c).0).sum();
        let hits: u64 = caches.iter().map(|c| counts(c).1).sum();
        assert_eq!((compiles, hits), (1, 3));
        assert!(!names(dir.path()).iter().any(|n| n.ends_with(".lock")));
    }
}
