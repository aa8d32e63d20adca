//! Confinement of wasm container processes (issue 10), through CRI on containerd 1.6, 1.7
//! and 2.1: after Create the process running a guest (and the pod's pause process) holds
//! only the spec's capabilities, runs under seccomp, with the spec's `oom_score_adj` and
//! open-files limit, on every one of its threads; guests still work so confined; a spec
//! with a user namespace fails Create by name and leaves nothing.
//!
//! Every check reads the kernel's view (`/proc/<pid>/task/*/status`, `/proc/<pid>/limits`,
//! `/proc/<pid>/oom_score_adj`) and compares it with the OCI spec containerd wrote into the
//! bundle, i.e. with what CRI asked for. Needs what the CRI suite needs (see `cri.rs`).

#[path = "cri/node.rs"]
#[allow(dead_code)] // shared with cri.rs, which uses the steps this suite does not
#[macro_use]
mod node;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmpod_fixtures::{http, p1, p2};
use wasmpod_test::containerd::{ContainerdVersion, RUNTIME};
use wasmpod_test::cri::{
    ContainerConfig, ContainerSecurity, Pod, SeccompProfile, read_log, with_user_namespace,
};
use wasmpod_test::image::ImageBuilder;

use node::Node;

/// Open files of a container whose spec sets no `RLIMIT_NOFILE` (the shim's default).
const DEFAULT_NOFILE: u64 = 65_536;

/// The status fields of one thread of a process.
type Status = BTreeMap<String, String>;

/// `/proc/<pid>/task/<tid>/status` of every thread of `pid`.
fn thread_statuses(pid: u32) -> Vec<Status> {
    let dir = format!("/proc/{pid}/task");
    let mut statuses = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path().join("status");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // exited meanwhile
        };
        statuses.push(
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                .collect(),
        );
    }
    assert!(!statuses.is_empty(), "no threads under {dir}");
    statuses
}

fn hex_field(status: &Status, key: &str) -> u64 {
    u64::from_str_radix(&status[key], 16).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// The capability mask of a spec list of names (`["CAP_CHOWN", ...]`).
fn mask(names: &Value) -> u64 {
    names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|n| caps::Capability::from_str(n).map_or(0, |c| c.bitmask()))
        .fold(0, |all, bit| all | bit)
}

