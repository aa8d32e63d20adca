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
//!
//! This file holds the public API (open, load, load_or_compile, the key) and compiling;
//! [`auth`] the node key, tags and file checks, [`store`] the lock and atomic writes,
//! [`sweep`] eviction and leftover removal.

mod auth;
mod store;
mod sweep;

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::{Error, PayloadKind, Result, WasmSource};

use auth::{NodeKey, check_private_dir};

/// Default cache directory on a node.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/wasmpod/cache";
/// Default bound on the cache's total size.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;
/// The node key's file name inside the cache directory.
pub const KEY_FILE: &str = "cache.key";
/// Temp files and unheld lock files older than this are leftovers of killed writers.
pub const SWEEP_AGE: Duration = Duration::from_secs(600);

const TEMP_PREFIX: &str = ".tmp-";

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
mod test_support {
    use super::*;
    use crate::EngineSettings;

    pub(super) fn engine() -> Engine {
        EngineSettings::commands().build_engine().unwrap()
    }

    pub(super) fn source(bytes: &[u8]) -> WasmSource {
        WasmSource::from_bytes("/t.wasm", bytes.to_vec()).unwrap()
    }

    pub(super) fn job() -> CompileJob {
        CompileJob::new(Duration::from_secs(600))
    }

    pub(super) fn counts(cache: &ModuleCache) -> (u64, u64, u64) {
        let s = cache.stats();
        (
            s.compiles.load(Ordering::Relaxed),
            s.hits.load(Ordering::Relaxed),
            s.discarded.load(Ordering::Relaxed),
        )
    }

    pub(super) fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::test_support::*;
    use std::os::unix::fs::MetadataExt;

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
}
