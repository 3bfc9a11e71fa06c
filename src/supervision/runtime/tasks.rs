//! The tasks a group's loop runs for its children, each reporting to the loop by a
//! [`Msg`]: a start (demand, adopt or spawn, readiness), and a watch (exit from the
//! kernel, health checks) per run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use tokio::sync::mpsc;

use super::child::{Active, Start, StartSlot};
use super::status::HealthView;
use super::{start, Registry};
use crate::handle::BackendHandle;
use crate::supervision::error::{HealthError, LastOutput, StartError};
use crate::supervision::event::{one_line, EventKind, EventSink};
use crate::supervision::group::{MemberKind, Outcome};
use crate::supervision::policy::Termination;
use crate::supervision::supervisor::{SpawnContext, Supervisor};

/// How long the runtime waits for the exit of a process whose start it abandoned (the
/// supervisor's spawn kills it when dropped), to report that exit.
const ABANDONED_EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// What the tasks of a group's children report to its loop, each tagged with the
/// generation of the start or run it is about (a stale report is ignored).
pub(super) enum Msg {
    /// The start's process has been spawned.
    Spawned(u64),
    /// The start waits for demand.
    Listening(u64),
    /// A client is waiting: the start goes on.
    Activated(u64),
    /// The start is over: its result is in its slot.
    Started(u64),
    /// The run's health changed.
    Health { generation: u64, healthy: bool },
    /// The run ended.
    Ended { generation: u64, term: Termination },
}

pub(super) type MsgTx = mpsc::UnboundedSender<Msg>;

/// Start a member in a task: it asks for demand first (start on demand), then adopts or
/// spawns, and reports each step by a [`Msg`] tagged `generation`.
pub(super) fn spawn_start(
    kind: MemberKind,
    sink: EventSink,
    registry: Arc<Registry>,
    msg_tx: MsgTx,
    generation: u64,
) -> Start {
    let on_spawn = {
        let msg_tx = msg_tx.clone();
        Arc::new(move || {
            let _ = msg_tx.send(Msg::Spawned(generation));
        })
    };
    let on_tree = {
        let (registry, name) = (registry.clone(), sink.service().to_owned());
        Arc::new(move |tracking| {
            registry
                .board
                .update(&name, |row| row.tree = Some(tracking))
        })
    };
    let ctx = SpawnContext::with_hooks(sink.clone(), on_spawn, on_tree);
    let result: StartSlot = Arc::new(Mutex::new(None));
    let task = tokio::spawn(start_task(StartJob {
        kind,
        sink,
        registry,
        ctx: ctx.clone(),
        result: result.clone(),
        msg_tx,
        generation,
    }));
    Start {
        generation,
        task,
        ctx,
        result,
        began: Instant::now(),
        spawned: false,
        listening: false,
    }
}

/// What a start task needs.
struct StartJob {
    kind: MemberKind,
    sink: EventSink,
    registry: Arc<Registry>,
    ctx: SpawnContext,
    result: StartSlot,
    msg_tx: MsgTx,
    generation: u64,
}

async fn start_task(job: StartJob) {
    let report = |msg| {
        let _ = job.msg_tx.send(msg);
    };
    if let MemberKind::Service(supervisor) = &job.kind {
        match supervisor.demand().await {
            Ok(None) => {}
            Ok(Some(demand)) => {
                report(Msg::Listening(job.generation));
                demand.await;
                report(Msg::Activated(job.generation));
            }
            Err(error) => {
                *job.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(error));
                report(Msg::Started(job.generation));
                return;
            }
        }
    }
    let started = start_member(&job.kind, &job.sink, &job.registry, &job.ctx).await;
    *job.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
    report(Msg::Started(job.generation));
}

/// Adopt a verified running backend, or spawn one and wait until it is ready; for a nested
/// group, start it and wait until all its members are ready.
async fn start_member(
    kind: &MemberKind,
    sink: &EventSink,
    registry: &Arc<Registry>,
    ctx: &SpawnContext,
) -> Result<Active, StartError> {
    match kind {
        MemberKind::Service(supervisor) => {
            sink.emit(EventKind::Starting);
            match supervisor.adopt().await {
                Ok(Some(backend)) if backend.is_alive() => {
                    // `Ready` follows from `watch`, as for a spawned backend.
                    sink.emit(EventKind::AdoptedExisting { pid: backend.pid() });
                    return Ok(Active::Backend {
                        supervisor: supervisor.clone(),
                        backend: Box::new(backend),
                    });
                }
                Ok(_) => {}
                Err(error) => sink.emit(EventKind::ProbeRejected {
                    error: Arc::new(error),
                }),
            }
            let deadline = supervisor.ready_timeout();
            let backend = tokio::time::timeout(deadline, supervisor.spawn(ctx))
                .await
                .map_err(|_| StartError::ReadyTimeout(deadline))??;
            Ok(Active::Backend {
                supervisor: supervisor.clone(),
                backend: Box::new(backend),
            })
        }
        MemberKind::Group { spec, .. } => {
            let handle = start(
                (**spec).clone(),
                false,
                Some((sink.clone(), registry.clone())),
            );
            match handle.ready().await {
                Ok(()) => Ok(Active::Group(handle)),
                Err(Outcome::StartFailed { member, error }) => {
                    Err(StartError::Group { member, error })
                }
                Err(outcome) => Err(StartError::GroupEnded {
                    group: handle.name().to_owned(),
                    outcome,
                }),
            }
        }
        MemberKind::Replicas { .. } => unreachable!("a template is expanded into its instances"),
    }
}

