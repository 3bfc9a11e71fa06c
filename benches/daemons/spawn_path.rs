//! What the spawn path costs: a restart (SIGKILL → the replacement running) of a trivial
//! daemon (`sleep`), ready once started, under the three ways of starting it, in one run:
//!
//! - the crate's path: fork from the spawner thread with `clone3(CLONE_PIDFD |
//!   CLONE_INTO_CGROUP)` into a fresh cgroup per instance, the tree killed and awaited
//!   (`cgroup.kill`, `populated 0`) before the replacement starts;
//! - the same with `cgroup(false)`: the process group is the tree;
//! - the path before: `tokio::process::Command` forked on the tokio worker, the pidfd
//!   opened afterwards (`BackendHandle::from_child`), no tree cleanup: what
//!   `CommandSupervisor` did before the spawner thread.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use running_process::command::{CommandSpec, CommandSupervisor};
use running_process::supervision::{
    supervise, Backoff, EventKind, Intensity, RestartPolicy, ServiceHandle, SpawnContext,
    StartError, Supervisor,
};
use running_process::BackendHandle;

use crate::common::{self, Metric};

fn policy() -> RestartPolicy {
    RestartPolicy {
        backoff: Backoff::none(),
        intensity: Intensity::unlimited(),
        ..RestartPolicy::default()
    }
}

/// The previous `CommandSupervisor` spawn path, kept here as the baseline.
struct TokioCommand;

#[async_trait::async_trait]
impl Supervisor for TokioCommand {
    fn name(&self) -> &str {
        "tokio-command"
    }

    fn restart_policy(&self) -> RestartPolicy {
        policy()
    }

    async fn spawn(&self, ctx: &SpawnContext) -> Result<BackendHandle, StartError> {
        let child = tokio::process::Command::new("sleep")
            .arg("3600")
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(StartError::Spawn)?;
        let handle = BackendHandle::from_child(child, "tokio-command", "", None).await?;
        ctx.spawned(handle.pid());
        Ok(handle)
    }
}

async fn restarts(
    service: &ServiceHandle,
    trials: usize,
) -> Result<Vec<std::time::Duration>, Box<dyn std::error::Error>> {
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
    Ok(samples)
}

pub async fn run(quick: bool, metrics: &mut Vec<Metric>) -> Result<(), Box<dyn std::error::Error>> {
    let trials = if quick { 10 } else { 200 };
    let sleep = || {
        CommandSpec::new("spawn-path", "sleep")
            .args(["3600"])
            .restart(policy())
    };
    // Interleaved rounds, so a noisy neighbour hurts all three alike.
    let (mut cgroup, mut group, mut before) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..4 {
        let service = supervise(Arc::new(CommandSupervisor::new(sleep())));
        cgroup.extend(restarts(&service, trials / 4).await?);
        let service = supervise(Arc::new(CommandSupervisor::new(sleep().cgroup(false))));
        group.extend(restarts(&service, trials / 4).await?);
        let service = supervise(Arc::new(TokioCommand));
        before.extend(restarts(&service, trials / 4).await?);
    }
    for (name, samples) in [
        (
            "spawn path: restart of `sleep`, spawner thread + clone3 + cgroup (tree killed first)",
            &mut cgroup,
        ),
        (
            "spawn path: restart of `sleep`, spawner thread + clone3, process group",
            &mut group,
        ),
        (
            "spawn path: restart of `sleep`, before: tokio Command on the worker",
            &mut before,
        ),
    ] {
        metrics.push(Metric::from_samples(name, "ms", samples, common::ms));
    }
    Ok(())
}
