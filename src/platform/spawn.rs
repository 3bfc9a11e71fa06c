//! Starting a child process: the platform-neutral description ([`SpawnPlan`]) and result
//! ([`Spawned`]). Linux forks from one long-lived spawner thread with `clone3`
//! (`CLONE_PIDFD`, `CLONE_INTO_CGROUP`); macOS and Windows go through tokio's `Command`.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;

use tokio::io::AsyncRead;

use super::ProcessHandle;

/// Where one standard stream of the child goes.
#[derive(Debug, Default)]
pub(crate) enum Stdio {
    /// The supervisor's own stream.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe whose read end the supervisor gets back ([`Spawned::stdout`]).
    Pipe,
    /// An open file (appended to), written by the child itself.
    File(std::fs::File),
}

/// The user and groups the child switches to before exec (Unix). Each part left `None`
/// is inherited from the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Credentials {
    /// The user id.
    pub uid: Option<u32>,
    /// The primary group id.
    pub gid: Option<u32>,
    /// The supplementary groups (replacing the supervisor's).
    pub groups: Option<Vec<u32>>,
}

/// A resource limit the child sets before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitResource {
    /// `RLIMIT_NOFILE`.
    OpenFiles,
    /// `RLIMIT_NPROC`.
    Processes,
    /// `RLIMIT_CORE`.
    CoreSize,
}

/// One resource limit: soft and hard, `None` meaning unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResourceLimit {
    /// Which resource.
    pub resource: LimitResource,
    /// Soft value.
    pub soft: Option<u64>,
    /// Hard value.
    pub hard: Option<u64>,
}

/// Everything needed to start one child. The command layer resolves names (program on
/// `PATH`, user and group names) before it builds this; the platform only executes it.
/// The default runs nothing (an empty program) and is only the base of a plan's fields.
#[derive(Debug, Default)]
pub(crate) struct SpawnPlan {
    /// The executable, resolved (what `execve` gets).
    pub program: PathBuf,
    /// `argv[0]`: the program as the user wrote it.
    pub arg0: OsString,
    /// The other arguments.
    pub args: Vec<OsString>,
    /// The complete environment of the child.
    pub env: Vec<(OsString, OsString)>,
    /// The working directory (changed into after the user switch).
    pub cwd: Option<PathBuf>,
    /// Standard input.
    pub stdin: Stdio,
    /// Standard output.
    pub stdout: Stdio,
    /// Standard error.
    pub stderr: Stdio,
    /// Make the child the leader of a new process group.
    pub process_group: bool,
    /// Switch user and groups (Unix).
    pub credentials: Option<Credentials>,
    /// The file mode creation mask (Unix).
    pub umask: Option<u32>,
    /// Resource limits (Unix).
    pub limits: Vec<ResourceLimit>,
    /// The child is killed when the supervisor process dies (Linux `PR_SET_PDEATHSIG`,
    /// set after the user switch, from a thread that lives as long as the process).
    pub die_with_parent: bool,
    /// The cgroup the child starts in (Linux).
    #[cfg(target_os = "linux")]
    pub cgroup: Option<std::sync::Arc<super::cgroup::ServiceCgroup>>,
    /// Listening sockets handed over by systemd's protocol: the child finds them at
    /// descriptors 3, 4, ... in this order, with `LISTEN_FDS`, `LISTEN_FDNAMES` and its own
    /// pid in `LISTEN_PID` (Linux only: elsewhere a plan with any is refused).
    pub listen_fds: Vec<ListenFd>,
}

/// One listening socket for [`SpawnPlan::listen_fds`] (read only by Linux's spawn).
#[derive(Debug)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) struct ListenFd {
    /// Its name in `LISTEN_FDNAMES`.
    pub name: String,
    /// A copy of the supervisor's descriptor, for this spawn.
    pub fd: super::Descriptor,
}

