//! [`CommandSupervisor`]: a ready [`Supervisor`] for OS commands described by a
//! [`CommandSpec`], so the common case needs no trait implementation.
//!
//! Each instance is a whole process tree (its cgroup, else its process group): spawned
//! from the spawner thread with its pidfd from the fork, made ready only by its own
//! processes, stopped per [`KillMode`], and when its main process dies by itself, the rest
//! of the tree is killed before the runtime starts a replacement.

use super::probes::CheckError;
use super::spec_error::SpecError;
use crate::blocking::blocking;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use super::launch;
use super::listeners::Listeners;
use super::notify::{self, NotifyEndpoint};
use super::output::{pump_lines, LineSink, LineWatch, LogFile, OutputTail};
use super::probes::{self, HttpUrl};
use super::readiness::{self, ReadyWait};
use super::spec::{CommandSpec, HealthCheck, KillMode, Output, Readiness, StreamName};
use super::tree::{InstanceCgroup, Tree};
use crate::handle::BackendHandleError;
use crate::handle::{BackendHandle, ExitStatus};
use crate::platform::{self, PipeReader, Stdio};
use crate::protocol::CacheManifest;
use crate::supervision::{
    Demand, HealthError, HealthPolicy, LastOutput, RestartPolicy, SpawnContext, StartError,
    Supervisor,
};

/// How long a dead main process's tree may take to disappear after `cgroup.kill` (or the
/// group's SIGKILL) before the supervisor goes on without waiting further.
const TREE_KILL_DEADLINE: Duration = Duration::from_secs(10);
/// How long the output pumps may take to reach EOF once the tree is gone, so the last
/// lines are complete (a process outside the tree may still hold the pipe).
const OUTPUT_DRAIN_DEADLINE: Duration = Duration::from_secs(1);

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
    ///     .readiness(Readiness::http("http://127.0.0.1:8080/"))
    ///     .supervise();
    /// service.ready().await.expect("web server up");
    /// service.stop().await;
    /// # }
    /// ```
    pub fn supervise(self) -> crate::supervision::ServiceHandle {
        crate::supervision::supervise(Arc::new(CommandSupervisor::new(self)))
    }
}

/// Supervises one OS command per its [`CommandSpec`]: spawn (from the spawner thread, in
/// its own cgroup or process group, as its user, within its limits), readiness from its
/// own processes only, health checks, stop and cleanup of the whole tree.
///
/// ```no_run
/// use std::sync::Arc;
/// use running_process::command::{CommandSpec, CommandSupervisor, Readiness};
/// use running_process::supervision::supervise;
///
/// # async fn demo() {
/// let spec = CommandSpec::new("web", "python3")
///     .args(["-m", "http.server", "8080"])
///     .readiness(Readiness::tcp("127.0.0.1:8080"));
/// let service = supervise(Arc::new(CommandSupervisor::new(spec)));
/// // or, the same: `let service = spec.supervise();`
/// service.ready().await.expect("web server up");
/// service.stop().await;
/// # }
/// ```
pub struct CommandSupervisor {
    spec: CommandSpec,
    /// The spec's listening sockets, held from the first start until this is dropped.
    listeners: Listeners,
    /// The file descriptor store, when the spec has one (Linux).
    #[cfg(target_os = "linux")]
    fd_store: Option<Arc<super::listeners::linux::FdStore>>,
    current: Mutex<Option<Instance>>,
    /// (pid, start time) of the last process spawned: a manifest that still records it
    /// after it died is our own leftover, not a stranger to report.
    last_spawned: Mutex<Option<(u32, u64)>>,
}

/// What belongs to the instance currently running: its tree, output and notify state.
struct Instance {
    /// The main process (its handle keeps it un-reaped, so a process-group kill through
    /// it cannot reach a recycled group id).
    main: BackendHandle,
    tree: Arc<Tree>,
    tail: Option<OutputTail>,
    pumps: Vec<JoinHandle<()>>,
    watchdog: Option<watch::Receiver<Instant>>,
    tasks: Vec<AbortHandle>,
    _notify: Option<NotifyEndpoint>,
}

