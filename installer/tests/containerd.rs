//! The installer against a real containerd: for the system's containerd (1.6 on Debian 12)
//! and every version fetched by `scripts/fetch-containerd.sh` into
//! `$HOME/.cache/wasmpod/containerd/<version>/usr/bin/` (1.7, 2.1), this
//!
//! 1. writes that containerd's own `containerd config default` as
//!    `<host root>/etc/containerd/config.toml`, changing only root, state, sockets and
//!    metrics to private paths (never the system containerd's), and starts containerd;
//! 2. runs `wasmpod-installer install` against that host root, with a restart command that
//!    stops and starts this containerd and `containerd config dump` as the probe;
//! 3. checks containerd answers, its CRI plugin loaded, and its merged config has runtime
//!    `wasmpod` (`io.containerd.wasmpod.v1`) under the CRI plugin path of its version;
//!    then, as kubelet would, a CRI `RunPodSandbox` with `runtime_handler: wasmpod` (a
//!    hostNetwork pod, so no CNI is involved) must give a READY sandbox served by the shim
//!    the installer put in `<host root>/usr/local/bin` (the installer runs with
//!    `--no-runtime-path` and containerd's `PATH` starts with that directory); StopPodSandbox
//!    and RemovePodSandbox leave no shim process, mount, shim socket or cgroup;
//! 4. runs install again: nothing changes, no restart;
//! 5. runs `uninstall`: one more restart, the config file is the stock one byte for byte,
//!    the runtime is gone, the shim and the state file are removed, and `RunPodSandbox` with
//!    handler `wasmpod` is refused (`no runtime for "wasmpod" is configured`).
//!
//! The "stock" config carries a few test-only CRI settings this machine needs (see
//! `shared/FIELD-NOTES.md`): `restrict_oom_score_adj`, a private CNI conf dir, and the
//! sandbox image `localhost/pause:latest` (busybox, imported into `k8s.io` at start, never
//! pulled). They are written before the installer runs, so it has to preserve them.
//!
//! Needs root, containerd, busybox-static (`scripts/setup.sh`) and the built shim
//! (`cargo build -p containerd-shim-wasmpod`, or `$WASMPOD_SHIM`); fails with a clear message
//! otherwise.

use std::process::Command;

use wasmpod_test::containerd::{CRI_NAMESPACE, SHIM_BINARY, locate_shim};

#[path = "containerd/node.rs"]
mod node;
use node::*;

#[test]
fn install_registers_with_real_containerd_and_uninstall_restores_it() {
    require_root_and_containerd();
    // The real shim: CRI starts the copy the installer puts on containerd's PATH.
    let shim = locate_shim().unwrap_or_else(|e| panic!("{e:#}"));

    for (label, bin_dir) in containerds() {
        eprintln!("--- containerd {label}");
        let c = Ctrd::start(&label, bin_dir.as_deref());
        let stock = std::fs::read(c.config()).unwrap();
        assert_eq!(runtime_in_dump(&c.dump()), None);

        let out = run(&mut c.installer("install", &shim));
        assert!(out.is_empty(), "install prints nothing on stdout: {out}");
        assert_eq!(c.restarts(), 1, "{label}: install restarts containerd once");
        c.wait_ready();
        assert_eq!(
            runtime_in_dump(&c.dump()).as_deref(),
            Some("io.containerd.wasmpod.v1"),
            "{label}: merged config registers wasmpod under its CRI plugin path"
        );
        let plugins = run(Command::new(&c.ctr)
            .arg("--address")
            .arg(c.socket())
            .args(["plugins", "ls"]));
        let cri = plugins
            .lines()
            .find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "))
            .unwrap_or_else(|| panic!("{label}: no CRI plugin in\n{plugins}"));
        assert!(
            cri.trim_end().ends_with("ok"),
            "{label}: CRI plugin not ok: {cri}"
        );
        assert!(
            c.host()
                .join("usr/local/bin/containerd-shim-wasmpod-v1")
                .is_file()
        );
        assert!(
            c.host()
                .join("var/lib/wasmpod/install-state.json")
                .is_file()
        );
        sandbox_runs_with_wasmpod(&c, &label);

        let installed = std::fs::read(c.config()).unwrap();
        run(&mut c.installer("install", &shim));
        assert_eq!(c.restarts(), 1, "{label}: second install does not restart");
        assert_eq!(std::fs::read(c.config()).unwrap(), installed);

        let dry = run(c.installer("uninstall", &shim).arg("--dry-run"));
        assert!(
            dry.contains("-[plugins."),
            "{label}: dry-run uninstall shows the removal:\n{dry}"
        );
        assert_eq!(c.restarts(), 1);

        run(&mut c.installer("uninstall", &shim));
        assert_eq!(c.restarts(), 2, "{label}: uninstall restarts once");
        c.wait_ready();
        assert_eq!(
            std::fs::read(c.config()).unwrap(),
            stock,
            "{label}: config restored byte for byte"
        );
        assert_eq!(runtime_in_dump(&c.dump()), None);
        assert!(
            !c.host()
                .join("usr/local/bin/containerd-shim-wasmpod-v1")
                .exists()
        );
        assert!(!c.host().join("var/lib/wasmpod/install-state.json").exists());
        sandbox_refused_without_wasmpod(&c, &label);
    }
}

