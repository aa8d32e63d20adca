//! The exec cases of the CRI suite (issue 12): `ExecSync`, kubelet's path for exec probes
//! (`livenessProbe.exec.command`, `readinessProbe`, ...) and for `kubectl exec` without a
//! terminal, into a running wasm container: the image's other `.wasm` programs run with
//! their own exit code, stdout and stderr and the container's env; a timeout is honoured
//! and leaves no process; anything not wasm is refused with FailedPrecondition; an exec
//! into a Linux sidecar of the same pod runs in runc.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use wasmpod_fixtures::p1;
use wasmpod_test::containerd::ContainerdVersion;
use wasmpod_test::cri::{ContainerConfig, CriError, api};
use wasmpod_test::image::ImageBuilder;

use super::node::{self, Node};

/// What the shim says when an exec names something other than a `.wasm` of the image.
const NOT_WASM: &str = "wasm containers can exec the .wasm programs of their image";

/// How many quick execs (`true`) run in the Linux sidecar.
const QUICK_EXECS: usize = 10;

/// PATH of the exec image: where a probe's bare command name is looked up.
const IMAGE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// An image whose entrypoint is `/sleep.wasm`, with `args_env`, `exit_code` and `stderr`
/// under `/tools`, and `exit_code` again as `/usr/local/bin/check.wasm` (a health check a
/// probe names by its bare name, found on PATH); returns its reference.
fn exec_image(n: &Node) -> String {
    n.import(
        &ImageBuilder::new("localhost/wasmpod/exec:latest")
            .platform("wasip1", "wasm")
            .entrypoint(["/sleep.wasm"])
            .env("PATH", IMAGE_PATH)
            .file("/sleep.wasm", p1::SLEEP, 0o755)
            .file("/tools/args_env.wasm", p1::ARGS_ENV, 0o755)
            .file("/tools/exit_code.wasm", p1::EXIT_CODE, 0o755)
            .file("/tools/stderr.wasm", p1::STDERR, 0o755)
            .file("/usr/local/bin/check.wasm", p1::EXIT_CODE, 0o755),
    )
}

/// Start the long-running wasm container `main` (env `FOO=bar`) of the exec image in `pod`;
/// returns its id once running.
fn start_main(n: &Node, pod: &wasmpod_test::cri::Pod) -> String {
    let config = ContainerConfig::new("main", exec_image(n))
        .args(["600"])
        .env("FOO", "bar");
    let id = n.create_and_start(pod, &config);
    n.wait_running(&id, "main");
    id
}

/// What kubelet's exec prober concludes from one run of `command` with `timeoutSeconds`.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    Success,
    /// Failure: a non-zero exit code, or the timeout.
    Failure(String),
    /// The runtime failed to run the probe (kubelet retries, counting no failure).
    Unknown(String),
}

/// Run `command` in container `id` as kubelet's prober runs `livenessProbe.exec.command`:
/// one `ExecSync` with the probe's `timeoutSeconds`; exit 0 is success, another exit code
/// a failure, a `DeadlineExceeded` a timed-out (failed) probe, any other error unknown.
fn exec_probe(n: &Node, id: &str, command: &[&str], timeout_seconds: u64) -> Probe {
    match n
        .cri
        .exec_sync(id, command, Duration::from_secs(timeout_seconds))
    {
        Ok(r) if r.exit_code == 0 => Probe::Success,
        Ok(r) => Probe::Failure(format!(
            "exit code {}: {}",
            r.exit_code,
            String::from_utf8_lossy(&r.stdout)
        )),
        Err(CriError::Rpc {
            code: tonic::Code::DeadlineExceeded,
            message,
            ..
        }) => Probe::Failure(format!("timed out: {message}")),
        Err(e) => Probe::Unknown(e.to_string()),
    }
}

/// Pids of the node's shim processes and their descendants.
fn shim_pids(n: &Node) -> BTreeSet<i32> {
    n.c.shim_processes().into_iter().map(|p| p.pid).collect()
}

