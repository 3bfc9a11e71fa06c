//! [`EphemeralStack`]: the services of a service file started for one test (or one
//! `running-process run`), on ports of their own, in a private directory; gone when it is.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use futures_util::StreamExt;

use crate::blocking::blocking;
use crate::command::private_dir::PrivateDir;
use crate::command::{CommandSpec, CommandSupervisor, Output};
use crate::compose::MakeSupervisor;
use crate::compose::{
    check_open_files, FileError, LoadOptions, OpenFilesError, Ports, Selection, ServiceFile, Stack,
    UnknownService,
};
use crate::handle::BackendHandleError;
use crate::platform::Nudge;
use crate::supervision::{Event, EventKind, GroupSpecError, Outcome};

/// The variable that holds a stack's private directory: `${RUNNING_PROCESS_RUN_DIR}` in
/// its service file (a place for each run's data: `--dir ${RUNNING_PROCESS_RUN_DIR}`),
/// and in the environment of a command run against it ([`EphemeralStack::env`]).
pub const RUN_DIR_VARIABLE: &str = "RUNNING_PROCESS_RUN_DIR";

/// How many of a service's last lines a failure report shows.
pub(crate) const LAST_LINES: usize = 20;

/// Why an [`EphemeralStack`] could not start, or could not do what was asked of it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// The private directory could not be made.
    #[error("cannot make the stack's private directory in {path}")]
    Dir {
        /// Where.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The service file is not valid (with its file, line and key).
    #[error(transparent)]
    File(Box<FileError>),
    /// A service asked for is not in the file.
    #[error(transparent)]
    Selection(#[from] UnknownService),
    /// The open-files limit cannot hold the file's services.
    #[error(transparent)]
    OpenFiles(#[from] OpenFilesError),
    /// The file is not a valid group (checked files always are).
    #[error("the file is not a valid group")]
    Group(#[from] GroupSpecError),
    /// The set ended before every service was ready: which one and how, with its last
    /// lines (the logs are kept beside the removed directory).
    #[error("the stack did not become ready: {outcome}{}", report(.service, .last_lines, .kept_logs))]
    NotReady {
        /// How the set ended.
        outcome: Outcome,
        /// The service that failed, when the outcome names one.
        service: Option<String>,
        /// Its last lines of output.
        last_lines: Vec<String>,
        /// Where its logs were kept.
        kept_logs: Option<PathBuf>,
    },
    /// No service of that name (or instance `NAME-k` of one) runs in the stack.
    #[error("no service {0} in the stack")]
    UnknownService(String),
    /// The service has no running process now.
    #[error("service {0} has no running process")]
    NotRunning(String),
    /// Signalling the service's main process failed.
    #[error("cannot signal service {service}")]
    Signal {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: BackendHandleError,
    },
    /// A restarted service did not become ready again.
    #[error("service {service} did not become ready again: {why}")]
    Restart {
        /// The service.
        service: String,
        /// What happened instead.
        why: String,
    },
}

impl From<FileError> for StackError {
    fn from(error: FileError) -> Self {
        StackError::File(Box::new(error))
    }
}

/// The tail of a `NotReady` message: the service, its last lines, where its logs are.
fn report(service: &Option<String>, lines: &[String], kept: &Option<PathBuf>) -> String {
    let mut text = String::new();
    if let Some(service) = service {
        text.push_str(&format!("\nlast lines of {service}:"));
        for line in lines {
            text.push_str("\n  ");
            text.push_str(line);
        }
    }
    if let Some(kept) = kept {
        text.push_str(&format!("\nlogs kept in {}", kept.display()));
    }
    text
}

/// Which files and services an [`EphemeralStack`] starts, and the variables it gets.
///
/// ```no_run
/// # async fn a_test() -> Result<(), running_process::testing::StackError> {
/// use running_process::testing::EphemeralStack;
///
/// let stack = EphemeralStack::builder("tests/stack.toml")
///     .file("tests/stack.ci.toml") // merged over the first, key by key
///     .service("web") // web and what it depends on
///     .variable("LOG_LEVEL", "debug")
///     .start()
///     .await?;
/// # drop(stack); Ok(()) }
/// ```
#[derive(Clone)]
pub struct EphemeralStackBuilder {
    files: Vec<PathBuf>,
    selection: Selection,
    options: LoadOptions,
    on_event: Option<OnEvent>,
}

/// What [`EphemeralStackBuilder::on_event`] calls.
type OnEvent = Arc<dyn Fn(&Event) + Send + Sync>;

impl std::fmt::Debug for EphemeralStackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralStackBuilder")
            .field("files", &self.files)
            .field("selection", &self.selection)
            .field("options", &self.options)
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

impl EphemeralStackBuilder {
    /// Merge another file over the ones before (as `-f` does).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Start only this service and what it depends on (repeatable; default: every
    /// service whose profiles allow it).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.selection.services.push(name.into());
        self
    }

    /// Turn a profile on (repeatable).
    pub fn profile(mut self, name: impl Into<String>) -> Self {
        self.selection.profiles.push(name.into());
        self
    }

    /// Set a variable for the file's `${VAR}` (over the environment's and `.env`'s).
    pub fn variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options = self.options.variable(name, value);
        self
    }

    /// Call `on_event` with every event of the stack from its very start (a test's
    /// `println!`, say), on a task of its own, until the stack is dropped.
    pub fn on_event(mut self, on_event: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(on_event));
        self
    }

    /// Start the stack and wait until every service is ready: see
    /// [`EphemeralStack::start`].
    pub async fn start(self) -> Result<EphemeralStack, StackError> {
        EphemeralStack::start_from(self).await
    }
}

