//! `ctr task exec` through a private containerd (issue 12): the image's other `.wasm`
//! programs run in a running container (refused for anything else, and for a terminal),
//! killed by exec id or with its container; exec into a Linux sidecar goes to runc.
//! Needs what `ctr_run.rs` needs (root, containerd, runc, the built shim), busybox-static
//! (the sidecar) and `script` (util-linux: a terminal for `ctr`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use wasmpod_fixtures::p1;
use wasmpod_test::containerd::{Containerd, CtrOutput, require_root_and_containerd};
use wasmpod_test::image::ImageBuilder;
use wasmpod_test::poll::wait_until;

#[path = "ctr/common.rs"]
#[allow(dead_code)] // shared with ctr_run.rs, which uses other helpers
mod common;
use common::*;

/// What the shim says when an exec names something other than a `.wasm` of the image.
const NOT_WASM: &str = "wasm containers can exec the .wasm programs of their image";

/// How many quick execs (`true`) run in the Linux sidecar: a lost early exit showed in
/// about 1 exec in 10.
const QUICK_EXECS: usize = 20;

/// Where the exec tests' image keeps its programs besides the entrypoint.
const TOOLS: &str = "/tools";

/// An image whose entrypoint is `/sleep.wasm` and which also holds `args_env`,
/// `exit_code`, `stderr` and `files` under [`TOOLS`], and `/bin/tool`, a file that starts
/// like an ELF executable (not wasm); returns its reference.
fn exec_image(c: &Containerd, name: &str) -> String {
    let elf = [b"\x7fELF\x02\x01\x01".as_slice(), &[0; 57]].concat();
    image(
        c,
        name,
        "/sleep.wasm",
        &[
            ("/sleep.wasm", p1::SLEEP),
            ("/tools/args_env.wasm", p1::ARGS_ENV),
            ("/tools/exit_code.wasm", p1::EXIT_CODE),
            ("/tools/stderr.wasm", p1::STDERR),
            ("/tools/files.wasm", p1::FILES),
            ("/bin/tool", &elf),
        ],
    )
}

/// `{TOOLS}/<name>.wasm`.
fn tool(name: &str) -> String {
    format!("{TOOLS}/{name}.wasm")
}

/// Pids of this containerd's shim processes and their descendants.
fn shim_pids(c: &Containerd) -> BTreeSet<i32> {
    c.shim_processes().into_iter().map(|p| p.pid).collect()
}

/// The shim's processes are `before` again (within 10 s: the execs' runners are gone) and
/// task `id` still runs.
fn assert_execs_gone_and_task_running(
    c: &Containerd,
    before: &BTreeSet<i32>,
    id: &str,
    when: &str,
) {
    let gone = wait_until(Duration::from_secs(10), "the exec processes gone", || {
        (shim_pids(c) == *before).then_some(())
    });
    assert!(
        gone.is_ok(),
        "{when}: processes left: {:?}",
        shim_pids(c).difference(before).collect::<Vec<_>>()
    );
    assert_eq!(
        task_status(c, id),
        "RUNNING",
        "{when}: task {id} no longer runs"
    );
}

/// Assert that `ctr` failed and said `wanted` (every fragment, case-insensitive).
fn assert_refused(out: &CtrOutput, wanted: &[&str]) {
    assert!(!out.success(), "must be refused: {out}");
    let said = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    for w in wanted {
        assert!(said.contains(&w.to_lowercase()), "{w:?} not in: {out}");
    }
}

/// A foreground `ctr task exec` running in the background: its stdout lines on a channel.
struct RunningExec {
    child: Child,
    lines: Receiver<String>,
}

