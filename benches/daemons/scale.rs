//! Idle cost and memory of supervision at scale: the supervisor's resident memory per
//! backend (slope over 100, 500 and 1,000 supervised demo daemons), then its own CPU time
//! and wake-ups over 10 s with all of them idle, against a supervisor that polls
//! `kill(pid, 0)` every 100 ms over the same processes.
//!
//! Two shapes, each in a fresh process (this binary run again with [`CHILD_FLAG`], so that
//! memory freed by one shape cannot hide the growth of the next): one `supervise()` per
//! backend, and one-for-one groups (`supervise_group`; three groups of 100, 400 and 500
//! members, started in order, which gives the 100/500/1,000 points).
//!
//! CPU time and context switches are summed over this process's threads from
//! `/proc/self/task/*/{schedstat,status}` (nanosecond CPU time; `/proc/self/stat` counts
//! 10 ms ticks), leaving out the main thread, which only measures: it sleeps through the
//! window in `std::thread::sleep`, so no tokio timer of ours wakes the runtime. The runtime
//! keeps its blocking threads for the whole run, so no thread's counters vanish during a
//! window; the thread count is checked all the same.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use running_process::command::{CommandSpec, CommandSupervisor, Output, Readiness};
use running_process::supervision::{supervise, supervise_group, Event, GroupSpec, ServiceHandle};
use rustix::process::{getrlimit, test_kill_process, Pid, Resource};

use crate::common::{self, Metric};

/// Length of each idle window.
const WINDOW: Duration = Duration::from_secs(10);
/// Daemons started at once while filling up.
const START_CONCURRENCY: usize = 8;

/// The first argument that makes this binary run one shape: `CHILD_FLAG <shape> [--quick]`.
pub const CHILD_FLAG: &str = "--scale-child";

/// Run each shape in a fresh process and collect its metrics.
pub async fn run(
    _daemon: &Path,
    quick: bool,
    metrics: &mut Vec<Metric>,
) -> Result<(), Box<dyn std::error::Error>> {
    for shape in [Shape::Services, Shape::Groups] {
        let mut child = tokio::process::Command::new(std::env::current_exe()?);
        child.arg(CHILD_FLAG).arg(shape.arg());
        if quick {
            child.arg("--quick");
        }
        let output = child.kill_on_drop(true).output().await?;
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            return Err(format!("scale child ({}) failed", shape.arg()).into());
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
                metrics.push(Metric::from_json(&value)?);
            }
        }
    }
    Ok(())
}

/// How the backends are supervised.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One `supervise()` per backend.
    Services,
    /// One-for-one groups.
    Groups,
}

impl Shape {
    fn arg(self) -> &'static str {
        match self {
            Shape::Services => "services",
            Shape::Groups => "groups",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Shape::Services => "one supervise() each",
            Shape::Groups => "one-for-one groups",
        }
    }
}

/// The child: measure one shape, print its metrics as JSON lines.
pub fn child(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let shape = match args.first().map(String::as_str) {
        Some("services") => Shape::Services,
        Some("groups") => Shape::Groups,
        other => return Err(format!("unknown shape {other:?}").into()),
    };
    let quick = args.iter().any(|a| a == "--quick");
    // Blocking-pool threads are kept for the whole run, so that per-thread counters
    // never lose an exited thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let daemon = common::demo_daemon_path()?;
        let mut metrics = Vec::new();
        measure_shape(&daemon, shape, quick, &mut metrics).await?;
        for metric in &metrics {
            println!("{}", metric.json());
        }
        Ok(())
    })
}

