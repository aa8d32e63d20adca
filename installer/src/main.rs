//! `wasmpod-installer`: the binary edge. Parses the command line, wires the real seams
//! (host commands via `nsenter` when the host root is mounted elsewhere, systemd or a
//! configured restart command, the Kubernetes API or `kubectl` for the node label) and maps
//! errors to exit codes.
//!
//! ```text
//! wasmpod-installer install|uninstall [--dry-run] [--host-root /host] [options]
//! ```
//!
//! Exit codes: 0 done (or nothing to do), 1 install/uninstall failed, 2 bad usage, 3
//! containerd did not come back with the expected configuration (install: every file was put
//! back and containerd restarted again), 4 the node could not be labelled, 5 the shim does not
//! run on this node, 6 containerd refuses the new configuration, 7 uninstall refused: wasmpod
//! tasks still run (see `--force`).

// The dry-run diff is this binary's output.
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use log::{LevelFilter, Log, Metadata, Record};
use wasmpod_installer::detect::{CgroupDriverChoice, Flavour};
use wasmpod_installer::hostfs::HostRoot;
use wasmpod_installer::install::{self, Options, Seams};
use wasmpod_installer::label::{KubeApi, Kubectl, NodeLabeler};
use wasmpod_installer::probe::{ContainerdProbe, Dump};
use wasmpod_installer::restart::{NoRestart, ProcessExec, Restarter, ShellCommand, Systemctl};
use wasmpod_installer::shimcheck::HostShimCheck;
use wasmpod_installer::tasks::ProcScan;
use wasmpod_installer::tomledit::ConfigVersion;
use wasmpod_installer::{Error, SHIM_BINARY};

const USAGE: &str = "usage: wasmpod-installer install|uninstall [options]
  --dry-run                 print the changes, make none
  --host-root DIR           where the host's / is mounted (default /)
  --flavour NAME            containerd|k3s|rke2|k0s|microk8s (default: detected)
  --containerd-config PATH  containerd's root config (default /etc/containerd/config.toml)
  --dropin-dir DIR          drop-in directory (default /etc/containerd/conf.d)
  --config-version 2|3      schema version when the config does not state one
  --cgroup-driver DRIVER    systemd|cgroupfs|auto (default auto: read the kubelet's config)
  --shim PATH               shim binary to copy (default /opt/wasmpod/bin/containerd-shim-wasmpod-v1)
  --shim-sha256 HEX         its expected sha256 (default: <shim>.sha256 if present)
  --no-shim                 do not copy the shim
  --no-shim-check           do not run the installed shim (--version, --self-check) before labelling
  --install-dir DIR         host directory for the shim (default /usr/local/bin)
  --no-runtime-path         do not write runtime_path (containerd finds the shim on its PATH)
  --runtime-option K=V      extra runtime option (V is TOML: true, 8080, '\"text\"'); repeatable
  --state-file PATH         host path of the state file (default /var/lib/wasmpod/install-state.json)
  --restart-command CMD     restart containerd with `sh -c CMD` instead of systemctl
  --containerd-bin PATH     the host's containerd binary (default containerd, on the host's PATH)
  --no-validate             do not validate the new config with `containerd config dump` first
  --host-exec MODE          nsenter|direct: how host commands run (default: nsenter unless --host-root is /)
  --probe-command CMD       command printing containerd's merged config, or `none`
  --probe-timeout SECS      how long to wait for containerd (default 60)
  --containerd-socket PATH  containerd's socket as seen here (default: from the config, under --host-root)
  --node-name NAME          node to label (default $NODE_NAME)
  --no-label                never touch the node label
  --stay                    after install, keep running (DaemonSet main container)
  --force                   uninstall even while wasmpod tasks still run on the node
  --log-level LEVEL         error|warn|info|debug (default info, or $WASMPOD_LOG)";

/// A parsed command line.
#[derive(Debug)]
struct Cli {
    verb: String,
    opts: Options,
    restart_command: Option<String>,
    host_exec: Option<bool>,
    probe: Dump,
    probe_timeout: Duration,
    socket: Option<PathBuf>,
    no_label: bool,
    stay: bool,
    log_level: LevelFilter,
}

