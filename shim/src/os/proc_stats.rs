//! Resource usage of one process read from `/proc/<pid>`, for task Stats.
//!
//! Until containers have cgroups of their own this is what Stats reports: CPU time
//! (user + system) and resident memory of the container's process.

/// CPU and memory use of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessUsage {
    pub user_ns: u64,
    pub system_ns: u64,
    pub rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn read(pid: u32) -> std::io::Result<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse(&stat, &status, clock_ticks_per_second())
        .ok_or_else(|| std::io::Error::other(format!("unparsable /proc/{pid}/stat")))
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

fn parse(stat: &str, status: &str, ticks_per_second: u64) -> Option<ProcessUsage> {
    // The command name (field 2) may hold spaces; fields after its closing ')' are plain.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 after comm.
    let to_ns = |ticks: u64| ticks * 1_000_000_000 / ticks_per_second;
    let user_ns = to_ns(fields.get(11)?.parse().ok()?);
    let system_ns = to_ns(fields.get(12)?.parse().ok()?);
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcessUsage {
        user_ns,
        system_ns,
        rss_bytes: rss_kib * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_ticks_and_rss() {
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        let status = "Name:\tx\nVmRSS:\t    2048 kB\n";
        let usage = parse(stat, status, 100).unwrap();
        assert_eq!(usage.user_ns, 2_500_000_000);
        assert_eq!(usage.system_ns, 500_000_000);
        assert_eq!(usage.rss_bytes, 2 * 1024 * 1024);
    }

    #[test]
    fn reads_this_process() {
        let usage = read(std::process::id()).unwrap();
        assert!(usage.rss_bytes > 0);
    }
}
