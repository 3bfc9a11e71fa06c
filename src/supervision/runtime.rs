//! The loop that drives a group of children in order. A single supervised service is a
//! group of one ("solo"), so both share one loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::event::{event_buffer_for, EventKind, EventSink, EventStream};
use super::group::{AutoShutdown, GroupSpec, MemberKind, MemberSpec, Outcome, Strategy};
use super::policy::{Backoff, BackoffState, IntensityWindow, RestartKind, Termination};
use super::supervisor::{HealthError, LastOutput, SpawnContext, StartError, Supervisor};
use crate::handle::BackendHandle;

type Backends = BTreeMap<String, BackendHandle>;

/// Supervise one backend: adopt or spawn it, watch it, restart it by its policy.
///
/// Returns at once; supervision runs in a background task until [`ServiceHandle::stop`],
/// until the policy gives up or completes, or until every `ServiceHandle` is dropped (which
/// stops the backend gracefully in the background).
pub fn supervise(supervisor: Arc<dyn Supervisor>) -> ServiceHandle {
    let name = supervisor.name().to_owned();
    let intensity = supervisor.restart_policy().intensity;
    let spec = GroupSpec::new(name)
        .intensity(intensity)
        .auto_shutdown(AutoShutdown::AnySignificant)
        .significant_service(supervisor);
    start(spec, true, None)
}

/// Supervise a group: children start in order (each once the previous is ready), are
/// restarted by the group's strategy, and stop in reverse order.
pub fn supervise_group(spec: GroupSpec) -> ServiceHandle {
    start(spec, false, None)
}

enum Command {
    Stop,
    Restart(Option<String>),
}

struct Shared {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    backends: watch::Receiver<Backends>,
    all_up: watch::Receiver<bool>,
    outcome: watch::Receiver<Option<Outcome>>,
    first_events: Mutex<Option<broadcast::Receiver<super::Event>>>,
    events: broadcast::Receiver<super::Event>,
}

/// A handle to a supervised service or group. Clones share it; when the last one is dropped,
/// supervision stops everything gracefully in the background.
#[derive(Clone)]
pub struct ServiceHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("name", &self.shared.name)
            .field("outcome", &*self.shared.outcome.borrow())
            .finish()
    }
}

impl ServiceHandle {
    /// The service or group name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The typed event stream. The first call gets every event since supervision began;
    /// later calls get events from the moment of the call.
    pub fn events(&self) -> EventStream {
        let first = self
            .shared
            .first_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        EventStream::new(first.unwrap_or_else(|| self.shared.events.resubscribe()))
    }

    /// The current verified backend of a single service (it changes on restart); `None`
    /// while it is not running. For a group, see [`ServiceHandle::backend_of`].
    pub fn backend(&self) -> Option<BackendHandle> {
        self.backend_of(&self.shared.name)
    }

    /// The current backend of the member called `name` (`group/child` inside groups).
    pub fn backend_of(&self, name: &str) -> Option<BackendHandle> {
        self.shared.backends.borrow().get(name).cloned()
    }

    /// Every running backend by member name.
    pub fn backends(&self) -> BTreeMap<String, BackendHandle> {
        self.shared.backends.borrow().clone()
    }

    /// Wait until every member is running and ready; `Err` with the outcome if supervision
    /// ended first.
    pub async fn ready(&self) -> Result<(), Outcome> {
        let mut all_up = self.shared.all_up.clone();
        let mut outcome = self.shared.outcome.clone();
        loop {
            if let Some(done) = outcome.borrow_and_update().clone() {
                return Err(done);
            }
            if *all_up.borrow_and_update() {
                return Ok(());
            }
            tokio::select! {
                changed = all_up.changed() => if changed.is_err() { return Err(self.outcome().await) },
                _ = outcome.changed() => {}
            }
        }
    }

    /// Restart everything now (stop in reverse order, start in order). Manual restarts do
    /// not count towards the restart intensity.
    pub fn restart(&self) {
        let _ = self.shared.commands.send(Command::Restart(None));
    }

