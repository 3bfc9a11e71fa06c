//! The loop that drives one group: start its children in order, watch them, apply the
//! restart policy and the group's strategy and intensity, obey commands. A single
//! supervised service is a group of one ("solo"), so both share this loop.
//!
//! OTP's rules, and where this loop keeps them (the table in the `supervision` module docs
//! lists the deviations): a child whose start fails during the group's start-up fails the
//! group's start ([`Group::start_failed`]); a temporary child is never restarted, also
//! when a sibling's termination stops it ([`Group::after_end`]); with
//! `AutoShutdown::Never` the group keeps running when every child has ended.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::child::{Active, Child, ChildState, Running};
use super::{start, Command, Registry};
use crate::handle::BackendHandle;
use crate::supervision::error::{HealthError, LastOutput, StartError};
use crate::supervision::event::{EventKind, EventSink};
use crate::supervision::group::{
    AutoShutdown, GroupSpec, MemberKind, MemberSpec, Outcome, Strategy,
};
use crate::supervision::policy::{Intensity, IntensityWindow, RestartKind, Termination};
use crate::supervision::supervisor::{SpawnContext, Supervisor};

/// How long the runtime waits for the exit of a process whose start it abandoned (the
/// supervisor's spawn kills it when dropped), to report that exit.
const ABANDONED_EXIT_DEADLINE: Duration = Duration::from_secs(10);

type TermTx = mpsc::UnboundedSender<(usize, u64, Termination)>;
/// A member waiting for demand (its index and run) is wanted now.
type DemandTx = mpsc::UnboundedSender<(usize, u64)>;

pub(super) struct Group {
    strategy: Strategy,
    intensity: Intensity,
    auto_shutdown: AutoShutdown,
    solo: bool,
    sink: EventSink,
    registry: Arc<Registry>,
    all_up: watch::Sender<bool>,
    children: Vec<Child>,
    window: IntensityWindow,
    generation: u64,
    /// Every child has been running at once: the group's start-up is over.
    started_up: bool,
    term_tx: TermTx,
    term_rx: mpsc::UnboundedReceiver<(usize, u64, Termination)>,
    demand_tx: DemandTx,
    demand_rx: mpsc::UnboundedReceiver<(usize, u64)>,
}

impl Group {
    pub(super) fn new(
        spec: GroupSpec,
        solo: bool,
        sink: EventSink,
        registry: Arc<Registry>,
        all_up: watch::Sender<bool>,
    ) -> Group {
        let retry_start_up = spec.retry_start_up;
        let children: Vec<Child> = spec
            .members
            .into_iter()
            .map(
                |MemberSpec {
                     name,
                     kind,
                     significant,
                 }| {
                    let child_sink = if solo {
                        sink.clone()
                    } else {
                        sink.child(&name)
                    };
                    Child::new(child_sink, kind, significant, retry_start_up)
                },
            )
            .collect();
        let names: Vec<String> = children.iter().map(|c| c.name().to_owned()).collect();
        let parent = (!solo).then(|| sink.service().to_owned());
        registry.board.register(parent.as_deref(), &names);
        let (term_tx, term_rx) = mpsc::unbounded_channel();
        let (demand_tx, demand_rx) = mpsc::unbounded_channel();
        Group {
            strategy: spec.strategy,
            intensity: spec.intensity,
            auto_shutdown: spec.auto_shutdown,
            solo,
            sink,
            registry,
            all_up,
            children,
            window: IntensityWindow::new(),
            generation: 0,
            started_up: false,
            term_tx,
            term_rx,
            demand_tx,
            demand_rx,
        }
    }