/// The services of a service file, started for one test in a private temporary directory,
/// each `${port:KEY}` a free port of its own; gone when this value is dropped.
///
/// - Every service's output that would go to the terminal goes to `logs/NAME.log` in the
///   directory ([`EphemeralStack::logs`]); every service dies with the test process.
/// - `${RUNNING_PROCESS_RUN_DIR}` in the file is the directory ([`RUN_DIR_VARIABLE`]).
/// - Dropping it (at the end of the test, on a panic, or when the test's future is
///   cancelled) SIGKILLs every service's whole process tree at once and removes the
///   directory. When the test panicked, the logs are first copied beside it
///   (`<dir>.logs/`) and their path and last lines printed.
///
/// Two stacks of one file (two tests at once, two test binaries) run side by side: each
/// has its own ports and directory.
///
/// ```no_run
/// use running_process::testing::EphemeralStack;
///
/// #[tokio::test]
/// async fn caches_what_it_reads() -> Result<(), Box<dyn std::error::Error>> {
///     // tests/stack.toml:
///     //   [services.redis]
///     //   program = "redis-server"
///     //   args = ["--port", "${port:redis}", "--save", "", "--dir", "${RUNNING_PROCESS_RUN_DIR}"]
///     //   readiness = { kind = "tcp", address = "127.0.0.1:${port:redis}" }
///     let stack = EphemeralStack::start("tests/stack.toml").await?;
///     let port = stack.port("redis").expect("the file uses ${port:redis}");
///     let _client = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
///     // ... exercise it; `stack.kill("redis")?` to see how the code copes.
///     Ok(())
/// }
/// ```
pub struct EphemeralStack {
    /// `None` only while dropped.
    stack: Option<Stack>,
    ports: Ports,
    logs: PathBuf,
    /// Every supervisor the stack made, to kill their trees at once when dropped.
    supervisors: Arc<Mutex<Vec<Weak<CommandSupervisor>>>>,
    // Declared last: removed after the trees are killed.
    dir: PrivateDir,
}

impl EphemeralStack {
    /// Start the services of the file at `path` and wait until every one is ready. A
    /// service that cannot start makes this fail with its last lines
    /// ([`StackError::NotReady`]), and nothing is left running.
    pub async fn start(path: impl Into<PathBuf>) -> Result<EphemeralStack, StackError> {
        EphemeralStack::builder(path).start().await
    }

    /// More files, part of the file, variables: see [`EphemeralStackBuilder`].
    pub fn builder(path: impl Into<PathBuf>) -> EphemeralStackBuilder {
        EphemeralStackBuilder {
            files: vec![path.into()],
            selection: Selection::default(),
            options: LoadOptions::default(),
            on_event: None,
        }
    }

