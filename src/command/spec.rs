//! [`CommandSpec`]: everything needed to run an OS command as a supervised backend, as
//! plain data (serde), so a config file can describe it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::supervision::{HealthPolicy, RestartPolicy};

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
    /// Kill it (and its process group) when the supervisor goes away, even by a crash
    /// (Linux: `PR_SET_PDEATHSIG`), so no orphan is left behind. Default `true`.
    #[serde(default = "yes")]
    pub die_with_supervisor: bool,
}

fn yes() -> bool {
    true
}

fn default_ready_timeout() -> Duration {
    crate::supervision::supervisor::DEFAULT_READY_TIMEOUT
}

impl CommandSpec {
    /// A spec with defaults: inherited output, ready once started, SIGTERM then SIGKILL
    /// after 5 s to the process group, default restart policy, dies with the supervisor.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        CommandSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            env_clear: false,
            cwd: None,
            stdout: Output::default(),
            stderr: Output::default(),
            readiness: Readiness::default(),
            ready_timeout: default_ready_timeout(),
            health: None,
            stop: StopSpec::default(),
            restart: RestartPolicy::default(),
            die_with_supervisor: true,
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

    /// Whether it dies with the supervisor (default `true`).
    pub fn die_with_supervisor(mut self, die: bool) -> Self {
        self.die_with_supervisor = die;
        self
    }
}

/// Where a standard stream of the program goes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Output {
    /// The supervisor's own stream.
    #[default]
    Inherit,
    /// Discarded.
    Null,
    /// Appended to a file.
    File {
        /// The file.
        path: PathBuf,
    },
    /// Each line as a `tracing` event (target `running_process::output`) with the service
    /// name and the stream.
    Tracing,
}

/// Which standard stream a log-line readiness watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamName {
    /// Standard output.
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
}

/// How the supervisor knows the program is ready.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Readiness {
    /// Ready as soon as it is started.
    #[default]
    Started,
    /// The identity handshake: the daemon writes its manifest at `path` (this crate's
    /// [`CacheManifest`](crate::broker::protocol::CacheManifest)) and answers the probe on
    /// the endpoint it records. Also enables adopting an already running daemon.
    Manifest {
        /// The manifest file.
        path: PathBuf,
    },
    /// systemd's sd_notify protocol: the supervisor sets `NOTIFY_SOCKET` and waits for
    /// `READY=1`; `STATUS=` lines become events.
    Notify,
    /// A TCP port accepts connections.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A line containing `pattern` appears on a standard stream.
    LogLine {
        /// Substring to look for.
        pattern: String,
        /// The stream to watch.
        #[serde(default)]
        stream: StreamName,
    },
    /// A file appears.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A fixed delay after the start (the last resort).
    Delay {
        /// The delay.
        #[serde(rename = "delay_ms", with = "crate::serde_util::duration_ms")]
        delay: Duration,
    },
}

/// Periodic health checks: when ([`HealthPolicy`]) and how ([`HealthCheck`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// Interval, timeout and failure threshold.
    #[serde(flatten)]
    pub policy: HealthPolicy,
    /// The check.
    pub check: HealthCheck,
}

/// One health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HealthCheck {
    /// A ping frame over the backend's socket (needs `Readiness::Manifest`).
    Ping,
    /// A TCP connection is accepted.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// The program sent `WATCHDOG=1` over sd_notify within the last `timeout` (needs
    /// `Readiness::Notify`; the program gets `WATCHDOG_USEC` set accordingly).
    Watchdog {
        /// Longest allowed silence.
        #[serde(rename = "timeout_ms", with = "crate::serde_util::duration_ms")]
        timeout: Duration,
    },
}

/// A signal for stopping (Unix names; Windows stops with a request or kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StopSignal {
    /// SIGTERM.
    #[default]
    Sigterm,
    /// SIGINT.
    Sigint,
    /// SIGHUP.
    Sighup,
    /// SIGQUIT.
    Sigquit,
    /// SIGUSR1.
    Sigusr1,
    /// SIGUSR2.
    Sigusr2,
    /// SIGKILL (no grace at all).
    Sigkill,
}

impl StopSignal {
    /// The signal number.
    #[cfg(unix)]
    pub fn as_raw(self) -> i32 {
        use rustix::process::Signal;
        match self {
            StopSignal::Sigterm => Signal::TERM,
            StopSignal::Sigint => Signal::INT,
            StopSignal::Sighup => Signal::HUP,
            StopSignal::Sigquit => Signal::QUIT,
            StopSignal::Sigusr1 => Signal::USR1,
            StopSignal::Sigusr2 => Signal::USR2,
            StopSignal::Sigkill => Signal::KILL,
        }
        .as_raw()
    }
}

/// How a program is stopped: a signal (or, with `request`, the socket shutdown request),
/// a grace period, then SIGKILL; to the whole process group when `process_group` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopSpec {
    /// The graceful signal.
    #[serde(default)]
    pub signal: StopSignal,
    /// Time between the graceful stop and the kill.
    #[serde(
        rename = "grace_ms",
        with = "crate::serde_util::duration_ms",
        default = "default_grace"
    )]
    pub grace: Duration,
    /// Signal the whole process group (the program is started as a group leader), so
    /// grandchildren a shell started are stopped too. Default `true`.
    #[serde(default = "yes")]
    pub process_group: bool,
    /// Ask over the socket first (shutdown request) instead of signalling; needs
    /// `Readiness::Manifest`. The only graceful way on Windows.
    #[serde(default)]
    pub request: bool,
}

fn default_grace() -> Duration {
    crate::supervision::supervisor::DEFAULT_STOP_GRACE
}

impl Default for StopSpec {
    fn default() -> Self {
        StopSpec {
            signal: StopSignal::default(),
            grace: default_grace(),
            process_group: true,
            request: false,
        }
    }
}