    /// Group-level events; a solo group's child already reports under the same name.
    fn emit(&self, kind: EventKind) {
        if !self.solo || matches!(kind, EventKind::GaveUp { .. }) {
            self.sink.emit(kind);
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) -> Outcome {
        let began = Instant::now();
        self.emit(EventKind::Starting);
        loop {
            let now = Instant::now();
            let Some(i) = self.children.iter().position(|c| c.due(now)) else {
                // Terminations that arrived while other children started are handled
                // first: on a multi-threaded runtime a `ready()` waiter could otherwise
                // see "all up" for a child whose exit is already queued.
                if let Ok((i, generation, term)) = self.term_rx.try_recv() {
                    if let Some(outcome) = self.on_termination(i, generation, term).await {
                        return outcome;
                    }
                    continue;
                }
                let waiting = self.children.iter().filter_map(Child::wake_at).min();
                let up = waiting.is_none();
                self.all_up.send_replace(up);
                if up && !self.started_up {
                    self.started_up = true;
                    self.emit(EventKind::Ready {
                        pid: None,
                        took: began.elapsed(),
                    });
                }
                if let Some(outcome) = self.wait(&mut commands, waiting).await {
                    return outcome;
                }
                continue;
            };
            // Started on demand: wait (in the background) until it is wanted.
            if !std::mem::take(&mut self.children[i].activated) {
                if let MemberKind::Service(supervisor) = &self.children[i].kind {
                    let supervisor = supervisor.clone();
                    let asked = tokio::select! {
                        asked = supervisor.demand() => asked,
                        command = commands.recv() => {
                            if let Some(outcome) = self.on_command(command).await {
                                return outcome;
                            }
                            continue;
                        }
                    };
                    match asked {
                        Ok(None) => self.children[i].on_demand = false,
                        Ok(Some(demand)) => {
                            self.listen(i, demand);
                            continue;
                        }
                        Err(error) => {
                            if let Some(outcome) = self.start_error(i, None, error).await {
                                return outcome;
                            }
                            continue;
                        }
                    }
                }
            }
            self.all_up.send_replace(false);

            // Start it. Terminations of other children wait in their channel meanwhile;
            // a command drops the start (spawns are cancel-safe).
            let attempt_began = Instant::now();
            self.children[i].enter(ChildState::Starting, &self.registry);
            let ctx = SpawnContext::new(self.children[i].sink.clone());
            let started = tokio::select! {
                started = start_member(&self.children[i], &self.registry, &ctx) => started,
                command = commands.recv() => {
                    report_abandoned(&ctx).await;
                    self.children[i].enter(ChildState::Idle, &self.registry);
                    if let Some(outcome) = self.on_command(command).await {
                        return outcome;
                    }
                    continue;
                }
            };
            match started {
                Ok(active) => self.watch(i, active, attempt_began),
                Err(error) => {
                    if let Some(outcome) = self.start_error(i, Some(&ctx), error).await {
                        return outcome;
                    }
                }
            }
        }
    }

    /// Child `i` could not be started (or could not wait for demand): report it, then fail
    /// the group's start, or treat it as the child ending abnormally. `Some` when
    /// supervision is over.
    async fn start_error(
        &mut self,
        i: usize,
        ctx: Option<&SpawnContext>,
        error: StartError,
    ) -> Option<Outcome> {
        let error = Arc::new(error);
        self.children[i].note_start_error(&error, &self.registry);
        self.children[i].sink.emit(EventKind::StartFailed {
            error: error.clone(),
        });
        if let Some(ctx) = ctx {
            report_abandoned(ctx).await;
        }
        let fatal = error.is_permanent() || (!self.started_up && !self.children[i].retry_start_up);
        if fatal {
            return Some(self.start_failed(i, error).await);
        }
        self.children[i].enter(ChildState::Idle, &self.registry);
        self.after_end(i, Termination::StartFailed, Duration::ZERO)
            .await
    }

    /// Child `i` starts on demand: wait for `demand` in a task that reports it, listening
    /// meanwhile.
    fn listen(&mut self, i: usize, demand: super::super::Demand) {
        self.generation += 1;
        let generation = self.generation;
        let demand_tx = self.demand_tx.clone();
        let task = tokio::spawn(async move {
            demand.await;
            let _ = demand_tx.send((i, generation));
        });
        let child = &mut self.children[i];
        child.on_demand = true;
        child.enter(
            ChildState::Listening {
                generation,
                watch: task.abort_handle(),
            },
            &self.registry,
        );
        child.sink.emit(EventKind::Listening);
    }

    /// A client waits for child `i` (run `generation`): start it now.
    fn on_demand(&mut self, i: usize, generation: u64) {
        if self.children[i].is_listening(generation) {
            self.children[i].activated = true;
            self.children[i].enter(ChildState::Idle, &self.registry);
        }
    }

    /// A child could not be started while the group started up (OTP: the group's start
    /// fails), or cannot be started at all: stop the children already running, in reverse
    /// order, and end with the member and the reason. A nested group's failure names the
    /// innermost member.
    async fn start_failed(&mut self, i: usize, error: Arc<StartError>) -> Outcome {
        self.children[i].enter(ChildState::Idle, &self.registry);
        self.stop_all().await;
        let (member, error) = match &*error {
            StartError::Group { member, error } => (member.clone(), error.clone()),
            _ => (self.children[i].name().to_owned(), error),
        };
        Outcome::StartFailed { member, error }
    }

    /// Wait for a child's termination, a command, or the instant `wake` (a backoff delay
    /// ending), and handle it. `Some` when supervision is over.
    async fn wait(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        wake: Option<Instant>,
    ) -> Option<Outcome> {
        let woken = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = woken => None,
            Some((i, generation, term)) = self.term_rx.recv() => {
                self.on_termination(i, generation, term).await
            }
            Some((i, generation)) = self.demand_rx.recv() => {
                self.on_demand(i, generation);
                None
            }
            command = commands.recv() => self.on_command(command).await,
        }
    }

