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
    for _ in 0..trials {
        let backend = service.backend().ok_or("no backend")?;
        let killed_at = Instant::now();
        backend.force_kill()?;
        loop {
            match events.next().await {
                Some(Ok(event)) => {
                    if let EventKind::Ready { pid: Some(pid), .. } = event.kind {
                        if pid != backend.pid() {
                            samples.push(killed_at.elapsed());
                            break;
                        }
                    }
                }
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
    Ok(())
}