    /// Restart one member (`group/child` inside groups, or the service name).
    pub fn restart_member(&self, name: &str) {
        let _ = self
            .shared
            .commands
            .send(Command::Restart(Some(name.to_owned())));
    }

    /// Stop gracefully (each backend by its supervisor's `stop`: graceful, grace period,
    /// kill), in reverse start order, and wait until everything has stopped.
    pub async fn stop(&self) -> Outcome {
        let _ = self.shared.commands.send(Command::Stop);
        self.outcome().await
    }

    /// Wait for the final outcome.
    pub async fn outcome(&self) -> Outcome {
        let mut outcome = self.shared.outcome.clone();
        let done = match outcome.wait_for(Option::is_some).await {
            Ok(done) => done.clone(),
            // The runtime vanished without a verdict (its tokio runtime shut down).
            Err(_) => None,
        };
        done.unwrap_or(Outcome::Stopped)
    }

    /// The outcome, if supervision has ended.
    pub fn try_outcome(&self) -> Option<Outcome> {
        self.shared.outcome.borrow().clone()
    }
}

/// Start the loop for `spec` in a task. `parent` shares the parent's event channel and
/// backend registry for nested groups.
fn start(
    spec: GroupSpec,
    solo: bool,
    parent: Option<(EventSink, Arc<watch::Sender<Backends>>)>,
) -> ServiceHandle {
    let (sink, registry, first_events, events) = match parent {
        Some((sink, registry)) => {
            let rx = sink.subscribe();
            (sink, registry, None, rx)
        }
        None => {
            let (tx, rx) = broadcast::channel(event_buffer_for(spec.service_count()));
            let template = rx.resubscribe();
            let registry = Arc::new(watch::channel(Backends::new()).0);
            (
                EventSink::new(spec.name.clone(), tx),
                registry,
                Some(rx),
                template,
            )
        }
    };
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (all_up_tx, all_up) = watch::channel(false);
    let (outcome_tx, outcome) = watch::channel(None);
    let shared = Arc::new(Shared {
        name: sink.service().to_owned(),
        commands,
        backends: registry.subscribe(),
        all_up,
        outcome,
        first_events: Mutex::new(first_events),
        events,
    });
    let span = tracing::info_span!("supervision", name = %sink.service());
    let group = Group::new(spec, solo, sink, registry, all_up_tx);
    tokio::spawn(
        async move {
            let outcome = group.run(command_rx).await;
            outcome_tx.send_replace(Some(outcome));
        }
        .instrument(span),
    );
    ServiceHandle { shared }
}

/// One child of a group, with its restart state.
struct Slot {
    sink: EventSink,
    kind: MemberKind,
    significant: bool,
    restart: RestartKind,
    backoff: Backoff,
    state: BackoffState,
    running: Option<Running>,
    finished: bool,
    not_before: Option<Instant>,
}

struct Running {
    generation: u64,
    started_at: Instant,
    active: Active,
    watch: AbortHandle,
}

enum Active {
    Backend {
        supervisor: Arc<dyn Supervisor>,
        backend: Box<BackendHandle>,
    },
    Group(ServiceHandle),
}

type TermTx = mpsc::UnboundedSender<(usize, u64, Termination)>;

struct Group {
    strategy: Strategy,
    intensity: super::policy::Intensity,
    auto_shutdown: AutoShutdown,
    solo: bool,
    sink: EventSink,
    registry: Arc<watch::Sender<Backends>>,
    all_up: watch::Sender<bool>,
    slots: Vec<Slot>,
    window: IntensityWindow,
    generation: u64,
    term_tx: TermTx,
    term_rx: mpsc::UnboundedReceiver<(usize, u64, Termination)>,
}