    /// Record a started child (its backend is visible through the handle before its
    /// `Ready` event is sent) and watch it in a task that reports its termination.
    fn watch(&mut self, i: usize, active: Active, attempt_began: Instant) {
        self.generation += 1;
        let generation = self.generation;
        let term_tx = self.term_tx.clone();
        let sink = self.children[i].sink.clone();
        let registry = self.registry.clone();
        let name = sink.service().to_owned();
        let task = match &active {
            Active::Backend {
                supervisor,
                backend,
            } => {
                let (supervisor, backend) = (supervisor.clone(), (**backend).clone());
                tokio::spawn(async move {
                    let term = watch_backend(&*supervisor, &backend, &sink, &registry, &name).await;
                    let _ = term_tx.send((i, generation, term));
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
                    let _ = term_tx.send((i, generation, term));
                })
            }
        };
        let pid = match &active {
            Active::Backend { backend, .. } => Some(backend.pid()),
            Active::Group(_) => None,
        };
        self.children[i].enter(
            ChildState::Running(Running {
                generation,
                started_at: Instant::now(),
                active,
                watch: task.abort_handle(),
            }),
            &self.registry,
        );
        if pid.is_some() {
            self.children[i].sink.emit(EventKind::Ready {
                pid,
                took: attempt_began.elapsed(),
            });
        }
    }

    async fn on_termination(
        &mut self,
        i: usize,
        generation: u64,
        term: Termination,
    ) -> Option<Outcome> {
        if self.children[i].generation() != Some(generation) {
            return None; // a run we already stopped or restarted
        }
        let ChildState::Running(running) = self.children[i].enter(ChildState::Idle, &self.registry)
        else {
            unreachable!("the generation matched a running child");
        };
        self.after_end(i, term, running.started_at.elapsed()).await
    }

