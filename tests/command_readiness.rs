//! The command supervisor's readiness kinds and health checks against real processes.

#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use running_process::command::{
    CommandSpec, HealthCheck, HealthSpec, Output, Readiness, StopSpec, StreamName,
};
use running_process::supervision::{
    EventKind, HealthPolicy, Outcome, RestartKind, RestartPolicy, ServiceHandle, StartError,
};
use running_process::ExitStatus;
use support::{collect_until, demo_spec, next_matching, wait_gone, within};

fn temporary() -> RestartPolicy {
    support::no_backoff(RestartKind::Temporary)
}

fn shell(name: &str, script: &str) -> CommandSpec {
    CommandSpec::new(name, "sh")
        .args(["-c", script])
        .restart(temporary())
}

async fn ready_then_stop(spec: CommandSpec) -> ServiceHandle {
    let service = spec.supervise();
    within("ready", service.ready()).await.expect("ready");
    assert!(service.backend().unwrap().is_alive());
    service
}

#[tokio::test]
async fn started_and_delay() {
    for readiness in [
        Readiness::Started,
        Readiness::Delay {
            delay: Duration::from_millis(50),
        },
    ] {
        let service =
            ready_then_stop(shell("sleeper", "exec sleep 1000").readiness(readiness)).await;
        assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    }
}

#[tokio::test]
async fn a_line_on_stdout() {
    let spec = shell(
        "logger",
        "echo booting; echo 'listening on 4242'; exec sleep 1000",
    )
    .stdout(Output::Tracing)
    .readiness(Readiness::LogLine {
        pattern: "listening on".into(),
        stream: StreamName::Stdout,
    });
    let service = ready_then_stop(spec).await;
    within("stop", service.stop()).await;
}

#[tokio::test]
async fn a_file_appearing() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready.flag");
    let spec = CommandSpec::new("toucher", "sh")
        .args([
            "-c",
            "touch \"$0\"; exec sleep 1000",
            flag.to_str().unwrap(),
        ])
        .restart(temporary())
        .readiness(Readiness::File { path: flag.clone() });
    let service = ready_then_stop(spec).await;
    within("stop", service.stop()).await;
}

#[tokio::test]
async fn a_tcp_port_accepting() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let script = format!(
        "import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port}))\ns.listen()\ntime.sleep(1000)"
    );
    let spec = CommandSpec::new("listener", "python3")
        .args(["-c", &script])
        .restart(temporary())
        .readiness(Readiness::Tcp {
            address: format!("127.0.0.1:{port}"),
        })
        .health(HealthSpec {
            policy: HealthPolicy {
                interval: Duration::from_millis(50),
                ..HealthPolicy::default()
            },
            check: HealthCheck::Tcp {
                address: format!("127.0.0.1:{port}"),
            },
        });
    let service = ready_then_stop(spec).await;
    within("stop", service.stop()).await;
}

#[tokio::test]
async fn sd_notify_from_the_demo_daemon_with_status() {
    let dir = tempfile::tempdir().unwrap();
    let spec = demo_spec("notifier", dir.path(), &["--notify"]).readiness(Readiness::Notify);
    let service = spec.supervise();
    let mut events = service.events();
    let seen = collect_until(&mut events, "ready", |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    let pid = service.backend().unwrap().pid();
    assert!(
        seen.iter().any(|e| matches!(&e.kind, EventKind::Status { status } if status == &format!("serving as pid {pid}"))),
        "{seen:?}"
    );
    within("stop", service.stop()).await;
}

#[tokio::test]
async fn sd_notify_from_a_script() {
    let script = "import os, socket, time\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b'STATUS=warming up\\nREADY=1', os.environ['NOTIFY_SOCKET'])\n\
         time.sleep(1000)";
    let spec = CommandSpec::new("py-notify", "python3")
        .args(["-c", script])
        .restart(temporary())
        .readiness(Readiness::Notify);
    let service = spec.supervise();
    let mut events = service.events();
    next_matching(
        &mut events,
        "status",
        |e| matches!(&e.kind, EventKind::Status { status } if status == "warming up"),
    )
    .await;
    within("ready", service.ready()).await.unwrap();
    within("stop", service.stop()).await;
}

#[tokio::test]
async fn a_silent_watchdog_makes_the_backend_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let spec = demo_spec("watched", dir.path(), &["--notify"])
        .readiness(Readiness::Notify)
        .restart(support::no_backoff(RestartKind::Permanent))
        .health(HealthSpec {
            policy: HealthPolicy {
                interval: Duration::from_millis(100),
                timeout: Duration::from_secs(1),
                failures_before_unhealthy: 2,
            },
            check: HealthCheck::Watchdog {
                timeout: Duration::from_millis(400),
            },
        })
        .stop(StopSpec {
            grace: Duration::from_millis(200),
            ..StopSpec::default()
        });
    let service = spec.supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    let first = service.backend().unwrap();
    // While it pings (every 200 ms) it stays healthy; frozen, it falls silent.
    first
        .signal(rustix::process::Signal::STOP.as_raw())
        .unwrap();
    let seen = collect_until(
        &mut events,
        "replaced",
        |e| matches!(e.kind, EventKind::Ready { pid: Some(pid), .. } if pid != first.pid()),
    )
    .await;
    assert!(
        seen.iter()
            .any(|e| matches!(e.kind, EventKind::Unhealthy { pid } if pid == first.pid())),
        "{seen:?}"
    );
    within("stop", service.stop()).await;
}

#[tokio::test]
async fn exiting_before_ready_is_a_start_failure() {
    let spec = shell("quitter", "exit 7").readiness(Readiness::LogLine {
        pattern: "never".into(),
        stream: StreamName::Stdout,
    });
    let service = spec.supervise();
    let mut events = service.events();
    let failed = next_matching(&mut events, "start failed", |e| {
        matches!(e.kind, EventKind::StartFailed { .. })
    })
    .await;
    assert_matches!(failed.kind, EventKind::StartFailed { ref error } if matches!(**error, StartError::ExitedBeforeReady { status: ExitStatus::Code(7), .. }));
    // Its first start failed: supervision ends with that failure (OTP's `start_link`), not
    // `Completed` as before, which read like a clean run.
    assert_matches!(
        within("outcome", service.outcome()).await,
        Outcome::StartFailed { ref member, ref error } if member == "quitter" && matches!(**error, StartError::ExitedBeforeReady { .. })
    );
}

#[tokio::test]
async fn a_readiness_timeout_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let spec = shell("never-ready", "exec sleep 1000")
        .readiness(Readiness::File {
            path: dir.path().join("never"),
        })
        .ready_timeout(Duration::from_millis(200));
    let service = spec.supervise();
    let mut events = service.events();
    let spawned = next_matching(&mut events, "spawned", |e| {
        matches!(e.kind, EventKind::Spawned { .. })
    })
    .await;
    let EventKind::Spawned { pid } = spawned.kind else {
        unreachable!()
    };
    let failed = next_matching(&mut events, "timeout", |e| {
        matches!(e.kind, EventKind::StartFailed { .. })
    })
    .await;
    assert_matches!(failed.kind, EventKind::StartFailed { ref error } if matches!(**error, StartError::ReadyTimeout(_)));
    wait_gone(pid).await;
}
