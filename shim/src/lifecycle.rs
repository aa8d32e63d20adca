//! The containers of this shim (one pod, or one container outside Kubernetes), their exec
//! processes, and their lifecycle: create, start, exec, kill, exit, wait, delete.
//!
//! Locks: a short-held registry (which containers exist, which pid is whose, exits that came
//! before their registration) and one lock per container, held for that container's own
//! work, slow or not (runc calls, unmounts, cgroup removal, an exec's preparation): Create,
//! Start, Kill, State or Delete of one container never wait on another's. The registry
//! lock is never held while a container's is taken (the other order is fine), so they
//! cannot deadlock. Process creation runs outside both (it compiles the payload), with the
//! id reserved so a second Create of the same id is refused at once.
//!
//! Exits come from the shim's reaper via [`Containers::process_exited`] (one call per exit,
//! on a thread of its own: see [`crate::reaper`]); an exit that arrives before its process
//! is registered is kept until the registration claims it. When a container's process
//! exits, its remaining execs are killed, as runc does when the container's processes
//! share a PID namespace with others.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use oci_spec::runtime::LinuxResources;

use crate::error::{TaskError, TaskResult};
use crate::events::{EventSink, TaskEvent};
use crate::os::cgroup::CgroupUsage;
use crate::process::{ContainerProcess, CreateRequest, ExecProcess, ExecRequest, Launcher};
use crate::state::TaskState;

/// How long an exit waits for its process's output to be read (see [`crate::os::drain`]).
const OUTPUT_DRAIN_BOUND: Duration = Duration::from_secs(2);
/// How long Delete waits for a process it killed (never started, or an exec left behind).
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Unclaimed exits older than this belong to processes that never became tasks.
const UNCLAIMED_EXIT_TTL: Duration = Duration::from_secs(60);
/// Exec processes one container may have at once (each is a runner: memory, a pidfd,
/// FIFOs); more are refused until some are deleted.
pub const MAX_EXECS: usize = 128;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

/// A snapshot of one process (a container's, or an exec's), for State/Connect/Pids.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub id: String,
    /// Set for an exec process.
    pub exec_id: Option<String>,
    pub bundle: PathBuf,
    pub pid: u32,
    pub state: TaskState,
    pub exit: Option<Exit>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

impl TaskInfo {
    fn is_alive(&self) -> bool {
        matches!(
            self.state,
            TaskState::Created | TaskState::Running | TaskState::Paused
        )
    }

    /// "container X" or "container X exec Y", for messages.
    fn name(&self) -> String {
        match &self.exec_id {
            Some(exec_id) => format!("container {} exec {exec_id}", self.id),
            None => format!("container {}", self.id),
        }
    }
}

/// One exec process of a container.
struct Exec {
    info: TaskInfo,
    process: Box<dyn ExecProcess>,
}

/// One container: its process and its execs, behind the container's own lock.
struct ContainerState {
    info: TaskInfo,
    process: Box<dyn ContainerProcess>,
    /// When Start let the process run (for the run time logged at exit).
    started: Option<Instant>,
    execs: HashMap<String, Exec>,
    /// Exec ids reserved while their process is being prepared (without the lock).
    pending_execs: HashSet<String>,
    /// Exits of the execs a Delete of the container collected, for their late waiters.
    finished_execs: HashMap<String, Exit>,
    /// The container's process exited; its execs are being killed before the exit is
    /// published. No new exec.
    exiting: bool,
    /// Delete has begun: only waits and exits go on.
    deleting: bool,
    /// An operation recorded an exit: [`Containers::with`] wakes the waiters after it.
    wake_waiters: bool,
    /// Set by Delete once everything is released; the registry forgets the container next.
    deleted: bool,
}

