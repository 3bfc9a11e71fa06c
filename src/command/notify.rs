//! sd_notify for a command: a private socket per instance, reachable by the service's own
//! user, and believed only from the service's own processes.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use super::listeners::FdStore;
use super::private_dir::PrivateDir;
use super::spec::{CommandSpec, HealthCheck};
use super::spec_error::SpecError;
use crate::blocking::blocking;
use crate::platform::{Descriptor, NotifySocket};
use crate::protocol::sd_notify::{self, NotifyMessage};
use crate::supervision::{SpawnContext, StartError};

/// The socket of one instance, with the directory that holds it.
pub(crate) struct NotifyEndpoint {
    /// The private directory, held so it lives as long as the socket (removed when
    /// dropped).
    _dir: PrivateDir,
    /// The bound socket.
    pub socket: Arc<NotifySocket>,
}

impl NotifyEndpoint {
    /// The variables the program gets: `NOTIFY_SOCKET`, and `WATCHDOG_USEC` when the
    /// health check is the watchdog.
    pub(crate) fn env(&self, spec: &CommandSpec) -> Vec<(String, String)> {
        let mut env = vec![(
            "NOTIFY_SOCKET".to_owned(),
            self.socket.path().display().to_string(),
        )];
        if let Some(HealthCheck::Watchdog { timeout }) = spec.health.as_ref().map(|h| &h.check) {
            env.push(("WATCHDOG_USEC".to_owned(), timeout.as_micros().to_string()));
        }
        env
    }

    /// Create the private directory and bind the socket. When the service runs as another
    /// user, the directory and socket are handed to that user (`owner`), so the service can
    /// send; the supervisor keeps receiving on the descriptor it bound.
    pub(crate) async fn bind(
        spec: &CommandSpec,
        owner: Option<(u32, Option<u32>)>,
    ) -> Result<NotifyEndpoint, StartError> {
        if !NotifySocket::SUPPORTED {
            return Err(SpecError::NeedsUnix("sd_notify").into());
        }
        let name = spec.name.clone();
        let dir = blocking(move || PrivateDir::create(&name))
            .await
            .map_err(|source| StartError::Prepare {
                what: "the sd_notify directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let path = dir.path().join("notify.sock");
        let socket = NotifySocket::bind(path.clone()).map_err(|source| StartError::Prepare {
            what: "the sd_notify socket",
            path,
            source,
        })?;
        if let Some((uid, gid)) =
            owner.filter(|(uid, _)| Some(*uid) != crate::platform::current_uid())
        {
            for path in [dir.path(), socket.path()] {
                crate::platform::chown(path, uid, gid).map_err(|source| StartError::Setup {
                    program: spec.program.clone(),
                    stage: "handing the sd_notify socket to the service's user",
                    source,
                })?;
            }
        }
        Ok(NotifyEndpoint {
            _dir: dir,
            socket: Arc::new(socket),
        })
    }
}

/// Read messages until the socket fails: `READY=1` and `WATCHDOG=1` are believed only
/// from a process `belongs` accepts (the main process or another process of the
/// service's tree, systemd's `NotifyAccess=all` limited to the service); `STATUS=` lines
/// become events; descriptors attached to a message of the service go to `store` (the
/// file descriptor store), the others are closed.
async fn read(
    endpoint_socket: Arc<NotifySocket>,
    belongs: impl Fn(u32) -> bool + Send + 'static,
    ready: watch::Sender<bool>,
    watchdog: watch::Sender<Instant>,
    ctx: SpawnContext,
    store: impl Fn(&NotifyMessage, Vec<Descriptor>) + Send + 'static,
) {
    loop {
        let (message, fds) = match sd_notify::receive(&endpoint_socket).await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(error = %crate::report::Chain(&error), "sd_notify socket failed");
                return;
            }
        };
        // Without credentials (not Linux) the private directory is the only gate.
        if let Some(sender) = message.sender_pid {
            if !belongs(sender) {
                tracing::warn!(
                    sender,
                    "ignoring sd_notify message from outside the service"
                );
                continue;
            }
        }
        if let Some(status) = &message.status {
            ctx.status(status.clone());
        }
        if message.watchdog {
            watchdog.send_replace(Instant::now());
        }
        if message.ready {
            ready.send_replace(true);
        }
        store(&message, fds);
    }
}

/// Start the reader of `endpoint`'s messages (see [`read`]); descriptors of the service go
/// to `fd_store`.
pub(crate) fn spawn_reader(
    endpoint: &NotifyEndpoint,
    belongs: impl Fn(u32) -> bool + Send + 'static,
    ready: watch::Sender<bool>,
    watchdog: watch::Sender<Instant>,
    ctx: &SpawnContext,
    fd_store: Arc<FdStore>,
) -> tokio::task::AbortHandle {
    let store = move |message: &NotifyMessage, fds| fd_store.apply(&message.extra, fds);
    let task = tokio::spawn(read(
        endpoint.socket.clone(),
        belongs,
        ready,
        watchdog,
        ctx.clone(),
        store,
    ));
    task.abort_handle()
}
