//! The typed event stream of a supervision tree. Every event is also a `tracing` event in a
//! span that names the service.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::stream::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::ReusableBoxFuture;

use super::dependency::Dependency;
use super::error::{HealthError, LastOutput, StartError};
use super::policy::{IntensityExceeded, Strategy};
use crate::handle::BackendHandleError;
use crate::handle::ExitStatus;

/// The most events a supervision tree buffers for its subscribers before a slow one is
/// told it lagged (a tree of 64 services or more).
pub(crate) const EVENT_BUFFER: usize = 1024;
/// Events buffered per service of a tree: a burst of restarts of every service at once
/// (about six events each) fits twice over.
pub(crate) const EVENT_BUFFER_PER_SERVICE: usize = 16;
/// The fewest events a tree buffers (a single service: ten restarts' worth).
pub(crate) const MIN_EVENT_BUFFER: usize = 64;

/// The event buffer of a tree of `services` services: [`EVENT_BUFFER_PER_SERVICE`] each,
/// within [`MIN_EVENT_BUFFER`] and [`EVENT_BUFFER`]. The buffer is allocated up front, so
/// a single supervised service does not pay for a thousand slots.
pub(crate) fn event_buffer_for(services: usize) -> usize {
    services
        .saturating_mul(EVENT_BUFFER_PER_SERVICE)
        .clamp(MIN_EVENT_BUFFER, EVENT_BUFFER)
}

/// One thing that happened to a supervised service or group.
///
/// `Display` gives one line for people: `12:04:05.123 web: exited (pid 4242): exit code 1`
/// (the time of day in UTC).
#[derive(Debug, Clone)]
pub struct Event {
    /// The service or group it happened to (`group/child` inside groups).
    pub service: Arc<str>,
    /// What happened.
    pub kind: EventKind,
    /// When (wall clock).
    pub at: SystemTime,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", TimeOfDay(self.at), self.service, self.kind)
    }
}

/// `HH:MM:SS.mmm` in UTC (no time zone database needed, nothing ambiguous).
pub(crate) struct TimeOfDay(pub(crate) SystemTime);

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = self
            .0
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs() % 86_400;
        write!(
            f,
            "{:02}:{:02}:{:02}.{:03}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            since.subsec_millis()
        )
    }
}

/// `text` on one line: line breaks become ` | `.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

impl std::fmt::Display for EventKind {
    /// One line, for people (the examples print events this way).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventKind::Starting => f.write_str("starting"),
            EventKind::AdoptedExisting { pid } => {
                write!(f, "adopted the running backend (pid {pid})")
            }
            EventKind::ProbeRejected { error } => {
                write!(
                    f,
                    "recorded backend not trusted: {}",
                    one_line(&crate::report::Chain(&**error).to_string())
                )
            }
            EventKind::Spawned { pid } => write!(f, "spawned (pid {pid})"),
            EventKind::Ready {
                pid: Some(pid),
                took,
            } => write!(f, "ready (pid {pid}, {took:.1?})"),
            EventKind::Ready { pid: None, took } => write!(f, "ready: every member ({took:.1?})"),
            EventKind::Status { status } => write!(f, "status: {}", one_line(status)),
            EventKind::StartFailed { error } => {
                write!(
                    f,
                    "start failed: {}",
                    one_line(&crate::report::Chain(&**error).to_string())
                )
            }
            EventKind::HealthCheckFailed {
                pid,
                consecutive,
                error,
            } => write!(
                f,
                "health check failed (pid {pid}, {consecutive} in a row): {}",
                one_line(&crate::report::Chain(&**error).to_string())
            ),
            EventKind::Healthy { pid } => write!(f, "healthy (pid {pid})"),
            EventKind::Unhealthy { pid } => write!(f, "unhealthy (pid {pid}): replacing it"),
            EventKind::OutOfMemory { pid, kills, limit } => out_of_memory(f, *pid, *kills, *limit),
            EventKind::Exited {
                pid,
                status,
                output,
            } => exited(f, *pid, status, output),
            EventKind::RestartScheduled { attempt, delay } => {
                write!(f, "restart #{attempt} in {delay:.1?}")
            }
            EventKind::GaveUp { reason } => write!(f, "gave up: {reason}"),
            EventKind::Completed => f.write_str("completed"),
            EventKind::Stopping => f.write_str("stopping"),
            EventKind::Stopped => f.write_str("stopped"),
            EventKind::Listening => f.write_str("listening: starts on the next connection"),
            EventKind::Waiting { on } => write!(f, "waiting for {}", list(on)),
            EventKind::Blocked { dependency, reason } => {
                write!(
                    f,
                    "blocked: {} {reason} without becoming {}",
                    dependency.service, dependency.condition
                )
            }
            EventKind::StrategyRestart { strategy, members } => {
                write!(
                    f,
                    "{}: restarting {} with it",
                    strategy_name(*strategy),
                    members.join(", ")
                )
            }
            EventKind::MemberAdded => f.write_str("added to the group"),
            EventKind::MemberReplaced => f.write_str("replaced by a new spec"),
            EventKind::MemberRemoved => f.write_str("removed from the group"),
            EventKind::TreeFallback { reason } => write!(
                f,
                "fallback for every service: process groups instead of cgroups ({reason})"
            ),
        }
    }
}

