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
use crate::process::{ContainerProcess, CreateRequest, ExecProcess, Launcher};
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

mod exec;
#[cfg(test)]
mod tests;