fn parse(argv: impl IntoIterator<Item = String>) -> anyhow::Result<Cli> {
    let mut argv = argv.into_iter();
    let verb = argv.next().context("missing command")?;
    if !matches!(verb.as_str(), "install" | "uninstall") {
        bail!("unknown command {verb:?}");
    }
    let default_shim = PathBuf::from("/opt/wasmpod/bin").join(SHIM_BINARY);
    let mut opts = Options::new(HostRoot::new("/"));
    opts.shim_source = Some(default_shim);
    opts.node_name = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty());
    let mut cli = Cli {
        verb,
        opts,
        restart_command: None,
        host_exec: None,
        probe: Dump::Auto,
        probe_timeout: Duration::from_secs(60),
        socket: None,
        no_label: false,
        stay: false,
        log_level: std::env::var("WASMPOD_LOG")
            .ok()
            .and_then(|l| l.parse().ok())
            .unwrap_or(LevelFilter::Info),
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().with_context(|| format!("{flag} needs a value"));
        let o = &mut cli.opts;
        match flag.as_str() {
            "--dry-run" => o.dry_run = true,
            "--host-root" => o.host = HostRoot::new(value()?),
            "--flavour" => {
                let v = value()?;
                o.detect.flavour = if v == "auto" {
                    None
                } else {
                    Some(v.parse::<Flavour>()?)
                };
            }
            "--containerd-config" => o.detect.containerd_config = value()?.into(),
            "--dropin-dir" => o.detect.dropin_dir = value()?.into(),
            "--config-version" => {
                let v = value()?;
                let n: i64 = v
                    .parse()
                    .with_context(|| format!("--config-version {v:?}"))?;
                o.config_version = Some(
                    ConfigVersion::from_number(n)
                        .filter(|v| *v != ConfigVersion::V1)
                        .with_context(|| format!("--config-version {n}: expected 2 or 3"))?,
                );
            }
            "--cgroup-driver" => o.cgroup_driver = value()?.parse::<CgroupDriverChoice>()?,
            "--shim" => o.shim_source = Some(value()?.into()),
            "--shim-sha256" => o.shim_sha256 = Some(value()?),
            "--no-shim" => o.shim_source = None,
            "--no-shim-check" => o.shim_check = false,
            "--containerd-bin" => o.containerd_bin = value()?,
            "--no-validate" => o.validate = false,
            "--force" => o.force = true,
            "--install-dir" => o.install_dir = value()?.into(),
            "--no-runtime-path" => o.runtime_path = false,
            "--runtime-option" => {
                let pair = value()?;
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--runtime-option {pair:?}: expected KEY=VALUE"))?;
                o.runtime_options.push((k.to_owned(), v.to_owned()));
            }
            "--state-file" => o.state_file = value()?.into(),
            "--node-name" => o.node_name = Some(value()?),
            "--restart-command" => cli.restart_command = Some(value()?),
            "--host-exec" => {
                cli.host_exec = Some(match value()?.as_str() {
                    "nsenter" => true,
                    "direct" => false,
                    other => bail!("--host-exec {other:?}: expected nsenter or direct"),
                })
            }
            "--probe-command" => {
                let v = value()?;
                cli.probe = if v == "none" {
                    Dump::Skip
                } else {
                    Dump::Command(vec!["sh".into(), "-c".into(), v])
                };
            }
            "--probe-timeout" => {
                let v = value()?;
                cli.probe_timeout = Duration::from_secs(
                    v.parse()
                        .with_context(|| format!("--probe-timeout {v:?}"))?,
                );
            }
            "--containerd-socket" => cli.socket = Some(value()?.into()),
            "--no-label" => cli.no_label = true,
            "--stay" => cli.stay = true,
            "--log-level" => {
                let v = value()?;
                cli.log_level = v.parse().with_context(|| format!("--log-level {v:?}"))?;
            }
            "-h" | "--help" => bail!("help requested"),
            other => bail!("unknown option {other:?}"),
        }
    }
    if let Some(src) = &cli.opts.shim_source
        && cli.verb == "install"
        && !src.exists()
    {
        bail!(
            "shim binary {} not found (pass --shim PATH or --no-shim)",
            src.display()
        );
    }
    Ok(cli)
}

struct StderrLog(LevelFilter);

