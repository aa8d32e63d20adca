//! Keeping the cache's directory bounded and clean: least recently used entries are evicted
//! beyond the size bound, and leftovers of killed writers (old temp files, unheld lock files)
//! are removed.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use log::info;
use nix::fcntl::{Flock, FlockArg};

use super::auth::same_file;
use super::{ModuleCache, SWEEP_AGE, TEMP_PREFIX};

impl ModuleCache {
    /// its temp file's mtime fresh and holds its lock.
    pub(super) fn sweep(&self) {
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
    pub(super) fn evict_beyond_bound(&self, keep: &str) {
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

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::cache::test_support::*;

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
