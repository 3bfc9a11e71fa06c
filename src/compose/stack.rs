//! [`Stack`]: the services of a [`ServiceFile`] run together. Each service is supervised
//! by the runtime on its own ([`supervise`]); the stack adds what a file of services needs
//! on top: start a service once its dependencies reach their conditions (independent ones
//! in parallel), restart dependants by the set's strategy, count restarts against the
//! set's intensity, and stop in reverse dependency order.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::file::{Condition, Dependency, ServiceFile, StartOrder};
use super::status::{HealthView, ServiceState, ServiceStatus, StackEvent};
use crate::command::CommandSupervisor;
use crate::supervision::event::one_line;
use crate::supervision::policy::IntensityWindow;
use crate::supervision::{
    supervise, Event, EventKind, MemberState, Outcome, ServiceHandle, Strategy,
};

/// Events a subscriber may fall behind by before it loses some.
const EVENT_BUFFER: usize = 1024;

/// The services of a [`ServiceFile`], running.
///
/// ```no_run
/// # #[cfg(feature = "toml")]
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use running_process::compose::{ServiceFile, Stack};
///
/// let file = ServiceFile::load("running-process.toml").await?;
/// let stack = Stack::start(file);
/// let mut events = stack.events();
/// tokio::spawn(async move {
///     while let Ok(event) = events.recv().await {
///         println!("{event}");
///     }
/// });
/// stack.ready().await.map_err(|outcome| outcome.to_string())?;
/// for service in stack.status() {
///     println!("{} {} pid {:?}", service.name, service.state, service.pid);
/// }
/// stack.stop().await;
/// # Ok(()) }
/// ```
///
/// Clones share the stack. When the last one is dropped, every service is stopped in the
/// background, dependants first (as the runtime's `ServiceHandle` does).
#[derive(Clone)]
pub struct Stack {
    inner: Arc<Inner>,
    /// Not held by the stack's own tasks: its drop is the user's last clone going away.
    _stop_on_drop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.0.outcome.borrow().is_some() {
            return;
        }
        let inner = self.0.clone();
        // Without a runtime (it is shutting down), the services' own handles stop them.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { inner.stop_all(Outcome::Stopped).await });
        }
    }
}

struct Inner {
    file: ServiceFile,
    slots: Vec<Slot>,
    events: broadcast::Sender<StackEvent>,
    /// Subscribed before anything ran: the first [`Stack::events`] call gets it, so it
    /// misses nothing since the start.
    first_events: Mutex<Option<broadcast::Receiver<StackEvent>>>,
    window: Mutex<IntensityWindow>,
    /// Set once the whole set is stopping: nothing starts any more.
    stopping: watch::Sender<bool>,
    /// Every service reached ready (or completed) once.
    started_up: watch::Sender<bool>,
    began: Instant,
    outcome: watch::Sender<Option<Outcome>>,
    /// Why the set is stopping (the first reason given): published as the outcome once
    /// everything has stopped.
    ending: Mutex<Option<Outcome>>,
}

/// One service and what the stack knows of it.
struct Slot {
    supervisor: Arc<CommandSupervisor>,
    /// What it waits for (see [`dependencies`]), by index.
    dependencies: Vec<(usize, Dependency)>,
    /// Its stop level: one more than its deepest dependency's (dependants stop first).
    depth: usize,
    progress: watch::Sender<Progress>,
    /// The runtime's handle, while it supervises the service.
    handle: Mutex<Option<ServiceHandle>>,
}

/// What a service has reached, for its dependants and its status row.
#[derive(Clone)]
struct Progress {
    phase: Phase,
    started: bool,
    ready: bool,
    healthy: bool,
    completed_ok: bool,
    /// Exited unexpectedly and scheduled for a restart, or restarted on request: once
    /// ready again, the strategy restarts its dependants.
    restart_pending: bool,
    health: HealthView,
    since: SystemTime,
    /// Which launch of the service this is: a task of an earlier launch that ends late
    /// must not overwrite what a later one reached.
    launch: u64,
}

#[derive(Clone, PartialEq)]
enum Phase {
    /// Not launched yet, waiting for these dependencies.
    Waiting(Vec<String>),
    /// Supervised by the runtime.
    Launched,
    /// Stopped on request: kept down until restarted.
    Held,
    /// Its supervision ended by itself.
    Ended(Outcome),
    /// A dependency ended before reaching its condition.
    Blocked(Dependency),
}