    async fn start_from(builder: EphemeralStackBuilder) -> Result<EphemeralStack, StackError> {
        let dir = blocking(|| PrivateDir::create("stack"))
            .await
            .map_err(|source| StackError::Dir {
                path: std::env::temp_dir(),
                source,
            })?;
        let logs = dir.path().join("logs");
        let options = builder
            .options
            .variable(RUN_DIR_VARIABLE, dir.path().display().to_string());
        let mut file = ServiceFile::load_with(builder.files, options)
            .await?
            .select(&builder.selection)?;
        let made = logs.clone();
        blocking(move || std::fs::create_dir(&made))
            .await
            .map_err(|source| StackError::Dir {
                path: logs.clone(),
                source,
            })?;
        for service in &mut file.services {
            let log = logs.join(format!("{}.log", service.name()));
            to_log(&mut service.spec, &log);
        }
        // As `up` does: the soft limit raised to the hard one, a file that cannot fit
        // refused before anything runs.
        check_open_files(&file)?;
        let ports = file.ports.clone();
        let supervisors = Arc::new(Mutex::new(Vec::new()));
        let stack = Stack::start_with(file, recording(&supervisors))?;
        // The first subscription replays everything since the start; take it now, so
        // that later ones (`run`, `restart`) see only what happens from then on.
        let mut events = stack.events();
        if let Some(on_event) = builder.on_event {
            tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    if let Ok(event) = event {
                        on_event(&event);
                    }
                }
            });
        }
        let mut this = EphemeralStack {
            stack: Some(stack),
            ports,
            logs,
            supervisors,
            dir,
        };
        if let Err(outcome) = this.stack().ready().await {
            return Err(this.not_ready(outcome).await);
        }
        tracing::debug!(dir = %this.dir().display(), ports = ?this.ports, "ephemeral stack ready");
        Ok(this)
    }

    /// The error of a start that ended before every service was ready: the failing
    /// service's last lines, its logs kept beside the directory.
    async fn not_ready(&mut self, outcome: Outcome) -> StackError {
        let service = match &outcome {
            Outcome::StartFailed { member, .. } => Some(member.clone()),
            _ => self
                .stack()
                .status()
                .into_iter()
                .find(|row| !row.state.is_ready())
                .map(|row| row.name),
        };
        let last_lines = match &service {
            Some(service) => self.last_lines(service, LAST_LINES).await,
            None => Vec::new(),
        };
        self.kill_now();
        let kept_logs = self.keep_logs().await;
        StackError::NotReady {
            outcome,
            service,
            last_lines,
            kept_logs,
        }
    }

    /// The running set (status, events, everything [`Stack`] offers).
    pub fn stack(&self) -> &Stack {
        self.stack
            .as_ref()
            .expect("the stack is there until dropped")
    }

    /// The port the file's `${port:KEY}` got.
    pub fn port(&self, key: &str) -> Option<u16> {
        self.ports.get(key)
    }

    /// Every port the file's `${port:...}` got.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// The variables a command run against the stack gets (`running-process run` passes
    /// the same): `RUNNING_PROCESS_PORT_<KEY>` per port ([`Ports::env`]) and
    /// `RUNNING_PROCESS_RUN_DIR`.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.ports.env();
        env.push((
            RUN_DIR_VARIABLE.to_owned(),
            self.dir().display().to_string(),
        ));
        env
    }

    /// The stack's private directory (removed when the stack is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log file of a service (every instance of it writes there), or `None` for a name
    /// that is not a service of the stack.
    pub fn log_path(&self, service: &str) -> Option<PathBuf> {
        let file = self.stack().file();
        let service = file.service_of(service)?;
        Some(self.logs.join(format!("{}.log", service.name())))
    }

    /// Everything a service wrote to its log so far (empty for an unknown name).
    pub async fn logs(&self, service: &str) -> String {
        let Some(path) = self.log_path(service) else {
            return String::new();
        };
        blocking(move || std::fs::read(path))
            .await
            .map(|raw| String::from_utf8_lossy(&raw).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines a service wrote to its log.
    pub async fn last_lines(&self, service: &str, n: usize) -> Vec<String> {
        let text = self.logs(service).await;
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|line| (*line).to_owned())
            .collect()
    }

    /// Copy the logs beside the directory (`<dir>.logs/`), so that they outlive the stack;
    /// where they are.
    pub async fn keep_logs(&self) -> Option<PathBuf> {
        let (dir, logs) = (self.dir().to_owned(), self.logs.clone());
        blocking(move || keep_logs(&dir, &logs)).await
    }

    /// The verified handle of a service's main process (instance `NAME-k` for one with
    /// replicas).
    fn backend(&self, service: &str) -> Result<crate::handle::BackendHandle, StackError> {
        if self.stack().file().service_of(service).is_none() {
            return Err(StackError::UnknownService(service.to_owned()));
        }
        self.stack()
            .handle()
            .backend_of(service)
            .ok_or_else(|| StackError::NotRunning(service.to_owned()))
    }

    /// SIGKILL a service's main process, as a crash would: the set restarts it (and what
    /// its strategy restarts with it) as its policy says. Does not wait.
    pub fn kill(&self, service: &str) -> Result<(), StackError> {
        self.backend(service)?
            .force_kill()
            .map_err(|source| StackError::Signal {
                service: service.to_owned(),
                source,
            })
    }

    /// SIGSTOP a service's main process: it is still there but answers nothing, to test
    /// what a hung backend does to its clients (and to its health checks). Unix.
    pub fn freeze(&self, service: &str) -> Result<(), StackError> {
        self.nudge(service, Nudge::Freeze)
    }

    /// SIGCONT a frozen service's main process. Unix.
    pub fn thaw(&self, service: &str) -> Result<(), StackError> {
        self.nudge(service, Nudge::Thaw)
    }

    fn nudge(&self, service: &str, nudge: Nudge) -> Result<(), StackError> {
        let backend = self.backend(service)?;
        let signalled = match nudge.number() {
            #[cfg(unix)]
            Some(signal) => backend.signal(signal),
            _ => Err(BackendHandleError::Signal {
                pid: backend.pid(),
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "no signals on this OS",
                ),
            }),
        };
        signalled.map_err(|source| StackError::Signal {
            service: service.to_owned(),
            source,
        })
    }

    /// Restart a service (and what the set's strategy restarts with it) and wait until it
    /// is ready again.
    pub async fn restart(&self, service: &str) -> Result<(), StackError> {
        let mut events = self.stack().events();
        if !self.stack().restart_service(service) {
            return Err(StackError::UnknownService(service.to_owned()));
        }
        let restart_error = |why: String| StackError::Restart {
            service: service.to_owned(),
            why,
        };
        let mut stopped = false;
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            if &*event.service != service {
                continue;
            }
            match &event.kind {
                EventKind::Stopped => stopped = true,
                EventKind::Ready { .. } if stopped => return Ok(()),
                EventKind::GaveUp { .. } | EventKind::Blocked { .. } => {
                    return Err(restart_error(event.kind.to_string()))
                }
                _ => {}
            }
        }
        Err(restart_error(match self.stack().try_outcome() {
            Some(outcome) => format!("the set ended: {outcome}"),
            None => "its events ended".to_owned(),
        }))
    }

    /// Stop every service gracefully, dependants first, and wait (dropping the stack
    /// kills them instead).
    pub async fn stop(&self) -> Outcome {
        self.stack().stop().await
    }

    /// SIGKILL the tree of every service now.
    fn kill_now(&self) {
        let supervisors = self.supervisors.lock().unwrap_or_else(|p| p.into_inner());
        for supervisor in supervisors.iter().filter_map(Weak::upgrade) {
            supervisor.kill_current_now();
        }
    }
}