/// The pid of task `id` in CRI's namespace.
fn task_pid(n: &Node, id: &str) -> u32 {
    let ls = n.c.ctr_in("k8s.io", ["tasks", "ls"]).expect("ctr tasks ls");
    ls.stdout_lines()
        .into_iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&id))
        .and_then(|cols| cols.get(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no task {id}: {ls}"))
}

/// The OCI spec containerd wrote for container (or sandbox) `id`.
fn bundle_spec(n: &Node, id: &str) -> Value {
    let path =
        n.c.state()
            .join("io.containerd.runtime.v2.task/k8s.io")
            .join(id)
            .join("config.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("config.json")
}

/// What the kernel shows of one confined process.
struct Seen {
    threads: usize,
    /// `Seccomp_filters` of the main thread (wasmpod's two + the spec's).
    filters: u32,
}

/// Asserts that every thread of the process of `id` holds exactly the spec's capability
/// sets (for a non-root user: none, as after runc's exec), runs under seccomp with
/// no_new_privs as the spec's user, and that the process has the spec's `oom_score_adj`
/// and `RLIMIT_NOFILE` (or [`DEFAULT_NOFILE`]).
fn assert_confined(n: &Node, id: &str, what: &str) -> Seen {
    let v = format!("{}: {what}", n.c.dir().display());
    let pid = task_pid(n, id);
    let spec = bundle_spec(n, id);
    let process = &spec["process"];
    let caps = &process["capabilities"];
    let uid = process["user"]["uid"].as_u64().unwrap_or(0);
    let (bounding, mut effective, mut permitted) = (
        mask(&caps["bounding"]),
        mask(&caps["effective"]),
        mask(&caps["permitted"]),
    );
    if uid != 0 {
        // No ambient capabilities from CRI: an exec'd program would hold none.
        effective = mask(&caps["ambient"]);
        permitted = effective;
    }
    let statuses = thread_statuses(pid);
    for status in &statuses {
        let thread = format!("{v}: thread {} ({})", status["Pid"], status["Name"]);
        assert_eq!(hex_field(status, "CapBnd"), bounding, "{thread}: CapBnd");
        assert_eq!(hex_field(status, "CapEff"), effective, "{thread}: CapEff");
        assert_eq!(hex_field(status, "CapPrm"), permitted, "{thread}: CapPrm");
        assert_eq!(hex_field(status, "CapAmb"), 0, "{thread}: CapAmb");
        assert_eq!(status["Seccomp"], "2", "{thread}: Seccomp (2 = filter)");
        assert_eq!(status["NoNewPrivs"], "1", "{thread}: NoNewPrivs");
        let uids: Vec<u64> = status["Uid"]
            .split_whitespace()
            .filter_map(|u| u.parse().ok())
            .collect();
        assert_eq!(uids, [uid; 4], "{thread}: Uid (real, effective, saved, fs)");
    }
    if let Some(want) = process["oomScoreAdj"].as_i64() {
        let got = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
        assert_eq!(got.trim(), want.to_string(), "{v}: oom_score_adj");
    }
    let nofile = process["rlimits"]
        .as_array()
        .into_iter()
        .flatten()
        .rfind(|l| l["type"] == "RLIMIT_NOFILE")
        .map(|l| (l["soft"].as_u64().unwrap(), l["hard"].as_u64().unwrap()))
        .unwrap_or_else(|| {
            // The default, or the limit inherited from containerd (this test's) when lower.
            let mut inherited = libc::rlimit {
                rlim_cur: 0,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: getrlimit writes into the struct we own.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut inherited) };
            let inherited = inherited.rlim_max;
            let nofile = DEFAULT_NOFILE.min(inherited);
            (nofile, nofile)
        });
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files: Vec<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(
        open_files,
        [nofile.0, nofile.1],
        "{v}: RLIMIT_NOFILE\n{limits}"
    );
    let filters = statuses
        .iter()
        .find(|s| s["Pid"] == pid.to_string())
        .and_then(|s| s.get("Seccomp_filters")?.parse().ok())
        .unwrap_or(0);
    Seen {
        threads: statuses.len(),
        filters,
    }
}

/// Creates and starts `config` in `pod` with `security`; returns the container id.
fn start_with(
    n: &Node,
    pod: &Pod,
    config: &ContainerConfig,
    security: &ContainerSecurity,
) -> String {
    let id = n
        .cri
        .create_container_with(pod, config, |c| security.apply(c))
        .unwrap_or_else(|e| panic!("CreateContainer {}: {e}", config.name));
    n.cri
        .start_container(&id)
        .unwrap_or_else(|e| panic!("StartContainer {}: {e}", config.name));
    id
}

// --- the cases ---------------------------------------------------------------------------

/// The default security context: the runner and the pause process hold exactly the
/// spec's capabilities on every thread, run under wasmpod's own seccomp filter (one
/// filter: no profile was asked for), with CRI's `oom_score_adj` and NOFILE; SIGTERM still
/// stops the confined guest at once.
fn default_context_is_confined(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("sleep", p1::SLEEP);
    let pod = n.start_pod("confined");
    let config = ContainerConfig::new("sleeper", &image).args(["600"]);
    let id = n.create_and_start(&pod, &config);
    n.wait_running(&id, "sleeper");
    let seen = assert_confined(n, &id, &format!("{version} runner"));
    assert_eq!(seen.filters, 2, "{version}: wasmpod's two filters only");
    let sandbox = assert_confined(n, &pod.id, &format!("{version} pause"));
    assert_eq!(
        sandbox.threads, 1,
        "{version}: the pause process is one thread"
    );
    let (status, elapsed) = n.stop_container(&id);
    assert_eq!(status.exit_code, 143, "{version}: {status:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "{version}: stop took {elapsed:?}"
    );
    n.teardown(&pod);
}

/// `drop: [ALL]` with the RuntimeDefault profile: no capability in any set of any thread,
/// two filters (wasmpod's and the spec's), and a guest still runs to its output.
fn drop_all_with_runtime_default(n: &Node, version: ContainerdVersion) {
    let sleep = n.wasm_image("sleep", p1::SLEEP);
    let hello = n.wasm_image("hello", p1::HELLO);
    let pod = n.start_pod("dropall");
    let security = ContainerSecurity::drop_all().seccomp(SeccompProfile::RuntimeDefault);
    let config = ContainerConfig::new("sleeper", &sleep).args(["600"]);
    let id = start_with(n, &pod, &config, &security);
    n.wait_running(&id, "sleeper");
    let spec = bundle_spec(n, &id);
    assert_eq!(
        mask(&spec["process"]["capabilities"]["bounding"]),
        0,
        "{version}: CRI's drop ALL"
    );
    assert!(
        spec["linux"]["seccomp"].is_object(),
        "{version}: no seccomp in the spec"
    );
    let seen = assert_confined(n, &id, &format!("{version} drop ALL"));
    assert_eq!(
        seen.filters, 3,
        "{version}: wasmpod's two filters + RuntimeDefault"
    );
    n.cri.stop_container(&id, 5).expect("StopContainer");

    let config = ContainerConfig::new("hello", &hello);
    let id = start_with(n, &pod, &config, &security);
    let (status, log) = n.exited(&pod, &config, &id);
    assert_eq!(
        (status.exit_code, log.as_slice()),
        (0, ["hello from wasm".to_owned()].as_slice()),
        "{version}: {status:?}"
    );
    n.teardown(&pod);
}

/// A wasi:http server (tokio, hyper, the epoch ticker: many threads) under RuntimeDefault
/// serves, every one of its threads confined; a p2 TCP client and a p2 name lookup
/// (glibc's resolver) in the same pod work under wasmpod's filter.
fn guests_work_confined(n: &Node, version: ContainerdVersion) {
    let web_image = n.wasm_image("http-hello", http::HELLO);
    let client_image = n.wasm_image("tcp-client", p2::TCP_CLIENT);
    let lookup_image = n.wasm_image("lookup", p2::LOOKUP);
    let pod = n.start_pod("confined-http");
    let web = ContainerConfig::new("web", &web_image);
    let security = ContainerSecurity::default().seccomp(SeccompProfile::RuntimeDefault);
    let web_id = start_with(n, &pod, &web, &security);
    n.wait_running(&web_id, "web");

    let client = ContainerConfig::new("client", &client_image)
        .args(["127.0.0.1:8080", "GET /greet HTTP/1.0\r\n"]);
    let client_id = n.create_and_start(&pod, &client);
    let (status, log) = n.exited(&pod, &client, &client_id);
    assert_eq!(
        status.exit_code,
        0,
        "{version}: tcp client: {status:?} {:?}",
        read_log(n.log_path(&pod, &client))
    );
    assert!(
        log.first()
            .is_some_and(|l| l.starts_with("received: HTTP/1.")),
        "{version}: tcp client to the server: {log:?}"
    );
    // Served while the client ran: the server's threads all exist now.
    let seen = assert_confined(n, &web_id, &format!("{version} wasi:http"));
    assert!(
        seen.threads > 2,
        "{version}: expected the server's threads, saw {}",
        seen.threads
    );
    assert_eq!(seen.filters, 3, "{version}: wasmpod's two + RuntimeDefault");

    let lookup = ContainerConfig::new("lookup", &lookup_image).args(["localhost"]);
    let lookup_id = n.create_and_start(&pod, &lookup);
    let (status, log) = n.exited(&pod, &lookup, &lookup_id);
    assert_eq!(status.exit_code, 0, "{version}: lookup: {log:?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("localhost: ") && l.contains("127.0.0.1")),
        "{version}: {log:?}"
    );

    let (status, _) = n.stop_container(&web_id);
    assert_eq!(status.exit_code, 0, "{version}: drained server: {status:?}");
    n.teardown(&pod);
}

/// `runAsUser: 1000`: no capability in the effective or permitted set (the bounding set is
/// the spec's), uid 1000 on every thread.
fn non_root_user_holds_no_capabilities(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("sleep", p1::SLEEP);
    let pod = n.start_pod("confined-user");
    let config = ContainerConfig::new("sleeper", &image)
        .args(["600"])
        .run_as(1000, 1000);
    let id = n.create_and_start(&pod, &config);
    n.wait_running(&id, "sleeper");
    assert_confined(n, &id, &format!("{version} runAsUser"));
    let pid = task_pid(n, &id);
    for status in thread_statuses(pid) {
        assert_eq!(hex_field(&status, "CapEff"), 0, "{version}: {status:?}");
    }
    n.cri.stop_container(&id, 5).expect("StopContainer");
    n.teardown(&pod);
}

/// A spec with uid/gid mappings (`ctr run --uidmap`, what `hostUsers: false` asks) fails
/// Create naming user namespaces (InvalidArgument, as CRI shows on 2.1 with kubelet's
/// `hostUsers: false` request), and leaves nothing behind.
fn user_namespace_fails_create(n: &Node, version: ContainerdVersion) {
    let image =
        n.c.import_image(&ImageBuilder::wasm(
            "localhost/wasmpod/hello:latest",
            "/hello.wasm",
            p1::HELLO,
        ))
        .expect("import");
    let out =
        n.c.run([
            "--rm",
            "--runtime",
            RUNTIME,
            "--uidmap",
            "0:100000:65536",
            "--gidmap",
            "0:100000:65536",
            &image,
            "userns",
        ])
        .expect("ctr run");
    assert!(!out.success(), "{version}: a userns container ran: {out}");
    assert!(
        out.stderr.contains("user namespaces") && out.stderr.contains("not supported by wasmpod"),
        "{version}: {out}"
    );
    let left = n.c.wait_no_leftovers(Duration::from_secs(10));
    assert!(left.is_empty(), "{version}: left behind:\n{left}");
    let containers =
        n.c.ctr(["containers", "ls", "-q"])
            .expect("ctr containers ls");
    assert_eq!(containers.stdout.trim(), "", "{version}: {containers}");
    if version == ContainerdVersion::V2_1 {
        // kubelet's way (hostUsers: false) on the one version whose CRI sends it.
        let started = Instant::now();
        let refused = n.cri.run_pod_with(&n.pod("userns"), |c| {
            with_user_namespace(c, 100_000, 65_536)
        });
        let err = refused
            .expect_err("RunPodSandbox of a userns pod succeeded")
            .to_string();
        assert!(err.contains("InvalidArgument"), "{version}: {err}");
        assert!(
            err.contains("not supported by wasmpod"),
            "{version}: {err} after {:?}",
            started.elapsed()
        );
        let left = n.c.wait_no_leftovers(Duration::from_secs(10));
        assert!(left.is_empty(), "{version}: left behind:\n{left}");
    }
}

cri_suite! {
    versions {
        containerd_1_6 => ContainerdVersion::V1_6,
        containerd_1_7 => ContainerdVersion::V1_7,
        containerd_2_1 => ContainerdVersion::V2_1,
    }
    cases [
        default_context_is_confined,
        drop_all_with_runtime_default,
        guests_work_confined,
        non_root_user_holds_no_capabilities,
        user_namespace_fails_create,
    ]
}