/// A start was abandoned (timeout, failure, or a stop): if the supervisor had reported
/// the process it spawned, report that process's exit too. The spawn killed it when it
/// was dropped; its exit status is waited for, bounded.
pub(super) async fn report_abandoned(ctx: &SpawnContext) {
    let Some(backend) = ctx.take_spawned() else {
        return;
    };
    let status = match tokio::time::timeout(ABANDONED_EXIT_DEADLINE, backend.exited()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(
                pid = backend.pid(),
                "an abandoned start's process is still alive"
            );
            return;
        }
    };
    backend.release_exited_child();
    ctx.emit(EventKind::Exited {
        pid: backend.pid(),
        status,
        output: LastOutput::default(),
    });
}

/// Watch a run in a task that reports its health changes and its end.
pub(super) fn spawn_watch(
    active: &Active,
    sink: EventSink,
    registry: Arc<Registry>,
    msg_tx: MsgTx,
    generation: u64,
) -> AbortHandle {
    let task = match active {
        Active::Backend {
            supervisor,
            backend,
        } => {
            let (supervisor, backend) = (supervisor.clone(), (**backend).clone());
            tokio::spawn(async move {
                let watcher = Watcher {
                    sink: &sink,
                    registry: &registry,
                    msg_tx: &msg_tx,
                    generation,
                };
                let term = watcher.watch_backend(&*supervisor, &backend).await;
                let _ = msg_tx.send(Msg::Ended { generation, term });
            })
        }
        Active::Group(handle) => {
            let handle = handle.clone();
            tokio::spawn(async move {
                let term = match handle.outcome().await {
                    Outcome::GaveUp(_) | Outcome::StartFailed { .. } => Termination::Escalated,
                    Outcome::Completed | Outcome::Stopped => {
                        Termination::Exited(crate::ExitStatus::Code(0))
                    }
                };
                let _ = msg_tx.send(Msg::Ended { generation, term });
            })
        }
    };
    task.abort_handle()
}

/// What a watch reports to.
struct Watcher<'a> {
    sink: &'a EventSink,
    registry: &'a Registry,
    msg_tx: &'a MsgTx,
    generation: u64,
}

impl Watcher<'_> {
    /// Watch one backend until it ends: exit from the kernel, or unhealthy per its health
    /// policy (then it is stopped here). Wakes only for health checks.
    async fn watch_backend(
        &self,
        supervisor: &dyn Supervisor,
        backend: &BackendHandle,
    ) -> Termination {
        let Some(policy) = supervisor.health_policy() else {
            let status = backend.exited().await;
            return self.exited(supervisor, backend, status).await;
        };
        let mut ticker =
            tokio::time::interval_at(Instant::now() + policy.interval, policy.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        // Not yet known: the first passing check is reported, then each recovery.
        let mut healthy = false;
        loop {
            let check = async {
                ticker.tick().await;
                tokio::time::timeout(policy.timeout, supervisor.health_check(backend))
                    .await
                    .unwrap_or(Err(HealthError::Timeout(policy.timeout)))
            };
            tokio::select! {
                biased;
                status = backend.exited() => return self.exited(supervisor, backend, status).await,
                result = check => match result {
                    Ok(()) => {
                        failures = 0;
                        if !std::mem::replace(&mut healthy, true) {
                            self.health(HealthView::Healthy, true);
                            self.sink.emit(EventKind::Healthy { pid: backend.pid() });
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        if std::mem::replace(&mut healthy, false) || failures == 1 {
                            let reason = one_line(&crate::report::Chain(&error).to_string());
                            self.health(HealthView::Unhealthy { reason }, false);
                        }
                        self.sink.emit(EventKind::HealthCheckFailed { pid: backend.pid(), consecutive: failures, error: Arc::new(error) });
                        if failures >= policy.failures_before_unhealthy.max(1) {
                            return self.unhealthy(supervisor, backend).await;
                        }
                    }
                }
            }
        }
    }

    /// The row's health, and the loop's `healthy` condition.
    fn health(&self, view: HealthView, healthy: bool) {
        self.registry
            .board
            .update(self.sink.service(), |row| row.health = view);
        let _ = self.msg_tx.send(Msg::Health {
            generation: self.generation,
            healthy,
        });
    }

    /// Enough checks failed: stop the backend here and report it.
    async fn unhealthy(&self, supervisor: &dyn Supervisor, backend: &BackendHandle) -> Termination {
        let pid = backend.pid();
        self.sink.emit(EventKind::Unhealthy { pid });
        let stopped = supervisor.stop(backend).await;
        backend.release_exited_child();
        match stopped {
            Ok(status) => {
                self.registry
                    .board
                    .update(self.sink.service(), |row| row.last_exit = Some(status));
                self.sink.emit(EventKind::Exited {
                    pid,
                    status,
                    output: LastOutput::default(),
                })
            }
            Err(error) => {
                tracing::warn!(pid, error = %crate::report::Chain(&error), "stopping an unhealthy backend failed")
            }
        }
        Termination::Unhealthy
    }

    /// The main process exited by itself: let the supervisor clean up after it (the rest
    /// of its tree) before the exit is reported and anything is restarted.
    async fn exited(
        &self,
        supervisor: &dyn Supervisor,
        backend: &BackendHandle,
        status: crate::ExitStatus,
    ) -> Termination {
        let output = supervisor.on_exit(backend, status).await;
        if let Some(oom) = output.out_of_memory() {
            self.sink.emit(EventKind::OutOfMemory {
                pid: backend.pid(),
                kills: oom.kills,
                limit: oom.limit,
            });
        }
        // Cleaned up: the zombie may go, even while the application still holds a handle.
        backend.release_exited_child();
        self.registry
            .board
            .update(self.sink.service(), |row| row.last_exit = Some(status));
        self.sink.emit(EventKind::Exited {
            pid: backend.pid(),
            status,
            output,
        });
        Termination::Exited(status)
    }
}
