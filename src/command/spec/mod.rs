//! [`CommandSpec`]: everything needed to run an OS command as a supervised backend, as
//! plain data (serde), so a config file can describe it. Unknown keys are errors, so a
//! typo in a file is reported rather than ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::supervision::RestartPolicy;

mod checks;
mod listeners;
mod output;
mod quotas;
mod run_as;
mod stop;

pub(crate) use checks::human_duration;
pub use checks::{HealthCheck, HealthSpec, Readiness, DEFAULT_EXEC_INTERVAL};
pub use listeners::Listener;
pub use output::{Output, Rotation, StreamName};
pub use quotas::{ByteSize, CpuQuota};
pub use run_as::{GroupRef, Limit, ResourceLimits, Umask, UserRef};
pub use stop::{KillMode, StopSignal, StopSpec};

/// A program to run and supervise.
///
/// ```
/// use running_process::command::{CommandSpec, Readiness};
/// let spec = CommandSpec::new("cache", "/usr/bin/my-cache")
///     .args(["--port", "7000"])
///     .readiness(Readiness::Tcp { address: "127.0.0.1:7000".into() });
/// let json = serde_json::to_string(&spec).unwrap();
/// let back: CommandSpec = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.name, "cache");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Service name (events, logs, the sd_notify socket name).
    pub name: String,
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables to set (on top of the inherited ones unless `env_clear`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment.
    #[serde(default)]
    pub env_clear: bool,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Run as this user (Unix; the supervisor needs the privilege to switch, normally
    /// root). Its primary group, its supplementary groups from the group database, and
    /// `HOME`, `USER`, `LOGNAME` and `SHELL` follow unless set explicitly, as systemd's
    /// `User=` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    /// Run with this primary group instead of the user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupRef>,
    /// The supplementary groups; `None` takes the user's from the group database (only
    /// when `user` is set), `Some(vec![])` drops them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplementary_groups: Option<Vec<GroupRef>>,
    /// The file mode creation mask; `None` inherits the supervisor's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<Umask>,
    /// Resource limits; unset ones are inherited.
    #[serde(default, skip_serializing_if = "ResourceLimits::is_empty")]
    pub limits: ResourceLimits,
    /// Where its standard output goes.
    #[serde(default)]
    pub stdout: Output,
    /// Where its standard error goes.
    #[serde(default)]
    pub stderr: Output,
    /// How to know it is ready.
    #[serde(default)]
    pub readiness: Readiness,
    /// Deadline for readiness.
    #[serde(
        rename = "ready_timeout_ms",
        with = "crate::serde_util::duration_ms",
        default = "default_ready_timeout"
    )]
    pub ready_timeout: Duration,
    /// Periodic health checks, if any.
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// How to stop it.
    #[serde(default)]
    pub stop: StopSpec,
    /// When to restart it.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Kill it when the supervisor goes away, even by a crash, so no orphan is left behind.
    /// Linux: `PR_SET_PDEATHSIG` (set after the user change, which would reset it) on the
    /// main process, from a spawner thread that lives as long as the supervisor process;
    /// with a cgroup, a keeper process kills the rest of the tree too. Default `true`.
    #[serde(default = "yes")]
    pub die_with_supervisor: bool,
    /// Track each instance's process tree with a cgroup of its own where the supervisor
    /// can create one (cgroup v2, root or a delegated subtree; Linux), else with the
    /// process group the program leads. `false` always uses the process group. Default
    /// `true`. Services that do not die with the supervisor always use the process group.
    #[serde(default = "yes")]
    pub cgroup: bool,
    /// Listening sockets the supervisor binds once, before the first start, and hands to
    /// every instance at descriptors 3, 4, ... by systemd's protocol (see [`Listener`]):
    /// clients wait in the backlog while an instance restarts instead of being refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    /// Start it only once a client connects to one of its [`listeners`](Self::listeners)
    /// (systemd's socket activation with `Accept=no`): until then, and again after each
    /// clean exit (an idle timeout), the supervisor holds the sockets and waits for the
    /// next connection, which the new instance then accepts. Needs listeners. Default
    /// `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_on_demand: bool,
    /// The file descriptor store (systemd's `FileDescriptorStoreMax=`): how many
    /// descriptors an instance may hand to the supervisor over sd_notify (`FDSTORE=1`,
    /// named by `FDNAME=`; `FDSTOREREMOVE=1` with `FDNAME=` takes them back), which passes
    /// them to every later instance after its listeners, by the same protocol (their names
    /// in `LISTEN_FDNAMES`), so a daemon can keep client connections or state across a
    /// restart. `0` (the default) disables it. Linux.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fd_store_max: u32,
    /// The most memory the whole tree may use (systemd's `MemoryMax=`, cgroup v2
    /// `memory.max`): past it the kernel's OOM killer ends a process of the tree, which
    /// is reported as [`EventKind::OutOfMemory`] and restarted by the restart policy.
    /// Needs a cgroup with the memory controller: a start is refused with
    /// [`QuotaError`](crate::command::QuotaError) where there is none, never run
    /// without the limit.
    ///
    /// [`EventKind::OutOfMemory`]: crate::supervision::EventKind::OutOfMemory
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<ByteSize>,
    /// Above this much memory the tree is throttled and its memory reclaimed hard
    /// (systemd's `MemoryHigh=`, `memory.high`); never killed for it. As `memory_max`,
    /// refused where the memory controller is not available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<ByteSize>,
    /// The CPU the tree may use, in percent of one core (systemd's `CPUQuota=`,
    /// `cpu.max`): `"50%"`, `"200%"`. Refused where the cpu controller is not available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<CpuQuota>,
    /// The most tasks (processes and threads) the tree may have (systemd's `TasksMax=`,
    /// `pids.max`): a `fork` past it fails. Refused where the pids controller is not
    /// available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn yes() -> bool {
    true
}