/// A started child, with its pinned handle and the read ends of its piped streams.
pub(crate) struct Spawned {
    /// The child's PID.
    pub pid: u32,
    /// A handle that pins it (Linux: the pidfd `clone3` returned, so there is no moment
    /// at which the PID could name another process).
    pub handle: ProcessHandle,
    /// Ownership of the child: it stays un-reaped while this lives.
    pub child: Child,
    /// The read end of its standard output, when piped.
    pub stdout: Option<PipeReader>,
    /// The read end of its standard error, when piped.
    pub stderr: Option<PipeReader>,
}

impl fmt::Debug for Spawned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawned").field("pid", &self.pid).finish()
    }
}

/// The read end of a child's pipe, registered with the tokio reactor.
pub(crate) type PipeReader = Box<dyn AsyncRead + Send + Unpin>;

/// Ownership of a child we spawned: while it lives the child is not reaped, so its PID
/// and process group id stay ours. Dropping it kills the child when so configured and
/// hands the reaping to the platform (Linux: the spawner thread; elsewhere tokio).
#[derive(Debug)]
pub(crate) enum Child {
    /// A child spawned by this module on Linux.
    #[cfg(target_os = "linux")]
    Owned(#[allow(dead_code, reason = "held for its Drop: kill and reap")] super::imp::OwnedChild),
    /// A child spawned through tokio's `Command`.
    Tokio(#[allow(dead_code, reason = "held for its Drop: kill and reap")] tokio::process::Child),
}

/// The step of starting a child that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpawnStage {
    /// Building the arguments, environment and descriptors.
    Prepare,
    /// Creating the process.
    Fork,
    /// Entering the cgroup.
    Cgroup,
    /// Creating the process group.
    ProcessGroup,
    /// Connecting the standard streams.
    Stdio,
    /// Handing over the listening sockets (descriptors from 3).
    Listeners,
    /// Resource limits.
    Limits,
    /// Supplementary groups.
    Groups,
    /// The group id.
    Gid,
    /// The user id.
    Uid,
    /// The working directory.
    Chdir,
    /// The parent-death signal (or the supervisor died during the spawn).
    DeathSignal,
    /// `execve` itself.
    Exec,
}

impl SpawnStage {
    /// A short name for messages (`"setuid"`, `"chdir"`, ...).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SpawnStage::Prepare => "preparing the spawn",
            SpawnStage::Fork => "fork",
            SpawnStage::Cgroup => "entering the cgroup",
            SpawnStage::ProcessGroup => "setpgid",
            SpawnStage::Stdio => "connecting stdin/stdout/stderr",
            SpawnStage::Listeners => "passing the listening sockets",
            SpawnStage::Limits => "setrlimit",
            SpawnStage::Groups => "setgroups",
            SpawnStage::Gid => "setgid",
            SpawnStage::Uid => "setuid",
            SpawnStage::Chdir => "chdir",
            SpawnStage::DeathSignal => "setting the parent-death signal",
            SpawnStage::Exec => "execve",
        }
    }

    /// Stages are reported through a pipe as numbers.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn from_code(code: u32) -> SpawnStage {
        const ALL: [SpawnStage; 13] = [
            SpawnStage::Prepare,
            SpawnStage::Fork,
            SpawnStage::Cgroup,
            SpawnStage::ProcessGroup,
            SpawnStage::Stdio,
            SpawnStage::Listeners,
            SpawnStage::Limits,
            SpawnStage::Groups,
            SpawnStage::Gid,
            SpawnStage::Uid,
            SpawnStage::Chdir,
            SpawnStage::DeathSignal,
            SpawnStage::Exec,
        ];
        ALL.get(code as usize).copied().unwrap_or(SpawnStage::Exec)
    }

    /// The number [`SpawnStage::from_code`] reads back.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn code(self) -> u32 {
        self as u32
    }
}

/// A failed spawn: the step and the OS error.
#[derive(Debug)]
pub(crate) struct SpawnError {
    /// The step that failed.
    pub stage: SpawnStage,
    /// Why.
    pub error: io::Error,
}

impl SpawnError {
    pub(crate) fn new(stage: SpawnStage, error: impl Into<io::Error>) -> Self {
        SpawnError {
            stage,
            error: error.into(),
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.stage.as_str(), self.error)
    }
}

