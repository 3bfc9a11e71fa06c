//! One child of a group and its state machine. Every change of state goes through
//! [`Child::enter`], which also keeps the status row and the backend registry in step, so
//! the runtime's rules hold by construction: a child is in exactly one state, and a
//! finished child has no backend, no pending restart and no task.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use super::status::{HealthView, MemberState};
use super::Registry;
use crate::handle::{BackendHandle, ExitStatus};
use crate::supervision::dependency::Dependency;
use crate::supervision::event::{one_line, EventSink};
use crate::supervision::group::{MemberKind, MemberSpec};
use crate::supervision::policy::{Backoff, BackoffState, RestartKind};
use crate::supervision::{ServiceHandle, SpawnContext, StartError, Supervisor};

/// What a running child is.
pub(super) enum Active {
    /// A backend and the supervisor that made it.
    Backend {
        supervisor: Arc<dyn Supervisor>,
        backend: Box<BackendHandle>,
    },
    /// A nested group.
    Group(ServiceHandle),
}

/// Where a start task leaves its result: taken by the loop when the task reports, or by a
/// stop that overtook the report (so a backend that just started is never dropped
/// unstopped).
pub(super) type StartSlot = Arc<Mutex<Option<Result<Active, StartError>>>>;

/// A start under way (or, for a member started on demand, waiting for its first client).
pub(super) struct Start {
    /// Tells this run's reports from a stale one's.
    pub generation: u64,
    pub task: JoinHandle<()>,
    pub ctx: SpawnContext,
    pub result: StartSlot,
    pub began: Instant,
    /// Its process has been spawned (the `started` condition).
    pub spawned: bool,
    /// It waits for demand ([`MemberState::Listening`]).
    pub listening: bool,
}

/// A running child: its backend or group, and the task that reports its end.
pub(super) struct Running {
    pub generation: u64,
    pub started_at: Instant,
    pub active: Active,
    pub watch: AbortHandle,
    /// Its health check passed last (the `healthy` condition).
    pub healthy: bool,
}

/// The state of one child (see [`MemberState`] for the public view).
pub(super) enum ChildState {
    Idle,
    /// Waiting for these dependencies.
    Waiting(Vec<Dependency>),
    /// This dependency can no longer reach its condition, for this reason.
    Blocked(Dependency, &'static str),
    Starting(Start),
    Running(Running),
    Backoff {
        until: Instant,
    },
    Stopping,
    Stopped,
    /// Ended for good; `ok` when by an exit with status 0.
    Finished {
        ok: bool,
    },
    Failed,
}

impl ChildState {
    fn public(&self) -> MemberState {
        match self {
            ChildState::Idle => MemberState::Idle,
            ChildState::Waiting(_) => MemberState::Waiting,
            ChildState::Blocked(..) => MemberState::Blocked,
            ChildState::Starting(start) if start.listening => MemberState::Listening,
            ChildState::Starting(_) => MemberState::Starting,
            ChildState::Running(_) => MemberState::Running,
            ChildState::Backoff { .. } => MemberState::Backoff,
            ChildState::Stopping => MemberState::Stopping,
            ChildState::Stopped => MemberState::Stopped,
            ChildState::Finished { .. } => MemberState::Finished,
            ChildState::Failed => MemberState::Failed,
        }
    }
}

/// A dependency of a child, as the runtime holds it.
#[derive(Clone, PartialEq)]
pub(super) struct Dep {
    pub dependency: Dependency,
    /// From a sequential group's order, not the spec: met once the member before has
    /// settled (started and returned, finished, failed, stopped), as OTP starts the next
    /// child once `start_link` of the one before has returned, whatever came of it.
    pub implicit: bool,
}

/// One child of a group: its spec, its restart bookkeeping and its state.
pub(super) struct Child {
    pub sink: EventSink,
    /// Its name within the group (the name dependencies use).
    pub local: String,
    /// The spec it was made from (an instance: its template's, with this kind).
    pub spec: MemberSpec,
    /// The template it is an instance of, and its instance number.
    pub template: Option<(String, u32)>,
    pub deps: Vec<Dep>,
    pub restart: RestartKind,
    pub backoff: Backoff,
    pub retry_start_up: bool,
    pub backoff_state: BackoffState,
    /// Its supervisor starts it on demand (it said so the last time it was asked): a
    /// clean exit returns it to `Listening`.
    pub on_demand: bool,
    state: ChildState,
}

impl Child {
    pub fn new(
        sink: EventSink,
        local: String,
        spec: MemberSpec,
        deps: Vec<Dep>,
        retry_start_up: bool,
    ) -> Child {
        let policy = match &spec.kind {
            MemberKind::Service(supervisor) => supervisor.restart_policy(),
            MemberKind::Group { policy, .. } => policy.clone(),
            MemberKind::Replicas { make, .. } => make(1).restart_policy(),
        };
        Child {
            sink,
            local,
            spec,
            template: None,
            deps,
            restart: policy.kind,
            backoff: policy.backoff,
            retry_start_up: retry_start_up || policy.retry_start_up,
            backoff_state: BackoffState::new(),
            on_demand: false,
            state: ChildState::Idle,
        }
    }

