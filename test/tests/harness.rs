//! Proves the containerd harness itself with the default runc runtime (no wasmpod shim
//! needed): a busybox image is imported and `ctr run --rm` echoes a line, and nothing is
//! left behind afterwards.
//!
//! Needs root, containerd, runc and busybox-static (`scripts/setup.sh`); fails with a
//! clear message when they are missing.

use std::time::Duration;

use wasmpod_test::containerd::{Containerd, require_root_and_containerd};
use wasmpod_test::image::ImageBuilder;

/// The busybox image the runc tests run.
const BUSYBOX: &str = "localhost/wasmpod/busybox:latest";

/// A private containerd without the wasmpod shim (`what` names it in the failure message).
fn runc_containerd(what: &str) -> Containerd {
    Containerd::builder().without_shim().start().expect(what)
}

/// [`runc_containerd`] with [`BUSYBOX`] imported.
fn runc_containerd_with_busybox() -> Containerd {
    require_root_and_containerd();
    let c = runc_containerd("start containerd");
    let busybox = ImageBuilder::busybox(BUSYBOX).expect("busybox image");
    c.import_image(&busybox).expect("import busybox");
    c
}

#[test]
fn runc_busybox_echo_through_private_containerd() {
    let c = runc_containerd_with_busybox();
    let out = c
        .run(["--rm", BUSYBOX, "harness-echo", "/bin/echo", "hi"])
        .expect("ctr run");
    assert!(out.success(), "ctr run failed: {out}");
    assert_eq!(out.stdout_lines(), ["hi"], "{out}");

    let left = c.wait_no_leftovers(Duration::from_secs(5));
    assert!(left.is_empty(), "left behind:\n{left}");
    let ls = c
        .ctr(["containers", "ls", "-q"])
        .expect("ctr containers ls");
    assert_eq!(ls.stdout.trim(), "", "{ls}");
    assert!(c.is_alive());
}

#[test]
fn namespaces_are_unique_per_harness() {
    require_root_and_containerd();
    let a = runc_containerd("start a");
    let b = runc_containerd("start b");
    assert_ne!(a.namespace(), b.namespace());
    assert_ne!(a.socket(), b.socket());
    let dir = a.dir().to_path_buf();
    drop(a);
    assert!(!dir.exists(), "{} not removed on drop", dir.display());
}

#[test]
fn leftovers_sees_a_running_task_and_clears_after_delete() {
    let c = runc_containerd_with_busybox();
    let out = c
        .run(["-d", BUSYBOX, "harness-sleep", "/bin/sleep", "600"])
        .expect("ctr run -d");
    assert!(out.success(), "{out}");
    let left = c.leftovers();
    assert!(!left.processes.is_empty(), "no shim process seen:\n{left}");
    assert!(!left.mounts.is_empty(), "no rootfs mount seen:\n{left}");
    assert!(!left.sockets.is_empty(), "no shim socket seen:\n{left}");

    c.kill_task("harness-sleep", "SIGKILL")
        .expect("ctr task kill");
    assert_eq!(
        c.wait_exit("harness-sleep", Duration::from_secs(10)),
        Some(137),
        "no /tasks/exit event with status 137"
    );
    c.delete_container("harness-sleep")
        .expect("ctr task delete");
    let left = c.wait_no_leftovers(Duration::from_secs(5));
    assert!(left.is_empty(), "left behind:\n{left}");
}
