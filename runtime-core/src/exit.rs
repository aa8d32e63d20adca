//! How a guest ended, and the process exit code that stands for it.
//!
//! | end                         | exit code                 |
//! |-----------------------------|---------------------------|
//! | returned from `_start`/run  | 0 (component `run` → `Err`: 1) |
//! | `proc_exit(n)` / `exit(n)`  | n                         |
//! | trap                        | 134 (128 + SIGABRT, as the wasmtime CLI) |
//! | interrupted by signal `s`   | 128 + s (SIGTERM → 143)   |
//! | trap after a refused `memory.grow` (memory limit) | 137 (as an OOM kill)  |

/// Exit code used when the guest traps (matches `wasmtime run`).
pub const TRAP_EXIT_CODE: i32 = 134;

/// Exit code of a guest that ran out of memory (128 + SIGKILL, what an OOM kill gives).
pub const OUT_OF_MEMORY_EXIT_CODE: i32 = 137;

/// The way a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The guest finished, or called `proc_exit`, with this code.
    Exited(i32),
    /// The guest trapped; `message` is wasmtime's description, with a backtrace when known.
    Trapped { message: String },
    /// The guest trapped after the memory limit refused it memory: reported like an OOM kill.
    OutOfMemory { message: String },
    /// An [`crate::Interrupter`] stopped the guest on behalf of this signal.
    Interrupted { signal: i32 },
}

impl ExitStatus {
    /// The process exit code standing for this status.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited(code) => *code,
            ExitStatus::Trapped { .. } => TRAP_EXIT_CODE,
            ExitStatus::OutOfMemory { .. } => OUT_OF_MEMORY_EXIT_CODE,
            ExitStatus::Interrupted { signal } => 128 + signal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_documented_table() {
        assert_eq!(ExitStatus::Exited(42).code(), 42);
        assert_eq!(
            ExitStatus::Trapped {
                message: "unreachable".into()
            }
            .code(),
            134
        );
        assert_eq!(ExitStatus::Interrupted { signal: 15 }.code(), 143);
        assert_eq!(ExitStatus::Interrupted { signal: 9 }.code(), 137);
    }
}
