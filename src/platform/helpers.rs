//! Short-lived helper processes (a health check's command) through tokio's `Command`, and
//! what an `exec` failure means. The platform differences (process groups, signals, OS
//! error numbers) stay here, so callers above need no `cfg`.

use std::io;

use super::ExitStatus;

/// Make `command` lead a new process group (Unix), so that [`kill_group`] reaches what it
/// starts too. Windows: unchanged (`kill_on_drop` ends the process alone).
pub(crate) fn own_process_group(command: &mut tokio::process::Command) {
    #[cfg(unix)]
    command.process_group(0);
    #[cfg(not(unix))]
    let _ = command;
}

/// A signal the testing kit sends: to a command run against a stack (its process group),
/// or to a service's main process (freeze and thaw).
#[cfg_attr(not(feature = "toml"), allow(dead_code))] // the testing kit's stacks (feature `toml`)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nudge {
    /// SIGINT: what Ctrl-C on a terminal sends.
    Interrupt,
    /// SIGTERM: stop, please.
    Terminate,
    /// SIGSTOP: a hung process, to test what depends on it.
    Freeze,
    /// SIGCONT: it goes on.
    Thaw,
}

impl Nudge {
    /// The signal's number (Unix); `None` where there are no signals.
    pub(crate) fn number(self) -> Option<i32> {
        #[cfg(unix)]
        {
            use rustix::process::Signal;
            let signal = match self {
                Nudge::Interrupt => Signal::INT,
                Nudge::Terminate => Signal::TERM,
                Nudge::Freeze => Signal::STOP,
                Nudge::Thaw => Signal::CONT,
            };
            Some(signal.as_raw())
        }
        #[cfg(not(unix))]
        {
            let _ = self;
            None
        }
    }
}

/// Send `nudge` to the process group led by `pid` (Unix; `Unsupported` on Windows, where
/// the caller kills the process instead). Only for a group leader that is our own child,
/// not yet reaped (see [`kill_group`]).
#[cfg_attr(not(feature = "toml"), allow(dead_code))] // the testing kit's stacks (feature `toml`)
pub(crate) fn nudge_group(pid: u32, nudge: Nudge) -> io::Result<()> {
    match nudge.number() {
        #[cfg(unix)]
        Some(signal) => super::signal_process_group(pid, signal),
        _ => {
            let _ = pid;
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no signals on this OS",
            ))
        }
    }
}

/// SIGKILL the process group led by `pid` (Unix; nothing on Windows). Only for a group
/// leader that is our own child, not yet reaped: while it exists, no other group can take
/// its id.
pub(crate) fn kill_group(pid: u32) -> io::Result<()> {
    #[cfg(unix)]
    return super::signal_process_group(pid, rustix::process::Signal::KILL.as_raw());
    #[cfg(not(unix))]
    {
        let _ = pid;
        Ok(())
    }
}

impl ExitStatus {
    /// The crate's status for one from `std`.
    pub(crate) fn from_std(status: std::process::ExitStatus) -> ExitStatus {
        if let Some(code) = status.code() {
            return ExitStatus::Code(code);
        }
        #[cfg(unix)]
        if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
            return ExitStatus::Signal(signal);
        }
        ExitStatus::Unknown
    }
}

/// What a failed `exec` says about the program, from its OS error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Windows reports its spawn errors itself: only `Other` is made there.
#[cfg_attr(windows, allow(dead_code))]
pub(crate) enum ExecErrno {
    /// No such file (the program, or its `#!` interpreter).
    NotFound,
    /// Not executable by the user.
    PermissionDenied,
    /// Not a format the kernel runs.
    BadFormat,
    /// Anything else (always on Windows, where the spawn reports its own errors).
    Other,
}

/// Classify the error of a failed `exec`.
pub(crate) fn exec_errno(error: &io::Error) -> ExecErrno {
    #[cfg(unix)]
    match error.raw_os_error() {
        Some(libc::ENOENT) => ExecErrno::NotFound,
        Some(libc::EACCES) => ExecErrno::PermissionDenied,
        Some(libc::ENOEXEC) => ExecErrno::BadFormat,
        _ => ExecErrno::Other,
    }
    #[cfg(not(unix))]
    {
        let _ = error;
        ExecErrno::Other
    }
}
