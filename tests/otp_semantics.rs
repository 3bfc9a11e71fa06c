//! The supervision runtime against Erlang/OTP's documented `supervisor` semantics, one test
//! per rule (and per defect the explicit state machine removed), with fake backends under
//! tokio's paused time; and `status()` checked against the event stream.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use running_process::supervision::{
    supervise, supervise_group, AutoShutdown, Backoff, Event, EventKind, EventStream, GroupSpec,
    GroupSpecError, Intensity, MemberState, Outcome, RestartKind, RestartPolicy, ServiceHandle,
    StartError, Strategy,
};
use running_process::testing::fake::{FakeSpawn, FakeSupervisor};
use running_process::ExitStatus;

/// Virtual time a test may wait for one event (free under paused time).
const DEADLINE: Duration = Duration::from_secs(3600);

fn at_once(kind: RestartKind) -> RestartPolicy {
    RestartPolicy {
        kind,
        backoff: Backoff::none(),
        intensity: Intensity::unlimited(),
        retry_start_up: false,
    }
}

fn fake(name: &str, kind: RestartKind) -> FakeSupervisor {
    FakeSupervisor::new(name).restart_policy(at_once(kind))
}

/// Read events until `pred` matches; every event read goes into `seen`.
async fn until(
    events: &mut EventStream,
    seen: &mut Vec<Event>,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let wait = async {
        loop {
            match events.next().await {
                Some(Ok(event)) => {
                    seen.push(event.clone());
                    if pred(&event) {
                        return event;
                    }
                }
                Some(Err(lagged)) => panic!("{what}: {lagged}"),
                None => panic!("{what}: the stream ended; seen {seen:#?}"),
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {DEADLINE:?}; seen {seen:#?}"))
}

fn is(service: &str, pred: impl Fn(&EventKind) -> bool) -> impl Fn(&Event) -> bool {
    let service = service.to_owned();
    move |e| *e.service == *service && pred(&e.kind)
}

fn state_of(handle: &ServiceHandle, name: &str) -> MemberState {
    handle
        .status()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no member {name}: {:?}", handle.status()))
        .state
}

/// OTP: a temporary child is never restarted, also when a sibling's termination ends it.
/// Before: `t` was stopped and started again (two spawn attempts). With rest_for_one the
/// sibling must be one started before `t` (the strategy only touches later members).
#[tokio::test(start_paused = true)]
async fn a_temporary_sibling_is_not_restarted_when_a_sibling_dies() {
    for strategy in [Strategy::OneForAll, Strategy::RestForOne] {
        let (a, t, b) = (
            fake("a", RestartKind::Permanent),
            fake("t", RestartKind::Temporary),
            fake("b", RestartKind::Permanent),
        );
        let group = supervise_group(
            GroupSpec::new("g")
                .strategy(strategy)
                .service(Arc::new(a.clone()))
                .service(Arc::new(t.clone()))
                .service(Arc::new(b.clone())),
        )
        .unwrap();
        let mut events = group.events();
        let mut seen = Vec::new();
        group.ready().await.unwrap();
        until(
            &mut events,
            &mut seen,
            "b ready",
            is("g/b", |k| matches!(k, EventKind::Ready { .. })),
        )
        .await;
        // The member whose death stops t: any of them for one_for_all, one started
        // before t for rest_for_one.
        let (crashing, name) = match strategy {
            Strategy::RestForOne => (&a, "g/a"),
            _ => (&b, "g/b"),
        };
        crashing.nth_spawned(1).await.crash();
        until(
            &mut events,
            &mut seen,
            "restarting",
            is(name, |k| matches!(k, EventKind::RestartScheduled { .. })),
        )
        .await;
        until(
            &mut events,
            &mut seen,
            "b ready again",
            is("g/b", |k| matches!(k, EventKind::Ready { .. })),
        )
        .await;
        assert_eq!(t.spawn_attempts(), 1, "{strategy:?}: t was started again");
        assert!(
            !t.nth_spawned(1).await.is_alive(),
            "{strategy:?}: t still runs: {seen:#?} {:?}",
            group.status()
        );
        assert_eq!(state_of(&group, "g/t"), MemberState::Finished);
        assert_eq!(state_of(&group, "g/b"), MemberState::Running);
        // ready() holds with t finished: every member is running or done.
        group.ready().await.unwrap();
        group.stop().await;
    }
}

/// OTP `auto_shutdown => never`: a group whose children have all ended keeps running.
/// Before: it completed, and a parent restarted it, which ran the temporary job again.
#[tokio::test(start_paused = true)]
async fn auto_shutdown_never_keeps_an_emptied_group_running() {
    let job = fake("job", RestartKind::Temporary);
    let inner = GroupSpec::new("inner").service(Arc::new(job.clone()));
    let outer = supervise_group(
        GroupSpec::new("outer")
            .strategy(Strategy::OneForOne)
            .group(inner, RestartKind::Permanent),
    )
    .unwrap();
    let mut events = outer.events();
    let mut seen = Vec::new();
    outer.ready().await.unwrap();
    job.nth_spawned(1).await.crash();
    until(
        &mut events,
        &mut seen,
        "job completed",
        is("outer/inner/job", |k| matches!(k, EventKind::Completed)),
    )
    .await;
    // Let the runtime do whatever it would do next.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        job.spawn_attempts(),
        1,
        "the temporary job ran again: {seen:#?}"
    );
    assert_eq!(outer.try_outcome(), None);
    assert_eq!(state_of(&outer, "outer/inner"), MemberState::Running);
    assert_eq!(state_of(&outer, "outer/inner/job"), MemberState::Finished);
    assert_eq!(outer.stop().await, Outcome::Stopped);
}

/// OTP: a child that fails to start while its group starts makes the group's start fail;
/// the children already started are stopped in reverse order; the caller learns which
/// member failed and why. Before: retried silently, `ready()` returned Ok later.
#[tokio::test(start_paused = true)]
async fn a_failed_first_start_fails_the_group_and_stops_what_started() {
    let (a, b, c) = (
        fake("a", RestartKind::Permanent),
        fake("b", RestartKind::Permanent),
        fake("c", RestartKind::Permanent),
    );
    b.queue_spawn(FakeSpawn::Fail("no config".into()));
    let group = supervise_group(
        GroupSpec::new("g")
            .service(Arc::new(a.clone()))
            .service(Arc::new(b.clone()))
            .service(Arc::new(c.clone())),
    )
    .unwrap();
    let outcome = group.ready().await.unwrap_err();
    let Outcome::StartFailed { member, error } = &outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(member, "g/b");
    assert!(matches!(**error, StartError::Spawn(_)), "{error:?}");
    assert!(
        std::error::Error::source(&**error)
            .is_some_and(|cause| cause.to_string().contains("no config")),
        "{error:?}"
    );
    assert_eq!(b.spawn_attempts(), 1, "retried");
    assert_eq!(c.spawn_attempts(), 0, "c was started after b failed");
    assert!(!a.nth_spawned(1).await.is_alive(), "a was left running");
    assert_eq!(group.outcome().await, outcome);

    // The opt-in gives the old behaviour: b is retried and the group comes up.
    let (a, b, c) = (
        fake("a", RestartKind::Permanent),
        fake("b", RestartKind::Permanent),
        fake("c", RestartKind::Permanent),
    );
    b.queue_spawn(FakeSpawn::Fail("no config".into()));
    let group = supervise_group(
        GroupSpec::new("g")
            .retry_start_up(true)
            .service(Arc::new(a))
            .service(Arc::new(b.clone()))
            .service(Arc::new(c)),
    )
    .unwrap();
    group.ready().await.unwrap();
    assert_eq!(b.spawn_attempts(), 2);
    let b_status = group
        .status()
        .into_iter()
        .find(|m| m.name == "g/b")
        .unwrap();
    assert!(b_status.last_start_error.is_some());
    group.stop().await;
}

/// Failing at start-up and giving up later are distinct outcomes.
#[tokio::test(start_paused = true)]
async fn giving_up_after_the_start_is_gave_up_not_start_failed() {
    let fake = FakeSupervisor::new("svc").restart_policy(RestartPolicy {
        intensity: Intensity::new(1, Duration::from_secs(60)),
        ..at_once(RestartKind::Permanent)
    });
    let service = supervise(Arc::new(fake.clone()));
    service.ready().await.unwrap();
    fake.nth_spawned(1).await.crash();
    fake.nth_spawned(2).await.crash();
    assert!(matches!(service.outcome().await, Outcome::GaveUp(_)));
}

/// Before: `start_member` and `watch` both emitted `Ready` for an adopted backend.
#[tokio::test(start_paused = true)]
async fn an_adopted_backend_is_ready_once() {
    let fake = fake("svc", RestartKind::Permanent);
    let process = fake.offer_running_backend();
    let service = supervise(Arc::new(fake.clone()));
    let mut events = service.events();
    service.ready().await.unwrap();
    let stopped = service.stop().await;
    assert_eq!(stopped, Outcome::Stopped);
    let mut kinds = Vec::new();
    while let Some(Ok(event)) = events.next().await {
        kinds.push(event.kind);
    }
    let ready = kinds
        .iter()
        .filter(|k| matches!(k, EventKind::Ready { .. }))
        .count();
    assert_eq!(ready, 1, "{kinds:#?}");
    assert!(kinds
        .iter()
        .any(|k| matches!(k, EventKind::AdoptedExisting { pid } if *pid == process.pid())));
    assert_eq!(fake.spawn_attempts(), 0);
}

/// Before: a single service stopped during its restart delay emitted neither `Stopping`
/// nor `Stopped`.
#[tokio::test(start_paused = true)]
async fn a_service_stopped_during_its_backoff_reports_stopping_and_stopped() {
    let fake = FakeSupervisor::new("svc").restart_policy(RestartPolicy {
        backoff: Backoff::fixed(Duration::from_secs(30)),
        ..at_once(RestartKind::Permanent)
    });
    let service = supervise(Arc::new(fake.clone()));
    let mut events = service.events();
    let mut seen = Vec::new();
    service.ready().await.unwrap();
    fake.nth_spawned(1).await.crash();
    until(
        &mut events,
        &mut seen,
        "backoff",
        is("svc", |k| matches!(k, EventKind::RestartScheduled { .. })),
    )
    .await;
    assert!(matches!(state_of(&service, "svc"), MemberState::Backoff));
    assert_eq!(service.stop().await, Outcome::Stopped);
    let mut rest = Vec::new();
    while let Some(Ok(event)) = events.next().await {
        rest.push(event.kind);
    }
    assert!(
        matches!(rest[..], [EventKind::Stopping, EventKind::Stopped]),
        "{rest:#?}"
    );
    assert_eq!(fake.spawn_attempts(), 1);
}

/// Before: a spawn abandoned at its ready timeout emitted `Spawned` and `StartFailed`
/// but never the `Exited` of the process it killed.
#[tokio::test(start_paused = true)]
async fn an_abandoned_spawn_reports_the_exit_of_what_it_killed() {
    let fake = FakeSupervisor::new("svc")
        .ready_timeout(Duration::from_secs(5))
        .restart_policy(RestartPolicy {
            retry_start_up: true,
            ..at_once(RestartKind::Permanent)
        });
    fake.queue_spawn(FakeSpawn::Hang);
    let service = supervise(Arc::new(fake.clone()));
    let mut events = service.events();
    let mut seen = Vec::new();
    let spawned = until(
        &mut events,
        &mut seen,
        "spawned",
        is("svc", |k| matches!(k, EventKind::Spawned { .. })),
    )
    .await;
    let EventKind::Spawned { pid } = spawned.kind else {
        unreachable!()
    };
    until(&mut events, &mut seen, "timeout", is("svc", |k| {
        matches!(k, EventKind::StartFailed { error } if matches!(**error, StartError::ReadyTimeout(_)))
    }))
    .await;
    until(&mut events, &mut seen, "its exit", is("svc", |k| {
        matches!(k, EventKind::Exited { pid: p, status: ExitStatus::Signal(9), .. } if *p == pid)
    }))
    .await;
    service.ready().await.unwrap();
    service.stop().await;
}

/// `restart()` and `restart_member()` agree: a completed member comes back, a finished
/// temporary one does not. Before: only `restart_member` brought completed ones back.
#[tokio::test(start_paused = true)]
async fn restart_and_restart_member_agree_about_completed_members() {
    let (setup, server, job) = (
        fake("setup", RestartKind::Transient),
        fake("server", RestartKind::Permanent),
        fake("job", RestartKind::Temporary),
    );
    let group = supervise_group(
        GroupSpec::new("g")
            .service(Arc::new(setup.clone()))
            .service(Arc::new(server.clone()))
            .service(Arc::new(job.clone())),
    )
    .unwrap();
    let mut events = group.events();
    let mut seen = Vec::new();
    group.ready().await.unwrap();
    setup.nth_spawned(1).await.exit(ExitStatus::Code(0));
    job.nth_spawned(1).await.exit(ExitStatus::Code(0));
    for name in ["g/setup", "g/job"] {
        until(
            &mut events,
            &mut seen,
            "completed",
            is(name, |k| matches!(k, EventKind::Completed)),
        )
        .await;
    }
    group.restart();
    setup.nth_spawned(2).await;
    server.nth_spawned(2).await;
    group.ready().await.unwrap();
    setup.nth_spawned(2).await.exit(ExitStatus::Code(0));
    until(
        &mut events,
        &mut seen,
        "completed again",
        is("g/setup", |k| matches!(k, EventKind::Completed)),
    )
    .await;
    group.restart_member("g/setup");
    group.restart_member("g/job");
    setup.nth_spawned(3).await;
    group.ready().await.unwrap();
    assert_eq!(
        job.spawn_attempts(),
        1,
        "a finished temporary member came back"
    );
    assert_eq!(state_of(&group, "g/job"), MemberState::Finished);
    group.stop().await;
}

/// OTP rejects a permanent significant child spec; here, when the group is built.
#[test]
fn a_permanent_significant_member_is_refused_before_anything_starts() {
    let spec = GroupSpec::new("g")
        .auto_shutdown(AutoShutdown::AnySignificant)
        .significant_service(Arc::new(fake("main", RestartKind::Permanent)));
    let error = spec.validate().unwrap_err();
    assert_eq!(
        error,
        GroupSpecError::PermanentSignificant {
            group: "g".into(),
            member: "main".into()
        }
    );
    assert!(error.to_string().contains("main"));
    let nested = GroupSpec::new("outer").group(spec, RestartKind::Transient);
    assert!(nested.validate().is_err(), "nested specs are checked too");
    let twice = GroupSpec::new("g")
        .service(Arc::new(fake("x", RestartKind::Permanent)))
        .service(Arc::new(fake("x", RestartKind::Permanent)));
    assert!(matches!(
        twice.validate(),
        Err(GroupSpecError::DuplicateName { .. })
    ));
}

/// Nested groups can be significant, and have their own restart policy (backoff).
#[tokio::test(start_paused = true)]
async fn nested_groups_can_be_significant_and_have_their_own_backoff() {
    // Significant: the inner group completes when its significant job completes, and
    // that completes the outer group.
    let job = fake("job", RestartKind::Transient);
    let inner = GroupSpec::new("inner")
        .auto_shutdown(AutoShutdown::AnySignificant)
        .significant_service(Arc::new(job.clone()));
    let outer = supervise_group(
        GroupSpec::new("outer")
            .auto_shutdown(AutoShutdown::AnySignificant)
            .service(Arc::new(fake("side", RestartKind::Permanent)))
            .significant_group(inner, RestartKind::Transient),
    )
    .unwrap();
    outer.ready().await.unwrap();
    job.nth_spawned(1).await.exit(ExitStatus::Code(0));
    assert_eq!(outer.outcome().await, Outcome::Completed);

    // Backoff: an inner group that gives up is restarted after its own delay.
    let flaky = fake("flaky", RestartKind::Permanent);
    let inner = GroupSpec::new("inner")
        .intensity(Intensity::new(0, Duration::from_secs(60)))
        .service(Arc::new(flaky.clone()));
    let outer = supervise_group(GroupSpec::new("outer").group(
        inner,
        RestartPolicy {
            backoff: Backoff::fixed(Duration::from_secs(7)),
            ..at_once(RestartKind::Permanent)
        },
    ))
    .unwrap();
    let mut events = outer.events();
    let mut seen = Vec::new();
    outer.ready().await.unwrap();
    flaky.nth_spawned(1).await.crash();
    let scheduled = until(
        &mut events,
        &mut seen,
        "inner restart",
        is("outer/inner", |k| {
            matches!(k, EventKind::RestartScheduled { .. })
        }),
    )
    .await;
    assert!(
        matches!(scheduled.kind, EventKind::RestartScheduled { delay, .. } if delay == Duration::from_secs(7)),
        "{scheduled:?}"
    );
    let before = tokio::time::Instant::now();
    flaky.nth_spawned(2).await;
    assert!(before.elapsed() >= Duration::from_secs(7));
    outer.stop().await;
}

/// The status snapshot agrees with the event stream at every step of a crash and restart,
/// and lists members in start order (not alphabetical).
#[tokio::test(start_paused = true)]
async fn status_follows_the_event_stream() {
    let (zeta, alpha) = (
        FakeSupervisor::new("zeta").restart_policy(RestartPolicy {
            backoff: Backoff::fixed(Duration::from_secs(10)),
            ..at_once(RestartKind::Permanent)
        }),
        fake("alpha", RestartKind::Permanent),
    );
    let group = supervise_group(
        GroupSpec::new("g")
            .service(Arc::new(zeta.clone()))
            .service(Arc::new(alpha.clone())),
    )
    .unwrap();
    let mut events = group.events();
    let mut seen = Vec::new();
    group.ready().await.unwrap();
    let names: Vec<String> = group.status().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["g/zeta", "g/alpha"]);
    let backends: Vec<String> = group.backends().into_iter().map(|(n, _)| n).collect();
    assert_eq!(backends, ["g/zeta", "g/alpha"]);
    let first = zeta.nth_spawned(1).await;
    let row = |group: &ServiceHandle| group.status().into_iter().next().unwrap();
    assert_eq!(row(&group).state, MemberState::Running);
    assert_eq!(row(&group).pid, Some(first.pid()));

    first.exit(ExitStatus::Code(3));
    until(
        &mut events,
        &mut seen,
        "exited",
        is("g/zeta", |k| matches!(k, EventKind::Exited { .. })),
    )
    .await;
    until(
        &mut events,
        &mut seen,
        "scheduled",
        is("g/zeta", |k| {
            matches!(k, EventKind::RestartScheduled { .. })
        }),
    )
    .await;
    let now = row(&group);
    assert!(matches!(now.state, MemberState::Backoff), "{now:?}");
    assert_eq!(now.pid, None);
    assert_eq!(now.last_exit, Some(ExitStatus::Code(3)));
    assert_eq!(now.restarts, 1);
    assert!(group.backend_of("g/zeta").is_none());

    until(
        &mut events,
        &mut seen,
        "ready again",
        is("g/zeta", |k| matches!(k, EventKind::Ready { .. })),
    )
    .await;
    let second = zeta.nth_spawned(2).await;
    let now = row(&group);
    assert_eq!(now.state, MemberState::Running);
    assert_eq!(now.pid, Some(second.pid()));
    assert_eq!(now.restarts, 1);

    group.stop().await;
    assert!(group
        .status()
        .iter()
        .all(|m| m.state == MemberState::Stopped && m.pid.is_none()));
}

/// Events carry their time, print as one line, and a subscription starts from now.
#[tokio::test(start_paused = true)]
async fn events_have_times_one_line_displays_and_start_from_now() {
    let fake = FakeSupervisor::new("svc");
    fake.queue_spawn(FakeSpawn::ExitBeforeReady(ExitStatus::Code(1)));
    let service = supervise(Arc::new(fake.clone().restart_policy(RestartPolicy {
        retry_start_up: true,
        ..at_once(RestartKind::Permanent)
    })));
    let mut early = service.events();
    let mut seen = Vec::new();
    service.ready().await.unwrap();
    until(
        &mut early,
        &mut seen,
        "ready",
        is("svc", |k| matches!(k, EventKind::Ready { .. })),
    )
    .await;
    assert!(seen.windows(2).all(|w| w[0].at <= w[1].at));
    for event in &seen {
        let line = event.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains(" svc: "), "{line}");
    }
    let failed = seen
        .iter()
        .find(|e| matches!(e.kind, EventKind::StartFailed { .. }))
        .unwrap();
    assert!(
        failed
            .kind
            .to_string()
            .starts_with("start failed: the backend exited before it was ready (exit code 1)"),
        "{}",
        failed.kind
    );

    // A later subscriber sees only what happens after it subscribed.
    let mut late = service.events();
    fake.nth_spawned(2).await.crash();
    let first = tokio::time::timeout(DEADLINE, late.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(first.kind, EventKind::Exited { .. }),
        "the late subscriber got {first:?}"
    );
    service.stop().await;
}
