//! The node-level compiled-code cache: each payload is compiled once per node, and every
//! later start maps the compiled file instead (pods running the same module share its pages).
//!
//! - **Key**: sha256 of the payload bytes, its kind, and wasmtime's
//!   `precompile_compatibility_hash` (engine version and every code-affecting setting).
//! - **Files**: `<dir>/<key>.cwasm`, written to a temp file and renamed, so a reader never sees
//!   half a file; loaded with `deserialize_file` (mmap).
//! - **Concurrency**: a first start takes an exclusive `flock` on `<dir>/<key>.lock`, looks again,
//!   and only then compiles; concurrent first starts wait and reuse the result.
//! - **Damage**: a file wasmtime refuses (truncated, corrupt header, other engine) is logged,
//!   removed and rebuilt. wasmtime checks headers, metadata and the engine hash; a bit flip
//!   inside code is not detected (the directory must be writable only by root).
//! - **Size**: after each write, the least recently used files (by mtime, refreshed on every
//!   hit) are removed until the total is within the bound.

use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use log::{debug, info, warn};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::{Error, PayloadKind, Result, WasmSource};

/// Default cache directory on a node.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/wasmpod/cache";
/// Default bound on the cache's total size.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

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
    pub discarded: AtomicU64,
    pub evicted: AtomicU64,
}

/// A directory of compiled payloads shared by every shim on the node.
#[derive(Debug)]
pub struct ModuleCache {
    dir: PathBuf,
    max_bytes: u64,
    stats: CacheStats,
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

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Cache {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

impl ModuleCache {
    /// Opens (creating if needed) the cache at `dir`, bounded to `max_bytes`.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(ModuleCache {
            dir,
            max_bytes,
            stats: CacheStats::default(),
        })
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache key of `source` compiled by `engine`.
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

