//! Where a start's time goes, from the shim's own debug timing in containerd's log.
//!
//! The shim logs, per container (containerd at debug level passes `-debug` to its shims):
//! - `shim daemon for ID: task service ready D after main` — the daemon's own start;
//! - `container ID: Wasm process N ready in D (spawn a, spec b, stdio c, locate d,
//!   engine e, load f)` — Create's runner: spawn is the shim's side (cgroup, clone, exec,
//!   process start), the rest the runner's phases before it reported ready;
//! - `container ID: created, pid N, in D` — the whole Create in the shim;
//! - `container ID: pid N exited with status S after running D` — Start → exit
//!   (instantiation and the guest);
//! - `container ID: deleted in D` — Delete in the shim.
//!
//! [`StartBreakdown::from_log`] takes the medians over the containers whose id starts with
//! a prefix; what the shim does not see of a `ctr run --rm` (ctr, containerd, the `start`
//! subcommand's exec) is the wall time minus the shim's parts.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::stats::Summary;

/// Phases of the runner's "ready in" line, in the order logged.
const RUNNER_PHASES: [&str; 7] = ["spawn", "spec", "stdio", "locate", "engine", "load", "root"];

/// Median milliseconds of each phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StartBreakdown {
    pub containers: usize,
    pub daemon_start_ms: f64,
    pub create_ms: f64,
    pub ready_ms: f64,
    /// `RUNNER_PHASES`, in order.
    pub runner_phases_ms: Vec<(String, f64)>,
    pub run_ms: f64,
    pub delete_ms: f64,
}

impl StartBreakdown {
    /// Medians over the containers whose id starts with `prefix`; `None` without debug lines.
    pub fn from_log(log: &Path, prefix: &str) -> Option<Self> {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let container = format!("container {prefix}");
        let daemon = format!("shim daemon for {prefix}");
        let durations = |marker: &str, key: &str| -> Vec<Duration> {
            lines
                .iter()
                .filter_map(|line| {
                    let rest = &line[line.find(marker)?..];
                    duration_after(rest, key)
                })
                .collect()
        };
        let ready = durations(&container, " ready in ");
        if ready.is_empty() {
            return None;
        }
        let median = |samples: &[Duration]| Summary::millis(samples).median;
        let phases = RUNNER_PHASES
            .iter()
            .map(|phase| {
                let key = format!("{phase} ");
                let samples: Vec<Duration> = lines
                    .iter()
                    .filter_map(|line| {
                        let rest = &line[line.find(&container)?..];
                        let split = &rest[rest.find(" ready in ")?..];
                        let open = split.find('(')?;
                        duration_after(&split[open..], &key)
                    })
                    .collect();
                (phase.to_string(), median(&samples))
            })
            .collect();
        Some(StartBreakdown {
            containers: ready.len(),
            daemon_start_ms: median(&durations(&daemon, " task service ready ")),
            create_ms: median(&durations(&container, ", in ")),
            ready_ms: median(&ready),
            runner_phases_ms: phases,
            run_ms: median(&durations(&container, " after running ")),
            delete_ms: median(&durations(&container, ": deleted in ")),
        })
    }

    /// A table of the phases of one `ctr run --rm` whose median wall time is `wall_ms`.
    pub fn table(&self, what: &str, wall_ms: f64) -> String {
        let shim = self.daemon_start_ms + self.create_ms + self.run_ms + self.delete_ms;
        let mut rows = vec![
            (format!("ctr run --rm {what}, wall"), wall_ms),
            (
                "  ctr + containerd + shim `start` exec (the rest)".to_owned(),
                (wall_ms - shim).max(0.0),
            ),
            (
                "  shim daemon: main -> task service".to_owned(),
                self.daemon_start_ms,
            ),
            ("  Create in the shim".to_owned(), self.create_ms),
            ("    runner ready".to_owned(), self.ready_ms),
        ];
        for (phase, ms) in &self.runner_phases_ms {
            rows.push((format!("      {phase}"), *ms));
        }
        rows.push((
            "  Start -> exit (instantiate + guest)".to_owned(),
            self.run_ms,
        ));
        rows.push(("  Delete in the shim".to_owned(), self.delete_ms));
        let mut out = format!(
            "start breakdown, median of {} containers (shim debug timing)\n",
            self.containers
        );
        for (name, ms) in rows {
            out.push_str(&format!("{name:<52} {ms:>8.2} ms\n"));
        }
        out
    }
}

/// The `Debug`-formatted duration right after `key` in `text` (`12.5ms`, `3.2µs`), or a
/// plain `N.NNms` figure as the runner phases are logged.
fn duration_after(text: &str, key: &str) -> Option<Duration> {
    let at = text.find(key)? + key.len();
    let value = text[at..]
        .split(|c: char| c == '"' || c == ',' || c == ')' || c.is_whitespace())
        .next()?;
    parse_debug_duration(value)
}

/// Parses a `Duration`'s `Debug` form (`950ns`, `12.5µs`, `3.2ms`, `1.02s`).
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let (number, scale) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|n| (n, *scale)))?;
    let value: f64 = number.parse().ok()?;
    Some(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debug_durations() {
        assert_eq!(
            parse_debug_duration("3.5ms"),
            Some(Duration::from_micros(3500))
        );
        assert_eq!(
            parse_debug_duration("12µs"),
            Some(Duration::from_micros(12))
        );
        assert_eq!(
            parse_debug_duration("1.25s"),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(parse_debug_duration("ms"), None);
    }

    #[test]
    fn reads_the_shim_lines_of_matching_containers() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        std::fs::write(
            &log,
            r#"time="1" level=debug msg="shim daemon for s-hello-1: task service ready 400µs after main" runtime=wasmpod
time="1" level=debug msg="container s-hello-1: Wasm process 12 ready in 7.5ms (spawn 6.00ms, spec 0.10ms, stdio 0.20ms, locate 0.30ms, engine 0.40ms, load 0.50ms)" runtime=wasmpod
time="1" level=info msg="container s-hello-1: created, pid 12, in 8ms" runtime=wasmpod
time="1" level=info msg="container other: Wasm process 13 ready in 1s (spawn 1.00ms, spec 0.10ms, stdio 0.20ms, locate 0.30ms, engine 0.40ms, load 0.50ms)" runtime=wasmpod
time="1" level=info msg="container s-hello-1: pid 12 exited with status 0 after running 2.5ms" runtime=wasmpod
time="1" level=info msg="container s-hello-1: deleted in 1.5ms" runtime=wasmpod
"#,
        )
        .unwrap();
        let b = StartBreakdown::from_log(&log, "s-hello").unwrap();
        assert_eq!(b.containers, 1);
        assert!((b.ready_ms - 7.5).abs() < 1e-9, "{b:?}");
        assert!((b.daemon_start_ms - 0.4).abs() < 1e-9, "{b:?}");
        assert!((b.create_ms - 8.0).abs() < 1e-9, "{b:?}");
        assert!((b.run_ms - 2.5).abs() < 1e-9, "{b:?}");
        assert!((b.delete_ms - 1.5).abs() < 1e-9, "{b:?}");
        let spawn = &b.runner_phases_ms[0];
        assert_eq!(spawn.0, "spawn");
        assert!((spawn.1 - 6.0).abs() < 1e-9, "{b:?}");
        assert!(b.table("hello", 50.0).contains("runner ready"));
        assert!(StartBreakdown::from_log(&log, "nothing").is_none());
    }
}
