//! What a set of processes uses, summed from `/proc` (the process-group path, and the
//! figures a cgroup cannot give where its controller is not enabled).

use std::sync::OnceLock;

/// CPU time, resident memory and threads of some processes, summed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcSums {
    /// User plus system CPU time, microseconds.
    pub cpu_usec: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Threads (the kernel's tasks, as `pids.current` counts them).
    pub threads: u64,
}

/// Clock ticks per second and the page size, read once.
fn units() -> (u64, u64) {
    static UNITS: OnceLock<(u64, u64)> = OnceLock::new();
    *UNITS.get_or_init(|| {
        // SAFETY: `sysconf` only reads a configuration value; it touches no memory of ours.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        (
            u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
            u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096),
        )
    })
}

/// The sums over `pids` (a process that is gone meanwhile, or a zombie, counts nothing).
/// Blocking: one read of `/proc/PID/stat` each.
pub(crate) fn proc_sums(pids: &[u32]) -> ProcSums {
    let (ticks, page) = units();
    let mut sums = ProcSums::default();
    for &pid in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(one) = parse_stat(&text, ticks, page) {
            sums.cpu_usec += one.cpu_usec;
            sums.rss_bytes += one.rss_bytes;
            sums.threads += one.threads;
        }
    }
    sums
}

/// One process's figures from its `stat` line (split after the last `)`: the command
/// name may hold anything); `None` for a zombie.
fn parse_stat(text: &str, ticks: u64, page: u64) -> Option<ProcSums> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name: state(0) ... utime(11) stime(12) ... num_threads(17) ... rss(21).
    if fields.first() == Some(&"Z") {
        return None;
    }
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let cpu_ticks = field(11)? + field(12)?;
    Some(ProcSums {
        cpu_usec: cpu_ticks.saturating_mul(1_000_000) / ticks,
        rss_bytes: field(21)?.saturating_mul(page),
        threads: field(17)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_cpu_memory_and_threads() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    12345 10000000 256 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0";
        let sums = parse_stat(line, 100, 4096).unwrap();
        assert_eq!(sums.cpu_usec, 3_000_000);
        assert_eq!(sums.rss_bytes, 256 * 4096);
        assert_eq!(sums.threads, 3);
        assert_eq!(parse_stat("7 (z) Z 1 7 7 0 -1 0", 100, 4096), None);
    }

    #[test]
    fn our_own_process_uses_something() {
        let sums = proc_sums(&[std::process::id()]);
        assert!(sums.rss_bytes > 0 && sums.threads >= 1, "{sums:?}");
    }
}
