//! The CRI suite: kubelet's path to wasmpod, on containerd 1.6, 1.7 and 2.1.
//!
//! Each test starts a private containerd with CRI enabled
//! ([`Containerd::builder`](wasmpod_test::containerd::Containerd::builder) with
//! [`with_cri`](wasmpod_test::containerd::ContainerdBuilder::with_cri): runtime handler
//! `wasmpod`, the loopback-only test CNI network, `localhost/pause:latest`), imports its
//! images into `k8s.io` (never pulls), and drives RunPodSandbox → CreateContainer →
//! StartContainer → ContainerStatus / the CRI log file → StopContainer → StopPodSandbox →
//! RemovePodSandbox through [`CriClient`](wasmpod_test::cri::CriClient), then checks that
//! nothing is left: no shim process, no pod cgroup, no mount, no netns.
//!
//! Every case runs once per containerd version (modules `containerd_1_6`, `containerd_1_7`,
//! `containerd_2_1`). 1.7 and 2.1 come from `scripts/fetch-containerd.sh` (run by
//! `scripts/setup.sh`; a test runs it itself when the cache is empty). A version whose
//! binaries cannot be fetched is skipped with a loud message, except under `CI`, where
//! that fails. Needs root, containerd, runc, busybox-static, containernetworking-plugins
//! and the built shim (`cargo build -p containerd-shim-wasmpod`); fails clearly otherwise.
//!
//! The tests of one binary run one at a time: CRI always uses namespace `k8s.io`, and
//! per-namespace runtime state dirs are shared between containerd instances.
//!
//! The cases are below, the exec cases (ExecSync, exec probes) in `cri/exec.rs`; the node
//! they run on and the kubelet steps they share are in `cri/node.rs`.

#[path = "cri/node.rs"]
#[macro_use]
mod node;

#[path = "cri/exec.rs"]
mod exec;

use std::time::Duration;

use wasmpod_fixtures::{p1, p2};
use wasmpod_test::containerd::{ContainerdVersion, PAUSE_IMAGE};
use wasmpod_test::cri::{ContainerConfig, api, read_log};

use exec::{exec_sync_runs_wasm_programs, exec_sync_timeout_and_container_stop};
use node::Node;

// --- the cases: each gets a fresh node of one containerd version ----------------------

/// A pod with one wasm container that prints and exits 0: the log file has the line,
/// exit code 0, reason Completed; then nothing is left.
fn hello_exits_zero(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("hello", p1::HELLO);
    let pod_config = n.pod("hello");
    let config = ContainerConfig::new("hello", &image);
    let (pod, status, log) = n.run_to_exit(&pod_config, &config);
    if let Ok(s) = n.cri.pod_status(&pod.id) {
        eprintln!("cri: {version}: sandbox status info: {:?}", s.info);
    }
    assert_eq!(status.exit_code, 0, "{version}: {status:?}");
    assert_eq!(status.reason, "Completed", "{version}: {status:?}");
    assert_eq!(log, ["hello from wasm"], "{version}: CRI log");
    n.teardown(&pod);
}

/// A wasm container exiting 3: exit code 3, reason Error.
fn exit_code_three(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("exit-code", p1::EXIT_CODE);
    let config = ContainerConfig::new("exit", &image).args(["3"]);
    let (pod, status, _) = n.run_to_exit(&n.pod("exit3"), &config);
    assert_eq!(status.exit_code, 3, "{version}: {status:?}");
    assert_eq!(status.reason, "Error", "{version}: {status:?}");
    n.teardown(&pod);
}

/// A hostNetwork pod runs a wasm container.
fn host_network_pod(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("hello", p1::HELLO);
    let config = ContainerConfig::new("hello", &image);
    let (pod, status, log) = n.run_to_exit(&n.pod("hostnet").host_network(true), &config);
    assert_eq!(status.exit_code, 0, "{version}: {status:?}");
    assert_eq!(log, ["hello from wasm"], "{version}: CRI log");
    assert_eq!(
        n.netns_path(&pod),
        None,
        "{version}: hostNetwork pod got a netns"
    );
    n.teardown(&pod);
}

