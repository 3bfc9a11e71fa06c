//! [`CommandSupervisor`]: a ready [`Supervisor`] for OS commands described by a
//! [`CommandSpec`], so the common case needs no trait implementation.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::output::{pump_lines, LineSink, LineWatch};
use super::private_dir::PrivateDir;
use super::spec::{CommandSpec, HealthCheck, Output, Readiness, StreamName};
use super::wait;
use crate::error::BackendHandleError;
use crate::handle::{BackendHandle, ExitStatus};
use crate::protocol::CacheManifest;
use crate::supervision::{
    HealthError, HealthPolicy, RestartPolicy, SpawnContext, StartError, Supervisor,
};

impl CommandSpec {
    /// Supervise this command on its own: the same as
    /// `supervise(Arc::new(CommandSupervisor::new(spec)))`. To put it in a group, use
    /// [`CommandSupervisor::new`] and [`GroupSpec::service`](crate::supervision::GroupSpec::service).
    ///
    /// ```no_run
    /// use running_process::command::{CommandSpec, Readiness};
    ///
    /// # async fn demo() {
    /// let service = CommandSpec::new("web", "python3")
    ///     .args(["-m", "http.server", "8080"])
    ///     .readiness(Readiness::Tcp { address: "127.0.0.1:8080".into() })
    ///     .supervise();
    /// service.ready().await.expect("web server up");
    /// service.stop().await;
    /// # }
    /// ```
    pub fn supervise(self) -> crate::supervision::ServiceHandle {
        crate::supervision::supervise(Arc::new(CommandSupervisor::new(self)))
    }
}

/// Supervises one OS command per its [`CommandSpec`]: spawn (as a process-group leader that
/// dies with the supervisor, by default), readiness, health checks, stop with escalation.
///
/// ```no_run
/// use std::sync::Arc;
/// use running_process::command::{CommandSpec, CommandSupervisor, Readiness};
/// use running_process::supervision::supervise;
///
/// # async fn demo() {
/// let spec = CommandSpec::new("web", "python3")
///     .args(["-m", "http.server", "8080"])
///     .readiness(Readiness::Tcp { address: "127.0.0.1:8080".into() });
/// let service = supervise(Arc::new(CommandSupervisor::new(spec)));
/// // or, the same: `let service = spec.supervise();`
/// service.ready().await.expect("web server up");
/// service.stop().await;
/// # }
/// ```
pub struct CommandSupervisor {
    spec: CommandSpec,
    current: Mutex<Option<Instance>>,
}

/// What belongs to the backend currently running: helper tasks and the notify state.
struct Instance {
    pid: u32,
    watchdog: Option<watch::Receiver<Instant>>,
    tasks: Vec<AbortHandle>,
    _runtime_dir: Option<PrivateDir>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for CommandSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSupervisor")
            .field("spec", &self.spec)
            .finish()
    }
}

impl CommandSupervisor {
    /// A supervisor for `spec`.
    pub fn new(spec: CommandSpec) -> Self {
        CommandSupervisor {
            spec,
            current: Mutex::new(None),
        }
    }

    /// The spec.
    pub fn spec(&self) -> &CommandSpec {
        &self.spec
    }

    fn needs_notify(&self) -> bool {
        matches!(self.spec.readiness, Readiness::Notify)
            || matches!(
                self.spec.health.as_ref().map(|h| &h.check),
                Some(HealthCheck::Watchdog { .. })
            )
    }

    fn set_instance(&self, instance: Option<Instance>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = instance;
    }

    /// Build the OS command from the spec.
    fn command(&self) -> tokio::process::Command {
        let spec = &self.spec;
        let mut command = tokio::process::Command::new(&spec.program);
        command.args(&spec.args).stdin(Stdio::null());
        if spec.env_clear {
            command.env_clear();
        }
        command.envs(&spec.env);
        if let Some(dir) = &spec.cwd {
            command.current_dir(dir);
        }
        // A child that dies with us is also killed when its last handle is dropped. One
        // meant to outlive us is not; `spawn` kills it itself if it is cancelled before ready.
        command.kill_on_drop(spec.die_with_supervisor);
        #[cfg(unix)]
        {
            if spec.die_with_supervisor || spec.stop.process_group {
                command.process_group(0);
            }
            if spec.die_with_supervisor {
                crate::platform::die_with_parent(&mut command);
            }
        }
        command
    }
}

#[async_trait]
impl Supervisor for CommandSupervisor {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn restart_policy(&self) -> RestartPolicy {
        self.spec.restart.clone()
    }

    fn ready_timeout(&self) -> Duration {
        self.spec.ready_timeout
    }

    fn health_policy(&self) -> Option<HealthPolicy> {
        self.spec.health.as_ref().map(|h| h.policy)
    }