#[allow(clippy::too_many_lines)] // one measurement script: start N daemons, measure, stop, report
async fn measure_shape(
    daemon: &Path,
    shape: Shape,
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
    let mut n = 0;
    for &step in &steps {
        match shape {
            Shape::Services => {
                let started: Vec<_> = futures::stream::iter(n..step)
                    .map(|i| start(daemon, dir.path(), i))
                    .buffer_unordered(START_CONCURRENCY)
                    .collect()
                    .await;
                for service in started {
                    services.push(service?);
                }
            }
            Shape::Groups => {
                let mut group = GroupSpec::new(format!("g{}", services.len()));
                for i in n..step {
                    group = group.service(Arc::new(CommandSupervisor::new(spec(
                        daemon,
                        dir.path(),
                        i,
                    ))));
                }
                let service = supervise_group(group).expect("a valid group spec");
                service
                    .ready()
                    .await
                    .map_err(|o| format!("group not ready: {o:?}"))?;
                services.push(service);
            }
        }
        n = step;
        // Every backend is ready (awaited above); this pause is part of the measurement:
        // the allocator and the runtime's start-up tasks settle before RSS is read.
        tokio::time::sleep(Duration::from_secs(1)).await;
        points.push((step as f64, rss_kib()? as f64));
    }
    let fill = fill_started.elapsed();
    let pids: Vec<Pid> = services
        .iter()
        .flat_map(|s| s.backends().into_iter().map(|(_, b)| b))
        .filter_map(|b| Pid::from_raw(b.pid() as i32))
        .collect();
    if pids.len() != n {
        return Err(format!("{} backends running, {n} expected", pids.len()).into());
    }

    // Idle: nothing happens for WINDOW. The quiet period before it is the point: the
    // measured window must not include the tail of the start-up (all ready, awaited above).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = measure(WINDOW)?;
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
    // Let the poller reach its steady state (its first tick fires at once) before the
    // window opens: time passing is what is measured here, nothing is waited for.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let polled = measure(WINDOW)?;
    poller.abort();

    let stopping = Instant::now();
    futures::future::join_all(services.iter().map(ServiceHandle::stop)).await;
    let stop = stopping.elapsed();

    let percent = |c: &Counters| c.cpu_ns as f64 / WINDOW.as_nanos() as f64 * 100.0;
    let per_s = |c: &Counters| c.switches() as f64 / WINDOW.as_secs_f64();
    let label = shape.label();
    let note = format!(
        "one {}-s window; CPU by thread: {}",
        WINDOW.as_secs(),
        idle.by_thread(|t| format!("{:.0} µs", t.cpu_ns as f64 / 1e3)),
    );
    metrics.push(Metric {
        name: format!("idle supervision of {n} backends ({label}): supervisor CPU"),
        unit: "% of one core".into(),
        n: 1,
        value: Some(percent(&idle)),
        baseline: Some(("kill(pid,0) every 100 ms".into(), percent(&polled))),
        aim: Some("< 0.01% of one core".into()),
        note: Some(note.clone()),
        ..Metric::default()
    });
    metrics.push(Metric {
        name: format!("idle supervision of {n} backends ({label}): supervisor wake-ups"),
        unit: "context switches/s".into(),
        n: 1,
        value: Some(per_s(&idle)),
        baseline: Some(("kill(pid,0) every 100 ms".into(), per_s(&polled))),
        note: Some(format!(
            "voluntary {} + involuntary {} over {} s; by thread: {}",
            idle.voluntary,
            idle.involuntary,
            WINDOW.as_secs(),
            idle.by_thread(|t| (t.voluntary + t.involuntary).to_string()),
        )),
        ..Metric::default()
    });
    let slope = slope(&points);
    metrics.push(Metric {
        name: format!("supervisor memory per backend ({label}): RSS slope"),
        unit: "KiB/backend".into(),
        n: points.len(),
        value: Some(slope),
        aim: Some("< 64 KiB".into()),
        note: Some(format!(
            "RSS {rss_empty} KiB empty, then {}; {}-byte events; filled in {:.1} s, stopped in {:.2} s",
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
    let service = supervise(Arc::new(CommandSupervisor::new(spec(daemon, dir, i))));
    service
        .ready()
        .await
        .map_err(|o| format!("d{i} not ready: {o:?}"))?;
    Ok(service)
}

/// Demo daemon number `i`, ready once verified through its manifest.
fn spec(daemon: &Path, dir: &Path, i: usize) -> CommandSpec {
    let name = format!("d{i}");
    CommandSpec::new(&name, daemon)
        .args(common::demo_args(dir, &name))
        .stdout(Output::Null)
        .stderr(Output::Null)
        .readiness(Readiness::Manifest {
            path: dir.join(format!("{name}.json")),
        })
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

/// Counters over `window` of doing nothing, checking that no thread came or went. Blocks
/// the calling (main) thread on purpose: a tokio sleep would wake the runtime.
fn measure(window: Duration) -> Result<Counters, Box<dyn std::error::Error>> {
    let before = Counters::read()?;
    std::thread::sleep(window);
    let after = Counters::read()?;
    if after.threads != before.threads {
        eprintln!(
            "scale: thread count changed during the window ({} → {})",
            before.threads, after.threads
        );
    }
    Ok(after.since(&before))
}

/// CPU time and context switches of one thread.
#[derive(Debug, Clone, Default)]
struct Thread {
    name: String,
    cpu_ns: u64,
    voluntary: u64,
    involuntary: u64,
}

/// This process's CPU time and context switches, summed over its threads, and per thread.
#[derive(Debug, Clone, Default)]
struct Counters {
    cpu_ns: u64,
    voluntary: u64,
    involuntary: u64,
    threads: usize,
    by_tid: std::collections::BTreeMap<String, Thread>,
}

impl Counters {
    /// Every thread but the main one (the measuring thread).
    fn read() -> std::io::Result<Counters> {
        let main = std::process::id().to_string();
        let mut c = Counters::default();
        for task in std::fs::read_dir("/proc/self/task")? {
            let task = task?.path();
            if task.file_name().is_some_and(|tid| *tid == *main) {
                continue;
            }
            // A thread may exit between listing and reading: skip it.
            let (Ok(sched), Ok(status)) = (
                std::fs::read_to_string(task.join("schedstat")),
                std::fs::read_to_string(task.join("status")),
            ) else {
                continue;
            };
            let mut t = Thread {
                cpu_ns: sched
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0),
                ..Thread::default()
            };
            for line in status.lines() {
                let field = |prefix| {
                    line.strip_prefix(prefix)
                        .and_then(|v: &str| v.trim().parse::<u64>().ok())
                };
                if let Some(name) = line.strip_prefix("Name:") {
                    t.name = name.trim().to_owned();
                } else if let Some(v) = field("voluntary_ctxt_switches:") {
                    t.voluntary = v;
                } else if let Some(v) = field("nonvoluntary_ctxt_switches:") {
                    t.involuntary = v;
                }
            }
            c.threads += 1;
            c.cpu_ns += t.cpu_ns;
            c.voluntary += t.voluntary;
            c.involuntary += t.involuntary;
            let tid = task.file_name().map(|n| n.to_string_lossy().into_owned());
            c.by_tid.insert(tid.unwrap_or_default(), t);
        }
        Ok(c)
    }

    fn since(&self, before: &Counters) -> Counters {
        let by_tid = self
            .by_tid
            .iter()
            .map(|(tid, t)| {
                let old = before.by_tid.get(tid).cloned().unwrap_or_default();
                let delta = Thread {
                    name: t.name.clone(),
                    cpu_ns: t.cpu_ns.saturating_sub(old.cpu_ns),
                    voluntary: t.voluntary.saturating_sub(old.voluntary),
                    involuntary: t.involuntary.saturating_sub(old.involuntary),
                };
                (tid.clone(), delta)
            })
            .collect();
        Counters {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            involuntary: self.involuntary.saturating_sub(before.involuntary),
            threads: self.threads,
            by_tid,
        }
    }

    fn switches(&self) -> u64 {
        self.voluntary + self.involuntary
    }

    /// The threads that did anything, as `name/tid: show(thread)`.
    fn by_thread(&self, show: impl Fn(&Thread) -> String) -> String {
        let busy: Vec<String> = self
            .by_tid
            .iter()
            .filter(|(_, t)| t.cpu_ns > 0 || t.voluntary + t.involuntary > 0)
            .map(|(tid, t)| format!("{}/{tid}: {}", t.name, show(t)))
            .collect();
        if busy.is_empty() {
            "none".to_owned()
        } else {
            busy.join(", ")
        }
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
