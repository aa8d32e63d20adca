//! The OS layer: mounts, signals and process plumbing. Nothing here knows containerd's API
//! or Wasm; the lifecycle code above calls these small functions.

pub mod cgroup;
pub mod exec;
pub mod fd;
pub mod mountns;
pub mod namespaces;
pub mod proc_stats;
pub mod rootfs;
pub mod signals;
pub mod spawn;
