//! Stopping children: level by level, dependants first, the members of one level
//! together; a running backend through its supervisor's `stop`, a start under way by
//! dropping it (its process is killed and its exit reported), a pending restart by
//! cancelling it.

use std::future::Future;
use std::pin::Pin;

use super::child::{Active, ChildState};
use super::group_loop::Group;
use super::tasks::report_abandoned;
use crate::handle::ExitStatus;
use crate::supervision::error::LastOutput;
use crate::supervision::event::{EventKind, EventSink};

/// The work of one child's stop, run together with its level's others; the exit status
/// of what it stopped, if any.
type StopJob = Pin<Box<dyn Future<Output = Option<ExitStatus>> + Send>>;

impl Group {
    /// Stop every child, dependants first.
    pub(super) async fn stop_all(&mut self) {
        let all: Vec<usize> = (0..self.children.len()).collect();
        self.stop_in_order(&all).await;
        self.retiring.clear();
    }

    /// Stop `members`, dependants first, each level's members together. They are
    /// `Stopped` afterwards (finished, failed and blocked ones are left as they are).
    pub(super) async fn stop_in_order(&mut self, members: &[usize]) {
        for level in self.stop_levels(members) {
            let mut jobs = Vec::new();
            for j in level {
                if let Some((job, loud)) = self.begin_stop(j) {
                    jobs.push(async move { (j, loud, job.await) });
                }
            }
            for (j, loud, status) in futures_util::future::join_all(jobs).await {
                if let Some(status) = status {
                    self.children[j].note_exit(status, &self.registry);
                }
                self.children[j].enter(ChildState::Stopped, &self.registry);
                if loud {
                    self.children[j].sink.emit(EventKind::Stopped);
                }
            }
        }
    }

    /// Begin to stop child `j`: what is left to do, and whether its stop is reported
    /// (`Stopping` now, `Stopped` after; a stop always reads so, except for a child that
    /// had not begun: waiting, idle). `None`: nothing to stop (a blocked child keeps
    /// saying why it never ran).
    fn begin_stop(&mut self, j: usize) -> Option<(StopJob, bool)> {
        let sink = self.children[j].sink.clone();
        let quiet: StopJob = Box::pin(async { None });
        match self.children[j].state() {
            ChildState::Idle | ChildState::Waiting(_) => return Some((quiet, false)),
            ChildState::Running(_) | ChildState::Starting(_) | ChildState::Backoff { .. } => {}
            _ => return None,
        }
        let left = self.children[j].enter(ChildState::Stopping, &self.registry);
        let job: StopJob = match left {
            ChildState::Running(running) => {
                running.watch.abort();
                stop_active(running.active, sink.clone())
            }
            ChildState::Starting(start) => {
                let inner = sink.clone();
                Box::pin(async move {
                    // Dropping the start kills what it spawned; a start that had just
                    // finished left a running backend, stopped like any other.
                    start.task.abort();
                    let _ = start.task.await;
                    let done = start
                        .result
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    match done {
                        Some(Ok(active)) => stop_active(active, inner).await,
                        _ => {
                            report_abandoned(&start.ctx).await;
                            None
                        }
                    }
                })
            }
            _ => quiet,
        };
        // A nested group reports its own stop under the same name.
        let loud = !matches!(
            self.children[j].spec.kind,
            crate::supervision::group::MemberKind::Group { .. }
        );
        if loud {
            sink.emit(EventKind::Stopping);
        }
        Some((job, loud))
    }
}

/// Stop a running backend (graceful, grace period, kill) or nested group.
fn stop_active(active: Active, sink: EventSink) -> StopJob {
    Box::pin(async move {
        match active {
            Active::Backend {
                supervisor,
                backend,
            } => {
                let stopped = supervisor.stop(&backend).await;
                backend.release_exited_child();
                match stopped {
                    Ok(status) => {
                        sink.emit(EventKind::Exited {
                            pid: backend.pid(),
                            status,
                            output: LastOutput::default(),
                        });
                        Some(status)
                    }
                    Err(error) => {
                        tracing::warn!(service = %sink.service(), error = %crate::report::Chain(&error), "stop failed");
                        None
                    }
                }
            }
            Active::Group(handle) => {
                handle.stop().await;
                None
            }
        }
    })
}
