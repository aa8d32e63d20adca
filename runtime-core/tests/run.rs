//! Runs the fixture guests through the public API, as an ordinary user (no root, no containerd).

use std::fs::File;
use std::io::{Read, Seek};
use std::time::{Duration, Instant};

use wasmpod_fixtures::{p1, p2, wat};
use wasmpod_runtime_core::{
    EngineSettings, Error, ExitStatus, Preopen, Runtime, WasiConfig, WasmSource,
};

/// Captured stdout/stderr of one guest run.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn runtime() -> Runtime {
    Runtime::new(&EngineSettings::commands()).expect("engine")
}

fn run_with(bytes: &[u8], mut config: WasiConfig) -> Run {
    let runtime = runtime();
    let source = WasmSource::from_bytes("/test.wasm", bytes.to_vec()).unwrap();
    let prepared = runtime.prepare(&source).unwrap();
    let mut stdout = tempfile::tempfile().unwrap();
    let mut stderr = tempfile::tempfile().unwrap();
    config.stdout = Some(stdout.try_clone().unwrap());
    config.stderr = Some(stderr.try_clone().unwrap());
    if config.args.is_empty() {
        config.args = vec!["/test.wasm".into()];
    }
    let status = prepared.run(config, &runtime.interrupter()).unwrap();
    Run {
        status,
        stdout: read_all(&mut stdout),
        stderr: read_all(&mut stderr),
    }
}

fn read_all(file: &mut File) -> String {
    let mut out = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut out).unwrap();
    out
}

fn prepare_err(bytes: &[u8]) -> Error {
    let source = WasmSource::from_bytes("/bad.wasm", bytes.to_vec())
        .and_then(|source| runtime().prepare(&source).map(|_| ()));
    source.expect_err("payload should be refused")
}

#[test]
fn hello_module_prints_to_stdout() {
    let run = run_with(p1::HELLO, WasiConfig::default());
    assert_eq!(run.status, ExitStatus::Exited(0));
    assert_eq!(run.stdout, "hello from wasm\n");
}

#[test]
fn hello_wat_module_prints_to_stdout() {
    let run = run_with(wat::HELLO, WasiConfig::default());
    assert_eq!(run.status, ExitStatus::Exited(0));
    assert_eq!(run.stdout, "hello from wat\n");
}

#[test]
fn args_and_env_reach_the_guest() {
    for bytes in [p1::ARGS_ENV, p2::ARGS_ENV] {
        let config = WasiConfig {
            args: vec!["/app.wasm".into(), "one".into(), "two words".into()],
            env: WasiConfig::parse_env(["GREETING=hi there", "EMPTY="]),
            ..Default::default()
        };
        let run = run_with(bytes, config);
        assert_eq!(run.status, ExitStatus::Exited(0));
        assert_eq!(
            run.stdout,
            "arg[0]=/app.wasm\narg[1]=one\narg[2]=two words\nenv:EMPTY=\nenv:GREETING=hi there\n"
        );
    }
}

#[test]
fn proc_exit_code_is_the_exit_status() {
    let run = run_with(wat::EXIT_42, WasiConfig::default());
    assert_eq!(run.status, ExitStatus::Exited(42));
    let config = WasiConfig {
        args: vec!["exit_code".into(), "7".into()],
        ..Default::default()
    };
    assert_eq!(
        run_with(p1::EXIT_CODE, config).status,
        ExitStatus::Exited(7)
    );
}

#[test]
fn trap_ends_with_trap_status_and_message() {
    let run = run_with(wat::TRAP, WasiConfig::default());
    let ExitStatus::Trapped { message } = &run.status else {
        panic!("expected a trap, got {:?}", run.status);
    };
    assert!(message.contains("unreachable"), "{message}");
    assert_eq!(run.status.code(), 134);
}

