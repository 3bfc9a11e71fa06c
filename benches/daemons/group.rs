//! 500 demo daemons in one group with dependencies against 500 independent `supervise()`
//! calls: time from the call until ready, the supervisor's resident memory per member, and
//! the time to stop them all.
//!
//! Three shapes, each in a fresh process (this binary run again with [`CHILD_FLAG`], like
//! `scale`, so that memory freed by one shape cannot hide the growth of the next):
//!
//! - `dependent`: one `supervise_group` of 500 members, `StartOrder::Parallel`, member `k`
//!   (k ≥ 1) depending on member `(k - 1) / 2` with `Condition::Ready` (a binary tree of 9
//!   levels: each level starts once its parents are ready). Timed from the
//!   `supervise_group` call until `ready()` returns, and `stop()`.
//! - `independent`: 500 `supervise()` calls, all made at once (no bound on concurrency),
//!   timed until every `ready()` has returned, and a concurrent `stop()` of all
//!   (`join_all`).
//! - `bounded`: the same 500 `supervise()` calls started 8 at a time, as `scale` does
//!   (each start waits for its `ready()`; all at once overruns the 500-ms identity
//!   handshake of the readiness check on a loaded 2-core machine), stopped as above.
//!
//! Memory: `VmRSS` of the process right after everything is ready, minus `VmRSS` before the
//! specs were built, divided by the number of members. The same demo daemon and
//! `CommandSpec` as `scale` (manifest readiness, output `Null`). Every daemon dies with the
//! supervisor (`die_with_supervisor`, the default) and the child process is killed if the
//! parent drops it, so a failed run leaves nothing behind; on a failed start, whatever did
//! start is stopped before the error is returned.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::stream::{self, StreamExt};
use running_process::command::{CommandSpec, CommandSupervisor, Output, Readiness};
use running_process::supervision::{
    supervise, supervise_group, Condition, GroupSpec, Member, Outcome, ServiceHandle, StartOrder,
};

use crate::common::{self, Metric};

/// The first argument that makes this binary run one shape: `CHILD_FLAG <shape> [--quick]`.
pub const CHILD_FLAG: &str = "--group-child";

/// Run each shape in a fresh process and collect its metrics.
pub async fn run(
    _daemon: &Path,
    quick: bool,
    metrics: &mut Vec<Metric>,
) -> Result<(), Box<dyn std::error::Error>> {
    for shape in [Shape::Dependent, Shape::Independent, Shape::Bounded] {
        let mut child = tokio::process::Command::new(std::env::current_exe()?);
        child.arg(CHILD_FLAG).arg(shape.arg());
        if quick {
            child.arg("--quick");
        }
        let output = child.kill_on_drop(true).output().await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprint!("{stderr}");
        if !output.status.success() {
            // Reported, not fatal: a start that fails under load is a result too (the
            // child stopped whatever had started before it exited), and the other shapes
            // still run.
            let error = stderr
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("Error: "))
                .unwrap_or("no error line");
            metrics.push(Metric {
                name: format!("group bench, {}: FAILED", shape.arg()),
                note: Some(format!("{} ({error})", output.status)),
                ..Metric::default()
            });
            continue;
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
                metrics.push(Metric::from_json(&value)?);
            }
        }
    }
    Ok(())
}

/// How the members are supervised.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One group, member `k` depending on member `(k - 1) / 2`.
    Dependent,
    /// One `supervise()` per daemon, all at once.
    Independent,
    /// One `supervise()` per daemon, [`START_CONCURRENCY`] at a time.
    Bounded,
}

/// Daemons started at once by the `bounded` shape (as in `scale`).
const START_CONCURRENCY: usize = 8;

impl Shape {
    fn arg(self) -> &'static str {
        match self {
            Shape::Dependent => "dependent",
            Shape::Independent => "independent",
            Shape::Bounded => "bounded",
        }
    }
}

/// The child: measure one shape, print its metrics as JSON lines.
pub fn child(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let shape = match args.first().map(String::as_str) {
        Some("dependent") => Shape::Dependent,
        Some("independent") => Shape::Independent,
        Some("bounded") => Shape::Bounded,
        other => return Err(format!("unknown shape {other:?}").into()),
    };
    let quick = args.iter().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let daemon = common::demo_daemon_path()?;
        let n = if quick { 50 } else { 500 };
        let metrics = match shape {
            Shape::Dependent => dependent(&daemon, n).await?,
            Shape::Independent => independent(&daemon, n, None).await?,
            Shape::Bounded => independent(&daemon, n, Some(START_CONCURRENCY)).await?,
        };
        for metric in &metrics {
            println!("{}", metric.json());
        }
        Ok(())
    })
}

/// What one shape measured.
struct Measured {
    ready: Duration,
    rss_before: u64,
    rss_ready: u64,
    stop: Duration,
}

