//! Why a backend could not be started or was found unhealthy.

use std::sync::Arc;
use std::time::Duration;

use super::policy::IntensityExceeded;
use crate::handle::{BackendHandleError, ExitStatus};

/// The last lines a process wrote to its captured standard output and error (at most
/// [`LastOutput::MAX_LINES`] lines and [`LastOutput::MAX_BYTES`] bytes, oldest first),
/// so the reason a daemon gave for dying (`Bad directive`, `[emerg] unknown directive`)
/// comes with the event that reports it. Empty when nothing was captured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastOutput {
    /// One pointer: every event is buffered, and this rides in [`EventKind::Exited`].
    ///
    /// [`EventKind::Exited`]: super::EventKind::Exited
    inner: Arc<LastOutputInner>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct LastOutputInner {
    lines: Box<[String]>,
    out_of_memory: Option<OutOfMemory>,
}

/// The kernel's OOM killer ended a process of a backend (for a
/// [`CommandSupervisor`](crate::command::CommandSupervisor): `oom_kill` of the instance's
/// `memory.events`), reported as [`EventKind::OutOfMemory`](super::EventKind::OutOfMemory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutOfMemory {
    /// How many processes it killed.
    pub kills: u64,
    /// The memory limit reached (`memory_max`), bytes, if the backend had one.
    pub limit: Option<u64>,
}

impl OutOfMemory {
    /// `kills` processes killed, with the limit reached, if any.
    pub fn new(kills: u64, limit: Option<u64>) -> Self {
        OutOfMemory { kills, limit }
    }
}

impl LastOutput {
    /// The most lines kept.
    pub const MAX_LINES: usize = 20;
    /// The most bytes kept, over all lines.
    pub const MAX_BYTES: usize = 8 * 1024;

    /// The given lines (the caller keeps within the bounds).
    pub fn new(lines: impl Into<Arc<[String]>>) -> Self {
        let lines: Arc<[String]> = lines.into();
        LastOutput {
            inner: Arc::new(LastOutputInner {
                lines: lines.iter().cloned().collect(),
                out_of_memory: None,
            }),
        }
    }

    /// The same, noting that the OOM killer ended a process of the backend (the runtime
    /// then reports [`EventKind::OutOfMemory`](super::EventKind::OutOfMemory) before the
    /// exit).
    pub fn with_out_of_memory(self, out_of_memory: OutOfMemory) -> Self {
        LastOutput {
            inner: Arc::new(LastOutputInner {
                lines: self.inner.lines.clone(),
                out_of_memory: Some(out_of_memory),
            }),
        }
    }

    /// Whether the OOM killer ended a process of the backend, and at which limit.
    pub fn out_of_memory(&self) -> Option<OutOfMemory> {
        self.inner.out_of_memory
    }

    /// The lines, oldest first.
    pub fn lines(&self) -> &[String] {
        &self.inner.lines
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.inner.lines.is_empty()
    }
}

impl std::fmt::Display for LastOutput {
    /// The lines, each on its own line and indented by two spaces.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, line) in self.inner.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Why a program could not be executed at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecFailure {
    /// No such file, or not found on `PATH`.
    #[error("no such file (searched {searched})")]
    NotFound {
        /// Where it was looked for: the path, or the `PATH` directories.
        searched: String,
    },
    /// Not executable (no execute permission, a directory, a `noexec` mount).
    #[error("permission denied: not an executable file")]
    PermissionDenied,
    /// A script whose `#!` line names an interpreter that does not exist.
    #[error("bad interpreter: the `#!` line names a program that does not exist")]
    BadInterpreter,
    /// Not in a format this system can execute.
    #[error("exec format error: not an executable this system can run")]
    BadFormat,
    /// Any other reason `execve` gave.
    #[error(transparent)]
    Other(std::io::Error),
}

