//! How the supervisor knows a program is ready, and how it checks that it stays healthy.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::output::StreamName;
use crate::supervision::HealthPolicy;

/// How the supervisor knows the program is ready.
///
/// Every network check believes only the service's own processes: a TCP port, HTTP port
/// or Unix socket counts only once the listening socket is held by a process of the
/// service's tree (its cgroup, else its process group; Linux). A port that a stranger or
/// an orphan holds is never "ready": at spawn time it is a
/// [`StartError::PortInUse`](crate::supervision::StartError::PortInUse) naming the holder.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Readiness {
    /// Ready as soon as it is started.
    #[default]
    Started,
    /// The identity handshake: the daemon writes its manifest at `path` (this crate's
    /// [`CacheManifest`](crate::protocol::CacheManifest)) and answers the probe on
    /// the endpoint it records. Also enables adopting an already running daemon.
    Manifest {
        /// The manifest file.
        path: PathBuf,
    },
    /// systemd's sd_notify protocol: the supervisor sets `NOTIFY_SOCKET` and waits for
    /// `READY=1` from a process of the service; `STATUS=` lines become events.
    Notify,
    /// A TCP port accepts connections, on a listening socket of the service's own tree.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// An HTTP `GET` answers 2xx, from a listening socket of the service's own tree.
    Http {
        /// `http://host:port/path` (plain HTTP/1.1; no TLS).
        url: String,
    },
    /// A command exits with status 0 (run again every `interval` until it does), as
    /// Kubernetes' and process-compose's `exec` probes. It runs in the service's working
    /// directory (`cwd`), as the supervisor's user, with the supervisor's environment.
    Exec {
        /// The program and its arguments (no shell: use `["sh", "-c", "..."]` for one).
        command: Vec<String>,
        /// Time between two runs of the command.
        #[serde(
            rename = "interval_ms",
            with = "crate::serde_util::duration_ms",
            default = "default_exec_interval"
        )]
        interval: Duration,
    },
    /// A Unix stream socket at `path` accepts connections, is owned by the service's user
    /// and listened on by a process of the service's tree.
    UnixSocket {
        /// The socket file.
        path: PathBuf,
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

/// Default time between two runs of an exec readiness command.
pub const DEFAULT_EXEC_INTERVAL: Duration = Duration::from_millis(250);

fn default_exec_interval() -> Duration {
    DEFAULT_EXEC_INTERVAL
}

impl Readiness {
    /// Ready once `command` exits 0, tried every [`DEFAULT_EXEC_INTERVAL`].
    pub fn exec<I, S>(command: I) -> Readiness
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Readiness::Exec {
            command: command.into_iter().map(Into::into).collect(),
            interval: DEFAULT_EXEC_INTERVAL,
        }
    }

    /// Ready once `GET url` answers 2xx.
    pub fn http(url: impl Into<String>) -> Readiness {
        Readiness::Http { url: url.into() }
    }

    /// Ready once `address` (`host:port`) accepts connections on a socket of the service.
    pub fn tcp(address: impl Into<String>) -> Readiness {
        Readiness::Tcp {
            address: address.into(),
        }
    }
}

impl Readiness {
    /// The check in words, for messages and comments: `tcp 127.0.0.1:6400`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Readiness::Started => "started".into(),
            Readiness::Manifest { path } => format!(
                "the identity handshake (manifest {}, probe on its endpoint)",
                path.display()
            ),
            Readiness::Notify => "sd_notify READY=1".into(),
            Readiness::Tcp { address } => format!("tcp {address}"),
            Readiness::Http { url } => format!("http GET {url}"),
            Readiness::Exec { command, interval } => {
                format!("exec {command:?} every {}", human_duration(*interval))
            }
            Readiness::UnixSocket { path } => format!("unix socket {}", path.display()),
            Readiness::LogLine { pattern, stream } => {
                format!("a line containing {pattern:?} on {}", stream.as_str())
            }
            Readiness::File { path } => format!("the file {} exists", path.display()),
            Readiness::Delay { delay } => format!("{} after the start", human_duration(*delay)),
        }
    }
}

/// `250ms`, `5s`: milliseconds unless whole seconds (also the syntax of a systemd time span,
/// and what `running-process wait --timeout` reads).
pub(crate) fn human_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
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

/// One health check. Each one runs within the policy's timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthCheck {
    /// A ping frame over the backend's socket (needs `Readiness::Manifest`).
    Ping,
    /// A TCP connection is accepted.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// An HTTP `GET` answers 2xx.
    Http {
        /// `http://host:port/path`.
        url: String,
    },
    /// A command exits with status 0, run in the service's working directory.
    Exec {
        /// The program and its arguments (no shell).
        command: Vec<String>,
    },
    /// A Unix stream socket accepts a connection.
    UnixSocket {
        /// The socket file.
        path: PathBuf,
    },
    /// The program sent `WATCHDOG=1` over sd_notify within the last `timeout` (needs
    /// `Readiness::Notify`; the program gets `WATCHDOG_USEC` set accordingly).
    Watchdog {
        /// Longest allowed silence.
        #[serde(rename = "timeout_ms", with = "crate::serde_util::duration_ms")]
        timeout: Duration,
    },
}
