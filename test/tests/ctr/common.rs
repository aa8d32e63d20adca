//! What the `ctr` suites (`ctr_run.rs`, `ctr_day2.rs`, `ctr_exec.rs`, `ctr_http_limits.rs`)
//! share: a private containerd, images of one `.wasm`, `ctr run` in the foreground or
//! detached, waiting for RUNNING, and the check that nothing was left behind.

use std::time::Duration;

use wasmpod_test::containerd::{Containerd, CtrOutput, RUNTIME, require_root_and_containerd};
use wasmpod_test::image::ImageBuilder;
use wasmpod_test::poll::wait_until;

/// Time a guest may take to stop after SIGTERM/SIGKILL (DESIGN: "promptly").
pub const STOP_WITHIN: Duration = Duration::from_secs(3);

/// `ctr run` options of a foreground run of the shim, removed when it exits.
pub const FOREGROUND: [&str; 3] = ["--rm", "--runtime", RUNTIME];
/// `ctr run` options of a detached run of the shim without stdio.
pub const DETACHED: [&str; 4] = ["-d", "--null-io", "--runtime", RUNTIME];

pub fn containerd() -> Containerd {
    require_root_and_containerd();
    Containerd::start().expect("start private containerd with the wasmpod shim")
}

/// Build a `wasip1/wasm` image `localhost/wasmpod/<name>:latest` whose entrypoint is
/// `entry` and which holds `files`, import it, and return its reference.
pub fn image(c: &Containerd, name: &str, entry: &str, files: &[(&str, &[u8])]) -> String {
    let mut b = ImageBuilder::new(format!("localhost/wasmpod/{name}:latest"))
        .platform("wasip1", "wasm")
        .entrypoint([entry]);
    for (path, bytes) in files {
        b = b.file(*path, bytes.to_vec(), 0o755);
    }
    c.import_image(&b).expect("import image")
}

/// The usual one-file image: `/<name>.wasm` as entrypoint.
pub fn wasm_image(c: &Containerd, name: &str, wasm: &[u8]) -> (String, String) {
    let entry = format!("/{name}.wasm");
    let reference = image(c, name, &entry, &[(&entry, wasm)]);
    (reference, entry)
}

/// `ctr run --rm --runtime <wasmpod> ARGS...` in the foreground.
pub fn run_foreground(c: &Containerd, args: &[&str]) -> CtrOutput {
    c.run([&FOREGROUND[..], args].concat()).expect("ctr run")
}

/// `ctr run -d --null-io --runtime <wasmpod> ARGS...`; asserts that `ctr` succeeded.
pub fn run_detached(c: &Containerd, args: &[&str]) {
    let out = c.run([&DETACHED[..], args].concat()).expect("ctr run -d");
    assert!(out.success(), "{out}");
}

/// The `ctr run --annotation` value that puts containers into one pod sandbox (one shim),
/// named `sandbox-<name>-<test pid>`; the harness removes that sandbox's state at the end.
pub fn sandbox_annotation(c: &Containerd, name: &str) -> String {
    let group = format!("sandbox-{name}-{}", std::process::id());
    c.note_group(&group);
    format!("io.kubernetes.cri.sandbox-id={group}")
}

/// The `arg[N]=...` lines the args_env guest printed, in order.
pub fn guest_args(out: &CtrOutput) -> Vec<String> {
    out.stdout_lines()
        .into_iter()
        .filter(|l| l.starts_with("arg["))
        .map(str::to_owned)
        .collect()
}

/// Removes the container record `ctr run` may keep when task creation failed.
pub fn remove_failed_container(c: &Containerd, name: &str) {
    let ls = c.ctr(["containers", "ls", "-q"]).expect("ls");
    if ls.stdout.lines().any(|l| l.trim() == name) {
        let rm = c.ctr(["containers", "rm", name]).expect("rm");
        assert!(rm.success(), "{rm}");
    }
}

