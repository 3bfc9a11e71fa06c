//! Idle cost and memory of supervision at scale: the supervisor's resident memory per
//! backend (slope over 100, 500 and 1,000 supervised demo daemons), then its own CPU time
//! and wake-ups over 10 s with all of them idle, against a supervisor that polls
//! `kill(pid, 0)` every 100 ms over the same processes.
//!
//! CPU time and context switches are summed over this process's threads from
//! `/proc/self/task/*/{schedstat,status}` (nanosecond CPU time; `/proc/self/stat` counts
//! 10 ms ticks). The runtime keeps its blocking threads for the whole run, so no thread's
//! counters vanish during a window; the thread count is checked all the same.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use running_process::command::{CommandSpec, CommandSupervisor, Output, Readiness};
use running_process::supervision::event::EVENT_BUFFER;
use running_process::supervision::{supervise, Event, ServiceHandle};
use rustix::process::{getrlimit, test_kill_process, Pid, Resource};

use crate::common::{self, Metric};

/// Length of each idle window.
const WINDOW: Duration = Duration::from_secs(10);
/// Daemons started at once while filling up.
const START_CONCURRENCY: usize = 8;

pub async fn run(
    daemon: &Path,
    quick: bool,
    metrics: &mut Vec<Metric>,
) -> Result<(), Box<dyn std::error::Error>> {
    let wanted: &[usize] = if quick {
        &[10, 50, 100]
    } else {
        &[100, 500, 1000]
    };
    let target = wanted[wanted.len() - 1];
    let allowed = allowed_backends()?;
    if allowed < target {
        eprintln!("scale: the limits allow {allowed} backends, not {target}");
    }
    let steps: Vec<usize> = wanted.iter().map(|&n| n.min(allowed)).collect();
    let dir = tempfile::tempdir()?;
    let mut services: Vec<ServiceHandle> = Vec::new();
    let mut points = Vec::new();
    let rss_empty = rss_kib()?;
    let fill_started = Instant::now();
    for &step in &steps {
        let from = services.len();
        let started: Vec<_> = futures::stream::iter(from..step)
            .map(|i| start(daemon, dir.path(), i))
            .buffer_unordered(START_CONCURRENCY)
            .collect()
            .await;
        for service in started {
            services.push(service?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        points.push((step as f64, rss_kib()? as f64));
    }
    let fill = fill_started.elapsed();
    let n = services.len();
    let pids: Vec<Pid> = services
        .iter()
        .filter_map(|s| s.backend())
        .filter_map(|b| Pid::from_raw(b.pid() as i32))
        .collect();

    // Idle: nothing happens for WINDOW.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = measure(WINDOW).await?;
    // Baseline: the same processes polled every 100 ms.
    let poller = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        let mut gone = 0usize;
        loop {
            ticks.tick().await;
            gone += pids
                .iter()
                .filter(|&&p| test_kill_process(p).is_err())
                .count();
            std::hint::black_box(gone);
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let polled = measure(WINDOW).await?;
    poller.abort();

    let stopping = Instant::now();
    futures::future::join_all(services.iter().map(ServiceHandle::stop)).await;
    let stop = stopping.elapsed();

    let percent = |c: &Counters| c.cpu_ns as f64 / WINDOW.as_nanos() as f64 * 100.0;
    let per_s = |c: &Counters| c.switches() as f64 / WINDOW.as_secs_f64();
    let note = format!(
        "{n} idle backends (one supervise() each), one {}-s window, {} threads",
        WINDOW.as_secs(),
        idle.threads,
    );
    metrics.push(Metric {
        name: format!("idle supervision of {n} backends: supervisor CPU"),
        unit: "% of one core",
        n: 1,
        value: Some(percent(&idle)),
        baseline: Some(("kill(pid,0) every 100 ms".into(), percent(&polled))),
        aim: Some("< 0.01% of one core".into()),
        note: Some(note.clone()),
        ..Metric::default()
    });
    metrics.push(Metric {
        name: format!("idle supervision of {n} backends: supervisor wake-ups"),
        unit: "context switches/s",
        n: 1,
        value: Some(per_s(&idle)),
        baseline: Some(("kill(pid,0) every 100 ms".into(), per_s(&polled))),
        note: Some(format!(
            "voluntary {} + involuntary {} over {} s",
            idle.voluntary,
            idle.involuntary,
            WINDOW.as_secs()
        )),
        ..Metric::default()
    });
    let slope = slope(&points);
    metrics.push(Metric {
        name: "supervisor memory per backend (RSS slope)".into(),
        unit: "KiB/backend",
        n: points.len(),
        value: Some(slope),
        aim: Some("< 64 KiB".into()),
        note: Some(format!(
            "RSS {rss_empty} KiB empty, then {}; per service, the event buffer alone is {EVENT_BUFFER} × {}-byte events; filled in {:.1} s, stopped in {:.2} s",
            points
                .iter()
                .map(|(n, kib)| format!("{kib:.0} KiB at {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            std::mem::size_of::<Event>(),
            fill.as_secs_f64(),
            stop.as_secs_f64()
        )),
        ..Metric::default()
    });
    Ok(())
}

/// Supervise demo daemon number `i` and wait until it is verified and ready.
async fn start(
    daemon: &Path,
    dir: &Path,
    i: usize,
) -> Result<ServiceHandle, Box<dyn std::error::Error>> {
    let name = format!("d{i}");
    let spec = CommandSpec::new(&name, daemon)
        .args(common::demo_args(dir, &name))
        .stdout(Output::Null)
        .stderr(Output::Null)
        .readiness(Readiness::Manifest {
            path: dir.join(format!("{name}.json")),
        });
    let service = supervise(Arc::new(CommandSupervisor::new(spec)));
    service
        .ready()
        .await
        .map_err(|o| format!("{name} not ready: {o:?}"))?;
    Ok(service)
}

/// How many backends the limits leave room for: a few descriptors and one process each.
fn allowed_backends() -> std::io::Result<usize> {
    let limit = |r| getrlimit(r).current.unwrap_or(u64::MAX);
    let files = limit(Resource::Nofile).saturating_sub(256) / 4;
    let procs = limit(Resource::Nproc).saturating_sub(512);
    let kib_available = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    // A demo daemon's private memory is well under 8 MiB; keep half the machine free.
    let memory = kib_available / 2 / (8 * 1024);
    Ok(files.min(procs).min(memory) as usize)
}

/// Counters over `window` of doing nothing, checking that no thread came or went.
async fn measure(window: Duration) -> Result<Counters, Box<dyn std::error::Error>> {
    let before = Counters::read()?;
    tokio::time::sleep(window).await;
    let after = Counters::read()?;
    if after.threads != before.threads {
        eprintln!(
            "scale: thread count changed during the window ({} → {})",
            before.threads, after.threads
        );
    }
    Ok(after.since(&before))
}

/// This process's CPU time and context switches, summed over its threads.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    cpu_ns: u64,
    voluntary: u64,
    involuntary: u64,
    threads: usize,
}

impl Counters {
    fn read() -> std::io::Result<Counters> {
        let mut c = Counters::default();
        for task in std::fs::read_dir("/proc/self/task")? {
            let task = task?.path();
            // A thread may exit between listing and reading: skip it.
            let (Ok(sched), Ok(status)) = (
                std::fs::read_to_string(task.join("schedstat")),
                std::fs::read_to_string(task.join("status")),
            ) else {
                continue;
            };
            c.threads += 1;
            c.cpu_ns += sched
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            for line in status.lines() {
                let field = |prefix| {
                    line.strip_prefix(prefix)
                        .and_then(|v: &str| v.trim().parse::<u64>().ok())
                };
                if let Some(v) = field("voluntary_ctxt_switches:") {
                    c.voluntary += v;
                } else if let Some(v) = field("nonvoluntary_ctxt_switches:") {
                    c.involuntary += v;
                }
            }
        }
        Ok(c)
    }

    fn since(&self, before: &Counters) -> Counters {
        Counters {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            involuntary: self.involuntary.saturating_sub(before.involuntary),
            threads: self.threads,
        }
    }

    fn switches(&self) -> u64 {
        self.voluntary + self.involuntary
    }
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> std::io::Result<u64> {
    std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmRSS in /proc/self/status"))
}

/// Least-squares slope of `(x, y)` points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}
