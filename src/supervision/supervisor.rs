//! The [`Supervisor`] trait: what a user implements to have a backend supervised.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::error::{HealthError, LastOutput, StartError};
use super::event::{EventKind, EventSink};
use super::policy::RestartPolicy;
use super::runtime::TreeTracking;
use super::HealthPolicy;
use crate::handle::{BackendHandle, BackendHandleError, ExitStatus};

/// Default deadline for [`Supervisor::spawn`] to deliver a ready backend.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default grace period of [`Supervisor::stop`] between the graceful stop and the kill.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// How one backend is created, found, checked and stopped. The crate owns the loop around it
/// (adopt or spawn, readiness, watching, restarts with backoff and intensity, stopping).
///
/// Only [`spawn`](Supervisor::spawn) and [`name`](Supervisor::name) are required; every other
/// method has a working default, in the manner of deadpool's `Manager`.
///
/// ```
/// use std::sync::Arc;
/// use running_process::supervision::{supervise, SpawnContext, StartError, Supervisor};
/// use running_process::BackendHandle;
///
/// struct Cache;
///
/// #[async_trait::async_trait]
/// impl Supervisor for Cache {
///     fn name(&self) -> &str {
///         "cache"
///     }
///
///     async fn spawn(&self, ctx: &SpawnContext) -> Result<BackendHandle, StartError> {
///         let child = tokio::process::Command::new("my-cache-daemon")
///             .kill_on_drop(true)
///             .spawn()
///             .map_err(StartError::Spawn)?;
///         let handle = BackendHandle::from_child(child, "cache", "1.0", None).await?;
///         ctx.spawned(handle.pid());
///         Ok(handle)
///     }
/// }
///
/// # async fn run() {
/// let service = supervise(Arc::new(Cache));
/// let outcome = service.stop().await;
/// # }
/// ```
#[async_trait]
pub trait Supervisor: Send + Sync + 'static {
    /// The service name: in events, `tracing` spans and errors.
    fn name(&self) -> &str;

    /// Start a new backend and return it once it is ready and verified. The runtime applies
    /// [`ready_timeout`](Supervisor::ready_timeout) and drops this future on timeout or stop,
    /// so it must be cancel-safe: nothing it started may survive being dropped (spawn with
    /// `kill_on_drop(true)` until the handle owns the child).
    async fn spawn(&self, ctx: &SpawnContext) -> Result<BackendHandle, StartError>;

    /// Find a backend that is already running (started by an earlier run or another process)
    /// to adopt instead of spawning a second one. The default finds none (it asks the
    /// deprecated [`probe`](Supervisor::probe), so an implementation written before the
    /// rename keeps adopting).
    ///
    /// `Ok(None)`: nothing recorded. `Err`: something was recorded but failed verification;
    /// it is reported as [`EventKind::ProbeRejected`] and a new backend is spawned.
    #[allow(deprecated)] // the one caller: implementations that still override `probe`
    async fn adopt(&self) -> Result<Option<BackendHandle>, BackendHandleError> {
        self.probe().await
    }

    /// The former name of [`adopt`](Supervisor::adopt) ("probe" is the identity check of a
    /// [`BackendHandle`]); the runtime calls `adopt` only. The default finds none.
    #[deprecated(since = "0.1.0", note = "renamed to adopt")]
    async fn probe(&self) -> Result<Option<BackendHandle>, BackendHandleError> {
        Ok(None)
    }

    /// One health check of a running backend. The default pings it over its socket.
    async fn health_check(&self, backend: &BackendHandle) -> Result<(), HealthError> {
        let timeout = self
            .health_policy()
            .map_or(DEFAULT_HEALTH_TIMEOUT, |p| p.timeout);
        backend
            .ping(timeout)
            .await
            .map(drop)
            .map_err(HealthError::Backend)
    }

    /// When to run [`health_check`](Supervisor::health_check). Default: never (liveness
    /// alone, which costs nothing while the backend runs).
    fn health_policy(&self) -> Option<HealthPolicy> {
        None
    }

    /// The restart policy. Default: [`RestartPolicy::default`].
    fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy::default()
    }

    /// Deadline for [`spawn`](Supervisor::spawn). Default [`DEFAULT_READY_TIMEOUT`].
    fn ready_timeout(&self) -> Duration {
        DEFAULT_READY_TIMEOUT
    }

    /// Stop a backend: by default graceful, [`DEFAULT_STOP_GRACE`], then kill, then wait.
    async fn stop(&self, backend: &BackendHandle) -> Result<ExitStatus, BackendHandleError> {
        backend.stop(DEFAULT_STOP_GRACE).await
    }

    /// Start on demand (systemd's socket activation): `Ok(Some(demand))` makes the runtime
    /// wait, before each start, until `demand` completes (for
    /// [`CommandSupervisor`], a client connecting to one of the listeners it holds), in
    /// [`MemberState::Listening`](super::MemberState::Listening) with an
    /// [`EventKind::Listening`] event; the member counts as up meanwhile. A clean exit
    /// (code 0, such as an idle timeout) of an on-demand backend is not a termination
    /// for the restart policy: the member goes back to waiting, whatever its restart kind.
    /// An `Err` is a failed start. The default, `Ok(None)`, starts at once.
    ///
    /// [`CommandSupervisor`]: crate::command::CommandSupervisor
    async fn demand(&self) -> Result<Option<Demand>, StartError> {
        Ok(None)
    }

    /// How to read what `backend` (the one this supervisor just started) uses, for
    /// [`ServiceHandle::sample_usage`](super::ServiceHandle::sample_usage) and the
    /// [`usage`](super::MemberStatus::usage) of its status row. Called once per backend,
    /// on a tokio worker: it must not block (the sampler it returns may). The default
    /// reads nothing (`None`); [`CommandSupervisor`] reads the instance's cgroup or
    /// `/proc`.
    ///
    /// [`CommandSupervisor`]: crate::command::CommandSupervisor
    fn usage_sampler(&self, backend: &BackendHandle) -> Option<super::UsageSampler> {
        let _ = backend;
        None
    }

    /// The backend's main process exited by itself (a crash, or a normal exit; not a
    /// [`stop`](Supervisor::stop)). The runtime awaits this before it reports the
    /// [`EventKind::Exited`] event and before any restart, so this is where whatever the
    /// process left behind is cleaned up (for [`CommandSupervisor`], the rest of its
    /// process tree is killed, systemd's `KillMode=control-group`) and where its last
    /// output is collected for the event. The default does nothing.
    ///
    /// [`CommandSupervisor`]: crate::command::CommandSupervisor
    async fn on_exit(&self, backend: &BackendHandle, status: ExitStatus) -> LastOutput {
        let _ = (backend, status);
        LastOutput::default()
    }
}