impl ContainerState {
    fn exec(&mut self, exec_id: &str) -> TaskResult<&mut Exec> {
        let id = &self.info.id;
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| TaskError::NotFound(format!("container {id}: exec {exec_id} not found")))
    }

    /// The info of the container's process (`exec_id` empty) or of one of its execs.
    fn info_of(&mut self, exec_id: Option<&str>) -> TaskResult<&mut TaskInfo> {
        match exec_id {
            None => Ok(&mut self.info),
            Some(exec_id) => Ok(&mut self.exec(exec_id)?.info),
        }
    }

    /// Whether an exec process that was made (a runc exec has none before Start) is alive.
    fn execs_alive(&self) -> bool {
        self.execs
            .values()
            .any(|e| e.info.pid != 0 && e.info.is_alive())
    }

    /// The exit of the container's process or of an exec (also one a Delete collected).
    fn exit_of(&self, exec_id: Option<&str>) -> Option<Exit> {
        match exec_id {
            None => self.info.exit,
            Some(exec_id) => self
                .execs
                .get(exec_id)
                .and_then(|e| e.info.exit)
                .or_else(|| self.finished_execs.get(exec_id).copied()),
        }
    }

    /// SIGKILL to every exec still alive; how many were signalled.
    fn kill_execs(&mut self) -> usize {
        let mut killed = 0;
        for exec in self.execs.values().filter(|e| e.info.exit.is_none()) {
            match exec.process.signal(libc::SIGKILL as u32) {
                Ok(true) => killed += 1,
                Ok(false) => {}
                Err(e) => warn!("{e}"),
            }
        }
        killed
    }
}

struct Container {
    state: Mutex<ContainerState>,
    /// Notified on every exit of one of the container's processes, and at delete.
    exited: Condvar,
}

/// An exit whose process is known, to be recorded by [`Containers::finish_exit`].
pub struct PendingExit {
    pid: u32,
    exit: Exit,
    exec_id: Option<String>,
    container: Arc<Container>,
}

/// Which process a pid is.
#[derive(Debug, Clone)]
struct Owner {
    container: String,
    exec_id: Option<String>,
}

#[derive(Default)]
struct Registry {
    containers: HashMap<String, Arc<Container>>,
    creating: HashSet<String>,
    /// Live processes by pid.
    owners: HashMap<u32, Owner>,
    /// Exits reaped before their process was registered, by pid.
    unclaimed_exits: HashMap<u32, Exit>,
}

impl Registry {
    /// Forgets `pid` if it is still registered as that process (a pid can be reused).
    fn forget(&mut self, pid: u32, container: &str, exec_id: Option<&str>) {
        if self
            .owners
            .get(&pid)
            .is_some_and(|o| o.container == container && o.exec_id.as_deref() == exec_id)
        {
            self.owners.remove(&pid);
        }
    }

    /// Registers `pid` as `owner`'s, or hands back its exit when it was reaped already.
    fn claim(&mut self, pid: u32, owner: Owner) -> Option<Exit> {
        match self.unclaimed_exits.remove(&pid) {
            Some(exit) => Some(exit),
            None => {
                self.owners.insert(pid, owner);
                None
            }
        }
    }
}

/// The lifecycle of every container in this shim.
pub struct Containers {
    registry: Mutex<Registry>,
    launcher: Box<dyn Launcher>,
    events: Arc<dyn EventSink>,
}

