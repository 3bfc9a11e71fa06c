//! The crate's supervision against real Debian daemons: memcached, nginx (a master and its
//! workers), redis (sd_notify) and postgres (run as the `postgres` user, children that call
//! `setsid`), each started by [`CommandSpec::supervise`], SIGKILLed, restarted and stopped,
//! and a supervisor that is itself SIGKILLed (a helper process: this binary re-executed with
//! [`support::HELPER_ROLE`] set, see [`helper_process`]).
//!
//! Every test prints `SKIPPED: why` and passes when its daemon (or, for postgres, root) is
//! missing; `.ci/run` installs the packages. Every wait is for an event (the event stream,
//! `ready()`, a pidfd) or a round trip with a deadline, never a sleep. After each test
//! nothing of the daemon is left: checked by pid (pinned by pidfds, which also kill what a
//! failing test would leave), by `/proc` scans and, where the instance ran in a cgroup of
//! its own, by that cgroup being gone or empty. Each test prints which tree tracking ran
//! (`cgroup <path>` or `process group <pid>`), read from `/proc/<main pid>/cgroup`.

#![cfg(target_os = "linux")]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use running_process::command::{
    CommandSpec, HealthCheck, HealthSpec, Output, Readiness, StopSignal, StopSpec, StreamName,
};
use running_process::supervision::{
    Backoff, Event, EventKind, EventStream, HealthPolicy, Intensity, Outcome, RestartKind,
    RestartPolicy, ServiceHandle, StartError,
};
use running_process::{BackendHandle, ExitStatus};
use support::daemons::{self, skip};
use support::{
    collect_until, helper_command, helper_line, helper_say, next_matching, no_backoff, wait_gone,
    within, PidGuard, DEADLINE,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The name of the helper entry point below, as libtest knows it.
const ENTRY: &str = "helper_process";
/// The directory a helper works in (the postgres cluster's, nginx's configuration's).
const HELPER_DIR: &str = "RP_TEST_HELPER_DIR";
/// The port a helper's daemon listens on.
const HELPER_PORT: &str = "RP_TEST_HELPER_PORT";

// ---------------------------------------------------------------------------------------
// Shared helpers

/// A line on stderr that libtest's capture does not swallow (as [`skip`] writes), so the
/// tree tracking each test ran is visible in a normal run.
fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

/// How the tree of an instance is tracked, as the kernel shows it for its main process.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tracking {
    /// The instance's own cgroup (a `running-process-<pid>-<start>/<service>-<n>`
    /// directory in the cgroup2 file system).
    Cgroup(PathBuf),
    /// Not in a supervisor's cgroup: its process group.
    ProcessGroup,
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid
/// systems), from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The tracking of the live process `pid`, from the `0::` line of `/proc/PID/cgroup`.
fn tracking_of(pid: u32) -> Tracking {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/cgroup: {e}"));
    let relative = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim);
    match (relative, cgroup2_mount()) {
        (Some(relative), Some(mount)) if relative.contains("/running-process-") => {
            Tracking::Cgroup(mount.join(relative.trim_start_matches('/')))
        }
        _ => Tracking::ProcessGroup,
    }
}

/// Print and return the tracking of `pid`, the main process of an instance of `what`.
fn report_tracking(what: &str, pid: u32) -> Tracking {
    let tracking = tracking_of(pid);
    match &tracking {
        Tracking::Cgroup(path) => say(&format!(
            "{what}: tree tracking: cgroup {} (main pid {pid})",
            path.display()
        )),
        Tracking::ProcessGroup => say(&format!("{what}: tree tracking: process group {pid}")),
    }
    tracking
}

/// The pids listed in a cgroup (and below); empty once it is gone.
fn cgroup_pids(path: &Path) -> Vec<u32> {
    fn collect(dir: &Path, pids: &mut Vec<u32>) {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect(&entry.path(), pids);
            }
        }
    }
    let mut pids = Vec::new();
    collect(path, &mut pids);
    pids
}

/// Whether the cgroup at `path` still has live processes (`populated 1`); `false` once
/// the directory is gone.
fn cgroup_populated(path: &Path) -> bool {
    std::fs::read_to_string(path.join("cgroup.events"))
        .is_ok_and(|events| events.lines().any(|line| line.trim() == "populated 1"))
}

/// Assert, now, that an instance tracked by cgroup left nothing in it (the supervisor has
/// already waited for that, so there is nothing to wait for here).
fn assert_cgroup_gone_or_empty(tracking: &Tracking) {
    if let Tracking::Cgroup(path) = tracking {
        assert!(
            !cgroup_populated(path),
            "the instance cgroup {} still holds {:?}",
            path.display(),
            cgroup_pids(path)
        );
    }
}

/// Wait until the cgroup at `path` is empty: each process still listed is waited for by its
/// pidfd, then the cgroup is read again. For trees that a SIGKILLed supervisor's keeper
/// kills, asynchronously to this test.
async fn wait_cgroup_empty(path: &Path) {
    within(&format!("the cgroup {} empties", path.display()), async {
        while cgroup_populated(path) {
            for pid in cgroup_pids(path) {
                wait_gone(pid).await;
            }
        }
    })
    .await;
}

/// Processes a test has seen, pinned by pidfds while they ran: asserts they are gone (no
/// PID reuse can fool it), and SIGKILLs them if a failing test leaves them behind.
#[derive(Default)]
struct Pinned(Vec<PidGuard>);

