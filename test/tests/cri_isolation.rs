//! What a wasm container's process can reach of the node, through CRI on containerd 1.6,
//! 1.7 and 2.1: its mount namespace and private root (no host file by any path, no host
//! `/proc`), the pod's DNS files (not the node's), a missing volume source failing the
//! start, and PID namespaces (per container, and per pod with `shareProcessNamespace`).
//!
//! Runs on the same node as the CRI suite (`cri/node.rs`: a private containerd with CRI,
//! the loopback-only test network, nothing left behind after each pod) and needs the same:
//! root, containerd, runc, busybox-static, containernetworking-plugins and the built shim.

// Shared with the CRI suite, which uses steps this one does not.
#[allow(dead_code)]
#[path = "cri/node.rs"]
#[macro_use]
mod node;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use wasmpod_fixtures::{p1, p2};
use wasmpod_test::containerd::ContainerdVersion;
use wasmpod_test::cri::{ContainerConfig, read_log};

use node::Node;

/// What the test puts in the volume; the guest must read exactly this.
const VOLUME_TEXT: &str = "volume file for the guest";

/// Paths that lead (or would, without isolation) to the node's files.
const HOST_PATHS: [&str; 6] = [
    "/proc/1/environ",
    "/etc/shadow",
    "/etc/passwd",
    "/../../etc/passwd",
    "/data/../../../etc/passwd",
    "/data/escape/etc/shadow",
];

/// A volume holding [`VOLUME_TEXT`] in `inside.txt` and a symlink `escape -> /`, readable
/// by uid 1000.
fn volume_with_escape(n: &Node, name: &str) -> std::path::PathBuf {
    let dir = n.c.dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.join("inside.txt");
    std::fs::write(&file, VOLUME_TEXT).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink("/", dir.join("escape")).unwrap();
    dir
}

/// The first line of each of the node's files a guest must never see (when it has one).
fn host_secrets() -> Vec<String> {
    ["/etc/shadow", "/etc/passwd"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|text| text.lines().next().map(str::to_owned))
        .filter(|line| !line.is_empty())
        .collect()
}

/// The guest cannot read a node file by any path (absolute, `..` walks, `/proc`, a symlink
/// in a volume pointing at `/`), under wasip1 and wasip2, as root and as uid 1000; the file
/// the test put in the volume is read.
fn guest_cannot_read_host_files(n: &Node, version: ContainerdVersion) {
    let volume = volume_with_escape(n, "vol-escape");
    let pod = n.start_pod("no-host-files");
    let secrets = host_secrets();
    let mut args: Vec<&str> = HOST_PATHS.to_vec();
    args.push("/data/inside.txt");
    for (abi, wasm) in [("p1", p1::READ_PATHS), ("p2", p2::READ_PATHS)] {
        let image = n.wasm_image(&format!("read-paths-{abi}"), wasm);
        for user in [None, Some(1000)] {
            let name = format!(
                "read-{abi}-{}",
                user.map_or("root".into(), |u| u.to_string())
            );
            let mut config = ContainerConfig::new(&name, &image)
                .args(args.iter().copied())
                .mount(&volume, "/data", true);
            if let Some(uid) = user {
                config = config.run_as(uid, uid);
            }
            let (status, log) = n.run_in(&pod, &config);
            let what = format!("{version}: {name}");
            assert_eq!(status.exit_code, 0, "{what}: {status:?} {log:?}");
            assert_eq!(log.len(), args.len(), "{what}: one line per path: {log:?}");
            for path in HOST_PATHS {
                let line = log
                    .iter()
                    .find(|l| l.starts_with(&format!("{path}: ")))
                    .unwrap_or_else(|| panic!("{what}: no line for {path}: {log:?}"));
                assert!(
                    line.starts_with(&format!("{path}: refused")),
                    "{what}: the guest reached {path}: {line}"
                );
            }
            for secret in &secrets {
                assert!(
                    !log.iter().any(|l| l.contains(secret.as_str())),
                    "{what}: a node file's content reached the guest: {log:?}"
                );
            }
            assert!(
                log.contains(&format!(
                    "/data/inside.txt: read {} bytes: {VOLUME_TEXT}",
                    VOLUME_TEXT.len()
                )),
                "{what}: the volume's own file must be readable: {log:?}"
            );
        }
    }
    n.teardown(&pod);
}

