//! One child of a group and its state machine. Every change of state goes through
//! [`Child::enter`], which also keeps the status row and the backend registry in step, so
//! the runtime's rules hold by construction: a child is in exactly one state, and a
//! finished child has no backend, no pending restart and no watch task.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::status::MemberState;
use super::Registry;
use crate::handle::{BackendHandle, ExitStatus};
use crate::supervision::event::EventSink;
use crate::supervision::group::MemberKind;
use crate::supervision::policy::{Backoff, BackoffState, RestartKind};
use crate::supervision::{ServiceHandle, StartError, Supervisor};

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

/// A running child: its backend or group, and the task that reports its end.
pub(super) struct Running {
    /// Tells this run's termination report from a stale one.
    pub generation: u64,
    pub started_at: Instant,
    pub active: Active,
    pub watch: AbortHandle,
}

/// The state of one child (see [`MemberState`] for the public view).
pub(super) enum ChildState {
    Idle,
    /// Waiting for demand (start on demand): the task that reports it, and its run.
    Listening {
        generation: u64,
        watch: AbortHandle,
    },
    Starting,
    Running(Running),
    Backoff {
        until: Instant,
    },
    Stopping,
    Finished,
}

impl ChildState {
    fn public(&self) -> MemberState {
        match self {
            ChildState::Idle => MemberState::Idle,
            ChildState::Listening { .. } => MemberState::Listening,
            ChildState::Starting => MemberState::Starting,
            ChildState::Running(_) => MemberState::Running,
            ChildState::Backoff { until } => MemberState::Backoff { restart_at: *until },
            ChildState::Stopping => MemberState::Stopping,
            ChildState::Finished => MemberState::Finished,
        }
    }
}

/// One child of a group: its spec, its restart bookkeeping and its state.
pub(super) struct Child {
    pub sink: EventSink,
    pub kind: MemberKind,
    pub significant: bool,
    pub restart: RestartKind,
    pub backoff: Backoff,
    pub retry_start_up: bool,
    pub backoff_state: BackoffState,
    /// Its supervisor starts it on demand (it said so the last time it was asked): a
    /// clean exit returns it to `Listening`.
    pub on_demand: bool,
    /// A client is waiting: the next start goes ahead without asking for demand again.
    pub activated: bool,
    state: ChildState,
}

impl Child {
    pub fn new(
        sink: EventSink,
        kind: MemberKind,
        significant: bool,
        retry_start_up: bool,
    ) -> Child {
        let policy = match &kind {
            MemberKind::Service(supervisor) => supervisor.restart_policy(),
            MemberKind::Group { policy, .. } => policy.clone(),
        };
        Child {
            sink,
            kind,
            significant,
            restart: policy.kind,
            backoff: policy.backoff,
            retry_start_up: retry_start_up || policy.retry_start_up,
            backoff_state: BackoffState::new(),
            on_demand: false,
            activated: false,
            state: ChildState::Idle,
        }
    }

    /// The member's name (`group/child`).
    pub fn name(&self) -> &str {
        self.sink.service()
    }

    pub fn state(&self) -> &ChildState {
        &self.state
    }

    /// Move to `state`: the one place where a child's state changes. Keeps the status
    /// row (state, pid, since) and the backend registry in step with it, and hands back
    /// the state left, so that a running child's backend or group can be stopped.
    pub fn enter(&mut self, state: ChildState, registry: &Registry) -> ChildState {
        let pid = match &state {
            ChildState::Running(Running {
                active: Active::Backend { backend, .. },
                ..
            }) => Some(backend.pid()),
            _ => None,
        };
        let name = self.name().to_owned();
        match &state {
            ChildState::Running(Running {
                active: Active::Backend { backend, .. },
                ..
            }) => registry.backends.send_modify(|map| {
                map.insert(name.clone(), (**backend).clone());
            }),
            _ => {
                registry
                    .backends
                    .send_if_modified(|map| map.remove(&name).is_some());
            }
        }
        let public = state.public();
        registry.board.update(&name, |row| {
            row.state = public;
            row.pid = pid;
            row.since = SystemTime::now();
        });
        std::mem::replace(&mut self.state, state)
    }

    /// Record facts for the status row that are not a change of state.
    pub fn note_exit(&self, status: ExitStatus, registry: &Registry) {
        registry
            .board
            .update(self.name(), |row| row.last_exit = Some(status));
    }

    pub fn note_start_error(&self, error: &Arc<StartError>, registry: &Registry) {
        registry.board.update(self.name(), |row| {
            row.last_start_error = Some(error.clone())
        });
    }

    pub fn note_restart(&self, registry: &Registry) {
        registry.board.update(self.name(), |row| row.restarts += 1);
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, ChildState::Running(_))
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, ChildState::Finished)
    }

    /// Whether the group's loop should start this child now (idle, or its delay is over).
    pub fn due(&self, now: Instant) -> bool {
        match self.state {
            ChildState::Idle => true,
            ChildState::Backoff { until } => until <= now,
            _ => false,
        }
    }

    /// When a backoff delay ends, if one is pending.
    pub fn wake_at(&self) -> Option<Instant> {
        match self.state {
            ChildState::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// Whether it waits for demand in the run `generation`.
    pub fn is_listening(&self, generation: u64) -> bool {
        matches!(self.state, ChildState::Listening { generation: g, .. } if g == generation)
    }

    /// The generation of the current run, if running.
    pub fn generation(&self) -> Option<u64> {
        match &self.state {
            ChildState::Running(running) => Some(running.generation),
            _ => None,
        }
    }
}
