//! The shim's real launcher and real runner, without containerd: each test writes a bundle
//! (`config.json` and a rootfs holding the payload) in a temporary directory, calls
//! [`ShimLauncher`] as the task service's Create would, and drives the process it returns
//! as Start, Kill and Delete would. The runner is the shim binary itself, re-executed as
//! `__run` (Cargo builds it for these tests); this process is its parent and reaps it.
//!
//! What is covered: ready, the descriptors a ready runner holds, a failure keeping its kind (and so its gRPC code), the start
//! byte, the start pipe closed before start, the OOM marker, a kill before start, and the
//! failures the dispatch finds before it makes any process.
//!
//! Making a runner needs root (every runner gets a mount namespace of its own, and confines
//! itself with capabilities and seccomp): those tests are `#[ignore = "needs root"]`; run
//! them with `sudo -E cargo test -p containerd-shim-wasmpod --test launcher -- --include-ignored`
//! (`make test` does). The others run as any user.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use wasmpod_fixtures::{http, p1};
use wasmpod_runtime_core::exit::OUT_OF_MEMORY_EXIT_CODE;
use wasmpod_shim::error::TaskError;
use wasmpod_shim::process::dispatch::ShimLauncher;
use wasmpod_shim::process::runner::parent::RunnerSettings;
use wasmpod_shim::process::runner::protocol::{OOM_MARKER_FILE, RUNNER_PID_FILE};
use wasmpod_shim::process::{ContainerProcess, CreateRequest, EXEC_TARGETS, ExecRequest, Launcher};

/// A bundle in a temporary directory: `config.json`, `rootfs/app.wasm`, stdout and stderr
/// files.
struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// A bundle running `payload` as `/app.wasm args...`; `linux` and `annotations` are
    /// JSON objects merged into the spec.
    fn new(payload: &[u8], args: &[&str], linux: &str, annotations: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary bundle");
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("rootfs/app.wasm"), payload).unwrap();
        let args: Vec<String> = std::iter::once("/app.wasm")
            .chain(args.iter().copied())
            .map(|a| format!("{a:?}"))
            .collect();
        let spec = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},
                "process":{{"args":[{}],"env":["PATH=/"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
                "annotations":{annotations},
                "linux":{linux}}}"#,
            args.join(",")
        );
        std::fs::write(dir.path().join("config.json"), spec).unwrap();
        for file in ["stdout", "stderr"] {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        Bundle { dir }
    }

    fn simple(payload: &[u8], args: &[&str]) -> Self {
        Bundle::new(payload, args, "{}", "{}")
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path().join(file)).unwrap_or_default()
    }

    /// What the task service's Create would ask for.
    fn request(&self, id: &str) -> CreateRequest {
        let file = |name: &str| self.path().join(name).display().to_string();
        CreateRequest {
            id: id.to_owned(),
            bundle: self.path().to_owned(),
            rootfs_mounts: Vec::new(),
            stdin: String::new(),
            stdout: file("stdout"),
            stderr: file("stderr"),
        }
    }

    /// Create, through the real launcher, with the shim binary as runner and no cache.
    fn create(&self, id: &str) -> Result<Box<dyn ContainerProcess>, TaskError> {
        launcher().create(&self.request(id))
    }
}

fn launcher() -> ShimLauncher {
    ShimLauncher::new(
        RunnerSettings {
            exe: PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-wasmpod-v1")),
            containerd: None,
            cache_dir: None,
        },
        PathBuf::from("/run/wasmpod/runc/launcher-test"),
    )
}

/// Reaps the runner (this process is its parent), blocking until it exits.
fn wait(process: &dyn ContainerProcess) -> WaitStatus {
    waitpid(Pid::from_raw(process.pid() as i32), None).expect("waitpid on the runner")
}

fn exited(process: &dyn ContainerProcess, code: i32) -> WaitStatus {
    WaitStatus::Exited(Pid::from_raw(process.pid() as i32), code)
}