    /// A child ended (it is `Idle` now): finish it, restart it by strategy, or give up.
    async fn after_end(
        &mut self,
        i: usize,
        term: Termination,
        uptime: Duration,
    ) -> Option<Outcome> {
        if self.children[i].on_demand && !term.is_abnormal() {
            // Started on demand and done for now (an idle timeout): not an end for the
            // policy. The loop makes it listen again.
            return None;
        }
        if !self.children[i].restart.should_restart(&term) {
            self.children[i].enter(ChildState::Finished, &self.registry);
            self.children[i].sink.emit(EventKind::Completed);
            let shutdown = self.children[i].significant
                && match self.auto_shutdown {
                    AutoShutdown::Never => false,
                    AutoShutdown::AnySignificant => true,
                    AutoShutdown::AllSignificant => self
                        .children
                        .iter()
                        .filter(|c| c.significant)
                        .all(Child::is_finished),
                };
            if shutdown {
                self.stop_all().await;
                if !self.solo {
                    self.sink.emit(EventKind::Completed);
                }
                return Some(Outcome::Completed);
            }
            // OTP `auto_shutdown => never`: a group whose children have all ended keeps
            // running, empty, until it is stopped.
            return None;
        }
        let now = Instant::now();
        if let Err(reason) = self.window.record(&self.intensity, now) {
            self.emit(EventKind::GaveUp { reason });
            self.stop_all().await;
            return Some(Outcome::GaveUp(reason));
        }
        let child = &mut self.children[i];
        child.backoff_state.note_uptime(&child.backoff, uptime);
        let delay = child.backoff_state.next_delay(&child.backoff);
        child.note_restart(&self.registry);
        child.sink.emit(EventKind::RestartScheduled {
            attempt: child.backoff_state.attempt(),
            delay,
        });
        let n = self.children.len();
        let affected: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![i],
            Strategy::OneForAll => (0..n).collect(),
            Strategy::RestForOne => (i..n).collect(),
        };
        for &j in affected.iter().rev() {
            if j != i {
                self.stop_member(j).await;
            }
        }
        for j in affected {
            let sibling = &mut self.children[j];
            // OTP: a temporary child is never restarted, also when a sibling's
            // termination stopped it; its spec is dropped.
            if j != i && sibling.restart == RestartKind::Temporary {
                if !sibling.is_finished() {
                    sibling.enter(ChildState::Finished, &self.registry);
                }
                continue;
            }
            if j != i {
                sibling.note_restart(&self.registry);
            }
            sibling.enter(ChildState::Backoff { until: now + delay }, &self.registry);
        }
        None
    }

    async fn on_command(&mut self, command: Option<Command>) -> Option<Outcome> {
        match command {
            // Every handle is gone or stop() was called.
            None | Some(Command::Stop) => {
                self.emit(EventKind::Stopping);
                self.stop_all().await;
                self.emit(EventKind::Stopped);
                Some(Outcome::Stopped)
            }
            Some(Command::Restart(None)) => {
                self.stop_all().await;
                for j in 0..self.children.len() {
                    self.bring_back(j);
                }
                None
            }
            Some(Command::Restart(Some(name))) => {
                if let Some(j) = self.children.iter().position(|c| c.name() == name) {
                    self.stop_member(j).await;
                    self.bring_back(j);
                }
                None
            }
        }
    }

    /// After a manual restart's stop: every child starts again, except a temporary one
    /// that had already finished (OTP drops its spec), whichever way it was restarted.
    fn bring_back(&mut self, j: usize) {
        let child = &mut self.children[j];
        let gone = child.is_finished() && child.restart == RestartKind::Temporary;
        if !gone && !child.is_running() {
            child.enter(ChildState::Idle, &self.registry);
        }
    }

    /// Stop every child in reverse start order.
    async fn stop_all(&mut self) {
        for j in (0..self.children.len()).rev() {
            self.stop_member(j).await;
        }
        self.all_up.send_replace(false);
    }

    /// Stop one child: a running one through its supervisor (its watch task cancelled
    /// first, so the stop is not mistaken for a crash); a pending restart is cancelled
    /// (and reported, so a stop always reads `Stopping`, `Stopped`). It is `Idle`
    /// afterwards; finished and idle children are left as they are.
    async fn stop_member(&mut self, j: usize) {
        let sink = self.children[j].sink.clone();
        match self.children[j].state() {
            ChildState::Running(_) => {}
            ChildState::Backoff { .. } | ChildState::Listening { .. } => {
                sink.emit(EventKind::Stopping);
                let left = self.children[j].enter(ChildState::Idle, &self.registry);
                if let ChildState::Listening { watch, .. } = left {
                    watch.abort();
                }
                self.children[j].activated = false;
                sink.emit(EventKind::Stopped);
                return;
            }
            _ => return,
        }
        let ChildState::Running(running) =
            self.children[j].enter(ChildState::Stopping, &self.registry)
        else {
            unreachable!("checked above");
        };
        running.watch.abort();
        match running.active {
            Active::Backend {
                supervisor,
                backend,
            } => {
                sink.emit(EventKind::Stopping);
                let stopped = supervisor.stop(&backend).await;
                backend.release_exited_child();
                match stopped {
                    Ok(status) => {
                        self.children[j].note_exit(status, &self.registry);
                        sink.emit(EventKind::Exited {
                            pid: backend.pid(),
                            status,
                            output: LastOutput::default(),
                        })
                    }
                    Err(error) => {
                        tracing::warn!(service = %sink.service(), error = %crate::report::Chain(&error), "stop failed")
                    }
                }
                self.children[j].enter(ChildState::Idle, &self.registry);
                sink.emit(EventKind::Stopped);
            }
            Active::Group(handle) => {
                handle.stop().await;
                self.children[j].enter(ChildState::Idle, &self.registry);
            }
        }
    }
}

