//! The lifecycle against a fake launcher: events in order, states, exec, locks.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, channel};

use super::*;
use crate::process::ExecRequest;

/// A launcher whose processes record signals instead of receiving them.
struct FakeLauncher {
    next_pid: AtomicU32,
    fail_with: Option<String>,
    signals: Arc<Mutex<Vec<(u32, u32)>>>,
    /// The container with this id blocks in `release` until the gate opens.
    blocking_release: Option<(String, Arc<ReleaseGate>)>,
}

const FREEZE: u32 = 1000;
const THAW: u32 = 1001;

struct FakeProcess {
    pid: u32,
    signals: Arc<Mutex<Vec<(u32, u32)>>>,
    release_gate: Option<Arc<ReleaseGate>>,
}

/// Says when a release began, and holds it until opened.
struct ReleaseGate {
    entered: Mutex<std::sync::mpsc::Sender<()>>,
    open: Mutex<Receiver<()>>,
}

/// Makes exec `eN` with pid 500 + N.
struct FakeExecLauncher {
    signals: Arc<Mutex<Vec<(u32, u32)>>>,
}

impl crate::process::ExecLauncher for FakeExecLauncher {
    fn exec(&self, request: &ExecRequest) -> TaskResult<Box<dyn ExecProcess>> {
        // `rN`: like a runc exec, no process (pid 0) until Start makes 600 + N.
        if let Some(n) = request.exec_id.strip_prefix('r') {
            return Ok(Box::new(FakeExec {
                pid: 0,
                started_pid: 600 + n.parse::<u32>().unwrap_or(0),
                signals: self.signals.clone(),
            }));
        }
        let n: u32 = request.exec_id.trim_start_matches('e').parse().unwrap_or(0);
        Ok(Box::new(FakeExec {
            pid: 500 + n,
            started_pid: 500 + n,
            signals: self.signals.clone(),
        }))
    }
}

/// An exec process: pid 500 + n, signals recorded with the container's.
struct FakeExec {
    pid: u32,
    started_pid: u32,
    signals: Arc<Mutex<Vec<(u32, u32)>>>,
}

impl ExecProcess for FakeExec {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn start(&mut self) -> TaskResult<u32> {
        self.pid = self.started_pid;
        Ok(self.pid)
    }
    fn signal(&self, signal: u32) -> TaskResult<bool> {
        self.signals.lock().unwrap().push((self.pid, signal));
        Ok(true)
    }
}

impl ContainerProcess for FakeProcess {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn start(&mut self) -> TaskResult<()> {
        Ok(())
    }
    fn signal(&self, signal: u32) -> TaskResult<bool> {
        self.signals.lock().unwrap().push((self.pid, signal));
        Ok(true)
    }
    fn pids(&self) -> Vec<u32> {
        vec![self.pid]
    }
    fn usage(&self) -> Option<CgroupUsage> {
        None
    }
    fn out_of_memory(&self) -> bool {
        self.pid == 666
    }
    fn release(&mut self) -> TaskResult<()> {
        if let Some(gate) = &self.release_gate {
            gate.entered.lock().unwrap().send(()).unwrap();
            gate.open.lock().unwrap().recv().unwrap();
        }
        Ok(())
    }

    fn exec_launcher(&self) -> TaskResult<Arc<dyn crate::process::ExecLauncher>> {
        Ok(Arc::new(FakeExecLauncher {
            signals: self.signals.clone(),
        }))
    }

    fn set_frozen(&self, frozen: bool) -> TaskResult<()> {
        // Recorded beside the signals: FREEZE / THAW.
        let mark = if frozen { FREEZE } else { THAW };
        self.signals.lock().unwrap().push((self.pid, mark));
        Ok(())
    }

    fn update(&self, _: &LinuxResources) -> TaskResult<()> {
        Ok(())
    }
}

impl Launcher for FakeLauncher {
    fn create(&self, request: &CreateRequest) -> TaskResult<Box<dyn ContainerProcess>> {
        if let Some(error) = &self.fail_with {
            return Err(TaskError::InvalidArgument(error.clone()));
        }
        let release_gate = self
            .blocking_release
            .as_ref()
            .filter(|(id, _)| *id == request.id)
            .map(|(_, gate)| gate.clone());
        Ok(Box::new(FakeProcess {
            pid: self.next_pid.fetch_add(1, Ordering::SeqCst),
            signals: self.signals.clone(),
            release_gate,
        }))
    }
}