/// One group of `n` members, member `k` depending on member `(k - 1) / 2`.
async fn dependent(daemon: &Path, n: usize) -> Result<Vec<Metric>, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let rss_before = rss_kib()?;
    let mut spec = GroupSpec::new("g").order(StartOrder::Parallel);
    for k in 0..n {
        let supervisor = Arc::new(CommandSupervisor::new(demo(daemon, dir.path(), k)));
        let mut member = Member::service(supervisor);
        if k >= 1 {
            member = member.depends_on(format!("d{}", (k - 1) / 2), Condition::Ready);
        }
        spec = spec.member(member);
    }
    let started = Instant::now();
    let group = supervise_group(spec).map_err(|e| format!("invalid group spec: {e}"))?;
    if let Err(outcome) = group.ready().await {
        group.stop().await;
        return Err(format!("group not ready: {outcome:?}").into());
    }
    let ready = started.elapsed();
    // Read now, checked after the stop: an error must not leave the daemons running.
    let rss_ready = rss_kib();
    let running = group.backends().len();
    let stopping = Instant::now();
    group.stop().await;
    let stop = stopping.elapsed();
    let rss_ready = rss_ready?;
    if running != n {
        return Err(format!("{running} backends running in the group, {n} expected").into());
    }
    let levels = usize::BITS - n.leading_zeros();
    let label = format!(
        "{n} members, one group with dependencies (binary tree, {levels} levels, Parallel)"
    );
    let call = "from supervise_group() until ready() returns";
    Ok(report(
        &label,
        call,
        n,
        Measured {
            ready,
            rss_before,
            rss_ready,
            stop,
        },
    ))
}

/// `n` independent `supervise()` calls, all at once, or `bound` at a time (each start
/// waiting for its `ready()`).
async fn independent(
    daemon: &Path,
    n: usize,
    bound: Option<usize>,
) -> Result<Vec<Metric>, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let rss_before = rss_kib()?;
    let supervisors: Vec<_> = (0..n)
        .map(|k| Arc::new(CommandSupervisor::new(demo(daemon, dir.path(), k))))
        .collect();
    let started = Instant::now();
    let (services, results): (Vec<ServiceHandle>, Vec<Result<(), Outcome>>) = match bound {
        None => {
            let services: Vec<ServiceHandle> =
                supervisors.into_iter().map(|s| supervise(s)).collect();
            let results = join_all(services.iter().map(ServiceHandle::ready)).await;
            (services, results)
        }
        Some(bound) => {
            stream::iter(supervisors)
                .map(|s| async move {
                    let service = supervise(s);
                    let ready = service.ready().await;
                    (service, ready)
                })
                .buffer_unordered(bound)
                .unzip()
                .await
        }
    };
    let ready = started.elapsed();
    // Read now, checked after the stop: an error must not leave the daemons running.
    let rss_ready = rss_kib();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let first_error = results.iter().find_map(|r| r.as_ref().err());
    let running: usize = services.iter().map(|s| s.backends().len()).sum();
    let stopping = Instant::now();
    join_all(services.iter().map(ServiceHandle::stop)).await;
    let stop = stopping.elapsed();
    let rss_ready = rss_ready?;
    if failed > 0 || running != n {
        return Err(format!(
            "{failed} services not ready (first: {first_error:?}), {running} of {n} running"
        )
        .into());
    }
    let label = match bound {
        None => format!("{n} members, independent supervise() calls (all at once)"),
        Some(b) => format!("{n} members, independent supervise() calls ({b} at a time)"),
    };
    let call = "from the first supervise() until every ready() has returned";
    Ok(report(
        &label,
        call,
        n,
        Measured {
            ready,
            rss_before,
            rss_ready,
            stop,
        },
    ))
}

fn report(label: &str, call: &str, n: usize, m: Measured) -> Vec<Metric> {
    let per_member = m.rss_ready.saturating_sub(m.rss_before) as f64 / n as f64;
    vec![
        Metric {
            name: format!("group bench, {label}: time to ready"),
            unit: "ms".into(),
            n: 1,
            value: Some(common::ms(m.ready)),
            note: Some(call.to_owned()),
            ..Metric::default()
        },
        Metric {
            name: format!("group bench, {label}: supervisor memory per member"),
            unit: "KiB/member".into(),
            n: 1,
            value: Some(per_member),
            note: Some(format!(
                "VmRSS {} KiB before the specs were built, {} KiB right after ready",
                m.rss_before, m.rss_ready
            )),
            ..Metric::default()
        },
        Metric {
            name: format!("group bench, {label}: time to stop"),
            unit: "ms".into(),
            n: 1,
            value: Some(common::ms(m.stop)),
            note: Some("stop() until it returns (every backend stopped)".into()),
            ..Metric::default()
        },
    ]
}

/// Demo daemon number `k`, ready once verified through its manifest (as in `scale`).
fn demo(daemon: &Path, dir: &Path, k: usize) -> CommandSpec {
    let name = format!("d{k}");
    CommandSpec::new(&name, daemon)
        .args(common::demo_args(dir, &name))
        .stdout(Output::Null)
        .stderr(Output::Null)
        .readiness(Readiness::Manifest {
            path: dir.join(format!("{name}.json")),
        })
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> std::io::Result<u64> {
    std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmRSS in /proc/self/status"))
}