impl Pinned {
    fn pin(&mut self, pid: u32) {
        let guard = PidGuard::pin(pid);
        assert!(guard.is_running(), "process {pid} is not running");
        self.0.push(guard);
    }

    /// Pin those of `pids` that still run: children listed a moment ago (a postgres
    /// backend that served a query, the startup process) may have exited since.
    fn pin_all(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            let guard = PidGuard::pin(pid);
            if guard.is_running() {
                self.0.push(guard);
            }
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|g| g.pid).collect()
    }

    /// The pinned processes still running (not exited, not zombies).
    fn running(&self) -> Vec<u32> {
        self.0
            .iter()
            .filter(|g| g.is_running())
            .map(|g| g.pid)
            .collect()
    }

    fn assert_none_running(&self, when: &str) {
        assert_eq!(
            self.running(),
            Vec::<u32>::new(),
            "processes still running {when} (of {:?})",
            self.pids()
        );
    }

    async fn wait_all_gone(&self) {
        for pid in self.pids() {
            wait_gone(pid).await;
        }
    }
}

/// Wait for the next `Ready` of the service (a pid other than `not`), and return its
/// backend and the events up to it (failing on a failed start on the way).
async fn next_ready(
    service: &ServiceHandle,
    events: &mut EventStream,
    what: &str,
    not: Option<u32>,
) -> (BackendHandle, Vec<Event>) {
    let mut seen = Vec::new();
    within(what, async {
        loop {
            match events.next().await {
                Some(Ok(event)) => {
                    let done = matches!(
                        event.kind,
                        EventKind::Ready { pid: Some(pid), .. } if Some(pid) != not
                    );
                    seen.push(event);
                    if done {
                        return;
                    }
                }
                Some(Err(lagged)) => panic!("{what}: {lagged}"),
                None => panic!(
                    "{what}: supervision ended ({:?}) first: {seen:#?}",
                    service.try_outcome()
                ),
            }
        }
    })
    .await;
    let Some(EventKind::Ready { pid: Some(pid), .. }) = seen.last().map(|e| &e.kind) else {
        unreachable!()
    };
    let backend = service
        .backend()
        .unwrap_or_else(|| panic!("{what}: ready but no backend: {seen:#?}"));
    assert_eq!(backend.pid(), *pid, "{what}: the ready backend");
    assert!(
        seen.iter()
            .any(|e| matches!(e.kind, EventKind::Spawned { pid: spawned } if spawned == *pid)),
        "{what}: spawned by this supervisor: {seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e.kind, EventKind::StartFailed { .. })),
        "{what}: no failed start on the way: {seen:#?}"
    );
    (backend, seen)
}

/// SIGKILL `backend` and wait for its `Exited` event (the rest of its tree is cleaned up
/// before it is sent); returns the event's last output. The handle is dropped at once: a
/// live `BackendHandle` keeps its dead process a zombie, which a daemon that checks its
/// pid file with `kill(pid, 0)` (postgres) takes for a running instance (see
/// [`postgres_restarts_while_an_old_backend_handle_is_held`]). Pass a clone to keep one.
async fn kill_main(events: &mut EventStream, backend: BackendHandle, what: &str) -> Vec<String> {
    let pid = backend.pid();
    backend.force_kill().unwrap();
    drop(backend);
    let event = next_matching(
        events,
        what,
        |e| matches!(e.kind, EventKind::Exited { pid: exited, .. } if exited == pid),
    )
    .await;
    let EventKind::Exited { status, output, .. } = event.kind else {
        unreachable!()
    };
    assert_eq!(
        status,
        ExitStatus::Signal(9),
        "{what}: killed by our SIGKILL"
    );
    output.lines().to_vec()
}

/// The pids of the children of `pid` that are running (not zombies).
fn live_children(pid: u32) -> Vec<u32> {
    daemons::children_of(pid)
        .into_iter()
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
            })
        })
        .collect()
}

fn strings(args: Vec<std::ffi::OsString>) -> Vec<String> {
    args.into_iter()
        .map(|a| a.into_string().expect("UTF-8 argument"))
        .collect()
}

/// The uid a process runs as (real uid, from `/proc/PID/status`).
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("Uid line")
}

/// Not a test of its own: the entry point of the helper processes the tests below start
/// (this binary re-executed with [`support::HELPER_ROLE`] set): a supervisor of one daemon
/// that prints its pids and waits to be SIGKILLed. Run normally, it returns.
#[test]
fn helper_process() {
    let Ok(role) = std::env::var(support::HELPER_ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(HELPER_DIR).expect("helper dir"));
    let port: u16 = std::env::var(HELPER_PORT)
        .expect("helper port")
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match role.as_str() {
            "postgres" => role_postgres(&dir, port).await,
            "nginx" => role_nginx(&dir, port).await,
            other => panic!("unknown helper role {other}"),
        }
    });
}

// ---------------------------------------------------------------------------------------
// memcached: TCP readiness

fn memcached_spec(memcached: &Path, port: u16) -> CommandSpec {
    CommandSpec::new("memcached", memcached)
        .args(daemons::memcached_args(port))
        .stdout(Output::Null)
        .stderr(Output::Null)
        .readiness(Readiness::tcp(format!("127.0.0.1:{port}")))
        .ready_timeout(DEADLINE)
}