impl Instance {
    /// Wait (bounded) until the output pumps have read everything, then the last lines.
    async fn last_output(&mut self) -> LastOutput {
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
            listeners: Listeners::new(spec.listeners.clone()),
            #[cfg(target_os = "linux")]
            fd_store: (spec.fd_store_max > 0)
                .then(|| Arc::new(super::listeners::linux::FdStore::new(spec.fd_store_max))),
            spec,
            current: Mutex::new(None),
            last_spawned: Mutex::new(None),
        }
    }

    /// The spec.
    pub fn spec(&self) -> &CommandSpec {
        &self.spec
    }

    fn needs_notify(&self) -> bool {
        self.spec.fd_store_max > 0
            || matches!(self.spec.readiness, Readiness::Notify)
            || matches!(
                self.spec.health.as_ref().map(|h| &h.check),
                Some(HealthCheck::Watchdog { .. })
            )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instance>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the instance whose main process is `pid`.
    fn take_instance(&self, pid: u32) -> Option<Instance> {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|i| i.main.pid() == pid) {
            current.take()
        } else {
            None
        }
    }

    fn tree_of(&self, pid: u32) -> Option<Arc<Tree>> {
        self.lock()
            .as_ref()
            .filter(|i| i.main.pid() == pid)
            .map(|i| i.tree.clone())
    }

    /// Kill what is left of an instance whose main process is gone (unless
    /// [`KillMode::Process`]), wait until the tree is empty, and collect its last output.
    async fn clean_up(&self, mut instance: Instance) -> LastOutput {
        if self.spec.stop.kill_mode != KillMode::Process {
            kill_rest(&instance.tree, &instance.main).await;
        }
        let output = instance.last_output().await;
        retire(instance);
        output
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
    /// A manifest that still records this supervisor's own last instance (which died) is
    /// nothing to adopt and nothing to warn about.
    async fn probe(&self) -> Result<Option<BackendHandle>, BackendHandleError> {
        let Readiness::Manifest { path } = &self.spec.readiness else {
            return Ok(None);
        };
        let Some(manifest) = CacheManifest::read(path).await? else {
            return Ok(None);
        };
        let recorded = manifest
            .current_daemon
            .as_ref()
            .map(|d| (d.pid, d.start_time));
        let ours = *self.last_spawned.lock().unwrap_or_else(|p| p.into_inner());
        if recorded.is_some() && recorded == ours {
            return Ok(None);
        }
        BackendHandle::try_from_manifest(&manifest).await
    }

    // Four steps: `prepare` what the child needs, `launch` it, `attach` its output and
    // sd_notify readers, then wait until it is ready (or dies first, bringing its last lines).
    async fn spawn(&self, ctx: &SpawnContext) -> Result<BackendHandle, StartError> {
        let Prepared {
            program,
            plan,
            uid,
            notify,
            sinks,
            tail,
            cgroup,
        } = self.prepare().await?;
        let Launched {
            handle,
            tree,
            pipes,
        } = self.launch(program, plan, cgroup, ctx).await?;
        // Until it is ready, a dropped (cancelled, timed out) spawn kills what it started.
        let guard = KillUnlessReady(Some((handle.clone(), tree.clone())));
        let (mut instance, waits) = attach(
            &self.spec,
            &handle,
            &tree,
            pipes,
            sinks,
            notify,
            tail,
            ctx,
            self.keep_fds(),
        );
        let ready = readiness::wait_ready(
            &self.spec.readiness,
            ReadyWait {
                main: &handle,
                tree: &tree,
                uid,
                notified: waits.notified,
                line: waits.line,
                cwd: self.spec.cwd.as_deref(),
            },
        );
        let handle = tokio::select! {
            ready = ready => ready?,
            status = handle.exited() => {
                guard.disarm();
                if self.spec.stop.kill_mode != KillMode::Process {
                    kill_rest(&tree, &handle).await;
                }
                let output = instance.last_output().await;
                return Err(StartError::ExitedBeforeReady { status, output });
            }
        };
        guard.disarm();
        *self.lock() = Some(instance);
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
                .map_err(|source| {
                    CheckError::Connect {
                        address: address.clone(),
                        source,
                    }
                    .into()
                }),
            HealthCheck::Http { url } => Ok(probes::http_ok(&HttpUrl::parse(url)?).await?),
            HealthCheck::Exec { command } => {
                Ok(probes::run_check(command, self.spec.cwd.as_deref()).await?)
            }
            HealthCheck::UnixSocket { path } => unix_connect(path).await,
            HealthCheck::Watchdog { timeout } => {
                let last = {
                    let current = self.lock();
                    current
                        .as_ref()
                        .filter(|i| i.main.pid() == backend.pid())
                        .and_then(|i| i.watchdog.as_ref().map(|w| *w.borrow()))
                };
                match last {
                    Some(at) if at.elapsed() <= *timeout => Ok(()),
                    Some(at) => Err(CheckError::WatchdogSilent {
                        silent: at.elapsed(),
                        limit: *timeout,
                    }
                    .into()),
                    None => Err(CheckError::NoWatchdog.into()),
                }
            }
        }
    }

    /// The spec's stop, per [`KillMode`]: the graceful signal (or socket request) to the
    /// tree or the main process, the grace period for the main process and then the rest
    /// to exit, then SIGKILL to whatever is left, and wait until the tree is empty.
    async fn stop(&self, backend: &BackendHandle) -> Result<ExitStatus, BackendHandleError> {
        let stop = &self.spec.stop;
        let tree = self.tree_of(backend.pid());
        let deadline = Instant::now() + stop.grace;
        if backend.is_alive() {
            let asked = if stop.request || cfg!(windows) {
                backend.request_shutdown(stop.grace).await
            } else {
                self.signal(backend, tree.clone(), graceful_signal(stop.signal))
                    .await
            };
            if let Err(error) = asked {
                tracing::warn!(service = %self.spec.name, error = %crate::report::Chain(&error), "graceful stop failed; killing");
            }
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
        if let Some(instance) = self.take_instance(backend.pid()) {
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
            let mut instance = instance;
            let _ = instance.last_output().await;
            retire(instance);
        }
        Ok(status)
    }

    /// With [`CommandSpec::start_on_demand`]: the listeners (bound now if they are not
    /// yet), watched for the first client.
    async fn demand(&self) -> Result<Option<Demand>, StartError> {
        if !self.spec.start_on_demand {
            return Ok(None);
        }
        self.listeners.connection_waiting().await.map(Some)
    }

    async fn on_exit(&self, backend: &BackendHandle, status: ExitStatus) -> LastOutput {
        let Some(instance) = self.take_instance(backend.pid()) else {
            return LastOutput::default();
        };
        tracing::debug!(service = %self.spec.name, pid = instance.main.pid(), %status, tree = %instance.tree.describe(), "main process exited; cleaning up its tree");
        self.clean_up(instance).await
    }
}

