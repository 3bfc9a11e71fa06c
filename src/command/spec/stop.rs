//! How a program and the rest of its process tree are stopped.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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

    /// The signal number where the OS has signals (`None` on Windows, which stops a
    /// service by its shutdown request or a kill).
    pub(crate) fn number(self) -> Option<i32> {
        #[cfg(unix)]
        return Some(self.as_raw());
        #[cfg(not(unix))]
        None
    }
}

/// Which processes a stop signals, and what happens to the rest of the tree when the main
/// process dies: systemd's `KillMode=`.
///
/// The *tree* is the instance's own cgroup where the supervisor can create one (cgroup v2,
/// as root or in a delegated subtree; Linux), else the process group the program leads.
/// Processes that leave the process group (`setsid()`) are only tracked by the cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillMode {
    /// The stop signal, then SIGKILL after the grace period, go to every process of the
    /// tree; when the main process exits by itself, the rest of the tree is killed before
    /// a replacement starts. The default, as in systemd.
    #[default]
    ControlGroup,
    /// The stop signal goes to the main process only; SIGKILL then goes to the whole tree
    /// (after the main process exited or the grace period ran out). An unexpected exit of
    /// the main process kills the rest of the tree, as with `ControlGroup`.
    Mixed,
    /// Only the main process is signalled and killed; the rest of the tree is left alone,
    /// also when the main process dies. For daemons that deliberately leave detached
    /// children behind.
    Process,
}

/// How a program is stopped: a signal (or, with `request`, the socket shutdown request),
/// a grace period, then SIGKILL, to the processes [`KillMode`] names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Which processes are signalled. Default [`KillMode::ControlGroup`].
    #[serde(default)]
    pub kill_mode: KillMode,
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
            kill_mode: KillMode::default(),
            request: false,
        }
    }
}