impl Group {
    fn new(
        spec: GroupSpec,
        solo: bool,
        sink: EventSink,
        registry: Arc<watch::Sender<Backends>>,
        all_up: watch::Sender<bool>,
    ) -> Group {
        let slots = spec
            .members
            .into_iter()
            .map(
                |MemberSpec {
                     name,
                     kind,
                     significant,
                 }| {
                    let (restart, backoff) = match &kind {
                        MemberKind::Service(supervisor) => {
                            let policy = supervisor.restart_policy();
                            (policy.kind, policy.backoff)
                        }
                        MemberKind::Group { restart, .. } => (*restart, Backoff::default()),
                    };
                    Slot {
                        sink: if solo {
                            sink.clone()
                        } else {
                            sink.child(&name)
                        },
                        kind,
                        significant,
                        restart,
                        backoff,
                        state: BackoffState::new(),
                        running: None,
                        finished: false,
                        not_before: None,
                    }
                },
            )
            .collect();
        let (term_tx, term_rx) = mpsc::unbounded_channel();
        Group {
            strategy: spec.strategy,
            intensity: spec.intensity,
            auto_shutdown: spec.auto_shutdown,
            solo,
            sink,
            registry,
            all_up,
            slots,
            window: IntensityWindow::new(),
            generation: 0,
            term_tx,
            term_rx,
        }
    }