/// Why a backend could not be started.
///
/// Some errors cannot heal by retrying ([`StartError::is_permanent`]): the runtime does not
/// restart after them, it ends supervision at once with
/// [`Outcome::StartFailed`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The OS could not create the process (`fork`/`clone3` failed: no memory, the
    /// process limit), or a supervisor of your own reports its spawn failing.
    #[error("cannot create the process")]
    Spawn(#[source] std::io::Error),
    /// The supervisor could not prepare what the process needs before it starts: an
    /// output file, a runtime directory, the sd_notify socket, a watch for readiness.
    #[error("cannot prepare {what} {}", path.display())]
    Prepare {
        /// What (`"the output file"`, `"the runtime directory"`, ...).
        what: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The instance could not get a cgroup of its own on a machine where service trees are
    /// tracked by cgroup v2 (no descriptor left, a limit of the parent cgroup such as
    /// `cgroup.max.descendants`, no memory): nothing was started. A service never runs
    /// with less tracking than the machine gives it (no quiet process group instead);
    /// the process-group fallback is only for a machine without cgroup v2 for the
    /// supervisor, chosen once for every service and shown in each status row.
    #[error("cannot create a cgroup for this instance in {}", parent.display())]
    Cgroup {
        /// The directory it was to be created in (or the file that could not be read).
        parent: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The program cannot be executed (permanent).
    #[error("cannot execute {}", program.display())]
    Exec {
        /// The program as resolved (absolute when it was found on `PATH`).
        program: std::path::PathBuf,
        /// Why.
        #[source]
        reason: ExecFailure,
    },
    /// Preparing the child before exec failed: changing user or group, limits, the
    /// working directory (permanent).
    #[error("cannot start {}: {stage} failed", program.display())]
    Setup {
        /// The program.
        program: std::path::PathBuf,
        /// What was being done (`"setuid"`, `"chdir"`, ...).
        stage: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The spec cannot work as written: an unknown user or group, a malformed URL, an
    /// empty command (permanent). For commands the source is a
    /// [`SpecError`](crate::command::SpecError).
    #[error("invalid service spec")]
    InvalidSpec(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The address the readiness check watches was already held by another process
    /// before the program started: it could never have been ready.
    #[error("{address} is already in use by {}", match holder { Some(pid) => format!("process {pid}"), None => "another process (not visible from here)".to_owned() })]
    PortInUse {
        /// The address (`host:port`, or a socket path).
        address: String,
        /// The process that holds it, when visible.
        holder: Option<u32>,
    },
    /// A listening socket of the service could not be bound (the port is taken, the
    /// socket's directory is unsafe): nothing was started. For commands the source is a
    /// [`BindError`](crate::protocol::BindError) for a Unix socket, else the OS error.
    #[error("cannot listen on {address} (listener {name:?})")]
    Listener {
        /// The listener's name.
        name: String,
        /// Its address or path.
        address: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend could not be verified or reached.
    #[error(transparent)]
    Backend(#[from] BackendHandleError),
    /// The backend exited before it was ready.
    #[error("the backend exited before it was ready ({status}){}", if output.is_empty() { String::new() } else { format!("; its last output:\n{output}") })]
    ExitedBeforeReady {
        /// How it exited.
        status: ExitStatus,
        /// What it last wrote, when its output is captured.
        output: LastOutput,
    },
    /// The backend was not ready within the deadline.
    #[error("the backend was not ready within {0:?}")]
    ReadyTimeout(Duration),
    /// The readiness check stopped working before it could tell (its sd_notify socket
    /// reader ended).
    #[error("the {0} readiness check stopped before the backend was ready")]
    ReadinessLost(&'static str),
    /// A nested group ended before all its members were ready.
    #[error("group {group} ended before it was ready: {outcome}")]
    GroupEnded {
        /// The nested group.
        group: String,
        /// How it ended.
        outcome: Outcome,
    },
    /// A member of a nested group could not start, so the group could not.
    #[error("{member} failed to start")]
    Group {
        /// The member that failed (`group/child`).
        member: String,
        /// Why.
        #[source]
        error: Arc<StartError>,
    },
}

impl StartError {
    /// Whether retrying cannot help: the program cannot be executed, the child could not
    /// be prepared, or the spec is invalid. The runtime does not restart after these.
    pub fn is_permanent(&self) -> bool {
        match self {
            StartError::Exec { .. } | StartError::Setup { .. } | StartError::InvalidSpec(_) => true,
            StartError::Group { error, .. } => error.is_permanent(),
            _ => false,
        }
    }
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
    /// A check failed; the source says why (for commands, a
    /// [`CheckError`](crate::command::CheckError)).
    #[error("the health check failed")]
    Check(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A failed check of your own whose reason is only a text (the fake backends of the
    /// testing kit use it).
    #[error("{0}")]
    Failed(String),
}

/// How supervision of a service or group ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// `stop()` was called (or the handle was dropped) and everything stopped.
    Stopped,
    /// It ended by itself and its policy does not restart it (a temporary service, a
    /// transient one that exited cleanly, a group whose significant children ended).
    Completed,
    /// The restart intensity was exceeded; everything was stopped.
    GaveUp(IntensityExceeded),
    /// A member failed to start in a way retrying cannot fix
    /// ([`StartError::is_permanent`]: a program that cannot be executed, an invalid spec);
    /// everything already started was stopped in reverse order.
    StartFailed {
        /// The member (`group/child` inside groups).
        member: String,
        /// Why.
        error: Arc<StartError>,
    },
}

/// Outcomes compare by kind and content; two start failures are equal when they name the
/// same member and read the same.
impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Outcome::Stopped, Outcome::Stopped) | (Outcome::Completed, Outcome::Completed) => true,
            (Outcome::GaveUp(a), Outcome::GaveUp(b)) => a == b,
            (
                Outcome::StartFailed { member, error },
                Outcome::StartFailed {
                    member: other_member,
                    error: other_error,
                },
            ) => member == other_member && error.to_string() == other_error.to_string(),
            _ => false,
        }
    }
}

impl Eq for Outcome {}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Stopped => f.write_str("stopped"),
            Outcome::Completed => f.write_str("completed"),
            Outcome::GaveUp(exceeded) => write!(f, "gave up: {exceeded}"),
            Outcome::StartFailed { member, .. } => write!(f, "{member} failed to start"),
        }
    }
}
