//! The status snapshot: one row per member of a supervision tree, in start order, kept by
//! the same transitions that emit the events, so the two always agree.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::handle::ExitStatus;
use crate::supervision::{ResourceUsage, StartError};

/// Where a member of a supervision tree is in its life. `Display` and serde give the
/// snake_case name (`"running"`), as `running-process status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MemberState {
    /// Not started yet, and about to be: its dependencies are being looked at.
    Idle,
    /// Waiting for its dependencies to reach their conditions
    /// ([`MemberStatus::detail`] says which).
    Waiting,
    /// Not started because a dependency can no longer reach its condition without a
    /// request from outside (it finished, failed, was stopped or removed, or is blocked
    /// itself; [`MemberStatus::detail`] says which). Starts by itself once that changes.
    Blocked,
    /// Started on demand: no backend runs, the supervisor holds its listeners and starts
    /// one when a client connects. Counts as up for
    /// [`ServiceHandle::ready`](crate::supervision::ServiceHandle::ready) and as ready for
    /// its dependants: clients can connect.
    Listening,
    /// Being started (adopt or spawn, then readiness).
    Starting,
    /// Running and ready (a group: every member of it started).
    Running,
    /// Waiting for its restart delay to end ([`MemberStatus::restart_at`] says until when).
    Backoff,
    /// Being stopped.
    Stopping,
    /// Stopped on request (its group's stop, or
    /// [`ServiceHandle::stop_member`](crate::supervision::ServiceHandle::stop_member)) and
    /// kept down until started again.
    Stopped,
    /// Ended for good: its restart kind does not restart it (or, temporary, a sibling's
    /// termination ended it).
    Finished,
    /// Could not start in a way retrying cannot fix (a permanent
    /// [`StartError`](crate::supervision::StartError)) after the group's start-up; kept
    /// down until started again.
    Failed,
}

impl MemberState {
    /// Its name, as `Display` and serde give it.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberState::Idle => "idle",
            MemberState::Waiting => "waiting",
            MemberState::Blocked => "blocked",
            MemberState::Listening => "listening",
            MemberState::Starting => "starting",
            MemberState::Running => "running",
            MemberState::Backoff => "backoff",
            MemberState::Stopping => "stopping",
            MemberState::Stopped => "stopped",
            MemberState::Finished => "finished",
            MemberState::Failed => "failed",
        }
    }

    /// Ready for clients: running, or listening on its sockets.
    pub fn is_ready(&self) -> bool {
        matches!(self, MemberState::Running | MemberState::Listening)
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a member's health check last said.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthView {
    /// It has no health check, or none has run on its current backend yet.
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

/// How a member's process tree is tracked: what its stop and an unexpected exit of its
/// main process kill, and whose sockets its readiness believes. Serialized as
/// `{"kind": "cgroup", "path": ...}`, `{"kind": "process_group", "reason": ...}` or
/// `{"kind": "main_process"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TreeTracking {
    /// Its own cgroup (Linux, cgroup v2): every process it starts, wherever it goes.
    Cgroup {
        /// The cgroup's directory.
        path: String,
    },
    /// The process group its main process leads: a process that calls `setsid()` leaves
    /// it unseen.
    ProcessGroup {
        /// Why not a cgroup (the spec says so, it outlives the supervisor, or the machine
        /// gives the supervisor no cgroup v2: the documented fallback).
        reason: String,
    },
    /// Only the main process (Windows).
    MainProcess,
}

impl std::fmt::Display for TreeTracking {
    /// `cgroup`, `process group (why)` or `main process`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeTracking::Cgroup { .. } => f.write_str("cgroup"),
            TreeTracking::ProcessGroup { reason } => write!(f, "process group ({reason})"),
            TreeTracking::MainProcess => f.write_str("main process"),
        }
    }
}

/// One member of a supervision tree as it is now ([`ServiceHandle::status`]): the row of
/// `running-process status`, and its `--json` form through serde.
///
/// [`ServiceHandle::status`]: crate::supervision::ServiceHandle::status
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemberStatus {
    /// Its name (`group/child` inside groups, unless the group said
    /// [`prefix_names(false)`](crate::supervision::GroupSpec::prefix_names); the service
    /// name for a single service).
    pub name: String,
    /// Its state.
    pub state: MemberState,
    /// The PID of its backend while one runs (`None` for a group).
    pub pid: Option<u32>,
    /// When it entered this state (wall clock; `since_unix_ms` in serde formats).
    #[serde(rename = "since_unix_ms", with = "crate::serde_util::unix_ms")]
    pub since: SystemTime,
    /// In [`MemberState::Backoff`]: when it starts again (wall clock).
    #[serde(
        rename = "restart_at_unix_ms",
        with = "crate::serde_util::unix_ms_option",
        default
    )]
    pub restart_at: Option<SystemTime>,
    /// Restarts scheduled for it by its policy or its group's strategy since supervision
    /// began (manual restarts are not counted).
    pub restarts: u32,
    /// How its last backend exited, if one did.
    pub last_exit: Option<ExitStatus>,
    /// What its health check last said.
    #[serde(default)]
    pub health: HealthView,
    /// On one line: what it waits for, what blocks it, or why its last start failed.
    pub detail: Option<String>,
    /// What its backend used when last sampled ([`ServiceHandle::sample_usage`]); `None`
    /// before the first sample, while no backend runs, and where nothing can be read.
    ///
    /// [`ServiceHandle::sample_usage`]: crate::supervision::ServiceHandle::sample_usage
    #[serde(default)]
    pub usage: Option<ResourceUsage>,
    /// Why its last start failed, if one did (not in serde formats: see
    /// `last_start_error_chain`).
    #[serde(skip)]
    pub last_start_error: Option<Arc<StartError>>,
    /// The same error with every cause
    /// ([`Chain`](crate::report::Chain): `cannot create a cgroup ...: Too many open
    /// files (os error 24)`), kept after later starts succeed; `last_start_error` in serde
    /// formats.
    #[serde(rename = "last_start_error", default)]
    pub last_start_error_chain: Option<String>,
    /// How its process tree is tracked, as its supervisor reported at its last start
    /// ([`SpawnContext::tree_tracking`](crate::supervision::SpawnContext::tree_tracking);
    /// `None` before one, or for a supervisor that does not say).
    #[serde(default)]
    pub tree: Option<TreeTracking>,
}

