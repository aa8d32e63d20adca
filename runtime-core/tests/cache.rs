//! The compiled-module cache through the public API: it must never run the wrong code, never
//! fail a start, and leave nothing behind when a compile is given up.
//!
//! Runs as root for the ownership and read-only filesystem cases (a tmpfs mounted and
//! remounted read-only); each says so when it is not.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmpod_fixtures::wat;
use wasmpod_runtime_core::cache::{DEFAULT_MAX_BYTES, KEY_FILE};
use wasmpod_runtime_core::{
    EngineSettings, Error, ExitStatus, ModuleCache, Runtime, WasiConfig, WasmSource,
};

fn source(bytes: &[u8]) -> WasmSource {
    WasmSource::from_bytes("/test.wasm", bytes.to_vec()).unwrap()
}

fn runtime(cache: Option<ModuleCache>) -> Runtime {
    let runtime = Runtime::new(&EngineSettings::commands()).unwrap();
    match cache {
        Some(cache) => runtime.with_cache(cache),
        None => runtime,
    }
}

/// Prepares and runs `bytes` on `runtime`; returns the status and stdout.
fn run(runtime: &Runtime, bytes: &[u8]) -> (ExitStatus, String) {
    let prepared = runtime.prepare(&source(bytes)).unwrap();
    let mut stdout = tempfile::tempfile().unwrap();
    let config = WasiConfig {
        args: vec!["/test.wasm".into()],
        stdout: Some(stdout.try_clone().unwrap()),
        ..Default::default()
    };
    let status = prepared.run(config, &runtime.interrupter()).unwrap();
    let mut out = String::new();
    stdout.rewind().unwrap();
    stdout.read_to_string(&mut out).unwrap();
    (status, out)
}

fn hello_runs(runtime: &Runtime) {
    assert_eq!(
        run(runtime, wat::HELLO),
        (ExitStatus::Exited(0), "hello from wat\n".to_owned())
    );
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

fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("needs root ({what}); run as root: cargo test -p wasmpod-runtime-core --test cache");
    }
}

#[test]
fn a_swapped_compiled_file_is_not_run_the_right_module_is() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineSettings::commands().build_engine().unwrap();
    let (hello, exit42) = (
        ModuleCache::key(&engine, &source(wat::HELLO)),
        ModuleCache::key(&engine, &source(wat::EXIT_42)),
    );
    let first = runtime(Some(
        ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap(),
    ));
    hello_runs(&first);
    assert_eq!(run(&first, wat::EXIT_42).0, ExitStatus::Exited(42));
    let cache = first.cache().unwrap();
    // EXIT_42's compiled code (and then its tag too) put under HELLO's key.
    for with_tag in [false, true] {
        std::fs::copy(cache.path_of(&exit42), cache.path_of(&hello)).unwrap();
        if with_tag {
            std::fs::copy(cache.tag_path_of(&exit42), cache.tag_path_of(&hello)).unwrap();
        }
        let next = runtime(Some(
            ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap(),
        ));
        hello_runs(&next);
        let stats = next.cache().unwrap().stats();
        assert_eq!(stats.discarded.load(Ordering::Relaxed), 1, "refused");
        assert_eq!(stats.compiles.load(Ordering::Relaxed), 1, "recompiled");
    }
}

#[test]
fn a_world_writable_cache_dir_turns_the_cache_off_and_the_guest_runs() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap_err();
    assert!(
        err.to_string().contains("writable by group or others"),
        "{err}"
    );
    assert!(names(dir.path()).is_empty(), "nothing written there");
    hello_runs(&runtime(None));
}

/// A tmpfs mounted for one test; unmounted (and its mount point removed) on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        mount(
            &["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs"],
            dir.path(),
        );
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn remount_read_only(&self) {
        mount(&["-o", "remount,ro"], self.path());
    }
}

fn mount(args: &[&str], target: &Path) {
    let status = std::process::Command::new("mount")
        .args(args)
        .arg(target)
        .status()
        .unwrap();
    assert!(status.success(), "mount {args:?} {}", target.display());
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.path())
            .status();
    }
}

#[test]
fn a_read_only_cache_filesystem_never_fails_a_start() {
    require_root("mounts a tmpfs");
    let fs = Tmpfs::new();
    let dir = fs.path().join("cache");
    hello_runs(&runtime(Some(
        ModuleCache::open(&dir, DEFAULT_MAX_BYTES).unwrap(),
    )));
    fs.remount_read_only();
    // Hits still load; a miss runs from memory.
    let ro = runtime(Some(ModuleCache::open(&dir, DEFAULT_MAX_BYTES).unwrap()));
    hello_runs(&ro);
    assert_eq!(run(&ro, wat::EXIT_42).0, ExitStatus::Exited(42));
    let stats = ro.cache().unwrap().stats();
    assert_eq!(stats.hits.load(Ordering::Relaxed), 1);
    assert_eq!(stats.unstored.load(Ordering::Relaxed), 1);
    // No directory and no way to make one: no cache, and the guest runs.
    assert!(ModuleCache::open(fs.path().join("other"), DEFAULT_MAX_BYTES).is_err());
    hello_runs(&runtime(None));
}

/// A module with `functions` small distinct functions: slow enough to compile that a short
/// deadline passes first.
fn slow_module(functions: u32) -> Vec<u8> {
    let mut text = String::from("(module\n");
    for i in 0..functions {
        text.push_str(&format!(
            "(func $f{i} (param i32) (result i32) (i32.xor (i32.mul (i32.add (local.get 0) (i32.const {i})) (i32.const {})) (i32.shr_u (local.get 0) (i32.const {}))))\n",
            i | 1,
            i % 31 + 1
        ));
    }
    text.push_str("(func (export \"_start\")))\n");
    ::wat::parse_str(&text).unwrap()
}

#[test]
fn a_compile_past_the_deadline_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(Some(
        ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).unwrap(),
    ))
    .with_compile_timeout(Duration::from_millis(20));
    let began = Instant::now();
    let err = runtime
        .prepare(&WasmSource::from_bytes("/big.wasm", slow_module(20_000)).unwrap())
        .unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "gave up at the deadline"
    );
    assert!(matches!(err, Error::CompileTimeout { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("/big.wasm") && msg.contains("compile deadline"),
        "{msg}"
    );
    // The abandoned compile finishes on its thread and stores nothing; no lock or temp file
    // is left, before or after.
    let stats = runtime.cache().unwrap().stats();
    let waited = Instant::now();
    loop {
        assert_eq!(names(dir.path()), [KEY_FILE], "only the node key");
        if stats.compiles.load(Ordering::Relaxed) == 1 {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "the abandoned compile never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(names(dir.path()), [KEY_FILE], "only the node key");
    let _ = File::open(dir.path().join(KEY_FILE)).unwrap();
}