/// Exec ids name files in the bundle: containerd's identifier rule, checked again here.
fn check_exec_id(id: &str, exec_id: &str) -> TaskResult<()> {
    let valid = !exec_id.is_empty()
        && exec_id.len() <= 76
        && exec_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && exec_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(TaskError::InvalidArgument(format!(
            "container {id}: exec id {exec_id:?} is not a valid identifier (letters, digits, '_', '-', '.'; at most 76)"
        )))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Containers {
    pub fn new(launcher: Box<dyn Launcher>, events: Arc<dyn EventSink>) -> Self {
        Containers {
            registry: Mutex::new(Registry::default()),
            launcher,
            events,
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    fn container(&self, id: &str) -> TaskResult<Arc<Container>> {
        self.registry()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::not_found(id))
    }

    /// Runs `f` on container `id` under its own lock (and no other), to read it.
    fn with<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerState) -> TaskResult<T>,
    ) -> TaskResult<T> {
        let container = self.container(id)?;
        let mut state = lock(&container.state);
        if state.deleted {
            return Err(TaskError::not_found(id));
        }
        let result = f(&mut state);
        if std::mem::take(&mut state.wake_waiters) {
            drop(state);
            container.exited.notify_all();
        }
        result
    }

    /// As [`Containers::with`], to change it: refused once its Delete has begun.
    fn with_live<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerState) -> TaskResult<T>,
    ) -> TaskResult<T> {
        self.with(id, |c| {
            if c.deleting {
                return Err(TaskError::NotFound(format!(
                    "container {id}: being deleted"
                )));
            }
            f(c)
        })
    }

    pub fn create(&self, request: CreateRequest) -> TaskResult<u32> {
        let id = request.id.clone();
        {
            let mut registry = self.registry();
            if registry.containers.contains_key(&id) || !registry.creating.insert(id.clone()) {
                return Err(TaskError::AlreadyExists(format!(
                    "container {id}: already exists"
                )));
            }
        }
        let began = Instant::now();
        let created = self.launcher.create(&request);
        let mut registry = self.registry();
        registry.creating.remove(&id);
        let process = created?;
        let pid = process.pid();
        let mut info = TaskInfo {
            id: id.clone(),
            exec_id: None,
            bundle: request.bundle.clone(),
            pid,
            state: TaskState::Created,
            exit: None,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        };
        let early_exit = registry.claim(
            pid,
            Owner {
                container: id.clone(),
                exec_id: None,
            },
        );
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
        let container = Container {
            state: Mutex::new(ContainerState {
                info,
                process,
                started: None,
                execs: HashMap::new(),
                pending_execs: HashSet::new(),
                finished_execs: HashMap::new(),
                exiting: false,
                deleting: false,
                wake_waiters: false,
                deleted: false,
            }),
            exited: Condvar::new(),
        };
        registry.containers.insert(id, Arc::new(container));
        Ok(pid)
    }

    pub fn start(&self, id: &str) -> TaskResult<u32> {
        self.with_live(id, |c| {
            let next = c.info.state.start(id)?;
            c.process.start()?;
            c.info.state = next;
            c.started = Some(Instant::now());
            let pid = c.info.pid;
            self.events.publish(TaskEvent::Start { id: id.into(), pid });
            info!("container {id}: started");
            Ok(pid)
        })
    }

    /// Adds an exec process to a running container (prepared, waiting for
    /// [`Containers::start_exec`]); TaskExecAdded follows.
    pub fn exec(&self, request: ExecRequest) -> TaskResult<()> {
        let ExecRequest {
            container_id: id,
            exec_id,
            ..
        } = &request;
        check_exec_id(id, exec_id)?;
        let container = self.container(id)?;
        let launcher = {
            let mut c = lock(&container.state);
            if c.deleted || c.deleting {
                return Err(TaskError::not_found(id));
            }
            if c.execs.contains_key(exec_id) || c.pending_execs.contains(exec_id) {
                return Err(TaskError::AlreadyExists(format!(
                    "container {id}: exec {exec_id} already exists"
                )));
            }
            if c.info.state != TaskState::Running || c.exiting {
                return Err(TaskError::FailedPrecondition(format!(
                    "container {id}: cannot exec in a task in state {:?}",
                    c.info.state
                )));
            }
            if c.execs.len() + c.pending_execs.len() >= MAX_EXECS {
                return Err(TaskError::FailedPrecondition(format!(
                    "container {id}: {MAX_EXECS} exec processes already; delete some first"
                )));
            }
            let launcher = c.process.exec_launcher()?;
            c.pending_execs.insert(exec_id.clone());
            launcher
        };
        // Without the lock: the exec's preparation may compile its program.
        let made = launcher.exec(&request);
        let mut c = lock(&container.state);
        c.pending_execs.remove(exec_id);
        let mut process = made?;
        if c.deleted || c.deleting || c.exiting || c.info.state != TaskState::Running {
            if let Err(e) = process.signal(libc::SIGKILL as u32) {
                warn!("{e}");
            }
            process.release();
            return Err(TaskError::FailedPrecondition(format!(
                "container {id}: its process ended while exec {exec_id} was prepared"
            )));
        }
        let pid = process.pid();
        let mut info = TaskInfo {
            id: id.clone(),
            exec_id: Some(exec_id.clone()),
            bundle: c.info.bundle.clone(),
            pid,
            state: TaskState::Created,
            exit: None,
            stdin: request.stdin.clone(),
            stdout: request.stdout.clone(),
            stderr: request.stderr.clone(),
        };
        self.events.publish(TaskEvent::ExecAdded {
            id: id.clone(),
            exec_id: exec_id.clone(),
        });
        let exited = pid != 0 && self.register_exec_pid(&mut info);
        info!("container {id}: exec {exec_id} added (pid {pid})");
        c.execs.insert(exec_id.clone(), Exec { info, process });
        drop(c);
        if exited {
            container.exited.notify_all();
        }
        Ok(())
    }

    /// Registers an exec's pid; publishes its exit at once when it was reaped already.
    /// Returns whether it recorded an exit (its waiters must then be woken).
    fn register_exec_pid(&self, info: &mut TaskInfo) -> bool {
        let owner = Owner {
            container: info.id.clone(),
            exec_id: info.exec_id.clone(),
        };
        match self.registry().claim(info.pid, owner) {
            Some(exit) => {
                info.state = TaskState::Stopped;
                info.exit = Some(exit);
                self.publish_exit(info, exit);
                true
            }
            None => false,
        }
    }

    /// Lets an exec process run; TaskExecStarted follows.
    pub fn start_exec(&self, id: &str, exec_id: &str) -> TaskResult<u32> {
        self.with_live(id, |c| {
            if c.info.state != TaskState::Running || c.exiting {
                return Err(TaskError::FailedPrecondition(format!(
                    "container {id}: cannot start exec {exec_id}: the container is {:?}",
                    c.info.state
                )));
            }
            let exec = c.exec(exec_id)?;
            let next = exec.info.state.start(&exec.info.name())?;
            let registered = exec.info.pid != 0;
            let pid = exec.process.start()?;
            exec.info.pid = pid;
            exec.info.state = next;
            self.events.publish(TaskEvent::ExecStarted {
                id: id.into(),
                exec_id: exec_id.into(),
                pid,
            });
            // A runc exec can be over before its pid is known (its exit came first).
            if !registered && self.register_exec_pid(&mut exec.info) {
                c.wake_waiters = true;
            }
            info!("container {id}: exec {exec_id} started, pid {pid}");
            Ok(pid)
        })
    }

    /// Signals the container's process (`exec_id` `None`; with `all`, its execs too) or
    /// one exec.
    pub fn kill(&self, id: &str, exec_id: Option<&str>, signal: u32, all: bool) -> TaskResult<()> {
        self.with_live(id, |c| {
            if let Some(exec_id) = exec_id {
                let exec = c.exec(exec_id)?;
                exec.info.state.kill(&exec.info.name())?;
                info!("container {id}: signal {signal} to exec {exec_id}");
                return match exec.process.signal(signal)? {
                    true => Ok(()),
                    false => Err(TaskError::NotFound(format!(
                        "{}: process already finished",
                        exec.info.name()
                    ))),
                };
            }
            c.info.state.kill(id)?;
            info!("container {id}: signal {signal} to pid {}", c.info.pid);
            if all {
                for exec in c.execs.values().filter(|e| e.info.is_alive()) {
                    if let Err(e) = exec.process.signal(signal) {
                        warn!("{e}");
                    }
                }
            }
            if !c.process.signal(signal)? {
                return Err(TaskError::NotFound(format!(
                    "container {id}: process already finished"
                )));
            }
            if c.info.state == TaskState::Paused {
                // A frozen process handles no signal (on cgroup v1 not even SIGKILL) until
                // it is thawed: thaw it, as runc does, so the signal takes effect.
                c.process.set_frozen(false)?;
                c.info.state = c.info.state.resume(id)?;
                self.events.publish(TaskEvent::Resumed { id: id.into() });
            }
            Ok(())
        })
    }

    /// Freezes the container (cgroup freezer); TaskPaused follows.
    pub fn pause(&self, id: &str) -> TaskResult<()> {
        self.with_live(id, |c| {
            let next = c.info.state.pause(id)?;
            c.process.set_frozen(true)?;
            c.info.state = next;
            self.events.publish(TaskEvent::Paused { id: id.into() });
            info!("container {id}: paused");
            Ok(())
        })
    }

    /// Thaws a paused container; TaskResumed follows.
    pub fn resume(&self, id: &str) -> TaskResult<()> {
        self.with_live(id, |c| {
            let next = c.info.state.resume(id)?;
            c.process.set_frozen(false)?;
            c.info.state = next;
            self.events.publish(TaskEvent::Resumed { id: id.into() });
            info!("container {id}: resumed");
            Ok(())
        })
    }

    /// Applies changed limits to a container that has a process.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> TaskResult<()> {
        self.with_live(id, |c| {
            c.info.state.update(id)?;
            c.process.update(resources)?;
            info!("container {id}: resources updated");
            Ok(())
        })
    }

    /// Records the exit of `pid` (from the reaper) and wakes waiters: [`Containers::take_exit`]
    /// then [`Containers::finish_exit`].
    pub fn process_exited(&self, pid: u32, status: u32) {
        if let Some(pending) = self.take_exit(pid, status) {
            self.finish_exit(pending);
        }
    }

    /// The quick half of an exit, under the registry lock only: whose process it was (kept
    /// for a later registration when nobody's yet). `None`: nothing more to do.
    pub fn take_exit(&self, pid: u32, status: u32) -> Option<PendingExit> {
        let exit = Exit {
            status,
            at: SystemTime::now(),
        };
        let mut registry = self.registry();
        match registry.owners.remove(&pid) {
            Some(owner) => {
                let container = registry.containers.get(&owner.container).cloned()?;
                Some(PendingExit {
                    pid,
                    exit,
                    exec_id: owner.exec_id,
                    container,
                })
            }
            None => {
                let now = SystemTime::now();
                registry.unclaimed_exits.retain(|_, e| {
                    now.duration_since(e.at).unwrap_or_default() < UNCLAIMED_EXIT_TTL
                });
                registry.unclaimed_exits.insert(pid, exit);
                None
            }
        }
    }

    /// The slow half of an exit: waits for its output to be read (bounded), and for a
    /// container's process, kills its execs and waits for their exits (bounded) so they are
    /// published first, as runc's shim does; then records it, publishes it, wakes waiters.
    pub fn finish_exit(&self, pending: PendingExit) {
        let PendingExit {
            pid,
            exit,
            exec_id,
            container,
        } = pending;
        let exec_id = exec_id.as_deref();
        // The last lines first: TaskExit must not overtake unread output. Waited for
        // without the container's lock, so its State and Kill are not held up.
        let output = {
            let mut state = lock(&container.state);
            match exec_id {
                None => state.process.output(),
                Some(exec_id) => state.exec(exec_id).ok().and_then(|e| e.process.output()),
            }
        };
        if let Some(output) = output {
            let left = output.wait_read(OUTPUT_DRAIN_BOUND);
            if left > 0 {
                warn!(
                    "pid {pid}: {left} bytes of output still unread after {OUTPUT_DRAIN_BOUND:?}; publishing the exit"
                );
            }
        }
        let mut state = lock(&container.state);
        match exec_id {
            None => {
                state.exiting = true;
                let killed = state.kill_execs();
                if killed > 0 {
                    info!(
                        "container {}: killing {killed} exec processes left behind",
                        state.info.id
                    );
                    state = container
                        .exited
                        .wait_timeout_while(state, KILL_WAIT, |s| s.execs_alive())
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                self.container_exited(&mut state, exit);
            }
            Some(exec_id) => {
                if let Ok(exec) = state.exec(exec_id) {
                    let name = exec.info.name();
                    match exec.info.state.exit(&name) {
                        Ok(next) => exec.info.state = next,
                        Err(e) => warn!("{e}"),
                    }
                    exec.info.exit = Some(exit);
                    info!("{name}: pid {pid} exited with status {}", exit.status);
                    self.publish_exit(&exec.info, exit);
                }
            }
        }
        container.exited.notify_all();
    }

    fn container_exited(&self, c: &mut ContainerState, exit: Exit) {
        let id = c.info.id.clone();
        match c.info.state.exit(&id) {
            Ok(next) => c.info.state = next,
            Err(e) => warn!("{e}"),
        }
        c.info.exit = Some(exit);
        let ran = match c.started {
            Some(started) => format!("after running {:?}", started.elapsed()),
            None => "before start".to_owned(),
        };
        info!(
            "container {id}: pid {} exited with status {} {ran}",
            c.info.pid, exit.status
        );
        if c.process.out_of_memory() {
            info!("container {id}: out of memory");
            self.events.publish(TaskEvent::Oom { id: id.clone() });
        }
        self.publish_exit(&c.info, exit);
    }

    fn publish_exit(&self, info: &TaskInfo, exit: Exit) {
        self.events.publish(TaskEvent::Exit {
            id: info.id.clone(),
            exec_id: info.exec_id.clone(),
            pid: info.pid,
            exit_status: exit.status,
            exited_at: exit.at,
        });
    }

    /// Blocks until the container's process (or exec `exec_id`) has exited.
    pub fn wait(&self, id: &str, exec_id: Option<&str>) -> TaskResult<Exit> {
        let container = self.container(id)?;
        let mut state = lock(&container.state);
        loop {
            // The exit first: a Delete may come between the exit and this waiter.
            if let Some(exit) = state.exit_of(exec_id) {
                return Ok(exit);
            }
            if state.deleted {
                return Err(TaskError::not_found(id));
            }
            state.info_of(exec_id)?;
            state = container
                .exited
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Deletes an exec process (exited, or never started: then killed first).
    fn delete_exec(&self, id: &str, exec_id: &str) -> TaskResult<(u32, Exit)> {
        let container = self.container(id)?;
        let mut state = lock(&container.state);
        if state.deleted {
            return Err(TaskError::not_found(id));
        }
        let exec = state.exec(exec_id)?;
        exec.info.state.delete(&exec.info.name())?;
        if exec.info.exit.is_none() && exec.info.pid != 0 {
            exec.process.signal(libc::SIGKILL as u32)?;
            state = container
                .exited
                .wait_timeout_while(state, KILL_WAIT, |s| {
                    s.execs.get(exec_id).is_some_and(|e| e.info.exit.is_none())
                })
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let mut exec = state
            .execs
            .remove(exec_id)
            .ok_or_else(|| TaskError::NotFound(format!("container {id}: exec {exec_id}")))?;
        drop(state);
        exec.process.release();
        self.registry().forget(exec.info.pid, id, Some(exec_id));
        let exit = exec.info.exit.unwrap_or(Exit {
            status: 128 + libc::SIGKILL as u32,
            at: SystemTime::now(),
        });
        info!("container {id}: exec {exec_id} deleted");
        Ok((exec.info.pid, exit))
    }

    /// Deletes the container (exited or never started) and its execs, or one exec.
    pub fn delete(&self, id: &str, exec_id: Option<&str>) -> TaskResult<(u32, Exit)> {
        if let Some(exec_id) = exec_id {
            return self.delete_exec(id, exec_id);
        }
        let began = Instant::now();
        let container = self.container(id)?;
        let mut state = lock(&container.state);
        if state.deleted {
            return Err(TaskError::not_found(id));
        }
        if state.deleting {
            return Err(TaskError::not_found(id));
        }
        state.info.state.delete(id)?;
        state.deleting = true;
        if state.info.state == TaskState::Created {
            // Never started: stop the prepared process and collect its exit.
            state.process.signal(libc::SIGKILL as u32)?;
        }
        // Execs still alive (their container's exit killed them; their exit may not be in).
        state.kill_execs();
        state = container
            .exited
            .wait_timeout_while(state, KILL_WAIT, |s| {
                s.info.exit.is_none() || s.execs_alive()
            })
            .unwrap_or_else(|p| p.into_inner())
            .0;
        let exit = state.info.exit.unwrap_or(Exit {
            status: 128 + libc::SIGKILL as u32,
            at: SystemTime::now(),
        });
        let mut pids = vec![(state.info.pid, None)];
        let execs: Vec<(String, Exec)> = state.execs.drain().collect();
        for (exec_id, mut exec) in execs {
            exec.process.release();
            if let Some(exit) = exec.info.exit {
                state.finished_execs.insert(exec_id.clone(), exit);
            }
            pids.push((exec.info.pid, Some(exec_id)));
        }
        // The slow part (unmounts, cgroup removal, runc delete): this container's lock only.
        if let Err(e) = state.process.release() {
            warn!("container {id}: {e}");
        }
        state.deleted = true;
        let pid = state.info.pid;
        self.events.publish(TaskEvent::Delete {
            id: id.into(),
            pid,
            exit_status: exit.status,
            exited_at: exit.at,
        });
        drop(state);
        container.exited.notify_all();
        {
            let mut registry = self.registry();
            registry.containers.remove(id);
            for (pid, exec_id) in pids {
                registry.forget(pid, id, exec_id.as_deref());
            }
        }
        info!("container {id}: deleted in {:?}", began.elapsed());
        Ok((pid, exit))
    }

    /// The state of the container's process, or of one of its execs.
    pub fn info(&self, id: &str, exec_id: Option<&str>) -> TaskResult<TaskInfo> {
        self.with(id, |c| Ok(c.info_of(exec_id)?.clone()))
    }

    /// The processes of a running container (its execs included); none once it exited.
    pub fn pids(&self, id: &str) -> TaskResult<Vec<u32>> {
        self.with(id, |c| {
            if c.info.exit.is_some() {
                return Ok(Vec::new());
            }
            let mut pids = c.process.pids();
            for exec in c.execs.values().filter(|e| e.info.is_alive()) {
                if exec.info.pid != 0 && !pids.contains(&exec.info.pid) {
                    pids.push(exec.info.pid);
                }
            }
            Ok(pids)
        })
    }

    /// Cgroup usage of a container, when it has a cgroup.
    pub fn usage(&self, id: &str) -> TaskResult<Option<CgroupUsage>> {
        self.with(id, |c| Ok(c.process.usage()))
    }

    /// True when no container is left (the shim may exit).
    pub fn is_empty(&self) -> bool {
        let registry = self.registry();
        registry.containers.is_empty() && registry.creating.is_empty()
    }
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
}