impl Progress {
    fn new() -> Progress {
        Progress {
            phase: Phase::Waiting(Vec::new()),
            started: false,
            ready: false,
            healthy: false,
            completed_ok: false,
            restart_pending: false,
            health: HealthView::Unknown,
            since: SystemTime::now(),
            launch: 0,
        }
    }

    fn reached(&self, condition: Condition) -> bool {
        match condition {
            Condition::Started => self.started || self.completed_ok,
            Condition::Ready => self.ready || self.completed_ok,
            Condition::Healthy => self.healthy,
            Condition::CompletedSuccessfully => self.completed_ok,
        }
    }

    /// It can no longer reach `condition` without a restart from outside.
    fn cannot_reach(&self, condition: Condition) -> bool {
        match &self.phase {
            Phase::Ended(_) | Phase::Blocked(_) | Phase::Held => !self.reached(condition),
            _ => false,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Stack {
    /// Start the services of `file`: each once its dependencies reach their conditions,
    /// independent ones in parallel. Returns at once; see [`Stack::ready`]. Call it within
    /// a tokio runtime. The file should have passed its checks
    /// (`ServiceFile::load`, feature `toml`, or [`ServiceFile::check`]): a dependency
    /// on a service the file does not have is ignored here.
    pub fn start(file: ServiceFile) -> Stack {
        let graph: Vec<Vec<(usize, Dependency)>> = (0..file.services.len())
            .map(|i| dependencies(&file, i))
            .collect();
        let depths = depths(&graph);
        let slots = file
            .services
            .iter()
            .zip(graph.into_iter().zip(depths))
            .map(|(service, (dependencies, depth))| Slot {
                supervisor: Arc::new(CommandSupervisor::new(service.spec.clone())),
                dependencies,
                depth,
                progress: watch::Sender::new(Progress::new()),
                handle: Mutex::new(None),
            })
            .collect();
        let events = broadcast::Sender::new(EVENT_BUFFER);
        let inner = Arc::new(Inner {
            file,
            slots,
            first_events: Mutex::new(Some(events.subscribe())),
            events,
            window: Mutex::new(IntensityWindow::new()),
            stopping: watch::Sender::new(false),
            started_up: watch::Sender::new(false),
            began: Instant::now(),
            outcome: watch::Sender::new(None),
            ending: Mutex::new(None),
        });
        let stack = Stack {
            _stop_on_drop: Arc::new(StopOnDrop(inner.clone())),
            inner,
        };
        for i in 0..stack.inner.slots.len() {
            tokio::spawn(run_service(stack.inner.clone(), i));
        }
        stack
    }

    /// The set's name (`[group] name`).
    pub fn name(&self) -> &str {
        &self.inner.file.group.name
    }

    /// The file it runs.
    pub fn file(&self) -> &ServiceFile {
        &self.inner.file
    }

    /// The events: each service's and the set's own. The first call gets every event
    /// since [`Stack::start`]; later calls get those from the moment of the call on. A
    /// receiver that falls more than 1024 events behind gets `Lagged` and continues.
    pub fn events(&self) -> broadcast::Receiver<StackEvent> {
        lock(&self.inner.first_events)
            .take()
            .unwrap_or_else(|| self.inner.events.subscribe())
    }

    /// Wait until every service has been ready (or completed successfully) at once; `Err`
    /// with the outcome if the set ended first.
    pub async fn ready(&self) -> Result<(), Outcome> {
        let mut up = self.inner.started_up.subscribe();
        let mut outcome = self.inner.outcome.subscribe();
        tokio::select! {
            _ = up.wait_for(|up| *up) => Ok(()),
            ended = outcome.wait_for(Option::is_some) => {
                Err(ended.ok().and_then(|o| o.clone()).unwrap_or(Outcome::Stopped))
            }
        }
    }

    /// Every service as it is now, in file order.
    pub fn status(&self) -> Vec<ServiceStatus> {
        (0..self.inner.slots.len())
            .map(|i| self.inner.status_of(i))
            .collect()
    }

    /// Restart the service called `name` (stop, then start; a service that was stopped,
    /// completed or failed starts again, once its dependencies allow). A running one is
    /// followed by the set's strategy once it is ready again, as after a crash
    /// (`rest_for_one`: its dependants restart too). `false` if the file has no such
    /// service.
    pub fn restart_service(&self, name: &str) -> bool {
        let Some(i) = self.inner.index_of(name) else {
            return false;
        };
        let handle = lock(&self.inner.slots[i].handle).clone();
        match handle {
            Some(handle) if handle.try_outcome().is_none() => {
                // Once it is ready again, the strategy restarts what depends on it, as
                // after a crash.
                self.inner.slots[i]
                    .progress
                    .send_modify(|p| p.restart_pending = true);
                handle.restart();
            }
            _ => self.inner.relaunch(i),
        }
        true
    }

    /// Start the service called `name` if it is not running (stopped, completed or
    /// failed), once its dependencies allow; a running one is left alone. `None` if the
    /// file has no such service, else whether it was started.
    pub fn start_service(&self, name: &str) -> Option<bool> {
        let i = self.inner.index_of(name)?;
        let running = lock(&self.inner.slots[i].handle)
            .as_ref()
            .is_some_and(|h| h.try_outcome().is_none());
        let waiting = matches!(
            self.inner.slots[i].progress.borrow().phase,
            Phase::Waiting(_)
        );
        if running || waiting {
            return Some(false);
        }
        self.inner.relaunch(i);
        Some(true)
    }

    /// Stop the service called `name` and keep it down until [`Stack::restart_service`];
    /// its dependants keep running. `false` if the file has no such service.
    pub async fn stop_service(&self, name: &str) -> bool {
        let Some(i) = self.inner.index_of(name) else {
            return false;
        };
        self.inner.slots[i]
            .progress
            .send_modify(|p| p.phase = Phase::Held);
        let handle = lock(&self.inner.slots[i].handle).clone();
        if let Some(handle) = handle {
            handle.stop().await;
        }
        true
    }

    /// Stop every service, dependants before what they depend on (independent ones in
    /// parallel), and wait until all have stopped. Services still waiting never start.
    pub async fn stop(&self) -> Outcome {
        self.inner.stop_all(Outcome::Stopped).await
    }

    /// Wait for the set's outcome: [`Outcome::Stopped`] after [`Stack::stop`],
    /// [`Outcome::Completed`] when every service ended by itself,
    /// [`Outcome::StartFailed`] when a service could not start while the set started up
    /// (everything else is stopped then), [`Outcome::GaveUp`] when the set's intensity was
    /// exceeded.
    pub async fn outcome(&self) -> Outcome {
        let mut outcome = self.inner.outcome.subscribe();
        let ended = outcome.wait_for(Option::is_some).await;
        ended
            .ok()
            .and_then(|o| o.clone())
            .unwrap_or(Outcome::Stopped)
    }

    /// The outcome, if the set has ended.
    pub fn try_outcome(&self) -> Option<Outcome> {
        self.inner.outcome.borrow().clone()
    }
}

impl Inner {
    /// Start service `i` again from the beginning (its dependencies first).
    fn relaunch(self: &Arc<Self>, i: usize) {
        self.slots[i].progress.send_modify(|p| {
            let launch = p.launch + 1;
            *p = Progress::new();
            p.launch = launch;
        });
        tokio::spawn(run_service(self.clone(), i));
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.file.services.iter().position(|s| s.name() == name)
    }

    fn name(&self, i: usize) -> &str {
        self.file.services[i].name()
    }

    fn emit(&self, event: StackEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// The services that depend on `i`, directly or not, in file order.
    fn dependants_of(&self, i: usize) -> Vec<usize> {
        let mut found = vec![false; self.slots.len()];
        let mut queue = vec![i];
        while let Some(j) = queue.pop() {
            for (k, seen) in found.iter_mut().enumerate() {
                if !*seen && k != i && self.slots[k].dependencies.iter().any(|(d, _)| *d == j) {
                    *seen = true;
                    queue.push(k);
                }
            }
        }
        (0..self.slots.len()).filter(|&k| found[k]).collect()
    }

    fn status_of(&self, i: usize) -> ServiceStatus {
        let progress = self.slots[i].progress.borrow().clone();
        let member = lock(&self.slots[i].handle)
            .as_ref()
            .and_then(|h| h.status().into_iter().next());
        let (mut state, mut detail) = match &progress.phase {
            Phase::Waiting(on) => (
                ServiceState::Waiting,
                Some(format!("waiting for {}", on.join(", "))),
            ),
            Phase::Held => (ServiceState::Stopped, None),
            Phase::Blocked(dependency) => (
                ServiceState::Failed,
                Some(format!(
                    "{} ended without becoming {}",
                    dependency.service, dependency.condition
                )),
            ),
            Phase::Ended(Outcome::Completed) => (ServiceState::Completed, None),
            Phase::Ended(Outcome::Stopped) => (ServiceState::Stopped, None),
            Phase::Ended(outcome) => (ServiceState::Failed, Some(one_line(&outcome.to_string()))),
            Phase::Launched => (ServiceState::Starting, None),
        };
        if progress.phase == Phase::Launched {
            if let Some(member) = &member {
                state = match member.state {
                    MemberState::Idle | MemberState::Starting => ServiceState::Starting,
                    MemberState::Running => ServiceState::Running,
                    MemberState::Listening => ServiceState::Listening,
                    MemberState::Backoff { .. } => ServiceState::Backoff,
                    MemberState::Stopping => ServiceState::Stopping,
                    MemberState::Finished => ServiceState::Completed,
                };
                detail = member
                    .last_start_error
                    .as_ref()
                    .filter(|_| state != ServiceState::Running)
                    .map(|e| one_line(&crate::report::Chain(&**e).to_string()));
            }
        }
        ServiceStatus {
            name: self.name(i).to_owned(),
            pid: member.as_ref().and_then(|m| m.pid),
            since: member.as_ref().map_or(progress.since, |m| m.since),
            restarts: member.as_ref().map_or(0, |m| m.restarts),
            last_exit: member.as_ref().and_then(|m| m.last_exit),
            ready: progress.ready,
            health: progress.health,
            state,
            detail,
        }
    }

    /// Every service has been ready or completed once: the set's start-up is over.
    fn check_started_up(&self) {
        if *self.started_up.borrow() {
            return;
        }
        let up = self.slots.iter().all(|slot| {
            let p = slot.progress.borrow();
            p.ready || p.completed_ok || p.phase == Phase::Held
        });
        if up && !self.started_up.send_replace(true) {
            self.emit(StackEvent::Ready {
                took: self.began.elapsed(),
                at: SystemTime::now(),
            });
        }
    }

    /// A service's supervision ended: end the set if nothing is left to run.
    fn check_all_ended(&self) {
        if *self.stopping.borrow() {
            // `stop_all` publishes the outcome once everything has stopped.
            return;
        }
        let mut held = false;
        for slot in &self.slots {
            match slot.progress.borrow().phase {
                Phase::Ended(_) | Phase::Blocked(_) => {}
                Phase::Held => held = true,
                Phase::Waiting(_) | Phase::Launched => return,
            }
        }
        if !held {
            self.publish(Outcome::Completed);
        }
    }

    /// The set's outcome, unless one was published already.
    fn publish(&self, outcome: Outcome) {
        self.outcome.send_if_modified(|o| {
            let first = o.is_none();
            if first {
                *o = Some(outcome);
            }
            first
        });
    }

    async fn stop_all(self: &Arc<Self>, outcome: Outcome) -> Outcome {
        lock(&self.ending).get_or_insert(outcome);
        self.stopping.send_replace(true);
        // Dependants first, level by level.
        let n = self.slots.len();
        let deepest = self.slots.iter().map(|slot| slot.depth).max().unwrap_or(0);
        for level in (0..=deepest).rev() {
            let stops = (0..n)
                .filter(|&i| self.slots[i].depth == level)
                .filter_map(|i| {
                    let handle = lock(&self.slots[i].handle).clone();
                    let mut progress = self.slots[i].progress.subscribe();
                    handle.map(|h| async move {
                        h.stop().await;
                        // Its last events are forwarded before the next level stops: the
                        // stream shows the order in which things happened.
                        let _ = progress.wait_for(|p| p.phase != Phase::Launched).await;
                    })
                });
            futures_util::future::join_all(stops).await;
        }
        let ending = lock(&self.ending).clone().unwrap_or(Outcome::Stopped);
        self.publish(ending);
        self.outcome.borrow().clone().unwrap_or(Outcome::Stopped)
    }

    /// A service's event: update what it reached, apply the strategy and the intensity.
    fn on_event(self: &Arc<Self>, i: usize, event: &Event) {
        let slot = &self.slots[i];
        match &event.kind {
            EventKind::Spawned { .. } | EventKind::AdoptedExisting { .. } => {
                slot.progress.send_modify(|p| p.started = true);
            }
            EventKind::Ready { pid: Some(_), .. } => {
                let mut restart_dependants = false;
                slot.progress.send_modify(|p| {
                    p.ready = true;
                    restart_dependants = std::mem::take(&mut p.restart_pending);
                });
                if restart_dependants {
                    self.apply_strategy(i);
                }
                self.check_started_up();
            }
            // Started on demand: its sockets take connections, which is what dependants
            // wait for (systemd orders them after the socket, not the service).
            EventKind::Listening => {
                slot.progress.send_modify(|p| {
                    p.started = true;
                    p.ready = true;
                });
                self.check_started_up();
            }
            EventKind::Exited { .. } => slot.progress.send_modify(|p| {
                p.started = false;
                p.ready = false;
                p.healthy = false;
            }),
            EventKind::Healthy { .. } => slot.progress.send_modify(|p| {
                p.healthy = true;
                p.health = HealthView::Healthy;
            }),
            EventKind::HealthCheckFailed { error, .. } => slot.progress.send_modify(|p| {
                p.healthy = false;
                p.health = HealthView::Unhealthy {
                    reason: one_line(&crate::report::Chain(&**error).to_string()),
                };
            }),
            EventKind::RestartScheduled { .. } => {
                slot.progress.send_modify(|p| p.restart_pending = true);
                let exceeded =
                    lock(&self.window).record(&self.file.group.intensity, Instant::now());
                if let Err(reason) = exceeded {
                    self.emit(StackEvent::GaveUp {
                        reason,
                        at: SystemTime::now(),
                    });
                    let inner = self.clone();
                    tokio::spawn(async move { inner.stop_all(Outcome::GaveUp(reason)).await });
                }
            }
            _ => {}
        }
    }

    /// Service `i` is ready again after an unexpected exit: restart what the strategy says.
    fn apply_strategy(&self, i: usize) {
        let targets: Vec<usize> = match self.file.group.strategy {
            Strategy::OneForOne => return,
            Strategy::RestForOne => self.dependants_of(i),
            Strategy::OneForAll => (0..self.slots.len()).filter(|&k| k != i).collect(),
        };
        let mut restarted = Vec::new();
        for k in targets {
            let handle = lock(&self.slots[k].handle).clone();
            if let Some(handle) = handle.filter(|h| h.try_outcome().is_none()) {
                handle.restart();
                restarted.push(self.name(k).to_owned());
            }
        }
        if !restarted.is_empty() {
            self.emit(StackEvent::StrategyRestart {
                cause: self.name(i).to_owned(),
                services: restarted,
                at: SystemTime::now(),
            });
        }
    }
}

/// What service `i` waits for: its `depends_on`, and in sequential order the service
/// before it. A dependency on a service the file does not have is left out.
fn dependencies(file: &ServiceFile, i: usize) -> Vec<(usize, Dependency)> {
    let index_of = |name: &str| file.services.iter().position(|s| s.name() == name);
    let mut found: Vec<(usize, Dependency)> = file.services[i]
        .depends_on
        .iter()
        .filter_map(|d| Some((index_of(&d.service)?, d.clone())))
        .collect();
    if file.group.order == StartOrder::Sequential
        && i > 0
        && !found.iter().any(|(j, _)| *j == i - 1)
    {
        found.push((
            i - 1,
            Dependency {
                service: file.services[i - 1].name().to_owned(),
                condition: Condition::Ready,
            },
        ));
    }
    found
}

/// Each service's stop level: 0 without dependencies, else one more than its deepest
/// dependency's (a checked file has no cycle; an unchecked one stops growing after `n`
/// rounds).
fn depths(graph: &[Vec<(usize, Dependency)>]) -> Vec<usize> {
    let mut depth = vec![0usize; graph.len()];
    for _ in 0..graph.len() {
        for (i, dependencies) in graph.iter().enumerate() {
            for (j, _) in dependencies {
                depth[i] = depth[i].max(depth[*j] + 1);
            }
        }
    }
    depth
}

/// The life of one service in the stack: wait for its dependencies, supervise it, follow
/// its events until its supervision ends.
async fn run_service(inner: Arc<Inner>, i: usize) {
    let launch = inner.slots[i].progress.borrow().launch;
    if !wait_for_dependencies(&inner, i).await {
        inner.check_all_ended();
        return;
    }
    let slot = &inner.slots[i];
    let handle = supervise(slot.supervisor.clone());
    let mut events = handle.events();
    *lock(&slot.handle) = Some(handle.clone());
    slot.progress.send_modify(|p| {
        p.phase = Phase::Launched;
        p.since = SystemTime::now();
    });
    let outcome = loop {
        tokio::select! {
            biased;
            event = events.next() => match event {
                Some(Ok(event)) => forward(&inner, i, event),
                Some(Err(_lagged)) => continue,
                None => break handle.outcome().await,
            },
            outcome = handle.outcome() => {
                // The events sent before the end are still buffered.
                while let Some(Some(Ok(event))) = events.next().now_or_never() {
                    forward(&inner, i, event);
                }
                break outcome;
            }
        }
    };
    let last_ok = handle
        .status()
        .first()
        .and_then(|m| m.last_exit)
        .is_some_and(|e| e.success());
    slot.progress.send_if_modified(|p| {
        if p.launch != launch {
            return false;
        }
        p.ready = false;
        p.started = false;
        if outcome == Outcome::Completed && last_ok {
            p.completed_ok = true;
        }
        if p.phase != Phase::Held {
            p.phase = Phase::Ended(outcome.clone());
        }
        p.since = SystemTime::now();
        true
    });
    if let Outcome::StartFailed { .. } = outcome {
        if !*inner.started_up.borrow() {
            let inner = inner.clone();
            tokio::spawn(async move { inner.stop_all(outcome).await });
            return;
        }
    }
    inner.check_started_up();
    inner.check_all_ended();
}

/// Pass a service's event on, then act on it: what the stack does because of it (a
/// strategy restart, giving up) comes after it in the stream.
fn forward(inner: &Arc<Inner>, i: usize, event: Event) {
    inner.emit(StackEvent::Service(event.clone()));
    inner.on_event(i, &event);
}

/// Wait until every dependency of service `i` reached its condition. `false` (and the
/// service marked blocked) if one cannot any more, or the set is stopping.
async fn wait_for_dependencies(inner: &Arc<Inner>, i: usize) -> bool {
    let slot = &inner.slots[i];
    let dependencies = &slot.dependencies;
    let pending: Vec<&Dependency> = dependencies
        .iter()
        .filter(|(j, d)| !inner.slots[*j].progress.borrow().reached(d.condition))
        .map(|(_, d)| d)
        .collect();
    if !pending.is_empty() {
        slot.progress.send_modify(|p| {
            p.phase = Phase::Waiting(
                pending
                    .iter()
                    .map(|d| format!("{} {}", d.service, d.condition))
                    .collect(),
            );
        });
        inner.emit(StackEvent::Waiting {
            service: inner.name(i).to_owned(),
            on: pending.into_iter().cloned().collect(),
            at: SystemTime::now(),
        });
    }
    let mut stopping = inner.stopping.subscribe();
    for (j, dependency) in dependencies {
        let mut progress = inner.slots[*j].progress.subscribe();
        let condition = dependency.condition;
        let reached = tokio::select! {
            seen = progress.wait_for(|p| p.reached(condition) || p.cannot_reach(condition)) => {
                seen.map(|p| p.reached(condition)).unwrap_or(false)
            }
            _ = stopping.wait_for(|s| *s) => {
                slot.progress.send_modify(|p| p.phase = Phase::Ended(Outcome::Stopped));
                return false;
            }
        };
        if !reached {
            slot.progress
                .send_modify(|p| p.phase = Phase::Blocked(dependency.clone()));
            inner.emit(StackEvent::DependencyFailed {
                service: inner.name(i).to_owned(),
                dependency: dependency.clone(),
                at: SystemTime::now(),
            });
            return false;
        }
    }
    !*inner.stopping.borrow()
}
