//! Restart: SIGKILL of a supervised demo daemon → its replacement spawned, verified
//! (identity handshake) and ready, with zero backoff.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use running_process::command::{CommandSpec, CommandSupervisor, Output, Readiness};
use running_process::supervision::{supervise, Backoff, EventKind, Intensity, RestartPolicy};

use crate::common::{self, Metric};

pub async fn run(
    daemon: &Path,
    quick: bool,
    metrics: &mut Vec<Metric>,
) -> Result<(), Box<dyn std::error::Error>> {
    let trials = if quick { 10 } else { 150 };
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    let spec = CommandSpec::new("bench", daemon)
        .args(common::demo_args(&run, "bench"))
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

    let mut samples = Vec::with_capacity(trials);
    // Where the time goes: kill → exit event → replacement spawned → ready.
    let (mut exited, mut spawned, mut ready) = (Vec::new(), Vec::new(), Vec::new());
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
                        samples.push(now - killed_at);
                        exited.push(exited_at - killed_at);
                        spawned.push(spawned_at - exited_at);
                        ready.push(now - spawned_at);
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
    metrics.push(
        Metric::from_samples(
            "restart: SIGKILL → replacement verified and ready (zero backoff)",
            "ms",
            &mut samples,
            common::ms,
        )
        .aim("p50 < 10 ms"),
    );
    // For scale: what starting any process costs here, and the demo daemon alone (spawn →
    // its `ready` line, printed once its manifest is written), with no supervisor.
    let (mut trivial, mut alone) = (Vec::with_capacity(trials), Vec::with_capacity(trials));
    for i in 0..trials {
        let started = Instant::now();
        tokio::process::Command::new("true").status().await?;
        trivial.push(started.elapsed());
        let started = Instant::now();
        let mut child = crate::probe::start_ready(daemon, &run, &format!("alone{i}")).await?;
        alone.push(started.elapsed());
        child.kill().await?;
    }
    for (name, samples) in [
        ("floor: spawn `true` and wait for its exit", &mut trivial),
        (
            "floor: demo daemon alone, spawn → `ready` line (manifest written)",
            &mut alone,
        ),
        ("restart, part: SIGKILL → Exited event", &mut exited),
        (
            "restart, part: Exited → Spawned event (fork, exec)",
            &mut spawned,
        ),
        (
            "restart, part: Spawned → Ready (daemon start-up, manifest, verification)",
            &mut ready,
        ),
    ] {
        metrics.push(Metric::from_samples(name, "ms", samples, common::ms));
    }
    Ok(())
}