/// How many TaskExecStarted events containerd published for container `id` (from the
/// harness's `ctr events` log).
fn execs_started(n: &Node, id: &str) -> usize {
    let log = std::fs::read_to_string(n.c.dir().join("events.log")).unwrap_or_default();
    let container = format!("\"container_id\":\"{id}\"");
    log.lines()
        .filter(|l| l.contains(" /tasks/exec-started ") && l.contains(&container))
        .count()
}

/// `ExecSync` of `cmd` (no timeout) that must answer; returns (exit code, stdout, stderr).
fn exec_ok(n: &Node, version: ContainerdVersion, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let r = n
        .cri
        .exec_sync(id, cmd, Duration::ZERO)
        .unwrap_or_else(|e| panic!("{version}: ExecSync {cmd:?}: {e}"));
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// ExecSync of the image's `.wasm` programs returns their exit code, stdout and stderr;
/// exec probes as kubelet runs them succeed and fail by exit code; `sh -c true` is refused
/// with FailedPrecondition; an exec in a Linux sidecar of the pod runs in runc; the main
/// container runs on throughout.
pub fn exec_sync_runs_wasm_programs(n: &Node, version: ContainerdVersion) {
    let pod = n.start_pod("exec");
    let id = start_main(n, &pod);
    let before = shim_pids(n);

    let (code, stdout, stderr) = exec_ok(n, version, &id, &["/tools/stderr.wasm"]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (0, "to stdout\n", "to stderr\n"),
        "{version}: exit code, stdout, stderr of the exec"
    );
    let (code, stdout, _) = exec_ok(n, version, &id, &["/tools/exit_code.wasm", "3"]);
    assert_eq!((code, stdout.as_str()), (3, ""), "{version}");
    let (code, stdout, stderr) = exec_ok(n, version, &id, &["/tools/args_env.wasm", "a", "b c"]);
    assert_eq!(code, 0, "{version}: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let args: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("arg["))
        .collect();
    assert_eq!(
        args,
        ["arg[0]=/tools/args_env.wasm", "arg[1]=a", "arg[2]=b c"],
        "{version}: {stdout}"
    );
    for env in ["env:FOO=bar".to_owned(), format!("env:PATH={IMAGE_PATH}")] {
        assert!(
            lines.contains(&env.as_str()),
            "{version}: {env} not in {stdout}"
        );
    }

    // livenessProbe: { exec: { command: [...] }, timeoutSeconds: 1 }
    assert_eq!(
        exec_probe(n, &id, &["check.wasm", "0"], 1),
        Probe::Success,
        "{version}: a passing exec probe"
    );
    let failed = exec_probe(n, &id, &["check.wasm", "1"], 1);
    assert!(
        matches!(&failed, Probe::Failure(why) if why.starts_with("exit code 1")),
        "{version}: a failing exec probe: {failed:?}"
    );

    match n.cri.exec_sync(&id, &["sh", "-c", "true"], Duration::ZERO) {
        Err(CriError::Rpc { code, message, .. }) => {
            assert!(message.contains(NOT_WASM), "{version}: {message}");
            assert_eq!(
                code,
                tonic::Code::FailedPrecondition,
                "{version}: {message}"
            );
        }
        other => panic!("{version}: ExecSync of sh must be refused: {other:?}"),
    }

    assert_execs_gone_and_container_running(
        n,
        &before,
        &id,
        &format!("{version}: the main container after the execs"),
    );

    // A Linux sidecar of the same pod: its exec runs in runc.
    let sidecar = ContainerConfig::new("sidecar", n.busybox_image())
        .command(["/bin/sleep"])
        .args(["600"]);
    let sidecar_id = n.create_and_start(&pod, &sidecar);
    n.wait_running(&sidecar_id, "sidecar");
    let (code, stdout, stderr) = exec_ok(
        n,
        version,
        &sidecar_id,
        &["sh", "-c", "echo from runc; echo oops >&2; exit 3"],
    );
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (3, "from runc\n", "oops\n"),
        "{version}: exec in the runc sidecar"
    );
    // Execs that exit before `runc exec` hands back their pid must still be waited for
    // (a lost early exit showed in about 1 exec in 10): each answers, well within 10 s.
    for i in 0..QUICK_EXECS {
        let answer = n
            .cri
            .exec_sync(&sidecar_id, &["true"], Duration::from_secs(10));
        assert!(
            answer.as_ref().is_ok_and(|r| r.exit_code == 0),
            "{version}: quick exec {i} in the runc sidecar: {answer:?}"
        );
    }
    n.teardown(&pod);
}

/// ExecSync of a program that outlives its timeout returns about when the timeout passes,
/// with the error CRI gives (DeadlineExceeded, "timeout ... exceeded"), and the exec's
/// process is gone; the container runs on. An ExecSync still running when the container is
/// stopped (a probe in flight) ends with it: exit 137, long before its timeout.
pub fn exec_sync_timeout_and_container_stop(n: &Node, version: ContainerdVersion) {
    let pod = n.start_pod("exec-timeout");
    let id = start_main(n, &pod);
    let before = shim_pids(n);

    let timeout = Duration::from_secs(2);
    let began = Instant::now();
    let answer = n.cri.exec_sync(&id, &["/sleep.wasm", "60"], timeout);
    let took = began.elapsed();
    eprintln!("{version}: ExecSync with a {timeout:?} timeout answered after {took:?}");
    match answer {
        Err(CriError::Rpc { code, message, .. }) => {
            assert_eq!(code, tonic::Code::DeadlineExceeded, "{version}: {message}");
            assert!(message.contains("timeout"), "{version}: {message}");
        }
        other => panic!("{version}: ExecSync past its timeout must fail: {other:?}"),
    }
    // Not before the timeout (it ran), and long before the guest's 60 s (it was stopped).
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(15),
        "{version}: ExecSync with a {timeout:?} timeout took {took:?}"
    );
    assert_execs_gone_and_container_running(
        n,
        &before,
        &id,
        &format!("{version}: the main container after the timed-out exec"),
    );

    // A probe in flight while kubelet stops the container: a second connection, as
    // kubelet's prober and its container stop run apart.
    let socket = n.c.cri_socket();
    let main = id.clone();
    let probe = std::thread::spawn(move || {
        let cri = wasmpod_test::cri::CriClient::connect(socket).expect("second CRI connection");
        let began = Instant::now();
        let answer = cri.exec_sync(&main, &["/sleep.wasm", "60"], Duration::from_secs(30));
        (answer, began.elapsed())
    });
    // Started (TaskExecStarted; the timed-out exec was the first), not just being prepared.
    wasmpod_test::poll::wait_until(Duration::from_secs(30), "the exec started", || {
        (execs_started(n, &id) == 2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{version}: {e}"));
    let (status, _) = n.stop_container(&id);
    assert_eq!(status.exit_code, 143, "{version}: {status:?}");
    let (answer, took) = probe.join().expect("probe thread");
    eprintln!("{version}: ExecSync in flight at StopContainer answered after {took:?}");
    let answer = answer.unwrap_or_else(|e| panic!("{version}: ExecSync in flight at stop: {e}"));
    assert_eq!(
        answer.exit_code, 137,
        "{version}: the exec of a stopped container"
    );
    assert!(
        took < Duration::from_secs(20),
        "{version}: ExecSync in flight at stop answered after {took:?} (its timeout: 30 s)"
    );
    n.teardown(&pod);
}

/// Every process the execs made is gone (within 10 s) and container `id` still runs.
fn assert_execs_gone_and_container_running(
    n: &Node,
    before: &BTreeSet<i32>,
    id: &str,
    after: &str,
) {
    let left = node::wait_until(
        Duration::from_secs(10),
        || shim_pids(n).difference(before).copied().collect::<Vec<_>>(),
        Vec::is_empty,
    );
    assert!(left.is_empty(), "{after}: processes left: {left:?}");
    assert_eq!(
        n.cri.container_status(id).expect("status").state,
        api::ContainerState::ContainerRunning as i32,
        "{after}: the container is not running"
    );
}
