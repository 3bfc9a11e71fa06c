//! [`EphemeralStack::run`]: a command (a test suite, a script) run against a ready stack,
//! stopped when a service fails, as `running-process run` does.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::stack::{EphemeralStack, LAST_LINES};
use crate::compose::ServiceFile;
use crate::platform::{
    kill_group, nudge_group, own_process_group, ExitWatcher, Nudge, ProcessHandle,
};
use crate::supervision::{Event, EventKind, RestartKind};

/// The default of [`RunOptions::grace`]: how long a command may take to exit once asked.
pub const DEFAULT_COMMAND_GRACE: Duration = Duration::from_secs(10);

/// How [`EphemeralStack::run`] runs its command.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// Let the command finish when a service fails (default: stop it at once). The
    /// failure is reported either way.
    pub keep_going: bool,
    /// How long the command may take to exit after SIGTERM (a failed service) or SIGINT
    /// (cancelled) before its process group is killed. Default [`DEFAULT_COMMAND_GRACE`].
    pub grace: Duration,
    /// Cancelled (Ctrl-C, say): the command's process group gets SIGINT, then SIGKILL
    /// after `grace`.
    pub cancel: CancellationToken,
    /// Run the command in a process group of its own (the default): what it leaves
    /// behind is killed with it, and signals reach all of it. Turn it off for an
    /// interactive command on a terminal, which must stay in the terminal's foreground
    /// group to read it (signals then go to the command's process alone).
    pub own_process_group: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            keep_going: false,
            grace: DEFAULT_COMMAND_GRACE,
            cancel: CancellationToken::new(),
            own_process_group: true,
        }
    }
}

impl RunOptions {
    /// Let the command finish when a service fails.
    pub fn keep_going(mut self, keep_going: bool) -> Self {
        self.keep_going = keep_going;
        self
    }

    /// How long the command may take to exit once asked.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Interrupt the command when `cancel` is cancelled.
    pub fn cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Whether the command leads a process group of its own (see
    /// [`RunOptions::own_process_group`]).
    pub fn own_process_group(mut self, own: bool) -> Self {
        self.own_process_group = own;
        self
    }
}

/// How a command run against a stack ended.
#[derive(Debug)]
#[non_exhaustive]
pub struct RunReport {
    /// The command's exit status.
    pub status: std::process::ExitStatus,
    /// The first service that failed while the command ran.
    pub failure: Option<ServiceFailure>,
    /// Whether the run was cancelled ([`RunOptions::cancel`]).
    pub interrupted: bool,
}

/// A service that failed while a command ran against its stack.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceFailure {
    /// The service (instance `NAME-k` for one with replicas).
    pub service: String,
    /// What happened, as the event says it (`exited (pid 42): killed by signal 9`).
    pub what: String,
    /// Its last lines of output.
    pub last_lines: Vec<String>,
    /// Its log file.
    pub log: Option<PathBuf>,
}

impl std::fmt::Display for ServiceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service {} failed: {}", self.service, self.what)?;
        if !self.last_lines.is_empty() {
            write!(f, "\nlast lines of {}:", self.service)?;
            for line in &self.last_lines {
                write!(f, "\n  {line}")?;
            }
        }
        Ok(())
    }
}