    /// With manifest readiness, a daemon already recorded there is verified and adopted.
    async fn probe(&self) -> Result<Option<BackendHandle>, BackendHandleError> {
        let Readiness::Manifest { path } = &self.spec.readiness else {
            return Ok(None);
        };
        match CacheManifest::read(path).await? {
            Some(manifest) => BackendHandle::try_from_manifest(&manifest).await,
            None => Ok(None),
        }
    }

    async fn spawn(&self, ctx: &SpawnContext) -> Result<BackendHandle, StartError> {
        let spec = &self.spec;
        self.set_instance(None);
        let mut command = self.command();
        let mut tasks = Vec::new();

        // sd_notify: a private socket for this run.
        let notify = if self.needs_notify() {
            Some(prepare_notify(spec, &mut command).await?)
        } else {
            None
        };

        // Standard streams: a pipe where lines must be read (tracing, a readiness pattern).
        let watched = match &spec.readiness {
            Readiness::LogLine { stream, .. } => Some(*stream),
            _ => None,
        };
        let stdout_sink = plan_output(
            &spec.stdout,
            watched == Some(StreamName::Stdout),
            &mut command,
            true,
        )
        .await?;
        let stderr_sink = plan_output(
            &spec.stderr,
            watched == Some(StreamName::Stderr),
            &mut command,
            false,
        )
        .await?;

        let mut child = command.spawn().map_err(StartError::Spawn)?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let handle = BackendHandle::from_child(child, spec.name.clone(), "", None).await?;
        let pid = handle.pid();
        ctx.spawned(pid);
        // Until it is ready, a dropped (cancelled, timed out) spawn kills what it started.
        let guard = KillUnlessReady(Some(handle.clone()));

        let service: Arc<str> = spec.name.as_str().into();
        let (line_tx, line_rx) = oneshot::channel();
        let mut line_tx = Some(line_tx);
        for (pipe, sink, name) in [
            (
                stdout.map(PipeReader::Stdout),
                stdout_sink,
                StreamName::Stdout,
            ),
            (
                stderr.map(PipeReader::Stderr),
                stderr_sink,
                StreamName::Stderr,
            ),
        ] {
            let (Some(pipe), Some(sink)) = (pipe, sink) else {
                continue;
            };
            let watch = match &spec.readiness {
                Readiness::LogLine { pattern, stream } if *stream == name => {
                    line_tx.take().map(|found| LineWatch {
                        pattern: pattern.clone(),
                        found,
                    })
                }
                _ => None,
            };
            let label = if name == StreamName::Stdout {
                "stdout"
            } else {
                "stderr"
            };
            let task = match pipe {
                PipeReader::Stdout(reader) => {
                    pump_lines(reader, service.clone(), label, sink, watch)
                }
                PipeReader::Stderr(reader) => {
                    pump_lines(reader, service.clone(), label, sink, watch)
                }
            };
            tasks.push(task.abort_handle());
        }

        let (ready_tx, ready_rx) = watch::channel(false);
        let mut watchdog = None;
        let mut runtime_dir = None;
        if let Some((dir, socket)) = notify {
            let (beat_tx, beat_rx) = watch::channel(Instant::now());
            watchdog = Some(beat_rx);
            let task = tokio::spawn(read_notifications(
                socket,
                pid,
                ready_tx,
                beat_tx,
                ctx.clone(),
            ));
            tasks.push(task.abort_handle());
            runtime_dir = Some(dir);
        }

        let instance = Instance {
            pid,
            watchdog,
            tasks,
            _runtime_dir: runtime_dir,
        };
        let ready = wait_ready(&spec.readiness, &handle, ready_rx, line_rx);
        let handle = tokio::select! {
            ready = ready => ready?,
            status = handle.exited() => return Err(StartError::ExitedBeforeReady(status)),
        };
        guard.disarm();
        self.set_instance(Some(instance));
        Ok(handle)
    }

    async fn health_check(&self, backend: &BackendHandle) -> Result<(), HealthError> {
        let Some(health) = &self.spec.health else {
            return Ok(());
        };
        match &health.check {
            HealthCheck::Ping => backend
                .ping(health.policy.timeout)
                .await
                .map(drop)
                .map_err(HealthError::Backend),
            HealthCheck::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
                .await
                .map(drop)
                .map_err(|e| HealthError::Failed(format!("TCP connect to {address}: {e}"))),
            HealthCheck::Watchdog { timeout } => {
                let last = {
                    let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
                    current
                        .as_ref()
                        .filter(|i| i.pid == backend.pid())
                        .and_then(|i| i.watchdog.as_ref().map(|w| *w.borrow()))
                };
                match last {
                    Some(at) if at.elapsed() <= *timeout => Ok(()),
                    Some(at) => Err(HealthError::Failed(format!(
                        "no WATCHDOG=1 for {:?} (limit {timeout:?})",
                        at.elapsed()
                    ))),
                    None => Err(HealthError::Failed(
                        "no sd_notify watchdog for this backend".into(),
                    )),
                }
            }
        }
    }