    /// Group-level events; a solo group's member already reports under the same name.
    fn emit(&self, kind: EventKind) {
        if !self.solo || matches!(kind, EventKind::GaveUp { .. }) {
            self.sink.emit(kind);
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) -> Outcome {
        let began = Instant::now();
        let mut announced_ready = false;
        self.emit(EventKind::Starting);
        loop {
            if self.slots.iter().all(|s| s.finished) {
                self.emit(EventKind::Completed);
                return Outcome::Completed;
            }
            let next = self
                .slots
                .iter()
                .position(|s| s.running.is_none() && !s.finished);
            let Some(i) = next else {
                // Terminations that arrived while other members started are handled
                // first: on a multi-threaded runtime a `ready()` waiter could otherwise
                // see "all up" for a member whose exit is already queued.
                if let Ok((i, generation, term)) = self.term_rx.try_recv() {
                    if let Some(outcome) = self.on_termination(i, generation, term).await {
                        return outcome;
                    }
                    continue;
                }
                self.all_up.send_replace(true);
                if !announced_ready {
                    announced_ready = true;
                    self.emit(EventKind::Ready {
                        pid: None,
                        took: began.elapsed(),
                    });
                }
                if let Some(outcome) = self.wait(&mut commands, None).await {
                    return outcome;
                }
                continue;
            };
            self.all_up.send_replace(false);

            // A backoff delay before this member may start again.
            if let Some(at) = self.slots[i].not_before.filter(|at| *at > Instant::now()) {
                if let Some(outcome) = self.wait(&mut commands, Some(at)).await {
                    return outcome;
                }
                continue;
            }

            // Start it. Terminations of other members wait in their channel meanwhile;
            // a stop drops the start (spawns are cancel-safe).
            let attempt_began = Instant::now();
            let started = tokio::select! {
                started = start_member(&self.slots[i], &self.registry) => started,
                command = commands.recv() => {
                    if let Some(outcome) = self.on_command(command).await {
                        return outcome;
                    }
                    continue;
                }
            };
            match started {
                Ok(active) => self.watch(i, active, attempt_began),
                Err(error) => {
                    let error = Arc::new(error);
                    self.slots[i].sink.emit(EventKind::StartFailed {
                        error: error.clone(),
                    });
                    if error.is_permanent() {
                        // Retrying cannot help (the program cannot be executed, the spec
                        // is invalid): stop what runs, in reverse order, and say why.
                        self.stop_all().await;
                        return Outcome::StartFailed {
                            member: self.slots[i].sink.service().to_owned(),
                            error,
                        };
                    }
                    // Treat it as this member ending abnormally.
                    if let Some(outcome) = self
                        .after_end(i, Termination::StartFailed, std::time::Duration::ZERO)
                        .await
                    {
                        return outcome;
                    }
                }
            }
        }
    }

    /// Wait for a member's termination, a command, or the instant `wake` (a backoff
    /// delay ending), and handle it. `Some` when supervision is over.
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
            command = commands.recv() => self.on_command(command).await,
        }
    }

    /// Record a started member (a backend becomes visible through the handle before its
    /// `Ready` event is sent) and watch it in a task that reports its termination.
    fn watch(&mut self, i: usize, active: Active, attempt_began: Instant) {
        self.generation += 1;
        let generation = self.generation;
        let term_tx = self.term_tx.clone();
        let sink = self.slots[i].sink.clone();
        let task = match &active {
            Active::Backend {
                supervisor,
                backend,
            } => {
                self.registry.send_modify(|map| {
                    map.insert(sink.service().to_owned(), (**backend).clone());
                });
                sink.emit(EventKind::Ready {
                    pid: Some(backend.pid()),
                    took: attempt_began.elapsed(),
                });
                let (supervisor, backend) = (supervisor.clone(), (**backend).clone());
                tokio::spawn(async move {
                    let term = watch_backend(&*supervisor, &backend, &sink).await;
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
        self.slots[i].running = Some(Running {
            generation,
            started_at: Instant::now(),
            active,
            watch: task.abort_handle(),
        });
    }

    async fn on_termination(
        &mut self,
        i: usize,
        generation: u64,
        term: Termination,
    ) -> Option<Outcome> {
        let slot = &mut self.slots[i];
        if slot.running.as_ref().map(|r| r.generation) != Some(generation) {
            return None; // a member we already stopped or restarted
        }
        let running = slot.running.take()?;
        self.registry.send_modify(|map| {
            map.remove(slot.sink.service());
        });
        self.after_end(i, term, running.started_at.elapsed()).await
    }

    /// A member ended (`running` already cleared): complete it, restart it by strategy, or
    /// give up.
    async fn after_end(
        &mut self,
        i: usize,
        term: Termination,
        uptime: std::time::Duration,
    ) -> Option<Outcome> {
        let slot = &mut self.slots[i];
        if !slot.restart.should_restart(&term) {
            slot.finished = true;
            slot.sink.emit(EventKind::Completed);
            let shutdown = slot.significant
                && match self.auto_shutdown {
                    AutoShutdown::Never => false,
                    AutoShutdown::AnySignificant => true,
                    AutoShutdown::AllSignificant => self
                        .slots
                        .iter()
                        .filter(|s| s.significant)
                        .all(|s| s.finished),
                };
            if shutdown {
                self.stop_all().await;
                if !self.solo {
                    self.sink.emit(EventKind::Completed);
                }
                return Some(Outcome::Completed);
            }
            return None;
        }
        let now = Instant::now();
        if let Err(reason) = self.window.record(&self.intensity, now) {
            self.emit(EventKind::GaveUp { reason });
            self.stop_all().await;
            return Some(Outcome::GaveUp(reason));
        }
        let slot = &mut self.slots[i];
        slot.state.note_uptime(&slot.backoff, uptime);
        let delay = slot.state.next_delay(&slot.backoff);
        slot.sink.emit(EventKind::RestartScheduled {
            attempt: slot.state.attempt(),
            delay,
        });
        let n = self.slots.len();
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
            if !self.slots[j].finished {
                self.slots[j].not_before = Some(now + delay);
            }
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
                None
            }
            Some(Command::Restart(Some(name))) => {
                if let Some(j) = self.slots.iter().position(|s| s.sink.service() == name) {
                    self.stop_member(j).await;
                    self.slots[j].finished = false;
                }
                None
            }
        }
    }

    /// Stop every running member in reverse start order.
    async fn stop_all(&mut self) {
        for j in (0..self.slots.len()).rev() {
            self.stop_member(j).await;
        }
        self.all_up.send_replace(false);
    }

    /// Stop one member if it runs; its watch task is cancelled first so the stop is not
    /// mistaken for a crash.
    async fn stop_member(&mut self, j: usize) {
        let slot = &mut self.slots[j];
        let Some(running) = slot.running.take() else {
            return;
        };
        running.watch.abort();
        slot.not_before = None;
        match running.active {
            Active::Backend {
                supervisor,
                backend,
            } => {
                slot.sink.emit(EventKind::Stopping);
                let stopped = supervisor.stop(&backend).await;
                backend.release_exited_child();
                match stopped {
                    Ok(status) => slot.sink.emit(EventKind::Exited {
                        pid: backend.pid(),
                        status,
                        output: LastOutput::default(),
                    }),
                    Err(error) => {
                        tracing::warn!(service = %slot.sink.service(), %error, "stop failed")
                    }
                }
                self.registry.send_modify(|map| {
                    map.remove(slot.sink.service());
                });
                slot.sink.emit(EventKind::Stopped);
            }
            Active::Group(handle) => {
                handle.stop().await;
            }
        }
    }
}

/// Adopt a verified running backend, or spawn one and wait until it is ready; for a nested
/// group, start it and wait until all its members are ready.
async fn start_member(
    slot: &Slot,
    registry: &Arc<watch::Sender<Backends>>,
) -> Result<Active, StartError> {
    let began = Instant::now();
    match &slot.kind {
        MemberKind::Service(supervisor) => {
            slot.sink.emit(EventKind::Starting);
            match supervisor.probe().await {
                Ok(Some(backend)) if backend.is_alive() => {
                    slot.sink
                        .emit(EventKind::AdoptedExisting { pid: backend.pid() });
                    slot.sink.emit(EventKind::Ready {
                        pid: Some(backend.pid()),
                        took: began.elapsed(),
                    });
                    return Ok(Active::Backend {
                        supervisor: supervisor.clone(),
                        backend: Box::new(backend),
                    });
                }
                Ok(_) => {}
                Err(error) => slot.sink.emit(EventKind::ProbeRejected {
                    error: Arc::new(error),
                }),
            }
            let ctx = SpawnContext {
                events: slot.sink.clone(),
            };
            let deadline = supervisor.ready_timeout();
            let backend = tokio::time::timeout(deadline, supervisor.spawn(&ctx))
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
                Some((slot.sink.clone(), registry.clone())),
            );
            match handle.ready().await {
                Ok(()) => Ok(Active::Group(handle)),
                Err(outcome) => Err(StartError::Readiness(format!(
                    "group {} ended before it was ready: {outcome:?}",
                    handle.name()
                ))),
            }
        }
    }
}

