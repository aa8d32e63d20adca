//! The node-level compiled-code cache: each payload is compiled once per node, and every
//! later start maps the compiled file instead (pods running the same module share its pages).
//!
//! Compiled code is executed: a file here is code the node will run, so the cache must not be
//! a way to get other code run than the payload's.
//!
//! - **Key**: [`ModuleCache::key`], the one place it is derived: sha256 of the payload bytes,
//!   its kind, and wasmtime's `precompile_compatibility_hash` (engine version and every
//!   code-affecting setting).
//! - **Files**: `<dir>/<key>.cwasm` (wasmtime's output, mapped with `mmap`) and
//!   `<dir>/<key>.tag`, both written to a temp file and renamed.
//! - **Authentication**: the tag holds the sha256 of the compiled file, the file's identity
//!   once in place (device, inode, size, ctime) and an HMAC-SHA256 over those and the key,
//!   under a node key `<dir>/cache.key` (32 random bytes, mode 0600, made on first use; inside
//!   the directory because the directory's ownership is what is checked, whereas its parent
//!   may be anyone's, e.g. `/tmp`). A hit opens the file, checks the tag's HMAC and that the
//!   open file still has the recorded identity, and maps that same open file: no hashing of
//!   the code on the hot path. Writing the file changes its ctime, which no one without the
//!   clock can set back, so a modified file falls back to hashing its content against the
//!   authenticated sha256. A file whose tag is missing, forged (no key), made for another key
//!   (a swapped file) or whose content differs is never deserialized: it is recompiled and
//!   replaced under the lock.
//! - **Directory**: must be owned by this process's user (root for the shim) and not group-
//!   or world-writable, else [`ModuleCache::open`] fails and the caller runs without a cache.
//!   Files are created 0600.
//! - **Concurrency**: a first start takes an exclusive `flock` on `<dir>/<key>.lock`, looks
//!   again, compiles, stores, then removes the lock file while still holding it (a waiter
//!   that then gets the lock on the removed file sees it is no longer the one at the path and
//!   retries). Waiting is bounded by the [`CompileJob`]'s deadline.
//! - **Failures of the disk never fail a start**: a lock, temp file or rename that fails
//!   (read-only or full filesystem) leaves the code compiled in memory, which runs.
//! - **Leftovers**: temp files and unheld lock files older than [`SWEEP_AGE`] (left by killed
//!   writers) are removed after each compile.
//! - **Size**: after each write, the least recently used entries (by the tag's mtime,
//!   refreshed on every hit) are removed until the total is within the bound.

use std::fs::{File, Metadata, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::{Error, PayloadKind, Result, WasmSource};

/// Default cache directory on a node.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/wasmpod/cache";
/// Default bound on the cache's total size.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;
/// The node key's file name inside the cache directory.
pub const KEY_FILE: &str = "cache.key";
/// Temp files and unheld lock files older than this are leftovers of killed writers.
pub const SWEEP_AGE: Duration = Duration::from_secs(600);

const TEMP_PREFIX: &str = ".tmp-";
const TAG_MAGIC: &[u8; 8] = b"wpcache1";
/// magic, 5 identity fields, sha256 of the file, HMAC.
const TAG_LEN: usize = 8 + 5 * 8 + 32 + 32;
const LOCK_POLL: Duration = Duration::from_millis(10);

/// Compiled code, ready to link.
pub enum Compiled {
    Module(Module),
    Component(Component),
}

/// Counters of what the cache did (for tests, logs and benchmarks).
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub compiles: AtomicU64,
    /// Files refused (damaged, foreign, unauthenticated) and replaced.
    pub discarded: AtomicU64,
    pub evicted: AtomicU64,
    /// Compiled but not stored (disk read-only, full...): run from memory.
    pub unstored: AtomicU64,
    /// Leftover temp and lock files removed.
    pub swept: AtomicU64,
}

/// The node key; zeroed when dropped.
struct NodeKey([u8; 32]);

