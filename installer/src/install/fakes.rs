//! Recording fakes of every seam, and a host root to install into, for the verbs' tests.

use std::path::{Path, PathBuf};

use super::{Options, Seams};
use crate::SHIM_BINARY;
use crate::hostfs::HostRoot;
use crate::label::NodeLabeler;
use crate::probe::{Expect, Prober};
use crate::restart::{HostExec, Restarter};
use crate::shimcheck::ShimChecker;
use crate::tasks::TaskFinder;
use std::cell::RefCell;

use crate::label::LabelError;
use crate::probe::ProbeError;
use crate::restart::{Output, RestartError};
use crate::shimcheck::{Reason, ShimCheckError, ShimReport};
use crate::tasks::ShimTask;

/// Fake seams that record every side effect, in order; the prober succeeds when
/// `probe_ok`, containerd accepts a config unless `config_ok` is false, the shim runs
/// when `shim_ok`, the first restart fails when `restart_fails`, and `tasks` run.
pub(super) struct Fakes {
    pub(super) log: RefCell<Vec<String>>,
    pub(super) probe_ok: bool,
    pub(super) config_ok: bool,
    pub(super) shim_ok: bool,
    pub(super) restart_fails: std::cell::Cell<bool>,
    pub(super) tasks: Vec<ShimTask>,
}

impl Fakes {
    pub(super) fn new(probe_ok: bool) -> Self {
        Self {
            log: RefCell::default(),
            probe_ok,
            config_ok: true,
            shim_ok: true,
            restart_fails: std::cell::Cell::new(false),
            tasks: Vec::new(),
        }
    }

    pub(super) fn seams(&self) -> Seams<'_> {
        Seams {
            exec: self,
            restarter: self,
            prober: self,
            labeler: Some(self),
            shim_checker: self,
            tasks: self,
        }
    }

    pub(super) fn record(&self, effect: String) {
        self.log.borrow_mut().push(effect);
    }

    /// The side effects recorded since the last call.
    pub(super) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.borrow_mut())
    }
}

impl HostExec for Fakes {
    fn run(&self, argv: &[String]) -> Result<Output, RestartError> {
        if argv.ends_with(&["config".to_owned(), "dump".to_owned()]) {
            self.record("validate".to_owned());
            if !self.config_ok {
                return Err(RestartError::Failed {
                    command: argv.join(" "),
                    status: "exit status: 1".into(),
                    stderr: "containerd: (4, 1): Can't convert yes(string) to bool".into(),
                });
            }
        } else {
            self.record(format!("exec {}", argv.join(" ")));
        }
        Ok(Output {
            stdout: "containerd github.com/containerd/containerd 1.6.20\n".into(),
            stderr: String::new(),
        })
    }
}
impl Restarter for Fakes {
    fn restart(&self, unit: &str) -> Result<(), RestartError> {
        self.record(format!("restart {unit}"));
        if self.restart_fails.replace(false) {
            return Err(RestartError::Failed {
                command: "restart".into(),
                status: "exit status: 1".into(),
                stderr: "containerd failed to start".into(),
            });
        }
        Ok(())
    }
}
impl ShimChecker for Fakes {
    fn check(&self, path: &Path) -> Result<ShimReport, ShimCheckError> {
        self.record("check-shim".to_owned());
        if !self.shim_ok {
            return Err(ShimCheckError {
                path: path.to_path_buf(),
                reason: Reason::Failed {
                    command: "shim --version".into(),
                    status: "exit status: 127".into(),
                    stderr: "version `GLIBC_2.34' not found".into(),
                },
            });
        }
        Ok(ShimReport {
            version: "containerd-shim-wasmpod-v1 0.1.0\n".into(),
            self_check: "self-check: ok\n".into(),
        })
    }
}
impl TaskFinder for Fakes {
    fn running(&self, _: &[PathBuf]) -> Vec<ShimTask> {
        self.tasks.clone()
    }
}
impl Prober for Fakes {
    fn probe(&self, expect: &Expect) -> Result<(), ProbeError> {
        let present = match expect.present {
            Some(p) => p.to_string(),
            None => "any".to_owned(),
        };
        self.record(format!("probe present={present}"));
        if self.probe_ok || expect.present.is_none() {
            Ok(())
        } else {
            Err(ProbeError::Runtime("has no runtime".into()))
        }
    }
}
impl NodeLabeler for Fakes {
    fn set_label(&self, node: &str, key: &str, value: Option<&str>) -> Result<(), LabelError> {
        self.record(format!("label {node} {key}={value:?}"));
        Ok(())
    }
}

pub(super) const ORIGINAL: &str = "# my containerd\nversion = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.9\" # pinned\n";

/// A host root holding [`ORIGINAL`] and a shim to install, options for node `node-1`,
/// and fakes whose probe succeeds.
pub(super) fn setup() -> (tempfile::TempDir, Options, Fakes) {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::new(dir.path().join("host"));
    host.write_atomic("/etc/containerd/config.toml", ORIGINAL.as_bytes(), 0o644)
        .unwrap();
    let shim = dir.path().join(SHIM_BINARY);
    std::fs::write(&shim, b"shim").unwrap();
    let mut opts = Options::new(host);
    opts.shim_source = Some(shim);
    opts.node_name = Some("node-1".into());
    opts.cgroup_driver = "systemd".parse().unwrap();
    (dir, opts, Fakes::new(true))
}

pub(super) fn files(opts: &Options) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(opts.host.root(), &mut out);
    out.sort();
    out
}

/// The host as [`setup`] made it: the original config, no shim, no state file.
pub(super) fn assert_as_before_the_install(opts: &Options) {
    assert_eq!(
        opts.host
            .read_text("/etc/containerd/config.toml")
            .unwrap()
            .unwrap(),
        ORIGINAL
    );
    assert!(!opts.host.exists(opts.shim_target()));
    assert!(!opts.host.exists(&opts.state_file));
}