/// A volume mount is visible to the guest (it writes a file the host sees); a read-only
/// one refuses writes.
fn volume_mounts(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("files", p1::FILES);
    let rw = n.c.dir().join("vol-rw");
    let ro = n.c.dir().join("vol-ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();

    let pod = n.start_pod("volumes");
    let writer = ContainerConfig::new("writer", &image)
        .args(["/data"])
        .mount(&rw, "/data", false);
    let (status, log) = n.run_in(&pod, &writer);
    assert_eq!(status.exit_code, 0, "{version}: {status:?} log {log:?}");
    assert_eq!(log, ["read: written by wasm"], "{version}");
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).ok().as_deref(),
        Some("written by wasm"),
        "{version}: the guest's write is not on the host volume"
    );

    let reader = ContainerConfig::new("readonly", &image)
        .args(["/data", "read-only-check"])
        .mount(&ro, "/data", true);
    let (status, log) = n.run_in(&pod, &reader);
    assert_eq!(
        status.exit_code, 0,
        "{version}: write to ro mount: {status:?} {log:?}"
    );
    assert!(
        log.first().is_some_and(|l| l.starts_with("write refused")),
        "{version}: {log:?}"
    );
    assert!(
        !ro.join("denied.txt").exists(),
        "{version}: ro volume written"
    );
    n.teardown(&pod);
}

/// `runAsUser`/`runAsGroup`: the guest's file access is checked as that user, and what it
/// writes is owned by it on the host.
fn runs_as_the_pod_user(n: &Node, version: ContainerdVersion) {
    use std::os::unix::fs::MetadataExt;
    let image = n.wasm_image("files", p1::FILES);
    let owned = n.c.dir().join("vol-user");
    let root_only = n.c.dir().join("vol-root");
    std::fs::create_dir_all(&owned).unwrap();
    std::fs::create_dir_all(&root_only).unwrap();
    std::os::unix::fs::chown(&owned, Some(1000), Some(1000)).unwrap();

    let pod = n.start_pod("user");
    let writer = ContainerConfig::new("as-user", &image)
        .args(["/data"])
        .mount(&owned, "/data", false)
        .run_as(1000, 1000);
    let (status, log) = n.run_in(&pod, &writer);
    assert_eq!(status.exit_code, 0, "{version}: {status:?} log {log:?}");
    assert_eq!(log, ["read: written by wasm"], "{version}");
    let written = std::fs::metadata(owned.join("out.txt")).expect("the guest's file");
    assert_eq!(
        (written.uid(), written.gid()),
        (1000, 1000),
        "{version}: the file the guest wrote is not owned by runAsUser/runAsGroup"
    );

    let denied = ContainerConfig::new("denied", &image)
        .args(["/data"])
        .mount(&root_only, "/data", false)
        .run_as(1000, 1000);
    let (status, log) = n.run_in(&pod, &denied);
    // containerd copies the log on its own schedule: give the line a moment to land.
    let stderr = node::wait_until(
        Duration::from_secs(5),
        || -> Vec<String> {
            read_log(n.log_path(&pod, &denied))
                .into_iter()
                .filter(|line| line.stream == "stderr")
                .map(|line| line.message)
                .collect()
        },
        |lines| !lines.is_empty(),
    );
    assert_eq!(
        status.exit_code, 1,
        "{version}: uid 1000 wrote to a root-owned 0755 dir: {log:?} {stderr:?}"
    );
    assert!(
        stderr
            .iter()
            .any(|l| l.to_lowercase().contains("permission denied")),
        "{version}: {stderr:?}"
    );
    assert!(!root_only.join("out.txt").exists(), "{version}");
    n.teardown(&pod);
}

