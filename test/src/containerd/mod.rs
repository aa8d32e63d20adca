//! A private containerd for one integration test.
//!
//! [`Containerd::start`] (or [`Containerd::builder`] for options) makes a temp dir holding
//! containerd's root, state, sockets, `config.toml` and log, starts containerd with the
//! directory of the freshly built `containerd-shim-wasmpod-v1` first on its `PATH` (that is
//! how `ctr run --runtime io.containerd.wasmpod.v1` finds the shim), and waits until
//! `ctr version` answers. [`Containerd::ctr`] runs `ctr` against it in a namespace unique to
//! this harness (per-namespace runtime state dirs are shared between containerd instances
//! on one machine, so two tests must never share a namespace).
//!
//! [`Containerd::leftovers`] reports what a test should have cleaned up (shim processes,
//! mounts, FIFOs, shim sockets); dropping the harness stops containerd, kills whatever shims
//! it started, unmounts what is still mounted under the temp dir and removes it, and prints
//! the containerd log tail if the test is failing.
//!
//! CRI: [`ContainerdBuilder::with_cri`] writes the config kubelet-style tests need on this
//! machine (see `shared/FIELD-NOTES.md`): runtime handler `wasmpod`, `restrict_oom_score_adj`,
//! pod netns mounts under the state dir, runc state under the temp dir, a private CNI bin and
//! conf dir holding `loopback` chained with the test plugin `test/cni/wasmpod-report-lo`,
//! sandbox image [`PAUSE_IMAGE`] (built and imported into [`CRI_NAMESPACE`] at start), NRI
//! off. [`ContainerdVersion`] picks the binaries (system 1.6, or 1.7 / 2.1 cached by
//! `scripts/fetch-containerd.sh`) and the config schema (version 2 for 1.x, 3 for 2.x).
//!
//! Trade-off: everything is found by scanning `/proc` (cmdlines carrying our socket address,
//! `/proc/self/mountinfo`, `/proc/net/unix`) rather than by asking containerd, so the report
//! still works when containerd or the shim is the thing that broke.
//!
//! One job per submodule: `versions` (which containerd, and fetching it), `locate` (finding
//! the binaries and the shim), `config` (the builder and the `config.toml` it writes),
//! `process` (starting and stopping containerd), `ctr` (the `ctr` wrappers), `events` (what
//! `ctr events` saw: container ids and exit statuses), `leftovers` (what a test left behind,
//! and removing it) and `procfs` (the `/proc` scans behind it). Everything public is
//! re-exported here.

mod config;
mod ctr;
mod events;
mod leftovers;
mod locate;
mod process;
pub(crate) mod procfs;
mod versions;

pub use config::{CNI_LOOPBACK, CNI_REPORT_LO, ContainerdBuilder};
pub use ctr::CtrOutput;
pub use leftovers::{Leftovers, ShimProcess, shim_processes_of, shim_socket_name};
pub use locate::{
    SHIM_ENV, STATIC_TARGETS, locate_shim, locate_static_binary, require_root_and_containerd,
};
pub use process::Containerd;
pub use versions::{CONTAINERD_CACHE_ENV, ConfigVersion, ContainerdVersion, FETCH_SCRIPT};

/// File name of the wasmpod shim binary, as containerd looks it up on its `PATH`.
pub const SHIM_BINARY: &str = "containerd-shim-wasmpod-v1";
/// Runtime type that selects the wasmpod shim (`ctr run --runtime ...`).
pub const RUNTIME: &str = "io.containerd.wasmpod.v1";
/// The containerd namespace CRI works in (images for pods are imported here).
pub const CRI_NAMESPACE: &str = "k8s.io";
/// CRI runtime handler (RuntimeClass handler) that selects wasmpod.
pub const CRI_HANDLER: &str = "wasmpod";
/// The pod sandbox image [`ContainerdBuilder::with_cri`] configures and imports.
pub const PAUSE_IMAGE: &str = "localhost/pause:latest";