/// What a start needs, prepared before the fork.
struct Prepared {
    program: std::path::PathBuf,
    plan: platform::SpawnPlan,
    /// The service's user, for the ownership of a Unix-socket readiness.
    uid: Option<u32>,
    notify: Option<NotifyEndpoint>,
    /// Where the lines of stdout and stderr go, when they are read.
    sinks: [Option<LineSink>; 2],
    tail: Option<OutputTail>,
    cgroup: Option<InstanceCgroup>,
}

/// A started child, not ready yet.
struct Launched {
    handle: BackendHandle,
    tree: Arc<Tree>,
    /// The read ends of stdout and stderr, when piped.
    pipes: [Option<PipeReader>; 2],
}

/// What the readiness wait listens to.
struct Waits {
    notified: watch::Receiver<bool>,
    line: oneshot::Receiver<String>,
}

impl CommandSupervisor {
    /// Step 1: clean up an abandoned instance, refuse a port someone else holds, look up
    /// the user, bind the sd_notify socket, connect the streams, build the spawn plan and
    /// the cgroup.
    async fn prepare(&self) -> Result<Prepared, StartError> {
        let spec = &self.spec;
        // Normally cleaned up at its exit or stop; an instance still recorded here was
        // abandoned (its runtime went away): its tree goes before a new one starts.
        let previous = self.lock().take();
        if let Some(previous) = previous {
            self.clean_up(previous).await;
        }
        // The spec's listeners are bound (once) before anything else: a port that cannot
        // be had fails the start before any process exists.
        #[cfg(target_os = "linux")]
        let held = self.listeners.held().await?;
        #[cfg(target_os = "linux")]
        let ours = held.as_ref().map(|h| h.inodes()).unwrap_or_default();
        #[cfg(not(target_os = "linux"))]
        let ours = {
            self.listeners.unsupported()?;
            if spec.fd_store_max > 0 {
                return Err(SpecError::NeedsLinux("the file descriptor store").into());
            }
            Vec::new()
        };
        readiness::check_free(&spec.readiness, &ours).await?;
        let run_as = if launch::needs_user_lookup(spec) {
            let owned = spec.clone();
            blocking(move || launch::resolve_user(&owned)).await?
        } else {
            launch::resolve_user(spec)?
        };
        let notify = if self.needs_notify() {
            Some(notify::prepare(spec, run_as.uid.map(|uid| (uid, run_as.gid))).await?)
        } else {
            None
        };
        let extra_env = notify.as_ref().map(|n| n.env(spec)).unwrap_or_default();

        // Standard streams: a pipe wherever lines are read (a sink, a readiness pattern,
        // the last lines for the exit event).
        let watched = match &spec.readiness {
            Readiness::LogLine { stream, .. } => Some(*stream),
            _ => None,
        };
        let detached = !spec.die_with_supervisor;
        let (stdout, stdout_sink) =
            plan_output(&spec.stdout, watched == Some(StreamName::Stdout), detached).await?;
        let (stderr, stderr_sink) =
            plan_output(&spec.stderr, watched == Some(StreamName::Stderr), detached).await?;
        let tail = (stdout_sink.is_some() || stderr_sink.is_some()).then(OutputTail::default);

        // Everything else that touches the file system, in one trip to the blocking pool.
        // Services that outlive the supervisor get no cgroup: the keeper kills every tree
        // under the supervisor's cgroup when the supervisor exits.
        let want_cgroup = spec.die_with_supervisor && spec.cgroup;
        let owned = spec.clone();
        let for_plan = run_as.clone();
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let (launch::Launch { program, mut plan }, cgroup) = blocking(move || {
            launch::plan_with_cgroup(&owned, &for_plan, &extra_env, stdout, stderr, want_cgroup)
        })
        .await?;
        #[cfg(target_os = "linux")]
        {
            if let Some(held) = &held {
                plan.listen_fds = held.for_spawn().map_err(StartError::Spawn)?;
            }
            if let Some(store) = &self.fd_store {
                plan.listen_fds
                    .extend(store.for_spawn().map_err(StartError::Spawn)?);
            }
        }
        Ok(Prepared {
            program,
            plan,
            uid: run_as.uid,
            notify,
            sinks: [stdout_sink, stderr_sink],
            tail,
            cgroup,
        })
    }

