//! [`BackendHandle`]: a verified backend daemon you can watch, talk to and stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::Stream;

use super::connection::{Connection, PeerCheck};
use super::error::{BackendHandleError, ProbeError, Result};
use super::liveness::{ExitStatus, Liveness, Monitor};
use super::probe::{probe, ProbeOptions};
use crate::identity::{DaemonProcess, Endpoint, VerifyPidError};
use crate::platform::{OpenError, ProcessHandle};
use crate::protocol::{CacheManifest, Frame, FrameKind};

/// Whether a failed read of a child's facts means the child is going away (its `/proc`
/// entries vanish); any other failure is reported.
fn is_gone(error: &VerifyPidError) -> bool {
    match error {
        VerifyPidError::Unreadable { source, .. } => crate::platform::is_no_such_process(source),
        VerifyPidError::Dead { .. } | VerifyPidError::ExitedDuringCheck { .. } => true,
        _ => false,
    }
}

/// How a graceful stop asks the backend to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum GracefulStop {
    /// SIGTERM through the process handle on Unix; the socket request on Windows, which has
    /// no graceful signal.
    #[default]
    Auto,
    /// SIGTERM through the process handle (Unix only).
    Signal,
    /// A shutdown request frame over the backend's socket.
    Request,
}

/// A handle to a local backend daemon whose identity has been verified.
///
/// A `BackendHandle` only exists after every check passed: same boot, same process start
/// time, same executable path and SHA-256 of the running image, and a fresh nonce answered
/// over the daemon's socket by a peer with matching credentials. It pins the process
/// (Linux: a pidfd), so its signals can never reach a process that recycled the PID, and
/// its liveness comes from the kernel as a stream.
///
/// Clones share one kernel registration.
///
/// ```no_run
/// use std::time::Duration;
/// use futures_util::StreamExt;
/// use running_process::handle::BackendHandle;
/// use running_process::protocol::CacheManifest;
///
/// # async fn demo() -> running_process::Result<()> {
/// let Some(manifest) = CacheManifest::read("/run/user/1000/my-app/cache.json").await? else {
///     return Ok(()); // nothing recorded: spawn a daemon instead
/// };
/// match BackendHandle::try_from_manifest(&manifest).await {
///     Ok(Some(handle)) => {
///         let mut changes = handle.liveness();
///         assert!(changes.next().await.is_some_and(|now| now.is_alive()));
///         handle.stop(Duration::from_secs(5)).await?;
///     }
///     Ok(None) => println!("no daemon recorded"),
///     Err(why) => println!("recorded daemon not trusted: {why}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BackendHandle {
    /// The verified identity, which everything the handle does reads.
    verified: Arc<DaemonProcess>,
    /// The service the backend answered it provides.
    service_name: String,
    /// The version of that service.
    service_version: String,
    peer: PeerCheck,
    monitor: Arc<Monitor>,
}

impl BackendHandle {
    /// Verify `expected` at `endpoint`; `None` if any check fails (the reason is logged at
    /// debug level; use [`BackendHandle::probe_with_service`] or
    /// [`BackendHandle::probe_with_options`] to get it).
    pub async fn probe(endpoint: &Endpoint, expected: &DaemonProcess) -> Option<Self> {
        Self::probe_with_options(endpoint, expected, None, &ProbeOptions::default())
            .await
            .inspect_err(|error| tracing::debug!(%endpoint, error = %crate::report::Chain(&error), "probe rejected"))
            .ok()
    }

    /// Verify `expected` at `endpoint`, and that it serves `service_name` at
    /// `service_version`. The error says which check failed.
    pub async fn probe_with_service(
        service_name: &str,
        service_version: &str,
        endpoint: &Endpoint,
        expected: &DaemonProcess,
    ) -> Result<Self> {
        Self::probe_with_options(
            endpoint,
            expected,
            Some((service_name, service_version)),
            &ProbeOptions::default(),
        )
        .await
    }

