//! wasmpod's containerd shim v2 for WebAssembly containers, as a library: the binary
//! `containerd-shim-wasmpod-v1` (`src/main.rs`) is a thin `main` over it, and the tests in
//! `shim/tests/` drive its real launcher and runner without containerd. Not a stable API:
//! it is public for that binary and those tests.
//!
//! Where things are:
//! - [`shim`]: the `start` / `delete` subcommands and the daemon's setup; [`service`]: the
//!   ttrpc Task API, a thin adapter over [`lifecycle`] (containers, [`state`] machine,
//!   [`events`]); [`reaper`]: exits;
//! - [`process`]: the process boundary: the [`process::Launcher`] seam and its shared types,
//!   the [`process::dispatch`] that loads the spec and chooses, [`process::runc`] for Linux
//!   sidecars, and [`process::runner`] with both sides of the runner protocol (the shim's
//!   `parent`, the `__run` / `__pause` `child`, the `protocol` between them);
//! - [`os`]: the Linux mechanisms (spawn, namespaces, mounts, cgroups, capabilities,
//!   seccomp, rlimits), no policy; [`image`]: payloads read from containerd's content store;
//! - [`error`]: every failure and its gRPC code, in one place;
//! - [`version`], [`selfcheck`]: the operator's `--version` and `--self-check`.
//!
//! Imports run one way: `os` and `image` ← `process` (types ← runc, runner ← dispatch) ←
//! `lifecycle` ← `service` ← `shim`.

pub mod error;
pub mod events;
pub mod image;
pub mod lifecycle;
pub mod logging;
pub mod os;
pub mod process;
pub mod reaper;
pub mod selfcheck;
pub mod service;
pub mod shim;
pub mod state;
pub mod version;

/// The runtime type containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.wasmpod.v1";

/// When this process's `main` began: the daemon logs how long it took to serve.
pub static MAIN_BEGAN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