#[test]
#[ignore = "needs root"]
fn a_created_runner_waits_for_the_start_byte_then_runs_its_guest() {
    let bundle = Bundle::simple(p1::HELLO, &[]);
    let mut process = bundle.create("ready").expect("create");
    assert!(process.pid() > 1);
    let recorded = bundle.read(RUNNER_PID_FILE);
    assert!(
        recorded.starts_with(&process.pid().to_string()),
        "{RUNNER_PID_FILE} names the runner: {recorded:?}"
    );
    // Ready means prepared, not running: nothing is printed before Start.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(bundle.read("stdout"), "", "the guest ran before Start");
    process.start().expect("start");
    assert_eq!(wait(process.as_ref()), exited(process.as_ref(), 0));
    assert_eq!(bundle.read("stdout"), "hello from wasm\n");
    assert!(!process.out_of_memory());
    let second = process.start();
    assert!(
        matches!(second, Err(TaskError::FailedPrecondition(_))),
        "a second start: {second:?}"
    );
    process.release().expect("release");
}

#[test]
#[ignore = "needs root"]
fn a_prepared_runner_holds_no_pipe_from_the_shim_but_the_start_pipe() {
    let bundle = Bundle::simple(p1::HELLO, &[]);
    let mut process = bundle.create("descriptors").expect("create");
    // Ready: the runner has read its request (fd 5), reported (fd 3) and confined itself.
    let fd_dir = PathBuf::from(format!("/proc/{}/fd", process.pid()));
    let pipes: Vec<(String, PathBuf)> = std::fs::read_dir(&fd_dir)
        .expect("the runner's descriptors")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let number = entry.file_name().to_string_lossy().into_owned();
            target
                .to_string_lossy()
                .starts_with("pipe:")
                .then_some((number, target))
        })
        .collect();
    assert!(
        pipes.iter().all(|(number, _)| number == "4"),
        "pipes other than the start pipe (fd 4) are open: {pipes:?}"
    );
    assert_eq!(pipes.len(), 1, "the start pipe is open: {pipes:?}");
    process.start().expect("start");
    assert_eq!(wait(process.as_ref()), exited(process.as_ref(), 0));
    process.release().expect("release");
}