/// `a ready, b healthy`.
/// The text of [`EventKind::Exited`]: how, and the last line it wrote.
fn exited(
    f: &mut std::fmt::Formatter<'_>,
    pid: u32,
    status: &ExitStatus,
    output: &LastOutput,
) -> std::fmt::Result {
    write!(f, "exited (pid {pid}): {status}")?;
    match output.lines().last() {
        Some(last) => write!(f, "; last output: {}", one_line(last)),
        None => Ok(()),
    }
}

/// The text of [`EventKind::OutOfMemory`].
fn out_of_memory(
    f: &mut std::fmt::Formatter<'_>,
    pid: u32,
    kills: u64,
    limit: Option<u64>,
) -> std::fmt::Result {
    let plural = if kills == 1 { "" } else { "es" };
    write!(
        f,
        "out of memory (pid {pid}): the OOM killer killed {kills} process{plural}"
    )?;
    match limit {
        Some(limit) => write!(f, " at memory_max = {}", bytes(limit)),
        None => f.write_str(" (no memory_max: the machine ran out)"),
    }
}

/// Bytes with the largest binary suffix that divides them (`64M`), else as a number.
fn bytes(n: u64) -> String {
    for (suffix, shift) in [("G", 30), ("M", 20), ("K", 10)] {
        let unit = 1u64 << shift;
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{}{suffix}", n / unit);
        }
    }
    format!("{n} bytes")
}

fn list(dependencies: &[Dependency]) -> String {
    dependencies
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::OneForOne => "one_for_one",
        Strategy::OneForAll => "one_for_all",
        Strategy::RestForOne => "rest_for_one",
    }
}