/// What [`Supervisor::demand`] returns: completes when the backend is wanted (a client
/// waits). Dropped, it must stop waiting and leave nothing behind.
pub type Demand = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Default timeout of one health check when no [`HealthPolicy`] says otherwise.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Told when a start has spawned its process (the group's `started` condition).
type OnSpawn = Arc<dyn Fn() + Send + Sync>;

/// What [`Supervisor::spawn`] can report while it works.
#[derive(Clone)]
pub struct SpawnContext {
    events: EventSink,
    spawned: Arc<std::sync::Mutex<Option<BackendHandle>>>,
    on_spawn: Option<OnSpawn>,
    on_tree: Option<OnTree>,
}

/// What the runtime does with [`SpawnContext::tree_tracking`]: the member's status row.
pub(crate) type OnTree = Arc<dyn Fn(TreeTracking) + Send + Sync>;

impl std::fmt::Debug for SpawnContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnContext")
            .field("service", &self.events.service())
            .finish_non_exhaustive()
    }
}

impl SpawnContext {
    pub(crate) fn new(events: EventSink) -> Self {
        SpawnContext {
            events,
            spawned: Arc::default(),
            on_spawn: None,
            on_tree: None,
        }
    }

    /// The same, calling `on_spawn` when the process has been spawned and `on_tree` with
    /// what [`SpawnContext::tree_tracking`] says.
    pub(crate) fn with_hooks(events: EventSink, on_spawn: OnSpawn, on_tree: OnTree) -> Self {
        SpawnContext {
            on_spawn: Some(on_spawn),
            on_tree: Some(on_tree),
            ..SpawnContext::new(events)
        }
    }

