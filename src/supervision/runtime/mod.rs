//! The supervision runtime: [`supervise`] and [`supervise_group`] start a loop per group
//! (`group_loop.rs`) whose children each follow one explicit state machine (`child.rs`),
//! start as their dependencies allow (`schedule.rs`), in tasks that report to the loop
//! (`tasks.rs`), stop dependants first (`stop.rs`) and can be added, removed, replaced
//! and scaled while the group runs (`membership.rs`); a [`ServiceHandle`] controls it and
//! reads its events and its status (`status.rs`).

mod child;
mod group_loop;
mod membership;
mod sampling;
mod schedule;
mod status;
mod stop;
mod tasks;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::Instrument;

pub use membership::MemberError;
pub use status::{HealthView, MemberState, MemberStatus, TreeTracking};

use super::event::{event_buffer_for, EventSink, EventStream};
use super::group::{AutoShutdown, GroupSpec, GroupSpecError, Member, Outcome};
use super::supervisor::Supervisor;
use crate::handle::BackendHandle;
use group_loop::Group;
use membership::Change;
use status::StatusBoard;

type Backends = BTreeMap<String, BackendHandle>;

/// What the groups of one tree share: the running backends and the status rows.
pub(crate) struct Registry {
    backends: watch::Sender<Backends>,
    board: StatusBoard,
    samplers: sampling::Samplers,
}

/// Supervise one backend: adopt or spawn it, watch it, restart it by its policy.
///
/// Returns at once; supervision runs in a background task until [`ServiceHandle::stop`],
/// until the policy gives up or completes, or until every `ServiceHandle` is dropped (which
/// stops the backend gracefully in the background). If its first start fails, supervision
/// ends with [`Outcome::StartFailed`] (OTP's `start_link`), unless its restart policy says
/// [`retry_start_up`](crate::supervision::RestartPolicy::retry_start_up).
pub fn supervise(supervisor: Arc<dyn Supervisor>) -> ServiceHandle {
    let name = supervisor.name().to_owned();
    let intensity = supervisor.restart_policy().intensity;
    // A group of one whose child is significant: the service's end is the group's end.
    let spec = GroupSpec::new(name)
        .intensity(intensity)
        .auto_shutdown(AutoShutdown::AnySignificant)
        .member_unchecked(supervisor, true);
    start(spec, true, None)
}

/// Supervise a group: children start in order (each once the previous is ready), are
/// restarted by the group's strategy, and stop in reverse order.
///
/// The spec is checked first ([`GroupSpec::validate`]): an invalid one is refused here,
/// before anything starts.
pub fn supervise_group(spec: GroupSpec) -> Result<ServiceHandle, GroupSpecError> {
    spec.validate()?;
    Ok(start(spec, false, None))
}

pub(crate) enum Command {
    Stop,
    Restart(Option<String>),
    Change(Change, oneshot::Sender<Result<bool, MemberError>>),
}

struct Shared {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    registry: Arc<Registry>,
    backends: watch::Receiver<Backends>,
    all_up: watch::Receiver<bool>,
    outcome: watch::Receiver<Option<Outcome>>,
    /// Weak: the stream ends once the runtime (every sender) is gone.
    events: broadcast::WeakSender<super::Event>,
    /// Subscribed before the runtime's task was spawned: the first
    /// [`ServiceHandle::events`] call gets it, so it misses nothing since the start.
    first_events: std::sync::Mutex<Option<broadcast::Receiver<super::Event>>>,
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

    /// The typed event stream. The first call (on any clone) gets every event since
    /// [`supervise`] or [`supervise_group`] returned, even on a multi-threaded runtime
    /// where supervision may already be under way; later calls get the events from the
    /// moment of the call on (what happened before is in [`ServiceHandle::status`]).
    ///
    /// A subscriber that falls more events behind than the tree buffers gets
    /// `Err(Lagged(n))` once and continues with the oldest event still buffered; see
    /// [`EventStream`] for a loop that survives it.
    pub fn events(&self) -> EventStream {
        let first = self
            .shared
            .first_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(receiver) = first {
            return EventStream::new(receiver);
        }
        let receiver = match self.shared.events.upgrade() {
            Some(sender) => sender.subscribe(),
            // Supervision has ended: a stream that ends at once.
            None => broadcast::channel(1).1,
        };
        EventStream::new(receiver)
    }