/// What happened. New kinds may be added: match with a wildcard arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventKind {
    /// Supervision of this service or group begins (also before each restart).
    Starting,
    /// A running backend was found and verified; it is adopted instead of spawning one.
    AdoptedExisting {
        /// Its PID.
        pid: u32,
    },
    /// A recorded backend failed verification: the check that failed.
    ProbeRejected {
        /// Why it was not trusted.
        error: Arc<BackendHandleError>,
    },
    /// A new backend process was started (not ready yet).
    Spawned {
        /// Its PID.
        pid: u32,
    },
    /// The backend (or, for a group, every child) is ready.
    Ready {
        /// The backend's PID (`None` for a group).
        pid: Option<u32>,
        /// Time from the start of this attempt until ready.
        took: Duration,
    },
    /// A status line from the backend (sd_notify `STATUS=`).
    Status {
        /// The text.
        status: String,
    },
    /// Starting failed (spawn, verification or readiness).
    StartFailed {
        /// Why.
        error: Arc<StartError>,
    },
    /// A health check passed: the first one of this backend, or the first after failed
    /// ones (a passing check while healthy is not reported again).
    Healthy {
        /// The backend's PID.
        pid: u32,
    },
    /// One health check failed.
    HealthCheckFailed {
        /// The backend's PID.
        pid: u32,
        /// Consecutive failures so far.
        consecutive: u32,
        /// Why.
        error: Arc<HealthError>,
    },
    /// Enough consecutive health checks failed: the backend is being replaced.
    Unhealthy {
        /// The backend's PID.
        pid: u32,
    },
    /// The kernel's OOM killer ended a process of the backend (reported just before its
    /// [`Exited`](EventKind::Exited)); the backend is restarted by its policy as after any
    /// other crash.
    OutOfMemory {
        /// The backend's main process.
        pid: u32,
        /// How many processes of its tree the OOM killer killed.
        kills: u64,
        /// The limit reached (`memory_max`), bytes, if it had one.
        limit: Option<u64>,
    },
    /// The backend process exited.
    Exited {
        /// Its PID.
        pid: u32,
        /// How, where the OS tells.
        status: ExitStatus,
        /// The last lines it wrote, when its output is captured and it exited by itself.
        output: LastOutput,
    },
    /// A restart will happen after `delay`.
    RestartScheduled {
        /// Restart attempt since the last reset (1-based).
        attempt: u32,
        /// Backoff delay before it.
        delay: Duration,
    },
    /// Supervision gave up: the restart intensity was exceeded.
    GaveUp {
        /// The limit that was exceeded.
        reason: IntensityExceeded,
    },
    /// The service ended and its restart policy does not restart it.
    Completed,
    /// A stop (or a restart request) is stopping the backend.
    Stopping,
    /// The backend has stopped.
    Stopped,
    /// Start on demand ([`Supervisor::demand`](super::Supervisor::demand)): no backend
    /// runs; the supervisor holds the listeners, and the next client to connect starts
    /// one (`Starting`, `Spawned`, `Ready` follow, and that client is served by it).
    Listening,
    /// Not started yet: these dependencies have not reached their conditions.
    Waiting {
        /// What it waits for.
        on: Vec<Dependency>,
    },
    /// Not started: a dependency can no longer reach its condition without a request
    /// from outside. It starts by itself once that changes.
    Blocked {
        /// The dependency (boxed: every event of a tree is buffered, so the rarest kind
        /// should not make them all bigger).
        dependency: Box<Dependency>,
        /// What became of it (`ended`, `failed`, `was stopped`, `was removed`, `is
        /// blocked`).
        reason: &'static str,
    },
    /// The group's strategy restarts these members with this one (it ended and is
    /// restarted, or was restarted or replaced on request): they are stopped now,
    /// dependants first, and start again as their dependencies allow.
    StrategyRestart {
        /// The strategy.
        strategy: Strategy,
        /// The members restarted with it, in start order.
        members: Vec<String>,
    },
    /// The member was added to a running group.
    MemberAdded,
    /// The member's spec was replaced in a running group (its old instance stopped; the
    /// new one starts as its dependencies allow).
    MemberReplaced,
    /// The member was stopped and removed from its group.
    MemberRemoved,
    /// The documented fallback of tree tracking is in force for every service of this
    /// process from now on: the machine gives the supervisor no cgroup v2 (Linux), so
    /// service trees are tracked by process group, which a `setsid()` child escapes.
    /// Announced once, by the first service it applies to; each status row says what is
    /// in force for that service ([`MemberStatus::tree`](super::MemberStatus::tree)).
    TreeFallback {
        /// Why (`"cgroup v2 is not mounted"`, `"no write access to its own cgroup ..."`).
        reason: Arc<str>,
    },
}

/// Where events are emitted: a broadcast sender plus the service name. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct EventSink {
    service: Arc<str>,
    tx: broadcast::Sender<Event>,
}

impl EventSink {
    pub(crate) fn new(service: impl Into<Arc<str>>, tx: broadcast::Sender<Event>) -> Self {
        EventSink {
            service: service.into(),
            tx,
        }
    }

    /// The same channel, for a child called `name` (`parent/name`).
    pub(crate) fn child(&self, name: &str) -> EventSink {
        self.renamed(&format!("{}/{}", self.service, name))
    }