#[test]
fn files_are_written_and_read_under_a_preopen() {
    let dir = tempfile::tempdir().unwrap();
    for bytes in [p1::FILES, p2::FILES] {
        let config = WasiConfig {
            args: vec!["files".into(), "/data".into()],
            preopens: vec![Preopen {
                host_path: dir.path().to_owned(),
                guest_path: "/data".into(),
                read_only: false,
            }],
            ..Default::default()
        };
        let run = run_with(bytes, config);
        assert_eq!(run.status, ExitStatus::Exited(0), "stderr: {}", run.stderr);
        assert_eq!(run.stdout, "read: written by wasm\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
            "written by wasm"
        );
    }
}

#[test]
fn read_only_preopen_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = WasiConfig {
        args: vec!["files".into(), "/data".into(), "read-only-check".into()],
        preopens: vec![Preopen {
            host_path: dir.path().to_owned(),
            guest_path: "/data".into(),
            read_only: true,
        }],
        ..Default::default()
    };
    let run = run_with(p1::FILES, config);
    assert_eq!(run.status, ExitStatus::Exited(0), "stdout: {}", run.stdout);
    assert!(run.stdout.starts_with("write refused:"), "{}", run.stdout);
    assert!(!dir.path().join("denied.txt").exists());
}

#[test]
fn p2_component_command_runs() {
    let run = run_with(p2::HELLO, WasiConfig::default());
    assert_eq!(run.status, ExitStatus::Exited(0));
    assert_eq!(run.stdout, "hello from wasm\n");
    let run = run_with(p2::STDERR, WasiConfig::default());
    assert_eq!(run.stdout, "to stdout\n");
    assert_eq!(run.stderr, "to stderr\n");
}

#[test]
fn loop_forever_is_interrupted_on_request() {
    for bytes in [wat::LOOP_FOREVER, p1::SPIN, p2::SPIN] {
        let runtime = runtime();
        let source = WasmSource::from_bytes("/spin.wasm", bytes.to_vec()).unwrap();
        let prepared = runtime.prepare(&source).unwrap();
        let interrupter = runtime.interrupter();
        let remote = interrupter.clone();
        let asked = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let at = Instant::now();
            remote.interrupt(libc_sigterm());
            at
        });
        let status = prepared.run(WasiConfig::default(), &interrupter).unwrap();
        let stopped = Instant::now();
        let asked_at = asked.join().unwrap();
        assert_eq!(status, ExitStatus::Interrupted { signal: 15 });
        assert_eq!(status.code(), 143);
        // Not a timing assertion: just proves the run ended after the request, not before.
        assert!(stopped >= asked_at);
    }
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn bad_payloads_are_refused_with_named_errors() {
    let not_wasm = prepare_err(wasmpod_fixtures::wat::NOT_WASM).to_string();
    assert!(not_wasm.contains("not a WebAssembly binary"), "{not_wasm}");

    let truncated = prepare_err(wasmpod_fixtures::wat::TRUNCATED_MODULE);
    assert!(matches!(truncated, Error::Compile { .. }), "{truncated}");

    let no_start = prepare_err(wat::NO_START);
    assert!(matches!(no_start, Error::MissingStart { .. }), "{no_start}");
    assert!(no_start.to_string().contains("`_start`"));

    let no_run = prepare_err(wat::COMPONENT_NO_RUN);
    assert!(matches!(no_run, Error::MissingCliRun { .. }), "{no_run}");
    assert!(no_run.to_string().contains("wasi:cli/run"));
}

#[test]
fn guest_sockets_reach_a_loopback_server() {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&stream)
            .read_line(&mut line)
            .unwrap();
        (&stream).write_all(b"pong").unwrap();
        line
    });
    let config = WasiConfig {
        args: vec!["tcp_client".into(), addr.to_string()],
        allow_network: true,
        ..Default::default()
    };
    let run = run_with(p2::TCP_CLIENT, config);
    assert_eq!(run.status, ExitStatus::Exited(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "received: pong\n");
    assert_eq!(server.join().unwrap(), "ping\n");
}