/// The runner of a running guest lives in a mount namespace of its own whose root is a
/// small tmpfs: no host mount (no `/proc`, no `/sys`), not the node's `/`, a read-only
/// volume read-only in the kernel, and the volume itself reachable.
fn runner_has_a_private_root(n: &Node, version: ContainerdVersion) {
    let volume = volume_with_escape(n, "vol-private-root");
    let image = n.wasm_image("sleep", p1::SLEEP);
    let pod = n.start_pod("private-root");
    let config = ContainerConfig::new("sleeper", &image)
        .args(["600"])
        .mount(&volume, "/data", true);
    let id = n.create_and_start(&pod, &config);
    n.wait_running(&id, "sleeper");
    let pid = n.cri.container_pid(&id).expect("the container's pid");
    let proc_dir = format!("/proc/{pid}");

    let ns = |who: &str| std::fs::read_link(format!("{who}/ns/mnt")).unwrap();
    assert_ne!(
        ns(&proc_dir),
        ns("/proc/self"),
        "{version}: the runner shares the host's mount namespace"
    );
    let root = std::fs::metadata(format!("{proc_dir}/root/")).unwrap();
    let host_root = std::fs::metadata("/").unwrap();
    assert_ne!(
        (root.dev(), root.ino()),
        (host_root.dev(), host_root.ino()),
        "{version}: the runner's root is the node's /"
    );
    let link = std::fs::read_link(format!("{proc_dir}/root")).unwrap();
    eprintln!("{version}: readlink {proc_dir}/root = {}", link.display());

    let mountinfo = std::fs::read_to_string(format!("{proc_dir}/mountinfo")).unwrap();
    let mounts: Vec<(String, String)> = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some((fields[4].to_owned(), fields.get(dash + 1)?.to_string()))
        })
        .collect();
    let root_fs = mounts
        .iter()
        .find(|(point, _)| point == "/")
        .map(|(_, fs)| fs);
    assert_eq!(
        root_fs.map(String::as_str),
        Some("tmpfs"),
        "{version}: the runner's / is not its private tmpfs:\n{mountinfo}"
    );
    for (point, _) in &mounts {
        assert!(
            point == "/" || point.starts_with("/preopens/") || point.starts_with("/etc/"),
            "{version}: a mount outside the private root's layout in the runner: {point}\n{mountinfo}"
        );
    }
    assert!(
        !Path::new(&format!("{proc_dir}/root/proc/1")).exists(),
        "{version}: the runner sees a /proc"
    );
    assert!(
        !Path::new(&format!("{proc_dir}/root/etc/shadow")).exists(),
        "{version}: the node's /etc/shadow is in the runner's root"
    );
    // The volume is preopen 1 (the rootfs is 0), read-only in the kernel.
    let inside = format!("{proc_dir}/root/preopens/1/inside.txt");
    assert_eq!(
        std::fs::read_to_string(&inside).ok().as_deref(),
        Some(VOLUME_TEXT),
        "{version}: the volume in the runner's root"
    );
    let write = std::fs::write(format!("{proc_dir}/root/preopens/1/new.txt"), "x");
    assert_eq!(
        write.as_ref().map_err(std::io::Error::kind),
        Err(std::io::ErrorKind::ReadOnlyFilesystem),
        "{version}: a read-only volume must be a read-only mount: {write:?}"
    );
    n.cri.stop_container(&id, 10).expect("StopContainer");
    n.teardown(&pod);
}