    /// The spec's stop: graceful signal (to the process group when configured) or socket
    /// request, the grace period, then SIGKILL (to the group too), then wait for the exit.
    async fn stop(&self, backend: &BackendHandle) -> Result<ExitStatus, BackendHandleError> {
        let stop = &self.spec.stop;
        if !backend.is_alive() {
            return Ok(backend.exited().await);
        }
        let asked = if stop.request || cfg!(windows) {
            backend.request_shutdown(stop.grace).await
        } else {
            self.signal(backend, graceful_signal(stop.signal))
        };
        if let Err(error) = asked {
            tracing::warn!(service = %self.spec.name, %error, "graceful stop failed; killing");
        }
        let status = match tokio::time::timeout(stop.grace, backend.exited()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(service = %self.spec.name, grace = ?stop.grace, "did not stop in time; killing");
                self.kill(backend)?;
                backend.exited().await
            }
        };
        // Stragglers in the group (a shell's children that ignored the signal) go too; the
        // leader is still un-reaped here, so the group id is still ours.
        if stop.process_group {
            let _ = self.kill_group(backend);
        }
        self.set_instance(None);
        Ok(status)
    }
}

impl CommandSupervisor {
    #[cfg(unix)]
    fn signal(&self, backend: &BackendHandle, signal: i32) -> Result<(), BackendHandleError> {
        if self.spec.stop.process_group {
            if let Ok(()) = backend.signal_process_group(signal) {
                return Ok(());
            }
        }
        backend.signal(signal)
    }

    #[cfg(not(unix))]
    fn signal(&self, backend: &BackendHandle, _signal: i32) -> Result<(), BackendHandleError> {
        backend.force_kill()
    }

    fn kill(&self, backend: &BackendHandle) -> Result<(), BackendHandleError> {
        if self.spec.stop.process_group && self.kill_group(backend).is_ok() {
            return Ok(());
        }
        backend.force_kill()
    }

    fn kill_group(&self, backend: &BackendHandle) -> Result<(), BackendHandleError> {
        #[cfg(unix)]
        {
            backend.signal_process_group(rustix::process::Signal::KILL.as_raw())
        }
        #[cfg(not(unix))]
        {
            backend.force_kill()
        }
    }
}

#[cfg(unix)]
fn graceful_signal(signal: super::spec::StopSignal) -> i32 {
    signal.as_raw()
}

#[cfg(not(unix))]
fn graceful_signal(_signal: super::spec::StopSignal) -> i32 {
    0
}

enum PipeReader {
    Stdout(tokio::process::ChildStdout),
    Stderr(tokio::process::ChildStderr),
}

/// Set up one standard stream; `Some(sink)` when its lines must be pumped.
async fn plan_output(
    output: &Output,
    watched: bool,
    command: &mut tokio::process::Command,
    is_stdout: bool,
) -> Result<Option<LineSink>, StartError> {
    let (stdio, sink) = match (output, watched) {
        (Output::Inherit, false) => (Stdio::inherit(), None),
        (Output::Null, false) => (Stdio::null(), None),
        (Output::File { path }, false) => (Stdio::from(open_log(path).await?), None),
        (Output::Null, true) => (Stdio::piped(), Some(LineSink::Discard)),
        (Output::File { path }, true) => {
            (Stdio::piped(), Some(LineSink::File(open_log(path).await?)))
        }
        // Lines must be read anyway: an inherited stream is forwarded to tracing.
        (Output::Tracing, _) | (Output::Inherit, true) => (Stdio::piped(), Some(LineSink::Tracing)),
    };
    if is_stdout {
        command.stdout(stdio);
    } else {
        command.stderr(stdio);
    }
    Ok(sink)
}

async fn open_log(path: &Path) -> Result<std::fs::File, StartError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    })
    .await
    .map_err(|e| StartError::Spawn(std::io::Error::other(e)))?
    .map_err(StartError::Spawn)
}

/// Wait for the spec's readiness; for the manifest handshake, the verified handle.
async fn wait_ready(
    readiness: &Readiness,
    child: &BackendHandle,
    mut notified: watch::Receiver<bool>,
    line: oneshot::Receiver<String>,
) -> Result<BackendHandle, StartError> {
    match readiness {
        Readiness::Started => {}
        Readiness::Delay { delay } => tokio::time::sleep(*delay).await,
        Readiness::Notify => {
            notified
                .wait_for(|ready| *ready)
                .await
                .map_err(|_| StartError::Readiness("the sd_notify reader stopped".into()))?;
        }
        Readiness::Tcp { address } => wait::tcp_accepts(address)
            .await
            .map_err(|e| StartError::Readiness(e.to_string()))?,
        Readiness::File { path } => wait::file_appears(path)
            .await
            .map_err(|e| StartError::Readiness(e.to_string()))?,
        Readiness::LogLine { .. } => {
            if line.await.is_err() {
                // The stream ended without the line. Usually the process is exiting, and the
                // caller reports that exit; otherwise the ready timeout ends the wait.
                std::future::pending::<()>().await;
            }
        }
        Readiness::Manifest { path } => return verified_from_manifest(path, child.pid()).await,
    }
    Ok(child.clone())
}

