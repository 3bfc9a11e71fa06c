//! Groups with real demo daemons: start order, reverse stop order, strategies, significant
//! children and escalation.

mod support;

use std::sync::Arc;
use std::time::Duration;

use running_process::command::CommandSupervisor;
use running_process::supervision::{
    supervise_group, AutoShutdown, Event, EventKind, GroupSpec, Intensity, Outcome, RestartKind,
    ServiceHandle, Strategy,
};
use support::{collect_until, demo_spec, within};

fn member(
    name: &str,
    dir: &std::path::Path,
    extra: &[&str],
    kind: RestartKind,
) -> Arc<CommandSupervisor> {
    Arc::new(CommandSupervisor::new(
        demo_spec(name, dir, extra).restart(support::no_backoff(kind)),
    ))
}

/// A member that crashes `after_ms` after its start; ready once started, so the crash
/// never races the identity handshake (a first start that fails is not restarted).
fn crashing_member(
    name: &str,
    dir: &std::path::Path,
    after_ms: &str,
    kind: RestartKind,
) -> Arc<CommandSupervisor> {
    Arc::new(CommandSupervisor::new(
        demo_spec(name, dir, &["--crash-after-ms", after_ms])
            .readiness(running_process::command::Readiness::Started)
            .restart(support::no_backoff(kind)),
    ))
}

fn group(name: &str, dir: &std::path::Path, strategy: Strategy) -> GroupSpec {
    GroupSpec::new(name)
        .strategy(strategy)
        .service(member("a", dir, &[], RestartKind::Permanent))
        .service(member("b", dir, &[], RestartKind::Permanent))
        .service(member("c", dir, &[], RestartKind::Permanent))
}

fn names_of(seen: &[Event], pred: impl Fn(&EventKind) -> bool) -> Vec<String> {
    seen.iter()
        .filter(|e| pred(&e.kind))
        .map(|e| e.service.to_string())
        .collect()
}

fn pids(service: &ServiceHandle) -> Vec<u32> {
    ["g/a", "g/b", "g/c"]
        .iter()
        .map(|name| service.backend_of(name).expect(name).pid())
        .collect()
}

/// Kill `g/b` and return the events up to its restart being scheduled.
async fn kill_b(
    service: &ServiceHandle,
    events: &mut running_process::supervision::EventStream,
) -> Vec<Event> {
    service.backend_of("g/b").unwrap().force_kill().unwrap();
    collect_until(events, "b restarted", |e| {
        matches!(e.kind, EventKind::RestartScheduled { .. })
    })
    .await
}

#[tokio::test]
async fn children_start_in_order_and_stop_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let service =
        supervise_group(group("g", dir.path(), Strategy::OneForOne)).expect("a valid group spec");
    let mut events = service.events();
    let seen = collect_until(&mut events, "group ready", |e| {
        &*e.service == "g" && matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    assert_eq!(
        names_of(&seen, |k| matches!(
            k,
            EventKind::Ready { pid: Some(_), .. }
        )),
        ["g/a", "g/b", "g/c"]
    );
    // Each child is spawned only after the previous one is ready.
    let order: Vec<(String, bool)> = seen
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Spawned { .. } => Some((e.service.to_string(), false)),
            EventKind::Ready { pid: Some(_), .. } => Some((e.service.to_string(), true)),
            _ => None,
        })
        .collect();
    let expected: Vec<(String, bool)> = ["g/a", "g/b", "g/c"]
        .iter()
        .flat_map(|n| [(n.to_string(), false), (n.to_string(), true)])
        .collect();
    assert_eq!(order, expected);

    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    let seen = collect_until(&mut events, "group stopped", |e| {
        &*e.service == "g" && matches!(e.kind, EventKind::Stopped)
    })
    .await;
    assert_eq!(
        names_of(&seen, |k| matches!(k, EventKind::Stopped)),
        ["g/c", "g/b", "g/a", "g"]
    );
}