impl FakeLauncher {
    /// Processes numbered from `first_pid`, nothing failing or blocking.
    fn new(first_pid: u32) -> Self {
        FakeLauncher {
            next_pid: AtomicU32::new(first_pid),
            fail_with: None,
            signals: Arc::default(),
            blocking_release: None,
        }
    }
}

/// The lifecycle over `launcher`, and the events it publishes.
fn containers_of(launcher: FakeLauncher) -> (Arc<Containers>, Receiver<TaskEvent>) {
    let (tx, rx) = channel();
    let sink: Arc<dyn EventSink> = Arc::new(Mutex::new(tx));
    (Arc::new(Containers::new(Box::new(launcher), sink)), rx)
}

fn containers(fail_with: Option<&str>) -> (Arc<Containers>, Receiver<TaskEvent>) {
    containers_of(FakeLauncher {
        fail_with: fail_with.map(str::to_owned),
        ..FakeLauncher::new(100)
    })
}

fn request(id: &str) -> CreateRequest {
    CreateRequest {
        id: id.into(),
        bundle: PathBuf::from(format!("/bundles/{id}")),
        rootfs_mounts: vec![],
        stdin: String::new(),
        stdout: "/fifo/out".into(),
        stderr: String::new(),
    }
}

fn drain(rx: &Receiver<TaskEvent>) -> Vec<String> {
    rx.try_iter()
        .map(|e| match e {
            TaskEvent::Create { id, pid, .. } => format!("create {id} {pid}"),
            TaskEvent::Start { id, pid } => format!("start {id} {pid}"),
            TaskEvent::Exit {
                id,
                exec_id: None,
                exit_status,
                ..
            } => format!("exit {id} {exit_status}"),
            TaskEvent::Exit {
                id,
                exec_id: Some(exec_id),
                exit_status,
                ..
            } => format!("exit {id} {exec_id} {exit_status}"),
            TaskEvent::ExecAdded { id, exec_id } => format!("exec-added {id} {exec_id}"),
            TaskEvent::ExecStarted { id, exec_id, pid } => {
                format!("exec-started {id} {exec_id} {pid}")
            }
            TaskEvent::Delete {
                id, exit_status, ..
            } => format!("delete {id} {exit_status}"),
            TaskEvent::Oom { id } => format!("oom {id}"),
            TaskEvent::Paused { id } => format!("paused {id}"),
            TaskEvent::Resumed { id } => format!("resumed {id}"),
        })
        .collect()
}

#[test]
fn pause_resume_and_kill_while_paused() {
    let launcher = FakeLauncher::new(100);
    let signals = launcher.signals.clone();
    let (c, rx) = containers_of(launcher);
    c.create(request("a")).unwrap();
    assert!(matches!(
        c.pause("a"),
        Err(TaskError::FailedPrecondition(_))
    ));
    c.start("a").unwrap();
    c.pause("a").unwrap();
    assert_eq!(c.info("a", None).unwrap().state, TaskState::Paused);
    assert!(matches!(
        c.pause("a"),
        Err(TaskError::FailedPrecondition(_))
    ));
    c.resume("a").unwrap();
    assert_eq!(c.info("a", None).unwrap().state, TaskState::Running);
    c.pause("a").unwrap();
    // A signal to a paused container is delivered, then the container is thawed.
    c.kill("a", None, 9, false).unwrap();
    assert_eq!(c.info("a", None).unwrap().state, TaskState::Running);
    assert_eq!(
        *signals.lock().unwrap(),
        [
            (100, FREEZE),
            (100, THAW),
            (100, FREEZE),
            (100, 9),
            (100, THAW)
        ]
    );
    assert_eq!(
        drain(&rx),
        [
            "create a 100",
            "start a 100",
            "paused a",
            "resumed a",
            "paused a",
            "resumed a"
        ]
    );
}

#[test]
fn full_lifecycle_publishes_events_in_order() {
    let (c, rx) = containers(None);
    assert_eq!(c.create(request("a")).unwrap(), 100);
    assert_eq!(c.start("a").unwrap(), 100);
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || c.wait("a", None).unwrap())
    };
    c.process_exited(100, 3);
    assert_eq!(waiter.join().unwrap().status, 3);
    let (pid, exit) = c.delete("a", None).unwrap();
    assert_eq!((pid, exit.status), (100, 3));
    assert_eq!(
        drain(&rx),
        ["create a 100", "start a 100", "exit a 3", "delete a 3"]
    );
    assert!(c.is_empty());
}

