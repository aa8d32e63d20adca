//! Day-2 operations through a private containerd and `ctr` (issue 12): pause and resume,
//! a shim binary replaced under a running pod, no output lost over many runs, an idle
//! container's memory not advised into huge pages (exec:
//! `ctr_exec.rs`). Needs what `ctr_run.rs` needs (root, containerd, runc, the built shim).

use std::time::{Duration, Instant};

use wasmpod_fixtures::p1;
use wasmpod_test::containerd::{Containerd, RUNTIME, require_root_and_containerd};

#[path = "ctr/common.rs"]
#[allow(dead_code)] // shared with ctr_run.rs, which uses other helpers
mod common;
use common::*;

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
    let annotation = sandbox_annotation(&c, "upgrade");
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

/// The mappings of `pid` advised `MADV_HUGEPAGE` (`hg` in smaps' VmFlags), as
/// `start-end: flags` lines.
fn huge_page_advised_mappings(pid: i32) -> Vec<String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut range = "";
    let mut advised = Vec::new();
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if flags.split_whitespace().any(|f| f == "hg") {
                advised.push(format!("{range}:{flags}"));
            }
        } else if !line.starts_with(|c: char| c.is_ascii_uppercase()) {
            range = line.split_whitespace().next().unwrap_or("");
        }
    }
    advised
}

/// An idle container must cost what it touches: no memory of the shim or the runner may be
/// advised into transparent huge pages, which fault in 2 MiB at a time (the static build's
/// allocator did this to its 1 GiB arena, and an idle container cost 14 MiB instead of 6).
#[test]
fn idle_shim_and_runner_map_no_huge_pages() {
    let c = containerd();
    let (img, entry) = wasm_image(&c, "idle-memory", p1::SLEEP);
    run_detached(&c, &[&img, "idle-memory", &entry, "600"]);
    let runner = i32::try_from(wait_running(&c, "idle-memory")).expect("pid");
    let daemons = c.shim_daemons();
    assert_eq!(daemons.len(), 1, "{daemons:#?}");
    for (role, pid) in [("runner", runner), ("shim", daemons[0].pid)] {
        let advised = huge_page_advised_mappings(pid);
        assert!(
            advised.is_empty(),
            "{role} (pid {pid}) has mappings advised MADV_HUGEPAGE:\n{}",
            advised.join("\n")
        );
    }
    c.kill_task("idle-memory", "SIGKILL").expect("kill");
    assert_eq!(
        c.wait_exit("idle-memory", Duration::from_secs(30)),
        Some(137)
    );
    c.delete_container("idle-memory").expect("delete");
    assert_clean(&c);
}
