//! Fake backends: the supervision loop without processes, for testing restart policies and
//! event handling under tokio's paused time (feature `test-util`).
//!
//! A [`FakeSupervisor`] is a [`Supervisor`] whose "processes" are [`FakeProcess`] values:
//! the test crashes them, hangs them, makes them unhealthy, scripts how the next spawn or
//! probe goes, and watches the real runtime react. Nothing runs and nothing sleeps for real:
//! with `#[tokio::test(start_paused = true)]` a 30 s backoff or a 5 s stop grace passes
//! instantly and exactly.
//!
//! ```
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use running_process::supervision::{supervise, EventKind, RestartPolicy};
//! use running_process::testing::fake::FakeSupervisor;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let fake = FakeSupervisor::new("cache").restart_policy(RestartPolicy::default());
//! let service = supervise(Arc::new(fake.clone()));
//! let mut events = service.events();
//!
//! let first = fake.nth_spawned(1).await;
//! first.crash();
//! let second = fake.nth_spawned(2).await;          // restarted after the backoff
//! assert_ne!(first.pid(), second.pid());
//! while let Some(Ok(event)) = events.next().await {
//!     if matches!(event.kind, EventKind::RestartScheduled { .. }) { break }
//! }
//! service.stop().await;
//! assert!(!second.is_alive());
//! # }
//! ```

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::handle::signals::ProcessControl;
use crate::handle::BackendHandleError;
use crate::handle::{BackendHandle, ExitStatus, Liveness};
use crate::identity::{DaemonProcess, Endpoint};
use crate::supervision::{
    HealthError, HealthPolicy, RestartPolicy, SpawnContext, StartError, Supervisor,
    DEFAULT_READY_TIMEOUT, DEFAULT_STOP_GRACE,
};

/// The first PID handed to a fake process. Fake PIDs count up from here, above Linux's
/// largest possible PID (`PID_MAX_LIMIT`, 4,194,304), so they never name a real process.
pub const FAKE_PID_BASE: u32 = 4_200_000;

static NEXT_PID: AtomicU32 = AtomicU32::new(FAKE_PID_BASE);

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// How the next spawn of a [`FakeSupervisor`] goes (see [`FakeSupervisor::queue_spawn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FakeSpawn {
    /// Ready at once. What every spawn does when nothing is queued.
    Ready,
    /// Ready after this much (tokio) time.
    ReadyAfter(Duration),
    /// The program cannot be started: [`StartError::Spawn`] with this message.
    Fail(String),
    /// Started, but never ready: the runtime's ready timeout ends it (and kills it).
    Hang,
    /// Started, then exits with this status before it is ready.
    ExitBeforeReady(ExitStatus),
}

/// How a fake process answers health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Healthy,
    Unhealthy(String),
    /// Checks never complete and graceful stops are ignored: only a kill ends it.
    Hung,
}

/// One scripted answer to [`Supervisor::adopt`].
#[derive(Debug)]
enum ProbeScript {
    Reject(BackendHandleError),
    Adopt(FakeProcess),
}

/// A supervisor of fake backends. Cheap to clone: clones share the script and the
/// processes, so a test keeps one clone to drive what the runtime supervises.
#[derive(Debug, Clone)]
pub struct FakeSupervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    config: Mutex<Config>,
    script: Mutex<Script>,
    /// Every process a spawn created, in order.
    spawned: watch::Sender<Vec<FakeProcess>>,
    spawn_attempts: AtomicU64,
}

#[derive(Debug, Clone)]
struct Config {
    restart_policy: RestartPolicy,
    health_policy: Option<HealthPolicy>,
    ready_timeout: Duration,
    stop_grace: Duration,
}

#[derive(Debug, Default)]
struct Script {
    spawns: VecDeque<FakeSpawn>,
    probes: VecDeque<ProbeScript>,
    /// Processes offered for adoption, so health checks find them too.
    adoptable: Vec<FakeProcess>,
}

