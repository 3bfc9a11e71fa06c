//! One supervised service, with real demo daemons: spawn, restart, adopt, give up, health.

mod support;

use std::time::Duration;

use running_process::command::Readiness;
use running_process::supervision::{EventKind, Intensity, Outcome, RestartKind, RestartPolicy};
use running_process::ExitStatus;
use support::{collect_until, demo_spec, next_matching, no_backoff, within, DemoDaemon};

#[tokio::test]
async fn spawns_restarts_after_a_kill_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let spec = demo_spec("solo", dir.path(), &[]).restart(no_backoff(RestartKind::Permanent));
    let service = spec.supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    let first = service.backend().expect("a backend while ready");
    let seen = collect_until(&mut events, "first ready", |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    let kinds: Vec<_> = seen.iter().map(|e| &e.kind).collect();
    assert_matches!(kinds[..], [EventKind::Starting, EventKind::Spawned { pid }, EventKind::Ready { pid: Some(ready), .. }] if pid == ready && *pid == first.pid());
    assert!(seen.iter().all(|e| &*e.service == "solo"));

    first.force_kill().unwrap();
    let seen = collect_until(&mut events, "restarted", |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    // The manifest still names the killed daemon, but that is the supervisor's own last
    // instance: no `ProbeRejected` (it read like a security alert for an expected exit).
    let (rejected, kinds): (Vec<_>, Vec<_>) = seen
        .iter()
        .map(|e| &e.kind)
        .partition(|k| matches!(k, EventKind::ProbeRejected { .. }));
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_matches!(
        kinds[..],
        [
            EventKind::Exited {
                status: support::KILLED,
                ..
            },
            EventKind::RestartScheduled {
                attempt: 1,
                delay: Duration::ZERO
            },
            EventKind::Starting,
            EventKind::Spawned { .. },
            EventKind::Ready { .. }
        ]
    );
    let second = service.backend().expect("replacement");
    assert_ne!(second.pid(), first.pid());
    assert!(second.is_alive());

    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    assert!(!second.is_alive());
    let seen = collect_until(&mut events, "stopped", |e| {
        matches!(e.kind, EventKind::Stopped)
    })
    .await;
    assert_matches!(
        seen.iter().map(|e| &e.kind).collect::<Vec<_>>()[..],
        [
            EventKind::Stopping,
            EventKind::Exited {
                status: ExitStatus::Code(0),
                ..
            },
            EventKind::Stopped
        ]
    );
}

#[tokio::test]
async fn adopts_a_verified_running_backend_without_spawning() {
    let daemon = DemoDaemon::start(&[]).await;
    let spec = demo_spec("demo", daemon.dir.path(), &[]);
    let service = spec.supervise();
    let mut events = service.events();
    let seen = collect_until(&mut events, "ready", |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    assert!(
        seen.iter().any(
            |e| matches!(e.kind, EventKind::AdoptedExisting { pid } if pid == daemon.claim().pid)
        ),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e.kind, EventKind::Spawned { .. })),
        "{seen:?}"
    );
    assert_eq!(service.backend().unwrap().pid(), daemon.claim().pid);
    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
}

