//! Restart latency: SIGKILL of a supervised demo daemon → its replacement spawned, verified
//! (identity handshake) and ready, with zero backoff.
//!
//! ```text
//! cargo bench --bench restart
//! ```

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use running_process::command::{CommandSpec, CommandSupervisor, Output, Readiness};
use running_process::supervision::{supervise, Backoff, EventKind, Intensity, RestartPolicy};

const TRIALS: usize = 100;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let daemon = common::build_demo_daemon()?;
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    let spec = CommandSpec::new("bench", &daemon)
        .args([
            "--endpoint".to_owned(),
            run.join("bench.sock").display().to_string(),
            "--manifest".to_owned(),
            run.join("bench.json").display().to_string(),
        ])
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

    let mut samples = Vec::with_capacity(TRIALS);
    for _ in 0..TRIALS {
        let backend = service.backend().ok_or("no backend")?;
        // Drain to the current state before killing.
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
    samples.sort();
    let at = |q: f64| common::quantile(&samples, q);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{{\"name\":\"restart_sigkill_to_ready\",\"unit\":\"ms\",\"n\":{TRIALS},\"p50\":{:.2},\"p99\":{:.2}}}",
        ms(at(0.5)),
        ms(at(0.99))
    );
    println!("\n| metric | n | p50 | p99 |\n|---|---|---|---|");
    println!(
        "| SIGKILL → replacement verified and ready (zero backoff) | {TRIALS} | {:.2} ms | {:.2} ms |",
        ms(at(0.5)),
        ms(at(0.99))
    );
    Ok(())
}