    /// Loads `source`'s compiled code, compiling and storing it on a miss.
    pub fn load_or_compile(&self, engine: &Engine, source: &WasmSource) -> Result<Compiled> {
        let key = Self::key(engine, source);
        let path = self.path_of(&key);
        if let Some(compiled) = self.try_load(engine, source, &path) {
            return Ok(compiled);
        }
        let lock_path = self.dir.join(format!("{key}.lock"));
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(&lock_path, std::io::Error::from(e)))?;
        // Someone may have compiled it while we waited for the lock.
        if let Some(compiled) = self.try_load(engine, source, &path) {
            return Ok(compiled);
        }
        let bytes = compile(engine, source)?;
        self.stats.compiles.fetch_add(1, Ordering::Relaxed);
        self.write_atomically(&path, &bytes)?;
        info!(
            "compiled {} ({} bytes of wasm) into {} ({} bytes)",
            source.name(),
            source.bytes().len(),
            path.display(),
            bytes.len()
        );
        self.evict_beyond_bound(&path);
        // SAFETY: the file was just written by this engine's `precompile_*`, renamed into place.
        let loaded = unsafe { deserialize(engine, source.kind(), &path) };
        loaded.map_err(|e| Error::Compile {
            name: source.name().to_owned(),
            message: format!("loading freshly compiled {}: {e:#}", path.display()),
        })
    }

    fn try_load(&self, engine: &Engine, source: &WasmSource, path: &Path) -> Option<Compiled> {
        if !path.exists() {
            return None;
        }
        // SAFETY: files here are written only by `write_atomically` with output of
        // `precompile_*`; wasmtime checks the header, metadata and engine compatibility,
        // and a file it refuses is thrown away below.
        match unsafe { deserialize(engine, source.kind(), path) } {
            Ok(compiled) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                touch(path);
                debug!("cache hit for {}: {}", source.name(), path.display());
                Some(compiled)
            }
            Err(e) => {
                self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "discarding unusable cache file {} for {}: {e:#}",
                    path.display(),
                    source.name()
                );
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut temp =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        temp.write_all(bytes)
            .and_then(|()| temp.as_file().sync_data())
            .map_err(|e| io_err(temp.path(), e))?;
        temp.persist(path).map_err(|e| io_err(path, e.error))?;
        Ok(())
    }

    /// Removes least recently used files (never `keep`) until the total fits the bound.
    fn evict_beyond_bound(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                let _ = std::fs::remove_file(path.with_extension("lock"));
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

fn compile(engine: &Engine, source: &WasmSource) -> Result<Vec<u8>> {
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
/// `path` must hold output of `precompile_*` (see `wasmtime::Module::deserialize_file`).
unsafe fn deserialize(
    engine: &Engine,
    kind: PayloadKind,
    path: &Path,
) -> wasmtime::Result<Compiled> {
    // SAFETY: forwarded to the caller.
    unsafe {
        Ok(match kind {
            PayloadKind::CoreModule => Compiled::Module(Module::deserialize_file(engine, path)?),
            PayloadKind::Component => {
                Compiled::Component(Component::deserialize_file(engine, path)?)
            }
        })
    }
}

/// Marks a file as just used (LRU order is mtime order).
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

    fn counts(cache: &ModuleCache) -> (u64, u64, u64) {
        let s = cache.stats();
        (
            s.compiles.load(Ordering::Relaxed),
            s.hits.load(Ordering::Relaxed),
            s.discarded.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn first_start_compiles_second_loads() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let src = source(wasmpod_fixtures::wat::HELLO);
        let first = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        first.load_or_compile(&engine, &src).unwrap();
        assert_eq!(counts(&first), (1, 0, 0));
        assert!(first.path_of(&ModuleCache::key(&engine, &src)).exists());
        // A new process (new cache handle) loads without compiling.
        let second = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        second.load_or_compile(&engine, &src).unwrap();
        assert_eq!(counts(&second), (0, 1, 0));
    }

    #[test]
    fn components_are_cached_too() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let src = source(wasmpod_fixtures::p2::HELLO);
        let cache = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert!(matches!(
            cache.load_or_compile(&engine, &src).unwrap(),
            Compiled::Component(_)
        ));
        cache.load_or_compile(&engine, &src).unwrap();
        assert_eq!(counts(&cache), (1, 1, 0));
    }

    #[test]
    fn corrupt_truncated_or_foreign_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let src = source(wasmpod_fixtures::wat::HELLO);
        let cache = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let path = cache.path_of(&ModuleCache::key(&engine, &src));
        cache.load_or_compile(&engine, &src).unwrap();
        let good = std::fs::read(&path).unwrap();
        for damaged in [
            good[..good.len() / 2].to_vec(),
            b"not an elf file at all".to_vec(),
            wasmpod_fixtures::wat::HELLO.to_vec(),
        ] {
            std::fs::write(&path, &damaged).unwrap();
            let before = counts(&cache);
            cache.load_or_compile(&engine, &src).unwrap();
            let after = counts(&cache);
            assert_eq!(after.0, before.0 + 1, "recompiled");
            assert_eq!(after.2, before.2 + 1, "discarded");
            assert_eq!(std::fs::read(&path).unwrap(), good);
        }
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
                s.spawn(move || cache.load_or_compile(engine, src).unwrap());
            }
        });
        let compiles: u64 = caches.iter().map(|c| counts(c).0).sum();
        let hits: u64 = caches.iter().map(|c| counts(c).1).sum();
        assert_eq!((compiles, hits), (1, 3));
    }

    #[test]
    fn eviction_keeps_the_total_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let probe = ModuleCache::open(dir.path(), u64::MAX).unwrap();
        let hello = source(wasmpod_fixtures::wat::HELLO);
        probe.load_or_compile(&engine, &hello).unwrap();
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
            cache.load_or_compile(&engine, src).unwrap();
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
        // The newest survives; the oldest went first.
        assert!(
            cache
                .path_of(&ModuleCache::key(&engine, &sources[3]))
                .exists()
        );
        assert!(
            !cache
                .path_of(&ModuleCache::key(&engine, &sources[0]))
                .exists()
        );
    }
}