/// Wait until the manifest records process `pid`, then verify it through the full probe.
async fn verified_from_manifest(path: &Path, pid: u32) -> Result<BackendHandle, StartError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let owned = dir.to_owned();
    tokio::task::spawn_blocking(move || crate::protocol::manifest::create_private_dir(&owned))
        .await
        .map_err(|e| StartError::Spawn(std::io::Error::other(e)))?
        .map_err(StartError::Spawn)?;
    let mut watcher = wait::PathWatcher::new(path).map_err(StartError::Spawn)?;
    loop {
        match CacheManifest::read(path).await {
            Ok(Some(manifest)) if manifest.current_daemon.as_ref().map(|d| d.pid) == Some(pid) => {
                return BackendHandle::try_from_manifest(&manifest)
                    .await?
                    .ok_or_else(|| StartError::Readiness("the manifest records no daemon".into()));
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "manifest not readable yet"),
        }
        watcher.changed().await.map_err(StartError::Spawn)?;
    }
}

/// A private directory with the sd_notify socket, its path exported to the command.
#[cfg(unix)]
async fn prepare_notify(
    spec: &CommandSpec,
    command: &mut tokio::process::Command,
) -> Result<(PrivateDir, crate::protocol::sd_notify::NotifySocket), StartError> {
    let name = spec.name.clone();
    let dir = tokio::task::spawn_blocking(move || PrivateDir::create(&name))
        .await
        .map_err(|e| StartError::Spawn(std::io::Error::other(e)))?
        .map_err(StartError::Spawn)?;
    let socket = crate::protocol::sd_notify::NotifySocket::bind(dir.path().join("notify.sock"))
        .map_err(StartError::Spawn)?;
    command.env("NOTIFY_SOCKET", socket.path());
    if let Some(HealthCheck::Watchdog { timeout }) = spec.health.as_ref().map(|h| &h.check) {
        command.env("WATCHDOG_USEC", timeout.as_micros().to_string());
    }
    Ok((dir, socket))
}

#[cfg(not(unix))]
async fn prepare_notify(
    _spec: &CommandSpec,
    _command: &mut tokio::process::Command,
) -> Result<(PrivateDir, NotifySocket), StartError> {
    Err(StartError::Readiness(
        "sd_notify needs a Unix system".into(),
    ))
}

/// No sd_notify outside Unix; this type only keeps the signatures uniform.
#[cfg(not(unix))]
struct NotifySocket;

#[cfg(not(unix))]
async fn read_notifications(
    _socket: NotifySocket,
    _pid: u32,
    _ready: watch::Sender<bool>,
    _watchdog: watch::Sender<Instant>,
    _ctx: SpawnContext,
) {
}

/// Read sd_notify messages from the backend's process group until it exits.
#[cfg(unix)]
async fn read_notifications(
    socket: crate::protocol::sd_notify::NotifySocket,
    pid: u32,
    ready: watch::Sender<bool>,
    watchdog: watch::Sender<Instant>,
    ctx: SpawnContext,
) {
    loop {
        let message = match socket.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "sd_notify socket failed");
                return;
            }
        };
        if !from_group(message.sender_pid, pid) {
            tracing::warn!(sender = ?message.sender_pid, "ignoring sd_notify message from outside the backend's process group");
            continue;
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
    }
}

/// systemd's `NotifyAccess=all` restricted to the backend's process group: the leader or
/// any process it started in its group. Without credentials (non-Linux) the private
/// directory is the only gate.
#[cfg(unix)]
fn from_group(sender: Option<u32>, leader: u32) -> bool {
    let Some(sender) = sender else {
        return true;
    };
    if sender == leader {
        return true;
    }
    let pid = i32::try_from(sender)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    let group = pid.and_then(|p| rustix::process::getpgid(Some(p)).ok());
    group.map(|g| g.as_raw_nonzero().get() as u32) == Some(leader)
}

/// Kills a backend whose start was abandoned, unless disarmed once it is ready.
struct KillUnlessReady(Option<BackendHandle>);

impl KillUnlessReady {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillUnlessReady {
    fn drop(&mut self) {
        if let Some(backend) = self.0.take() {
            if backend.is_alive() {
                let _ = backend.force_kill();
            }
        }
    }
}