    /// The general form: verify `expected` at `endpoint`, optionally requiring a service
    /// name and version, with explicit [`ProbeOptions`].
    pub async fn probe_with_options(
        endpoint: &Endpoint,
        expected: &DaemonProcess,
        service: Option<(&str, &str)>,
        options: &ProbeOptions,
    ) -> Result<Self> {
        let verified = probe(endpoint, expected, service, options).await?;
        let monitor =
            Monitor::for_process(verified.handle, expected.start_time, endpoint.clone(), None)
                .map_err(|source| VerifyPidError::Unreadable {
                    pid: expected.pid,
                    what: "exit notification",
                    source,
                })?;
        Ok(BackendHandle {
            verified: Arc::new(expected.clone()),
            service_name: verified.reply.service_name,
            service_version: verified.reply.service_version,
            peer: verified.peer,
            monitor,
        })
    }

    /// A handle to a child process this program just spawned.
    ///
    /// A child's identity is known by construction: its PID came from our own `fork`, and
    /// it cannot be recycled before we reap it. The handle records the child's identity
    /// (start time, executable and digest) and watches it like any other backend; it keeps
    /// the child un-reaped while any handle to it exists, so the exit status is exact and
    /// the PID stays ours. For a daemon that speaks the probe protocol, verify it afterwards
    /// with [`BackendHandle::probe_with_service`]: both handles then share one watch.
    ///
    /// `endpoint` is where the child will listen, if it does; without one, [`connect`],
    /// [`ping`] and [`request_shutdown`] fail with [`BackendHandleError::Connect`].
    ///
    /// [`connect`]: BackendHandle::connect
    /// [`ping`]: BackendHandle::ping
    /// [`request_shutdown`]: BackendHandle::request_shutdown
    pub async fn from_child(
        child: tokio::process::Child,
        service_name: impl Into<String>,
        service_version: impl Into<String>,
        endpoint: Option<Endpoint>,
    ) -> Result<Self> {
        let Some(pid) = child.id() else {
            return Err(VerifyPidError::Dead { pid: 0 }.into());
        };
        let handle = ProcessHandle::open(pid).map_err(|error| match error {
            OpenError::NotFound => VerifyPidError::Dead { pid },
            OpenError::Unsupported(source) => VerifyPidError::HandleUnsupported { pid, source },
            OpenError::Other(source) => VerifyPidError::Unreadable {
                pid,
                what: "process handle",
                source,
            },
        })?;
        Self::from_spawned(
            handle,
            crate::platform::Child::Tokio(child),
            service_name,
            service_version,
            endpoint,
        )
        .await
    }

    /// A handle to a child the platform layer spawned: `handle` came with the fork (Linux
    /// `clone3(CLONE_PIDFD)`), `child` keeps it un-reaped.
    pub(crate) async fn from_spawned(
        handle: ProcessHandle,
        child: crate::platform::Child,
        service_name: impl Into<String>,
        service_version: impl Into<String>,
        endpoint: Option<Endpoint>,
    ) -> Result<Self> {
        let service_name = service_name.into();
        let pid = handle.pid();
        let endpoint = endpoint.unwrap_or_else(|| Endpoint::new(service_name.clone(), ""));
        let for_blocking = endpoint.clone();
        let (handle, daemon, peer) = crate::blocking::blocking(move || {
            let daemon = match DaemonProcess::describe(pid, for_blocking.clone(), None) {
                Ok(daemon) => daemon,
                // It already exited, or is exiting (its memory, and so its executable link,
                // is gone before it turns zombie): keep what the kernel still tells, so the
                // exit itself is reported, with its status.
                Err(error) if handle.has_exited().unwrap_or(false) || is_gone(&error) => {
                    DaemonProcess {
                        pid,
                        start_time: crate::platform::start_time(pid).unwrap_or(0),
                        boot_id: crate::platform::boot_id().unwrap_or_default(),
                        exe_path: std::path::PathBuf::new(),
                        exe_sha256: [0; 32],
                        ipc_endpoint: for_blocking,
                        started_at_unix_ms: crate::identity::daemon_process::unix_ms_now(),
                        idle_timeout_secs: None,
                    }
                }
                Err(error) => return Err(error),
            };
            let peer = PeerCheck {
                pid,
                uid: crate::platform::process_uid(pid).ok().flatten(),
                check_pid: true,
                token: handle.process_token(),
            };
            Ok::<_, VerifyPidError>((handle, daemon, peer))
        })
        .await?;
        let monitor = Monitor::for_process(handle, daemon.start_time, endpoint, Some(child))
            .map_err(|source| VerifyPidError::Unreadable {
                pid,
                what: "exit notification",
                source,
            })?;
        tracing::debug!(pid, service = %service_name, "watching spawned child");
        Ok(BackendHandle {
            verified: Arc::new(daemon),
            service_name,
            service_version: service_version.into(),
            peer,
            monitor,
        })
    }