impl MemberStatus {
    pub(crate) fn new(name: String) -> Self {
        MemberStatus {
            name,
            state: MemberState::Idle,
            pid: None,
            since: SystemTime::now(),
            restart_at: None,
            restarts: 0,
            last_exit: None,
            health: HealthView::Unknown,
            detail: None,
            usage: None,
            last_start_error: None,
            last_start_error_chain: None,
            tree: None,
        }
    }

    /// Ready for clients (see [`MemberState::is_ready`]).
    pub fn is_ready(&self) -> bool {
        self.state.is_ready()
    }
}

/// The rows of a whole tree, shared by its groups. Nested groups insert their members
/// right after their own row, so the order is the start order, depth first.
#[derive(Debug, Default)]
pub(crate) struct StatusBoard {
    rows: Mutex<Vec<MemberStatus>>,
}

impl StatusBoard {
    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<MemberStatus>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add rows for `names` after the row `after` (or at the end), skipping names that
    /// already have one (a nested group started again keeps its rows).
    pub(crate) fn register(&self, after: Option<&str>, names: &[String]) {
        let mut rows = self.rows();
        let mut at = after
            .and_then(|parent| rows.iter().position(|r| r.name == parent))
            .map_or(rows.len(), |i| {
                // After the parent and the rows already nested under it.
                let prefix = format!("{}/", rows[i].name);
                i + 1
                    + rows[i + 1..]
                        .iter()
                        .take_while(|r| r.name.starts_with(&prefix))
                        .count()
            });
        for name in names {
            if rows.iter().any(|r| &r.name == name) {
                continue;
            }
            rows.insert(at, MemberStatus::new(name.clone()));
            at += 1;
        }
    }

    /// Change the row of `name`.
    pub(crate) fn update(&self, name: &str, change: impl FnOnce(&mut MemberStatus)) {
        if let Some(row) = self.rows().iter_mut().find(|r| r.name == name) {
            change(row);
        }
    }

    /// Drop the row of `name` and the rows nested under it (a removed member).
    pub(crate) fn remove(&self, name: &str) {
        let nested = format!("{name}/");
        self.rows()
            .retain(|r| r.name != name && !r.name.starts_with(&nested));
    }

    /// Give the row of `from` (and the rows nested under it) the name `to`.
    pub(crate) fn rename(&self, from: &str, to: &str) {
        let nested = format!("{from}/");
        for row in self.rows().iter_mut() {
            if row.name == from {
                row.name = to.to_owned();
            } else if let Some(rest) = row.name.strip_prefix(&nested) {
                row.name = format!("{to}/{rest}");
            }
        }
    }

    /// The rows under `prefix` (`None`: all), in order.
    pub(crate) fn snapshot(&self, prefix: Option<&str>) -> Vec<MemberStatus> {
        let rows = self.rows();
        match prefix {
            None => rows.clone(),
            Some(prefix) => {
                let nested = format!("{prefix}/");
                rows.iter()
                    .filter(|r| r.name.starts_with(&nested))
                    .cloned()
                    .collect()
            }
        }
    }

    /// The names in order (to order the running backends).
    pub(crate) fn names(&self) -> Vec<String> {
        self.rows().iter().map(|r| r.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_rows_follow_their_group_in_start_order() {
        let board = StatusBoard::default();
        board.register(
            None,
            &["app/db".into(), "app/web".into(), "app/jobs".into()],
        );
        board.register(Some("app/web"), &["app/web/a".into(), "app/web/b".into()]);
        board.register(Some("app/web"), &["app/web/a".into(), "app/web/b".into()]);
        assert_eq!(
            board.names(),
            ["app/db", "app/web", "app/web/a", "app/web/b", "app/jobs"]
        );
        assert_eq!(board.snapshot(Some("app/web")).len(), 2);
    }
}