    /// The same channel, under the name `name`.
    pub(crate) fn renamed(&self, name: &str) -> EventSink {
        EventSink {
            service: name.into(),
            tx: self.tx.clone(),
        }
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// The channel, to subscribe to it later.
    pub(crate) fn sender(&self) -> broadcast::Sender<Event> {
        self.tx.clone()
    }

    /// Publish an event (never blocks; nobody listening is fine) and log it.
    pub(crate) fn emit(&self, kind: EventKind) {
        trace(&self.service, &kind);
        let _ = self.tx.send(Event {
            service: self.service.clone(),
            kind,
            at: SystemTime::now(),
        });
    }
}

fn trace(service: &str, kind: &EventKind) {
    use tracing::{info, warn};
    let span = tracing::info_span!("service", name = %service);
    let _entered = span.enter();
    match kind {
        EventKind::Starting => info!("starting"),
        EventKind::AdoptedExisting { pid } => info!(pid, "adopted running backend"),
        EventKind::ProbeRejected { error } => {
            warn!(error = %crate::report::Chain(&error), "recorded backend not trusted")
        }
        EventKind::Spawned { pid } => info!(pid, "spawned"),
        EventKind::Ready { pid, took } => info!(?pid, ?took, "ready"),
        EventKind::Status { status } => info!(%status, "status"),
        EventKind::StartFailed { error } => {
            warn!(error = %crate::report::Chain(&error), "start failed")
        }
        EventKind::HealthCheckFailed {
            pid,
            consecutive,
            error,
        } => {
            warn!(pid, consecutive, error = %crate::report::Chain(&error), "health check failed")
        }
        EventKind::Healthy { pid } => info!(pid, "healthy"),
        EventKind::Unhealthy { pid } => warn!(pid, "unhealthy"),
        EventKind::OutOfMemory { pid, kills, limit } => {
            warn!(pid, kills, limit, "killed by the OOM killer")
        }
        EventKind::Exited {
            pid,
            status,
            output,
        } if !output.is_empty() => {
            info!(pid, %status, "exited; last output:\n{output}")
        }
        EventKind::Exited { pid, status, .. } => info!(pid, %status, "exited"),
        EventKind::RestartScheduled { attempt, delay } => {
            info!(attempt, ?delay, "restart scheduled")
        }
        EventKind::GaveUp { reason } => warn!(%reason, "gave up"),
        EventKind::Completed => info!("completed"),
        EventKind::Stopping => info!("stopping"),
        EventKind::Stopped => info!("stopped"),
        EventKind::Listening => info!("listening; starts on the next connection"),
        EventKind::Waiting { on } => info!(on = %list(on), "waiting for dependencies"),
        EventKind::Blocked { dependency, reason } => {
            warn!(%dependency, %reason, "blocked by a dependency")
        }
        EventKind::StrategyRestart { strategy, members } => {
            info!(strategy = strategy_name(*strategy), members = %members.join(", "), "strategy restart")
        }
        EventKind::MemberAdded => info!("member added"),
        EventKind::MemberReplaced => info!("member replaced"),
        EventKind::MemberRemoved => info!("member removed"),
        EventKind::TreeFallback { reason } => {
            warn!(%reason, "fallback for every service: process groups instead of cgroups")
        }
    }
}

/// A subscriber fell behind and missed this many events (the oldest ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event subscriber lagged and missed {0} events")]
pub struct Lagged(pub u64);

/// A stream of [`Event`]s. A slow subscriber never slows supervision down: when it falls
/// more events behind than the tree buffers (16 per service, 64 to 1024) it gets `Err(Lagged(n))` once and continues with the oldest event still
/// buffered; [`ServiceHandle::status`](crate::supervision::ServiceHandle::status) then
/// tells where everything stands. The stream ends when supervision has ended and every
/// event has been read.
///
/// A loop that survives lagging (`while let Some(Ok(event))` would stop at the first
/// `Lagged`):
///
/// ```no_run
/// use futures_util::StreamExt;
/// # async fn demo(service: running_process::supervision::ServiceHandle) {
/// let mut events = service.events();
/// while let Some(item) = events.next().await {
///     match item {
///         Ok(event) => println!("{event}"),
///         Err(lagged) => eprintln!("{lagged}; now: {:?}", service.status()),
///     }
/// }
/// # }
/// ```
pub struct EventStream {
    inner: ReusableBoxFuture<'static, Next>,
}

/// The next item, and the receiver to read the one after from.
type Next = (Option<Result<Event, Lagged>>, broadcast::Receiver<Event>);

impl EventStream {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Self {
        EventStream {
            inner: ReusableBoxFuture::new(next(rx)),
        }
    }
}

async fn next(
    mut rx: broadcast::Receiver<Event>,
) -> (Option<Result<Event, Lagged>>, broadcast::Receiver<Event>) {
    let item = match rx.recv().await {
        Ok(event) => Some(Ok(event)),
        Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(Lagged(n))),
        Err(broadcast::error::RecvError::Closed) => None,
    };
    (item, rx)
}

impl Stream for EventStream {
    type Item = Result<Event, Lagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (item, rx) = futures_util::ready!(self.inner.poll(cx));
        self.inner.set(next(rx));
        Poll::Ready(item)
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventStream")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event of a tree is buffered (up to 1,024 per tree): a new kind must not grow
    /// them all. 64 bytes is what they were before the group engine's kinds.
    #[test]
    fn an_event_stays_small() {
        assert!(
            std::mem::size_of::<Event>() <= 64,
            "{}",
            std::mem::size_of::<Event>()
        );
    }

    #[test]
    fn the_buffer_grows_with_the_tree_within_its_bounds() {
        assert_eq!(event_buffer_for(0), MIN_EVENT_BUFFER);
        assert_eq!(event_buffer_for(1), MIN_EVENT_BUFFER);
        assert_eq!(event_buffer_for(10), 160);
        assert_eq!(event_buffer_for(64), EVENT_BUFFER);
        assert_eq!(event_buffer_for(usize::MAX), EVENT_BUFFER);
    }
}