#[test]
#[ignore = "needs root"]
fn a_payload_that_is_not_wasm_fails_create_as_invalid_argument_with_its_message() {
    // Not ELF nor `#!` either (those are Linux containers, for runc).
    let bundle = Bundle::simple(b"plain text, not a module", &[]);
    let err = bundle.create("not-wasm").err().expect("create must fail");
    assert!(matches!(err, TaskError::InvalidArgument(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "container not-wasm: /app.wasm is not a WebAssembly binary (no \\0asm header)"
    );
}

#[test]
#[ignore = "needs root"]
fn an_annotation_out_of_range_fails_create_as_invalid_argument() {
    let bundle = Bundle::new(
        http::HELLO,
        &[],
        "{}",
        r#"{"wasmpod.dev/http-port":"70000"}"#,
    );
    let err = bundle.create("bad-port").err().expect("create must fail");
    assert!(matches!(err, TaskError::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("wasmpod.dev/http-port"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn a_taken_port_fails_create_as_failed_precondition() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("a free port");
    let port = taken.local_addr().unwrap().port();
    let annotations = format!(r#"{{"wasmpod.dev/http-port":"{port}"}}"#);
    let bundle = Bundle::new(http::HELLO, &[], "{}", &annotations);
    let err = bundle.create("port-taken").err().expect("create must fail");
    assert!(matches!(err, TaskError::FailedPrecondition(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("listening on 0.0.0.0:{port} for wasi:http")),
        "{message}"
    );
}

#[test]
#[ignore = "needs root"]
fn closing_the_start_pipe_before_start_ends_the_runner_without_running_the_guest() {
    let bundle = Bundle::simple(p1::HELLO, &[]);
    let mut process = bundle.create("never-started").expect("create");
    // Delete before Start: release closes the start pipe.
    process.release().expect("release");
    assert_eq!(wait(process.as_ref()), exited(process.as_ref(), 0));
    assert_eq!(bundle.read("stdout"), "", "the guest ran without Start");
}

#[test]
#[ignore = "needs root"]
fn a_guest_past_its_memory_limit_leaves_the_oom_marker() {
    let bundle = Bundle::new(
        p1::ALLOC,
        &["64"],
        r#"{"resources":{"memory":{"limit":16777216}}}"#,
        "{}",
    );
    let mut process = bundle.create("oom").expect("create");
    assert!(!process.out_of_memory(), "out of memory before it ran");
    process.start().expect("start");
    assert_eq!(
        wait(process.as_ref()),
        exited(process.as_ref(), OUT_OF_MEMORY_EXIT_CODE)
    );
    assert!(process.out_of_memory(), "the marker was not written");
    assert_eq!(bundle.read(OOM_MARKER_FILE), "1");
    assert!(
        bundle.read("stderr").contains("guest ran out of memory"),
        "{}",
        bundle.read("stderr")
    );
    process.release().expect("release");
}

#[test]
#[ignore = "needs root"]
fn a_runner_killed_before_start_dies_of_the_signal_and_is_then_gone() {
    let bundle = Bundle::simple(p1::HELLO, &[]);
    let mut process = bundle.create("killed").expect("create");
    assert!(process.signal(Signal::SIGKILL as u32).expect("kill"));
    assert_eq!(
        wait(process.as_ref()),
        WaitStatus::Signaled(Pid::from_raw(process.pid() as i32), Signal::SIGKILL, false)
    );
    assert!(
        !process.signal(Signal::SIGKILL as u32).expect("kill again"),
        "a reaped runner is reported gone"
    );
    process.release().expect("release");
    assert_eq!(bundle.read("stdout"), "");
}

// --- Refused by the dispatch before any process is made: no root needed.

#[test]
fn an_entrypoint_escaping_the_rootfs_fails_create_before_any_process() {
    let bundle = Bundle::simple(p1::HELLO, &[]);
    let outside = bundle.path().join("outside.wasm");
    std::fs::write(&outside, p1::HELLO).unwrap();
    std::os::unix::fs::symlink("../outside.wasm", bundle.path().join("rootfs/link.wasm")).unwrap();
    let spec = std::fs::read_to_string(bundle.path().join("config.json"))
        .unwrap()
        .replace("/app.wasm", "/link.wasm");
    std::fs::write(bundle.path().join("config.json"), spec).unwrap();
    let err = bundle.create("escape").err().expect("create must fail");
    assert!(matches!(err, TaskError::InvalidArgument(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("outside the container's root filesystem"),
        "{err}"
    );
    assert!(
        !bundle.path().join(RUNNER_PID_FILE).exists(),
        "a process was made"
    );
}

#[test]
fn a_bundle_without_a_valid_spec_fails_create_as_invalid_argument() {
    let bundle = Bundle::simple(p1::HELLO, &[]);
    std::fs::write(bundle.path().join("config.json"), "{ not json").unwrap();
    let err = bundle.create("bad-spec").err().expect("create must fail");
    assert!(matches!(err, TaskError::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("invalid OCI spec"), "{err}");
}

/// What the task service's Exec would ask for: `args` with `env`, output to `<exec_id>.out`.
fn exec_request(bundle: &Bundle, exec_id: &str, args: &[&str], env: &[&str]) -> ExecRequest {
    let stdout = bundle.path().join(format!("{exec_id}.out"));
    std::fs::write(&stdout, "").unwrap();
    let process = serde_json::json!({
        "args": args, "env": env, "cwd": "/", "user": {"uid": 0, "gid": 0}
    });
    ExecRequest {
        container_id: "c".into(),
        exec_id: exec_id.into(),
        process: serde_json::from_value(process).unwrap(),
        stdin: String::new(),
        stdout: stdout.display().to_string(),
        stderr: String::new(),
    }
}

fn namespace_of(pid: u32, name: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}")).expect("namespace link")
}

#[test]
#[ignore = "needs root"]
fn an_exec_runs_another_wasm_of_the_image_in_the_containers_namespaces() {
    let bundle = Bundle::new(
        p1::SLEEP,
        &["30"],
        r#"{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}]}"#,
        "{}",
    );
    std::fs::write(bundle.path().join("rootfs/args_env.wasm"), p1::ARGS_ENV).unwrap();
    std::fs::write(bundle.path().join("rootfs/exit_code.wasm"), p1::EXIT_CODE).unwrap();
    let mut container = bundle.create("c").expect("create");
    container.start().expect("start");

    // Its own args, env and stdout; the container's namespaces.
    let request = exec_request(&bundle, "env", &["/args_env.wasm", "x"], &["FROM_EXEC=1"]);
    let mut exec = container
        .exec_launcher()
        .unwrap()
        .exec(&request)
        .expect("exec");
    for ns in ["pid", "ipc", "uts"] {
        assert_eq!(
            namespace_of(exec.pid(), ns),
            namespace_of(container.pid(), ns),
            "{ns} namespace of the exec"
        );
    }
    assert_ne!(
        namespace_of(exec.pid(), "mnt"),
        namespace_of(container.pid(), "mnt"),
        "an exec gets a private root of its own"
    );
    exec.start().expect("start exec");
    let pid = Pid::from_raw(exec.pid() as i32);
    assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
    let out = bundle.read("env.out");
    assert!(out.contains("arg[0]=/args_env.wasm\narg[1]=x\n"), "{out}");
    assert!(out.contains("env:FROM_EXEC=1"), "{out}");
    assert!(
        !out.contains("PATH="),
        "the container's env leaked into the exec: {out}"
    );

    // Its own exit code, found through PATH as the entrypoint would be.
    let request = exec_request(&bundle, "code", &["exit_code.wasm", "7"], &["PATH=/"]);
    let mut exec = container
        .exec_launcher()
        .unwrap()
        .exec(&request)
        .expect("exec");
    exec.start().expect("start exec");
    let pid = Pid::from_raw(exec.pid() as i32);
    assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 7));
    exec.release();

    // Not a wasm program of the image: refused before any process.
    for args in [&["sh", "-c", "true"][..], &["/missing.wasm"]] {
        match container
            .exec_launcher()
            .unwrap()
            .exec(&exec_request(&bundle, "no", args, &[]))
        {
            Err(TaskError::FailedPrecondition(message)) => {
                assert!(message.contains(EXEC_TARGETS), "{message}")
            }
            Err(e) => panic!("{args:?}: {e}"),
            Ok(_) => panic!("{args:?}: exec accepted"),
        }
    }
    container.signal(libc::SIGKILL as u32).unwrap();
    let pid = Pid::from_raw(container.pid() as i32);
    assert_eq!(
        waitpid(pid, None).unwrap(),
        WaitStatus::Signaled(pid, nix::sys::signal::Signal::SIGKILL, false)
    );
    container.release().expect("release");
}

#[test]
#[ignore = "needs root"]
fn an_exec_into_a_container_whose_process_has_exited_is_refused() {
    let bundle = Bundle::simple(p1::HELLO, &[]);
    std::fs::write(bundle.path().join("rootfs/exit_code.wasm"), p1::EXIT_CODE).unwrap();
    let mut container = bundle.create("c").expect("create");
    container.start().expect("start");
    assert_eq!(wait(container.as_ref()), exited(container.as_ref(), 0));
    // Reaped: its pid is free; the exec must not join whatever takes it.
    let request = exec_request(&bundle, "late", &["/exit_code.wasm", "1"], &[]);
    match container.exec_launcher().unwrap().exec(&request) {
        Err(TaskError::FailedPrecondition(message)) => {
            assert!(message.contains("has exited"), "{message}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("exec into an exited container accepted"),
    }
    container.release().expect("release");
}