impl RunningExec {
    fn spawn(c: &Containerd, container: &str, exec_id: &str, cmd: &[&str]) -> Self {
        let mut child = c
            .ctr_spawn(exec_args(c, container, exec_id, &[], cmd))
            .expect("spawn ctr tasks exec");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn expect_line(&self, want: &str) {
        let line = self.lines.recv_timeout(Duration::from_secs(30));
        assert_eq!(line.as_deref(), Ok(want), "first stdout line of the exec");
    }

    /// `ctr`'s exit code once it exits (within 30 s: it must, the process was killed).
    fn exit_code(mut self) -> Option<i32> {
        let status = wait_until(Duration::from_secs(30), "ctr tasks exec exits", || {
            self.child.try_wait().expect("try_wait")
        });
        match status {
            Ok(status) => status.code(),
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{e}")
            }
        }
    }
}

/// `ctr task exec` of the image's other `.wasm` programs in a running wasm container: each
/// runs with its own args and exit code, the container's env, mounts and (with `--user`)
/// the exec's user, its own stdout and stderr, and with TaskExecAdded/TaskExecStarted/
/// TaskExit events. Anything not wasm (`sh`, an ELF) and a terminal (`-t`) are refused and
/// leave nothing. An exec in a Linux sidecar of the pod runs in runc.
#[test]
fn exec_runs_the_wasm_programs_of_the_image() {
    use std::os::unix::fs::MetadataExt;
    require_root_and_containerd();
    // An exec whose exit is lost hangs `ctr`: fail in 30 s rather than the default 120 s.
    let c = Containerd::builder()
        .ctr_timeout(Duration::from_secs(30))
        .start()
        .expect("start private containerd with the wasmpod shim");
    let img = exec_image(&c, "exec");
    let data = c.dir().join("exec-data");
    let owned = c.dir().join("exec-owned");
    for dir in [&data, &owned] {
        std::fs::create_dir_all(dir).expect("volume dir");
    }
    std::os::unix::fs::chown(&owned, Some(1000), Some(1000)).expect("chown");
    let mount = |dir: &std::path::Path, dst: &str| {
        format!("type=bind,src={},dst={dst},options=rbind:rw", dir.display())
    };
    let (data_mount, owned_mount) = (mount(&data, "/data"), mount(&owned, "/owned"));
    run_detached(
        &c,
        &[
            "--env",
            "FOO=bar",
            "--mount",
            &data_mount,
            "--mount",
            &owned_mount,
            &img,
            "exec-main",
            "/sleep.wasm",
            "600",
        ],
    );
    let main_pid = wait_running(&c, "exec-main");
    let before = shim_pids(&c);

    // Its own exit code, in ctr's exit and in the exec's TaskExit event.
    let out = exec(&c, "exec-main", "code", &[], &[&tool("exit_code"), "7"]);
    assert_eq!(out.code(), Some(7), "{out}");
    assert_eq!(wait_exec_exit(&c, "exec-main", "code"), Some(7));
    let topics: Vec<String> = process_events(&c, "exec-main", "code")
        .into_iter()
        .map(|(topic, _)| topic)
        .collect();
    assert_eq!(
        topics,
        ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"],
        "events of the exec"
    );

    // Its own args; the env of the exec spec (ctr copies the container's, FOO=bar).
    let out = exec(
        &c,
        "exec-main",
        "args",
        &[],
        &[&tool("args_env"), "a", "b c"],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let args = guest_args(&out);
    let arg0 = format!("arg[0]={}", tool("args_env"));
    assert_eq!(args, [arg0.as_str(), "arg[1]=a", "arg[2]=b c"], "{out}");
    assert!(out.stdout_lines().contains(&"env:FOO=bar"), "{out}");

    // A bare name is found in the exec's cwd, as an entrypoint is.
    let out = exec(
        &c,
        "exec-main",
        "relative",
        &["--cwd", TOOLS],
        &["args_env.wasm", "rel"],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout_lines().contains(&"arg[1]=rel"), "{out}");

    // Its own stdout and stderr, kept apart.
    let out = exec(&c, "exec-main", "streams", &[], &[&tool("stderr")]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout_lines(), ["to stdout"], "{out}");
    assert!(out.stderr.lines().any(|l| l == "to stderr"), "{out}");

    // The container's mounts, preopened read-write.
    let out = exec(&c, "exec-main", "mount", &[], &[&tool("files"), "/data"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout_lines(), ["read: written by wasm"], "{out}");
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt"))
            .ok()
            .as_deref(),
        Some("written by wasm"),
        "the exec's write is not on the host"
    );
    // The exec spec's user: uid 1000 may write to its own dir (and the file is its own),
    // not to root's.
    let out = exec(
        &c,
        "exec-main",
        "user",
        &["--user", "1000:1000"],
        &[&tool("files"), "/owned"],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let written = std::fs::metadata(owned.join("out.txt")).expect("the exec's file");
    assert_eq!(
        (written.uid(), written.gid()),
        (1000, 1000),
        "owner of the exec's file"
    );
    let out = exec(
        &c,
        "exec-main",
        "user-denied",
        &["--user", "1000:1000"],
        &[&tool("files"), "/data"],
    );
    assert_eq!(
        out.code(),
        Some(1),
        "uid 1000 wrote to root's 0755 dir: {out}"
    );

    // Not wasm: refused with the reason, nothing started.
    let out = exec(&c, "exec-main", "shell", &[], &["sh", "-c", "true"]);
    assert_refused(&out, &[NOT_WASM, "failed precondition"]);
    let out = exec(&c, "exec-main", "elf", &[], &["/bin/tool"]);
    assert_refused(&out, &[NOT_WASM, "failed precondition"]);
    // A terminal: refused (ctr needs one of its own to ask for it).
    let out = exec_on_a_terminal(&c, "exec-main", "tty", &[&tool("args_env")]);
    assert!(out.0 != Some(0), "exec -t must be refused: {}", out.1);
    let said = out.1.to_lowercase();
    assert!(
        said.contains("terminal") && said.contains("not supported"),
        "exec -t refused without naming the terminal: {}",
        out.1
    );
    for id in ["shell", "elf", "tty"] {
        assert_eq!(
            exec_exit_status(&c, "exec-main", id),
            None,
            "a refused exec {id} published an exit"
        );
    }
    assert_execs_gone_and_task_running(&c, &before, "exec-main", "after the execs");
    assert_eq!(wait_running(&c, "exec-main"), main_pid);

    // A Linux sidecar of the same pod: its exec runs in runc.
    let busybox = c
        .import_image(&ImageBuilder::busybox("localhost/wasmpod/busybox:latest").expect("busybox"))
        .expect("import busybox");
    let annotation = sandbox_annotation(&c, "exec");
    run_detached(
        &c,
        &[
            "--annotation",
            &annotation,
            &busybox,
            "exec-side",
            "sleep",
            "600",
        ],
    );
    wait_running(&c, "exec-side");
    let out = exec(
        &c,
        "exec-side",
        "sh",
        &[],
        &["sh", "-c", "echo from runc; exit 3"],
    );
    assert_eq!(out.code(), Some(3), "{out}");
    assert_eq!(out.stdout_lines(), ["from runc"], "{out}");
    // Execs that exit before `runc exec` hands back their pid: each must still be waited for
    // (ctr asks for Wait before Start).
    for n in 0..QUICK_EXECS {
        let out = exec(&c, "exec-side", &format!("quick-{n}"), &[], &["true"]);
        assert_eq!(out.code(), Some(0), "quick exec {n}: {out}");
    }

    let cgroups = cgroup_dirs(main_pid);
    for id in ["exec-main", "exec-side"] {
        c.kill_task(id, "SIGKILL").expect("kill");
        assert_eq!(c.wait_exit(id, Duration::from_secs(30)), Some(137), "{id}");
        c.delete_container(id).expect("delete");
    }
    assert_clean(&c);
    let left: Vec<_> = cgroups.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups of the container left: {left:?}");
}

/// `ctr task exec -t ...` on a terminal (`script` gives `ctr` one: it needs a console of
/// its own before it asks for the exec); returns `ctr`'s exit code and what it printed.
fn exec_on_a_terminal(
    c: &Containerd,
    container: &str,
    exec_id: &str,
    cmd: &[&str],
) -> (Option<i32>, String) {
    let mut argv = vec![
        "ctr".to_owned(),
        "-a".to_owned(),
        c.socket().to_string_lossy().into_owned(),
        "-n".to_owned(),
        c.namespace().to_owned(),
    ];
    argv.extend(exec_args(c, container, exec_id, &["-t"], cmd));
    let quoted: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
    let out = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &quoted.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script (util-linux)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

/// A long exec runs in the container's cgroup and namespaces (its own mount namespace
/// with the same mounts), beside other execs; `ctr task
/// kill --exec-id` kills it (137) and only it; the exec still running when the container's
/// main process exits is killed with it; after delete nothing is left (no process, no
/// cgroup).
#[test]
fn exec_killed_by_its_id_and_with_its_container() {
    let c = containerd();
    let img = exec_image(&c, "exec-kill");
    run_detached(&c, &[&img, "exec-kill", "/sleep.wasm", "600"]);
    let main_pid = wait_running(&c, "exec-kill");
    let cgroups = cgroup_dirs(main_pid);
    assert!(
        !cgroups.is_empty(),
        "the container has no cgroup of its own"
    );
    let before = shim_pids(&c);

    let long = RunningExec::spawn(&c, "exec-kill", "long", &["/sleep.wasm", "600"]);
    long.expect_line("sleeping");
    let started: Vec<i32> = shim_pids(&c).difference(&before).copied().collect();
    assert!(!started.is_empty(), "no process for the exec");
    for pid in &started {
        let pid = *pid as u32;
        assert_eq!(cgroup_dirs(pid), cgroups, "cgroups of exec process {pid}");
        // Every namespace but the mount namespace: an exec runner builds its own view of
        // the rootfs and the container's mounts (the guest sees them only as preopens).
        let shared = |pid| {
            let mut all = namespaces(pid);
            all.retain(|(kind, _)| kind != "mnt");
            all
        };
        assert_eq!(
            shared(pid),
            shared(main_pid),
            "namespaces of exec process {pid}"
        );
    }
    let ps = c.ctr(["tasks", "ps", "exec-kill"]).expect("ctr tasks ps");
    for pid in &started {
        assert!(
            ps.stdout_lines()
                .iter()
                .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
            "exec process {pid} not in `ctr tasks ps`: {ps}"
        );
    }

    // Another exec beside it.
    let out = exec(&c, "exec-kill", "beside", &[], &[&tool("exit_code"), "0"]);
    assert_eq!(out.code(), Some(0), "{out}");

    let out = c
        .ctr([
            "tasks",
            "kill",
            "--exec-id",
            "long",
            "-s",
            "SIGKILL",
            "exec-kill",
        ])
        .expect("ctr tasks kill --exec-id");
    assert!(out.success(), "{out}");
    assert_eq!(
        long.exit_code(),
        Some(137),
        "ctr tasks exec of the killed exec"
    );
    assert_eq!(wait_exec_exit(&c, "exec-kill", "long"), Some(137));
    assert_execs_gone_and_task_running(&c, &before, "exec-kill", "after killing an exec");
    assert_eq!(c.exit_status("exec-kill"), None);

    // The main process exits: the exec still running goes with it.
    let orphan = RunningExec::spawn(&c, "exec-kill", "orphan", &["/sleep.wasm", "600"]);
    orphan.expect_line("sleeping");
    c.kill_task("exec-kill", "SIGKILL")
        .expect("kill the main process");
    assert_eq!(c.wait_exit("exec-kill", Duration::from_secs(30)), Some(137));
    assert_eq!(
        orphan.exit_code(),
        Some(137),
        "ctr tasks exec of the orphaned exec"
    );
    assert_eq!(wait_exec_exit(&c, "exec-kill", "orphan"), Some(137));

    c.delete_container("exec-kill").expect("delete");
    assert_clean(&c);
    let left: Vec<_> = cgroups.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups of the container left: {left:?}");
}
