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

/// Apply an edited file: one service's args edited, one added, one removed, one left
/// alone. The one left alone keeps its pid and sees no event at all; the edited one is a
/// new process running the new args; the removed one is gone from `status`.
#[tokio::test]
async fn apply_replaces_what_changed_and_leaves_the_rest_running() {
    let v1 = r#"
[services.keep]
program = "sh"
args = ["-c", "exec sleep 1000"]

[services.edit]
program = "sh"
args = ["-c", "echo up v1; exec sleep 1000"]
readiness = { kind = "log_line", pattern = "up v1" }

[services.gone]
program = "sh"
args = ["-c", "exec sleep 1000"]
"#;
    let (dir, stack, _events) = stack(v1).await;
    stack.ready().await.unwrap();
    let pid = |stack: &Stack, name: &str| {
        stack
            .status()
            .into_iter()
            .find(|s| s.name == name)
            .and_then(|s| s.pid)
    };
    let (keep, edit, gone) = (
        pid(&stack, "keep").unwrap(),
        pid(&stack, "edit").unwrap(),
        pid(&stack, "gone").unwrap(),
    );
    let v2 = v1
        .replace("v1", "v2")
        .replace("[services.gone]", "[services.new]");
    let path = dir.path().join("running-process.toml");
    std::fs::write(&path, v2).unwrap();
    let edited = ServiceFile::load(&path).await.unwrap();
    let mut seen = Seen::new(stack.events());
    let plan = stack.plan(&edited).await.unwrap();
    println!("{plan}");
    assert_eq!(
        plan.to_string(),
        "keep: unchanged\nedit: replaced: args, readiness\nnew: added\ngone: removed\n"
    );
    assert_eq!(stack.apply(edited).await.unwrap(), plan);
    stack.ready().await.unwrap();
    seen.wait(
        0,
        "new ready",
        is("new", |k| matches!(k, EventKind::Ready { .. })),
    )
    .await;
    seen.wait(
        0,
        "edit ready",
        is("edit", |k| matches!(k, EventKind::Ready { .. })),
    )
    .await;
    assert_eq!(pid(&stack, "keep"), Some(keep), "left alone");
    assert!(
        !seen.events.iter().any(|e| &*e.service == "keep"),
        "no event for the service left alone: {:#?}",
        seen.events
    );
    // Ready again by its new readiness, which only the new spec's output meets.
    let new_edit = pid(&stack, "edit").unwrap();
    assert_ne!(new_edit, edit);
    assert!(stack.status().iter().all(|s| s.name != "gone"));
    wait_exited(u64::from(gone));
    assert!(stack.plan(&stack.file()).await.unwrap().is_empty());
    stack.stop().await;
}

/// A program rebuilt on disk (a new file renamed over it, as a build does) makes its
/// service "changed" although the file did not change, and an apply replaces it.
#[tokio::test]
async fn a_rebuilt_program_counts_as_changed() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("daemon");
    std::fs::copy("/bin/sleep", &program).unwrap();
    let (_dir, stack, _events) = stack(&format!(
        "[services.d]\nprogram = \"{}\"\nargs = [\"1000\"]\n",
        program.display()
    ))
    .await;
    stack.ready().await.unwrap();
    let file = stack.file();
    assert!(stack.plan(&file).await.unwrap().is_empty(), "same program");
    let before = stack.status()[0].pid.unwrap();
    // "Rebuild": another binary's bytes, written beside it and renamed over it.
    let fresh = dir.path().join("daemon.new");
    let mut bytes = std::fs::read("/bin/sleep").unwrap();
    bytes.extend_from_slice(b"rebuilt");
    std::fs::write(&fresh, bytes).unwrap();
    std::fs::set_permissions(&fresh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&fresh, &program).unwrap();
    let plan = stack.apply((*file).clone()).await.unwrap();
    assert_eq!(plan.to_string(), "d: replaced: program rebuilt on disk\n");
    stack.ready().await.unwrap();
    assert_ne!(stack.status()[0].pid.unwrap(), before);
    assert!(stack.plan(&stack.file()).await.unwrap().is_empty());
    stack.stop().await;
}