/// What must hold after a refused install: containerd serves (CRI plugin ok), the config is
/// `config` byte for byte, no shim or state was left, and the node was never labelled.
fn assert_node_unchanged(c: &Ctrd, label: &str, config: &[u8]) {
    c.wait_ready();
    assert_eq!(
        std::fs::read(c.config()).unwrap(),
        config,
        "{label}: config byte-identical"
    );
    let plugins = run(Command::new(&c.ctr)
        .arg("--address")
        .arg(c.socket())
        .args(["plugins", "ls"]));
    assert!(
        plugins
            .lines()
            .any(|l| l.contains(" cri ") && l.trim_end().ends_with("ok")),
        "{label}: CRI plugin not ok:\n{plugins}"
    );
    assert!(
        !c.host().join("usr/local/bin").join(SHIM_BINARY).exists(),
        "{label}: shim left installed"
    );
    assert!(
        !c.host().join("var/lib/wasmpod/install-state.json").exists(),
        "{label}: state left"
    );
    let calls = c.kubectl_calls();
    assert!(
        !calls.contains("wasmpod.dev/installed=true"),
        "{label}: node labelled: {calls}"
    );
}

#[test]
fn a_config_containerd_rejects_changes_nothing() {
    require_root_and_containerd();
    let shim = locate_shim().unwrap_or_else(|e| panic!("{e:#}"));
    for (label, bin_dir) in containerds() {
        eprintln!("--- containerd {label}");
        let c = Ctrd::start(&label, bin_dir.as_deref());
        // Someone edited the config without restarting containerd: a bool given as a string.
        // The running containerd has not read it; a restart would leave the node without
        // a container runtime.
        let stock = std::fs::read_to_string(c.config()).unwrap();
        let broken = stock.replacen("enable_selinux = false", "enable_selinux = \"yes\"", 1);
        assert_ne!(broken, stock, "{label}: no enable_selinux line to break");
        std::fs::write(c.config(), &broken).unwrap();

        let out = c.installer("install", &shim).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{label}: exit 6:\n{stderr}");
        assert!(
            stderr.contains("containerd refuses the new configuration")
                && (stderr.contains("EnableSelinux") || stderr.contains("to bool")),
            "{label}: containerd's message is passed on:\n{stderr}"
        );
        assert_eq!(c.restarts(), 0, "{label}: containerd not restarted");
        assert_node_unchanged(&c, &label, broken.as_bytes());
        let candidates: Vec<_> = std::fs::read_dir(c.config().parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "config.toml")
            .map(|e| e.file_name())
            .collect();
        assert!(candidates.is_empty(), "{label}: left {candidates:?}");
    }
}

