//! Restart: SIGKILL of a supervised demo daemon → its replacement spawned, verified
//! (identity handshake) and ready, with zero backoff. Two daemons in interleaved rounds:
//! the demo daemon as it is (its manifest written with both fsyncs) and with
//! `--manifest-unsynced` (`CacheManifest::write_unsynced`, no fsync), each against the same
//! daemon started alone (spawn → its `ready` line), the floor for that daemon.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use running_process::command::{CommandSpec, CommandSupervisor, Output, Readiness};
use running_process::supervision::{supervise, Backoff, EventKind, Intensity, RestartPolicy};

use crate::common::{self, Metric};

/// The samples of one kind of daemon.
#[derive(Default)]
struct Series {
    total: Vec<Duration>,
    exited: Vec<Duration>,
    spawned: Vec<Duration>,
    ready: Vec<Duration>,
    alone: Vec<Duration>,
}

const ROUNDS: usize = 5;

pub async fn run(
    daemon: &Path,
    quick: bool,
    metrics: &mut Vec<Metric>,
) -> Result<(), Box<dyn std::error::Error>> {
    let trials = if quick { 10 } else { 150 };
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    let (mut synced, mut unsynced) = (Series::default(), Series::default());
    // Interleaved, so a noisy neighbour (or a busy disk) hurts both alike.
    for round in 0..ROUNDS {
        let n = trials / ROUNDS;
        for (extra, series) in [
            (None, &mut synced),
            (Some("--manifest-unsynced"), &mut unsynced),
        ] {
            restarts(daemon, &run, extra, n, series).await?;
            for i in 0..n {
                let name = format!("alone{round}-{i}");
                let started = Instant::now();
                let mut child = start_ready(daemon, &run, &name, extra).await?;
                series.alone.push(started.elapsed());
                child.kill().await?;
            }
        }
    }
    // For scale: what starting any process costs here.
    let mut trivial = Vec::with_capacity(trials);
    for _ in 0..trials {
        let started = Instant::now();
        tokio::process::Command::new("true").status().await?;
        trivial.push(started.elapsed());
    }
    for (what, series) in [
        ("manifest with fsyncs", &mut synced),
        ("--manifest-unsynced", &mut unsynced),
    ] {
        let alone = p50(&series.alone);
        let mut total = Metric::from_samples(
            format!("restart: SIGKILL → replacement verified and ready (zero backoff), {what}"),
            "ms",
            &mut series.total,
            common::ms,
        )
        .aim("p50 < 10 ms; ≤ 2× the daemon alone");
        if let Some(p50) = total.p50 {
            total = total.note(format!("{:.2}× the daemon alone", p50 / alone));
        }
        metrics.push(total);
        for (name, samples) in [
            (
                format!("floor: demo daemon alone, spawn → `ready` line (manifest written), {what}"),
                &mut series.alone,
            ),
            (format!("restart, part: SIGKILL → Exited event, {what}"), &mut series.exited),
            (
                format!("restart, part: Exited → Spawned event (fork, exec), {what}"),
                &mut series.spawned,
            ),
            (
                format!("restart, part: Spawned → Ready (daemon start-up, manifest, verification), {what}"),
                &mut series.ready,
            ),
        ] {
            metrics.push(Metric::from_samples(name, "ms", samples, common::ms));
        }
    }
    metrics.push(Metric::from_samples(
        "floor: spawn `true` and wait for its exit",
        "ms",
        &mut trivial,
        common::ms,
    ));
    Ok(())
}

fn p50(samples: &[Duration]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    common::ms(common::quantile(&sorted, 0.5))
}

/// `trials` restarts of a supervised demo daemon (with `extra` among its arguments).
async fn restarts(
    daemon: &Path,
    run: &Path,
    extra: Option<&str>,
    trials: usize,
    series: &mut Series,
) -> Result<(), Box<dyn std::error::Error>> {
    let spec = CommandSpec::new("bench", daemon)
        .args(common::demo_args(run, "bench"))
        .args(extra)
        .stdout(Output::Null)
        .readiness(Readiness::Manifest {
            path: run.join("bench.json"),
        })
        .restart(RestartPolicy {
            backoff: Backoff::none(),
            intensity: Intensity::unlimited(),
            ..RestartPolicy::default()
        });
    let service = supervise(Arc::new(CommandSupervisor::new(spec)));
    let mut events = service.events();
    service
        .ready()
        .await
        .map_err(|o| format!("not ready: {o:?}"))?;
    // Where the time goes: kill → exit event → replacement spawned → ready.
    for _ in 0..trials {
        let backend = service.backend().ok_or("no backend")?;
        let killed_at = Instant::now();
        backend.force_kill()?;
        let (mut exited_at, mut spawned_at) = (killed_at, killed_at);
        loop {
            match events.next().await {
                Some(Ok(event)) => match event.kind {
                    EventKind::Exited { .. } => exited_at = Instant::now(),
                    EventKind::Spawned { .. } => spawned_at = Instant::now(),
                    EventKind::Ready { pid: Some(pid), .. } if pid != backend.pid() => {
                        let now = Instant::now();
                        series.total.push(now - killed_at);
                        series.exited.push(exited_at - killed_at);
                        series.spawned.push(spawned_at - exited_at);
                        series.ready.push(now - spawned_at);
                        break;
                    }
                    _ => {}
                },
                Some(Err(lagged)) => return Err(lagged.into()),
                None => return Err("event stream ended".into()),
            }
        }
    }
    service.stop().await;
    Ok(())
}

/// The demo daemon started alone, once it printed its `ready` line.
async fn start_ready(
    exe: &Path,
    dir: &Path,
    name: &str,
    extra: Option<&str>,
) -> Result<tokio::process::Child, Box<dyn std::error::Error>> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(exe)
        .args(common::demo_args(dir, name))
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    lines.next_line().await?.ok_or("the daemon did not start")?;
    Ok(child)
}
