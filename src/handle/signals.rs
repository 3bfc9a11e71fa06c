//! What a handle does to its process. For a real process that is the kernel handle
//! (`ExitWatcher`); the testing kit's fake backends (feature `test-util`) provide a scripted
//! one, so the supervision loop can be driven without processes.

use std::fmt::Debug;
use std::io;

use crate::platform::ExitWatcher;

/// The signals a [`BackendHandle`](super::BackendHandle) can send to its process.
pub(crate) trait ProcessControl: Send + Sync + Debug + 'static {
    /// Kill now (SIGKILL / `TerminateProcess`). Succeeds if the process already exited.
    fn kill(&self) -> io::Result<()>;
    /// Ask the process to stop (SIGTERM).
    fn terminate(&self) -> io::Result<()>;
    /// Whether [`terminate`](ProcessControl::terminate) can ask the process to stop: the
    /// graceful stop [`GracefulStop::Auto`](super::GracefulStop::Auto) uses it where it can,
    /// and sends the shutdown request over the socket where it cannot (a real process on
    /// Windows, which has no graceful signal).
    fn can_terminate(&self) -> bool {
        cfg!(unix)
    }
    /// Send an arbitrary signal number (Unix).
    #[cfg(unix)]
    fn signal(&self, signal: i32) -> io::Result<()>;
}

impl ProcessControl for ExitWatcher {
    fn kill(&self) -> io::Result<()> {
        ExitWatcher::kill(self)
    }

    fn terminate(&self) -> io::Result<()> {
        ExitWatcher::terminate(self)
    }

    #[cfg(unix)]
    fn signal(&self, signal: i32) -> io::Result<()> {
        ExitWatcher::signal(self, signal)
    }
}