impl SpawnError {
    /// Whether the kernel refused to start the process in its cgroup (delegation rules).
    /// Cgroups are then given up for the rest of this process's life (process groups
    /// from now on), so a retry of the start succeeds.
    pub(crate) fn refused_cgroup(&self) -> bool {
        #[cfg(target_os = "linux")]
        if self.stage == SpawnStage::Cgroup {
            super::cgroup::disable(&self.error);
            return true;
        }
        false
    }
}

/// Start a child per `plan`. Must be called within a tokio runtime (the pipes and, on
/// Linux, the reply from the spawner thread go through it).
pub(crate) async fn spawn(plan: SpawnPlan) -> Result<Spawned, SpawnError> {
    #[cfg(target_os = "linux")]
    return super::imp::spawn(plan).await;
    #[cfg(not(target_os = "linux"))]
    return spawn_with_tokio(plan);
}

/// macOS and Windows: tokio's `Command`, with what it supports of the plan.
#[cfg(not(target_os = "linux"))]
fn spawn_with_tokio(plan: SpawnPlan) -> Result<Spawned, SpawnError> {
    let mut command = tokio::process::Command::new(&plan.program);
    command
        .args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &plan.cwd {
        command.current_dir(dir);
    }
    command.stdin(std_stdio(plan.stdin));
    command.stdout(std_stdio(plan.stdout));
    command.stderr(std_stdio(plan.stderr));
    command.kill_on_drop(plan.die_with_parent);
    #[cfg(unix)]
    {
        command.arg0(&plan.arg0);
        if plan.process_group {
            command.process_group(0);
        }
        if let Some(credentials) = &plan.credentials {
            if let Some(uid) = credentials.uid {
                command.uid(uid);
            }
            if let Some(gid) = credentials.gid {
                command.gid(gid);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (&plan.arg0, plan.process_group); // Windows: whole command line, no groups
    #[cfg(not(unix))]
    if plan.credentials.is_some() {
        return Err(SpawnError::new(
            SpawnStage::Uid,
            io::Error::new(io::ErrorKind::Unsupported, "no user switch on Windows"),
        ));
    }
    if !plan.listen_fds.is_empty() {
        return Err(SpawnError::new(
            SpawnStage::Prepare,
            io::Error::new(io::ErrorKind::Unsupported, "passing listeners needs Linux"),
        ));
    }
    if plan.umask.is_some() || !plan.limits.is_empty() {
        return Err(SpawnError::new(
            SpawnStage::Limits,
            io::Error::new(
                io::ErrorKind::Unsupported,
                "umask and resource limits are only applied on Linux",
            ),
        ));
    }
    let mut child = command
        .spawn()
        .map_err(|e| SpawnError::new(SpawnStage::Exec, e))?;
    let pid = child
        .id()
        .ok_or_else(|| SpawnError::new(SpawnStage::Fork, io::Error::other("no pid")))?;
    let handle = ProcessHandle::open(pid).map_err(|e| {
        SpawnError::new(
            SpawnStage::Fork,
            match e {
                super::OpenError::NotFound => io::Error::from(io::ErrorKind::NotFound),
                super::OpenError::Unsupported(e) | super::OpenError::Other(e) => e,
            },
        )
    })?;
    let stdout = child.stdout.take().map(|s| Box::new(s) as PipeReader);
    let stderr = child.stderr.take().map(|s| Box::new(s) as PipeReader);
    Ok(Spawned {
        pid,
        handle,
        child: Child::Tokio(child),
        stdout,
        stderr,
    })
}

#[cfg(not(target_os = "linux"))]
fn std_stdio(stdio: Stdio) -> std::process::Stdio {
    match stdio {
        Stdio::Inherit => std::process::Stdio::inherit(),
        Stdio::Null => std::process::Stdio::null(),
        Stdio::Pipe => std::process::Stdio::piped(),
        Stdio::File(file) => std::process::Stdio::from(file),
    }
}
