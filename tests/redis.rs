//! A real daemon nobody here wrote: Debian's `redis-server`, ready over sd_notify
//! (`--supervised systemd`), killed, restarted, stopped gracefully.
//!
//! `.ci/run` installs it (`apt-get install redis-server`); locally the test is skipped
//! with a message when the binary is missing.

#![cfg(target_os = "linux")]

mod support;

use std::path::Path;

use running_process::command::{CommandSpec, Output, Readiness};
use running_process::supervision::{EventKind, Outcome, RestartKind};
use running_process::ExitStatus;
use support::daemons::redis_ping;
use support::{collect_until, within};

const REDIS: &str = "/usr/bin/redis-server";

#[tokio::test]
async fn redis_is_supervised_through_sd_notify() {
    if !Path::new(REDIS).exists() {
        eprintln!("SKIPPED: {REDIS} is missing; install it with `sudo apt-get install redis-server` (CI does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = support::daemons::free_port();
    let spec = CommandSpec::new("redis", REDIS)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args([
            "--supervised",
            "systemd",
            "--daemonize",
            "no",
            "--dir",
            dir.path().to_str().unwrap(),
        ])
        .stdout(Output::Tracing)
        .readiness(Readiness::Notify)
        .restart(support::no_backoff(RestartKind::Permanent));
    let service = spec.supervise();
    let mut events = service.events();
    let seen = collect_until(&mut events, "redis ready", |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    let first = service.backend().unwrap();
    assert!(seen
        .iter()
        .any(|e| matches!(e.kind, EventKind::Spawned { pid } if pid == first.pid())));
    // It answers on its port.
    assert!(within("PING", redis_ping(port)).await);

    first.force_kill().unwrap();
    let seen = collect_until(
        &mut events,
        "redis ready again",
        |e| matches!(e.kind, EventKind::Ready { pid: Some(pid), .. } if pid != first.pid()),
    )
    .await;
    assert!(seen.iter().any(|e| matches!(
        e.kind,
        EventKind::Exited {
            status: ExitStatus::Signal(9),
            ..
        }
    )));
    assert!(within("PING after restart", redis_ping(port)).await);

    let second = service.backend().unwrap();
    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    assert_eq!(
        second.exited().await,
        ExitStatus::Code(0),
        "SIGTERM is a clean shutdown for redis"
    );
}