#[tokio::test]
async fn memcached_is_restarted_after_sigkill_and_serves_again() {
    let Some(memcached) = daemons::find("memcached") else {
        return skip("memcached is not installed");
    };
    let port = daemons::free_port();
    let service = memcached_spec(&memcached, port)
        .restart(no_backoff(RestartKind::Permanent))
        .supervise();
    let mut events = service.events();
    let mut pinned = Pinned::default();

    let (first, _) = next_ready(&service, &mut events, "memcached ready", None).await;
    pinned.pin(first.pid());
    let first_tree = report_tracking("memcached", first.pid());
    assert!(within("set/get", daemons::memcached_roundtrip(port)).await);

    // A second memcached on the same port (ready at once, so it really runs): it exits 71
    // (EX_OSERR), and its reason comes with the crate's exit event.
    let second_instance = CommandSpec::new("memcached-twin", &memcached)
        .args(daemons::memcached_args(port))
        .stderr(Output::Null)
        .restart(no_backoff(RestartKind::Temporary))
        .supervise();
    let mut twin_events = second_instance.events();
    let exited = next_matching(&mut twin_events, "the twin exits", |e| {
        matches!(e.kind, EventKind::Exited { .. })
    })
    .await;
    let EventKind::Exited { status, output, .. } = &exited.kind else {
        unreachable!()
    };
    assert_eq!(*status, ExitStatus::Code(71), "EX_OSERR for a taken port");
    assert!(
        output
            .lines()
            .iter()
            .any(|l| l.contains("Address already in use")),
        "the reason is in the exit event: {output}"
    );
    assert_eq!(
        within("the twin completes", second_instance.outcome()).await,
        Outcome::Completed
    );
    assert!(
        within(
            "set/get beside the twin",
            daemons::memcached_roundtrip(port)
        )
        .await,
        "the first memcached serves on"
    );

    let output = kill_main(&mut events, first.clone(), "memcached killed").await;
    assert!(output.is_empty(), "memcached prints nothing: {output:?}");
    assert_cgroup_gone_or_empty(&first_tree);
    let (second, _) = next_ready(
        &service,
        &mut events,
        "memcached ready again",
        Some(first.pid()),
    )
    .await;
    pinned.pin(second.pid());
    let second_tree = report_tracking("memcached (restarted)", second.pid());
    assert!(
        within(
            "set/get after the restart",
            daemons::memcached_roundtrip(port)
        )
        .await
    );

    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    assert_eq!(
        second.exited().await,
        ExitStatus::Code(0),
        "SIGTERM is a clean exit"
    );
    pinned.assert_none_running("after stop");
    assert_eq!(
        daemons::processes_with_cmdline_containing(&format!("-p {port} ")),
        Vec::<u32>::new()
    );
    assert_cgroup_gone_or_empty(&first_tree);
    assert_cgroup_gone_or_empty(&second_tree);
}

