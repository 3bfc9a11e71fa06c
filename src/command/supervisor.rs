//! [`CommandSupervisor`]: a ready [`Supervisor`] for OS commands described by a
//! [`CommandSpec`], so the common case needs no trait implementation.
//!
//! Each instance is a whole process tree (its cgroup, else its process group): spawned
//! from the spawner thread with its pidfd from the fork, made ready only by its own
//! processes, stopped per [`KillMode`], and when its main process dies by itself, the rest
//! of the tree is killed before the runtime starts a replacement.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::checks;
use super::instance::Current;
use super::listeners::{FdStore, Listeners};
use super::readiness::{self, ReadyWait};
use super::spec::{CommandSpec, KillMode, Readiness};
use super::start;
use super::stop::{self, kill_rest, KillUnlessReady};
use crate::handle::{BackendHandle, BackendHandleError, ExitStatus};
use crate::platform::UsageFrom;
use crate::protocol::CacheManifest;
use crate::supervision::{
    Demand, HealthError, HealthPolicy, LastOutput, ResourceUsage, RestartPolicy, SpawnContext,
    StartError, Supervisor, UsageSampler, UsageSource,
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
    /// The file descriptor store (size 0 when the spec has none).
    fd_store: Arc<FdStore>,
    current: Current,
    /// (pid, start time) of the last process spawned: a manifest that still records it
    /// after it died is our own leftover, not a stranger to report.
    last_spawned: Mutex<Option<(u32, u64)>>,
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
            fd_store: Arc::new(FdStore::new(spec.fd_store_max)),
            spec,
            current: Current::default(),
            last_spawned: Mutex::new(None),
        }
    }

    /// The spec.
    pub fn spec(&self) -> &CommandSpec {
        &self.spec
    }

    /// SIGKILL the whole tree of `backend` now, without waiting (for drops: the testing
    /// kit's ephemeral backends).
    pub(crate) fn kill_tree_now(&self, backend: &BackendHandle) {
        stop::kill_tree_now(&self.current, backend);
    }

    /// SIGKILL the whole tree of the instance running now, if any, without waiting (for
    /// drops: the testing kit's ephemeral stacks).
    #[cfg_attr(not(feature = "toml"), allow(dead_code))] // the testing kit's stacks (feature `toml`)
    pub(crate) fn kill_current_now(&self) {
        self.current.kill_now();
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
    async fn adopt(&self) -> Result<Option<BackendHandle>, BackendHandleError> {
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
        let spec = &self.spec;
        let plan = start::prepare(spec, &self.current, &self.listeners, &self.fd_store).await?;
        let uid = plan.uid;
        let launched = start::launch(spec, plan, ctx).await?;
        let (handle, tree) = (launched.handle.clone(), launched.tree.clone());
        *self.last_spawned.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((handle.pid(), handle.daemon().start_time));
        // Until it is ready, a dropped (cancelled, timed out) spawn kills what it started.
        let guard = KillUnlessReady::new(&handle, &tree);
        let (mut instance, waits) = start::attach(&self.spec, launched, ctx, self.fd_store.clone());
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
        self.current.set(instance);
        Ok(handle)
    }

    async fn health_check(&self, backend: &BackendHandle) -> Result<(), HealthError> {
        let Some(health) = &self.spec.health else {
            return Ok(());
        };
        let last_beat = self.current.last_beat(backend.pid());
        checks::run_health_check(health, backend, self.spec.cwd.as_deref(), last_beat).await
    }

    /// The spec's stop, per [`KillMode`]: the graceful signal (or socket request) to the
    /// tree or the main process, the grace period for the main process and then the rest
    /// to exit, then SIGKILL to whatever is left, and wait until the tree is empty.
    async fn stop(&self, backend: &BackendHandle) -> Result<ExitStatus, BackendHandleError> {
        stop::stop(&self.spec, &self.current, backend).await
    }

    /// With [`CommandSpec::start_on_demand`]: the listeners (bound now if they are not
    /// yet), watched for the first client.
    async fn demand(&self) -> Result<Option<Demand>, StartError> {
        if !self.spec.start_on_demand {
            return Ok(None);
        }
        self.listeners.connection_waiting().await.map(Some)
    }

    /// The instance's tree: its cgroup's files, or `/proc` (see
    /// [`ResourceUsage`](crate::supervision::ResourceUsage)); none off Linux.
    fn usage_sampler(&self, backend: &BackendHandle) -> Option<UsageSampler> {
        if !crate::platform::HAS_CGROUPS {
            // Nothing to read off Linux (`/proc` and cgroups are Linux's).
            return None;
        }
        let pid = backend.pid();
        let tree = self.current.tree_of(pid)?;
        Some(Arc::new(move || {
            let read = tree.usage(pid);
            let source = match read.source {
                UsageFrom::Cgroup => UsageSource::Cgroup,
                UsageFrom::CgroupAndProc => UsageSource::CgroupAndProc,
                UsageFrom::Proc => UsageSource::Proc,
                UsageFrom::Nothing => return None,
            };
            let mut usage = ResourceUsage::new(source);
            usage.cpu_usec = read.cpu_usec;
            usage.memory_bytes = read.memory;
            usage.memory_peak_bytes = read.memory_peak;
            usage.tasks = read.tasks;
            Some(usage)
        }))
    }

    async fn on_exit(&self, backend: &BackendHandle, status: ExitStatus) -> LastOutput {
        let Some(instance) = self.current.take(backend.pid()) else {
            return LastOutput::default();
        };
        tracing::debug!(service = %self.spec.name, pid = instance.main.pid(), %status, tree = %instance.tree.describe(), "main process exited; cleaning up its tree");
        stop::clean_up(self.spec.stop.kill_mode, instance).await
    }
}
