//! Liveness of a verified process as a stream of changes, driven by the kernel.
//!
//! One `Monitor` per process (per `(pid, start_time)`), shared by every handle and every
//! subscriber: one kernel registration, one task that sleeps until the kernel says the
//! process exited. Nothing polls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures_util::stream::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::signals::ProcessControl;
use crate::identity::Endpoint;
pub use crate::platform::ExitStatus;
use crate::platform::{ExitWatcher, ProcessHandle};
use crate::protocol::listener::remove_stale_socket;

/// The liveness of a backend process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Liveness {
    /// The process is running.
    Alive,
    /// The process has exited (confirmed, not guessed).
    Exited(ExitStatus),
}

impl Liveness {
    /// `true` for [`Liveness::Alive`].
    pub fn is_alive(&self) -> bool {
        matches!(self, Liveness::Alive)
    }
}

/// Watches one process. Dropping the last reference stops the watch task.
#[derive(Debug)]
pub(crate) struct Monitor {
    /// Where signals go: the kernel handle (or a fake's script).
    control: Arc<dyn ProcessControl>,
    /// Our own child, when we spawned the process. Held un-reaped while any handle exists,
    /// so its PID (and process group id) cannot be recycled under us; the exit status is
    /// read without reaping. Dropping it hands the reaping to tokio.
    child: Mutex<Option<crate::platform::Child>>,
    state: watch::Receiver<Liveness>,
    /// The task waiting for the kernel's exit notification (none for a fake).
    task: Option<AbortHandle>,
}

type Key = (u32, u64);

fn registry() -> &'static Mutex<HashMap<Key, Weak<Monitor>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Key, Weak<Monitor>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl Monitor {
    /// The monitor of the process `handle` pins (identified by `pid` and `start_time`):
    /// the existing one if another handle already watches it, else a new one, which takes
    /// over `handle`. Must run inside a tokio runtime.
    pub(crate) fn for_process(
        handle: ProcessHandle,
        start_time: u64,
        endpoint: Endpoint,
        #[cfg_attr(not(unix), allow(dead_code))] child: Option<crate::platform::Child>,
    ) -> std::io::Result<Arc<Monitor>> {
        let key = (handle.pid(), start_time);
        let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            // Reuse only a monitor that is still watching. A finished task belonged to a
            // runtime that is gone, and a recorded exit for a process just verified alive
            // means the key was reused (same PID within one start-time tick).
            let watching = existing.task.as_ref().is_some_and(|t| !t.is_finished());
            if watching && existing.current().is_alive() {
                return Ok(existing);
            }
        }
        map.retain(|_, weak| weak.strong_count() > 0);
        let pid = handle.pid();
        let watcher = Arc::new(handle.into_watcher()?);
        let (tx, state) = watch::channel(Liveness::Alive);
        let task = tokio::spawn(watch_exit(pid, watcher.clone(), tx, endpoint)).abort_handle();
        let monitor = Arc::new(Monitor {
            control: watcher,
            child: Mutex::new(child),
            state,
            task: Some(task),
        });
        map.insert(key, Arc::downgrade(&monitor));
        Ok(monitor)
    }

    /// A monitor whose liveness is published by `control`'s owner instead of the kernel:
    /// the testing kit's fake backends. Not registered (nothing to share).
    #[cfg(feature = "test-util")]
    pub(crate) fn scripted(
        control: Arc<dyn ProcessControl>,
        state: watch::Receiver<Liveness>,
    ) -> Arc<Monitor> {
        Arc::new(Monitor {
            control,
            child: Mutex::new(None),
            state,
            task: None,
        })
    }

    pub(crate) fn current(&self) -> Liveness {
        *self.state.borrow()
    }

    /// Signal the process group our un-reaped child leads, holding the child for the
    /// duration so it cannot be reaped (and its group id reused) in between. `None` when
    /// this monitor holds no child (not ours, or already released).
    #[cfg(unix)]
    pub(crate) fn signal_child_group(&self, pid: u32, signal: i32) -> Option<std::io::Result<()>> {
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        child
            .as_ref()
            .map(|_| crate::platform::signal_process_group(pid, signal))
    }

    /// Let an exited child be reaped now, although handles to it remain: once its exit is
    /// recorded and whatever it left is cleaned up, a zombie only misleads (a daemon that
    /// checks its old PID with `kill(pid, 0)`, as postgres does with `postmaster.pid`,
    /// would think itself still running). Afterwards process-group signals are refused,
    /// since the group id may be reused. Does nothing while the process runs.
    pub(crate) fn release_exited_child(&self) {
        if self.current().is_alive() {
            return;
        }
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(child);
    }

    pub(crate) fn control(&self) -> &dyn ProcessControl {
        &*self.control
    }

    /// Resolves with the exit status once the exit is confirmed.
    pub(crate) async fn exited(&self) -> ExitStatus {
        let mut state = self.state.clone();
        let outcome = state.wait_for(|s| !s.is_alive()).await.map(|s| *s);
        match outcome {
            Ok(Liveness::Exited(status)) => status,
            // The watch task is gone without a verdict (its runtime shut down).
            _ => ExitStatus::Unknown,
        }
    }

    /// The state at the time of this call first, then each change; ends after the exit.
    pub(crate) fn stream(&self) -> impl Stream<Item = Liveness> + Send + Unpin + 'static {
        let mut state = self.state.clone();
        let initial = *state.borrow_and_update();
        let rest =
            futures_util::stream::unfold(initial.is_alive().then_some(state), |state| async move {
                let mut state = state?;
                state.changed().await.ok()?;
                let current = *state.borrow_and_update();
                Some((current, current.is_alive().then_some(state)))
            });
        Box::pin(futures_util::stream::once(std::future::ready(initial)).chain(rest))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn watch_exit(
    pid: u32,
    watcher: Arc<ExitWatcher>,
    tx: watch::Sender<Liveness>,
    endpoint: Endpoint,
) {
    let status = watcher.wait().await;
    tracing::debug!(pid, %status, "backend exited");
    // Clean up before publishing, so whoever sees the exit also sees the socket gone.
    crate::blocking::blocking(move || remove_stale_socket(&endpoint)).await;
    tx.send_replace(Liveness::Exited(status));
}
