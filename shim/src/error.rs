//! Task-service errors and their gRPC codes, mapped in one place.
//!
//! containerd and kubelet act on the code (NotFound is "already gone", AlreadyExists is a
//! retry, FailedPrecondition a wrong state), so every failure is given the code that says
//! what happened; the message says what was being done and to which container.

use containerd_shim::protos::ttrpc::{self, Code};

/// A failed task operation.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Internal(String),
}

impl TaskError {
    /// "`what` is not supported for wasm containers", for the RPCs wasmpod refuses.
    pub fn unsupported(what: &str) -> Self {
        TaskError::Unimplemented(format!("{what} is not supported for wasm containers"))
    }

    pub fn not_found(id: &str) -> Self {
        TaskError::NotFound(format!("container {id}: not found"))
    }

    pub fn internal(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        TaskError::Internal(format!("{context}: {err}"))
    }

    /// The gRPC code containerd sees.
    pub fn code(&self) -> Code {
        match self {
            TaskError::NotFound(_) => Code::NOT_FOUND,
            TaskError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            TaskError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            TaskError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            TaskError::Unimplemented(_) => Code::UNIMPLEMENTED,
            TaskError::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<TaskError> for ttrpc::Error {
    fn from(err: TaskError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), err.to_string()))
    }
}

pub type TaskResult<T> = Result<T, TaskError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(err: TaskError) -> Code {
        match ttrpc::Error::from(err) {
            ttrpc::Error::RpcStatus(status) => status.code(),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn each_error_has_its_grpc_code() {
        assert_eq!(code_of(TaskError::not_found("c1")), Code::NOT_FOUND);
        assert_eq!(
            code_of(TaskError::AlreadyExists("c1".into())),
            Code::ALREADY_EXISTS
        );
        assert_eq!(
            code_of(TaskError::FailedPrecondition("x".into())),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            code_of(TaskError::InvalidArgument("x".into())),
            Code::INVALID_ARGUMENT
        );
        assert_eq!(code_of(TaskError::unsupported("exec")), Code::UNIMPLEMENTED);
        assert_eq!(code_of(TaskError::internal("a", "b")), Code::INTERNAL);
    }

    #[test]
    fn messages_survive_the_mapping() {
        match ttrpc::Error::from(TaskError::unsupported("pause")) {
            ttrpc::Error::RpcStatus(status) => {
                assert_eq!(
                    status.message(),
                    "pause is not supported for wasm containers"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