    /// Every member as it is now, in start order (nested groups' members right after
    /// their group): state, PID, since when, restarts, last exit, last start error. Cheap
    /// (one lock, one copy) and consistent with the event stream: both are written by the
    /// same transitions.
    ///
    /// ```no_run
    /// # async fn demo(service: running_process::supervision::ServiceHandle) {
    /// for member in service.status() {
    ///     println!("{:<12} {:<10} pid {:?} restarts {}", member.name, member.state.to_string(), member.pid, member.restarts);
    /// }
    /// # }
    /// ```
    pub fn status(&self) -> Vec<MemberStatus> {
        self.shared.registry.board.snapshot(None)
    }

    /// Read what every running backend uses now and return the rows, as
    /// [`status`](ServiceHandle::status) does, with [`MemberStatus::usage`] fresh: CPU
    /// time, CPU share since the previous sample (of any caller), memory and its peak,
    /// tasks. The reads run on the blocking pool, all in one trip; [`status`] keeps
    /// returning the figures of the last sample without reading anything. Only backends
    /// whose [`Supervisor::usage_sampler`] gives a sampler have figures (see
    /// [`ResourceUsage`](crate::supervision::ResourceUsage) for where they come from).
    ///
    /// [`status`]: ServiceHandle::status
    /// [`Supervisor::usage_sampler`]: crate::supervision::Supervisor::usage_sampler
    pub async fn sample_usage(&self) -> Vec<MemberStatus> {
        let registry = &self.shared.registry;
        registry.samplers.sample_into(&registry.board).await;
        self.status()
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

    /// Every running backend with its member name, in start order.
    pub fn backends(&self) -> Vec<(String, BackendHandle)> {
        let running = self.shared.backends.borrow().clone();
        let mut ordered: Vec<(String, BackendHandle)> = self
            .shared
            .registry
            .board
            .names()
            .into_iter()
            .filter_map(|name| running.get(&name).cloned().map(|b| (name, b)))
            .collect();
        // Rows are registered before anything runs; anything else goes last, by name.
        for (name, backend) in running {
            if !ordered.iter().any(|(n, _)| *n == name) {
                ordered.push((name, backend));
            }
        }
        ordered
    }

    /// Wait until every member is running and ready; `Err` with the outcome if supervision
    /// ended first ([`Outcome::StartFailed`] when a member could not start).
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

    /// Restart everything now (stop in reverse order, start in order). Every member comes
    /// back, finished ones included, except temporary members that had finished. Manual
    /// restarts do not count towards the restart intensity.
    pub fn restart(&self) {
        let _ = self.shared.commands.send(Command::Restart(None));
    }

    /// Restart one member (its name in the group, or `group/child`; the service name
    /// for a single service) on request, with the members the group's strategy restarts
    /// with it: under rest_for_one its dependants are stopped first, then it, and they
    /// start again as their dependencies allow (one_for_all: every member). A finished
    /// temporary member is not brought back. Not counted towards the intensity.
    pub fn restart_member(&self, name: &str) {
        let _ = self
            .shared
            .commands
            .send(Command::Restart(Some(name.to_owned())));
    }

    /// Carry out a change in the group's loop and wait for its answer.
    async fn change(&self, change: Change) -> Result<bool, MemberError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Change(change, reply))
            .map_err(|_| MemberError::Ended)?;
        answer.await.map_err(|_| MemberError::Ended)?
    }

    /// Add a member to the running group (OTP's `start_child`): checked as
    /// [`GroupSpec::validate`] checks members (a free name, known dependencies, no
    /// cycle), then started as its dependencies allow; in a sequential group it depends
    /// on the last member. Returns once it is accepted: its `Ready` event (or
    /// [`ServiceHandle::status`]) tells when it runs. Its restarts count towards the
    /// group's intensity like any other member's.
    ///
    /// ```no_run
    /// use running_process::supervision::{Condition, Member, ServiceHandle, SharedSupervisor};
    /// # async fn demo(group: ServiceHandle, worker: SharedSupervisor) -> Result<(), Box<dyn std::error::Error>> {
    /// group.add_member(Member::service(worker).depends_on("db", Condition::Ready)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_member(&self, member: Member) -> Result<(), MemberError> {
        self.change(Change::Add(member.spec)).await.map(|_| ())
    }

    /// Replace the spec of the member of the same name: its running instance is stopped
    /// (with the members its group's strategy stops with it, dependants first), the new
    /// one takes its place, and all start again as their dependencies allow. Returns once
    /// the old one has stopped.
    pub async fn replace_member(&self, member: Member) -> Result<(), MemberError> {
        self.change(Change::Replace(member.spec)).await.map(|_| ())
    }

    /// Stop a member and remove it from the group (OTP's `terminate_child` and
    /// `delete_child`). Its dependants follow the strategy: left running under
    /// one_for_one; stopped under rest_for_one and one_for_all, then blocked, since what
    /// they wait for is gone. Returns once it has stopped.
    pub async fn remove_member(&self, name: &str) -> Result<(), MemberError> {
        self.change(Change::Remove(name.to_owned()))
            .await
            .map(|_| ())
    }

    /// Stop a member and keep it down ([`MemberState::Stopped`]) until
    /// [`ServiceHandle::start_member`] (OTP's `terminate_child`). Its dependants follow
    /// the strategy as for [`ServiceHandle::remove_member`], and wait for it. `false` if
    /// there was nothing to stop (a member with replicas scaled to zero).
    pub async fn stop_member(&self, name: &str) -> Result<bool, MemberError> {
        self.change(Change::Stop(name.to_owned())).await
    }

    /// Start a member that is stopped, finished, failed or blocked (OTP's
    /// `restart_child`), as its dependencies allow. `false` if it was running or on its
    /// way already.
    pub async fn start_member(&self, name: &str) -> Result<bool, MemberError> {
        self.change(Change::Start(name.to_owned())).await
    }

    /// Scale a member with replicas ([`Member::replicas`]) to `replicas` instances (zero
    /// included). New instances start as their dependencies allow; when scaling down the
    /// highest-numbered stop first. Instances are named `NAME-1` .. `NAME-N`, or `NAME`
    /// when there is one: instance 1 is renamed between the two, and keeps running.
    /// `false` if it had that many already.
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<bool, MemberError> {
        self.change(Change::Scale(name.to_owned(), replicas)).await
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
/// registry for nested groups.
fn start(spec: GroupSpec, solo: bool, parent: Option<(EventSink, Arc<Registry>)>) -> ServiceHandle {
    // A top-level tree keeps its first subscriber (a nested group's events are its
    // parent's).
    let top = parent.is_none();
    let (sink, registry) = match parent {
        Some(shared) => shared,
        None => {
            let (tx, _) = broadcast::channel(event_buffer_for(spec.service_count()));
            let registry = Arc::new(Registry {
                backends: watch::channel(Backends::new()).0,
                board: StatusBoard::default(),
                samplers: sampling::Samplers::default(),
            });
            (EventSink::new(spec.name.clone(), tx), registry)
        }
    };
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (all_up_tx, all_up) = watch::channel(false);
    let (outcome_tx, outcome) = watch::channel(None);
    let shared = Arc::new(Shared {
        name: sink.service().to_owned(),
        commands,
        backends: registry.backends.subscribe(),
        registry: registry.clone(),
        all_up,
        outcome,
        events: sink.sender().downgrade(),
        first_events: std::sync::Mutex::new(top.then(|| sink.sender().subscribe())),
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
