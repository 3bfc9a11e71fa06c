//! The [`Supervisor`] trait: what a user implements to have a backend supervised.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::event::{EventKind, EventSink};
use super::policy::RestartPolicy;
use super::HealthPolicy;
use crate::error::BackendHandleError;
use crate::handle::{BackendHandle, ExitStatus};

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
    /// to adopt instead of spawning a second one. The default finds none.
    ///
    /// `Ok(None)`: nothing recorded. `Err`: something was recorded but failed verification;
    /// it is reported as [`EventKind::ProbeRejected`] and a new backend is spawned.
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
}

/// Default timeout of one health check when no [`HealthPolicy`] says otherwise.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// What [`Supervisor::spawn`] can report while it works.
#[derive(Debug, Clone)]
pub struct SpawnContext {
    pub(crate) events: EventSink,
}

impl SpawnContext {
    /// The process has been started (before it is ready): emits [`EventKind::Spawned`].
    pub fn spawned(&self, pid: u32) {
        self.events.emit(EventKind::Spawned { pid });
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
}

/// Why a backend could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The program could not be started at all.
    #[error("cannot start the program: {0}")]
    Spawn(#[source] std::io::Error),
    /// The backend could not be verified or reached.
    #[error(transparent)]
    Backend(#[from] BackendHandleError),
    /// The backend exited before it was ready.
    #[error("the backend exited before it was ready ({0})")]
    ExitedBeforeReady(ExitStatus),
    /// The backend was not ready within the deadline.
    #[error("the backend was not ready within {0:?}")]
    ReadyTimeout(Duration),
    /// Readiness could not be established for another reason.
    #[error("readiness failed: {0}")]
    Readiness(String),
}

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The backend did not answer properly.
    #[error(transparent)]
    Backend(#[from] BackendHandleError),
    /// The check did not finish in time.
    #[error("health check timed out after {0:?}")]
    Timeout(Duration),
    /// Any other failed check, described.
    #[error("{0}")]
    Failed(String),
}

/// A shared supervisor, as the runtime holds it.
pub type SharedSupervisor = Arc<dyn Supervisor>;