impl FakeSupervisor {
    /// A fake service called `name` with the default policies: [`RestartPolicy::default`],
    /// no health checks, [`DEFAULT_READY_TIMEOUT`] and [`DEFAULT_STOP_GRACE`].
    pub fn new(name: impl Into<String>) -> Self {
        FakeSupervisor {
            inner: Arc::new(Inner {
                name: name.into(),
                config: Mutex::new(Config {
                    restart_policy: RestartPolicy::default(),
                    health_policy: None,
                    ready_timeout: DEFAULT_READY_TIMEOUT,
                    stop_grace: DEFAULT_STOP_GRACE,
                }),
                script: Mutex::default(),
                spawned: watch::Sender::new(Vec::new()),
                spawn_attempts: AtomicU64::new(0),
            }),
        }
    }

    /// Builder steps change the configuration every clone shares (also while supervised:
    /// the runtime reads the policies at each use).
    fn configure(self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.inner.config());
        self
    }

    /// The restart policy the runtime applies.
    pub fn restart_policy(self, policy: RestartPolicy) -> Self {
        self.configure(|c| c.restart_policy = policy)
    }

    /// Run health checks with this policy (answered by each [`FakeProcess`]'s health).
    pub fn health_policy(self, policy: HealthPolicy) -> Self {
        self.configure(|c| c.health_policy = Some(policy))
    }

    /// The deadline of one spawn (see [`FakeSpawn::Hang`]).
    pub fn ready_timeout(self, timeout: Duration) -> Self {
        self.configure(|c| c.ready_timeout = timeout)
    }

    /// The grace between the graceful stop and the kill (see [`FakeProcess::hang`]).
    pub fn stop_grace(self, grace: Duration) -> Self {
        self.configure(|c| c.stop_grace = grace)
    }

    /// Script the next spawn that has no script yet. Spawns with nothing queued are
    /// [`FakeSpawn::Ready`].
    pub fn queue_spawn(&self, spawn: FakeSpawn) {
        self.inner.script().spawns.push_back(spawn);
    }

    /// The next [`Supervisor::adopt`] finds a recorded backend that fails verification with
    /// `error` (the runtime reports `EventKind::ProbeRejected` and spawns).
    pub fn reject_next_probe(&self, error: BackendHandleError) {
        self.inner
            .script()
            .probes
            .push_back(ProbeScript::Reject(error));
    }

    /// A backend "already running" that the next probe finds, so the runtime adopts it
    /// instead of spawning. Returns it, to drive it like any other.
    pub fn offer_running_backend(&self) -> FakeProcess {
        let process = FakeProcess::new(&self.inner.name);
        let mut script = self.inner.script();
        script.adoptable.push(process.clone());
        script.probes.push_back(ProbeScript::Adopt(process.clone()));
        process
    }

    /// How many times the runtime called [`Supervisor::spawn`] (successful or not).
    pub fn spawn_attempts(&self) -> u64 {
        self.inner.spawn_attempts.load(Ordering::Relaxed)
    }

    /// Every process a spawn has created so far, oldest first.
    pub fn spawned(&self) -> Vec<FakeProcess> {
        self.inner.spawned.borrow().clone()
    }

    /// The `n`-th process spawned (1-based), waiting until it has been created. Wrap it in a
    /// timeout if the spawn might never come.
    pub async fn nth_spawned(&self, n: usize) -> FakeProcess {
        let n = n.max(1);
        let mut spawned = self.inner.spawned.subscribe();
        let list = spawned
            .wait_for(|list| list.len() >= n)
            .await
            .expect("the sender lives in `self`");
        list[n - 1].clone()
    }

    /// The fake process behind a handle this supervisor produced.
    pub fn process_of(&self, backend: &BackendHandle) -> Option<FakeProcess> {
        let pid = backend.pid();
        let found = self
            .inner
            .spawned
            .borrow()
            .iter()
            .find(|p| p.pid() == pid)
            .cloned();
        found.or_else(|| {
            let script = self.inner.script();
            script.adoptable.iter().find(|p| p.pid() == pid).cloned()
        })
    }
}