/// Assert nothing is left: no shim process, mount, FIFO, socket, container or task, and
/// containerd still answers.
pub fn assert_clean(c: &Containerd) {
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
pub fn wait_running(c: &Containerd, id: &str) -> u32 {
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

/// `ctr tasks exec --fifo-dir <harness> --exec-id EXEC_ID OPTS... CONTAINER CMD...` in the
/// foreground: `ctr` exits with the exec'd process's exit code and shows its output.
pub fn exec(
    c: &Containerd,
    container: &str,
    exec_id: &str,
    opts: &[&str],
    cmd: &[&str],
) -> CtrOutput {
    c.ctr(exec_args(c, container, exec_id, opts, cmd))
        .expect("ctr tasks exec")
}

/// The argv of [`exec`] (after `ctr -a .. -n ..`).
pub fn exec_args(
    c: &Containerd,
    container: &str,
    exec_id: &str,
    opts: &[&str],
    cmd: &[&str],
) -> Vec<String> {
    let fifo = c.fifo_dir().to_string_lossy().into_owned();
    let mut args: Vec<String> = ["tasks", "exec", "--fifo-dir", &fifo, "--exec-id", exec_id]
        .map(str::to_owned)
        .into();
    args.extend(opts.iter().map(|s| (*s).to_owned()));
    args.push(container.to_owned());
    args.extend(cmd.iter().map(|s| (*s).to_owned()));
    args
}

/// The `/tasks/...` events containerd published about process `exec_id` of `container`
/// (from the harness's `ctr events` log), in order, as `(topic, event JSON)`.
pub fn process_events(c: &Containerd, container: &str, exec_id: &str) -> Vec<(String, String)> {
    let log = std::fs::read_to_string(c.dir().join("events.log")).unwrap_or_default();
    let of_container = format!("\"container_id\":\"{container}\"");
    let of_exec = format!("\"exec_id\":\"{exec_id}\"");
    let of_process = format!("\"id\":\"{exec_id}\"");
    log.lines()
        .filter(|l| l.contains(&of_container) && (l.contains(&of_exec) || l.contains(&of_process)))
        .filter_map(|l| {
            // `<time> <namespace> <topic> <json>`
            let topic = l.split_whitespace().find(|w| w.starts_with("/tasks/"))?;
            let json = &l[l.find('{')?..];
            Some((topic.to_owned(), json.to_owned()))
        })
        .collect()
}

/// The exit status of exec'd process `exec_id` of `container`, from its `/tasks/exit`
/// event (protobuf JSON omits a zero status), once published.
pub fn exec_exit_status(c: &Containerd, container: &str, exec_id: &str) -> Option<u32> {
    process_events(c, container, exec_id)
        .into_iter()
        .filter(|(topic, _)| topic == "/tasks/exit")
        .map(|(_, json)| {
            serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| v.get("exit_status").and_then(serde_json::Value::as_u64))
                .unwrap_or(0) as u32
        })
        .next_back()
}

/// Wait (30 s at most) for [`exec_exit_status`].
pub fn wait_exec_exit(c: &Containerd, container: &str, exec_id: &str) -> Option<u32> {
    wait_until(
        Duration::from_secs(30),
        format!("exit of exec {exec_id} in {container}"),
        || exec_exit_status(c, container, exec_id),
    )
    .ok()
}

/// The cgroup directories of process `pid`: one per hierarchy (cgroup v1) or the one
/// (v2), from `/proc/<pid>/cgroup`; the root (`/`) is left out.
pub fn cgroup_dirs(pid: u32) -> Vec<std::path::PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup of pid");
    cgroups
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if path == "/" {
                return None;
            }
            let hierarchy = match controllers {
                "" => String::new(),
                named if named.starts_with("name=") => named.trim_start_matches("name=").to_owned(),
                list => list.to_owned(),
            };
            let root = if hierarchy.is_empty() {
                if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                    "/sys/fs/cgroup".to_owned()
                } else {
                    "/sys/fs/cgroup/unified".to_owned()
                }
            } else {
                format!("/sys/fs/cgroup/{hierarchy}")
            };
            Some(std::path::PathBuf::from(format!("{root}{path}")))
        })
        .collect()
}

/// The namespaces of process `pid` (`/proc/<pid>/ns/*` links, e.g. `net:[4026531992]`),
/// sorted by kind; `pid_for_children` and `time_for_children` left out.
pub fn namespaces(pid: u32) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/ns"))
        .expect("ns of pid")
        .flatten()
        .filter_map(|e| {
            let kind = e.file_name().to_string_lossy().into_owned();
            let link = std::fs::read_link(e.path()).ok()?;
            (!kind.ends_with("_for_children")).then(|| (kind, link.to_string_lossy().into_owned()))
        })
        .collect();
    all.sort();
    all
}

/// The state column of `ctr tasks ls` for `id`.
pub fn task_status(c: &Containerd, id: &str) -> String {
    let ls = c.ctr(["tasks", "ls"]).expect("ctr tasks ls");
    ls.stdout_lines()
        .into_iter()
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
        })
        .unwrap_or_else(|| panic!("task {id} not listed: {ls}"))
}