fn default_ready_timeout() -> Duration {
    crate::supervision::supervisor::DEFAULT_READY_TIMEOUT
}

impl CommandSpec {
    /// A spec with defaults: inherited output, ready once started, SIGTERM then SIGKILL
    /// after 5 s to the whole tree ([`KillMode::ControlGroup`]), default restart policy,
    /// dies with the supervisor, the supervisor's own user and limits.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        CommandSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            env_clear: false,
            cwd: None,
            user: None,
            group: None,
            supplementary_groups: None,
            umask: None,
            limits: ResourceLimits::default(),
            stdout: Output::default(),
            stderr: Output::default(),
            readiness: Readiness::default(),
            ready_timeout: default_ready_timeout(),
            health: None,
            stop: StopSpec::default(),
            restart: RestartPolicy::default(),
            die_with_supervisor: true,
            cgroup: true,
            listeners: Vec::new(),
            start_on_demand: false,
            fd_store_max: 0,
            memory_max: None,
            memory_high: None,
            cpu_max: None,
            pids_max: None,
        }
    }

    /// Append arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Set the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Run as this user (name or id); see [`CommandSpec::user`](CommandSpec#structfield.user).
    pub fn user(mut self, user: impl Into<UserRef>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Run with this primary group.
    pub fn group(mut self, group: impl Into<GroupRef>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Set the supplementary groups explicitly (an empty list drops them all).
    pub fn supplementary_groups<I, G>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<GroupRef>,
    {
        self.supplementary_groups = Some(groups.into_iter().map(Into::into).collect());
        self
    }

    /// Set the file mode creation mask (for example `0o027`).
    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(Umask(mask));
        self
    }

    /// Set resource limits.
    pub fn limits(mut self, limits: ResourceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Route standard output.
    pub fn stdout(mut self, output: Output) -> Self {
        self.stdout = output;
        self
    }

    /// Route standard error.
    pub fn stderr(mut self, output: Output) -> Self {
        self.stderr = output;
        self
    }

    /// How readiness is detected.
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Deadline for readiness.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Periodic health checks.
    pub fn health(mut self, health: HealthSpec) -> Self {
        self.health = Some(health);
        self
    }

    /// How it is stopped.
    pub fn stop(mut self, stop: StopSpec) -> Self {
        self.stop = stop;
        self
    }

    /// When it is restarted.
    pub fn restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// Whether each instance gets a cgroup of its own where possible (default `true`);
    /// see [`CommandSpec::cgroup`](CommandSpec#structfield.cgroup).
    pub fn cgroup(mut self, cgroup: bool) -> Self {
        self.cgroup = cgroup;
        self
    }

    /// Add a listening socket handed to every instance (see [`Listener`]).
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Start it only on the first connection to its listeners, and again after each clean
    /// exit; see [`CommandSpec::start_on_demand`](CommandSpec#structfield.start_on_demand).
    pub fn start_on_demand(mut self, on_demand: bool) -> Self {
        self.start_on_demand = on_demand;
        self
    }

    /// Keep up to `max` descriptors that instances hand over with `FDSTORE=1`; see
    /// [`CommandSpec::fd_store_max`](CommandSpec#structfield.fd_store_max).
    pub fn fd_store_max(mut self, max: u32) -> Self {
        self.fd_store_max = max;
        self
    }

    /// Limit the tree's memory to `bytes` (`memory.max`); see
    /// [`CommandSpec::memory_max`](CommandSpec#structfield.memory_max).
    pub fn memory_max(mut self, bytes: u64) -> Self {
        self.memory_max = Some(ByteSize(bytes));
        self
    }

    /// Throttle the tree above `bytes` of memory (`memory.high`); see
    /// [`CommandSpec::memory_high`](CommandSpec#structfield.memory_high).
    pub fn memory_high(mut self, bytes: u64) -> Self {
        self.memory_high = Some(ByteSize(bytes));
        self
    }

    /// Limit the tree's CPU to `percent` of one core (`cpu.max`); see
    /// [`CommandSpec::cpu_max`](CommandSpec#structfield.cpu_max).
    pub fn cpu_max(mut self, percent: u32) -> Self {
        self.cpu_max = Some(CpuQuota { percent });
        self
    }

    /// Limit the tree to `tasks` processes and threads (`pids.max`); see
    /// [`CommandSpec::pids_max`](CommandSpec#structfield.pids_max).
    pub fn pids_max(mut self, tasks: u64) -> Self {
        self.pids_max = Some(tasks);
        self
    }

    /// Whether any quota is set (`memory_max`, `memory_high`, `cpu_max`, `pids_max`).
    pub fn has_quotas(&self) -> bool {
        self.memory_max.is_some()
            || self.memory_high.is_some()
            || self.cpu_max.is_some()
            || self.pids_max.is_some()
    }

    /// Whether it dies with the supervisor (default `true`).
    pub fn die_with_supervisor(mut self, die: bool) -> Self {
        self.die_with_supervisor = die;
        self
    }
}