impl Inner {
    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn config(&self) -> MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Kills a process whose spawn was abandoned (ready timeout, stop), like a real spawn that
/// is dropped before its handle exists.
struct KillUnlessReady(Option<FakeProcess>);

impl Drop for KillUnlessReady {
    fn drop(&mut self) {
        if let Some(process) = self.0.take() {
            process.exit(ExitStatus::Signal(SIGKILL));
        }
    }
}

#[async_trait]
impl Supervisor for FakeSupervisor {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn spawn(&self, ctx: &SpawnContext) -> Result<BackendHandle, StartError> {
        self.inner.spawn_attempts.fetch_add(1, Ordering::Relaxed);
        let how = self
            .inner
            .script()
            .spawns
            .pop_front()
            .unwrap_or(FakeSpawn::Ready);
        if let FakeSpawn::Fail(message) = how {
            return Err(StartError::Spawn(std::io::Error::other(message)));
        }
        let process = FakeProcess::new(&self.inner.name);
        self.inner
            .spawned
            .send_modify(|list| list.push(process.clone()));
        ctx.spawned_backend(&process.handle());
        let mut guard = KillUnlessReady(Some(process.clone()));
        match how {
            FakeSpawn::Ready | FakeSpawn::Fail(_) => {}
            FakeSpawn::ReadyAfter(delay) => tokio::time::sleep(delay).await,
            FakeSpawn::Hang => std::future::pending::<()>().await,
            FakeSpawn::ExitBeforeReady(status) => {
                guard.0 = None;
                process.exit(status);
                return Err(StartError::ExitedBeforeReady {
                    status,
                    output: crate::supervision::LastOutput::default(),
                });
            }
        }
        guard.0 = None;
        Ok(process.handle())
    }

    async fn adopt(&self) -> Result<Option<BackendHandle>, BackendHandleError> {
        let next = self.inner.script().probes.pop_front();
        match next {
            None => Ok(None),
            Some(ProbeScript::Reject(error)) => Err(error),
            Some(ProbeScript::Adopt(process)) => Ok(Some(process.handle())),
        }
    }

    async fn health_check(&self, backend: &BackendHandle) -> Result<(), HealthError> {
        let Some(process) = self.process_of(backend) else {
            return Err(HealthError::Failed(format!(
                "pid {} is not a fake backend of {}",
                backend.pid(),
                self.inner.name
            )));
        };
        process.answer_health_check().await
    }

    fn health_policy(&self) -> Option<HealthPolicy> {
        self.inner.config().health_policy
    }

    fn restart_policy(&self) -> RestartPolicy {
        self.inner.config().restart_policy.clone()
    }

    fn ready_timeout(&self) -> Duration {
        self.inner.config().ready_timeout
    }

    async fn stop(&self, backend: &BackendHandle) -> Result<ExitStatus, BackendHandleError> {
        let grace = self.inner.config().stop_grace;
        backend.stop(grace).await
    }
}

/// One fake backend "process": no process at all, just the state a test drives. Cheap to
/// clone; clones are the same process.
///
/// It answers like a real one: [`crash`](FakeProcess::crash) ends it as the kernel would
/// report an exit; a graceful stop ends it with `Signal(15)`, a kill with `Signal(9)` (on
/// every platform, Windows included: the graceful stop of a fake is its scripted terminate,
/// not the socket request a real Windows backend gets).
#[derive(Debug, Clone)]
pub struct FakeProcess {
    inner: Arc<ProcessState>,
}

#[derive(Debug)]
struct ProcessState {
    daemon: DaemonProcess,
    service: String,
    liveness: watch::Sender<Liveness>,
    health: Mutex<Health>,
    health_checks: AtomicU64,
}

impl FakeProcess {
    fn new(service: &str) -> Self {
        let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
        let daemon = DaemonProcess {
            pid,
            start_time: u64::from(pid),
            boot_id: "fake".to_owned(),
            exe_path: PathBuf::from(format!("fake:{service}")),
            exe_sha256: [0; 32],
            ipc_endpoint: Endpoint::new(service, ""),
            started_at_unix_ms: crate::identity::daemon_process::unix_ms_now(),
            idle_timeout_secs: None,
        };
        FakeProcess {
            inner: Arc::new(ProcessState {
                daemon,
                service: service.to_owned(),
                liveness: watch::Sender::new(Liveness::Alive),
                health: Mutex::new(Health::Healthy),
                health_checks: AtomicU64::new(0),
            }),
        }
    }

