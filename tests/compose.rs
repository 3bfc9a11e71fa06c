//! `compose::Stack` against real processes: the conditions `completed_successfully` and
//! `healthy`, a dependency that fails, the `one_for_all` strategy, the set's restart
//! intensity, and a start failure during start-up. Every wait is for an event or a state,
//! with a generous deadline.
#![cfg(target_os = "linux")]

mod support;

use futures_util::StreamExt;
use running_process::compose::{ServiceFile, Stack};
use running_process::supervision::{
    Event, EventKind, EventStream, HealthView, MemberState, MemberStatus, Outcome,
};
use support::{wait_exited, DEADLINE};

/// A file in a fresh directory (the services' working directory), loaded and checked.
async fn stack(text: &str) -> (tempfile::TempDir, Stack, EventStream) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("running-process.toml");
    std::fs::write(&path, text).unwrap();
    let file = ServiceFile::load(&path).await.unwrap();
    let stack = Stack::start(file).unwrap();
    let events = stack.events();
    (dir, stack, events)
}

/// Every event of a stack, as received, and a wait for the next one that matches.
struct Seen {
    rx: EventStream,
    events: Vec<Event>,
}

impl Seen {
    fn new(rx: EventStream) -> Seen {
        Seen {
            rx,
            events: Vec::new(),
        }
    }