#[tokio::test]
async fn a_stale_manifest_is_rejected_and_a_new_backend_spawned() {
    let mut daemon = DemoDaemon::start(&[]).await;
    let old_pid = daemon.claim().pid;
    daemon.child.kill().await.unwrap();
    let spec = demo_spec("demo", daemon.dir.path(), &[]);
    let service = spec.supervise();
    let mut events = service.events();
    let seen = collect_until(&mut events, "ready", |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    assert!(
        seen.iter()
            .any(|e| matches!(e.kind, EventKind::ProbeRejected { .. })),
        "{seen:?}"
    );
    let spawned = seen.iter().find_map(|e| match e.kind {
        EventKind::Spawned { pid } => Some(pid),
        _ => None,
    });
    assert!(spawned.is_some_and(|pid| pid != old_pid), "{seen:?}");
    within("stop", service.stop()).await;
}

// The daemons that crash on purpose are ready once started: with the identity handshake,
// a crash can come before the handshake's answer on a slow machine, and a first start
// that fails is not restarted (these tests are about what follows a crash after ready).

#[tokio::test]
async fn temporary_and_transient_services_complete_instead_of_restarting() {
    // Temporary: even a crash is not restarted.
    let dir = tempfile::tempdir().unwrap();
    let spec = demo_spec("temp", dir.path(), &["--crash-after-ms", "200"])
        .readiness(Readiness::Started)
        .restart(no_backoff(RestartKind::Temporary));
    let service = spec.supervise();
    assert_eq!(
        within("outcome", service.outcome()).await,
        Outcome::Completed
    );

    // Transient: a clean exit (a shutdown request) ends it.
    let dir = tempfile::tempdir().unwrap();
    let spec = demo_spec("trans", dir.path(), &[]).restart(no_backoff(RestartKind::Transient));
    let service = spec.supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    service
        .backend()
        .unwrap()
        .request_shutdown(support::DEADLINE)
        .await
        .unwrap();
    next_matching(&mut events, "clean exit", |e| {
        matches!(
            e.kind,
            EventKind::Exited {
                status: ExitStatus::Code(0),
                ..
            }
        )
    })
    .await;
    assert_eq!(
        within("outcome", service.outcome()).await,
        Outcome::Completed
    );

    // Transient: a crash (exit code 3) is restarted.
    let dir = tempfile::tempdir().unwrap();
    let spec = demo_spec("trans", dir.path(), &["--crash-after-ms", "200"])
        .readiness(Readiness::Started)
        .restart(no_backoff(RestartKind::Transient));
    let service = spec.supervise();
    let mut events = service.events();
    next_matching(&mut events, "restart after crash", |e| {
        matches!(e.kind, EventKind::RestartScheduled { .. })
    })
    .await;
    within("stop", service.stop()).await;
}

#[tokio::test]
async fn a_crash_loop_gives_up_at_the_intensity_limit() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RestartPolicy {
        intensity: Intensity::new(2, Duration::from_secs(600)),
        ..no_backoff(RestartKind::Permanent)
    };
    let spec = demo_spec("looping", dir.path(), &["--crash-after-ms", "50"])
        .readiness(Readiness::Started)
        .restart(policy);
    let service = spec.supervise();
    let mut events = service.events();
    let seen = collect_until(&mut events, "gave up", |e| {
        matches!(e.kind, EventKind::GaveUp { .. })
    })
    .await;
    let spawns = seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Spawned { .. }))
        .count();
    assert_eq!(
        spawns, 3,
        "R = 2 restarts allowed, the third crash gives up: {seen:?}"
    );
    assert_matches!(within("outcome", service.outcome()).await, Outcome::GaveUp(reason) if reason.max_restarts == 2);
}

/// Unix: the hang is a SIGSTOP (Windows has no way to freeze a process from outside that
/// Wine implements).
#[cfg(unix)]
#[tokio::test]
async fn a_hung_backend_is_found_by_health_checks_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let spec = support::with_fast_hang_detection(
        demo_spec("hung", dir.path(), &[]).restart(no_backoff(RestartKind::Permanent)),
        2,
    );
    let service = spec.supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    let hung = service.backend().unwrap();
    // Alive but answering nothing: SIGSTOP.
    hung.signal(rustix::process::Signal::STOP.as_raw()).unwrap();
    let seen = collect_until(
        &mut events,
        "replaced",
        |e| matches!(e.kind, EventKind::Ready { pid: Some(pid), .. } if pid != hung.pid()),
    )
    .await;
    let failures = seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::HealthCheckFailed { .. }))
        .count();
    assert!(failures >= 2, "{seen:?}");
    assert!(seen
        .iter()
        .any(|e| matches!(e.kind, EventKind::Unhealthy { pid } if pid == hung.pid())));
    assert!(!hung.is_alive());
    within("stop", service.stop()).await;
}

#[tokio::test]
async fn manual_restart_replaces_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let service = demo_spec("manual", dir.path(), &[]).supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    let first = service.backend().unwrap();
    next_matching(&mut events, "first ready", |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    service.restart();
    let seen = collect_until(&mut events, "ready again", |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e.kind, EventKind::RestartScheduled { .. })),
        "manual restarts skip the policy"
    );
    assert_ne!(service.backend().unwrap().pid(), first.pid());
    assert!(!first.is_alive());
    within("stop", service.stop()).await;
}

#[tokio::test]
async fn dropping_every_handle_stops_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let service = demo_spec("dropped", dir.path(), &[]).supervise();
    within("ready", service.ready()).await.unwrap();
    let backend = service.backend().unwrap();
    drop(service);
    assert_eq!(
        within("stopped after the drop", backend.exited()).await,
        ExitStatus::Code(0)
    );
}
