//! The containers of this shim (one pod, or one container outside Kubernetes) and their
//! lifecycle: create, start, kill, exit, wait, delete.
//!
//! All state sits behind one mutex; a condition variable wakes `wait` callers when a process
//! exits. Process creation runs outside the lock (it compiles the payload), with the id
//! reserved so a second Create of the same id is refused at once. Exits come from the shim's
//! reaper via [`Containers::process_exited`]; an exit that arrives before its process is
//! registered is kept until the registration claims it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use oci_spec::runtime::LinuxResources;

use crate::error::{TaskError, TaskResult};
use crate::events::{EventSink, TaskEvent};
use crate::os::cgroup::CgroupUsage;
use crate::process::{ContainerProcess, CreateRequest, Launcher};
use crate::state::TaskState;

/// How long an exit waits for its container's output to be read (see [`crate::os::drain`]).
const OUTPUT_DRAIN_BOUND: Duration = Duration::from_secs(2);

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

/// A snapshot of one container, for State/Connect/Pids.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub id: String,
    pub bundle: PathBuf,
    pub pid: u32,
    pub state: TaskState,
    pub exit: Option<Exit>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

struct Task {
    info: TaskInfo,
    process: Box<dyn ContainerProcess>,
    /// When Start let the process run (for the run time logged at exit).
    started: Option<Instant>,
}

#[derive(Default)]
struct Registry {
    tasks: HashMap<String, Task>,
    creating: HashSet<String>,
    /// Exits reaped before their process was registered, by pid.
    unclaimed_exits: HashMap<u32, Exit>,
}

/// The lifecycle of every container in this shim.
pub struct Containers {
    registry: Mutex<Registry>,
    exited: Condvar,
    launcher: Box<dyn Launcher>,
    events: Arc<dyn EventSink>,
}

/// How long Delete of a never-started container waits for its killed process.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Unclaimed exits older than this belong to processes that never became tasks.
const UNCLAIMED_EXIT_TTL: Duration = Duration::from_secs(60);