    /// A handle to a process that does not exist: the testing kit's fake backends, whose
    /// liveness is published on `state` and whose signals go to `control`. Such a handle was
    /// never verified, which is why it only exists with the `test-util` feature.
    #[cfg(feature = "test-util")]
    pub(crate) fn scripted(
        daemon_process: DaemonProcess,
        service_name: String,
        service_version: String,
        control: Arc<dyn super::signals::ProcessControl>,
        state: tokio::sync::watch::Receiver<Liveness>,
    ) -> Self {
        let peer = PeerCheck {
            pid: daemon_process.pid,
            uid: None,
            check_pid: false,
            token: None,
        };
        BackendHandle {
            verified: Arc::new(daemon_process),
            service_name,
            service_version,
            peer,
            monitor: Monitor::scripted(control, state),
        }
    }

    /// Verify the daemon a manifest records; `None` if none is recorded or it fails a check.
    pub async fn probe_manifest(manifest: &CacheManifest) -> Option<Self> {
        Self::try_from_manifest(manifest)
            .await
            .inspect_err(|error| tracing::debug!(service = %manifest.service_name, error = %crate::report::Chain(&error), "manifest rejected"))
            .ok()
            .flatten()
    }

    /// Verify the daemon a manifest records, as the manifest's service and version.
    /// `Ok(None)` when the manifest records no daemon; an error names the failed check.
    pub async fn try_from_manifest(manifest: &CacheManifest) -> Result<Option<Self>> {
        let Some(daemon) = &manifest.current_daemon else {
            return Ok(None);
        };
        Self::probe_with_service(
            &manifest.service_name,
            &manifest.service_version,
            &daemon.ipc_endpoint,
            daemon,
        )
        .await
        .map(Some)
    }

    /// The backend's PID (for display: signals go through the handle, never to this number).
    pub fn pid(&self) -> u32 {
        self.verified.pid
    }

    /// The verified identity of the backend process.
    pub fn daemon(&self) -> &DaemonProcess {
        &self.verified
    }

    /// The service the backend answered it provides (for a spawned child: the name it
    /// was spawned under).
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// The version of that service (empty for a spawned child that answered no probe).
    pub fn service_version(&self) -> &str {
        &self.service_version
    }