    /// Step 2: fork and exec from the spawner thread (into the cgroup), map a failure to
    /// the start error that names the program, take the handle, report the spawn.
    async fn launch(
        &self,
        program: std::path::PathBuf,
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))] mut plan: platform::SpawnPlan,
        cgroup: Option<InstanceCgroup>,
        ctx: &SpawnContext,
    ) -> Result<Launched, StartError> {
        #[cfg(target_os = "linux")]
        {
            plan.cgroup = cgroup.clone();
        }
        let spawned = match platform::spawn(plan).await {
            Ok(spawned) => spawned,
            Err(error) => {
                #[cfg(target_os = "linux")]
                if error.stage == platform::SpawnStage::Cgroup {
                    // Not allowed to start processes in our cgroups after all (delegation
                    // rules): process groups from now on; this attempt is retried.
                    platform::cgroup::disable(&error.error);
                    return Err(StartError::Spawn(error.error));
                }
                return Err(launch::start_error(&program, error));
            }
        };
        let pid = spawned.pid;
        let tree = Arc::new(match cgroup {
            #[cfg(target_os = "linux")]
            Some(cgroup) => Tree::Cgroup(cgroup),
            #[cfg(not(target_os = "linux"))]
            Some(never) => match never {},
            None => Tree::Group { leader: pid },
        });
        let pipes = [spawned.stdout, spawned.stderr];
        let name = self.spec.name.clone();
        let handle =
            BackendHandle::from_spawned(spawned.handle, spawned.child, name, "", None).await?;
        tracing::debug!(service = %self.spec.name, pid, program = %program.display(), tree = %tree.describe(), "spawned");
        ctx.spawned_backend(&handle);
        *self.last_spawned.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((pid, handle.daemon().start_time));
        Ok(Launched {
            handle,
            tree,
            pipes,
        })
    }
}