    /// Its fake PID (at least [`FAKE_PID_BASE`]).
    pub fn pid(&self) -> u32 {
        self.inner.daemon.pid
    }

    /// A handle to it, as the runtime holds it. It has no socket: `connect` and `ping` fail
    /// with `BackendHandleError::Connect`; liveness, `exited`, signals and `stop` work.
    pub fn handle(&self) -> BackendHandle {
        BackendHandle::scripted(
            self.inner.daemon.clone(),
            self.inner.service.clone(),
            "fake".to_owned(),
            self.inner.clone(),
            self.inner.liveness.subscribe(),
        )
    }

    /// Whether it still "runs".
    pub fn is_alive(&self) -> bool {
        self.inner.liveness.borrow().is_alive()
    }

    /// Resolves when it has exited, with the status.
    pub async fn exited(&self) -> ExitStatus {
        let mut state = self.inner.liveness.subscribe();
        match state.wait_for(|s| !s.is_alive()).await.map(|s| *s) {
            Ok(Liveness::Exited(status)) => status,
            _ => ExitStatus::Unknown,
        }
    }

    /// Make it exit with `status` (the first exit wins; later calls do nothing).
    pub fn exit(&self, status: ExitStatus) {
        self.inner.exit(status);
    }

    /// Make it crash: exit with code 1.
    pub fn crash(&self) {
        self.exit(ExitStatus::Code(1));
    }

    /// Make it hang: health checks never complete (the health policy's timeout fails them)
    /// and graceful stops are ignored, so only the kill after the stop grace ends it.
    pub fn hang(&self) {
        *self.inner.health() = Health::Hung;
    }

    /// Make its health checks fail with `reason` (it keeps running).
    pub fn make_unhealthy(&self, reason: impl Into<String>) {
        *self.inner.health() = Health::Unhealthy(reason.into());
    }

    /// Make it healthy again (also ends a hang).
    pub fn make_healthy(&self) {
        *self.inner.health() = Health::Healthy;
    }

    /// How many health checks it has been asked so far.
    pub fn health_checks(&self) -> u64 {
        self.inner.health_checks.load(Ordering::Relaxed)
    }

    async fn answer_health_check(&self) -> Result<(), HealthError> {
        self.inner.health_checks.fetch_add(1, Ordering::Relaxed);
        let health = self.inner.health().clone();
        match health {
            Health::Healthy => Ok(()),
            Health::Unhealthy(reason) => Err(HealthError::Failed(reason)),
            Health::Hung => std::future::pending().await,
        }
    }
}

impl ProcessState {
    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn exit(&self, status: ExitStatus) {
        let exited = self.liveness.send_if_modified(|state| {
            let alive = state.is_alive();
            if alive {
                *state = Liveness::Exited(status);
            }
            alive
        });
        if exited {
            tracing::debug!(pid = self.daemon.pid, %status, "fake backend exited");
        }
    }

    fn is_hung(&self) -> bool {
        *self.health() == Health::Hung
    }
}

impl ProcessControl for ProcessState {
    fn kill(&self) -> std::io::Result<()> {
        self.exit(ExitStatus::Signal(SIGKILL));
        Ok(())
    }

    fn terminate(&self) -> std::io::Result<()> {
        if self.is_hung() {
            tracing::debug!(
                pid = self.daemon.pid,
                "hung fake backend ignores the graceful stop"
            );
        } else {
            self.exit(ExitStatus::Signal(SIGTERM));
        }
        Ok(())
    }

    /// A fake has no socket, but its graceful stop is scripted on every platform: on Windows
    /// too, `GracefulStop::Auto` terminates it (and a hung one waits out the grace).
    fn can_terminate(&self) -> bool {
        true
    }

    #[cfg(unix)]
    fn signal(&self, signal: i32) -> std::io::Result<()> {
        match signal {
            SIGKILL => self.kill(),
            0 => Ok(()),
            _ if self.is_hung() => Ok(()),
            _ => {
                self.exit(ExitStatus::Signal(signal));
                Ok(())
            }
        }
    }
}
