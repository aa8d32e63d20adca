//! Exec processes of a container: Exec (prepared without the container's lock, the id
//! reserved meanwhile), their Start, their Delete. Their exits are recorded as every exit is
//! ([`Containers::finish_exit`]).

use std::time::SystemTime;

use log::{info, warn};

use super::{Containers, Exec, Exit, KILL_WAIT, MAX_EXECS, Owner, TaskInfo, lock};
use crate::error::{TaskError, TaskResult};
use crate::events::TaskEvent;
use crate::process::ExecRequest;
use crate::state::TaskState;

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

impl Containers {
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

    /// Deletes an exec process (exited, or never started: then killed first).
    pub(super) fn delete_exec(&self, id: &str, exec_id: &str) -> TaskResult<(u32, Exit)> {
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
}
