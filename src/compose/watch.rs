//! Watching a running set's files: when the service file (or one merged over it, its
//! `.env`, an env file) is saved, or the program of a running service is replaced on disk
//! (a rebuild), the file is read again and applied ([`Stack::apply`]). Woken by inotify on
//! Linux (no wake-up while nothing changes); elsewhere the platform's watcher polls.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::select_all;
use futures_util::FutureExt;

use super::apply::{ApplyError, ApplyPlan};
use super::error::FileError;
use super::select::{Selection, UnknownService};
use super::stack::Stack;
use crate::platform::PathWatcher;

/// How long the files must stay quiet after a change before they are read: an editor's
/// save, a build's several writes, come as one apply.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(300);

/// What one round of [`Stack::watch`] came to.
#[derive(Debug)]
#[non_exhaustive]
pub enum WatchReport {
    /// The changed files were applied (a plan that changes nothing is not reported).
    Applied(ApplyPlan),
    /// The edited file is not valid: the running set is untouched.
    Invalid(FileError),
    /// The selection names a service the edited file no longer has.
    Selection(UnknownService),
    /// The apply was refused or failed at a step.
    Failed(ApplyError),
}

impl std::fmt::Display for WatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchReport::Applied(plan) => write!(f, "{}", plan.to_string().trim_end()),
            WatchReport::Invalid(error) => write!(f, "not applied: {error}"),
            WatchReport::Selection(error) => write!(f, "not applied: {error}"),
            WatchReport::Failed(error) => {
                write!(f, "not applied: {}", crate::report::Chain(error))
            }
        }
    }
}

/// A running watch: stops when dropped.
#[derive(Debug)]
pub struct Watch {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stack {
    /// Apply `paths` (merged in order, then `selection`) to this set whenever one of them,
    /// the `.env` beside the first, a service's env file or the program of a running
    /// service changes on disk, after [`WATCH_DEBOUNCE`] of quiet; `report` is told what
    /// each round came to. `adjust` is done to each file read before it is compared
    /// (what the caller did to the file it started the stack with; `|_| {}` for nothing).
    /// Returns once watching: a change made after it is seen. Call within a tokio runtime
    /// (feature `toml`).
    pub async fn watch(
        &self,
        paths: Vec<PathBuf>,
        selection: Selection,
        adjust: impl Fn(&mut super::ServiceFile) + Send + Sync + 'static,
        report: impl Fn(WatchReport) + Send + Sync + 'static,
    ) -> Watch {
        let stack = self.clone();
        let (watching, started) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut round = Round::new(&stack, &paths).await;
            let _ = watching.send(());
            loop {
                // Seen between two rounds (during an apply): no need to wait for it.
                if snapshot(&round.watched).await == round.seen
                    && wait_for_change(&mut round.watchers).await.is_err()
                {
                    tracing::warn!("cannot watch the service files; the watch ends");
                    return;
                }
                let now = snapshot(&round.watched).await;
                // A wake without a change of size or time (a poll, an attribute) is none.
                if now == round.seen {
                    continue;
                }
                if let Some(result) = stack.reread(&paths, &selection, &adjust).await {
                    report(result);
                }
                round = Round::after(&stack, &paths, round.watched, now).await;
            }
        });
        let _ = started.await;
        Watch { task }
    }

    /// The files a change of which is applied.
    fn watched_paths(&self, paths: &[PathBuf]) -> BTreeSet<PathBuf> {
        let mut watched: BTreeSet<PathBuf> = paths.iter().cloned().collect();
        if let Some(first) = paths.first() {
            watched.insert(super::load::base_dir(first).join(super::load::DOTENV_FILE_NAME));
        }
        let file = self.file();
        for service in &file.services {
            watched.extend(service.env_files.iter().cloned());
        }
        for (_, backend) in self.handle().backends() {
            watched.insert(backend.daemon().exe_path.clone());
        }
        watched
    }

    /// Read the files again and apply them; `None` when nothing changed.
    async fn reread(
        &self,
        paths: &[PathBuf],
        selection: &Selection,
        adjust: &(dyn Fn(&mut super::ServiceFile) + Send + Sync),
    ) -> Option<WatchReport> {
        // On the ports the set runs on: an edit does not move a service to a new one.
        let options = super::LoadOptions::default().ports(self.file().ports.clone());
        let edited = match super::ServiceFile::load_with(paths.to_vec(), options).await {
            Ok(file) => file,
            Err(error) => return Some(WatchReport::Invalid(error)),
        };
        let mut edited = match edited.select(selection) {
            Ok(file) => file,
            Err(error) => return Some(WatchReport::Selection(error)),
        };
        adjust(&mut edited);
        match self.plan(&edited).await {
            Ok(plan) if plan.is_empty() => None,
            Ok(_) => Some(match self.apply(edited).await {
                Ok(plan) => WatchReport::Applied(plan),
                Err(error) => WatchReport::Failed(error),
            }),
            Err(error) => Some(WatchReport::Failed(error)),
        }
    }
}

/// What one round of a watch watches, and the state of those files it has dealt with.
struct Round {
    watched: BTreeSet<PathBuf>,
    watchers: Vec<PathWatcher>,
    seen: Vec<Option<(std::time::SystemTime, u64)>>,
}

impl Round {
    /// The first: the files as they are now are the ones running.
    async fn new(stack: &Stack, paths: &[PathBuf]) -> Round {
        let watched = stack.watched_paths(paths);
        // Registered before the snapshot: a change after it wakes the watch.
        let watchers = watchers_for(&watched);
        let seen = snapshot(&watched).await;
        Round {
            watched,
            watchers,
            seen,
        }
    }

    /// The next, after the files as they were (`read`, of `before`) were applied: a change
    /// made while they were applied is still to be dealt with.
    async fn after(
        stack: &Stack,
        paths: &[PathBuf],
        before: BTreeSet<PathBuf>,
        read: Vec<Option<(std::time::SystemTime, u64)>>,
    ) -> Round {
        let mut next = Round::new(stack, paths).await;
        if next.watched == before {
            next.seen = read;
        }
        next
    }
}

fn watchers_for(paths: &BTreeSet<PathBuf>) -> Vec<PathWatcher> {
    // A path whose directory is gone cannot be watched; the others still are.
    paths
        .iter()
        .filter_map(|path| PathWatcher::new(path).ok())
        .collect()
}

/// Each path's size and modification time (`None`: missing), read on the blocking pool.
async fn snapshot(paths: &BTreeSet<PathBuf>) -> Vec<Option<(std::time::SystemTime, u64)>> {
    let paths: Vec<PathBuf> = paths.iter().cloned().collect();
    let read = move || {
        paths
            .iter()
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    };
    tokio::task::spawn_blocking(read).await.unwrap_or_default()
}

/// Wait until one of the watched paths changes, then until they have been quiet for
/// [`WATCH_DEBOUNCE`].
async fn wait_for_change(watchers: &mut [PathWatcher]) -> std::io::Result<()> {
    if watchers.is_empty() {
        return Err(std::io::Error::other("no path can be watched"));
    }
    any_change(watchers).await?;
    loop {
        tokio::select! {
            // A debounce, not a synchronisation: the quiet period is the point.
            _ = tokio::time::sleep(WATCH_DEBOUNCE) => return Ok(()),
            changed = any_change(watchers) => changed?,
        }
    }
}

async fn any_change(watchers: &mut [PathWatcher]) -> std::io::Result<()> {
    let changes = watchers.iter_mut().map(|w| w.changed().boxed());
    select_all(changes).await.0
}
