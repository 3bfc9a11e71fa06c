//! The status snapshot: one row per member of a supervision tree, in start order, kept by
//! the same transitions that emit the events, so the two always agree.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::handle::ExitStatus;
use crate::supervision::StartError;

/// Where a member of a supervision tree is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberState {
    /// Not started: before the group starts it, or stopped by a manual restart or a
    /// sibling's termination and about to start again.
    Idle,
    /// Started on demand: no backend runs, the supervisor holds its listeners and starts
    /// one when a client connects. Counts as up for
    /// [`ServiceHandle::ready`](crate::supervision::ServiceHandle::ready): clients can
    /// connect.
    Listening,
    /// Being started (adopt or spawn, then readiness).
    Starting,
    /// Running and ready (a group: every member of it started).
    Running,
    /// Waiting for its restart delay to end.
    Backoff {
        /// When it starts again.
        restart_at: tokio::time::Instant,
    },
    /// Being stopped.
    Stopping,
    /// Ended for good: its restart kind does not restart it (or, temporary, a sibling's
    /// termination ended it).
    Finished,
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemberState::Idle => f.write_str("idle"),
            MemberState::Listening => f.write_str("listening"),
            MemberState::Starting => f.write_str("starting"),
            MemberState::Running => f.write_str("running"),
            MemberState::Backoff { restart_at } => {
                let left = restart_at.saturating_duration_since(tokio::time::Instant::now());
                write!(f, "backoff ({left:.1?} left)")
            }
            MemberState::Stopping => f.write_str("stopping"),
            MemberState::Finished => f.write_str("finished"),
        }
    }
}

/// One member of a supervision tree as it is now ([`ServiceHandle::status`]).
///
/// [`ServiceHandle::status`]: crate::supervision::ServiceHandle::status
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemberStatus {
    /// Its name (`group/child` inside groups; the service name for a single service).
    pub name: String,
    /// Its state.
    pub state: MemberState,
    /// The PID of its backend while one runs (`None` for a group).
    pub pid: Option<u32>,
    /// When it entered this state (wall clock).
    pub since: SystemTime,
    /// Restarts scheduled for it by its policy or its group's strategy since supervision
    /// began (manual restarts are not counted).
    pub restarts: u32,
    /// How its last backend exited, if one did.
    pub last_exit: Option<ExitStatus>,
    /// Why its last start failed, if one did.
    pub last_start_error: Option<Arc<StartError>>,
}

impl MemberStatus {
    pub(crate) fn new(name: String) -> Self {
        MemberStatus {
            name,
            state: MemberState::Idle,
            pid: None,
            since: SystemTime::now(),
            restarts: 0,
            last_exit: None,
            last_start_error: None,
        }
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
