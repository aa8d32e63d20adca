//! End-to-end tests of the wasmpod shim through a private containerd and `ctr`:
//! `ctr run --runtime io.containerd.wasmpod.v1` of wasm images built in the test.
//!
//! Needs root, containerd, runc and the built shim (`cargo build -p
//! containerd-shim-wasmpod`); every test fails with a clear message when they are missing.
//! Each test starts its own containerd ([`Containerd`]) and checks at the end that nothing
//! (shim process, mount, FIFO, shim socket, container record) was left behind.

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use wasmpod_fixtures::{p1, p2, wat};
use wasmpod_test::containerd::{Containerd, CtrOutput, RUNTIME, require_root_and_containerd};
use wasmpod_test::image::ImageBuilder;
use wasmpod_test::poll::wait_until;

/// Time a guest may take to stop after SIGTERM/SIGKILL (DESIGN: "promptly").
const STOP_WITHIN: Duration = Duration::from_secs(3);

/// `ctr run` options of a foreground run of the shim, removed when it exits.
const FOREGROUND: [&str; 3] = ["--rm", "--runtime", RUNTIME];
/// `ctr run` options of a detached run of the shim without stdio.
const DETACHED: [&str; 4] = ["-d", "--null-io", "--runtime", RUNTIME];

fn containerd() -> Containerd {
    require_root_and_containerd();
    Containerd::start().expect("start private containerd with the wasmpod shim")
}

/// Build a `wasip1/wasm` image `localhost/wasmpod/<name>:latest` whose entrypoint is
/// `entry` and which holds `files`, import it, and return its reference.
fn image(c: &Containerd, name: &str, entry: &str, files: &[(&str, &[u8])]) -> String {
    let mut b = ImageBuilder::new(format!("localhost/wasmpod/{name}:latest"))
        .platform("wasip1", "wasm")
        .entrypoint([entry]);
    for (path, bytes) in files {
        b = b.file(*path, bytes.to_vec(), 0o755);
    }
    c.import_image(&b).expect("import image")
}

/// The usual one-file image: `/<name>.wasm` as entrypoint.
fn wasm_image(c: &Containerd, name: &str, wasm: &[u8]) -> (String, String) {
    let entry = format!("/{name}.wasm");
    let reference = image(c, name, &entry, &[(&entry, wasm)]);
    (reference, entry)
}

/// `ctr run --rm --runtime <wasmpod> ARGS...` in the foreground.
fn run_foreground(c: &Containerd, args: &[&str]) -> CtrOutput {
    c.run([&FOREGROUND[..], args].concat()).expect("ctr run")
}

/// `ctr run -d --null-io --runtime <wasmpod> ARGS...`; asserts that `ctr` succeeded.
fn run_detached(c: &Containerd, args: &[&str]) {
    let out = c.run([&DETACHED[..], args].concat()).expect("ctr run -d");
    assert!(out.success(), "{out}");
}

/// Assert nothing is left: no shim process, mount, FIFO, socket, container or task, and
/// containerd still answers.
fn assert_clean(c: &Containerd) {
    let left = c.wait_no_leftovers(Duration::from_secs(10));
    assert!(left.is_empty(), "left behind:\n{left}");
    assert!(c.is_alive(), "containerd no longer answers `ctr version`");
    let containers = c
        .ctr(["containers", "ls", "-q"])
        .expect("ctr containers ls");
    assert_eq!(
        containers.stdout.trim(),
        "",
        "containers left: {containers}"
    );
    let tasks = c.ctr(["tasks", "ls", "-q"]).expect("ctr tasks ls");
    assert_eq!(tasks.stdout.trim(), "", "tasks left: {tasks}");
}

/// Wait until `ctr task ls` shows `id` RUNNING with a pid; returns the pid.
fn wait_running(c: &Containerd, id: &str) -> u32 {
    let mut last = String::new();
    let running = wait_until(
        Duration::from_secs(30),
        format!("task {id} RUNNING"),
        || {
            let ls = c.ctr(["tasks", "ls"]).expect("ctr tasks ls");
            // TASK PID STATUS
            let row = ls
                .stdout_lines()
                .into_iter()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|cols| cols.first() == Some(&id));
            if let Some(cols) = &row
                && cols.get(2) == Some(&"RUNNING")
            {
                let pid: u32 = cols[1].parse().expect("pid column");
                assert!(pid > 0, "RUNNING task without a pid: {ls}");
                return Some(pid);
            }
            last = ls.to_string();
            None
        },
    );
    running.unwrap_or_else(|e| panic!("{e}: {last}"))
}