/// Two wasm containers and a busybox sidecar in one pod: all run, one shim process
/// serves the pod, the wasm guest reaches the sidecar over the pod's loopback, and
/// StopContainer stops the sleeping guest well within its grace period.
fn mixed_pod(n: &Node, version: ContainerdVersion) {
    let sleep = n.wasm_image("sleep", p1::SLEEP);
    let client = n.wasm_image("tcp-client", p2::TCP_CLIENT);
    let busybox = n.busybox_image();
    let pod = n.start_pod("mixed");

    let sidecar = ContainerConfig::new("sidecar", &busybox)
        .command(["/bin/nc"])
        .args([
            "-ll",
            "-p",
            "8080",
            "-e",
            "/bin/sh",
            "-c",
            "read line; echo pong",
        ]);
    let sidecar_id = n.create_and_start(&pod, &sidecar);
    let sleeper = ContainerConfig::new("sleeper", &sleep).args(["600"]);
    let sleeper_id = n.create_and_start(&pod, &sleeper);
    let caller = ContainerConfig::new("caller", &client).args(["127.0.0.1:8080", "ping"]);
    let caller_id = n.create_and_start(&pod, &caller);

    for (id, name) in [(&sidecar_id, "sidecar"), (&sleeper_id, "sleeper")] {
        n.wait_running(id, name);
    }
    let daemons = n.c.shim_daemons();
    assert_eq!(
        daemons.len(),
        1,
        "{version}: expected one wasmpod shim for the pod: {daemons:?}"
    );
    let runc_shims: Vec<_> =
        n.c.all_shim_processes()
            .into_iter()
            .filter(|p| p.cmdline.iter().any(|a| a.contains("containerd-shim-runc")))
            .collect();
    assert!(
        runc_shims.is_empty(),
        "{version}: the pod's sidecar must run under the wasmpod shim, found runc shims: {runc_shims:?}"
    );

    let (status, log) = n.exited(&pod, &caller, &caller_id);
    assert_eq!(
        (status.exit_code, log.as_slice()),
        (0, ["received: pong".to_owned()].as_slice()),
        "{version}: wasm guest -> sidecar over loopback: {status:?}, log {:?}",
        read_log(n.log_path(&pod, &caller))
    );

    let (status, elapsed) = n.stop_container(&sleeper_id);
    assert!(
        elapsed < Duration::from_secs(5),
        "{version}: StopContainer waited out the grace period ({elapsed:?}): SIGTERM ignored? {status:?}"
    );
    assert_eq!(status.exit_code, 143, "{version}: {status:?}");
    n.cri
        .stop_container(&sidecar_id, 10)
        .expect("StopContainer sidecar");
    n.teardown(&pod);
}

/// A wasi:http component in a pod serves HTTP inside the pod's network namespace (reached
/// from inside that netns on 127.0.0.1:8080), its per-request stderr line reaches the CRI
/// log, and StopContainer drains it to exit 0.
fn http_pod_serves(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("http-hello", wasmpod_fixtures::http::HELLO);
    let pod = n.start_pod("http");
    let web = ContainerConfig::new("web", &image);
    let web_id = n.create_and_start(&pod, &web);
    let netns = n
        .netns_path(&pod)
        .expect("the pod has its own network namespace");
    let curl = || {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["curl", "-s", "-m", "2", "http://127.0.0.1:8080/greet"])
            .output()
            .expect("run nsenter curl");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let body =
        wasmpod_test::poll::wait_until(Duration::from_secs(20), "the server answering", curl)
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        body, "hello from wasi:http\n",
        "{version}: response from the pod"
    );
    let (status, elapsed) = n.stop_container(&web_id);
    assert!(
        elapsed < Duration::from_secs(5),
        "{version}: StopContainer waited out the grace period: {status:?}"
    );
    assert_eq!(status.exit_code, 0, "{version}: drained server: {status:?}");
    let log = read_log(n.log_path(&pod, &web));
    assert!(
        log.iter()
            .any(|l| l.stream == "stderr" && l.message == "hello: GET /greet"),
        "{version}: the guest's stderr line in the CRI log: {log:?}"
    );
    n.teardown(&pod);
}

/// A guest allocating past its memory limit ends OOMKilled.
fn memory_limit_oom(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("alloc", p1::ALLOC);
    let config = ContainerConfig::new("alloc", &image)
        .args(["256"])
        .memory_limit(64 << 20);
    let (pod, status, log) = n.run_to_exit(&n.pod("oom"), &config);
    assert!(
        !log.iter().any(|l| l == "done"),
        "{version}: guest allocated 256 MiB under a 64 MiB limit: {log:?}"
    );
    assert_eq!(status.reason, "OOMKilled", "{version}: {status:?}");
    n.teardown(&pod);
}

/// The value of cgroup file `file` of process `pid` (v1: under `controller`'s hierarchy).
fn cgroup_value(pid: u32, controller: &str, file: &str) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup of pid");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let path = cgroups
        .lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ours = if v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == controller)
            };
            ours.then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup for {pid}: {cgroups}"));
    let dir = if v2 {
        format!("/sys/fs/cgroup{path}")
    } else {
        format!("/sys/fs/cgroup/{controller}{path}")
    };
    let file = format!("{dir}/{file}");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .to_owned()
}