/// Kill `g/b` under `strategy`; check which members were stopped (in that order), which
/// were spawned again (in that order), and that exactly those got new PIDs.
async fn strategy_case(strategy: Strategy, stopped: &[&str], respawned: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let service = supervise_group(group("g", dir.path(), strategy)).expect("a valid group spec");
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    let before = pids(&service);
    kill_b(&service, &mut events).await;
    let last = *respawned.last().unwrap();
    let seen = collect_until(&mut events, "last restarted member ready", |e| {
        &*e.service == last && matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    assert_eq!(
        names_of(&seen, |k| matches!(k, EventKind::Stopped)),
        stopped,
        "{strategy:?}"
    );
    assert_eq!(
        names_of(&seen, |k| matches!(k, EventKind::Spawned { .. })),
        respawned,
        "{strategy:?}"
    );
    within("ready", service.ready()).await.unwrap();
    let after = pids(&service);
    for (i, name) in ["g/a", "g/b", "g/c"].iter().enumerate() {
        let changed = before[i] != after[i];
        assert_eq!(
            changed,
            respawned.contains(name),
            "{strategy:?}: {name} {before:?} {after:?}"
        );
    }
    // The status agrees: start order, every member running with its new pid, and a
    // restart counted for exactly the members the strategy restarted.
    let status = service.status();
    let rows: Vec<(&str, Option<u32>, u32)> = status
        .iter()
        .map(|m| (m.name.as_str(), m.pid, m.restarts))
        .collect();
    let expected: Vec<(&str, Option<u32>, u32)> = ["g/a", "g/b", "g/c"]
        .iter()
        .zip(&after)
        .map(|(name, pid)| (*name, Some(*pid), u32::from(respawned.contains(name))))
        .collect();
    assert_eq!(rows, expected, "{strategy:?}");
    assert!(status
        .iter()
        .all(|m| m.state == running_process::supervision::MemberState::Running));
    within("stop", service.stop()).await;
}

#[tokio::test]
async fn one_for_one_restarts_only_the_crashed_child() {
    strategy_case(Strategy::OneForOne, &[], &["g/b"]).await;
}

#[tokio::test]
async fn one_for_all_restarts_every_child() {
    // The others stop in reverse order, then all start again in order.
    strategy_case(Strategy::OneForAll, &["g/c", "g/a"], &["g/a", "g/b", "g/c"]).await;
}

#[tokio::test]
async fn rest_for_one_restarts_the_crashed_child_and_those_after_it() {
    strategy_case(Strategy::RestForOne, &["g/c"], &["g/b", "g/c"]).await;
}

#[tokio::test]
async fn a_significant_child_ending_stops_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GroupSpec::new("g")
        .auto_shutdown(AutoShutdown::AnySignificant)
        .service(member("helper", dir.path(), &[], RestartKind::Permanent))
        .significant_service(crashing_member(
            "main",
            dir.path(),
            "300",
            RestartKind::Temporary,
        ));
    let service = supervise_group(spec).expect("a valid group spec");
    let mut events = service.events();
    assert_eq!(
        within("outcome", service.outcome()).await,
        Outcome::Completed
    );
    let seen = collect_until(&mut events, "completed", |e| {
        &*e.service == "g" && matches!(e.kind, EventKind::Completed)
    })
    .await;
    assert!(
        names_of(&seen, |k| matches!(k, EventKind::Stopped)).contains(&"g/helper".to_owned()),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_nested_group_that_gives_up_escalates_to_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let inner = GroupSpec::new("inner")
        .intensity(Intensity::new(1, Duration::from_secs(600)))
        .service(crashing_member(
            "crashy",
            dir.path(),
            "50",
            RestartKind::Permanent,
        ));
    let outer = GroupSpec::new("outer")
        .intensity(Intensity::new(0, Duration::from_secs(600)))
        .service(member("steady", dir.path(), &[], RestartKind::Permanent))
        .group(inner, RestartKind::Permanent);
    let service = supervise_group(outer).expect("a valid group spec");
    let mut events = service.events();
    let seen = collect_until(&mut events, "outer gave up", |e| {
        &*e.service == "outer" && matches!(e.kind, EventKind::GaveUp { .. })
    })
    .await;
    assert!(
        names_of(&seen, |k| matches!(k, EventKind::GaveUp { .. }))
            .starts_with(&["outer/inner".to_owned()]),
        "{seen:?}"
    );
    assert_matches!(
        within("outcome", service.outcome()).await,
        Outcome::GaveUp(_)
    );
    assert!(service.backends().is_empty(), "everything stopped");
}
