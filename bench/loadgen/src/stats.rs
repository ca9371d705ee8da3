//! Latency percentiles and server-side resource readings from /proc.
//!
//! Percentiles come from a sorted vector of every sample: runs are bounded (seconds, at most a few
//! million samples), so exact ranks are cheaper to trust than a histogram's buckets. Server CPU
//! time and RSS are read from /proc for the whole process tree (nginx runs a master and workers),
//! so every contender is charged for all of its processes.

use std::collections::HashMap;
use std::path::Path;

/// Latency summary of a run, in microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Summary {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "mean_us": (self.mean_us * 10.0).round() / 10.0,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
        })
    }
}

/// Nearest-rank percentile (the smallest sample with at least `q` of all samples at or below it),
/// so a reported p99 is a latency some request really had.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises latency samples (microseconds); `None` when there are none.
pub fn summarize(mut samples: Vec<u64>) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let sum: u128 = samples.iter().map(|&v| u128::from(v)).sum();
    Some(Summary {
        count: samples.len(),
        mean_us: sum as f64 / samples.len() as f64,
        p50_us: percentile(&samples, 0.50),
        p90_us: percentile(&samples, 0.90),
        p99_us: percentile(&samples, 0.99),
        p999_us: percentile(&samples, 0.999),
        max_us: samples[samples.len() - 1],
    })
}

/// Fields of /proc/PID/stat after the command name (which may itself contain spaces and
/// parentheses, hence the split at the last ')').
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let close = stat.rfind(')')?;
    Some(stat[close + 1..].split_whitespace().collect())
}

/// (parent pid, utime + stime in clock ticks) from the text of /proc/PID/stat.
pub fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    parse_stat_split(stat).map(|(ppid, u, s)| (ppid, u + s))
}

/// (parent pid, utime, stime in clock ticks) from the text of /proc/PID/stat: user space
/// (TLS, our code) and kernel (TCP, syscalls) apart.
pub fn parse_stat_split(stat: &str) -> Option<(u32, u64, u64)> {
    let f = stat_fields(stat)?;
    // After the name: state(0) ppid(1) ... utime(11) stime(12), i.e. fields 14 and 15 of proc(5).
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime, stime))
}

/// VmRSS in KiB from the text of /proc/PID/status.
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `root` and all its descendants, found by scanning /proc (the proxies fork workers whose pids
/// the harness does not know).
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, _)) = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c.iter().copied());
        }
        i += 1;
    }
    out
}

/// Clock ticks per second for /proc CPU times; asked of getconf because reading it with sysconf
/// would need `unsafe`. 100 is what Linux uses everywhere we run.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) used so far by the process tree rooted at each pid.
pub fn tree_cpu_seconds(pids: &[u32], ticks: f64) -> f64 {
    let (u, s) = tree_cpu_split(pids, ticks);
    u + s
}

/// CPU seconds used so far by the process tree rooted at each pid: (user, system).
pub fn tree_cpu_split(pids: &[u32], ticks: f64) -> (f64, f64) {
    let (mut user, mut sys) = (0u64, 0u64);
    for &root in pids {
        for pid in process_tree(root) {
            if let Some((_, u, s)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat_split)
            {
                user += u;
                sys += s;
            }
        }
    }
    (user as f64 / ticks, sys as f64 / ticks)
}

fn read_stat(p: &Path) -> Option<(u32, u64)> {
    std::fs::read_to_string(p)
        .ok()
        .as_deref()
        .and_then(parse_stat)
}

/// Resident memory (KiB) of the process tree rooted at each pid, summed.
pub fn tree_rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .flat_map(|&root| process_tree(root))
        .filter_map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .as_deref()
                .and_then(parse_vmrss_kib)
        })
        .sum()
}

/// CPU seconds used so far by this process (the load generator), to show when it, not the
/// server, was the bottleneck.
pub fn self_cpu_seconds(ticks: f64) -> f64 {
    read_stat(Path::new("/proc/self/stat")).map_or(0.0, |(_, t)| t as f64 / ticks)
}

/// CPU seconds used by the children this process has waited for (cutime + cstime): the cost of
/// an external client such as `openssl s_time` run by `loadgen s-time`.
pub fn children_cpu_seconds(ticks: f64) -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(stat_fields)
        .and_then(|f| {
            // After the name: cutime(13) cstime(14), i.e. fields 16 and 17 of proc(5).
            let cu: u64 = f.get(13)?.parse().ok()?;
            let cs: u64 = f.get(14)?.parse().ok()?;
            Some((cu + cs) as f64 / ticks)
        })
        .unwrap_or(0.0)
}

/// Rounds for display in JSON: figures are noisy beyond three significant digits anyway.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = summarize((1..=100).collect()).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_us, 50);
        assert_eq!(s.p90_us, 90);
        assert_eq!(s.p99_us, 99);
        assert_eq!(s.p999_us, 100);
        assert_eq!(s.max_us, 100);
        assert!((s.mean_us - 50.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_of_unsorted_and_tiny_inputs() {
        let s = summarize(vec![900, 5, 7]).unwrap();
        assert_eq!(s.p50_us, 7);
        assert_eq!(s.p99_us, 900);
        let one = summarize(vec![42]).unwrap();
        assert_eq!((one.p50_us, one.p99_us, one.max_us), (42, 42, 42));
        assert!(summarize(Vec::new()).is_none());
    }

    #[test]
    fn proc_stat_with_odd_command_name() {
        let line = "1234 (nginx: worker (x)) S 1200 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(line), Some((1200, 325)));
        assert_eq!(parse_stat_split(line), Some((1200, 250, 75)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn vmrss_from_status() {
        let status = "Name:\thaproxy\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t1\n";
        assert_eq!(parse_vmrss_kib(status), Some(12345));
        assert_eq!(parse_vmrss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(process_tree(me).contains(&me));
        assert!(tree_rss_kib(&[me]) > 0);
    }
}