/// Where descriptors attached to the service's sd_notify messages go: the file descriptor
/// store, if the spec has one (else they are closed).
#[cfg(target_os = "linux")]
type KeepFds = Option<Arc<super::listeners::linux::FdStore>>;
/// Elsewhere there is no fd store: always `None`.
#[cfg(not(target_os = "linux"))]
type KeepFds = Option<std::convert::Infallible>;

impl CommandSupervisor {
    fn keep_fds(&self) -> KeepFds {
        #[cfg(target_os = "linux")]
        return self.fd_store.clone();
        #[cfg(not(target_os = "linux"))]
        None
    }
}

/// Step 3: read the child's output (to its sinks, its tail and a readiness pattern) and
/// its sd_notify messages; the instance that owns all of it, and what readiness waits on.
#[allow(clippy::too_many_arguments)]
fn attach(
    spec: &CommandSpec,
    handle: &BackendHandle,
    tree: &Arc<Tree>,
    pipes: [Option<PipeReader>; 2],
    sinks: [Option<LineSink>; 2],
    notify: Option<NotifyEndpoint>,
    tail: Option<OutputTail>,
    ctx: &SpawnContext,
    keep_fds: KeepFds,
) -> (Instance, Waits) {
    let service: Arc<str> = spec.name.as_str().into();
    let (line_tx, line_rx) = oneshot::channel();
    let mut line_tx = Some(line_tx);
    let mut pumps = Vec::new();
    let names = [StreamName::Stdout, StreamName::Stderr];
    for ((pipe, sink), name) in pipes.into_iter().zip(sinks).zip(names) {
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
        pumps.push(pump(pipe, service.clone(), name, sink, watch, tail.clone()));
    }

    let (ready_tx, ready_rx) = watch::channel(false);
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut watchdog = None;
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut tasks = Vec::new();
    #[cfg(unix)]
    if let Some(endpoint) = &notify {
        let (beat_tx, beat_rx) = watch::channel(Instant::now());
        watchdog = Some(beat_rx);
        let member = tree.clone();
        let pid = handle.pid();
        let belongs = move |sender: u32| sender == pid || member.contains(sender);
        let store = move |message: &crate::protocol::sd_notify::NotifyMessage,
                          fds: Vec<std::os::fd::OwnedFd>| {
            #[cfg(target_os = "linux")]
            if let Some(store) = &keep_fds {
                store.apply(message, fds);
            }
            #[cfg(not(target_os = "linux"))]
            let _ = (message, fds, keep_fds);
        };
        let task = tokio::spawn(notify::read(
            endpoint.socket.clone(),
            belongs,
            ready_tx,
            beat_tx,
            ctx.clone(),
            store,
        ));
        tasks.push(task.abort_handle());
    }
    #[cfg(not(unix))]
    let _ = (ready_tx, ctx, keep_fds);
    let instance = Instance {
        main: handle.clone(),
        tree: tree.clone(),
        tail,
        pumps,
        watchdog,
        tasks,
        _notify: notify,
    };
    let waits = Waits {
        notified: ready_rx,
        line: line_rx,
    };
    (instance, waits)
}

impl CommandSupervisor {
    /// SIGKILL the whole tree of `backend` now, without waiting (for drops: the testing
    /// kit's ephemeral backends).
    pub(crate) fn kill_tree_now(&self, backend: &BackendHandle) {
        match self.tree_of(backend.pid()) {
            Some(tree) => tree.kill_all(backend),
            None => Tree::Group {
                leader: backend.pid(),
            }
            .kill_all(backend),
        }
    }

    /// The graceful signal: to the whole tree with [`KillMode::ControlGroup`] (from the
    /// blocking pool: a cgroup's members are read from its files), else to the main
    /// process only.
    #[cfg(unix)]
    async fn signal(
        &self,
        backend: &BackendHandle,
        tree: Option<Arc<Tree>>,
        signal: i32,
    ) -> Result<(), BackendHandleError> {
        match (tree, self.spec.stop.kill_mode) {
            (Some(tree), KillMode::ControlGroup) => {
                let backend = backend.clone();
                let _ = blocking(move || tree.signal_all(&backend, signal)).await;
                Ok(())
            }
            _ => backend.signal(signal),
        }
    }