impl Log for StderrLog {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let _ = writeln!(
                std::io::stderr(),
                "wasmpod-installer {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }
    fn flush(&self) {}
}

fn run(cli: &Cli) -> Result<install::Report, Error> {
    let host = &cli.opts.host;
    let nsenter = cli.host_exec.unwrap_or(!host.is_slash());
    let exec = ProcessExec { nsenter };
    let systemctl = Systemctl { exec };
    let shell;
    let restarter: &dyn Restarter = match &cli.restart_command {
        Some(command) => {
            shell = ShellCommand {
                command: command.clone(),
            };
            &shell
        }
        None if host.exists("/run/systemd/system") => &systemctl,
        None => &NoRestart,
    };
    let prober = ContainerdProbe {
        host: host.clone(),
        timeout: cli.probe_timeout,
        exec,
        dump: cli.probe.clone(),
        socket: cli.socket.clone(),
    };
    let api = KubeApi::in_cluster();
    let kubectl = which("kubectl").map(|bin| Kubectl { bin });
    let labeler: Option<&dyn NodeLabeler> = if cli.no_label {
        None
    } else if let Some(api) = &api {
        Some(api)
    } else {
        kubectl.as_ref().map(|k| k as &dyn NodeLabeler)
    };
    let shim_checker = HostShimCheck {
        host: host.clone(),
        nsenter,
        timeout: cli.probe_timeout,
    };
    // hostPID in the DaemonSet: this /proc is the node's process table.
    let tasks = ProcScan {
        proc: PathBuf::from("/proc"),
        extra: cli.socket.iter().cloned().collect(),
    };
    let seams = Seams {
        exec: &exec,
        restarter,
        prober: &prober,
        labeler,
        shim_checker: &shim_checker,
        tasks: &tasks,
    };
    if cli.verb == "install" {
        install::install(&cli.opts, &seams)
    } else {
        install::uninstall(&cli.opts, &seams)
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| Path::new(p).is_file())
}

fn exit_code(e: &Error) -> u8 {
    match e.root() {
        Error::Probe(_) => 3,
        // A failed restart after which the install was rolled back.
        Error::Restart(_) if matches!(e, Error::RolledBack { .. }) => 3,
        Error::Label(_) => 4,
        Error::ShimCheck(_) => 5,
        Error::Validate(_) => 6,
        Error::TasksRunning { .. } => 7,
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = match parse(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("wasmpod-installer: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let _ = log::set_boxed_logger(Box::new(StderrLog(cli.log_level)));
    log::set_max_level(cli.log_level);
    let report = match run(&cli) {
        Ok(report) => report,
        Err(e) => {
            let e = anyhow::Error::from(e);
            log::error!("{} failed: {e:#}", cli.verb);
            return ExitCode::from(exit_code(
                e.downcast_ref::<Error>().expect("an installer error"),
            ));
        }
    };
    if cli.opts.dry_run {
        if report.diff.is_empty() {
            println!("# no configuration changes");
        } else {
            print!("{}", report.diff);
        }
    }
    if cli.stay && cli.verb == "install" && !cli.opts.dry_run {
        log::info!("staying up until terminated");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_flags() {
        let cli = parse(args(
            "uninstall --host-root /host --flavour k3s --config-version 3 --cgroup-driver systemd --no-shim --runtime-option A=true --probe-command none --dry-run",
        ))
        .unwrap();
        assert_eq!(cli.verb, "uninstall");
        assert_eq!(cli.opts.host.root(), Path::new("/host"));
        assert_eq!(cli.opts.detect.flavour, Some(Flavour::K3s));
        assert_eq!(cli.opts.config_version, Some(ConfigVersion::V3));
        assert_eq!(
            cli.opts.runtime_options,
            [("A".to_owned(), "true".to_owned())]
        );
        assert_eq!(cli.probe, Dump::Skip);
        assert!(cli.opts.dry_run && cli.opts.shim_source.is_none());
    }

    #[test]
    fn refusals_have_their_own_exit_codes() {
        use wasmpod_installer::restart::RestartError;
        use wasmpod_installer::validate::ValidateError;
        let rolled = |cause: Error| Error::RolledBack {
            cause: Box::new(cause),
            rollback: String::new(),
        };
        let restart = || Error::Restart(RestartError::NoRestartMethod);
        assert_eq!(exit_code(&restart()), 1);
        assert_eq!(exit_code(&rolled(restart())), 3);
        let rejected = || {
            Error::Validate(ValidateError::Rejected {
                message: String::new(),
            })
        };
        assert_eq!(exit_code(&rolled(rejected())), 6);
        assert_eq!(exit_code(&Error::TasksRunning { tasks: Vec::new() }), 7);
    }

    #[test]
    fn bad_usage_is_refused() {
        assert!(parse(args("frobnicate")).is_err());
        assert!(parse(args("install --config-version 1 --no-shim")).is_err());
        assert!(parse(args("install --cgroup-driver maybe --no-shim")).is_err());
        assert!(parse(args("install --shim /nonexistent")).is_err());
        let cli = parse(args(
            "uninstall --force --no-validate --no-shim-check --containerd-bin /x/containerd",
        ))
        .unwrap();
        assert!(cli.opts.force && !cli.opts.validate && !cli.opts.shim_check);
        assert_eq!(cli.opts.containerd_bin, "/x/containerd");
    }
}