impl EphemeralStack {
    /// Run `command` against the stack: with [`EphemeralStack::env`] in its environment,
    /// leading a process group of its own (unless [`RunOptions::own_process_group`] is
    /// off). Returns once it has exited; whatever it left
    /// running in its group is killed then.
    ///
    /// A service that fails while it runs (exits when its policy says it should keep
    /// running or with a failure status, fails a start or its health checks, or the set
    /// gives up; as the set has seen it by the time the command's exit is noticed) is
    /// reported in [`RunReport::failure`], and the command gets SIGTERM (then
    /// SIGKILL after [`RunOptions::grace`]) unless [`RunOptions::keep_going`]. Dropping the
    /// future kills the command.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use running_process::testing::{EphemeralStack, RunOptions};
    ///
    /// let stack = EphemeralStack::start("running-process.toml").await?;
    /// let mut pytest = tokio::process::Command::new("pytest");
    /// pytest.arg("tests/integration");
    /// let report = stack.run(pytest, RunOptions::default()).await?;
    /// if let Some(failure) = &report.failure {
    ///     eprintln!("{failure}");
    /// }
    /// assert!(report.status.success() && report.failure.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn run(
        &self,
        mut command: tokio::process::Command,
        options: RunOptions,
    ) -> io::Result<RunReport> {
        let file = self.stack().file();
        let mut events = self.stack().events();
        command.envs(self.env()).kill_on_drop(true);
        let group = options.own_process_group;
        if group {
            own_process_group(&mut command);
        }
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the command exited at once"))?;
        // A handle that waits without reaping: the group is killed while its leader's id
        // is still ours.
        let exit = ProcessHandle::open(pid)
            .map_err(|_| io::Error::other("cannot open a handle to the command"))?
            .into_watcher()?;
        let mut failure = None;
        let mut interrupted = false;
        let mut events_open = true;
        // When the command was asked to exit (SIGTERM or SIGINT).
        let mut asked: Option<tokio::time::Instant> = None;
        loop {
            let deadline = asked.map(|at| at + options.grace);
            tokio::select! {
                _ = exit.wait() => break,
                _ = options.cancel.cancelled(), if !interrupted => {
                    interrupted = true;
                    asked = Some(ask(pid, &exit, group, Nudge::Interrupt));
                }
                event = events.next(), if failure.is_none() && events_open => match event {
                    Some(Ok(event)) => if let Some(what) = failure_of(&file, &event) {
                        failure = Some(self.failure(&event.service, what).await);
                        if !options.keep_going && asked.is_none() {
                            asked = Some(ask(pid, &exit, group, Nudge::Terminate));
                        }
                    },
                    Some(Err(_lagged)) => {}
                    // The set ended: its outcome is reported by whoever owns it.
                    None => events_open = false,
                },
                _ = sleep_until(deadline) => {
                    tracing::warn!(pid, "the command did not exit within {:?}; killing it", options.grace);
                    if group {
                        let _ = kill_group(pid);
                    }
                    let _ = child.start_kill();
                    asked = None;
                }
            }
        }
        // Its leader exited but is not reaped yet: the group id cannot be anyone else's.
        if group {
            let _ = kill_group(pid);
        }
        // A failure the set saw before the command's exit was noticed still counts.
        while failure.is_none() && events_open {
            match events.next().now_or_never() {
                Some(Some(Ok(event))) => {
                    if let Some(what) = failure_of(&file, &event) {
                        failure = Some(self.failure(&event.service, what).await);
                    }
                }
                Some(Some(Err(_lagged))) => {}
                Some(None) | None => break,
            }
        }
        let status = child.wait().await?;
        Ok(RunReport {
            status,
            failure,
            interrupted,
        })
    }

    async fn failure(&self, service: &str, what: String) -> ServiceFailure {
        ServiceFailure {
            service: service.to_owned(),
            what,
            last_lines: self.last_lines(service, LAST_LINES).await,
            log: self.log_path(service),
        }
    }
}

/// Send `nudge` to the command's group, or to its process alone (where there are no
/// signals: kill it); when.
fn ask(pid: u32, exit: &ExitWatcher, group: bool, nudge: Nudge) -> tokio::time::Instant {
    let sent = match group {
        true => nudge_group(pid, nudge),
        false => exit.nudge(nudge),
    };
    if sent.is_err() {
        let _ = exit.kill();
    }
    tokio::time::Instant::now()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What makes `event` a failure of a service while a command runs against the set.
fn failure_of(file: &ServiceFile, event: &Event) -> Option<String> {
    let failed = match &event.kind {
        EventKind::GaveUp { .. } | EventKind::StartFailed { .. } | EventKind::Unhealthy { .. } => {
            true
        }
        EventKind::Exited { status, .. } => {
            let may_end = file.service_of(&event.service).is_some_and(|service| {
                service.spec.restart.kind != RestartKind::Permanent && status.success()
            });
            !may_end
        }
        _ => false,
    };
    failed.then(|| event.kind.to_string())
}
