//! What a [`Stack`](super::Stack) reports: [`StackEvent`]s and [`ServiceStatus`] rows.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::file::Dependency;
use crate::handle::ExitStatus;
use crate::supervision::event::{one_line, TimeOfDay};
use crate::supervision::{Event, IntensityExceeded};

/// Something that happened in a [`Stack`](super::Stack): a service's own [`Event`], or a
/// step of the set's own work (dependencies, strategy, intensity).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StackEvent {
    /// A service's event.
    Service(Event),
    /// A service waits for its dependencies before it starts.
    Waiting {
        /// The service.
        service: String,
        /// What it waits for.
        on: Vec<Dependency>,
        /// When.
        at: SystemTime,
    },
    /// A service is not started: a dependency ended before it reached its condition.
    DependencyFailed {
        /// The service.
        service: String,
        /// The dependency, and the condition it did not reach.
        dependency: Dependency,
        /// When.
        at: SystemTime,
    },
    /// The set's strategy restarts `services` because `cause` restarted (once it is ready
    /// again).
    StrategyRestart {
        /// The service that restarted.
        cause: String,
        /// The services restarted with it.
        services: Vec<String>,
        /// When.
        at: SystemTime,
    },
    /// Every service is ready (or completed successfully): the set's start-up is over.
    Ready {
        /// How long it took since [`Stack::start`](super::Stack::start).
        took: std::time::Duration,
        /// When.
        at: SystemTime,
    },
    /// The set's restart intensity was exceeded: every service is stopped.
    GaveUp {
        /// The limit.
        reason: IntensityExceeded,
        /// When.
        at: SystemTime,
    },
}

impl StackEvent {
    /// The service it is about (`None` for the set's own events).
    pub fn service(&self) -> Option<&str> {
        match self {
            StackEvent::Service(event) => Some(&event.service),
            StackEvent::Waiting { service, .. } | StackEvent::DependencyFailed { service, .. } => {
                Some(service)
            }
            StackEvent::StrategyRestart { cause, .. } => Some(cause),
            StackEvent::Ready { .. } | StackEvent::GaveUp { .. } => None,
        }
    }
}

impl std::fmt::Display for StackEvent {
    /// One line for people: `HH:MM:SS.mmm service: what`, as [`Event`]'s.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StackEvent::Service(event) => write!(f, "{event}"),
            StackEvent::Waiting { service, on, at } => {
                let on: Vec<String> = on
                    .iter()
                    .map(|d| format!("{} {}", d.service, d.condition))
                    .collect();
                write!(
                    f,
                    "{} {service}: waiting for {}",
                    TimeOfDay(*at),
                    on.join(", ")
                )
            }
            StackEvent::DependencyFailed {
                service,
                dependency,
                at,
            } => write!(
                f,
                "{} {service}: not started: {} ended without becoming {}",
                TimeOfDay(*at),
                dependency.service,
                dependency.condition
            ),
            StackEvent::StrategyRestart {
                cause,
                services,
                at,
            } => write!(
                f,
                "{} {cause}: restarted, so restarting {}",
                TimeOfDay(*at),
                services.join(", ")
            ),
            StackEvent::Ready { took, at } => {
                write!(f, "{} every service is ready ({took:.1?})", TimeOfDay(*at))
            }
            StackEvent::GaveUp { reason, at } => write!(
                f,
                "{} gave up: {}; stopping every service",
                TimeOfDay(*at),
                one_line(&reason.to_string())
            ),
        }
    }
}

/// Where a service of a stack is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServiceState {
    /// Waiting for its dependencies.
    Waiting,
    /// Being started (adopt or spawn, then readiness).
    Starting,
    /// Running and ready.
    Running,
    /// Started on demand: the supervisor holds its sockets and starts it on the next
    /// connection (counts as ready for its dependants).
    Listening,
    /// Waiting for its restart delay to end.
    Backoff,
    /// Being stopped.
    Stopping,
    /// Stopped on request (`Stack::stop_service`); `restart_service` starts it again.
    Stopped,
    /// Ran to completion, not restarted by its policy.
    Completed,
    /// Its supervision ended in failure (start failed, gave up), or a dependency did.
    Failed,
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceState::Waiting => "waiting",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Listening => "listening",
            ServiceState::Backoff => "backoff",
            ServiceState::Stopping => "stopping",
            ServiceState::Stopped => "stopped",
            ServiceState::Completed => "completed",
            ServiceState::Failed => "failed",
        })
    }
}

/// What a health check last said.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthView {
    /// The service has no health check, or none has run yet.
    #[default]
    Unknown,
    /// The last check passed.
    Healthy,
    /// The last check failed.
    Unhealthy {
        /// Why, on one line.
        reason: String,
    },
}

/// One service of a [`Stack`](super::Stack), as it is now: the row of
/// `running-process status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// The service.
    pub name: String,
    /// Where it is.
    pub state: ServiceState,
    /// The PID of its process while one runs.
    pub pid: Option<u32>,
    /// When it entered this state (wall clock; `since_unix_ms` in serde formats).
    #[serde(rename = "since_unix_ms", with = "crate::serde_util::unix_ms")]
    pub since: SystemTime,
    /// Restarts scheduled by its policy (manual and strategy restarts are not counted).
    pub restarts: u32,
    /// How its last process exited, if one did.
    pub last_exit: Option<ExitStatus>,
    /// It passed its readiness check and has not exited since.
    pub ready: bool,
    /// What its health check last said.
    pub health: HealthView,
    /// Why it failed, or what it waits for, on one line.
    pub detail: Option<String>,
}
