//! Hostile inputs through a private containerd and `ctr`, and `shim delete` after a crash:
//! each must fail Create with a named error (or refuse to act), create nothing, leave
//! nothing behind, and containerd must still answer.
//!
//! - a `cgroupsPath` escaping the cgroup hierarchy (`ctr run --cgroup ../../../../tmp/x`),
//!   for a wasm container and for a Linux (runc) sidecar;
//! - a payload above its size bound, a compile past its deadline, an out-of-range bound
//!   (bounds lowered per container with `wasmpod.dev/...` annotations);
//! - `containerd-shim-wasmpod-v1 ... delete` with a pid file naming an unrelated process,
//!   or pid 0, 1, -5, 99999999999.
//!
//! Needs root, containerd, runc and the built shim (`cargo build -p
//! containerd-shim-wasmpod`); every test fails with a clear message when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use wasmpod_fixtures::p1;
use wasmpod_runtime_core::{EngineSettings, ModuleCache, WasmSource};
use wasmpod_test::containerd::{
    Containerd, CtrOutput, RUNTIME, locate_shim, require_root_and_containerd,
};
use wasmpod_test::image::ImageBuilder;
use wasmpod_test::poll::wait_until;

fn containerd() -> Containerd {
    require_root_and_containerd();
    Containerd::start().expect("start private containerd with the wasmpod shim")
}

/// Imports a `wasip1/wasm` image running `/<name>.wasm`; returns its reference.
fn wasm_image(c: &Containerd, name: &str, wasm: &[u8]) -> String {
    let entry = format!("/{name}.wasm");
    let image = ImageBuilder::new(format!("localhost/wasmpod/{name}:latest"))
        .platform("wasip1", "wasm")
        .entrypoint([entry.as_str()])
        .file(&entry, wasm.to_vec(), 0o755);
    c.import_image(&image).expect("import image")
}

/// `ctr run --rm --runtime <wasmpod> ARGS...`.
fn run(c: &Containerd, args: &[&str]) -> CtrOutput {
    c.run([&["--rm", "--runtime", RUNTIME][..], args].concat())
        .expect("ctr run")
}

/// Asserts `out` failed at create with gRPC InvalidArgument and stderr naming every one of
/// `names`.
fn assert_invalid_argument(out: &CtrOutput, names: &[&str]) {
    assert!(!out.success(), "ran: {out}");
    assert!(
        out.stderr.contains("invalid argument") || out.stderr.contains("InvalidArgument"),
        "not InvalidArgument: {out}"
    );
    for name in names {
        assert!(
            out.stderr.contains(name),
            "stderr does not name {name:?}: {out}"
        );
    }
}

/// Removes the record `ctr run` keeps when task creation failed, then asserts nothing is
/// left (no shim or runner process, mount, FIFO, socket, container, task) and that
/// containerd still runs a good container.
fn assert_clean_and_alive(c: &Containerd, failed: &[&str]) {
    for id in failed {
        let ls = c.ctr(["containers", "ls", "-q"]).expect("ls");
        if ls.stdout.lines().any(|l| l.trim() == *id) {
            let rm = c.ctr(["containers", "rm", id]).expect("rm");
            assert!(rm.success(), "{rm}");
        }
    }
    let left = c.wait_no_leftovers(Duration::from_secs(10));
    assert!(left.is_empty(), "left behind:\n{left}");
    for what in [["containers", "ls", "-q"], ["tasks", "ls", "-q"]] {
        let ls = c.ctr(what).expect("ctr ls");
        assert_eq!(ls.stdout.trim(), "", "{what:?} left: {ls}");
    }
    assert!(c.is_alive(), "containerd no longer answers `ctr version`");
    let hello = wasm_image(c, "hello-after", p1::HELLO);
    let out = run(c, &[&hello, "hello-after"]);
    assert!(out.success(), "a good container after the bad one: {out}");
    assert!(out.stdout.contains("hello from wasm"), "{out}");
}

/// A path under /tmp no test has used.
fn unique_tmp(what: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let path = PathBuf::from(format!(
        "/tmp/wasmpod-{what}-{}-{nanos}",
        std::process::id()
    ));
    assert!(!path.exists());
    path
}

/// cgroup directories named `leaf` anywhere under /sys/fs/cgroup (v1 and v2).
fn cgroups_named(leaf: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, leaf: &str, depth: usize, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            let path = entry.path();
            if entry.file_name().to_string_lossy() == leaf {
                found.push(path.clone());
            }
            if depth < 6 {
                walk(&path, leaf, depth + 1, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), leaf, 0, &mut found);
    found
}

#[test]
fn a_cgroups_path_escaping_the_hierarchy_fails_create_and_creates_nothing() {
    let c = containerd();
    let hello = wasm_image(&c, "hostile-cgroup", p1::HELLO);
    let busybox = c
        .import_image(&ImageBuilder::busybox("localhost/wasmpod/busybox:latest").expect("busybox"))
        .expect("import busybox");
    for (image, id, extra) in [
        (&hello, "hostile-cgroup-wasm", None),
        (&busybox, "hostile-cgroup-runc", Some("true")),
    ] {
        let target = unique_tmp("cgroup-escape");
        let leaf = target.file_name().unwrap().to_string_lossy().into_owned();
        let cgroup = format!("../../../..{}", target.display());
        let mut args = vec!["--cgroup", &cgroup, image.as_str(), id];
        args.extend(extra);
        let out = run(&c, &args);
        assert_invalid_argument(&out, &["cgroupsPath", "refused", "`..`"]);
        assert!(
            !target.exists(),
            "{} was created on the host",
            target.display()
        );
        assert_eq!(cgroups_named(&leaf), Vec::<PathBuf>::new(), "cgroups made");
        assert_clean_and_alive(&c, &[id]);
    }
}

