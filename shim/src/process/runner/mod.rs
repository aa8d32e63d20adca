//! The runner boundary, both sides in one place: how the shim makes the process of a wasm
//! container or of the pod sandbox, and what that process does.
//!
//! - [`protocol`]: what crosses between them (subcommands, descriptor numbers, the request,
//!   the status line, the files a runner leaves in its bundle);
//! - [`spec`]: the guest's view of the OCI spec, computed by the shim, used by the child;
//! - [`parent`]: the shim's side, a [`crate::process::ContainerProcess`]: spawns this binary
//!   into the container's cgroup and namespaces ([`crate::os::spawn`]), sends the request,
//!   waits for the status, writes the start byte;
//! - [`exec`]: one more runner in a running wasm container (Exec), for a `.wasm` of its image;
//! - [`child`]: the other side, this binary re-executed as `__run` (a wasm container) or
//!   `__pause` (the sandbox): prepares, confines, reports, waits for Start, runs.

pub mod child;
pub mod exec;
pub mod parent;
pub mod protocol;
pub mod spec;

pub use child::confine::refuse_user_namespace;
pub use child::warn_if_cache_off;
