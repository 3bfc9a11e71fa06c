//! [`EphemeralBackend`]: a real daemon started for one test, gone when the test is.

use crate::blocking::blocking;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::command::private_dir::PrivateDir;
use crate::command::{CommandSpec, CommandSupervisor, Output};
use crate::handle::BackendHandle;
use crate::supervision::event::EventSink;
use crate::supervision::{SpawnContext, StartError, Supervisor};

/// A daemon started for one test; gone when this value is dropped.
///
/// ```no_run
/// use running_process::command::{CommandSpec, Readiness};
/// use running_process::testing::EphemeralBackend;
///
/// # async fn a_test() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = EphemeralBackend::start(|dir| {
///     CommandSpec::new("my-daemon", "/path/to/my-daemon")
///         .args(["--socket", &dir.join("d.sock").display().to_string()])
///         .readiness(Readiness::Manifest { path: dir.join("d.json") })
/// })
/// .await?;
/// let _stream = backend.handle().connect().await?.into_inner();
/// // ... exercise it; dropping `backend` stops it and removes its directory.
/// # Ok(()) }
/// ```
pub struct EphemeralBackend {
    handle: BackendHandle,
    log: PathBuf,
    // Declared last: dropped after the process is killed.
    _supervisor: Arc<CommandSupervisor>,
    dir: PrivateDir,
}

impl EphemeralBackend {
    /// Build the spec with `make_spec(dir)` (put every path of the daemon inside `dir`),
    /// start it and wait until it is ready. Its stdout and stderr go to a log file in `dir`;
    /// it dies with the test process.
    pub async fn start(make_spec: impl FnOnce(&Path) -> CommandSpec) -> Result<Self, StartError> {
        let dir = blocking(|| PrivateDir::create("test"))
            .await
            .map_err(|source| StartError::Prepare {
                what: "a private directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let log = dir.path().join("backend.log");
        let spec = make_spec(dir.path())
            .stdout(Output::file(log.clone()))
            .stderr(Output::file(log.clone()))
            .die_with_supervisor(true);
        let supervisor = Arc::new(CommandSupervisor::new(spec));
        let (tx, _) = broadcast::channel(16);
        let ctx = SpawnContext::new(EventSink::new(supervisor.name().to_owned(), tx));
        let deadline = supervisor.ready_timeout();
        let started = tokio::time::timeout(deadline, supervisor.spawn(&ctx)).await;
        let handle = match started {
            Ok(Ok(handle)) => handle,
            Ok(Err(error)) => {
                print_log(&log, "failed to start");
                return Err(error);
            }
            Err(_) => {
                print_log(&log, "not ready in time");
                return Err(StartError::ReadyTimeout(deadline));
            }
        };
        Ok(EphemeralBackend {
            handle,
            log,
            _supervisor: supervisor,
            dir,
        })
    }

    /// The verified handle.
    pub fn handle(&self) -> &BackendHandle {
        &self.handle
    }

    /// The backend's private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the backend's output is kept when the test fails (or its start fails): its
    /// directory is removed with it, so the log is copied to `<dir>.log` beside it, and
    /// the message printed with the output names that file.
    pub fn kept_log_path(&self) -> PathBuf {
        kept_log_of(self.dir.path())
    }

    /// Everything the backend wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read(&self.log)
            .map(|raw| String::from_utf8_lossy(&raw).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for EphemeralBackend {
    fn drop(&mut self) {
        // The whole tree (its cgroup, else its process group), so helpers the daemon
        // started go too.
        self._supervisor.kill_tree_now(&self.handle);
        if std::thread::panicking() {
            print_log(&self.log, "the test failed");
        }
    }
}

impl std::fmt::Debug for EphemeralBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralBackend")
            .field("pid", &self.handle.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// Show a backend's captured output on stderr (which the test harness shows for failures).
/// Print the backend's output for a failed test. The backend's directory is removed right
/// after, so the log is first copied next to it ([`EphemeralBackend::kept_log_path`]) and
/// that path is named.
fn print_log(log: &Path, why: &str) {
    let raw = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    let kept = log
        .parent()
        .map(kept_log_of)
        .filter(|kept| std::fs::write(kept, &raw).is_ok());
    let place = match &kept {
        Some(kept) => format!("kept in {}", kept.display()),
        None => "its directory is removed with it".to_owned(),
    };
    eprintln!("--- test backend output ({why}; {place}) ---\n{text}--- end of backend output ---");
}

/// `<dir>.log`, beside the backend's directory `dir`.
fn kept_log_of(dir: &Path) -> PathBuf {
    dir.with_extension("log")
}