#[test]
fn out_of_memory_exit_publishes_oom_before_exit() {
    let (c, rx) = containers_of(FakeLauncher::new(666));
    c.create(request("m")).unwrap();
    c.start("m").unwrap();
    c.process_exited(666, 137);
    assert_eq!(
        drain(&rx),
        ["create m 666", "start m 666", "oom m", "exit m 137"]
    );
}

#[test]
fn duplicate_create_is_already_exists() {
    let (c, _rx) = containers(None);
    c.create(request("a")).unwrap();
    assert!(matches!(
        c.create(request("a")),
        Err(TaskError::AlreadyExists(_))
    ));
}

#[test]
fn failed_create_leaves_nothing_and_publishes_nothing() {
    let (c, rx) = containers(Some("bad wasm"));
    let err = c.create(request("a")).unwrap_err();
    assert!(matches!(err, TaskError::InvalidArgument(ref m) if m == "bad wasm"));
    assert!(c.is_empty());
    assert!(drain(&rx).is_empty());
    assert!(matches!(c.info("a", None), Err(TaskError::NotFound(_))));
}

#[test]
fn illegal_transitions_are_refused() {
    let (c, _rx) = containers(None);
    c.create(request("a")).unwrap();
    c.start("a").unwrap();
    assert!(matches!(
        c.start("a"),
        Err(TaskError::FailedPrecondition(_))
    ));
    assert!(matches!(
        c.delete("a", None),
        Err(TaskError::FailedPrecondition(_))
    ));
    c.process_exited(100, 0);
    assert!(matches!(
        c.kill("a", None, 15, false),
        Err(TaskError::NotFound(_))
    ));
    assert!(matches!(c.start("x"), Err(TaskError::NotFound(_))));
}

#[test]
fn exit_reaped_before_registration_is_claimed() {
    let (c, rx) = containers(None);
    c.process_exited(100, 137);
    c.create(request("a")).unwrap();
    let info = c.info("a", None).unwrap();
    assert_eq!(info.state, TaskState::Stopped);
    assert_eq!(info.exit.unwrap().status, 137);
    assert_eq!(drain(&rx), ["create a 100", "exit a 137"]);
}

#[test]
fn delete_of_created_task_kills_and_collects_exit() {
    let (c, rx) = containers(None);
    c.create(request("a")).unwrap();
    let reaper = {
        let c = c.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c.process_exited(100, 137);
        })
    };
    let (_, exit) = c.delete("a", None).unwrap();
    reaper.join().unwrap();
    assert_eq!(exit.status, 137);
    assert_eq!(drain(&rx), ["create a 100", "exit a 137", "delete a 137"]);
}

fn exec_request(id: &str, exec_id: &str) -> ExecRequest {
    ExecRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
        process: oci_spec::runtime::Process::default(),
        stdin: String::new(),
        stdout: String::new(),
        stderr: String::new(),
    }
}

#[test]
fn an_exec_has_its_own_life_and_events() {
    let (c, rx) = containers(None);
    c.create(request("a")).unwrap();
    assert!(matches!(
        c.exec(exec_request("a", "e1")),
        Err(TaskError::FailedPrecondition(_))
    ));
    c.start("a").unwrap();
    c.exec(exec_request("a", "e1")).unwrap();
    assert!(matches!(
        c.exec(exec_request("a", "e1")),
        Err(TaskError::AlreadyExists(_))
    ));
    assert_eq!(c.info("a", Some("e1")).unwrap().state, TaskState::Created);
    assert_eq!(c.start_exec("a", "e1").unwrap(), 501);
    assert_eq!(c.pids("a").unwrap(), [100, 501]);
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || c.wait("a", Some("e1")).unwrap())
    };
    c.process_exited(501, 7);
    assert_eq!(waiter.join().unwrap().status, 7);
    // The container's process is not touched by its exec's exit.
    assert_eq!(c.info("a", None).unwrap().state, TaskState::Running);
    let (pid, exit) = c.delete("a", Some("e1")).unwrap();
    assert_eq!((pid, exit.status), (501, 7));
    assert!(matches!(
        c.info("a", Some("e1")),
        Err(TaskError::NotFound(_))
    ));
    // The id is free again.
    c.exec(exec_request("a", "e1")).unwrap();
    assert_eq!(
        drain(&rx),
        [
            "create a 100",
            "start a 100",
            "exec-added a e1",
            "exec-started a e1 501",
            "exit a e1 7",
            "exec-added a e1",
        ]
    );
}

