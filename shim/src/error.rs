//! Task-service errors and their gRPC codes, mapped in one place.
//!
//! containerd and kubelet act on the code (NotFound is "already gone", AlreadyExists is a
//! retry, FailedPrecondition a wrong state), so every failure is given the code that says
//! what happened; the message says what was being done and to which container.

use containerd_shim::protos::ttrpc::{self, Code};

use crate::process::runner::protocol::FailureKind;

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

    /// A runner or pause process that could not prepare its container, by the kind of its
    /// failure: what the user gave (spec, payload) is InvalidArgument, a taken port
    /// FailedPrecondition (the pod's state, not the request, is wrong), the node's own
    /// failures Internal.
    pub fn runner_failed(kind: FailureKind, message: String) -> Self {
        match kind {
            FailureKind::Spec | FailureKind::Payload => TaskError::InvalidArgument(message),
            FailureKind::PortTaken => TaskError::FailedPrecondition(message),
            FailureKind::Io | FailureKind::Cache | FailureKind::Engine | FailureKind::Protocol => {
                TaskError::Internal(message)
            }
        }
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
    fn each_runner_failure_kind_has_its_grpc_code_and_keeps_its_message() {
        let cases = [
            (FailureKind::Spec, Code::INVALID_ARGUMENT),
            (FailureKind::Payload, Code::INVALID_ARGUMENT),
            (FailureKind::PortTaken, Code::FAILED_PRECONDITION),
            (FailureKind::Io, Code::INTERNAL),
            (FailureKind::Cache, Code::INTERNAL),
            (FailureKind::Engine, Code::INTERNAL),
            (FailureKind::Protocol, Code::INTERNAL),
        ];
        for (kind, code) in cases {
            let err = TaskError::runner_failed(kind, "container c1: why".into());
            assert_eq!(err.to_string(), "container c1: why", "{kind:?}");
            assert_eq!(code_of(err), code, "{kind:?}");
        }
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