/// Names from the node's `/etc/hosts` other than localhost's, and the node's hostname.
fn node_only_names() -> Vec<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut names: Vec<String> = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split_whitespace().skip(1).map(str::to_owned))
        .chain(
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned()),
        )
        .filter(|name| {
            !name.is_empty() && !name.starts_with("localhost") && !name.starts_with("ip6-")
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A guest's name lookup reads the pod's hosts file (as kubelet mounts it, hostAliases
/// included), never the node's: `localhost` gets the pod file's (unusual) address, the
/// alias resolves, and the node's own names do not.
fn name_lookup_uses_the_pods_hosts_file(n: &Node, version: ContainerdVersion) {
    let etc = n.c.dir().join("pod-etc");
    std::fs::create_dir_all(&etc).unwrap();
    let hosts = etc.join("hosts");
    std::fs::write(
        &hosts,
        "# kubelet-managed hosts file (wasmpod test)\n127.0.0.42\tlocalhost\n10.11.12.13\twasmpod-alias.test\n",
    )
    .unwrap();
    // A name server nobody answers in the loopback-only pod network: lookups of other
    // names fail at once.
    let resolv = etc.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    for file in [&hosts, &resolv] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let node_names = node_only_names();
    let image = n.wasm_image("lookup", p2::LOOKUP);
    let pod = n.start_pod("pod-dns");
    let mut args = vec!["localhost".to_owned(), "wasmpod-alias.test".to_owned()];
    args.extend(node_names.iter().cloned());
    let config = ContainerConfig::new("lookup", &image)
        .args(args.clone())
        .mount(&hosts, "/etc/hosts", false)
        .mount(&resolv, "/etc/resolv.conf", false);
    let (status, log) = n.run_in(&pod, &config);
    let what = format!("{version}: lookup {args:?}");
    assert_eq!(
        log.first().map(String::as_str),
        Some("localhost: 127.0.0.42"),
        "{what}: localhost must come from the pod's hosts file, not the node's: {log:?} {:?}",
        read_log(n.log_path(&pod, &config))
    );
    assert_eq!(
        log.get(1).map(String::as_str),
        Some("wasmpod-alias.test: 10.11.12.13"),
        "{what}: the pod's host alias: {log:?}"
    );
    for name in &node_names {
        let line = log
            .iter()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{what}: no line for {name}: {log:?}"));
        assert!(
            line.starts_with(&format!("{name}: failed")),
            "{what}: {name} is only in the node's /etc/hosts (or its hostname) but resolved: {line}"
        );
    }
    assert_eq!(
        status.exit_code,
        if node_names.is_empty() { 0 } else { 1 },
        "{what}: {status:?} {log:?}"
    );
    n.teardown(&pod);
}

/// A volume whose source is gone when the container starts fails the start naming it (as
/// runc does), and leaves no process or mount behind.
fn missing_bind_source_fails_naming_it(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("hello", p1::HELLO);
    let gone = n.c.dir().join("vol-gone");
    let pod = n.start_pod("missing-source");
    let config = ContainerConfig::new("needs-volume", &image).mount(&gone, "/data", false);
    // CRI creates a missing host path as a directory at CreateContainer; the shim sees the
    // mount at StartContainer (task Create): remove it in between.
    let id = n
        .cri
        .create_container(&pod, &config)
        .unwrap_or_else(|e| panic!("{version}: CreateContainer: {e}"));
    std::fs::remove_dir(&gone).expect("CRI made the volume source");
    let err = n
        .cri
        .start_container(&id)
        .expect_err("a container whose volume source is missing must not start")
        .to_string();
    assert!(
        err.contains(&gone.display().to_string()) && err.contains("does not exist"),
        "{version}: the error must name the missing source {}: {err}",
        gone.display()
    );
    let runners: Vec<_> =
        n.c.shim_processes()
            .into_iter()
            .filter(|p| p.cmdline.iter().any(|a| a.contains(&id)))
            .collect();
    assert!(
        runners.is_empty(),
        "{version}: a process of the failed container is left: {runners:?}"
    );
    n.teardown(&pod);
}

/// `NSpid` of `/proc/<pid>/status`: the pid in each PID namespace, outermost first.
fn ns_pids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn pid_ns(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap()
}

/// Each container has its own PID namespace by default: the runner is its PID 1, and
/// StopContainer still ends a sleeping guest with 143 well within the grace period.
fn pid_namespace_per_container(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("sleep", p1::SLEEP);
    let pod = n.start_pod("pid-per-container");
    let config = ContainerConfig::new("sleeper", &image).args(["600"]);
    let id = n.create_and_start(&pod, &config);
    n.wait_running(&id, "sleeper");
    let pid = n.cri.container_pid(&id).expect("the container's pid");
    assert_eq!(
        ns_pids(pid),
        [pid, 1],
        "{version}: the runner must be PID 1 of a PID namespace of its own"
    );
    assert_ne!(pid_ns(pid), pid_ns(std::process::id()), "{version}");
    let (status, elapsed) = n.stop_container(&id);
    assert!(
        elapsed < Duration::from_secs(5),
        "{version}: StopContainer waited out the grace period ({elapsed:?}): SIGTERM dropped by a PID 1? {status:?}"
    );
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (143, "Error"),
        "{version}: {status:?}"
    );
    n.teardown(&pod);
}

/// With `shareProcessNamespace` the sandbox holds the pod's PID namespace (as its PID 1)
/// and both containers' runners are in it; each still stops with 143.
fn pod_pid_namespace_is_shared(n: &Node, version: ContainerdVersion) {
    let image = n.wasm_image("sleep", p1::SLEEP);
    let pod = n.run_pod(&n.pod("pid-shared").share_pid(true));
    let ids: Vec<String> = ["one", "two"]
        .iter()
        .map(|name| {
            let config = ContainerConfig::new(*name, &image).args(["600"]);
            let id = n.create_and_start(&pod, &config);
            n.wait_running(&id, name);
            id
        })
        .collect();
    let sandbox = n.cri.pod_pid(&pod.id).expect("the sandbox's pid");
    assert_eq!(
        ns_pids(sandbox),
        [sandbox, 1],
        "{version}: the sandbox must be PID 1 of the pod's PID namespace"
    );
    for id in &ids {
        let pid = n.cri.container_pid(id).expect("the container's pid");
        assert_eq!(
            pid_ns(pid),
            pid_ns(sandbox),
            "{version}: container {id} is not in the pod's PID namespace"
        );
        let pids = ns_pids(pid);
        assert!(
            pids.len() == 2 && pids[1] > 1,
            "{version}: NSpid of {pid}: {pids:?}"
        );
    }
    for id in &ids {
        let (status, elapsed) = n.stop_container(id);
        assert!(elapsed < Duration::from_secs(5), "{version}: {elapsed:?}");
        assert_eq!(status.exit_code, 143, "{version}: {status:?}");
    }
    n.teardown(&pod);
}

cri_suite! {
    versions {
        containerd_1_6 => ContainerdVersion::V1_6,
        containerd_1_7 => ContainerdVersion::V1_7,
        containerd_2_1 => ContainerdVersion::V2_1,
    }
    cases [
        guest_cannot_read_host_files,
        runner_has_a_private_root,
        name_lookup_uses_the_pods_hosts_file,
        missing_bind_source_fails_naming_it,
        pid_namespace_per_container,
        pod_pid_namespace_is_shared,
    ]
}