/// UpdateContainerResources (kubelet's in-place resize) changes the running container's
/// memory and CPU limits in its cgroup, and the guest keeps running.
fn update_container_resources(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("sleep", p1::SLEEP);
    let pod = n.start_pod("resize");
    let config = ContainerConfig::new("sleeper", &image)
        .args(["600"])
        .memory_limit(64 << 20);
    let id = n.create_and_start(&pod, &config);
    n.wait_running(&id, "sleeper");
    let pid = n.cri.container_pid(&id).expect("container pid");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (memory_file, quota_file) = if v2 {
        ("memory.max", "cpu.max")
    } else {
        ("memory.limit_in_bytes", "cpu.cfs_quota_us")
    };
    assert_eq!(
        cgroup_value(pid, "memory", memory_file),
        (64u64 << 20).to_string(),
        "{version}"
    );
    n.cri
        .update_container_resources(
            &id,
            api::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{version}: UpdateContainerResources: {e}"));
    assert_eq!(
        cgroup_value(pid, "memory", memory_file),
        (128u64 << 20).to_string(),
        "{version}"
    );
    let quota = cgroup_value(pid, "cpu", quota_file);
    assert!(
        quota.starts_with("50000"),
        "{version}: {quota_file} = {quota}"
    );
    assert_eq!(
        n.cri.container_status(&id).expect("status").state,
        api::ContainerState::ContainerRunning as i32,
        "{version}: the guest keeps running"
    );

    // A guest that waits, then grows past its starting limit: resized meanwhile, it may.
    let image = n.wasm_image("alloc", p1::ALLOC);
    let grower = ContainerConfig::new("grower", &image)
        .args(["64", "3"])
        .memory_limit(48 << 20);
    let id = n.create_and_start(&pod, &grower);
    n.cri
        .update_container_resources(
            &id,
            api::LinuxContainerResources {
                memory_limit_in_bytes: 160 << 20,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{version}: UpdateContainerResources: {e}"));
    let (status, log) = n.exited(&pod, &grower, &id);
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (0, "Completed"),
        "{version}: a guest under a raised limit must grow past the old one: {status:?} {log:?}"
    );
    assert!(log.iter().any(|l| l == "done"), "{version}: {log:?}");
    n.teardown(&pod);
}

/// containerd restarts while a pod runs (SIGTERM, started again): the containers keep
/// running; one exits afterwards and CRI sees it EXITED with its code; one runs out of
/// memory afterwards and CRI sees `OOMKilled`, which only the shim's TaskOOM event carries
/// (the shim reconnects its event publisher to the new containerd).
fn exit_after_containerd_restart(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("exit-code", p1::EXIT_CODE);
    let sleeper = n.wasm_image("sleep", p1::SLEEP);
    let alloc = n.wasm_image("alloc", p1::ALLOC);
    let pod = n.start_pod("restart");
    let config = ContainerConfig::new("sleeper", &sleeper).args(["5"]);
    let id = n.create_and_start(&pod, &config);
    n.wait_running(&id, "sleeper");
    let hog = ContainerConfig::new("hog", &alloc)
        .args(["256", "5"])
        .memory_limit(64 << 20);
    let hog_id = n.create_and_start(&pod, &hog);
    n.wait_running(&hog_id, "hog");
    n.c.restart(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{version}: restarting containerd: {e}"));
    // The CRI connection breaks with the restart; the client reconnects on a later call.
    let status = wasmpod_test::poll::wait_until(
        Duration::from_secs(60),
        format!("{version}: the exit after the restart reaching CRI"),
        || {
            n.cri
                .container_status(&id)
                .ok()
                .filter(|s| s.state == api::ContainerState::ContainerExited as i32)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", n.cri.container_status(&id)));
    assert_eq!(status.exit_code, 0, "{version}: {status:?}");
    let hog_status = wasmpod_test::poll::wait_until(
        Duration::from_secs(60),
        format!("{version}: the OOM after the restart reaching CRI"),
        || {
            n.cri
                .container_status(&hog_id)
                .ok()
                .filter(|s| s.state == api::ContainerState::ContainerExited as i32)
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (hog_status.exit_code, hog_status.reason.as_str()),
        (137, "OOMKilled"),
        "{version}: {hog_status:?}"
    );
    // The pod still takes new containers from the new containerd.
    let (status, _) = n.run_in(&pod, &ContainerConfig::new("three", &image).args(["3"]));
    assert_eq!(status.exit_code, 3, "{version}: {status:?}");
    n.teardown(&pod);
}

/// ContainerStats reports non-zero CPU and memory for a busy guest.
fn stats_of_busy_guest(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("spin", p1::SPIN);
    let pod = n.start_pod("stats");
    let config = ContainerConfig::new("spin", &image);
    let id = n.create_and_start(&pod, &config);
    n.wait_running(&id, "spin");
    std::thread::sleep(Duration::from_millis(1500));
    let stats = n.cri.container_stats(&id).expect("ContainerStats");
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map_or(0, |v| v.value);
    let mem = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    assert!(
        cpu > 0,
        "{version}: zero CPU for a spinning guest: {stats:?}"
    );
    assert!(mem > 0, "{version}: zero memory working set: {stats:?}");
    n.cri.stop_container(&id, 5).expect("StopContainer");
    n.teardown(&pod);
}

/// Removing a pod whose container still runs (StopPodSandbox stops it) leaves nothing:
/// no shim process, cgroup, mount or netns.
fn remove_running_pod_leaves_nothing(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("sleep", p1::SLEEP);
    let pod = n.start_pod("cleanup");
    let config = ContainerConfig::new("sleeper", &image).args(["600"]);
    let id = n.create_and_start(&pod, &config);
    n.wait_running(&id, "sleeper");
    assert!(
        n.netns_path(&pod).is_some(),
        "{version}: pod without hostNetwork has no netns path in its spec"
    );
    n.teardown(&pod);
}

/// The harness itself, with runc (no wasmpod involved): a busybox pod on the test CNI
/// network echoes a line into its CRI log, exits 0 / Completed, gets a netns holding only
/// `lo` with 127.0.0.1 as pod IP, and leaves nothing behind.
fn runc_pod_baseline(n: &Node, version: ContainerdVersion) {
    let busybox = n.busybox_image();
    let pod = n.run_pod(&n.pod("runc").runtime_handler("runc"));
    let status = n.cri.pod_status(&pod.id).expect("PodSandboxStatus");
    let ip = status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|net| net.ip.clone());
    assert_eq!(ip.as_deref(), Some("127.0.0.1"), "{version}: pod IP");
    let config = ContainerConfig::new("echo", &busybox)
        .command(["/bin/sh", "-c"])
        .args([
            "echo hi; { read l; read l; while read n r; do echo \"${n%:}\"; done; } </proc/net/dev",
        ]);
    let (status, log) = n.run_in(&pod, &config);
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (0, "Completed"),
        "{version}: {status:?}"
    );
    assert_eq!(
        log,
        ["hi", "lo"],
        "{version}: CRI log (the pod netns must hold only lo)"
    );
    n.teardown(&pod);
}

/// Sanity of the CRI node itself: the runtime and network are ready and the sandbox
/// image is present (no pod involved, so this passes before the shim supports pods).
fn node_is_ready(n: &Node, version: ContainerdVersion) {
    let status = n.cri.status().expect("CRI Status");
    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    for kind in ["RuntimeReady", "NetworkReady"] {
        let cond = conditions.iter().find(|c| c.r#type == kind);
        assert!(
            cond.is_some_and(|c| c.status),
            "{version}: {kind} not true: {conditions:?}"
        );
    }
    assert!(
        n.cri
            .wait_image(PAUSE_IMAGE, Duration::from_secs(10))
            .expect("ImageStatus"),
        "{version}: {PAUSE_IMAGE} not present"
    );
}

cri_suite! {
    versions {
        containerd_1_6 => ContainerdVersion::V1_6,
        containerd_1_7 => ContainerdVersion::V1_7,
        containerd_2_1 => ContainerdVersion::V2_1,
    }
    cases [
        node_is_ready,
        runc_pod_baseline,
        hello_exits_zero,
        exit_code_three,
        http_pod_serves,
        host_network_pod,
        volume_mounts,
        runs_as_the_pod_user,
        mixed_pod,
        memory_limit_oom,
        update_container_resources,
        exit_after_containerd_restart,
        stats_of_busy_guest,
        remove_running_pod_leaves_nothing,
        exec_sync_runs_wasm_programs,
        exec_sync_timeout_and_container_stop,
    ]
}