    /// The backend's endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.verified.ipc_endpoint
    }

    /// Whether the backend is running, as of the kernel's last word. Never blocks, never
    /// polls: the answer is kept current by the exit notification.
    pub fn is_alive(&self) -> bool {
        self.monitor.current().is_alive()
    }

    /// The current liveness.
    pub fn current_liveness(&self) -> Liveness {
        self.monitor.current()
    }

    /// A stream of liveness changes: the current state first, then each change; it ends
    /// after the exit. Any number of subscribers share one kernel registration.
    pub fn liveness(&self) -> impl Stream<Item = Liveness> + Send + Unpin + 'static {
        self.monitor.stream()
    }

    /// Resolves when the backend has exited, with the exit status where the OS gives it.
    pub async fn exited(&self) -> ExitStatus {
        self.monitor.exited().await
    }

    /// Connect to the backend's socket, checking that the peer is the verified process.
    pub async fn connect(&self) -> Result<Connection> {
        if self.endpoint().path.is_empty() {
            return Err(BackendHandleError::Connect(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "this backend has no endpoint",
            )));
        }
        let connection = Connection::connect(self.endpoint()).await?;
        connection.check_peer(&self.peer)?;
        Ok(connection)
    }

    /// Ask the backend whether it responds; the round-trip time on success.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        self.control_request(Frame::Ping, FrameKind::Pong, timeout)
            .await?;
        Ok(started.elapsed())
    }

    /// Send a shutdown request over the socket and wait for its acknowledgement (not for
    /// the exit: see [`BackendHandle::shutdown`]).
    pub async fn request_shutdown(&self, timeout: Duration) -> Result<()> {
        self.control_request(Frame::Shutdown, FrameKind::ShutdownAck, timeout)
            .await
            .map(drop)
    }

    /// One control request over a new connection, answered within `timeout` by a frame of
    /// the kind `expected`.
    async fn control_request(
        &self,
        request: Frame,
        expected: FrameKind,
        timeout: Duration,
    ) -> Result<Frame> {
        let exchange = async {
            let reply = self.connect().await?.request(request, timeout).await?;
            if reply.kind() == expected {
                Ok(reply)
            } else {
                Err(ProbeError::UnexpectedFrame {
                    kind: format!("{:?}", reply.kind()),
                }
                .into())
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ProbeError::Timeout(timeout).into()))
    }

    /// Stop gracefully ([`GracefulStop::Auto`]) and wait up to `timeout` for the exit.
    ///
    /// On timeout it returns [`BackendHandleError::ShutdownTimeout`] and the handle stays
    /// usable: call [`BackendHandle::force_kill`], or use [`BackendHandle::stop`], which
    /// escalates by itself.
    pub async fn shutdown(&self, timeout: Duration) -> Result<()> {
        self.shutdown_with(GracefulStop::Auto, timeout).await
    }

    /// Stop gracefully the given way and wait up to `timeout` for the exit.
    pub async fn shutdown_with(&self, how: GracefulStop, timeout: Duration) -> Result<()> {
        if !self.is_alive() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let use_request = match how {
            GracefulStop::Request => true,
            GracefulStop::Signal => false,
            GracefulStop::Auto => !self.monitor.control().can_terminate(),
        };
        tracing::info!(pid = self.pid(), ?how, "stopping backend gracefully");
        if use_request {
            match tokio::time::timeout_at(deadline, self.request_shutdown(timeout)).await {
                Ok(Ok(())) => {}
                // The backend went away while we asked: that is what we wanted.
                Ok(Err(_)) | Err(_) if !self.is_alive() => return Ok(()),
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err(BackendHandleError::ShutdownTimeout { pid: self.pid() }),
            }
        } else {
            self.monitor
                .control()
                .terminate()
                .map_err(|source| BackendHandleError::Signal {
                    pid: self.pid(),
                    source,
                })?;
        }
        tokio::time::timeout_at(deadline, self.exited())
            .await
            .map(|_| ())
            .map_err(|_| BackendHandleError::ShutdownTimeout { pid: self.pid() })
    }

    /// Kill the backend now (SIGKILL / `TerminateProcess`) through the process handle.
    /// Succeeds if it already exited. Does not wait: await [`BackendHandle::exited`].
    pub fn force_kill(&self) -> Result<()> {
        tracing::info!(pid = self.pid(), "killing backend");
        self.monitor
            .control()
            .kill()
            .map_err(|source| BackendHandleError::Signal {
                pid: self.pid(),
                source,
            })
    }

    /// Send a signal through the process handle (Unix).
    #[cfg(unix)]
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.monitor
            .control()
            .signal(signal)
            .map_err(|source| BackendHandleError::Signal {
                pid: self.pid(),
                source,
            })
    }

    /// Signal the whole process group of a child spawned as a group leader
    /// (`Command::process_group(0)`), e.g. to reach the grandchildren a shell started.
    ///
    /// Only for handles made by [`BackendHandle::from_child`]: such a handle keeps the
    /// leader un-reaped, so the group id cannot name anyone else's group. Other handles get
    /// `BackendHandleError::Signal` with `ErrorKind::Unsupported`.
    ///
    /// Once the supervision runtime has handled the child's exit it lets the child be
    /// reaped (a zombie would mislead daemons that check their old PID); from then on this
    /// is refused too.
    #[cfg(unix)]
    pub fn signal_process_group(&self, signal: i32) -> Result<()> {
        let pid = self.pid();
        match self.monitor.signal_child_group(pid, signal) {
            Some(result) => result.map_err(|source| BackendHandleError::Signal { pid, source }),
            None => Err(BackendHandleError::Signal {
                pid,
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "process-group signals need a handle to our own, un-reaped child",
                ),
            }),
        }
    }

    /// The main process's side of a process tree's signals (the command layer's trees).
    fn tree_leader_io(result: Result<()>) -> std::io::Result<()> {
        result.map_err(|error| match error {
            BackendHandleError::Signal { source, .. } => source,
            other => std::io::Error::other(other),
        })
    }

    /// Let our exited child be reaped although handles remain (see
    /// [`BackendHandle::signal_process_group`]); nothing while it runs.
    pub(crate) fn release_exited_child(&self) {
        self.monitor.release_exited_child();
    }

    /// Stop with escalation, for callers who just want it gone: graceful stop, up to
    /// `grace` for the exit, then kill and wait for the exit. Returns how it ended.
    pub async fn stop(&self, grace: Duration) -> Result<ExitStatus> {
        match self.shutdown(grace).await {
            // Exited (then `exit_or_kill` only collects the status), or the grace is over.
            Ok(()) | Err(BackendHandleError::ShutdownTimeout { .. }) => {}
            Err(error) => {
                tracing::warn!(pid = self.pid(), error = %crate::report::Chain(&error), "graceful stop failed; killing");
            }
        }
        self.exit_or_kill(tokio::time::Instant::now(), || self.force_kill())
            .await
    }

    /// The end of every stop escalation: wait for the exit until `deadline`; past it,
    /// `kill` and wait for the exit.
    pub(crate) async fn exit_or_kill(
        &self,
        deadline: tokio::time::Instant,
        kill: impl FnOnce() -> Result<()>,
    ) -> Result<ExitStatus> {
        if let Ok(status) = tokio::time::timeout_at(deadline, self.exited()).await {
            return Ok(status);
        }
        tracing::warn!(pid = self.pid(), "did not stop in time; killing");
        kill()?;
        Ok(self.exited().await)
    }
}

/// A process tree reaches its main process through the handle, and its process group only
/// while the handle holds the main process as our un-reaped child.
impl crate::platform::TreeLeader for BackendHandle {
    fn signal_main(&self, signal: i32) -> std::io::Result<()> {
        #[cfg(unix)]
        return BackendHandle::tree_leader_io(self.signal(signal));
        #[cfg(not(unix))]
        {
            let _ = signal;
            BackendHandle::tree_leader_io(self.force_kill())
        }
    }

    fn signal_group(&self, signal: i32) -> std::io::Result<()> {
        #[cfg(unix)]
        return BackendHandle::tree_leader_io(self.signal_process_group(signal));
        #[cfg(not(unix))]
        {
            let _ = signal;
            Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
        }
    }

    fn kill_main(&self) -> std::io::Result<()> {
        BackendHandle::tree_leader_io(self.force_kill())
    }
}