#[test]
fn the_containers_exit_kills_its_execs_and_delete_collects_them() {
    let launcher = FakeLauncher::new(100);
    let signals = launcher.signals.clone();
    let (c, rx) = containers_of(launcher);
    c.create(request("a")).unwrap();
    c.start("a").unwrap();
    c.exec(exec_request("a", "e2")).unwrap();
    c.start_exec("a", "e2").unwrap();
    c.kill("a", Some("e2"), 15, false).unwrap();
    // The exec dies of the SIGKILL its container's exit sends it, a little later.
    let exec_reaper = {
        let c = c.clone();
        let signals = signals.clone();
        std::thread::spawn(move || {
            poll_until(|| signals.lock().unwrap().contains(&(502, 9)));
            c.process_exited(502, 137);
        })
    };
    c.process_exited(100, 0);
    exec_reaper.join().unwrap();
    assert_eq!(*signals.lock().unwrap(), [(502, 15), (502, 9)]);
    let (pid, exit) = c.delete("a", None).unwrap();
    assert_eq!((pid, exit.status), (100, 0));
    assert!(c.is_empty());
    // The exec's exit is published before its container's, as runc's shim does.
    let events = drain(&rx);
    assert_eq!(
        events[4..],
        ["exit a e2 137", "exit a 0", "delete a 0"],
        "{events:?}"
    );
    // Deleted with its container.
    assert!(matches!(
        c.wait("a", Some("e2")),
        Err(TaskError::NotFound(_))
    ));
}

/// Polls `done` every millisecond, for at most 10 s.
fn poll_until(done: impl Fn() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "condition never met"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn exec_ids_that_are_no_identifier_are_refused() {
    let (c, _rx) = containers(None);
    c.create(request("a")).unwrap();
    c.start("a").unwrap();
    for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(77)] {
        assert!(
            matches!(
                c.exec(exec_request("a", bad)),
                Err(TaskError::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn a_delete_that_blocks_does_not_stall_the_pods_other_containers() {
    let (unblock, open) = channel();
    let (entered, in_release) = channel();
    let gate = ReleaseGate {
        entered: Mutex::new(entered),
        open: Mutex::new(open),
    };
    let (c, _rx) = containers_of(FakeLauncher {
        blocking_release: Some(("slow".into(), Arc::new(gate))),
        ..FakeLauncher::new(100)
    });
    c.create(request("slow")).unwrap();
    c.start("slow").unwrap();
    c.process_exited(100, 0);
    let deleting = {
        let c = c.clone();
        std::thread::spawn(move || c.delete("slow", None))
    };
    in_release
        .recv_timeout(Duration::from_secs(20))
        .expect("the delete of slow reached its release");
    // Everything on another container goes through while "slow" is still deleting.
    let (done_tx, done_rx) = channel();
    let other = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.create(request("b")).unwrap();
            c.start("b").unwrap();
            c.kill("b", None, 15, false).unwrap();
            let state = c.info("b", None).unwrap().state;
            done_tx.send(state).unwrap();
        })
    };
    let state = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("operations on b were blocked by the delete of slow");
    assert_eq!(state, TaskState::Running);
    other.join().unwrap();
    assert!(!deleting.is_finished(), "the delete of slow did not block");
    unblock.send(()).unwrap();
    let (pid, exit) = deleting.join().unwrap().unwrap();
    assert_eq!((pid, exit.status), (100, 0));
}

#[test]
fn a_waiter_learns_the_exit_of_an_exec_that_ended_before_its_pid_was_known() {
    let (c, rx) = containers(None);
    c.create(request("a")).unwrap();
    c.start("a").unwrap();
    c.exec(exec_request("a", "r1")).unwrap();
    // containerd waits before it starts; the process is reaped before Start returns.
    let (tx, waited) = channel();
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || tx.send(c.wait("a", Some("r1"))).unwrap())
    };
    c.process_exited(601, 3);
    assert_eq!(c.start_exec("a", "r1").unwrap(), 601);
    let exit = waited
        .recv_timeout(Duration::from_secs(20))
        .expect("the waiter was never woken");
    assert_eq!(exit.unwrap().status, 3);
    waiter.join().unwrap();
    assert_eq!(drain(&rx)[3..], ["exec-started a r1 601", "exit a r1 3"]);
}
