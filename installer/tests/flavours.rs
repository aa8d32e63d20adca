//! Install and uninstall against real configuration files of each flavour (`tests/data/`):
//! the result parses, registers the runtime at the path its schema version reads, keeps every
//! other setting and comment, a second install changes nothing and does not restart, and
//! uninstall restores each file byte for byte (or removes the files it created).
//!
//! containerd, systemd and the API server are recording fakes here; `containerd.rs` runs
//! the installer against a real containerd.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item};
use wasmpod_installer::install::{self, Options, Report, Seams};
use wasmpod_installer::label::{LabelError, NodeLabeler};
use wasmpod_installer::probe::{Expect, ProbeError, Prober};
use wasmpod_installer::restart::{HostExec, Output, RestartError, Restarter};
use wasmpod_installer::shimcheck::{ShimCheckError, ShimChecker, ShimReport};
use wasmpod_installer::tasks::{ShimTask, TaskFinder};
use wasmpod_installer::tomledit::{self, ConfigVersion};
use wasmpod_installer::{hostfs::HostRoot, plan};

#[derive(Default)]
struct Fakes {
    events: RefCell<Vec<String>>,
    containerd_version: &'static str,
}

impl HostExec for Fakes {
    fn run(&self, argv: &[String]) -> Result<Output, RestartError> {
        self.events
            .borrow_mut()
            .push(format!("exec {}", argv.join(" ")));
        Ok(Output {
            stdout: format!(
                "containerd github.com/containerd/containerd {}\n",
                self.containerd_version
            ),
            stderr: String::new(),
        })
    }
}
impl Restarter for Fakes {
    fn restart(&self, unit: &str) -> Result<(), RestartError> {
        self.events.borrow_mut().push(format!("restart {unit}"));
        Ok(())
    }
}
impl Prober for Fakes {
    fn probe(&self, _: &Expect) -> Result<(), ProbeError> {
        Ok(())
    }
}
impl ShimChecker for Fakes {
    fn check(&self, _: &Path) -> Result<ShimReport, ShimCheckError> {
        Ok(ShimReport {
            version: "containerd-shim-wasmpod-v1 0.1.0\n".into(),
            self_check: "self-check: ok\n".into(),
        })
    }
}
impl TaskFinder for Fakes {
    fn running(&self, _: &[PathBuf]) -> Vec<ShimTask> {
        Vec::new()
    }
}
impl NodeLabeler for Fakes {
    fn set_label(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), LabelError> {
        Ok(())
    }
}