    /// The index of the first event at or after `from` that `matches`, waiting for it if
    /// it has not arrived yet.
    async fn wait(&mut self, from: usize, what: &str, matches: impl Fn(&Event) -> bool) -> usize {
        if let Some(i) = self.events.iter().skip(from).position(&matches) {
            return from + i;
        }
        let found = tokio::time::timeout(DEADLINE, async {
            loop {
                let event = self
                    .rx
                    .next()
                    .await
                    .expect("the stack's events")
                    .expect("no lag");
                println!("{event}");
                let hit = matches(&event);
                self.events.push(event);
                if hit {
                    return self.events.len() - 1;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
    }
}

fn is(service: &str, kind: fn(&EventKind) -> bool) -> impl Fn(&Event) -> bool + '_ {
    move |e| &*e.service == service && kind(&e.kind)
}

fn state(stack: &Stack, name: &str) -> MemberState {
    stack
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
        .state
}

#[tokio::test]
async fn a_dependant_waits_for_a_one_shot_to_complete_successfully() {
    let (_dir, stack, events) = stack(
        r#"
[services.migrate]
program = "sh"
args = ["-c", "echo migrated > migrated"]
restart = { kind = "transient" }

[services.app]
program = "sh"
args = ["-c", "test -e migrated && exec sleep 1000"]
depends_on = { migrate = "completed_successfully" }
"#,
    )
    .await;
    let mut seen = Seen::new(events);
    seen.wait(
        0,
        "app ready",
        is("app", |k| matches!(k, EventKind::Ready { .. })),
    )
    .await;
    let completed = seen
        .wait(
            0,
            "migrate completed",
            is("migrate", |k| matches!(k, EventKind::Completed)),
        )
        .await;
    let spawned = seen
        .wait(
            0,
            "app spawned",
            is("app", |k| matches!(k, EventKind::Spawned { .. })),
        )
        .await;
    assert!(completed < spawned, "app starts after migrate completed");
    stack.ready().await.unwrap();
    assert_eq!(state(&stack, "migrate"), MemberState::Finished);
    assert_eq!(state(&stack, "app"), MemberState::Running);
    assert_eq!(stack.stop().await, Outcome::Stopped);
}

#[tokio::test]
async fn a_dependant_of_a_failed_one_shot_is_not_started() {
    let (dir, stack, events) = stack(
        r#"
[services.migrate]
program = "sh"
args = ["-c", "exit 4"]
restart = { kind = "temporary" }

[services.app]
program = "sh"
args = ["-c", "touch app-ran; exec sleep 1000"]
depends_on = { migrate = "completed_successfully" }
"#,
    )
    .await;
    let mut seen = Seen::new(events);
    seen.wait(
        0,
        "app blocked",
        is("app", |k| matches!(k, EventKind::Blocked { .. })),
    )
    .await;
    let rows = stack.status();
    let app = rows.iter().find(|r| r.name == "app").unwrap();
    assert_eq!(app.state, MemberState::Blocked);
    assert_eq!(
        app.detail.as_deref(),
        Some("migrate ended without becoming completed_successfully")
    );
    assert!(stack.ready().await.is_err(), "the set never got ready");
    assert!(!dir.path().join("app-ran").exists());
}

#[tokio::test]
async fn healthy_waits_for_the_first_passing_health_check() {
    let (dir, stack, events) = stack(
        r#"
[services.db]
program = "sh"
args = ["-c", "exec sleep 1000"]
health = { check = { kind = "exec", command = ["test", "-e", "healthy"] }, interval_ms = 50, failures_before_unhealthy = 1000000 }

[services.api]
program = "sh"
args = ["-c", "exec sleep 1000"]
depends_on = { db = "healthy" }
"#,
    )
    .await;
    let mut seen = Seen::new(events);
    let ready = seen
        .wait(
            0,
            "db ready",
            is("db", |k| matches!(k, EventKind::Ready { .. })),
        )
        .await;
    // Ready, not healthy: a health check has failed since, and api still waits.
    seen.wait(
        ready,
        "a failed check",
        is("db", |k| matches!(k, EventKind::HealthCheckFailed { .. })),
    )
    .await;
    assert_eq!(state(&stack, "api"), MemberState::Waiting);
    std::fs::write(dir.path().join("healthy"), "").unwrap();
    seen.wait(
        0,
        "api spawned",
        is("api", |k| matches!(k, EventKind::Spawned { .. })),
    )
    .await;
    let db = stack.status().into_iter().find(|s| s.name == "db").unwrap();
    assert_eq!(db.health, HealthView::Healthy);
    stack.stop().await;
}

#[tokio::test]
async fn one_for_all_stops_the_others_and_restarts_them_with_the_crashed_one() {
    let (_dir, stack, events) = stack(
        r#"
[group]
strategy = "one_for_all"

[services.a]
program = "sh"
args = ["-c", "exec sleep 1000"]
restart = { kind = "permanent", backoff = { initial_ms = 1 } }

[services.b]
program = "sh"
args = ["-c", "exec sleep 1000"]

[services.c]
program = "sh"
args = ["-c", "exec sleep 1000"]
"#,
    )
    .await;
    stack.ready().await.unwrap();
    let before = stack.status();
    let pid = |rows: &[MemberStatus], name: &str| {
        rows.iter().find(|r| r.name == name).unwrap().pid.unwrap()
    };
    std::process::Command::new("kill")
        .args(["-9", &pid(&before, "a").to_string()])
        .status()
        .unwrap();
    let mut seen = Seen::new(events);
    let restart = seen
        .wait(0, "the strategy restart", |e| {
            &*e.service == "a"
                && matches!(&e.kind, EventKind::StrategyRestart { members, .. } if members == &["b".to_owned(), "c".to_owned()])
        })
        .await;
    seen.wait(
        restart,
        "c ready again",
        is("c", |k| matches!(k, EventKind::Ready { .. })),
    )
    .await;
    seen.wait(
        restart,
        "b ready again",
        is("b", |k| matches!(k, EventKind::Ready { .. })),
    )
    .await;
    stack.ready().await.unwrap();
    let after = stack.status();
    for name in ["a", "b", "c"] {
        assert_ne!(
            pid(&after, name),
            pid(&before, name),
            "{name} is a new process"
        );
    }
    assert_eq!(after.iter().find(|r| r.name == "a").unwrap().restarts, 1);
    stack.stop().await;
}

#[tokio::test]
async fn the_sets_intensity_stops_everything_when_exceeded() {
    let (_dir, stack, events) = stack(
        r#"
[group]
intensity = { max_restarts = 2, period_ms = 600000 }

[services.steady]
program = "sh"
args = ["-c", "exec sleep 1000"]

[services.flaky]
program = "sh"
args = ["-c", "echo up; exec sleep 1000"]
readiness = { kind = "log_line", pattern = "up" }
restart = { kind = "permanent", backoff = { initial_ms = 1 }, intensity = { max_restarts = 100 } }
"#,
    )
    .await;
    stack.ready().await.unwrap();
    let mut seen = Seen::new(events);
    // Start from flaky's first ready; each kill waits for the next one.
    let mut ready = seen
        .wait(
            0,
            "flaky ready",
            is("flaky", |k| matches!(k, EventKind::Ready { .. })),
        )
        .await;
    for round in 1..=3 {
        let flaky = stack
            .status()
            .into_iter()
            .find(|s| s.name == "flaky")
            .unwrap();
        std::process::Command::new("kill")
            .args(["-9", &flaky.pid.unwrap().to_string()])
            .status()
            .unwrap();
        if round < 3 {
            ready = seen
                .wait(
                    ready + 1,
                    "flaky ready again",
                    is("flaky", |k| matches!(k, EventKind::Ready { .. })),
                )
                .await;
        }
    }
    seen.wait(0, "gave up", |e| matches!(e.kind, EventKind::GaveUp { .. }))
        .await;
    assert!(matches!(stack.outcome().await, Outcome::GaveUp(limit) if limit.max_restarts == 2));
    assert_ne!(
        state(&stack, "steady"),
        MemberState::Running,
        "everything is stopped"
    );
}

#[tokio::test]
async fn a_start_failure_during_start_up_stops_what_already_runs() {
    let (_dir, stack, _events) = stack(
        r#"
[services.fine]
program = "sh"
args = ["-c", "exec sleep 1000"]

[services.broken]
program = "sh"
args = ["-c", "echo cannot start >&2; exit 3"]
stderr = { kind = "null" }
readiness = { kind = "log_line", pattern = "never printed" }
depends_on = { fine = "ready" }
"#,
    )
    .await;
    let outcome = tokio::time::timeout(DEADLINE, stack.outcome())
        .await
        .expect("an outcome");
    println!("{outcome}");
    assert!(
        matches!(&outcome, Outcome::StartFailed { member, .. } if member == "broken"),
        "{outcome}"
    );
    assert!(stack.ready().await.is_err());
    let fine = stack
        .status()
        .into_iter()
        .find(|s| s.name == "fine")
        .unwrap();
    assert_eq!(fine.pid, None, "fine was stopped");
    assert_eq!(fine.state, MemberState::Stopped);
}

#[tokio::test]
async fn dropping_the_stack_stops_its_services() {
    let (_dir, stack, _events) = stack(
        "[services.a]\nprogram = \"sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\n[services.b]\nprogram = \"sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\ndepends_on = [\"a\"]\n",
    )
    .await;
    stack.ready().await.unwrap();
    let pids: Vec<u32> = stack.status().iter().map(|s| s.pid.unwrap()).collect();
    drop(stack);
    for pid in pids {
        let waited = tokio::task::spawn_blocking(move || wait_exited(u64::from(pid)))
            .await
            .unwrap();
        if waited.is_none() {
            println!("SKIPPED: python3 (for a pidfd wait) is missing");
            return;
        }
    }
}
