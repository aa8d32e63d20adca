//! The OS layer: mounts, signals and process plumbing. Nothing here knows containerd's API
//! or Wasm; the lifecycle code above calls these small functions.

pub mod allocator;
pub mod caps;
pub mod cgroup;
pub mod drain;
pub mod exec;
pub mod fd;
pub mod limits;
pub mod memory;
pub mod mountns;
pub mod namespaces;
pub mod pidfd;
pub mod pidfile;
pub mod proc_stats;
pub mod rootfs;
pub mod seccomp;
pub mod signals;
pub mod spawn;
pub mod threads;