/// A foreground `ctr run` running in the background, its stdout lines on a channel.
struct Foreground {
    child: Child,
    lines: Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Foreground {
    fn spawn(c: &Containerd, args: &[&str]) -> Self {
        let fifo = c.fifo_dir();
        let mut full = vec!["run", "--fifo-dir", fifo.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        let mut child = c.ctr_spawn(full).expect("spawn ctr run");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    fn expect_line(&self, want: &str) {
        let line = self.lines.recv_timeout(Duration::from_secs(30));
        assert_eq!(line.as_deref(), Ok(want), "first stdout line of the guest");
    }

    /// Wait for `ctr run` to exit; returns its status, the time it took and its stderr.
    fn wait(mut self, timeout: Duration) -> (ExitStatus, Duration, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let elapsed = start.elapsed();
                let stderr = self.stderr.join().unwrap_or_default();
                return (status, elapsed, stderr);
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "ctr run still running {timeout:?} after the kill; stderr: {}",
                    self.stderr.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn run_hello(c: &Containerd, wasm: &[u8], id: &str) {
    let (img, _) = wasm_image(c, id, wasm);
    let out = run_foreground(c, &[&img, id]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout_lines(), ["hello from wasm"], "{out}");
    assert_clean(c);
}

#[test]
fn hello_p1_module() {
    let c = containerd();
    run_hello(&c, p1::HELLO, "hello-p1");
}

#[test]
fn hello_p2_component() {
    let c = containerd();
    run_hello(&c, p2::HELLO, "hello-p2");
}

#[test]
fn exit_code_propagates_to_ctr_run() {
    let c = containerd();
    let (img, entry) = wasm_image(&c, "exit-code", p1::EXIT_CODE);
    let out = run_foreground(&c, &[&img, "exit-code", &entry, "42"]);
    assert_eq!(out.code(), Some(42), "{out}");
    assert_clean(&c);
}

#[test]
fn args_and_env_reach_the_guest() {
    let c = containerd();
    let (img, entry) = wasm_image(&c, "args-env", p1::ARGS_ENV);
    let out = run_foreground(
        &c,
        &["--env", "FOO=bar", &img, "args-env", &entry, "a", "b c"],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let lines = out.stdout_lines();
    let args: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("arg["))
        .collect();
    assert_eq!(
        args,
        [format!("arg[0]={entry}").as_str(), "arg[1]=a", "arg[2]=b c"],
        "{out}"
    );
    assert!(lines.contains(&"env:FOO=bar"), "{out}");
    assert_clean(&c);
}

/// Foreground `ctr run` of a long-running guest, killed from outside with `signal`:
/// `ctr run` must exit with `want`, promptly.
fn kill_foreground(
    wasm: &[u8],
    name: &str,
    args: &[&str],
    first_line: &str,
    signal: &str,
    want: i32,
) {
    let c = containerd();
    let (img, entry) = wasm_image(&c, name, wasm);
    let run_args = [&FOREGROUND[..], &[img.as_str(), name, entry.as_str()], args].concat();
    let fg = Foreground::spawn(&c, &run_args);
    fg.expect_line(first_line);
    wait_running(&c, name);

    c.kill_task(name, signal).expect("ctr tasks kill");
    let (status, elapsed, stderr) = fg.wait(Duration::from_secs(30));
    eprintln!("{name}: {signal} stopped the task in {elapsed:?}");
    assert_eq!(status.code(), Some(want), "ctr run stderr: {stderr}");
    assert_eq!(c.exit_status(name), Some(want as u32), "/tasks/exit event");
    assert!(
        elapsed < STOP_WITHIN,
        "{signal} took {elapsed:?} to stop the guest (limit {STOP_WITHIN:?})"
    );
    assert_clean(&c);
}

#[test]
fn sigterm_stops_sleeping_guest_with_143() {
    kill_foreground(
        p1::SLEEP,
        "sleep-term",
        &["600"],
        "sleeping",
        "SIGTERM",
        143,
    );
}

#[test]
fn sigkill_stops_sleeping_guest_with_137() {
    kill_foreground(
        p1::SLEEP,
        "sleep-kill",
        &["600"],
        "sleeping",
        "SIGKILL",
        137,
    );
}

#[test]
fn sigterm_stops_spinning_guest_with_143() {
    kill_foreground(p1::SPIN, "spin-term", &[], "spinning", "SIGTERM", 143);
}

#[test]
fn detached_sleep_killed_then_deleted() {
    let c = containerd();
    let (img, entry) = wasm_image(&c, "sleep-detached", p1::SLEEP);
    run_detached(&c, &[&img, "sleep-detached", &entry, "600"]);
    wait_running(&c, "sleep-detached");

    let start = Instant::now();
    c.kill_task("sleep-detached", "SIGTERM")
        .expect("ctr tasks kill");
    let status = c.wait_exit("sleep-detached", Duration::from_secs(30));
    let elapsed = start.elapsed();
    eprintln!("detached sleep: SIGTERM stopped the task in {elapsed:?}");
    assert_eq!(status, Some(143), "/tasks/exit event");
    assert!(elapsed < STOP_WITHIN, "SIGTERM took {elapsed:?}");
    let ls = c.ctr(["tasks", "ls"]).expect("ctr tasks ls");
    assert!(
        ls.stdout_lines()
            .iter()
            .any(|l| l.starts_with("sleep-detached") && l.ends_with("STOPPED")),
        "{ls}"
    );

    c.delete_container("sleep-detached").expect("delete");
    assert_clean(&c);
}

#[test]
fn two_containers_of_one_sandbox_share_one_shim() {
    let c = containerd();
    let (img, entry) = wasm_image(&c, "grouped", p1::SLEEP);
    let group = format!("sandbox-{}", std::process::id());
    c.note_group(&group);
    let annotation = format!("io.kubernetes.cri.sandbox-id={group}");
    for id in ["grouped-a", "grouped-b"] {
        run_detached(&c, &["--annotation", &annotation, &img, id, &entry, "600"]);
        wait_running(&c, id);
    }
    let daemons = c.shim_daemons();
    assert_eq!(
        daemons.len(),
        1,
        "expected one shim for the sandbox, got {daemons:#?}"
    );

    for id in ["grouped-a", "grouped-b"] {
        c.kill_task(id, "SIGKILL").expect("kill");
        assert_eq!(c.wait_exit(id, Duration::from_secs(30)), Some(137), "{id}");
        c.delete_container(id).expect("delete");
    }
    assert_clean(&c);
}

#[test]
fn delete_after_exit_leaves_nothing_behind() {
    let c = containerd();
    let (img, _) = wasm_image(&c, "hello-detached", p1::HELLO);
    run_detached(&c, &[&img, "hello-detached"]);
    assert_eq!(
        c.wait_exit("hello-detached", Duration::from_secs(30)),
        Some(0)
    );
    c.delete_container("hello-detached").expect("delete");
    assert_clean(&c);
}

/// `ctr run --rm` of an image whose entrypoint is `entry` must fail, with stderr (case
/// folded) containing, for every group in `expect`, at least one of its alternatives; and
/// leave nothing behind.
fn assert_rejected(name: &str, entry: &str, files: &[(&str, &[u8])], expect: &[&[&str]]) {
    let c = containerd();
    let img = image(&c, name, entry, files);
    let out = run_foreground(&c, &[&img, name]);
    assert!(!out.success(), "bad image {name} ran: {out}");
    let stderr = out.stderr.to_lowercase();
    for group in expect {
        assert!(
            group.iter().any(|s| stderr.contains(&s.to_lowercase())),
            "stderr names none of {group:?}: {out}"
        );
    }
    remove_failed_container(&c, name);
    assert_clean(&c);
}

/// Removes the container record `ctr run` may keep when task creation failed.
fn remove_failed_container(c: &Containerd, name: &str) {
    let ls = c.ctr(["containers", "ls", "-q"]).expect("ls");
    if ls.stdout.lines().any(|l| l.trim() == name) {
        let rm = c.ctr(["containers", "rm", name]).expect("rm");
        assert!(rm.success(), "{rm}");
    }
}

#[test]
fn rejects_a_file_that_is_not_wasm() {
    // Neither wasm magic, ELF nor `#!` (a shebang would make it a Linux container).
    let bytes: &[u8] = b"plain text, neither a module nor a program\n";
    assert_rejected(
        "not-wasm",
        "/app.wasm",
        &[("/app.wasm", bytes)],
        &[&["not a webassembly", "not wasm", "not a wasm"]],
    );
}

#[test]
fn rejects_a_missing_entrypoint() {
    assert_rejected(
        "missing-entry",
        "/missing.wasm",
        &[("/hello.wasm", p1::HELLO)],
        &[&["/missing.wasm"], &["not found", "no such file"]],
    );
}

#[test]
fn rejects_a_truncated_module() {
    assert_rejected(
        "truncated",
        "/truncated.wasm",
        &[("/truncated.wasm", wat::TRUNCATED_MODULE)],
        &[&["compile", "invalid", "failed to parse"]],
    );
}

#[test]
fn rejects_a_module_without_start() {
    assert_rejected(
        "no-start",
        "/no_start.wasm",
        &[("/no_start.wasm", wat::NO_START)],
        &[&["_start"]],
    );
}

#[test]
fn rejects_a_component_without_cli_run() {
    assert_rejected(
        "component-no-run",
        "/component.wasm",
        &[("/component.wasm", wat::COMPONENT_NO_RUN)],
        &[&["wasi:cli/run"]],
    );
}

/// A network namespace made by the test, holding only `lo`; removed on drop.
struct TestNetns(String);

impl TestNetns {
    fn new() -> Self {
        let name = format!("wasmpod-test-{}", std::process::id());
        for args in [
            vec!["netns", "add", name.as_str()],
            vec!["-n", name.as_str(), "link", "set", "lo", "up"],
        ] {
            let status = std::process::Command::new("ip")
                .args(&args)
                .status()
                .expect("run ip");
            assert!(status.success(), "ip {args:?} failed");
        }
        TestNetns(name)
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    fn curl(&self, url: &str) -> Option<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.0, "curl", "-s", "-m", "2", url])
            .output()
            .expect("run curl in the netns");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[test]
fn wasi_http_component_serves_in_its_network_namespace_and_a_taken_port_fails_create() {
    let c = containerd();
    let netns = TestNetns::new();
    let (img, entry) = wasm_image(&c, "http-hello", wasmpod_fixtures::http::HELLO);
    let with_ns = format!("network:{}", netns.path());
    run_detached(&c, &["--with-ns", &with_ns, &img, "http-hello", &entry]);
    wait_running(&c, "http-hello");
    let body = wait_until(
        Duration::from_secs(20),
        format!("the server answering inside {}", netns.path()),
        || netns.curl("http://127.0.0.1:8080/"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body, "hello from wasi:http\n");

    // A second server on the same port of the same network fails at Create, saying why.
    let second = run_foreground(&c, &["--with-ns", &with_ns, &img, "http-second", &entry]);
    assert!(!second.success(), "a second server on :8080 ran: {second}");
    let stderr = second.stderr.to_lowercase();
    assert!(
        stderr.contains("listening on 0.0.0.0:8080 for wasi:http") && stderr.contains("in use"),
        "the error names neither the address nor the reason: {second}"
    );
    remove_failed_container(&c, "http-second");
    assert_eq!(
        netns.curl("http://127.0.0.1:8080/").as_deref(),
        Some("hello from wasi:http\n"),
        "the first server still serves"
    );

    c.kill_task("http-hello", "SIGTERM").expect("kill");
    assert_eq!(
        c.wait_exit("http-hello", Duration::from_secs(30)),
        Some(0),
        "a drained server exits 0"
    );
    c.delete_container("http-hello").expect("delete");
    assert_clean(&c);
}

/// The state column of `ctr tasks ls` for `id`.
fn task_status(c: &Containerd, id: &str) -> String {
    let ls = c.ctr(["tasks", "ls"]).expect("ctr tasks ls");
    ls.stdout_lines()
        .into_iter()
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
        })
        .unwrap_or_else(|| panic!("task {id} not listed: {ls}"))
}

/// The freezer state of process `pid`'s cgroup: v1 `freezer.state`, v2 `frozen 0|1`.
fn freezer_state(pid: u32) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup of pid");
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if controllers.split(',').any(|c| c == "freezer") {
            let file = format!("/sys/fs/cgroup/freezer{path}/freezer.state");
            return std::fs::read_to_string(&file)
                .expect(&file)
                .trim()
                .to_owned();
        }
        if controllers.is_empty()
            && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        {
            let events = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cgroup.events"))
                .expect("cgroup.events");
            return events
                .lines()
                .find(|l| l.starts_with("frozen"))
                .unwrap_or("")
                .to_owned();
        }
    }
    panic!("no freezer cgroup for pid {pid}: {cgroups}");
}

#[test]
fn pause_resume_and_kill_while_paused() {
    let c = containerd();
    let (img, entry) = wasm_image(&c, "pause", p1::SLEEP);

    // Paused, then resumed: the guest carries on and finishes normally.
    run_detached(&c, &[&img, "pause-resume", &entry, "2"]);
    let pid = wait_running(&c, "pause-resume");
    let out = c
        .ctr(["tasks", "pause", "pause-resume"])
        .expect("ctr tasks pause");
    assert!(out.success(), "{out}");
    assert_eq!(task_status(&c, "pause-resume"), "PAUSED");
    assert!(
        matches!(freezer_state(pid).as_str(), "FROZEN" | "frozen 1"),
        "{}",
        freezer_state(pid)
    );
    // Pausing twice is refused, as runc's shim does.
    assert!(
        !c.ctr(["tasks", "pause", "pause-resume"])
            .expect("ctr")
            .success()
    );
    std::thread::sleep(Duration::from_secs(3)); // past the guest's own 2 s
    assert_eq!(
        task_status(&c, "pause-resume"),
        "PAUSED",
        "a paused guest must not exit"
    );
    let out = c
        .ctr(["tasks", "resume", "pause-resume"])
        .expect("ctr tasks resume");
    assert!(out.success(), "{out}");
    // Thawed: the guest, past its time, finishes at once.
    assert_eq!(
        c.wait_exit("pause-resume", Duration::from_secs(30)),
        Some(0),
        "resumed guest's exit"
    );
    c.delete_container("pause-resume").expect("delete");

    // Killed while paused: the signal takes effect (the container is thawed to die).
    run_detached(&c, &[&img, "pause-kill", &entry, "600"]);
    wait_running(&c, "pause-kill");
    assert!(
        c.ctr(["tasks", "pause", "pause-kill"])
            .expect("ctr")
            .success()
    );
    assert_eq!(task_status(&c, "pause-kill"), "PAUSED");
    c.kill_task("pause-kill", "SIGKILL")
        .expect("ctr tasks kill");
    assert_eq!(
        c.wait_exit("pause-kill", Duration::from_secs(30)),
        Some(137)
    );
    c.delete_container("pause-kill").expect("delete");
    assert_clean(&c);
}

/// A shim upgrade replaces the binary on disk (a new file renamed over the old one) while a
/// pod's shim daemon runs: the daemon keeps starting its containers from the binary it runs.
#[test]
fn a_new_container_starts_after_the_shim_binary_is_replaced() {
    require_root_and_containerd();
    let dir = tempfile::tempdir().expect("temp dir");
    let shim = dir.path().join("containerd-shim-wasmpod-v1");
    std::fs::copy(
        wasmpod_test::containerd::locate_shim().expect("built shim"),
        &shim,
    )
    .expect("copy the shim");
    let c = Containerd::builder()
        .shim(&shim)
        .start()
        .expect("start private containerd with a copied shim");
    let (sleep_img, sleep_entry) = wasm_image(&c, "upgrade-sleep", p1::SLEEP);
    let (hello_img, hello_entry) = wasm_image(&c, "upgrade-hello", p1::HELLO);
    let group = format!("sandbox-upgrade-{}", std::process::id());
    c.note_group(&group);
    let annotation = format!("io.kubernetes.cri.sandbox-id={group}");
    run_detached(
        &c,
        &[
            "--annotation",
            &annotation,
            &sleep_img,
            "upgrade-a",
            &sleep_entry,
            "600",
        ],
    );
    let pid = wait_running(&c, "upgrade-a");
    // Started through a descriptor, still named as a shim process for ps and top.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_eq!(comm.trim(), "containerd-shim");

    // The "new version", renamed over the installed file: a shim whose runner would fail
    // (containerd itself runs the new file's `start`, which must work as in a real upgrade).
    let original = dir.path().join("previous-build");
    std::fs::copy(&shim, &original).expect("keep a copy");
    let replacement = dir.path().join("containerd-shim-wasmpod-v1.new");
    std::fs::write(
        &replacement,
        format!(
            "#!/bin/sh\ncase \"$1\" in __run|__pause) exit 3;; esac\nexec {} \"$@\"\n",
            original.display()
        ),
    )
    .expect("write replacement");
    std::fs::set_permissions(
        &replacement,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod replacement");
    std::fs::rename(&replacement, &shim).expect("rename over the shim");

    let log = dir.path().join("b.log");
    let out = c
        .run([
            "-d",
            "--log-uri",
            &format!("file://{}", log.display()),
            "--runtime",
            RUNTIME,
            "--annotation",
            &annotation,
            &hello_img,
            "upgrade-b",
            &hello_entry,
        ])
        .expect("ctr run");
    assert!(
        out.success(),
        "a container of the running pod must still start: {out}"
    );
    assert_eq!(c.wait_exit("upgrade-b", Duration::from_secs(30)), Some(0));
    let printed = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(printed.contains("hello"), "guest output: {printed:?}");
    assert_eq!(c.shim_daemons().len(), 1, "still the one daemon of the pod");

    c.kill_task("upgrade-a", "SIGKILL").expect("kill");
    assert_eq!(c.wait_exit("upgrade-a", Duration::from_secs(30)), Some(137));
    for id in ["upgrade-a", "upgrade-b"] {
        c.delete_container(id).expect("delete");
    }
    assert_clean(&c);
}

/// Runs of the output test (sequential, then the same again 8 in parallel);
/// `WASMPOD_OUTPUT_RUNS` overrides it.
fn output_runs() -> usize {
    std::env::var("WASMPOD_OUTPUT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Every `ctr run --rm` shows the guest's last stdout and stderr lines: the exit is
/// published only once the FIFOs are read (before, about 1 run in 200 lost its line).
#[test]
fn no_output_lost_over_many_runs() {
    let c = containerd();
    let (img, _) = wasm_image(&c, "lines", p1::STDERR);
    let runs = output_runs();
    let run_once = |id: String| -> bool {
        let out = c
            .run([&FOREGROUND[..], &[&img, &id]].concat())
            .expect("ctr run");
        out.success()
            && out.stdout_lines() == ["to stdout"]
            && out.stderr.lines().any(|l| l == "to stderr")
    };
    let began = Instant::now();
    let lost_sequential = (0..runs)
        .filter(|n| !run_once(format!("lines-s{n}")))
        .count();
    let sequential = began.elapsed();
    let began = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let lost_parallel = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= runs {
                        break;
                    }
                    if !run_once(format!("lines-p{n}")) {
                        lost_parallel.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let lost_parallel = lost_parallel.into_inner();
    eprintln!(
        "{runs} runs: sequential {sequential:?} ({lost_sequential} incomplete), 8 in parallel {:?} ({lost_parallel} incomplete)",
        began.elapsed()
    );
    assert_eq!(
        (lost_sequential, lost_parallel),
        (0, 0),
        "runs missing a line or failing, of {runs} sequential and {runs} parallel"
    );
    assert_clean(&c);
}