/// Adopt a verified running backend, or spawn one and wait until it is ready; for a nested
/// group, start it and wait until all its members are ready.
async fn start_member(
    child: &Child,
    registry: &Arc<Registry>,
    ctx: &SpawnContext,
) -> Result<Active, StartError> {
    match &child.kind {
        MemberKind::Service(supervisor) => {
            child.sink.emit(EventKind::Starting);
            match supervisor.probe().await {
                Ok(Some(backend)) if backend.is_alive() => {
                    // `Ready` follows from `watch`, as for a spawned backend.
                    child
                        .sink
                        .emit(EventKind::AdoptedExisting { pid: backend.pid() });
                    return Ok(Active::Backend {
                        supervisor: supervisor.clone(),
                        backend: Box::new(backend),
                    });
                }
                Ok(_) => {}
                Err(error) => child.sink.emit(EventKind::ProbeRejected {
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
                Some((child.sink.clone(), registry.clone())),
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
    }
}

/// A start was abandoned (timeout, failure, or a command): if the supervisor had
/// reported the process it spawned, report that process's exit too. The spawn killed it
/// when it was dropped; its exit status is waited for, bounded.
async fn report_abandoned(ctx: &SpawnContext) {
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

/// Watch one backend until it ends: exit from the kernel, or unhealthy per its health
/// policy (then it is stopped here). Wakes only for health checks.
async fn watch_backend(
    supervisor: &dyn Supervisor,
    backend: &BackendHandle,
    sink: &EventSink,
    registry: &Registry,
    name: &str,
) -> Termination {
    let pid = backend.pid();
    let Some(policy) = supervisor.health_policy() else {
        let status = backend.exited().await;
        return exited(supervisor, backend, sink, registry, name, status).await;
    };
    let mut ticker = tokio::time::interval_at(Instant::now() + policy.interval, policy.interval);
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
            status = backend.exited() => {
                return exited(supervisor, backend, sink, registry, name, status).await;
            }
            result = check => match result {
                Ok(()) => {
                    failures = 0;
                    if !std::mem::replace(&mut healthy, true) {
                        sink.emit(EventKind::Healthy { pid });
                    }
                }
                Err(error) => {
                    failures += 1;
                    healthy = false;
                    sink.emit(EventKind::HealthCheckFailed { pid, consecutive: failures, error: Arc::new(error) });
                    if failures >= policy.failures_before_unhealthy.max(1) {
                        sink.emit(EventKind::Unhealthy { pid });
                        let stopped = supervisor.stop(backend).await;
                        backend.release_exited_child();
                        match stopped {
                            Ok(status) => {
                                registry.board.update(name, |row| row.last_exit = Some(status));
                                sink.emit(EventKind::Exited { pid, status, output: LastOutput::default() })
                            }
                            Err(error) => tracing::warn!(pid, error = %crate::report::Chain(&error), "stopping an unhealthy backend failed"),
                        }
                        return Termination::Unhealthy;
                    }
                }
            }
        }
    }
}

/// The main process exited by itself: let the supervisor clean up after it (the rest of
/// its tree) before the exit is reported and anything is restarted.
async fn exited(
    supervisor: &dyn Supervisor,
    backend: &BackendHandle,
    sink: &EventSink,
    registry: &Registry,
    name: &str,
    status: crate::ExitStatus,
) -> Termination {
    let output = supervisor.on_exit(backend, status).await;
    // Cleaned up: the zombie may go, even while the application still holds a handle.
    backend.release_exited_child();
    registry
        .board
        .update(name, |row| row.last_exit = Some(status));
    sink.emit(EventKind::Exited {
        pid: backend.pid(),
        status,
        output,
    });
    Termination::Exited(status)
}