#[tokio::test]
async fn memcached_on_a_port_held_by_a_stranger_is_never_spawned() {
    let Some(memcached) = daemons::find("memcached") else {
        return skip("memcached is not installed");
    };
    // The stranger: this test process.
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stranger.local_addr().unwrap().port();
    let service = memcached_spec(&memcached, port)
        .restart(RestartPolicy {
            kind: RestartKind::Permanent,
            backoff: Backoff::none(),
            intensity: Intensity::new(1, Duration::from_secs(60)),
            retry_start_up: false,
        })
        .supervise();
    let mut events = service.events();

    // Its first start fails, so supervision ends at once with that failure (OTP's
    // start_link), not after retries.
    let ready = within("ready() ends", service.ready()).await;
    assert!(
        matches!(&ready, Err(Outcome::StartFailed { error, .. }) if matches!(**error, StartError::PortInUse { .. })),
        "never ready: {ready:?}"
    );
    let seen = collect_until(&mut events, "start failed", |e| {
        matches!(e.kind, EventKind::StartFailed { .. })
    })
    .await;
    let first_failure = seen
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::StartFailed { error } => Some(error.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a StartFailed event: {seen:#?}"));
    let me = std::process::id();
    assert!(
        matches!(
            &*first_failure,
            StartError::PortInUse { address, holder: Some(holder) }
                if *holder == me && address.contains(&port.to_string())
        ),
        "the stranger (this process, {me}) named: {first_failure:?}"
    );
    let message = first_failure.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")) && message.contains(&me.to_string()),
        "{message}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e.kind, EventKind::Spawned { .. } | EventKind::Ready { .. })),
        "memcached must never have been spawned: {seen:#?}"
    );
    assert_eq!(
        daemons::processes_with_cmdline_containing(&format!("-p {port} ")),
        Vec::<u32>::new()
    );
    say("memcached (stranger on its port): tree tracking: none (never spawned)");
    drop(stranger);
}

// ---------------------------------------------------------------------------------------
// nginx: a master and two workers

/// The worker pids a master logged (`[notice] ...: start worker process N`).
fn logged_workers(output: &[String]) -> Vec<u32> {
    output
        .iter()
        .filter_map(|line| {
            let (_, rest) = line.split_once("start worker process ")?;
            rest.trim().parse().ok()
        })
        .collect()
}

fn nginx_spec(nginx: &Path, dir: &Path, port: u16, workers: u32) -> CommandSpec {
    let config = daemons::nginx_config(dir, port, workers);
    CommandSpec::new("nginx", nginx)
        .args(strings(daemons::nginx_args(dir, &config)))
        .stdout(Output::Null)
        .stderr(Output::Null)
        .readiness(Readiness::tcp(format!("127.0.0.1:{port}")))
        .ready_timeout(DEADLINE)
}

/// nginx's master is SIGKILLed: its two workers (which would keep the port for ever) are
/// gone by the time the `Exited` event arrives, and the replacement binds and serves.
#[allow(clippy::too_many_lines)] // one scenario against a real nginx, step by step
async fn nginx_master_sigkill(cgroup: bool) {
    let what = if cgroup {
        "nginx (cgroup if possible)"
    } else {
        "nginx (process group)"
    };
    let Some(nginx) = daemons::find("nginx") else {
        return skip("nginx is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = daemons::free_port();
    let service = nginx_spec(&nginx, dir.path(), port, 2)
        .restart(no_backoff(RestartKind::Permanent))
        .cgroup(cgroup)
        .supervise();
    let mut events = service.events();
    let mut pinned = Pinned::default();

    let (master, _) = next_ready(&service, &mut events, "nginx ready", None).await;
    pinned.pin(master.pid());
    let first_tree = report_tracking(what, master.pid());
    if !cgroup {
        assert_eq!(first_tree, Tracking::ProcessGroup, "cgroup(false)");
    }
    assert!(within("GET /", daemons::nginx_get_index(port)).await);
    // The workers running now (a worker served the page); the master's log names all.
    let workers = live_children(master.pid());
    assert!(!workers.is_empty(), "a worker served the request");
    pinned.pin_all(workers.iter().copied());
    for &worker in &workers {
        assert_eq!(
            daemons::ppid_pgid_sid(worker).map(|(_, pgid, _)| pgid),
            Some(master.pid()),
            "nginx workers stay in the master's process group"
        );
    }
    // The master's argv names the config; a worker shows `nginx: worker process` once it
    // has set its title, and the master's argv until then (right after its fork): any
    // other process naming the config must be a child of the master.
    let config = dir.path().join("nginx.conf");
    let naming = daemons::processes_with_cmdline_containing(&config.display().to_string());
    assert!(
        naming.contains(&master.pid()),
        "the master's argv names the config"
    );
    for pid in naming.into_iter().filter(|&pid| pid != master.pid()) {
        assert!(
            daemons::ppid_pgid_sid(pid).is_none_or(|(ppid, _, _)| ppid == master.pid()),
            "process {pid}, not nginx's, names the config"
        );
    }

    let output = kill_main(&mut events, master.clone(), "nginx master killed").await;
    let mut all_workers = logged_workers(&output);
    all_workers.sort_unstable();
    assert_eq!(all_workers.len(), 2, "two workers logged: {output:#?}");
    assert!(
        workers.iter().all(|w| all_workers.contains(w)),
        "{workers:?} among {all_workers:?}"
    );
    // Gone already (not a zombie either), before any replacement started.
    for &worker in &all_workers {
        let guard = PidGuard::pin(worker);
        assert!(
            !guard.is_running(),
            "worker {worker} outlived its master past the Exited event"
        );
    }
    pinned.assert_none_running("at the Exited event");
    assert_cgroup_gone_or_empty(&first_tree);

    let (second, _) = next_ready(
        &service,
        &mut events,
        "nginx ready again",
        Some(master.pid()),
    )
    .await;
    pinned.pin(second.pid());
    let second_tree = report_tracking(&format!("{what}, restarted"), second.pid());
    assert!(within("GET / after the restart", daemons::nginx_get_index(port)).await);
    pinned.pin_all(live_children(second.pid()));

    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    assert_eq!(second.exited().await, ExitStatus::Code(0));
    pinned.assert_none_running("after stop");
    let masters = [master.pid(), second.pid()];
    let left: Vec<u32> = daemons::processes_of_exe(&nginx)
        .into_iter()
        .filter(|&pid| {
            pinned.pids().contains(&pid)
                || all_workers.contains(&pid)
                || daemons::ppid_pgid_sid(pid).is_some_and(|(ppid, pgid, _)| {
                    masters.contains(&ppid) || masters.contains(&pgid)
                })
        })
        .collect();
    assert_eq!(left, Vec::<u32>::new(), "nginx processes of this test left");
    assert_eq!(
        daemons::processes_with_cmdline_containing(&dir.path().display().to_string()),
        Vec::<u32>::new()
    );
    assert_cgroup_gone_or_empty(&first_tree);
    assert_cgroup_gone_or_empty(&second_tree);
}

#[tokio::test]
async fn nginx_master_sigkill_in_a_cgroup() {
    nginx_master_sigkill(true).await;
}

#[tokio::test]
async fn nginx_master_sigkill_in_a_process_group() {
    nginx_master_sigkill(false).await;
}

/// An HTTP health check of nginx that gets 404: each failure arrives as an event naming the
/// status line (the typed `CheckError` under `HealthError::Check`, printed as a chain), and
/// after two in a row nginx is replaced by a new master that serves again.
#[tokio::test]
async fn nginx_failing_its_http_health_check_is_replaced() {
    let Some(nginx) = daemons::find("nginx") else {
        return skip("nginx is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = daemons::free_port();
    let health = HealthSpec {
        policy: HealthPolicy {
            interval: Duration::from_millis(100),
            timeout: DEADLINE,
            failures_before_unhealthy: 2,
        },
        check: HealthCheck::Http {
            url: format!("http://127.0.0.1:{port}/no-such-page"),
        },
    };
    let service = nginx_spec(&nginx, dir.path(), port, 1)
        .health(health)
        .restart(no_backoff(RestartKind::Permanent))
        .supervise();
    let mut events = service.events();
    let (first, _) = next_ready(&service, &mut events, "nginx ready", None).await;

    let failed = next_matching(
        &mut events,
        "a failed health check",
        |e| matches!(e.kind, EventKind::HealthCheckFailed { pid, .. } if pid == first.pid()),
    )
    .await;
    let line = failed.to_string();
    assert!(
        line.contains("404"),
        "the status line is in the event: {line}"
    );
    assert!(
        line.contains("/no-such-page"),
        "the URL is in the event: {line}"
    );
    next_matching(
        &mut events,
        "nginx unhealthy",
        |e| matches!(e.kind, EventKind::Unhealthy { pid } if pid == first.pid()),
    )
    .await;
    let (second, _) = next_ready(&service, &mut events, "nginx replaced", Some(first.pid())).await;
    assert_ne!(second.pid(), first.pid());
    assert!(within("GET / from the replacement", daemons::nginx_get_index(port)).await);
    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
}

/// A bad configuration: nginx exits 1 before it is ready, and its `[emerg]` line comes with
/// the start error.
#[tokio::test]
async fn nginx_bad_directive_is_reported_with_its_last_output() {
    let Some(nginx) = daemons::find("nginx") else {
        return skip("nginx is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = daemons::free_port();
    let spec = nginx_spec(&nginx, dir.path(), port, 1);
    let config = dir.path().join("nginx.conf");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("no_such_directive on;\n{text}")).unwrap();
    let service = spec
        .restart(RestartPolicy {
            kind: RestartKind::Permanent,
            backoff: Backoff::none(),
            intensity: Intensity::new(0, Duration::from_secs(60)),
            retry_start_up: false,
        })
        .supervise();
    let mut events = service.events();
    let seen = collect_until(&mut events, "start failed", |e| {
        matches!(e.kind, EventKind::StartFailed { .. })
    })
    .await;
    let spawned = seen
        .iter()
        .find_map(|e| match e.kind {
            EventKind::Spawned { pid } => Some(pid),
            _ => None,
        })
        .unwrap_or_else(|| panic!("nginx was spawned: {seen:#?}"));
    let error = seen
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::StartFailed { error } => Some(error.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a failed start: {seen:#?}"));
    let StartError::ExitedBeforeReady { status, output } = &*error else {
        panic!("exited before ready: {error:?}");
    };
    assert_eq!(*status, ExitStatus::Code(1));
    assert!(
        output
            .lines()
            .iter()
            .any(|l| l.contains("[emerg]") && l.contains("unknown directive \"no_such_directive\"")),
        "{output}"
    );
    // A first start that fails ends supervision with that failure.
    assert!(matches!(
        within("outcome", service.outcome()).await,
        Outcome::StartFailed { .. }
    ));
    wait_gone(spawned).await;
    say("nginx (bad directive): tree tracking: not observable (nginx exits at once)");
}

// ---------------------------------------------------------------------------------------
// redis: sd_notify readiness

#[tokio::test]
async fn redis_is_supervised_through_sd_notify() {
    let Some(redis) = daemons::find("redis-server") else {
        return skip("redis-server is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = daemons::free_port();
    let service = CommandSpec::new("redis", &redis)
        .args(daemons::redis_args(port, dir.path()))
        .stdout(Output::Null)
        .readiness(Readiness::Notify)
        .ready_timeout(DEADLINE)
        .restart(no_backoff(RestartKind::Permanent))
        .supervise();
    let mut events = service.events();
    let mut pinned = Pinned::default();

    let (first, seen) = next_ready(&service, &mut events, "redis ready", None).await;
    pinned.pin(first.pid());
    let first_tree = report_tracking("redis", first.pid());
    assert!(
        seen.iter().any(|e| matches!(
            &e.kind,
            EventKind::Status { status } if status.contains("Ready to accept connections")
        )),
        "redis's sd_notify STATUS= lines are events: {seen:#?}"
    );
    assert!(within("PING", daemons::redis_ping(port)).await);
    assert_eq!(
        daemons::processes_with_cmdline_containing(&format!("127.0.0.1:{port}")),
        vec![first.pid()],
        "redis is one process (argv rewritten to `redis-server 127.0.0.1:PORT`)"
    );

    let output = kill_main(&mut events, first.clone(), "redis killed").await;
    assert!(
        output
            .iter()
            .any(|l| l.contains("Ready to accept connections")),
        "its last output (stdout) comes with the exit: {output:#?}"
    );
    assert_cgroup_gone_or_empty(&first_tree);
    let (second, _) = next_ready(
        &service,
        &mut events,
        "redis ready again",
        Some(first.pid()),
    )
    .await;
    pinned.pin(second.pid());
    let second_tree = report_tracking("redis (restarted)", second.pid());
    assert!(within("PING after the restart", daemons::redis_ping(port)).await);

    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    assert_eq!(
        second.exited().await,
        ExitStatus::Code(0),
        "SIGTERM is a clean shutdown for redis"
    );
    pinned.assert_none_running("after stop");
    assert_eq!(
        daemons::processes_with_cmdline_containing(&format!("127.0.0.1:{port}")),
        Vec::<u32>::new()
    );
    assert_cgroup_gone_or_empty(&first_tree);
    assert_cgroup_gone_or_empty(&second_tree);
}

// ---------------------------------------------------------------------------------------
// postgres: run as the `postgres` user, children in sessions of their own

/// Why postgres cannot run here, if it cannot: it is missing, or this is not root (the
/// server runs as the `postgres` user, which takes root to switch to).
fn postgres_unavailable() -> Option<&'static str> {
    if daemons::postgres_program("postgres").is_none()
        || daemons::postgres_program("initdb").is_none()
        || daemons::postgres_program("psql").is_none()
    {
        return Some("postgres (postgres, initdb, psql) is not installed");
    }
    if !daemons::is_root() {
        return Some("not root: postgres runs as user `postgres`, which needs root to switch to");
    }
    if daemons::user_ids(daemons::POSTGRES_USER).is_none() {
        return Some("there is no `postgres` user");
    }
    None
}

/// The postmaster on `port` with the cluster in `dir`, as user `postgres`, fast shutdown
/// (SIGINT) to stop.
fn postgres_spec(dir: &Path, port: u16, readiness: Readiness) -> CommandSpec {
    let postgres = daemons::postgres_program("postgres").unwrap();
    let data = dir.join("data");
    let sockdir = daemons::postgres_socket_dir(dir);
    CommandSpec::new("postgres", postgres)
        .args(strings(daemons::postgres_args(&data, &sockdir, port)))
        .user(daemons::POSTGRES_USER)
        .stdout(Output::Null)
        .stderr(Output::Null)
        .readiness(readiness)
        .ready_timeout(DEADLINE)
        .stop(StopSpec {
            signal: StopSignal::Sigint,
            ..StopSpec::default()
        })
        .restart(no_backoff(RestartKind::Permanent))
}

/// Ready, SELECT 1, SIGKILL the postmaster, recovered, SELECT 1, stop, nothing left.
async fn postgres_round(readiness: Readiness, what: &str) {
    if let Some(why) = postgres_unavailable() {
        return skip(why);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = daemons::postgres_cluster(dir.path());
    let sockdir = daemons::postgres_socket_dir(dir.path());
    let port = daemons::free_port();
    let service = postgres_spec(dir.path(), port, readiness).supervise();
    let mut events = service.events();
    let mut pinned = Pinned::default();
    let (uid, _) = daemons::postgres_ids().unwrap();

    let (first, _) = next_ready(&service, &mut events, "postgres ready", None).await;
    let first_pid = first.pid();
    pinned.pin(first_pid);
    let first_tree = report_tracking(what, first_pid);
    assert_eq!(uid_of(first_pid), uid, "the postmaster runs as postgres");
    assert_eq!(
        std::fs::read_link(format!("/proc/{first_pid}/exe")).unwrap(),
        std::fs::canonicalize(daemons::postgres_program("postgres").unwrap()).unwrap(),
        "the spawned pid is the postmaster itself (no wrapper)"
    );
    assert!(within("select 1", daemons::postgres_select_1(port, &sockdir)).await);
    let children = live_children(first_pid);
    assert!(!children.is_empty(), "the postmaster has children");
    for &child in &children {
        if let Some((_, pgid, sid)) = daemons::ppid_pgid_sid(child) {
            assert_eq!(
                (pgid, sid),
                (child, child),
                "each postgres child is a session leader (out of the process group)"
            );
        }
    }
    pinned.pin_all(children.iter().copied());

    kill_main(&mut events, first, "postmaster killed").await;
    if matches!(first_tree, Tracking::Cgroup(_)) {
        // Killed with the tree before the exit was reported (in a process group they
        // would leave on their own, by postgres's postmaster-death watch).
        pinned.assert_none_running("at the Exited event (cgroup)");
    }
    assert_cgroup_gone_or_empty(&first_tree);
    let (second, _) =
        next_ready(&service, &mut events, "postgres recovered", Some(first_pid)).await;
    pinned.pin(second.pid());
    let second_tree = report_tracking(&format!("{what}, restarted"), second.pid());
    assert!(
        within(
            "select 1 after the restart",
            daemons::postgres_select_1(port, &sockdir)
        )
        .await
    );
    pinned.pin_all(live_children(second.pid()));

    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    assert_eq!(
        second.exited().await,
        ExitStatus::Code(0),
        "SIGINT is postgres's fast shutdown"
    );
    pinned.wait_all_gone().await;
    pinned.assert_none_running("after stop");
    assert_eq!(
        daemons::processes_with_cmdline_containing(&data.display().to_string()),
        Vec::<u32>::new()
    );
    assert_cgroup_gone_or_empty(&first_tree);
    assert_cgroup_gone_or_empty(&second_tree);
}

/// On a multi-threaded runtime, as applications run it: the dead postmaster's handles are
/// all dropped before the restart (postgres would refuse to start beside its zombie).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_as_user_postgres_with_sd_notify() {
    postgres_round(Readiness::Notify, "postgres (notify)").await;
}

#[tokio::test]
async fn postgres_as_user_postgres_with_a_log_line() {
    postgres_round(
        Readiness::LogLine {
            pattern: "database system is ready to accept connections".into(),
            stream: StreamName::Stderr,
        },
        "postgres (log line)",
    )
    .await;
}

/// A `BackendHandle` used to keep its process un-reaped for as long as any clone of it
/// lived. Postgres checks the pid in `postmaster.pid` with `kill(pid, 0)`, which succeeds on
/// a zombie, so every restart failed with `FATAL: lock file "postmaster.pid" already exists`
/// while the application held `service.backend()` of the dead instance. The runtime now
/// lets the zombie be reaped once the exit is handled.
#[tokio::test]
async fn postgres_restarts_while_an_old_backend_handle_is_held() {
    if let Some(why) = postgres_unavailable() {
        return skip(why);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = daemons::postgres_cluster(dir.path());
    let sockdir = daemons::postgres_socket_dir(dir.path());
    let port = daemons::free_port();
    let service = postgres_spec(dir.path(), port, Readiness::Notify).supervise();
    let mut events = service.events();
    let mut pinned = Pinned::default();
    let (first, _) = next_ready(&service, &mut events, "postgres ready", None).await;
    pinned.pin(first.pid());
    pinned.pin_all(live_children(first.pid()));
    report_tracking("postgres (old handle held)", first.pid());

    // Held across the crash, as an application that logs or awaits its backend would.
    let held = first.clone();
    kill_main(&mut events, first, "postmaster killed").await;
    let recovered = within("the restart", async {
        loop {
            match events.next().await {
                Some(Ok(event)) => match event.kind {
                    EventKind::Ready { pid: Some(pid), .. } if pid != held.pid() => return Ok(()),
                    EventKind::StartFailed { error } => return Err(error.to_string()),
                    _ => {}
                },
                other => return Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let served =
        recovered.is_ok() && within("select 1", daemons::postgres_select_1(port, &sockdir)).await;
    if let Some(backend) = service.backend() {
        pinned.pin_all(std::iter::once(backend.pid()).chain(live_children(backend.pid())));
    }
    let _ = within("stop", service.stop()).await;
    drop(held);
    pinned.wait_all_gone().await;
    assert_eq!(
        daemons::processes_with_cmdline_containing(&data.display().to_string()),
        Vec::<u32>::new()
    );
    assert_eq!(
        recovered,
        Ok(()),
        "postgres did not restart while the dead postmaster's handle was held"
    );
    assert!(served, "select 1 after the restart");
}

// ---------------------------------------------------------------------------------------
// The supervisor itself is SIGKILLed

/// Helper: supervise postgres (as `postgres`, sd_notify) in `dir` on `port`; print `pids
/// POSTMASTER CHILD...` once it serves, then wait to be killed.
async fn role_postgres(dir: &Path, port: u16) {
    let service = postgres_spec(dir, port, Readiness::Notify).supervise();
    service.ready().await.expect("postgres starts");
    let postmaster = service.backend().expect("a backend").pid();
    let sockdir = daemons::postgres_socket_dir(dir);
    assert!(daemons::postgres_select_1(port, &sockdir).await);
    let mut pids = vec![postmaster];
    pids.extend(live_children(postmaster));
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    helper_say(&format!("pids {}", pids.join(" ")));
    std::future::pending::<()>().await;
}

/// Helper: supervise nginx (2 workers) in `dir` on `port`; print `pids MASTER WORKER...`
/// once it serves, then wait to be killed.
async fn role_nginx(dir: &Path, port: u16) {
    let nginx = daemons::find("nginx").expect("nginx");
    let service = nginx_spec(&nginx, dir, port, 2).supervise();
    service.ready().await.expect("nginx starts");
    let master = service.backend().expect("a backend").pid();
    assert!(daemons::nginx_get_index(port).await);
    let mut pids = vec![master];
    pids.extend(live_children(master));
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    helper_say(&format!("pids {}", pids.join(" ")));
    std::future::pending::<()>().await;
}

/// Start a helper supervisor in `role`, and read the pids it prints (main process first).
async fn start_helper(role: &str, dir: &Path, port: u16) -> (tokio::process::Child, Vec<u32>) {
    let mut helper = helper_command(ENTRY, role)
        .env(HELPER_DIR, dir)
        .env(HELPER_PORT, port.to_string())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let line = helper_line(&mut lines, &format!("the {role} helper serves")).await;
    let pids: Vec<u32> = line
        .strip_prefix("pids ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    assert!(pids.len() >= 2, "a main process and children: {pids:?}");
    (helper, pids)
}

/// After a SIGKILLed helper's tree is empty, remove its instance cgroup and the helper's
/// supervisor directory (the next supervisor would sweep them; this leaves nothing).
fn remove_helper_cgroup(path: &Path) {
    let _ = std::fs::remove_dir(path);
    if let Some(parent) = path.parent() {
        if parent
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("running-process-"))
        {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[tokio::test]
async fn postgres_is_gone_when_its_supervisor_is_sigkilled() {
    if let Some(why) = postgres_unavailable() {
        return skip(why);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = daemons::postgres_cluster(dir.path());
    let port = daemons::free_port();
    let (mut helper, pids) = start_helper("postgres", dir.path(), port).await;
    let mut pinned = Pinned::default();
    pinned.pin(pids[0]);
    pinned.pin_all(pids[1..].iter().copied());
    let tree = report_tracking("postgres (helper supervisor)", pids[0]);

    helper.kill().await.unwrap(); // SIGKILL: no code of the supervisor runs after this
    pinned.wait_all_gone().await;
    pinned.assert_none_running("after the supervisor was SIGKILLed");
    if let Tracking::Cgroup(path) = &tree {
        wait_cgroup_empty(path).await;
        remove_helper_cgroup(path);
    }
    let left = daemons::processes_with_cmdline_containing(&data.display().to_string());
    assert_eq!(left, Vec::<u32>::new(), "postmaster of this data dir left");
}

#[tokio::test]
async fn nginx_is_gone_when_its_supervisor_is_sigkilled() {
    let Some(nginx) = daemons::find("nginx") else {
        return skip("nginx is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = daemons::free_port();
    let (mut helper, pids) = start_helper("nginx", dir.path(), port).await;
    let mut pinned = Pinned::default();
    pinned.pin(pids[0]);
    pinned.pin_all(pids[1..].iter().copied());
    let tree = report_tracking("nginx (helper supervisor)", pids[0]);

    helper.kill().await.unwrap(); // SIGKILL: no code of the supervisor runs after this
    let Tracking::Cgroup(path) = &tree else {
        // Only the master dies (parent-death signal); the workers would stay: the pins
        // kill them.
        return skip(
            "nginx ran in a process group, not a cgroup: its workers outlive a SIGKILLed \
             supervisor there (the pins kill them)",
        );
    };
    pinned.wait_all_gone().await;
    pinned.assert_none_running("after the supervisor was SIGKILLed");
    wait_cgroup_empty(path).await;
    remove_helper_cgroup(path);
    let left: Vec<u32> = daemons::processes_of_exe(&nginx)
        .into_iter()
        .filter(|&pid| {
            pids.contains(&pid)
                || daemons::ppid_pgid_sid(pid).is_some_and(|(_, pgid, _)| pgid == pids[0])
        })
        .collect();
    assert_eq!(left, Vec::<u32>::new(), "nginx processes of this test left");
    assert_eq!(
        daemons::processes_with_cmdline_containing(&dir.path().display().to_string()),
        Vec::<u32>::new()
    );
}

// ---------------------------------------------------------------------------------------
// redis: replicas and a replaced member in a running group (dynamic membership)

/// A running group takes three redis replicas (each on its own port, chosen from its
/// instance number), scales them 1 -> 3 -> 1 (instance 1 keeps running; 2 and 3 are
/// stopped whole), and a member whose spec is replaced runs the new spec, its dependant
/// (rest_for_one) restarted after it.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario against real redis replicas, step by step
async fn redis_replicas_scale_and_a_member_is_replaced_in_a_running_group() {
    use running_process::command::CommandSupervisor;
    use running_process::supervision::{
        supervise_group, Condition, GroupSpec, Member, SharedSupervisor, StartOrder, Strategy,
    };
    use std::sync::Arc;
    let Some(redis) = daemons::find("redis-server") else {
        return skip("redis-server is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| daemons::free_port()).collect();
    let make = {
        let (redis, ports, dir) = (redis.clone(), ports.clone(), dir.path().to_owned());
        move |n: u32| -> SharedSupervisor {
            let port = ports[n as usize - 1];
            let instance_dir = dir.join(format!("redis-{n}"));
            std::fs::create_dir_all(&instance_dir).unwrap();
            Arc::new(CommandSupervisor::new(
                CommandSpec::new(format!("redis-{n}"), &redis)
                    .args(daemons::redis_args(port, &instance_dir))
                    .stdout(Output::Null)
                    .readiness(Readiness::Notify)
                    .ready_timeout(DEADLINE)
                    .restart(no_backoff(RestartKind::Permanent)),
            ))
        }
    };
    // Ready once it has written its own marker: which spec runs is read from the marker,
    // not from /proc/PID/cmdline, which is in flux while `sh` execs `sleep`.
    let markers = dir.path().to_owned();
    let sleeper = |seconds: &str| -> SharedSupervisor {
        let marker = markers.join(format!("client-{seconds}"));
        Arc::new(CommandSupervisor::new(
            CommandSpec::new("client", "sh")
                .args([
                    "-c".to_owned(),
                    format!("touch '{}'; exec sleep {seconds}", marker.display()),
                ])
                .readiness(Readiness::exec([
                    "test",
                    "-e",
                    &marker.display().to_string(),
                ]))
                .restart(no_backoff(RestartKind::Permanent)),
        ))
    };
    let group = supervise_group(
        GroupSpec::new("g")
            .order(StartOrder::Parallel)
            .strategy(Strategy::RestForOne)
            .member(Member::replicas("redis", 1, make))
            .member(Member::service(sleeper("1000")).depends_on("redis", Condition::Ready)),
    )
    .unwrap();
    within("ready", group.ready()).await.unwrap();
    let pid_of = |name: &str| {
        group
            .status()
            .into_iter()
            .find(|m| m.name == name)
            .and_then(|m| m.pid)
    };
    let first = pid_of("g/redis").unwrap();
    assert!(within("PING 1", daemons::redis_ping(ports[0])).await);

    assert!(group.scale("redis", 3).await.unwrap());
    within("three ready", group.ready()).await.unwrap();
    assert_eq!(pid_of("g/redis-1"), Some(first), "instance 1 kept running");
    for port in &ports {
        assert!(
            within("PING", daemons::redis_ping(*port)).await,
            "port {port}"
        );
    }
    let (second, third) = (pid_of("g/redis-2").unwrap(), pid_of("g/redis-3").unwrap());

    assert!(group.scale("redis", 1).await.unwrap());
    wait_gone(second).await;
    wait_gone(third).await;
    assert_eq!(pid_of("g/redis"), Some(first));
    assert!(within("PING after", daemons::redis_ping(ports[0])).await);

    // Replace the client: the old process is gone, the new one runs the new spec.
    let old_client = pid_of("g/client").unwrap();
    group
        .replace_member(Member::service(sleeper("999")).depends_on("redis", Condition::Ready))
        .await
        .unwrap();
    wait_gone(old_client).await;
    within("client again", group.ready()).await.unwrap();
    let new_client = pid_of("g/client").unwrap();
    assert_ne!(new_client, old_client);
    assert!(dir.path().join("client-999").exists(), "the new spec runs");
    assert_eq!(
        pid_of("g/redis"),
        Some(first),
        "what it depends on is untouched"
    );
    group.stop().await;
    wait_gone(first).await;
    say(&format!(
        "redis replicas: 1 -> 3 -> 1 on ports {ports:?}; instance 1 pid {first} throughout"
    ));
}