fn data(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every leaf value by dotted path (decor stripped), `imports` left out.
fn leaves(doc: &DocumentMut) -> BTreeMap<String, String> {
    fn walk(prefix: &str, item: &Item, out: &mut BTreeMap<String, String>) {
        if let Some(t) = item.as_table_like() {
            for (k, v) in t.iter() {
                let key = if prefix.is_empty() {
                    k.to_owned()
                } else {
                    format!("{prefix}.{k:?}")
                };
                walk(&key, v, out);
            }
        } else if let Some(v) = item.as_value() {
            let mut v = v.clone();
            v.decor_mut().clear();
            out.insert(prefix.to_owned(), v.to_string());
        }
    }
    let mut out = BTreeMap::new();
    walk("", doc.as_item(), &mut out);
    out.remove("imports");
    out
}

/// Parse a config or a k3s template (template directives dropped).
fn parse(text: &str) -> DocumentMut {
    let toml: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("{{"))
        .map(|l| format!("{l}\n"))
        .collect();
    tomledit::parse("result", &toml).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

struct Case {
    _dir: tempfile::TempDir,
    opts: Options,
    fakes: Fakes,
}

impl Case {
    fn new(files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path().join("host"));
        for (path, text) in files {
            host.write_atomic(path, text.as_bytes(), 0o644).unwrap();
        }
        let shim = dir.path().join("containerd-shim-wasmpod-v1");
        std::fs::write(&shim, b"\x7fELF shim").unwrap();
        let mut opts = Options::new(host);
        opts.shim_source = Some(shim);
        opts.node_name = Some("node-1".into());
        opts.cgroup_driver = "cgroupfs".parse().unwrap();
        Self {
            _dir: dir,
            opts,
            fakes: Fakes {
                containerd_version: "1.7.24",
                ..Fakes::default()
            },
        }
    }

    fn seams(&self) -> Seams<'_> {
        Seams {
            exec: &self.fakes,
            restarter: &self.fakes,
            prober: &self.fakes,
            labeler: Some(&self.fakes),
            shim_checker: &self.fakes,
            tasks: &self.fakes,
        }
    }

    fn install(&self) -> Report {
        install::install(&self.opts, &self.seams()).unwrap()
    }

    fn uninstall(&self) -> Report {
        install::uninstall(&self.opts, &self.seams()).unwrap()
    }

    fn read(&self, path: &str) -> Option<String> {
        self.opts.host.read_text(path).unwrap()
    }

    fn restarts(&self) -> usize {
        self.fakes
            .events
            .borrow()
            .iter()
            .filter(|e| e.starts_with("restart"))
            .count()
    }

    /// The full check for one flavour: `files` are the host's files before, `registered` the
    /// file that must end up holding the runtime at `version`'s path.
    fn check(
        files: &[(&str, String)],
        registered: &str,
        version: ConfigVersion,
        expect_changed: &[&str],
    ) -> Self {
        let case = Self::new(files);
        let before: BTreeMap<&str, Option<String>> =
            expect_changed.iter().map(|p| (*p, case.read(p))).collect();

        let first = case.install();
        let mut changed: Vec<PathBuf> = first.changed_files.clone();
        changed.sort();
        let mut want: Vec<PathBuf> = expect_changed.iter().map(PathBuf::from).collect();
        want.sort();
        assert_eq!(changed, want, "files changed");
        assert_eq!(case.restarts(), 1);

        let text = case.read(registered).expect("registered file exists");
        let doc = parse(&text);
        assert_eq!(
            tomledit::runtime_type(&doc, version, "wasmpod"),
            Some("io.containerd.wasmpod.v1"),
            "runtime at the {version} path:\n{text}"
        );
        // Only under the wrong version's path would containerd silently ignore it.
        for other in [ConfigVersion::V1, ConfigVersion::V2, ConfigVersion::V3] {
            if other != version {
                assert!(
                    !tomledit::has_runtime(&doc, other, "wasmpod"),
                    "runtime also at {other}:\n{text}"
                );
            }
        }
        // Everything that was there is still there, comments included.
        for (path, original) in &before {
            let Some(original) = original else { continue };
            let now = case.read(path).unwrap();
            let (old, new) = (leaves(&parse(original)), leaves(&parse(&now)));
            for (k, v) in &old {
                assert_eq!(new.get(k), Some(v), "{path}: {k} changed:\n{now}");
            }
            for line in original.lines().filter(|l| l.contains('#')) {
                assert!(
                    now.contains(line),
                    "{path}: lost comment line {line:?}:\n{now}"
                );
            }
        }

        // Idempotent: no change, no restart.
        let second = case.install();
        assert!(
            second.changed_files.is_empty(),
            "second install changed {:?}",
            second.changed_files
        );
        assert!(!second.restarted);
        assert_eq!(case.restarts(), 1);

        // Uninstall: byte for byte.
        let undo = case.uninstall();
        assert!(undo.restarted);
        for (path, original) in &before {
            assert_eq!(&case.read(path), original, "{path} restored");
        }
        assert!(
            !case
                .opts
                .host
                .exists("/usr/local/bin/containerd-shim-wasmpod-v1")
        );
        assert!(!case.opts.host.exists("/var/lib/wasmpod/install-state.json"));
        case
    }
}

const ROOT: &str = "/etc/containerd/config.toml";
const DROPIN: &str = "/etc/containerd/conf.d/wasmpod.toml";

#[test]
fn containerd_1_6_default_config_is_edited_in_place() {
    Case::check(
        &[(ROOT, data("containerd-1.6-default.toml"))],
        ROOT,
        ConfigVersion::V2,
        &[ROOT],
    );
}

#[test]
fn containerd_2_default_config_uses_the_version_3_path() {
    Case::check(
        &[(ROOT, data("containerd-2.1-default.toml"))],
        ROOT,
        ConfigVersion::V3,
        &[ROOT],
    );
}

#[test]
fn containerd_2_with_a_conf_d_glob_gets_only_a_drop_in() {
    let case = Case::check(
        &[(ROOT, data("containerd-2.1-conf-d.toml"))],
        DROPIN,
        ConfigVersion::V3,
        &[DROPIN],
    );
    let _ = case;
}

#[test]
fn empty_config_gets_a_drop_in_and_an_import() {
    // containerd 1.7 on the host: the empty config is read as version 2.
    let case = Case::new(&[(ROOT, data("empty.toml"))]);
    let r = case.install();
    assert_eq!(r.changed_files.len(), 2);
    let root = parse(&case.read(ROOT).unwrap());
    assert_eq!(tomledit::imports("root", &root).unwrap(), [DROPIN]);
    assert_eq!(tomledit::config_version(&root), Some(ConfigVersion::V2));
    let dropin = case.read(DROPIN).unwrap();
    assert!(dropin.starts_with("version = 2\n"), "{dropin}");
    assert!(
        dropin.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmpod]"),
        "{dropin}"
    );
    assert!(case.install().changed_files.is_empty());
    case.uninstall();
    assert_eq!(case.read(ROOT).as_deref(), Some(""));
    assert_eq!(case.read(DROPIN), None);
    // The full check, too.
    Case::check(
        &[(ROOT, data("empty.toml"))],
        DROPIN,
        ConfigVersion::V2,
        &[ROOT, DROPIN],
    );
}