#[test]
fn a_payload_above_its_size_bound_fails_create() {
    let c = containerd();
    let image = wasm_image(&c, "oversized", p1::HELLO);
    assert!(p1::HELLO.len() > 4096);
    let out = run(
        &c,
        &[
            "--annotation",
            "wasmpod.dev/max-payload-bytes=4096",
            &image,
            "oversized",
        ],
    );
    assert_invalid_argument(
        &out,
        &["/oversized.wasm", "payload size bound of 4096 bytes"],
    );
    assert_clean_and_alive(&c, &["oversized"]);
}

#[test]
fn an_out_of_range_bound_is_a_named_invalid_argument() {
    let c = containerd();
    let image = wasm_image(&c, "bad-bound", p1::HELLO);
    for (i, value) in ["18446744073709551615", "1h", "0"].iter().enumerate() {
        let id = format!("bad-bound-{i}");
        let annotation = format!("wasmpod.dev/compile-timeout={value}");
        let out = run(&c, &["--annotation", &annotation, &image, &id]);
        assert_invalid_argument(&out, &["wasmpod.dev/compile-timeout"]);
        assert_clean_and_alive(&c, &[&id]);
    }
}

/// A module with `functions` small distinct functions (salted, so no cache holds it).
fn slow_module(functions: u32, salt: u128) -> Vec<u8> {
    let mut text = String::from("(module\n");
    for i in 0..functions {
        text.push_str(&format!(
            "(func (param i32) (result i32) (i32.xor (i32.mul (i32.add (local.get 0) (i32.const {})) (i32.const {})) (i32.shr_u (local.get 0) (i32.const {}))))\n",
            (salt as u32) ^ i,
            i | 1,
            i % 31 + 1
        ));
    }
    text.push_str("(func (export \"_start\")))\n");
    ::wat::parse_str(&text).expect("assemble the slow module")
}

#[test]
fn a_compile_past_its_deadline_fails_create_and_leaves_nothing() {
    let c = containerd();
    let salt = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let wasm = slow_module(40_000, salt);
    let image = wasm_image(&c, "slow-compile", &wasm);
    let began = Instant::now();
    let out = run(
        &c,
        &[
            "--annotation",
            "wasmpod.dev/compile-timeout=50ms",
            &image,
            "slow-compile",
        ],
    );
    assert_invalid_argument(&out, &["/slow-compile.wasm", "compile deadline of 50ms"]);
    assert!(began.elapsed() < Duration::from_secs(30), "{out}");
    assert_clean_and_alive(&c, &["slow-compile"]);
    // The runner died with its compile thread: nothing of this module is in the node's
    // cache (the runners use the default cache directory here).
    let engine = EngineSettings::commands().build_engine().unwrap();
    let key = ModuleCache::key(&engine, &WasmSource::from_bytes("/x.wasm", wasm).unwrap());
    let dir = Path::new(wasmpod_runtime_core::cache::DEFAULT_CACHE_DIR);
    for ext in ["cwasm", "tag", "lock"] {
        let path = dir.join(format!("{key}.{ext}"));
        assert!(!path.exists(), "{} left", path.display());
    }
    let temps: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}

/// Runs `containerd-shim-wasmpod-v1 -namespace NS -address ADDR -id ID delete` in `bundle`,
/// as containerd does after a shim died, in its own process group (so a `kill(0, ...)`
/// could only hit itself); asserts it exited normally.
fn shim_delete(bundle: &Path, id: &str) {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let shim = locate_shim().expect("built shim");
    let out = Command::new(shim)
        .args([
            "-namespace",
            "wasmpod-hostile",
            "-address",
            "/run/wasmpod-test-no-containerd.sock",
            "-id",
            id,
            "delete",
        ])
        .current_dir(bundle)
        .env(
            "TTRPC_ADDRESS",
            "/run/wasmpod-test-no-containerd.sock.ttrpc",
        )
        .process_group(0)
        .output()
        .expect("run shim delete");
    assert_eq!(
        out.status.signal(),
        None,
        "shim delete was killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The start time (field 22 of /proc/PID/stat) of `pid`.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn shim_delete_never_signals_a_process_it_cannot_prove_is_the_containers() {
    require_root_and_containerd();
    let bundle = tempfile::tempdir().unwrap();
    let pid_file = bundle.path().join("runner.pid");
    let mut unrelated = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = unrelated.id();
    let real_start = start_time(pid);
    for content in [
        format!("{pid} {}", real_start + 1), // the pid reused by another process
        format!("{pid}"),                    // an old file without a start time
        format!("{pid} {real_start} extra"),
        "0 0".to_owned(),
        "1 0".to_owned(),
        format!("1 {}", start_time(1)),
        "-5 0".to_owned(),
        "-5".to_owned(),
        "99999999999 0".to_owned(),
        "99999999999".to_owned(),
    ] {
        std::fs::write(&pid_file, &content).unwrap();
        shim_delete(bundle.path(), "stale");
        assert!(
            unrelated.try_wait().unwrap().is_none(),
            "pid file {content:?}: an unrelated process was killed"
        );
    }
    // The process the file does describe (same pid, same start time) is killed.
    std::fs::write(&pid_file, format!("{pid} {real_start}")).unwrap();
    shim_delete(bundle.path(), "stale");
    let status = wait_until(
        Duration::from_secs(5),
        "the recorded process killed",
        || unrelated.try_wait().unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e}: it survived"));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}
