//! A long-running tool with auto-restart, health checks and backoff.
//!
//! ```text
//! cargo run --example auto_restart                  # 10 seconds, then a clean stop
//! cargo run --example auto_restart -- --seconds 30
//! ```
//!
//! Ctrl-C (or SIGTERM, on Unix) ends it early just as cleanly: the daemon is stopped, a
//! summary printed, and the exit code is 0. If supervision gives up (too many restarts),
//! the tool exits non-zero and says why.
//!
//! One demo daemon is supervised with an explicit restart policy and a ping health check.
//! So that a few seconds show every mechanism, its first starts misbehave on purpose (see
//! [`FAULTS`]): starts 1 and 2 crash and are restarted after a backoff that grows; start 3
//! hangs, fails its health checks, is declared unhealthy, killed and restarted; later
//! starts behave. Every event is printed as it happens.

mod common;

use std::collections::BTreeMap;
use std::error::Error;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use running_process::command::{CommandSpec, CommandSupervisor, HealthCheck, HealthSpec, StopSpec};
use running_process::supervision::{
    supervise, Backoff, EventKind, EventStream, HealthError, HealthPolicy, Intensity, Jitter,
    LastOutput, Outcome, RestartKind, RestartPolicy, SpawnContext, StartError, Supervisor,
};
use running_process::{BackendHandle, BackendHandleError, ExitStatus};

/// How long the tool runs without `--seconds`: long enough for every fault in [`FAULTS`]
/// and a few healthy checks after them.
const DEFAULT_SECONDS: u64 = 10;

/// Demo only: extra daemon arguments for start 1, 2, 3...; later starts get none.
const FAULTS: &[&[&str]] = &[
    &["--crash-after-ms", "700"], // exits with code 3
    &["--crash-after-ms", "700"], // again: the second backoff is longer
    &["--hang-after-ms", "300"],  // alive but answering nothing: only a health check sees it
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let seconds = parse_seconds()?;
    // Listen for Ctrl-C and SIGTERM before anything starts, so an early one is not lost.
    // (The daemon runs in its own process group: a terminal's Ctrl-C reaches only us, and
    // we stop it in order.)
    let shutdown = shutdown_signal()?;

    // The daemon's socket and manifest live in a private directory removed at the end.
    let dir = tempfile::tempdir()?;
    let run_dir = dir.path().join("run");
    let mut starts = Vec::new();
    for fault in FAULTS.iter().copied().chain([&[][..]]) {
        starts.push(CommandSupervisor::new(daemon_spec(&run_dir, fault)?));
    }
    // A real tool would write `spec.supervise()`.
    let service = supervise(Arc::new(WithFaults::new(starts)));

    // Print every event as it happens; the tally comes back when the stream ends, which is
    // after supervision has ended.
    let started = Instant::now();
    let printer = tokio::spawn(print_events(service.events()));

    let why = tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(seconds)) => format!("{seconds} s are up"),
        signal = shutdown => format!("{signal} received"),
        // Supervision can also end by itself: the restart intensity was exceeded.
        outcome = service.outcome() => format!("supervision ended: {outcome:?}"),
    };
    println!("--- {why}: stopping ---");
    // SIGTERM to the daemon's whole tree, up to the grace period, then SIGKILL (on Windows:
    // the shutdown request over its endpoint, then TerminateProcess).
    let outcome = service.stop().await;
    drop(service);
    let tally = printer.await?;
    tally.print(started.elapsed(), &outcome);
    match outcome {
        Outcome::Stopped => Ok(()),
        Outcome::GaveUp(reason) => Err(format!("gave up on the daemon: {reason}").into()),
        other => Err(format!("the daemon is no longer supervised: {other:?}").into()),
    }
}

/// The daemon as a tool describes it: how to run it, how to tell it is healthy, how to stop
/// it, and when and how fast to restart it. `fault` is extra daemon arguments (demo only).
fn daemon_spec(run_dir: &Path, fault: &[&str]) -> Result<CommandSpec, Box<dyn Error>> {
    let restart = RestartPolicy {
        // Restart after any exit, clean or not: keeping the daemon up is this tool's job.
        kind: RestartKind::Permanent,
        backoff: Backoff::exponential(
            // A one-off crash is repaired within a quarter of a second...
            Duration::from_millis(250),
            // ...but each further failure waits twice as long (0.25, 0.5, 1, 2, 4 s), so a
            // daemon that keeps failing does not spin and its cause has time to go away.
            2.0,
            // At most 10 s down for the backoff alone once the cause is fixed.
            Duration::from_secs(10),
        )
        // ±20 %: several tools restarting their daemons after a shared failure (a full
        // disk, a lost network) drift apart instead of coming back at the same instant.
        .with_jitter(Jitter::Proportional { ratio: 0.2 })
        // 30 s of uptime proves the daemon healthy again: its next crash is treated as a
        // first one (250 ms), not as the continuation of an old crash loop.
        .with_reset_after(Duration::from_secs(30)),
        // More than 5 restarts within a minute is a loop restarting will not fix: give up
        // and exit non-zero, so whoever runs the tool (systemd, a person) finds out.
        intensity: Intensity::new(5, Duration::from_secs(60)),
        // The first start is retried like any other: this tool keeps the daemon up.
        retry_start_up: true,
    };
    let health = HealthSpec {
        policy: HealthPolicy {
            // A ping is one local socket round trip, cheap enough to send twice a second;
            // it keeps the demo short. A real tool can check every few seconds.
            interval: Duration::from_millis(500),
            // A local daemon answers a ping in well under a millisecond: half a second of
            // silence means it is stuck, even on a loaded machine.
            timeout: Duration::from_millis(500),
            // One missed ping is not a verdict (a long GC pause, a swapped-out page); three
            // in a row are.
            failures_before_unhealthy: 3,
        },
        // The ping is answered by the daemon's own event loop, so it proves the daemon
        // works, which "the process exists" does not.
        check: HealthCheck::Ping,
    };
    Ok(common::demo_spec("cache", run_dir, fault)?
        .restart(restart)
        .health(health)
        // The daemon exits within milliseconds of the graceful stop (SIGTERM; on Windows the
        // shutdown request); a hung one never does, and waiting for it is downtime. The
        // kill follows after one second.
        .stop(StopSpec {
            grace: Duration::from_secs(1),
            ..StopSpec::default()
        })
        // It is ready in milliseconds; a start that takes 10 s has failed, and counts
        // towards the restart intensity like a crash.
        .ready_timeout(Duration::from_secs(10)))
}

