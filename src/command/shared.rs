//! One daemon shared by many processes: adopt it if a verified one runs, else spawn it,
//! under an exclusive lock so that processes starting at once end up with exactly one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::broadcast;

use super::spec::{CommandSpec, Readiness};
use super::supervisor::CommandSupervisor;
use crate::handle::BackendHandle;
use crate::handle::BackendHandleError;
use crate::protocol::CacheManifest;
use crate::supervision::event::EventSink;
use crate::supervision::{SpawnContext, StartError, Supervisor};

/// Default time to wait for another process holding the lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// What to do when the running daemon's executable digest is not the expected one (the
/// application was upgraded while an older daemon kept running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestPolicy {
    /// Use the running daemon anyway.
    Reuse,
    /// Stop it gracefully (with escalation) and spawn the expected one.
    #[default]
    Replace,
    /// Fail with [`SharedError::DigestMismatch`].
    Refuse,
}

/// How [`SharedDaemon::acquire`] got its handle.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Acquired {
    /// A verified daemon was already running and is reused.
    Adopted(BackendHandle),
    /// This call spawned the daemon.
    Spawned(BackendHandle),
}

impl Acquired {
    /// The handle, however it was acquired.
    pub fn handle(&self) -> &BackendHandle {
        match self {
            Acquired::Adopted(h) | Acquired::Spawned(h) => h,
        }
    }

    /// `true` if this call spawned the daemon, `false` if it adopted a running one.
    pub fn was_spawned(&self) -> bool {
        matches!(self, Acquired::Spawned(_))
    }

    /// The handle, by value.
    pub fn into_handle(self) -> BackendHandle {
        match self {
            Acquired::Adopted(h) | Acquired::Spawned(h) => h,
        }
    }
}

/// Why a shared daemon could not be acquired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedError {
    /// The spec does not use manifest readiness, which sharing relies on.
    #[error("a shared daemon needs `Readiness::Manifest` (the manifest is how others find it)")]
    NeedsManifest,
    /// Another process held the lock for longer than the timeout.
    #[error("timed out after {0:?} waiting for the lock {1:?}")]
    LockTimeout(Duration, PathBuf),
    /// The lock file could not be opened or locked.
    #[error("cannot lock {path:?}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The running daemon runs another executable than expected, and the policy refuses it.
    #[error("the running daemon (pid {pid}) has executable digest {actual}, expected {expected}")]
    DigestMismatch {
        /// The daemon's PID.
        pid: u32,
        /// The expected digest (hex).
        expected: String,
        /// The running daemon's digest (hex).
        actual: String,
    },
    /// Replacing an outdated daemon failed.
    #[error("stopping the outdated daemon failed")]
    Replace(#[source] BackendHandleError),
    /// Spawning the daemon failed.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A daemon that several processes share: the first caller spawns it, everyone else adopts
/// it, and a stale manifest (dead or recycled PID, another boot, a replaced binary) is never
/// adopted.
///
/// # Who keeps it alive, and how
///
/// The daemon outlives the process that spawned it (the spec's `die_with_supervisor` is
/// turned off), and no caller holds it up: neither the spawner nor a [`BackendHandle`]
/// keeps it running. It stays up until it is stopped, or, if it was started with an idle
/// timeout ([`DaemonProcess::idle_timeout_secs`](crate::DaemonProcess::idle_timeout_secs),
/// enforced by its [`Responder`](crate::protocol::Responder)), until nobody has used it for
/// that long:
///
/// - every caller that connects resets the clock: `acquire` itself (its identity probe),
///   [`BackendHandle::ping`], [`BackendHandle::connect`], any connection to its socket;
/// - an open connection holds it for as long as the daemon keeps it open (an application
///   connection from `connect`, a control connection while a probe or ping runs);
/// - nothing else keeps it alive: a caller that holds only a handle, or merely runs, does
///   not. A caller that needs the daemon for a long stretch without talking to it keeps a
///   connection open.
///
/// The next `acquire` after it exited spawns a new one. A caller that adopted it just as
/// it idled out sees it exit (on [`BackendHandle::liveness`] or
/// [`BackendHandle::exited`]) and acquires again.
///
/// ```no_run
/// use running_process::command::{CommandSpec, Readiness, SharedDaemon};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let spec = CommandSpec::new("cache", "/usr/lib/my-app/cache-daemon")
///     .readiness(Readiness::Manifest { path: "/run/user/1000/my-app/cache.json".into() });
/// let cache = SharedDaemon::new(spec)?.acquire().await?.into_handle();
/// let _stream = cache.connect().await?.into_inner();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SharedDaemon {
    supervisor: CommandSupervisor,
    manifest: PathBuf,
    lock_timeout: Duration,
    expected: Option<([u8; 32], DigestPolicy)>,
}

