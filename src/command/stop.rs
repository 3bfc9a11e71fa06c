//! Stopping an instance of a [`CommandSupervisor`](super::CommandSupervisor) per its [`KillMode`]: the graceful
//! signal (or shutdown request), the grace period, SIGKILL to what is left of the tree,
//! and the wait until the tree is empty; the same clean-up after an unexpected exit of the
//! main process; and the guard that kills a start abandoned before it was ready.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::instance::{Current, Instance};
use super::spec::{CommandSpec, KillMode};
use crate::blocking::blocking;
use crate::handle::{BackendHandle, BackendHandleError, ExitStatus};
use crate::platform::{ProcessTree, TreeLeader};
use crate::supervision::{LastOutput, OutOfMemory};

/// How long a dead main process's tree may take to disappear after `cgroup.kill` (or the
/// group's SIGKILL) before the supervisor goes on without waiting further.
const TREE_KILL_DEADLINE: Duration = Duration::from_secs(10);

/// The spec's stop, per [`KillMode`]: the graceful signal (or socket request) to the
/// tree or the main process, the grace period for the main process and then the rest
/// to exit, then SIGKILL to whatever is left, and wait until the tree is empty.
pub(super) async fn stop(
    spec: &CommandSpec,
    current: &Current,
    backend: &BackendHandle,
) -> Result<ExitStatus, BackendHandleError> {
    let stop = &spec.stop;
    let tree = current.tree_of(backend.pid());
    let deadline = Instant::now() + stop.grace;
    if backend.is_alive() {
        ask_to_stop(spec, backend, tree.clone()).await;
    }
    let status = backend
        .exit_or_kill(deadline, || match (&tree, stop.kill_mode) {
            (Some(tree), KillMode::ControlGroup | KillMode::Mixed) => {
                tree.kill_all(backend);
                Ok(())
            }
            _ => backend.force_kill(),
        })
        .await?;
    if let Some(mut instance) = current.take(backend.pid()) {
        if stop.kill_mode != KillMode::Process {
            // The rest of the tree gets what is left of the grace period (systemd's
            // `mixed` sends it nothing gentler), then SIGKILL.
            let remaining = deadline.saturating_duration_since(Instant::now());
            if stop.kill_mode == KillMode::Mixed
                || !instance.tree.wait_empty(backend.pid(), remaining).await
            {
                kill_rest(&instance.tree, backend).await;
            }
        }
        let _ = instance.last_output().await;
        retire(instance);
    }
    Ok(status)
}

/// The graceful part of a stop: the shutdown request over the socket (when the spec
/// asks for it, or where there are no signals), else the stop signal; a failure is
/// logged, and the grace period then ends in a kill.
async fn ask_to_stop(spec: &CommandSpec, backend: &BackendHandle, tree: Option<Arc<ProcessTree>>) {
    let stop = &spec.stop;
    let asked = match stop.signal.number().filter(|_| !stop.request) {
        Some(signal) => signal_graceful(stop.kill_mode, backend, tree, signal).await,
        None => backend
            .request_shutdown(stop.grace)
            .await
            .map_err(std::io::Error::other),
    };
    if let Err(error) = asked {
        tracing::warn!(service = %spec.name, error = %crate::report::Chain(&error), "graceful stop failed; killing");
    }
}

/// The graceful signal: to the whole tree with [`KillMode::ControlGroup`] (from the
/// blocking pool: a cgroup's members are read from its files), else to the main
/// process only.
async fn signal_graceful(
    kill_mode: KillMode,
    backend: &BackendHandle,
    tree: Option<Arc<ProcessTree>>,
    signal: i32,
) -> std::io::Result<()> {
    match (tree, kill_mode) {
        (Some(tree), KillMode::ControlGroup) => {
            let backend = backend.clone();
            let _ = blocking(move || tree.signal_all(&backend, signal)).await;
            Ok(())
        }
        _ => backend.signal_main(signal),
    }
}

/// SIGKILL the whole tree of `backend` now, without waiting (for drops: the testing
/// kit's ephemeral backends).
pub(super) fn kill_tree_now(current: &Current, backend: &BackendHandle) {
    match current.tree_of(backend.pid()) {
        Some(tree) => tree.kill_all(backend),
        None => ProcessTree::group(backend.pid()).kill_all(backend),
    }
}

/// Kill what is left of an instance whose main process is gone (unless
/// [`KillMode::Process`]), wait until the tree is empty, and collect its last output.
pub(super) async fn clean_up(kill_mode: KillMode, mut instance: Instance) -> LastOutput {
    if kill_mode != KillMode::Process {
        kill_rest(&instance.tree, &instance.main).await;
    }
    let mut output = instance.last_output().await;
    if instance.tree.is_cgroup() {
        let tree = instance.tree.clone();
        // A fresh cgroup per instance: any OOM kill there was this instance's.
        if let Some(kills) = blocking(move || tree.oom_kills()).await.filter(|&k| k > 0) {
            output = output.with_out_of_memory(OutOfMemory::new(kills, instance.memory_max));
        }
    }
    retire(instance);
    output
}

/// Drop an instance whose tree is empty on the blocking pool: removing a cgroup directory
/// waits for the kernel to retire it (milliseconds), which no restart should wait for.
fn retire(instance: Instance) {
    if instance.tree.is_cgroup() {
        drop(tokio::task::spawn_blocking(move || drop(instance)));
    }
}

/// SIGKILL what is left of a tree whose main process is gone (or going) and wait,
/// bounded, until nothing is left.
pub(super) async fn kill_rest(tree: &ProcessTree, main: &BackendHandle) {
    tree.kill_all(main);
    if !tree.wait_empty(main.pid(), TREE_KILL_DEADLINE).await {
        tracing::warn!(tree = %tree.describe(), "processes survived the kill of their tree within {TREE_KILL_DEADLINE:?}");
    }
}

/// Kills a backend's whole tree when its start was abandoned, unless disarmed once it is
/// ready (or its exit is being handled).
pub(super) struct KillUnlessReady(Option<(BackendHandle, Arc<ProcessTree>)>);

impl KillUnlessReady {
    /// Armed for `backend` and its tree.
    pub(super) fn new(backend: &BackendHandle, tree: &Arc<ProcessTree>) -> KillUnlessReady {
        KillUnlessReady(Some((backend.clone(), tree.clone())))
    }

    /// The start got through (or its failure is handled): nothing to kill.
    pub(super) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillUnlessReady {
    fn drop(&mut self) {
        if let Some((backend, tree)) = self.0.take() {
            tree.kill_all(&backend);
            // The cgroup directory can only go once the tree is gone: wait in the
            // background, holding the tree (and the main process un-reaped) until then.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    tree.wait_empty(backend.pid(), TREE_KILL_DEADLINE).await;
                    drop(backend);
                });
            }
        }
    }
}