/// Demo scaffolding, not something a tool needs: start number `n` uses the `n`th
/// `CommandSupervisor` (the last one for every later start), so each start can carry a
/// different fault. Everything else is delegated to the supervisor of the current start.
struct WithFaults {
    starts: Vec<CommandSupervisor>,
    spawned: AtomicUsize,
}

impl WithFaults {
    fn new(starts: Vec<CommandSupervisor>) -> Self {
        WithFaults {
            starts,
            spawned: AtomicUsize::new(0),
        }
    }

    /// The supervisor of the latest start (the first one before any start).
    fn current(&self) -> &CommandSupervisor {
        let n = self.spawned.load(Ordering::Acquire).saturating_sub(1);
        &self.starts[n.min(self.starts.len() - 1)]
    }
}

#[async_trait::async_trait]
impl Supervisor for WithFaults {
    fn name(&self) -> &str {
        self.current().name()
    }

    async fn spawn(&self, ctx: &SpawnContext) -> Result<BackendHandle, StartError> {
        self.spawned.fetch_add(1, Ordering::AcqRel);
        self.current().spawn(ctx).await
    }

    async fn adopt(&self) -> Result<Option<BackendHandle>, BackendHandleError> {
        self.current().adopt().await
    }

    async fn health_check(&self, backend: &BackendHandle) -> Result<(), HealthError> {
        self.current().health_check(backend).await
    }

    fn health_policy(&self) -> Option<HealthPolicy> {
        self.current().health_policy()
    }

    fn restart_policy(&self) -> RestartPolicy {
        self.current().restart_policy()
    }

    fn ready_timeout(&self) -> Duration {
        self.current().ready_timeout()
    }

    async fn stop(&self, backend: &BackendHandle) -> Result<ExitStatus, BackendHandleError> {
        self.current().stop(backend).await
    }

    // The exited daemon's rest is killed and its last output read for the `Exited` event.
    async fn on_exit(&self, backend: &BackendHandle, status: ExitStatus) -> LastOutput {
        self.current().on_exit(backend, status).await
    }
}

/// What the summary reports, counted from the events.
#[derive(Default)]
struct Tally {
    restarts: u32,
    last_backoff: Option<Duration>,
    failed_checks: u32,
    unhealthy: u32,
    /// Exits by how the daemon ended ("exit code 3", "killed by signal 9", ...).
    exits: BTreeMap<String, u32>,
}

impl Tally {
    fn count(&mut self, kind: &EventKind) {
        match kind {
            EventKind::RestartScheduled { delay, .. } => {
                self.restarts += 1;
                self.last_backoff = Some(*delay);
            }
            EventKind::HealthCheckFailed { .. } => self.failed_checks += 1,
            EventKind::Unhealthy { .. } => self.unhealthy += 1,
            EventKind::Exited { status, .. } => {
                *self.exits.entry(status.to_string()).or_default() += 1
            }
            _ => {}
        }
    }

    fn print(&self, elapsed: Duration, outcome: &Outcome) {
        println!(
            "--- summary after {:.1} s: {outcome:?} ---",
            elapsed.as_secs_f64()
        );
        let last = self
            .last_backoff
            .map_or("none".to_owned(), |d| format!("{:.3} s", d.as_secs_f64()));
        println!("  restarts: {} (last backoff {last})", self.restarts);
        println!(
            "  health checks failed: {}, unhealthy verdicts: {}",
            self.failed_checks, self.unhealthy
        );
        let exits: Vec<String> = self
            .exits
            .iter()
            .map(|(how, n)| format!("{how}: {n}"))
            .collect();
        println!("  exits by kind: {}", exits.join(", "));
    }
}

/// Print each event (its `Display`: time, service, what happened); return the tally once
/// the stream ends.
async fn print_events(mut events: EventStream) -> Tally {
    let mut tally = Tally::default();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                tally.count(&event.kind);
                println!("{event}");
            }
            // Only a printer that falls more than the tree's buffer behind; the summary
            // (counted from the events) would then be short.
            Err(lagged) => println!("({lagged})"),
        }
    }
    tally
}

/// `--seconds N`, or the default.
fn parse_seconds() -> Result<u64, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(DEFAULT_SECONDS),
        [flag, n] if flag == "--seconds" => n
            .parse()
            .map_err(|_| format!("--seconds needs a whole number of seconds, not `{n}`").into()),
        _ => Err("usage: auto_restart [--seconds N]".into()),
    }
}

/// Completes with the signal's name on Ctrl-C or SIGTERM (what `kill`, systemd and
/// container runtimes send). Both are registered by this call, before it is awaited.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "Ctrl-C",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

/// Completes on Ctrl-C (Windows has no SIGTERM).
#[cfg(windows)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
    Ok(async move {
        ctrl_c.recv().await;
        "Ctrl-C"
    })
}
