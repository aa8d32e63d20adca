//! What the `ctr` suites (`ctr_run.rs`, `ctr_day2.rs`) share: a private containerd, images
//! of one `.wasm`, `ctr run` in the foreground or detached, waiting for RUNNING, and the
//! check that nothing was left behind.

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