impl Drop for EphemeralStack {
    fn drop(&mut self) {
        // The set stops in the background (nothing restarts what is killed next), then
        // every tree dies at once.
        drop(self.stack.take());
        self.kill_now();
        if std::thread::panicking() {
            print_kept_logs(self.dir.path(), &self.logs);
        }
    }
}

impl std::fmt::Debug for EphemeralStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralStack")
            .field("dir", &self.dir.path())
            .field("ports", &self.ports)
            .finish()
    }
}

/// A service's output that would go to the terminal goes to `log` instead; it dies with
/// the test (or the `run`).
fn to_log(spec: &mut CommandSpec, log: &Path) {
    if spec.stdout == Output::Inherit {
        spec.stdout = Output::file(log);
    }
    if spec.stderr == Output::Inherit {
        spec.stderr = Output::file(log);
    }
    spec.die_with_supervisor = true;
}

/// Makes each instance's supervisor and keeps a weak reference to it.
fn recording(supervisors: &Arc<Mutex<Vec<Weak<CommandSupervisor>>>>) -> MakeSupervisor {
    let supervisors = supervisors.clone();
    Arc::new(move |spec| {
        let supervisor = Arc::new(CommandSupervisor::new(spec));
        let mut all = supervisors.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|s| s.strong_count() > 0);
        all.push(Arc::downgrade(&supervisor));
        supervisor
    })
}

/// Copy the logs beside the directory (`<dir>.logs/`), which is about to be removed.
/// Blocking (drops and error paths).
fn keep_logs(dir: &Path, logs: &Path) -> Option<PathBuf> {
    let kept = dir.with_extension("logs");
    std::fs::create_dir_all(&kept).ok()?;
    for entry in std::fs::read_dir(logs).ok()?.flatten() {
        let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
    }
    Some(kept)
}

/// For a test that panicked: keep the logs and print their path and last lines.
fn print_kept_logs(dir: &Path, logs: &Path) {
    let kept = keep_logs(dir, logs);
    let mut text = match &kept {
        Some(kept) => format!(
            "--- ephemeral stack logs (the test failed; kept in {}) ---\n",
            kept.display()
        ),
        None => "--- ephemeral stack logs (the test failed) ---\n".to_owned(),
    };
    let mut files: Vec<_> = std::fs::read_dir(logs)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let raw = std::fs::read(&file).unwrap_or_default();
        let all = String::from_utf8_lossy(&raw);
        let lines: Vec<&str> = all.lines().collect();
        let name = file.file_stem().unwrap_or_default().to_string_lossy();
        text.push_str(&format!("{name}:\n"));
        for line in &lines[lines.len().saturating_sub(LAST_LINES)..] {
            text.push_str(&format!("  {line}\n"));
        }
    }
    text.push_str("--- end of ephemeral stack logs ---");
    eprintln!("{text}");
}
