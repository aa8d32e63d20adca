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
use wasmpod_test::containerd::Containerd;
use wasmpod_test::poll::wait_until;

#[path = "ctr/common.rs"]
#[allow(dead_code)] // shared with ctr_day2.rs, which uses other helpers
mod common;
use common::*;

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
    assert_eq!(
        guest_args(&out),
        [format!("arg[0]={entry}").as_str(), "arg[1]=a", "arg[2]=b c"],
        "{out}"
    );
    assert!(out.stdout_lines().contains(&"env:FOO=bar"), "{out}");
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
    let annotation = sandbox_annotation(&c, "grouped");
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