    #[cfg(not(unix))]
    async fn signal(
        &self,
        backend: &BackendHandle,
        _tree: Option<Arc<Tree>>,
        _signal: i32,
    ) -> Result<(), BackendHandleError> {
        backend.force_kill()
    }
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
async fn kill_rest(tree: &Tree, main: &BackendHandle) {
    tree.kill_all(main);
    if !tree.wait_empty(main.pid(), TREE_KILL_DEADLINE).await {
        tracing::warn!(tree = %tree.describe(), "processes survived the kill of their tree within {TREE_KILL_DEADLINE:?}");
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

fn pump(
    pipe: PipeReader,
    service: Arc<str>,
    name: StreamName,
    sink: LineSink,
    watch: Option<LineWatch>,
    tail: Option<OutputTail>,
) -> JoinHandle<()> {
    pump_lines(pipe, service, name.as_str(), sink, watch, tail)
}

/// How one standard stream is connected, and `Some(sink)` when its lines are read.
///
/// A daemon that outlives the supervisor (`detached`) must not write into a pipe only the
/// supervisor reads: once the supervisor is gone, its next write would raise SIGPIPE. Its
/// discarded output goes to `/dev/null` and its file output straight to the file (no
/// rotation and no last lines then); only a log-line readiness or `tracing` still needs the
/// pipe, for as long as the supervisor lives.
async fn plan_output(
    output: &Output,
    watched: bool,
    detached: bool,
) -> Result<(Stdio, Option<LineSink>), StartError> {
    Ok(match (output, watched) {
        (Output::Inherit, false) => (Stdio::Inherit, None),
        (Output::Null, false) if detached => (Stdio::Null, None),
        (Output::File { path, rotate }, false) if detached => {
            if rotate.is_some() {
                return Err(SpecError::RotationOfDetached(path.clone()).into());
            }
            (Stdio::File(open_append(path).await?), None)
        }
        // Read and dropped: the lines still reach the readiness watch and the tail.
        (Output::Null, _) => (Stdio::Pipe, Some(LineSink::Discard)),
        (Output::File { path, rotate }, _) => {
            let rotation = rotate.map(|r| (r.max_bytes, r.keep));
            (
                Stdio::Pipe,
                Some(LineSink::File(open_log(path, rotation).await?)),
            )
        }
        // Lines must be read anyway: an inherited stream is forwarded to tracing.
        (Output::Tracing, _) | (Output::Inherit, true) => (Stdio::Pipe, Some(LineSink::Tracing)),
    })
}

/// Open `path` for appending, for a child that writes it itself.
async fn open_append(path: &Path) -> Result<std::fs::File, StartError> {
    open_output(path, |path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    })
    .await
}

/// Open `path` for the file sink (rotated per `rotation`).
async fn open_log(path: &Path, rotation: Option<(u64, u32)>) -> Result<LogFile, StartError> {
    open_output(path, move |path| LogFile::open(path, rotation)).await
}

/// Open an output file on the blocking pool; a failure names the file.
async fn open_output<T: Send + 'static>(
    path: &Path,
    open: impl FnOnce(&Path) -> std::io::Result<T> + Send + 'static,
) -> Result<T, StartError> {
    let owned = path.to_owned();
    blocking(move || open(&owned))
        .await
        .map_err(|source| StartError::Prepare {
            what: "the output file",
            path: path.to_owned(),
            source,
        })
}

async fn unix_connect(path: &Path) -> Result<(), HealthError> {
    #[cfg(unix)]
    {
        tokio::net::UnixStream::connect(path)
            .await
            .map(drop)
            .map_err(|source| {
                CheckError::Connect {
                    address: path.display().to_string(),
                    source,
                }
                .into()
            })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Err(CheckError::NeedsUnix.into())
    }
}

/// Kills a backend's whole tree when its start was abandoned, unless disarmed once it is
/// ready (or its exit is being handled).
struct KillUnlessReady(Option<(BackendHandle, Arc<Tree>)>);

impl KillUnlessReady {
    fn disarm(mut self) {
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