impl Containers {
    pub fn new(launcher: Box<dyn Launcher>, events: Arc<dyn EventSink>) -> Self {
        Containers {
            registry: Mutex::new(Registry::default()),
            exited: Condvar::new(),
            launcher,
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn create(&self, request: CreateRequest) -> TaskResult<u32> {
        let id = request.id.clone();
        {
            let mut registry = self.lock();
            if registry.tasks.contains_key(&id) || !registry.creating.insert(id.clone()) {
                return Err(TaskError::AlreadyExists(format!(
                    "container {id}: already exists"
                )));
            }
        }
        let began = Instant::now();
        let created = self.launcher.create(&request);
        let mut registry = self.lock();
        registry.creating.remove(&id);
        let process = created?;
        let pid = process.pid();
        let mut info = TaskInfo {
            id: id.clone(),
            bundle: request.bundle.clone(),
            pid,
            state: TaskState::Created,
            exit: None,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        };
        let early_exit = registry.unclaimed_exits.remove(&pid);
        self.events.publish(TaskEvent::Create {
            id: id.clone(),
            bundle: request.bundle.display().to_string(),
            pid,
        });
        if let Some(exit) = early_exit {
            info.state = TaskState::Stopped;
            info.exit = Some(exit);
            self.publish_exit(&info, exit);
        }
        info!(
            "container {id}: created, pid {pid}, in {:?}",
            began.elapsed()
        );
        let task = Task {
            info,
            process,
            started: None,
        };
        registry.tasks.insert(id, task);
        Ok(pid)
    }

    pub fn start(&self, id: &str) -> TaskResult<u32> {
        let mut registry = self.lock();
        let task = find(&mut registry, id)?;
        let next = task.info.state.start(id)?;
        task.process.start()?;
        task.info.state = next;
        task.started = Some(Instant::now());
        let pid = task.info.pid;
        self.events.publish(TaskEvent::Start { id: id.into(), pid });
        info!("container {id}: started");
        Ok(pid)
    }

    pub fn kill(&self, id: &str, signal: u32) -> TaskResult<()> {
        let mut registry = self.lock();
        let task = find(&mut registry, id)?;
        task.info.state.kill(id)?;
        info!("container {id}: signal {signal} to pid {}", task.info.pid);
        if !task.process.signal(signal)? {
            return Err(TaskError::NotFound(format!(
                "container {id}: process already finished"
            )));
        }
        if task.info.state == TaskState::Paused {
            // A frozen process handles no signal (on cgroup v1 not even SIGKILL) until it
            // is thawed: thaw it, as runc does, so the signal takes effect.
            task.process.set_frozen(false)?;
            task.info.state = task.info.state.resume(id)?;
            self.events.publish(TaskEvent::Resumed { id: id.into() });
        }
        Ok(())
    }

    /// Freezes the container (cgroup freezer); TaskPaused follows.
    pub fn pause(&self, id: &str) -> TaskResult<()> {
        let mut registry = self.lock();
        let task = find(&mut registry, id)?;
        let next = task.info.state.pause(id)?;
        task.process.set_frozen(true)?;
        task.info.state = next;
        self.events.publish(TaskEvent::Paused { id: id.into() });
        info!("container {id}: paused");
        Ok(())
    }

    /// Thaws a paused container; TaskResumed follows.
    pub fn resume(&self, id: &str) -> TaskResult<()> {
        let mut registry = self.lock();
        let task = find(&mut registry, id)?;
        let next = task.info.state.resume(id)?;
        task.process.set_frozen(false)?;
        task.info.state = next;
        self.events.publish(TaskEvent::Resumed { id: id.into() });
        info!("container {id}: resumed");
        Ok(())
    }

    /// Applies changed limits to a container that has a process.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> TaskResult<()> {
        let mut registry = self.lock();
        let task = find(&mut registry, id)?;
        task.info.state.update(id)?;
        task.process.update(resources)?;
        info!("container {id}: resources updated");
        Ok(())
    }

    /// Records the exit of `pid` (from the reaper) and wakes waiters.
    pub fn process_exited(&self, pid: u32, status: u32) {
        let exit = Exit {
            status,
            at: SystemTime::now(),
        };
        let alive = |t: &Task| {
            t.info.pid == pid
                && matches!(
                    t.info.state,
                    TaskState::Created | TaskState::Running | TaskState::Paused
                )
        };
        // The guest's last lines first: TaskExit must not overtake unread output. Waited
        // for without the lock, so the pod's other containers are not held up.
        let output = self
            .lock()
            .tasks
            .values()
            .find(|t| alive(t))
            .and_then(|t| t.process.output());
        if let Some(output) = output {
            let left = output.wait_read(OUTPUT_DRAIN_BOUND);
            if left > 0 {
                warn!(
                    "pid {pid}: {left} bytes of output still unread after {OUTPUT_DRAIN_BOUND:?}; publishing the exit"
                );
            }
        }
        let mut registry = self.lock();
        let task = registry.tasks.values_mut().find(|t| alive(t));
        match task {
            Some(task) => {
                let id = task.info.id.clone();
                match task.info.state.exit(&id) {
                    Ok(next) => task.info.state = next,
                    Err(e) => warn!("{e}"),
                }
                task.info.exit = Some(exit);
                let ran = match task.started {
                    Some(started) => format!("after running {:?}", started.elapsed()),
                    None => "before start".to_owned(),
                };
                info!("container {id}: pid {pid} exited with status {status} {ran}");
                if task.process.out_of_memory() {
                    info!("container {id}: out of memory");
                    self.events.publish(TaskEvent::Oom { id: id.clone() });
                }
                let info = task.info.clone();
                self.publish_exit(&info, exit);
            }
            None => {
                let now = SystemTime::now();
                registry.unclaimed_exits.retain(|_, e| {
                    now.duration_since(e.at).unwrap_or_default() < UNCLAIMED_EXIT_TTL
                });
                registry.unclaimed_exits.insert(pid, exit);
            }
        }
        self.exited.notify_all();
    }

    fn publish_exit(&self, info: &TaskInfo, exit: Exit) {
        self.events.publish(TaskEvent::Exit {
            id: info.id.clone(),
            pid: info.pid,
            exit_status: exit.status,
            exited_at: exit.at,
        });
    }

    /// Blocks until the container's process has exited.
    pub fn wait(&self, id: &str) -> TaskResult<Exit> {
        let mut registry = self.lock();
        loop {
            let task = find(&mut registry, id)?;
            if let Some(exit) = task.info.exit {
                return Ok(exit);
            }
            registry = self
                .exited
                .wait(registry)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn delete(&self, id: &str) -> TaskResult<(u32, Exit)> {
        let began = Instant::now();
        let mut registry = self.lock();
        let task = find(&mut registry, id)?;
        task.info.state.delete(id)?;
        if task.info.state == TaskState::Created {
            // Never started: stop the prepared process and collect its exit.
            task.process.signal(libc::SIGKILL as u32)?;
            let (guard, _) = self
                .exited
                .wait_timeout_while(registry, KILL_WAIT, |r| {
                    r.tasks.get(id).is_some_and(|t| t.info.exit.is_none())
                })
                .unwrap_or_else(|p| p.into_inner());
            registry = guard;
        }
        let mut task = registry
            .tasks
            .remove(id)
            .ok_or_else(|| TaskError::not_found(id))?;
        let exit = task.info.exit.unwrap_or(Exit {
            status: 128 + libc::SIGKILL as u32,
            at: SystemTime::now(),
        });
        if let Err(e) = task.process.release() {
            warn!("container {id}: {e}");
        }
        self.events.publish(TaskEvent::Delete {
            id: id.into(),
            pid: task.info.pid,
            exit_status: exit.status,
            exited_at: exit.at,
        });
        info!("container {id}: deleted in {:?}", began.elapsed());
        Ok((task.info.pid, exit))
    }

    pub fn info(&self, id: &str) -> TaskResult<TaskInfo> {
        let mut registry = self.lock();
        Ok(find(&mut registry, id)?.info.clone())
    }

    /// The processes of a running container; none once it exited.
    pub fn pids(&self, id: &str) -> TaskResult<Vec<u32>> {
        let mut registry = self.lock();
        let task = find(&mut registry, id)?;
        Ok(if task.info.exit.is_some() {
            Vec::new()
        } else {
            task.process.pids()
        })
    }

    /// Cgroup usage of a container, when it has a cgroup.
    pub fn usage(&self, id: &str) -> TaskResult<Option<CgroupUsage>> {
        let mut registry = self.lock();
        Ok(find(&mut registry, id)?.process.usage())
    }

    /// True when no container is left (the shim may exit).
    pub fn is_empty(&self) -> bool {
        let registry = self.lock();
        registry.tasks.is_empty() && registry.creating.is_empty()
    }
}

fn find<'a>(registry: &'a mut Registry, id: &str) -> TaskResult<&'a mut Task> {
    registry
        .tasks
        .get_mut(id)
        .ok_or_else(|| TaskError::not_found(id))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc::{Receiver, channel};

    use super::*;

    /// A launcher whose processes record signals instead of receiving them.
    struct FakeLauncher {
        next_pid: AtomicU32,
        fail_with: Option<String>,
        signals: Arc<Mutex<Vec<(u32, u32)>>>,
    }

    const FREEZE: u32 = 1000;
    const THAW: u32 = 1001;

    struct FakeProcess {
        pid: u32,
        signals: Arc<Mutex<Vec<(u32, u32)>>>,
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
            Ok(())
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
        fn create(&self, _: &CreateRequest) -> TaskResult<Box<dyn ContainerProcess>> {
            if let Some(error) = &self.fail_with {
                return Err(TaskError::InvalidArgument(error.clone()));
            }
            Ok(Box::new(FakeProcess {
                pid: self.next_pid.fetch_add(1, Ordering::SeqCst),
                signals: self.signals.clone(),
            }))
        }
    }

    fn containers(fail_with: Option<&str>) -> (Arc<Containers>, Receiver<TaskEvent>) {
        let (tx, rx) = channel();
        let launcher = FakeLauncher {
            next_pid: AtomicU32::new(100),
            fail_with: fail_with.map(str::to_owned),
            signals: Arc::default(),
        };
        let sink: Arc<dyn EventSink> = Arc::new(Mutex::new(tx));
        (Arc::new(Containers::new(Box::new(launcher), sink)), rx)
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
                    id, exit_status, ..
                } => format!("exit {id} {exit_status}"),
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
        let (tx, rx) = channel();
        let signals: Arc<Mutex<Vec<(u32, u32)>>> = Arc::default();
        let launcher = FakeLauncher {
            next_pid: AtomicU32::new(100),
            fail_with: None,
            signals: signals.clone(),
        };
        let sink: Arc<dyn EventSink> = Arc::new(Mutex::new(tx));
        let c = Containers::new(Box::new(launcher), sink);
        c.create(request("a")).unwrap();
        assert!(matches!(
            c.pause("a"),
            Err(TaskError::FailedPrecondition(_))
        ));
        c.start("a").unwrap();
        c.pause("a").unwrap();
        assert_eq!(c.info("a").unwrap().state, TaskState::Paused);
        assert!(matches!(
            c.pause("a"),
            Err(TaskError::FailedPrecondition(_))
        ));
        c.resume("a").unwrap();
        assert_eq!(c.info("a").unwrap().state, TaskState::Running);
        c.pause("a").unwrap();
        // A signal to a paused container is delivered, then the container is thawed.
        c.kill("a", 9).unwrap();
        assert_eq!(c.info("a").unwrap().state, TaskState::Running);
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
            std::thread::spawn(move || c.wait("a").unwrap())
        };
        c.process_exited(100, 3);
        assert_eq!(waiter.join().unwrap().status, 3);
        let (pid, exit) = c.delete("a").unwrap();
        assert_eq!((pid, exit.status), (100, 3));
        assert_eq!(
            drain(&rx),
            ["create a 100", "start a 100", "exit a 3", "delete a 3"]
        );
        assert!(c.is_empty());
    }

    #[test]
    fn out_of_memory_exit_publishes_oom_before_exit() {
        let (tx, rx) = channel();
        let launcher = FakeLauncher {
            next_pid: AtomicU32::new(666),
            fail_with: None,
            signals: Arc::default(),
        };
        let sink: Arc<dyn EventSink> = Arc::new(Mutex::new(tx));
        let c = Containers::new(Box::new(launcher), sink);
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
        assert!(matches!(c.info("a"), Err(TaskError::NotFound(_))));
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
            c.delete("a"),
            Err(TaskError::FailedPrecondition(_))
        ));
        c.process_exited(100, 0);
        assert!(matches!(c.kill("a", 15), Err(TaskError::NotFound(_))));
        assert!(matches!(c.start("x"), Err(TaskError::NotFound(_))));
    }

    #[test]
    fn exit_reaped_before_registration_is_claimed() {
        let (c, rx) = containers(None);
        c.process_exited(100, 137);
        c.create(request("a")).unwrap();
        let info = c.info("a").unwrap();
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
        let (_, exit) = c.delete("a").unwrap();
        reaper.join().unwrap();
        assert_eq!(exit.status, 137);
        assert_eq!(drain(&rx), ["create a 100", "exit a 137", "delete a 137"]);
    }
}