#[test]
fn a_failing_restart_puts_every_file_back_and_containerd_serves() {
    require_root_and_containerd();
    let shim = locate_shim().unwrap_or_else(|e| panic!("{e:#}"));
    for (label, bin_dir) in containerds() {
        eprintln!("--- containerd {label}");
        let c = Ctrd::start(&label, bin_dir.as_deref());
        let stock = std::fs::read(c.config()).unwrap();
        // containerd dies on the new config (as when a plugin fails to load it) and the
        // restart command fails; with the old config it starts again.
        let failing = c.dir.path().join("failing-restart.sh");
        std::fs::write(
            &failing,
            format!(
                "if grep -q io.containerd.wasmpod.v1 {config}; then\n  kill -KILL $(cat {pid})\n  echo 'containerd exited: failed to start with the new configuration' >&2\n  exit 1\nfi\nexec sh {restart}\n",
                config = c.config().display(),
                pid = c.dir.path().join("pid").display(),
                restart = c.restart_script().display(),
            ),
        )
        .unwrap();
        let mut cmd = c.installer("install", &shim);
        cmd.arg("--restart-command")
            .arg(format!("sh {}", failing.display()));
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{label}: exit 3:\n{stderr}");
        assert!(
            stderr.contains("failed to start with the new configuration")
                && stderr.contains("every file was put back as it was")
                && stderr.contains(
                    "containerd was restarted with its previous configuration and serves"
                ),
            "{label}:\n{stderr}"
        );
        assert_eq!(c.restarts(), 1, "{label}: restarted again once");
        assert_node_unchanged(&c, &label, &stock);
        assert_eq!(runtime_in_dump(&c.dump()), None);
    }
}

#[test]
fn uninstall_is_refused_while_a_wasm_pod_runs_and_forced_works() {
    require_root_and_containerd();
    let shim = locate_shim().unwrap_or_else(|e| panic!("{e:#}"));
    for (label, bin_dir) in containerds() {
        eprintln!("--- containerd {label}");
        let c = Ctrd::start(&label, bin_dir.as_deref());
        let stock = std::fs::read(c.config()).unwrap();
        run(&mut c.installer("install", &shim));
        assert!(c.kubectl_calls().contains("wasmpod.dev/installed=true"));
        let installed = std::fs::read(c.config()).unwrap();
        let cri = c.cri(&label);
        let cgroup = c.cgroup();
        let pod = cri
            .run_pod(&c.pod("installer-busy", &cgroup))
            .unwrap_or_else(|e| panic!("{label}: RunPodSandbox: {e}"));

        let out = c.installer("uninstall", &shim).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{label}: exit 7:\n{stderr}");
        assert!(
            stderr.contains(&format!("{CRI_NAMESPACE}/{}", pod.id))
                && stderr.contains("pass --force"),
            "{label}: names the running pod:\n{stderr}"
        );
        assert!(
            c.kubectl_calls().contains("wasmpod.dev/installed-"),
            "{label}: label removed first: {}",
            c.kubectl_calls()
        );
        assert_eq!(std::fs::read(c.config()).unwrap(), installed, "{label}");
        assert_eq!(
            c.restarts(),
            1,
            "{label}: refused uninstall restarts nothing"
        );
        assert!(c.host().join("usr/local/bin").join(SHIM_BINARY).exists());

        let out = c
            .installer("uninstall", &shim)
            .arg("--force")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{label}: forced uninstall:\n{stderr}");
        assert!(
            stderr.contains("--force: uninstalling while"),
            "{label}: {stderr}"
        );
        c.wait_ready();
        assert_eq!(std::fs::read(c.config()).unwrap(), stock, "{label}");
        // The pod's shim outlives the uninstall (that is what --force means); tear it down
        // as far as containerd still can, Ctrd's drop kills what is left.
        let _ = c.cri(&label).stop_and_remove_pod(&pod.id);
        drop(c);
        let _ = cgroup.remove();
    }
}
