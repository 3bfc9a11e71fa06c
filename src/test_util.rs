//! Helpers of the crate's unit tests.

use std::time::Duration;

/// The generous deadline of a unit test's wait for an event (a loaded 2-core machine can
/// stall for seconds; an event that never comes fails the test instead of hanging it).
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// `future`'s output, or a panic naming the deadline.
pub(crate) async fn within_deadline<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("not resolved within the deadline")
}

/// The command line that runs `script` with the platform's shell (`cmd /c` on Windows,
/// `sh -c` elsewhere).
pub(crate) fn shell(script: &str) -> Vec<String> {
    let (shell, flag) = WINDOWS_OR_SH.pick(("cmd", "/c"), ("sh", "-c"));
    vec![shell.to_owned(), flag.to_owned(), script.to_owned()]
}

/// Which shell [`shell`] runs: picks the spelling of a script for it.
pub(crate) struct Shell {
    windows: bool,
}

/// The platform's [`Shell`].
pub(crate) const WINDOWS_OR_SH: Shell = Shell {
    windows: cfg!(windows),
};

impl Shell {
    /// `windows` for `cmd`, `sh` for a POSIX shell.
    pub(crate) fn pick<T>(&self, windows: T, sh: T) -> T {
        if self.windows {
            windows
        } else {
            sh
        }
    }
}