    /// The member's full name (`group/child`): its status row, its events.
    pub fn name(&self) -> &str {
        self.sink.service()
    }

    pub fn state(&self) -> &ChildState {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut ChildState {
        &mut self.state
    }

    /// Move to `state`: the one place where a child's state changes. Keeps the status
    /// row (state, pid, since, detail) and the backend registry in step with it, and
    /// hands back the state left, so that a running child's backend or group can be
    /// stopped.
    pub fn enter(&mut self, state: ChildState, registry: &Registry) -> ChildState {
        let left = std::mem::replace(&mut self.state, state);
        self.sync(registry, true);
        left
    }

    /// Write the row (and the registry) from the current state; `moved`: it is a new
    /// state, not a change within one (a start beginning to listen).
    pub fn sync(&self, registry: &Registry, moved: bool) {
        let name = self.name().to_owned();
        let (backend, supervisor) = match &self.state {
            ChildState::Running(Running {
                active:
                    Active::Backend {
                        backend,
                        supervisor,
                    },
                ..
            }) => (Some((**backend).clone()), Some(supervisor)),
            _ => (None, None),
        };
        let pid = backend.as_ref().map(BackendHandle::pid);
        match backend {
            Some(backend) => {
                if let Some(supervisor) = supervisor {
                    registry.samplers.track(&name, &backend, &**supervisor);
                }
                registry.backends.send_modify(|map| {
                    map.insert(name.clone(), backend);
                });
            }
            None => {
                registry.samplers.forget(&name);
                registry
                    .backends
                    .send_if_modified(|map| map.remove(&name).is_some());
            }
        }
        let public = self.state.public();
        let restart_at = match &self.state {
            ChildState::Backoff { until } => {
                Some(SystemTime::now() + until.saturating_duration_since(Instant::now()))
            }
            _ => None,
        };
        let detail = match &self.state {
            ChildState::Waiting(on) => Some(Some(format!(
                "waiting for {}",
                on.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            ChildState::Blocked(dependency, reason) => Some(Some(format!(
                "{} {reason} without becoming {}",
                dependency.service, dependency.condition
            ))),
            ChildState::Running(_) | ChildState::Starting(_) => Some(None),
            // Others keep what the last start error said.
            _ => None,
        };
        let new_run = matches!(self.state, ChildState::Running(_)) && moved;
        registry.board.update(&name, |row| {
            if row.pid != pid {
                row.usage = None;
            }
            row.state = public;
            row.pid = pid;
            row.restart_at = restart_at;
            if moved {
                row.since = SystemTime::now();
            }
            if let Some(detail) = detail {
                row.detail = detail;
            }
            if new_run {
                row.health = HealthView::Unknown;
            }
        });
    }

    /// Record facts for the status row that are not a change of state.
    pub fn note_exit(&self, status: ExitStatus, registry: &Registry) {
        registry
            .board
            .update(self.name(), |row| row.last_exit = Some(status));
    }

    pub fn note_start_error(&self, error: &Arc<StartError>, registry: &Registry) {
        let chain = crate::report::Chain(&**error).to_string();
        let detail = one_line(&chain);
        registry.board.update(self.name(), |row| {
            row.last_start_error = Some(error.clone());
            row.last_start_error_chain = Some(chain);
            row.detail = Some(detail);
        });
    }

    pub fn note_restart(&self, registry: &Registry) {
        registry.board.update(self.name(), |row| row.restarts += 1);
    }

    /// Give the child a new full name (an instance renamed when its template is scaled
    /// between one and more): its row and its registry entry follow.
    pub fn rename(&mut self, local: String, sink: EventSink, registry: &Registry) {
        let old = self.name().to_owned();
        registry.board.rename(&old, sink.service());
        registry.samplers.rename(&old, sink.service());
        registry
            .backends
            .send_if_modified(|map| match map.remove(&old) {
                Some(backend) => {
                    map.insert(sink.service().to_owned(), backend);
                    true
                }
                None => false,
            });
        self.local = local;
        self.sink = sink;
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, ChildState::Running(_))
    }

    /// It can be started by the scheduler (its dependencies decide when).
    pub fn is_pending(&self) -> bool {
        matches!(
            self.state,
            ChildState::Idle | ChildState::Waiting(_) | ChildState::Blocked(..)
        )
    }

    /// It has ended and nothing in the group will start it again by itself.
    pub fn has_ended(&self) -> bool {
        matches!(self.state, ChildState::Finished { .. } | ChildState::Failed)
    }

    /// When a backoff delay ends, if one is pending.
    pub fn wake_at(&self) -> Option<Instant> {
        match self.state {
            ChildState::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// The generation of the current start or run.
    pub fn generation(&self) -> Option<u64> {
        match &self.state {
            ChildState::Starting(start) => Some(start.generation),
            ChildState::Running(running) => Some(running.generation),
            _ => None,
        }
    }
}
