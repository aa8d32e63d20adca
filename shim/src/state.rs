//! The task lifecycle as an explicit state machine.
//!
//! ```text
//! Created ──start──> Running ──exit──> Stopped ──delete──> Deleted
//!    └──────────────exit (killed before start)──┘
//!    └──delete (never started)──────────────────────────> Deleted
//! ```
//! Illegal transitions are refused with `FailedPrecondition`, the code containerd expects.

use crate::error::{TaskError, TaskResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Created,
    Running,
    Stopped,
    Deleted,
}

impl TaskState {
    pub fn start(self, id: &str) -> TaskResult<TaskState> {
        match self {
            TaskState::Created => Ok(TaskState::Running),
            other => Err(refused(id, "start", other)),
        }
    }

    pub fn exit(self, id: &str) -> TaskResult<TaskState> {
        match self {
            TaskState::Created | TaskState::Running => Ok(TaskState::Stopped),
            other => Err(refused(id, "exit", other)),
        }
    }

    pub fn delete(self, id: &str) -> TaskResult<TaskState> {
        match self {
            TaskState::Created | TaskState::Stopped => Ok(TaskState::Deleted),
            other => Err(refused(id, "delete", other)),
        }
    }

    /// Signals go to a process that exists: created (waiting to start) or running.
    pub fn kill(self, id: &str) -> TaskResult<()> {
        match self {
            TaskState::Created | TaskState::Running => Ok(()),
            TaskState::Stopped | TaskState::Deleted => Err(TaskError::NotFound(format!(
                "container {id}: process already finished"
            ))),
        }
    }

    /// The containerd API status for this state.
    pub fn api_status(self) -> containerd_shim::api::Status {
        use containerd_shim::api::Status;
        match self {
            TaskState::Created => Status::CREATED,
            TaskState::Running => Status::RUNNING,
            TaskState::Stopped | TaskState::Deleted => Status::STOPPED,
        }
    }
}

fn refused(id: &str, action: &str, state: TaskState) -> TaskError {
    TaskError::FailedPrecondition(format!(
        "container {id}: cannot {action} a task in state {state:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;
    use super::*;

    #[test]
    fn normal_life() {
        let s = Created.start("c").unwrap();
        assert_eq!(s, Running);
        let s = s.exit("c").unwrap();
        assert_eq!(s, Stopped);
        assert_eq!(s.delete("c").unwrap(), Deleted);
    }

    #[test]
    fn illegal_transitions_are_failed_precondition() {
        for (result, what) in [
            (Running.start("c"), "start running"),
            (Stopped.start("c"), "start stopped"),
            (Running.delete("c"), "delete running"),
            (Deleted.delete("c"), "delete deleted"),
            (Stopped.exit("c"), "exit stopped"),
        ] {
            assert!(
                matches!(result, Err(TaskError::FailedPrecondition(_))),
                "{what}: {result:?}"
            );
        }
    }

    #[test]
    fn never_started_task_can_stop_or_be_deleted() {
        assert_eq!(Created.exit("c").unwrap(), Stopped);
        assert_eq!(Created.delete("c").unwrap(), Deleted);
    }

    #[test]
    fn kill_after_exit_is_not_found() {
        assert!(Running.kill("c").is_ok());
        assert!(matches!(Stopped.kill("c"), Err(TaskError::NotFound(_))));
    }
}