impl Drop for NodeKey {
    fn drop(&mut self) {
        for byte in self.0.iter_mut() {
            // SAFETY: a valid, aligned, exclusive reference to a byte of our own array; the
            // volatile write keeps the zeroing from being optimised away.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

/// A directory of compiled payloads shared by every shim on the node.
pub struct ModuleCache {
    dir: PathBuf,
    max_bytes: u64,
    key: NodeKey,
    stats: CacheStats,
}

impl std::fmt::Debug for ModuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// One attempt to get compiled code within a deadline. The caller may give up on it
/// ([`CompileJob::abandon`]) while a thread still compiles: nothing is stored afterwards, and
/// the lock file it holds is removed at once.
#[derive(Debug)]
pub struct CompileJob {
    timeout: Duration,
    deadline: Instant,
    state: Mutex<JobState>,
}

#[derive(Debug, Default)]
struct JobState {
    abandoned: bool,
    /// The lock file the compiling thread holds.
    held_lock: Option<PathBuf>,
}

impl CompileJob {
    pub fn new(timeout: Duration) -> Self {
        CompileJob {
            timeout,
            deadline: Instant::now() + timeout,
            state: Mutex::new(JobState::default()),
        }
    }

    /// Gives up: nothing more is written for this job; its lock file is removed.
    pub fn abandon(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.abandoned = true;
        if let Some(path) = state.held_lock.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The error of a job past its deadline.
    pub fn timed_out(&self, name: &str, while_doing: &'static str) -> Error {
        Error::CompileTimeout {
            name: name.to_owned(),
            timeout: self.timeout,
            while_doing,
        }
    }

    fn is_over(&self) -> bool {
        Instant::now() >= self.deadline || self.state().abandoned
    }

    fn state(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A held `<key>.lock`; removed (while still held) when dropped.
struct HeldLock<'a> {
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

/// Why a file in the cache was not used.
enum Miss {
    Absent,
    Refused(String),
}

/// Feeds `Hash` output into sha256, so the engine hash is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Cache {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// True when `path` names the same file as `file` is open on.
fn same_file(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The identity of a file as the tag records it: a write changes the ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Identity {
    fn of(meta: &Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    fn to_bytes(self) -> [u8; 40] {
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
fn check_private_dir(dir: &Path) -> Result<()> {
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
    fn load_or_create(dir: &Path) -> Result<Self> {
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
    /// Opens (creating if needed, mode 0700) the cache at `dir`, bounded to `max_bytes`.
    /// Fails when the directory is not private to this user or the node key cannot be read
    /// or made: the caller then compiles in memory.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Self> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_err(&dir, e))?;
        check_private_dir(&dir)?;
        let key = NodeKey::load_or_create(&dir)?;
        Ok(ModuleCache {
            dir,
            max_bytes,
            key,
            stats: CacheStats::default(),
        })
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache key of `source` compiled by `engine`: the only place it is derived.
    pub fn key(engine: &Engine, source: &WasmSource) -> String {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.0.update(source.digest());
        hasher.0.update(match source.kind() {
            PayloadKind::CoreModule => b"module".as_slice(),
            PayloadKind::Component => b"component".as_slice(),
        });
        hex::encode(hasher.0.finalize())
    }

    /// The path of a key's compiled file.
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    /// The path of a key's tag (its authentication).
    pub fn tag_path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.tag"))
    }

    fn lock_path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.lock"))
    }

    /// Loads `source`'s compiled code when the cache holds an authentic copy; never compiles.
    /// Cheap: this is every start's path after the first.
    pub fn load(&self, engine: &Engine, source: &WasmSource) -> Option<Compiled> {
        let key = Self::key(engine, source);
        let compiled = self.try_load(engine, source, &key).ok()?;
        Some(self.hit(&key, source, compiled))
    }

    /// Loads `source`'s compiled code, compiling and storing it on a miss; gives up with
    /// [`Error::CompileTimeout`] when `job`'s deadline passes while waiting for the lock.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        source: &WasmSource,
        job: &CompileJob,
    ) -> Result<Compiled> {
        let key = Self::key(engine, source);
        if let Ok(compiled) = self.try_load(engine, source, &key) {
            return Ok(self.hit(&key, source, compiled));
        }
        let lock = self.lock(&key, source, job)?;
        if lock.is_some() {
            // Someone may have compiled it while we waited; a refused file is replaced.
            match self.try_load(engine, source, &key) {
                Ok(compiled) => return Ok(self.hit(&key, source, compiled)),
                Err(Miss::Absent) => {}
                Err(Miss::Refused(why)) => {
                    self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        "discarding cache file {} for {}: {why}; recompiling",
                        self.path_of(&key).display(),
                        source.name()
                    );
                    let _ = std::fs::remove_file(self.tag_path_of(&key));
                    let _ = std::fs::remove_file(self.path_of(&key));
                }
            }
        }
        let bytes = compile(engine, source)?;
        self.stats.compiles.fetch_add(1, Ordering::Relaxed);
        let stored = match &lock {
            Some(_) => {
                // Held across the write, so an abandoning caller waits for it to finish
                // rather than leave half a temp file.
                let state = job.state();
                if state.abandoned {
                    return Err(job.timed_out(source.name(), "compiling"));
                }
                let stored = self.store(&key, &bytes);
                drop(state);
                stored
            }
            None => Err(io_err(&self.lock_path_of(&key), "no lock")),
        };
        drop(lock);
        match stored {
            Ok(()) => {
                info!(
                    "compiled {} ({} bytes of wasm) into {} ({} bytes)",
                    source.name(),
                    source.bytes().len(),
                    self.path_of(&key).display(),
                    bytes.len()
                );
                self.sweep();
                self.evict_beyond_bound(&key);
                if let Ok(compiled) = self.try_load(engine, source, &key) {
                    return Ok(compiled);
                }
            }
            Err(e) => {
                self.stats.unstored.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "compiled {} but cannot store it in the cache ({e}); running it from memory",
                    source.name()
                );
            }
        }
        // SAFETY: `bytes` is this engine's own `precompile_*` output, never written anywhere.
        let loaded = unsafe { deserialize_bytes(engine, source.kind(), &bytes) };
        loaded.map_err(|e| Error::Compile {
            name: source.name().to_owned(),
            message: format!("loading freshly compiled code: {e:#}"),
        })
    }

    /// Takes `<key>.lock`, waiting within `job`'s deadline; `Ok(None)` when no lock can be
    /// made (read-only directory): the caller compiles without storing.
    fn lock<'j>(
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

    /// Opens `key`'s compiled file and authenticates it (see the module docs).
    fn open_verified(&self, key: &str) -> std::result::Result<File, Miss> {
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
    fn mac(&self, key: &str, header: &[u8]) -> [u8; 32] {
        crate::hmac::hmac_sha256(&self.key.0, &[key.as_bytes(), header])
    }

    /// Counts a hit and marks the entry as just used.
    fn hit(&self, key: &str, source: &WasmSource, compiled: Compiled) -> Compiled {
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        touch(&self.tag_path_of(key));
        debug!("cache hit for {}: {key}", source.name());
        compiled
    }

    fn try_load(
        &self,
        engine: &Engine,
        source: &WasmSource,
        key: &str,
    ) -> std::result::Result<Compiled, Miss> {
        let file = self.open_verified(key).inspect_err(|miss| {
            if let Miss::Refused(why) = miss {
                debug!("cache file for {} refused: {why}", source.name());
            }
        })?;
        // SAFETY: `file` is authenticated above as this node's `precompile_*` output for
        // exactly this key (HMAC under a key only root reads), and the directory is writable
        // by root alone; the open file itself is mapped, not the path again.
        match unsafe { deserialize_file(engine, source.kind(), file) } {
            Ok(compiled) => Ok(compiled),
            Err(e) => Err(Miss::Refused(format!("wasmtime refused it: {e:#}"))),
        }
    }

    /// Writes the compiled file, then its tag, each to a temp file renamed into place.
    fn store(&self, key: &str, bytes: &[u8]) -> Result<()> {
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

    /// Removes temp files and unheld lock files older than [`SWEEP_AGE`]: a live writer keeps
    /// its temp file's mtime fresh and holds its lock.
    fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_temp = name.starts_with(TEMP_PREFIX);
            let is_lock = name.ends_with(".lock");
            if !is_temp && !is_lock {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age >= SWEEP_AGE));
            if !old {
                continue;
            }
            let path = entry.path();
            if is_lock {
                let Ok(file) = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                else {
                    continue;
                };
                // Held: a live compile (deadlines may be long). Not held: a dead writer's.
                let Ok(flock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                    continue;
                };
                if same_file(&path, &flock) && std::fs::remove_file(&path).is_ok() {
                    self.stats.swept.fetch_add(1, Ordering::Relaxed);
                }
            } else if std::fs::remove_file(&path).is_ok() {
                self.stats.swept.fetch_add(1, Ordering::Relaxed);
            }
            info!("removed leftover cache file {}", path.display());
        }
    }

    /// Removes least recently used entries (never `keep`) until the total fits the bound.
    fn evict_beyond_bound(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, String)> = entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                if path.extension()? != "cwasm" {
                    return None;
                }
                let key = path.file_stem()?.to_str()?.to_owned();
                let len = e.metadata().ok()?.len();
                // Last use is the tag's mtime (refreshed on every hit).
                let used = std::fs::metadata(self.tag_path_of(&key))
                    .or_else(|_| e.metadata())
                    .ok()?
                    .modified()
                    .ok()?;
                Some((used, len, key))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, key) in files {
            if total <= self.max_bytes {
                break;
            }
            if key == keep {
                continue;
            }
            let path = self.path_of(&key);
            if std::fs::remove_file(&path).is_ok() {
                let _ = std::fs::remove_file(self.tag_path_of(&key));
                total -= len;
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                info!(
                    "evicted {} ({len} bytes) from the module cache",
                    path.display()
                );
            }
        }
    }
}

/// Compiles `source` to wasmtime's serialized form.
pub fn compile(engine: &Engine, source: &WasmSource) -> Result<Vec<u8>> {
    let compiled = match source.kind() {
        PayloadKind::CoreModule => engine.precompile_module(source.bytes()),
        PayloadKind::Component => engine.precompile_component(source.bytes()),
    };
    compiled.map_err(|e| Error::Compile {
        name: source.name().to_owned(),
        message: format!("{e:#}"),
    })
}

/// # Safety
/// `file` must hold output of `precompile_*` (see `wasmtime::Module::deserialize_file`).
unsafe fn deserialize_file(
    engine: &Engine,
    kind: PayloadKind,
    file: File,
) -> wasmtime::Result<Compiled> {
    // SAFETY: forwarded to the caller.
    unsafe {
        Ok(match kind {
            PayloadKind::CoreModule => {
                Compiled::Module(Module::deserialize_open_file(engine, file)?)
            }
            PayloadKind::Component => {
                // No `deserialize_open_file` for components: map the same open file through
                // its /proc/self/fd link, so the path cannot be swapped under us.
                let path = format!("/proc/self/fd/{}", file.as_raw_fd());
                let compiled = Component::deserialize_file(engine, &path);
                drop(file);
                Compiled::Component(compiled?)
            }
        })
    }
}

/// # Safety
/// `bytes` must be output of `precompile_*` (see `wasmtime::Module::deserialize`).
unsafe fn deserialize_bytes(
    engine: &Engine,
    kind: PayloadKind,
    bytes: &[u8],
) -> wasmtime::Result<Compiled> {
    // SAFETY: forwarded to the caller.
    unsafe {
        Ok(match kind {
            PayloadKind::CoreModule => Compiled::Module(Module::deserialize(engine, bytes)?),
            PayloadKind::Component => Compiled::Component(Component::deserialize(engine, bytes)?),
        })
    }
}

/// Marks an entry as just used (LRU order is its tag's mtime order).
fn touch(path: &Path) {
    if let Ok(file) = File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineSettings;

    fn engine() -> Engine {
        EngineSettings::commands().build_engine().unwrap()
    }

    fn source(bytes: &[u8]) -> WasmSource {
        WasmSource::from_bytes("/t.wasm", bytes.to_vec()).unwrap()
    }

    fn job() -> CompileJob {
        CompileJob::new(Duration::from_secs(600))
    }

    fn counts(cache: &ModuleCache) -> (u64, u64, u64) {
        let s = cache.stats();
        (
            s.compiles.load(Ordering::Relaxed),
            s.hits.load(Ordering::Relaxed),
            s.discarded.load(Ordering::Relaxed),
        )
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn first_start_compiles_second_loads() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let src = source(wasmpod_fixtures::wat::HELLO);
        let first = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert!(first.load(&engine, &src).is_none());
        first.load_or_compile(&engine, &src, &job()).unwrap();
        assert_eq!(counts(&first), (1, 0, 0));
        let key = ModuleCache::key(&engine, &src);
        // Compiled file, its tag and the node key; the lock file went with the compile.
        assert_eq!(
            names(dir.path()),
            [
                format!("{key}.cwasm"),
                format!("{key}.tag"),
                KEY_FILE.to_owned()
            ]
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(KEY_FILE)), 0o600);
        assert_eq!(mode(&first.path_of(&key)), 0o600);
        // A new process (new cache handle) loads without compiling.
        let second = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert!(second.load(&engine, &src).is_some());
        assert_eq!(counts(&second), (0, 1, 0));
    }

    #[test]
    fn a_new_directory_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("a/cache");
        ModuleCache::open(&cache_dir, DEFAULT_MAX_BYTES).unwrap();
        let mode = std::fs::metadata(&cache_dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn components_are_cached_too() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let src = source(wasmpod_fixtures::p2::HELLO);
        let cache = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert!(matches!(
            cache.load_or_compile(&engine, &src, &job()).unwrap(),
            Compiled::Component(_)
        ));
        assert!(matches!(
            cache.load(&engine, &src),
            Some(Compiled::Component(_))
        ));
        assert_eq!(counts(&cache).0, 1);
    }

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

    #[test]
    fn stale_temp_and_lock_files_are_swept_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let old = SystemTime::now() - SWEEP_AGE - Duration::from_secs(60);
        let make = |name: &str, age: SystemTime| {
            let path = dir.path().join(name);
            let file = File::create(&path).unwrap();
            file.set_modified(age).unwrap();
            path
        };
        let dead_temp = make(".tmp-dead", old);
        let dead_lock = make("dead.lock", old);
        let live_temp = make(".tmp-live", SystemTime::now());
        let held_lock = make("held.lock", old);
        let _held = Flock::lock(File::open(&held_lock).unwrap(), FlockArg::LockExclusive).unwrap();
        let unrelated = make("notes.txt", old);
        cache
            .load_or_compile(&engine, &source(wasmpod_fixtures::wat::HELLO), &job())
            .unwrap();
        assert!(!dead_temp.exists() && !dead_lock.exists());
        assert!(live_temp.exists() && held_lock.exists() && unrelated.exists());
        assert_eq!(cache.stats().swept.load(Ordering::Relaxed), 2);
    }

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

    #[test]
    fn eviction_keeps_the_total_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let probe = ModuleCache::open(dir.path(), u64::MAX).unwrap();
        let hello = source(wasmpod_fixtures::wat::HELLO);
        probe.load_or_compile(&engine, &hello, &job()).unwrap();
        let one = std::fs::metadata(probe.path_of(&ModuleCache::key(&engine, &hello)))
            .unwrap()
            .len();
        std::fs::remove_dir_all(dir.path()).unwrap();
        // Room for about two small modules.
        let cache = ModuleCache::open(dir.path(), one * 2 + one / 2).unwrap();
        let sources: Vec<WasmSource> = [
            wasmpod_fixtures::wat::HELLO,
            wasmpod_fixtures::wat::EXIT_42,
            wasmpod_fixtures::wat::TRAP,
            wasmpod_fixtures::wat::LOOP_FOREVER,
        ]
        .iter()
        .map(|b| source(b))
        .collect();
        for src in &sources {
            cache.load_or_compile(&engine, src, &job()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(total <= one * 2 + one / 2, "total {total}, one {one}");
        assert!(cache.stats().evicted.load(Ordering::Relaxed) >= 1);
        // The newest survives; the oldest went first, with its tag.
        let newest = ModuleCache::key(&engine, &sources[3]);
        let oldest = ModuleCache::key(&engine, &sources[0]);
        assert!(cache.path_of(&newest).exists());
        assert!(!cache.path_of(&oldest).exists());
        assert!(!cache.tag_path_of(&oldest).exists());
    }
}