/// Watch one backend until it ends: exit from the kernel, or unhealthy per its health
/// policy (then it is stopped here). Wakes only for health checks.
async fn watch_backend(
    supervisor: &dyn Supervisor,
    backend: &BackendHandle,
    sink: &EventSink,
) -> Termination {
    let pid = backend.pid();
    let Some(policy) = supervisor.health_policy() else {
        let status = backend.exited().await;
        return exited(supervisor, backend, sink, status).await;
    };
    let mut ticker = tokio::time::interval_at(Instant::now() + policy.interval, policy.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
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
                return exited(supervisor, backend, sink, status).await;
            }
            result = check => match result {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures += 1;
                    sink.emit(EventKind::HealthCheckFailed { pid, consecutive: failures, error: Arc::new(error) });
                    if failures >= policy.failures_before_unhealthy.max(1) {
                        sink.emit(EventKind::Unhealthy { pid });
                        let stopped = supervisor.stop(backend).await;
                        backend.release_exited_child();
                        match stopped {
                            Ok(status) => sink.emit(EventKind::Exited { pid, status, output: LastOutput::default() }),
                            Err(error) => tracing::warn!(pid, %error, "stopping an unhealthy backend failed"),
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
    status: crate::ExitStatus,
) -> Termination {
    let output = supervisor.on_exit(backend, status).await;
    // Cleaned up: the zombie may go, even while the application still holds a handle.
    backend.release_exited_child();
    sink.emit(EventKind::Exited {
        pid: backend.pid(),
        status,
        output,
    });
    Termination::Exited(status)
}
