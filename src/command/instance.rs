//! The instance of a [`CommandSupervisor`](super::CommandSupervisor) currently running:
//! its tree, output and sd_notify state, and the slot that holds it between its start,
//! its health checks and its stop.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use super::notify::NotifyEndpoint;
use super::output::OutputTail;
use crate::handle::BackendHandle;
use crate::platform::ProcessTree;
use crate::supervision::LastOutput;

/// How long the output pumps may take to reach EOF once the tree is gone, so the last
/// lines are complete (a process outside the tree may still hold the pipe).
const OUTPUT_DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// What belongs to the instance currently running: its tree, output and notify state.
pub(super) struct Instance {
    /// The main process (its handle keeps it un-reaped, so a process-group kill through
    /// it cannot reach a recycled group id).
    pub main: BackendHandle,
    pub tree: Arc<ProcessTree>,
    pub tail: Option<OutputTail>,
    pub pumps: Vec<JoinHandle<()>>,
    /// The last `WATCHDOG=1`, when the service has an sd_notify socket.
    pub watchdog: Option<watch::Receiver<Instant>>,
    pub tasks: Vec<AbortHandle>,
    /// The spec's `memory_max`, bytes: named when the OOM killer ends a process of it.
    pub memory_max: Option<u64>,
    /// Held so the sd_notify socket lives as long as the instance.
    pub _notify: Option<NotifyEndpoint>,
}

impl Instance {
    /// Wait (bounded) until the output pumps have read everything, then the last lines.
    pub async fn last_output(&mut self) -> LastOutput {
        let pumps = std::mem::take(&mut self.pumps);
        if tokio::time::timeout(OUTPUT_DRAIN_DEADLINE, futures_util::future::join_all(pumps))
            .await
            .is_err()
        {
            tracing::debug!(
                pid = self.main.pid(),
                "output still open after the tree died; last lines may be incomplete"
            );
        }
        self.tail
            .as_ref()
            .map(|tail| LastOutput::new(tail.snapshot()))
            .unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The running instance, if any.
#[derive(Default)]
pub(super) struct Current(Mutex<Option<Instance>>);

impl Current {
    fn lock(&self) -> MutexGuard<'_, Option<Instance>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record the instance that just became ready.
    pub fn set(&self, instance: Instance) {
        *self.lock() = Some(instance);
    }

    /// Take the instance whose main process is `pid`.
    pub fn take(&self, pid: u32) -> Option<Instance> {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|i| i.main.pid() == pid) {
            current.take()
        } else {
            None
        }
    }

    /// Take whatever instance is recorded (one abandoned by its runtime, at a new start).
    pub fn take_any(&self) -> Option<Instance> {
        self.lock().take()
    }

    /// The tree of the instance whose main process is `pid`.
    pub fn tree_of(&self, pid: u32) -> Option<Arc<ProcessTree>> {
        self.lock()
            .as_ref()
            .filter(|i| i.main.pid() == pid)
            .map(|i| i.tree.clone())
    }

    /// SIGKILL the whole tree of the recorded instance, if any, without waiting.
    #[cfg_attr(not(feature = "toml"), allow(dead_code))] // the testing kit's stacks (feature `toml`)
    pub fn kill_now(&self) {
        if let Some(instance) = self.lock().as_ref() {
            instance.tree.kill_all(&instance.main);
        }
    }

    /// When the instance whose main process is `pid` last sent `WATCHDOG=1`.
    pub fn last_beat(&self, pid: u32) -> Option<Instant> {
        self.lock()
            .as_ref()
            .filter(|i| i.main.pid() == pid)
            .and_then(|i| i.watchdog.as_ref().map(|w| *w.borrow()))
    }
}