    /// How the process tree of the backend being started is tracked: shown in its status
    /// row ([`MemberStatus::tree`](super::MemberStatus::tree), `status --json`'s `tree`).
    /// `CommandSupervisor` reports it at every spawn.
    pub fn tree_tracking(&self, tracking: TreeTracking) {
        if let Some(on_tree) = &self.on_tree {
            on_tree(tracking);
        }
    }

    /// Service trees are tracked by process group for every service of this process
    /// from now on, the documented fallback where the machine gives the supervisor no
    /// cgroup v2 (emits [`EventKind::TreeFallback`]); call it once per process, from the
    /// first start it applies to, with the reason.
    pub fn tree_fallback(&self, reason: impl Into<Arc<str>>) {
        self.events.emit(EventKind::TreeFallback {
            reason: reason.into(),
        });
    }

    /// The process has been started (before it is ready): emits [`EventKind::Spawned`].
    pub fn spawned(&self, pid: u32) {
        self.events.emit(EventKind::Spawned { pid });
        if let Some(on_spawn) = &self.on_spawn {
            on_spawn();
        }
    }

    /// The process has been started (before it is ready), and this is its handle: emits
    /// [`EventKind::Spawned`], and if the start is then abandoned (ready timeout, a stop,
    /// a failure) the runtime reports that process's [`EventKind::Exited`] once the
    /// dropped spawn has killed it. Prefer it to [`SpawnContext::spawned`].
    pub fn spawned_backend(&self, backend: &BackendHandle) {
        *self.spawned.lock().unwrap_or_else(|p| p.into_inner()) = Some(backend.clone());
        self.spawned(backend.pid());
    }

    /// A status line from the backend (e.g. sd_notify `STATUS=`): emits [`EventKind::Status`].
    pub fn status(&self, status: impl Into<String>) {
        self.events.emit(EventKind::Status {
            status: status.into(),
        });
    }

    /// The service name, for the caller's own logs.
    pub fn service(&self) -> &str {
        self.events.service()
    }

    /// The backend reported by [`SpawnContext::spawned_backend`] (taken once).
    pub(crate) fn take_spawned(&self) -> Option<BackendHandle> {
        self.spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub(crate) fn emit(&self, kind: EventKind) {
        self.events.emit(kind);
    }
}

/// A shared supervisor, as the runtime holds it.
pub type SharedSupervisor = Arc<dyn Supervisor>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::ProbeError;

    /// Written before the rename: overrides only the deprecated `probe`.
    struct OldStyle;

    #[async_trait]
    impl Supervisor for OldStyle {
        fn name(&self) -> &str {
            "old"
        }

        async fn spawn(&self, _ctx: &SpawnContext) -> Result<BackendHandle, StartError> {
            Err(StartError::Spawn(std::io::Error::other(
                "not spawned in this test",
            )))
        }

        #[allow(deprecated)]
        async fn probe(&self) -> Result<Option<BackendHandle>, BackendHandleError> {
            Err(BackendHandleError::Probe(ProbeError::WrongNonce))
        }
    }

    /// Neither `adopt` nor `probe` overridden.
    struct Plain;

    #[async_trait]
    impl Supervisor for Plain {
        fn name(&self) -> &str {
            "plain"
        }

        async fn spawn(&self, _ctx: &SpawnContext) -> Result<BackendHandle, StartError> {
            Err(StartError::Spawn(std::io::Error::other(
                "not spawned in this test",
            )))
        }
    }

    #[tokio::test]
    async fn adopt_asks_an_overridden_probe_and_finds_none_by_default() {
        let old = OldStyle.adopt().await;
        assert!(
            matches!(old, Err(BackendHandleError::Probe(ProbeError::WrongNonce))),
            "{old:?}"
        );
        assert!(matches!(Plain.adopt().await, Ok(None)));
    }
}
