//! The task lifecycle as an explicit state machine.
//!
//! ```text
//! Created ──start──> Running ──exit──> Stopped ──delete──> Deleted
//!    │                 │   ▲                ▲
//!    │            pause│   │resume          │exit (killed while paused: thawed to die)
//!    │                 ▼   │                │
//!    │                 Paused ──────────────┘
//!    └──────────────exit (killed before start)──┘
//!    └──delete (never started)──────────────────────────> Deleted
//! ```
//! Illegal transitions are refused with `FailedPrecondition`, the code containerd expects.

use crate::error::{TaskError, TaskResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Created,
    Running,
    /// Frozen by the cgroup freezer (Pause); Resume thaws it.
    Paused,
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
            TaskState::Created | TaskState::Running | TaskState::Paused => Ok(TaskState::Stopped),
            other => Err(refused(id, "exit", other)),
        }
    }

    pub fn delete(self, id: &str) -> TaskResult<TaskState> {
        match self {
            TaskState::Created | TaskState::Stopped => Ok(TaskState::Deleted),
            other => Err(refused(id, "delete", other)),
        }
    }

    pub fn pause(self, id: &str) -> TaskResult<TaskState> {
        match self {
            TaskState::Running => Ok(TaskState::Paused),
            other => Err(refused(id, "pause", other)),
        }
    }

    pub fn resume(self, id: &str) -> TaskResult<TaskState> {
        match self {
            TaskState::Paused => Ok(TaskState::Running),
            other => Err(refused(id, "resume", other)),
        }
    }

    /// Limits change while a process exists (created, running or paused).
    pub fn update(self, id: &str) -> TaskResult<()> {
        match self {
            TaskState::Created | TaskState::Running | TaskState::Paused => Ok(()),
            other => Err(refused(id, "update", other)),
        }
    }

    /// Signals go to a process that exists: created (waiting to start), running or paused.
    pub fn kill(self, id: &str) -> TaskResult<()> {
        match self {
            TaskState::Created | TaskState::Running | TaskState::Paused => Ok(()),
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
            TaskState::Paused => Status::PAUSED,
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
    fn pause_and_resume_only_from_the_right_state() {
        assert_eq!(Running.pause("c").unwrap(), Paused);
        assert_eq!(Paused.resume("c").unwrap(), Running);
        assert_eq!(Paused.exit("c").unwrap(), Stopped);
        assert!(Paused.kill("c").is_ok());
        assert!(Paused.update("c").is_ok());
        for result in [Created.pause("c"), Paused.pause("c"), Stopped.pause("c")] {
            assert!(
                matches!(result, Err(TaskError::FailedPrecondition(_))),
                "{result:?}"
            );
        }
        for result in [Running.resume("c"), Stopped.resume("c")] {
            assert!(
                matches!(result, Err(TaskError::FailedPrecondition(_))),
                "{result:?}"
            );
        }
        assert!(matches!(
            Paused.delete("c"),
            Err(TaskError::FailedPrecondition(_))
        ));
        assert!(matches!(
            Stopped.update("c"),
            Err(TaskError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn kill_after_exit_is_not_found() {
        assert!(Running.kill("c").is_ok());
        assert!(matches!(Stopped.kill("c"), Err(TaskError::NotFound(_))));
    }
}