impl SharedDaemon {
    /// A shared daemon described by `spec`, which must use [`Readiness::Manifest`].
    pub fn new(spec: CommandSpec) -> Result<Self, SharedError> {
        let Readiness::Manifest { path } = &spec.readiness else {
            return Err(SharedError::NeedsManifest);
        };
        let manifest = path.clone();
        Ok(SharedDaemon {
            supervisor: CommandSupervisor::new(spec.die_with_supervisor(false)),
            manifest,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            expected: None,
        })
    }

    /// How long to wait for another process holding the lock (default
    /// [`DEFAULT_LOCK_TIMEOUT`]; it should exceed the daemon's ready timeout).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Expect the daemon's executable to have this SHA-256; `policy` says what to do with a
    /// running daemon that has another.
    pub fn expect_digest(mut self, sha256: [u8; 32], policy: DigestPolicy) -> Self {
        self.expected = Some((sha256, policy));
        self
    }

    /// Adopt the verified running daemon, or spawn one and wait until it is ready. Holds an
    /// exclusive OS file lock next to the manifest meanwhile (`<manifest>.lock`, released if
    /// this process dies). A daemon that cleans up after itself may remove that file, and
    /// its manifest, while it holds the lock (a lock taken on a file removed meanwhile is
    /// retaken on the new one).
    pub async fn acquire(&self) -> Result<Acquired, SharedError> {
        let _lock = self.lock().await?;
        match self.adoptable().await? {
            Some(handle) => Ok(Acquired::Adopted(handle)),
            None => {
                let (tx, _) = broadcast::channel(16);
                let ctx = SpawnContext::new(EventSink::new(self.supervisor.name().to_owned(), tx));
                let deadline = self.supervisor.ready_timeout();
                let handle = tokio::time::timeout(deadline, self.supervisor.spawn(&ctx))
                    .await
                    .map_err(|_| StartError::ReadyTimeout(deadline))??;
                tracing::info!(service = %self.supervisor.name(), pid = handle.pid(), "spawned shared daemon");
                Ok(Acquired::Spawned(handle))
            }
        }
    }

    /// The running daemon if it passes verification and the digest policy.
    async fn adoptable(&self) -> Result<Option<BackendHandle>, SharedError> {
        let manifest = match CacheManifest::read(&self.manifest).await {
            Ok(Some(manifest)) => manifest,
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::warn!(error = %crate::report::Chain(&error), "unreadable manifest; spawning a new daemon");
                return Ok(None);
            }
        };
        let handle = match BackendHandle::try_from_manifest(&manifest).await {
            Ok(Some(handle)) => handle,
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::info!(error = %crate::report::Chain(&error), "recorded daemon not trusted; spawning a new one");
                return Ok(None);
            }
        };
        let Some((expected, policy)) = self.expected else {
            return Ok(Some(handle));
        };
        if handle.daemon().exe_sha256 == expected {
            return Ok(Some(handle));
        }
        match policy {
            DigestPolicy::Reuse => Ok(Some(handle)),
            DigestPolicy::Refuse => Err(SharedError::DigestMismatch {
                pid: handle.pid(),
                expected: crate::hex::encode(&expected),
                actual: handle.daemon().exe_sha256_hex(),
            }),
            DigestPolicy::Replace => {
                tracing::info!(
                    pid = handle.pid(),
                    "replacing a daemon built from another executable"
                );
                self.supervisor
                    .stop(&handle)
                    .await
                    .map_err(SharedError::Replace)?;
                Ok(None)
            }
        }
    }

    /// The exclusive lock on `<manifest>.lock`, waited for on the blocking pool.
    async fn lock(&self) -> Result<File, SharedError> {
        let mut name = self.manifest.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let for_task = path.clone();
        let task = tokio::task::spawn_blocking(move || lock_file(&for_task));
        // On timeout the blocking task still takes the lock eventually and releases it at
        // once, when its file is dropped with the unused result.
        match tokio::time::timeout(self.lock_timeout, task).await {
            Err(_) => Err(SharedError::LockTimeout(self.lock_timeout, path)),
            Ok(Err(join)) => Err(SharedError::Lock {
                path,
                source: std::io::Error::other(join),
            }),
            Ok(Ok(result)) => result.map_err(|source| SharedError::Lock { path, source }),
        }
    }
}

fn lock_file(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::protocol::manifest::create_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    crate::platform::private_no_follow(&mut options);
    loop {
        let file = options.open(path)?;
        // flock(2) on Unix, LockFileEx on Windows; released when the file closes or we die.
        file.lock()?;
        // Whoever holds the lock may remove the file (a daemon cleaning up after itself on
        // a clean exit): if the path no longer names the file we locked, lock the new one.
        if crate::platform::still_names(path, &file)? {
            return Ok(file);
        }
    }
}