/// `replicas` runs instances named `NAME-k`, each with `RUNNING_PROCESS_INSTANCE=k` in its
/// environment and `${RUNNING_PROCESS_INSTANCE}` replaced in its strings; a dependant
/// waits for all of them; an apply with another count scales, leaving the rest running.
#[tokio::test]
async fn replicas_get_their_instance_number_and_an_apply_scales_them() {
    let text = r#"
[services.worker]
program = "sh"
args = ["-c", "echo worker ${RUNNING_PROCESS_INSTANCE} > worker-${RUNNING_PROCESS_INSTANCE}; exec sleep 1000"]
replicas = 3

[services.front]
program = "sh"
args = ["-c", "exec sleep 1000"]
depends_on = ["worker"]
"#;
    let (dir, stack, _events) = stack(text).await;
    stack.ready().await.unwrap();
    let names: Vec<String> = stack.status().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["worker-1", "worker-2", "worker-3", "front"]);
    for k in 1..=3 {
        let written = std::fs::read_to_string(dir.path().join(format!("worker-{k}"))).unwrap();
        assert_eq!(written.trim(), format!("worker {k}"));
        let pid = stack.status()[k - 1].pid.unwrap();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let wanted = format!("RUNNING_PROCESS_INSTANCE={k}");
        assert!(environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()));
    }
    let first = stack.status()[0].pid;
    let path = dir.path().join("running-process.toml");
    std::fs::write(&path, text.replace("replicas = 3", "replicas = 1")).unwrap();
    let plan = stack
        .apply(ServiceFile::load(&path).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        plan.to_string(),
        "worker: scaled: 3 -> 1\nfront: unchanged\n"
    );
    let names: Vec<String> = stack.status().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["worker", "front"]);
    assert_eq!(stack.status()[0].pid, first, "instance 1 kept running");
    stack.stop().await;
}

/// An edited file whose `[group]` changed, or that is invalid, changes nothing.
#[tokio::test]
async fn an_apply_that_cannot_be_done_changes_nothing() {
    let text = "[services.a]\nprogram = \"sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\n";
    let (_dir, stack, _events) = stack(text).await;
    stack.ready().await.unwrap();
    let pid = stack.status()[0].pid;
    let mut edited = (*stack.file()).clone();
    edited.group.strategy = running_process::supervision::Strategy::OneForAll;
    let error = stack.apply(edited).await.unwrap_err();
    assert!(error.to_string().contains("strategy"), "{error}");
    let mut edited = (*stack.file()).clone();
    edited.services[0]
        .depends_on
        .push(running_process::supervision::Dependency::new(
            "nothing",
            running_process::supervision::Condition::Ready,
        ));
    assert!(matches!(
        stack.apply(edited).await,
        Err(running_process::compose::ApplyError::Invalid(_))
    ));
    assert_eq!(stack.status()[0].pid, pid);
    stack.stop().await;
}

/// The next report of a watch, within the deadline.
async fn next_report(reports: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    let report = tokio::time::timeout(DEADLINE, reports.recv())
        .await
        .expect("a report")
        .unwrap();
    println!("{report}");
    report
}

/// A watch applies what changes on disk: a program rebuilt (a new file renamed over it, as
/// a build does) replaces its service; an edit of the file is applied; an invalid edit is
/// reported and changes nothing.
#[tokio::test]
async fn a_watch_applies_a_rebuild_and_an_edit() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("daemon");
    std::fs::copy("/bin/sleep", &program).unwrap();
    let text = format!(
        "[services.d]\nprogram = \"{}\"\nargs = [\"1000\"]\n\n[services.other]\nprogram = \"sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\n",
        program.display()
    );
    let path = dir.path().join("running-process.toml");
    std::fs::write(&path, &text).unwrap();
    let stack = Stack::start(ServiceFile::load(&path).await.unwrap()).unwrap();
    stack.ready().await.unwrap();
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let _watch = stack
        .watch(
            vec![path.clone()],
            Default::default(),
            |_| {},
            move |report| {
                let _ = tx.send(report.to_string());
            },
        )
        .await;
    let pid_of = |name: &str| {
        stack
            .status()
            .into_iter()
            .find(|s| s.name == name)
            .and_then(|s| s.pid)
    };
    let (d, other) = (pid_of("d").unwrap(), pid_of("other").unwrap());

    let fresh = dir.path().join("daemon.new");
    let mut bytes = std::fs::read("/bin/sleep").unwrap();
    bytes.extend_from_slice(b"rebuilt");
    std::fs::write(&fresh, bytes).unwrap();
    std::fs::set_permissions(&fresh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&fresh, &program).unwrap();
    assert_eq!(
        next_report(&mut reports).await,
        "d: replaced: program rebuilt on disk\nother: unchanged"
    );
    stack.ready().await.unwrap();
    assert_ne!(pid_of("d").unwrap(), d);
    assert_eq!(pid_of("other").unwrap(), other);

    std::fs::write(&path, text.replace("exec sleep 1000", "exec sleep 999")).unwrap();
    assert_eq!(
        next_report(&mut reports).await,
        "d: unchanged\nother: replaced: args"
    );
    stack.ready().await.unwrap();
    let other = pid_of("other").unwrap();
    std::fs::write(&path, "[services.d]\nprogram = 42\n").unwrap();
    let invalid = next_report(&mut reports).await;
    assert!(invalid.starts_with("not applied: "), "{invalid}");
    assert_eq!(
        pid_of("other"),
        Some(other),
        "an invalid edit changes nothing"
    );
    stack.stop().await;
}