#[test]
fn missing_config_on_containerd_2_gets_version_3() {
    let case = Case::new(&[]);
    let case = Case {
        fakes: Fakes {
            containerd_version: "v2.1.9",
            ..Fakes::default()
        },
        ..case
    };
    case.install();
    let dropin = case.read(DROPIN).unwrap();
    assert!(dropin.contains("io.containerd.cri.v1.runtime"), "{dropin}");
    case.uninstall();
    assert_eq!(
        case.read(ROOT),
        None,
        "a root config we created is removed again"
    );
}

#[test]
fn existing_runtimes_and_comments_are_kept() {
    Case::check(
        &[(ROOT, data("existing-runtimes.toml"))],
        ROOT,
        ConfigVersion::V2,
        &[ROOT],
    );
}

#[test]
fn stale_wasmpod_entry_is_corrected_in_place() {
    let stale = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmpod]\n  runtime_type = \"io.containerd.wasmpod.v0\" # old\n  privileged_without_host_devices = true\n";
    let case = Case::new(&[(ROOT, stale.to_owned())]);
    case.install();
    let text = case.read(ROOT).unwrap();
    assert!(
        text.contains("runtime_type = \"io.containerd.wasmpod.v1\""),
        "{text}"
    );
    assert!(
        text.contains("privileged_without_host_devices = true"),
        "{text}"
    );
    case.uninstall();
    assert_eq!(case.read(ROOT).unwrap(), stale);
}

const K3S_DIR: &str = "/var/lib/rancher/k3s/agent/etc/containerd";

#[test]
fn k3s_user_template_gets_a_marked_block() {
    let tmpl = format!("{K3S_DIR}/config.toml.tmpl");
    let case = Case::check(
        &[
            (
                &format!("{K3S_DIR}/config.toml"),
                data("k3s-rendered-v2.toml"),
            ),
            (&tmpl, data("k3s-config.toml.tmpl")),
            ("/etc/systemd/system/k3s.service", String::new()),
        ],
        &tmpl,
        ConfigVersion::V2,
        &[&tmpl],
    );
    assert!(
        case.fakes
            .events
            .borrow()
            .iter()
            .any(|e| e == "restart k3s")
    );
}

#[test]
fn k3s_without_template_gets_one_extending_base() {
    let tmpl = format!("{K3S_DIR}/config.toml.tmpl");
    let case = Case::new(&[(
        &format!("{K3S_DIR}/config.toml"),
        data("k3s-rendered-v2.toml"),
    )]);
    case.install();
    let text = case.read(&tmpl).unwrap();
    assert!(text.starts_with(plan::K3S_BASE), "{text}");
    assert!(
        text.contains(plan::BEGIN_MARK) && text.contains(plan::END_MARK),
        "{text}"
    );
    case.uninstall();
    assert_eq!(case.read(&tmpl), None);
}

#[test]
fn k3s_with_containerd_2_writes_the_v3_template() {
    let tmpl = format!("{K3S_DIR}/config-v3.toml.tmpl");
    Case::check(
        &[(
            &format!("{K3S_DIR}/config.toml"),
            "version = 3\n".to_owned(),
        )],
        &tmpl,
        ConfigVersion::V3,
        &[&tmpl],
    );
}

#[test]
fn k0s_gets_its_own_drop_in() {
    let dropin = "/etc/k0s/containerd.d/wasmpod.toml";
    Case::check(
        &[("/etc/k0s/k0s.yaml", String::new())],
        dropin,
        ConfigVersion::V2,
        &[dropin],
    );
}

#[test]
fn microk8s_template_is_edited_in_place() {
    let tmpl = "/var/snap/microk8s/current/args/containerd-template.toml";
    let case = Case::check(
        &[(tmpl, data("microk8s-containerd-template.toml"))],
        tmpl,
        ConfigVersion::V2,
        &[tmpl],
    );
    assert!(
        case.fakes
            .events
            .borrow()
            .iter()
            .any(|e| e == "restart snap.microk8s.daemon-containerd")
    );
}

#[test]
fn dry_run_prints_a_diff_and_touches_nothing() {
    let original = data("existing-runtimes.toml");
    let mut case = Case::new(&[(ROOT, original.clone())]);
    case.opts.dry_run = true;
    let r = case.install();
    assert!(
        r.diff.starts_with(&format!("--- {ROOT}\n+++ {ROOT}\n")),
        "{}",
        r.diff
    );
    assert!(
        r.diff
            .contains("+runtime_type = \"io.containerd.wasmpod.v1\""),
        "{}",
        r.diff
    );
    assert_eq!(case.read(ROOT).unwrap(), original);
    assert_eq!(case.restarts(), 0);
}
