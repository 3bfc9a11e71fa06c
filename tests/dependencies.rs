//! The one group engine: dependencies with conditions in a plain library group (no file),
//! rest_for_one over a diamond of dependencies, a failed dependency blocking its
//! dependants, stop by dependency level, and dynamic membership (add, remove, replace,
//! scale replicas) with the strategy and one intensity over all of it. Fake backends under
//! tokio's paused time: the logic, not the processes (tests/compose.rs and tests/cli.rs
//! run the same engine with real ones; the last test here does too).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use running_process::supervision::{
    supervise_group, Condition, Event, EventKind, EventStream, GroupSpec, GroupSpecError,
    HealthPolicy, Intensity, Member, MemberError, MemberState, Outcome, RestartKind, ServiceHandle,
    SharedSupervisor, StartOrder, Strategy,
};
use running_process::testing::fake::{FakeSpawn, FakeSupervisor};
use running_process::ExitStatus;

mod support;

use support::no_backoff as at_once;

/// Virtual time a test may wait for one event (free under paused time).
const DEADLINE: Duration = Duration::from_secs(3600);

fn fake(name: &str) -> FakeSupervisor {
    FakeSupervisor::new(name).restart_policy(at_once(RestartKind::Permanent))
}

fn member(fake: &FakeSupervisor) -> Member {
    Member::service(Arc::new(fake.clone()))
}

/// Every event read so far, and a wait for the next one that matches.
struct Seen {
    events: EventStream,
    seen: Vec<Event>,
}

impl Seen {
    /// The events from now on: the first `events()` call of a handle gets every event
    /// since the start, so what is already buffered is skipped.
    fn new(handle: &ServiceHandle) -> Seen {
        use futures::FutureExt;
        let mut events = handle.events();
        while let Some(Some(_)) = events.next().now_or_never() {}
        Seen {
            events,
            seen: Vec::new(),
        }
    }

    /// The index of the first event at or after `from` that matches, waiting for it.
    async fn wait(&mut self, from: usize, what: &str, pred: impl Fn(&Event) -> bool) -> usize {
        if let Some(i) = self.seen.iter().skip(from).position(&pred) {
            return from + i;
        }
        let wait = async {
            loop {
                match self.events.next().await {
                    Some(Ok(event)) => {
                        self.seen.push(event.clone());
                        if pred(&event) {
                            return self.seen.len() - 1;
                        }
                    }
                    Some(Err(lagged)) => panic!("{what}: {lagged}"),
                    None => panic!("{what}: the stream ended; seen {:#?}", self.seen),
                }
            }
        };
        match tokio::time::timeout(DEADLINE, wait).await {
            Ok(i) => i,
            Err(_) => panic!("{what}: not within {DEADLINE:?}; seen {:#?}", self.seen),
        }
    }

    /// Index of the first matching event already read, if any.
    fn find(&self, pred: impl Fn(&Event) -> bool) -> Option<usize> {
        self.seen.iter().position(pred)
    }
}

fn is(service: &str, pred: impl Fn(&EventKind) -> bool) -> impl Fn(&Event) -> bool {
    let service = service.to_owned();
    move |e| *e.service == *service && pred(&e.kind)
}

fn spawned(e: &EventKind) -> bool {
    matches!(e, EventKind::Spawned { .. })
}

fn ready(e: &EventKind) -> bool {
    matches!(e, EventKind::Ready { pid: Some(_), .. })
}

fn stopped(e: &EventKind) -> bool {
    matches!(e, EventKind::Stopped)
}

fn row(handle: &ServiceHandle, name: &str) -> running_process::supervision::MemberStatus {
    handle
        .status()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no member {name}: {:#?}", handle.status()))
}

/// `started`, `ready`, `healthy` and `completed_successfully` in a library group, with no
/// service file: each dependant starts at its condition and not before.
#[tokio::test(start_paused = true)]
async fn dependency_conditions_in_a_library_group() {
    let db = fake("db").health_policy(HealthPolicy {
        interval: Duration::from_secs(10),
        failures_before_unhealthy: 1000,
        ..HealthPolicy::default()
    });
    db.queue_spawn(FakeSpawn::ReadyAfter(Duration::from_secs(30)));
    let migrate = fake("migrate").restart_policy(at_once(RestartKind::Transient));
    let (watcher, api, reporting) = (fake("watcher"), fake("api"), fake("reporting"));
    let group = supervise_group(
        GroupSpec::new("g")
            .order(StartOrder::Parallel)
            .member(member(&db))
            .member(member(&watcher).depends_on("db", Condition::Started))
            .member(member(&migrate).depends_on("db", Condition::Ready))
            .member(member(&api).depends_on("db", Condition::Healthy))
            .member(
                member(&reporting)
                    .depends_on("migrate", Condition::CompletedSuccessfully)
                    .depends_on("api", Condition::Ready),
            ),
    )
    .unwrap();
    let mut seen = Seen::new(&group);
    let db_spawned = seen.wait(0, "db spawned", is("g/db", spawned)).await;
    // Started: the watcher goes as soon as db's process exists, long before it is ready.
    let watcher_spawned = seen
        .wait(0, "watcher spawned", is("g/watcher", spawned))
        .await;
    let db_ready = seen.wait(0, "db ready", is("g/db", ready)).await;
    assert!(db_spawned < watcher_spawned && watcher_spawned < db_ready);
    assert_eq!(row(&group, "g/api").state, MemberState::Waiting);
    assert_eq!(
        row(&group, "g/api").detail.as_deref(),
        Some("waiting for db healthy")
    );
    // Ready: migrate after db's readiness; it runs to completion (exit 0).
    let migrate_spawned = seen
        .wait(0, "migrate spawned", is("g/migrate", spawned))
        .await;
    assert!(migrate_spawned > db_ready);
    migrate.nth_spawned(1).await.exit(ExitStatus::Code(0));
    seen.wait(
        0,
        "migrate completed",
        is("g/migrate", |k| matches!(k, EventKind::Completed)),
    )
    .await;
    // Healthy: api only after db's first passing check.
    let healthy = seen
        .wait(
            0,
            "db healthy",
            is("g/db", |k| matches!(k, EventKind::Healthy { .. })),
        )
        .await;
    let api_spawned = seen.wait(0, "api spawned", is("g/api", spawned)).await;
    assert!(api_spawned > healthy);
    // completed_successfully and ready together: reporting after both.
    let api_ready = seen.wait(0, "api ready", is("g/api", ready)).await;
    let reporting_spawned = seen
        .wait(0, "reporting spawned", is("g/reporting", spawned))
        .await;
    assert!(reporting_spawned > api_ready);
    group.ready().await.unwrap();
    assert_eq!(row(&group, "g/migrate").state, MemberState::Finished);
    assert_eq!(group.stop().await, Outcome::Stopped);
}

/// The diamond db <- {cache, api} <- web, plus an independent member. rest_for_one on a
/// crash of db: exactly its dependants are stopped (web before cache and api), db
/// restarts, then cache and api once db is ready, then web once both are; the
/// independent member is untouched.
#[tokio::test(start_paused = true)]
#[allow(clippy::too_many_lines)] // the expected event order of one scenario, step by step
async fn rest_for_one_over_a_diamond_restarts_exactly_the_dependants_in_order() {
    let (db, cache, api, web, lone) = (
        fake("db"),
        fake("cache"),
        fake("api"),
        fake("web"),
        fake("lone"),
    );
    let group = supervise_group(
        GroupSpec::new("g")
            .order(StartOrder::Parallel)
            .strategy(Strategy::RestForOne)
            .member(member(&db))
            .member(member(&cache).depends_on("db", Condition::Ready))
            .member(member(&api).depends_on("db", Condition::Ready))
            .member(
                member(&web)
                    .depends_on("cache", Condition::Ready)
                    .depends_on("api", Condition::Ready),
            )
            .member(member(&lone)),
    )
    .unwrap();
    group.ready().await.unwrap();
    let mut seen = Seen::new(&group);
    db.queue_spawn(FakeSpawn::ReadyAfter(Duration::from_secs(5)));
    db.nth_spawned(1).await.crash();
    let strategy = seen
        .wait(
            0,
            "strategy restart",
            is("g/db", |k| matches!(k, EventKind::StrategyRestart { .. })),
        )
        .await;
    let EventKind::StrategyRestart {
        members,
        strategy: used,
    } = &seen.seen[strategy].kind
    else {
        unreachable!()
    };
    assert_eq!(*used, Strategy::RestForOne);
    assert_eq!(members, &["g/cache", "g/api", "g/web"]);
    let web_stopped = seen.wait(0, "web stopped", is("g/web", stopped)).await;
    let cache_stopped = seen.wait(0, "cache stopped", is("g/cache", stopped)).await;
    let api_stopped = seen.wait(0, "api stopped", is("g/api", stopped)).await;
    assert!(
        web_stopped < cache_stopped && web_stopped < api_stopped,
        "dependants first"
    );
    let db_spawned = seen.wait(0, "db spawned again", is("g/db", spawned)).await;
    assert!(
        db_spawned > cache_stopped && db_spawned > api_stopped,
        "then the member"
    );
    let db_ready = seen
        .wait(db_spawned, "db ready again", is("g/db", ready))
        .await;
    let cache_spawned = seen
        .wait(0, "cache spawned again", is("g/cache", spawned))
        .await;
    let api_spawned = seen
        .wait(0, "api spawned again", is("g/api", spawned))
        .await;
    assert!(
        cache_spawned > db_ready && api_spawned > db_ready,
        "then its dependants"
    );
    let cache_ready = seen
        .wait(cache_spawned, "cache ready", is("g/cache", ready))
        .await;
    let api_ready = seen
        .wait(api_spawned, "api ready", is("g/api", ready))
        .await;
    let web_spawned = seen
        .wait(0, "web spawned again", is("g/web", spawned))
        .await;
    assert!(web_spawned > cache_ready && web_spawned > api_ready);
    group.ready().await.unwrap();
    assert_eq!(
        lone.spawned().len(),
        1,
        "the independent member kept running"
    );
    assert!(seen.find(is("g/lone", stopped)).is_none());
    for (fake, runs) in [(&db, 2), (&cache, 2), (&api, 2), (&web, 2)] {
        assert_eq!(fake.spawned().len(), runs);
    }
    // Only db's own restart counts; the dependants were restarted with it.
    assert_eq!(row(&group, "g/db").restarts, 1);
    group.stop().await;
}

/// A plain ordered group is the diamond's special case: rest_for_one restarts the later
/// members (OTP's rule), one by one in order.
#[tokio::test(start_paused = true)]
async fn in_a_sequential_group_the_dependants_are_the_later_members() {
    let (a, b, c) = (fake("a"), fake("b"), fake("c"));
    let group = supervise_group(
        GroupSpec::new("g")
            .strategy(Strategy::RestForOne)
            .service(Arc::new(a.clone()))
            .service(Arc::new(b.clone()))
            .service(Arc::new(c.clone())),
    )
    .unwrap();
    group.ready().await.unwrap();
    let mut seen = Seen::new(&group);
    b.nth_spawned(1).await.crash();
    let c_ready = seen.wait(0, "c ready again", is("g/c", ready)).await;
    let b_ready = seen.wait(0, "b ready again", is("g/b", ready)).await;
    assert!(b_ready < c_ready);
    assert_eq!(
        (a.spawned().len(), b.spawned().len(), c.spawned().len()),
        (1, 2, 2)
    );
    group.stop().await;
}

/// A dependency that ends without reaching its condition blocks its dependant (state,
/// detail, event); starting the dependency again unblocks it.
#[tokio::test(start_paused = true)]
async fn a_failed_dependency_blocks_its_dependants_until_it_succeeds() {
    let migrate = fake("migrate").restart_policy(at_once(RestartKind::Temporary));
    let app = fake("app");
    let group = supervise_group(
        GroupSpec::new("g")
            .order(StartOrder::Parallel)
            .member(member(&migrate))
            .member(member(&app).depends_on("migrate", Condition::CompletedSuccessfully)),
    )
    .unwrap();
    let mut seen = Seen::new(&group);
    migrate.nth_spawned(1).await.exit(ExitStatus::Code(4));
    let blocked = seen
        .wait(
            0,
            "app blocked",
            is("g/app", |k| matches!(k, EventKind::Blocked { .. })),
        )
        .await;
    assert_eq!(
        seen.seen[blocked].to_string().split_once(' ').unwrap().1,
        "g/app: blocked: migrate ended without becoming completed_successfully"
    );
    let app_row = row(&group, "g/app");
    assert_eq!(app_row.state, MemberState::Blocked);
    assert_eq!(
        app_row.detail.as_deref(),
        Some("migrate ended without becoming completed_successfully")
    );
    assert_eq!(app.spawn_attempts(), 0);
    // Run migrate again; this time it succeeds, and app starts by itself.
    assert!(group.start_member("migrate").await.unwrap());
    migrate.nth_spawned(2).await.exit(ExitStatus::Code(0));
    seen.wait(blocked, "app ready", is("g/app", ready)).await;
    assert_eq!(row(&group, "g/app").state, MemberState::Running);
    group.stop().await;
}

/// Stop is level by level: dependants first, what they depend on last; members of one
/// level stop together.
#[tokio::test(start_paused = true)]
async fn stop_goes_level_by_level_dependants_first() {
    let (db, cache, api, web) = (fake("db"), fake("cache"), fake("api"), fake("web"));
    let group = supervise_group(
        GroupSpec::new("g")
            .order(StartOrder::Parallel)
            .member(
                member(&web)
                    .depends_on("api", Condition::Ready)
                    .depends_on("cache", Condition::Ready),
            )
            .member(member(&api).depends_on("db", Condition::Ready))
            .member(member(&cache).depends_on("db", Condition::Ready))
            .member(member(&db)),
    )
    .unwrap();
    group.ready().await.unwrap();
    let mut seen = Seen::new(&group);
    group.stop().await;
    let at = |seen: &Seen, name: &str| seen.find(is(name, stopped)).unwrap();
    seen.wait(0, "db stopped", is("g/db", stopped)).await;
    let (web, api, cache, db) = (
        at(&seen, "g/web"),
        at(&seen, "g/api"),
        at(&seen, "g/cache"),
        at(&seen, "g/db"),
    );
    assert!(web < api && web < cache && api < db && cache < db);
    // api and cache stop together: both begin before either ends.
    let stopping = |name: &str| {
        seen.find(is(name, |k| matches!(k, EventKind::Stopping)))
            .unwrap()
    };
    assert!(stopping("g/api") < cache && stopping("g/cache") < api);
}

/// Validation: an unknown dependency, a cycle, a condition that can never be reached.
#[test]
fn bad_dependencies_are_refused_before_anything_starts() {
    let refused = |spec: GroupSpec| spec.validate().unwrap_err();
    let error =
        refused(GroupSpec::new("g").member(member(&fake("a")).depends_on("b", Condition::Ready)));
    assert!(
        matches!(error, GroupSpecError::UnknownDependency { .. }),
        "{error}"
    );
    let error = refused(
        GroupSpec::new("g")
            .member(member(&fake("a")).depends_on("b", Condition::Ready))
            .member(member(&fake("b")).depends_on("a", Condition::Started)),
    );
    assert_eq!(error.to_string(), "group g: dependency cycle a -> b -> a");
    let error = refused(
        GroupSpec::new("g")
            .member(member(&fake("a")))
            .member(member(&fake("b")).depends_on("a", Condition::Healthy)),
    );
    assert!(
        error.to_string().contains("it has no health check"),
        "{error}"
    );
    let error = refused(
        GroupSpec::new("g")
            .member(member(&fake("a")))
            .member(member(&fake("b")).depends_on("a", Condition::CompletedSuccessfully)),
    );
    assert!(error.to_string().contains("permanent"), "{error}");
}

/// Add, replace and remove members of a running rest_for_one group: each change applies
/// the strategy to the member's dependants, and the group's one intensity counts every
/// restart, whatever member it is.
#[tokio::test(start_paused = true)]
async fn add_replace_and_remove_members_of_a_running_group() {
    let (db, api, worker) = (fake("db"), fake("api"), fake("worker"));
    let group = supervise_group(
        GroupSpec::new("g")
            .order(StartOrder::Parallel)
            .strategy(Strategy::RestForOne)
            .member(member(&db))
            .member(member(&api).depends_on("db", Condition::Ready)),
    )
    .unwrap();
    group.ready().await.unwrap();
    let mut seen = Seen::new(&group);

    // start_child: with a dependency on a running member, it starts at once.
    group
        .add_member(member(&worker).depends_on("api", Condition::Ready))
        .await
        .unwrap();
    seen.wait(
        0,
        "worker added",
        is("g/worker", |k| matches!(k, EventKind::MemberAdded)),
    )
    .await;
    seen.wait(0, "worker ready", is("g/worker", ready)).await;
    let taken = group.add_member(member(&fake("worker"))).await.unwrap_err();
    assert!(
        matches!(
            taken,
            MemberError::Invalid(GroupSpecError::DuplicateName { .. })
        ),
        "{taken}"
    );
    let unknown = group
        .add_member(member(&fake("x")).depends_on("nope", Condition::Ready))
        .await;
    assert!(matches!(
        unknown,
        Err(MemberError::Invalid(
            GroupSpecError::UnknownDependency { .. }
        ))
    ));

    // A new spec for db: api and worker (its dependants) stop first, then db; the new db
    // starts, then api, then worker.
    let new_db = fake("db");
    let from = seen.seen.len();
    group.replace_member(member(&new_db)).await.unwrap();
    let worker_stopped = seen
        .wait(from, "worker stopped", is("g/worker", stopped))
        .await;
    let api_stopped = seen.wait(from, "api stopped", is("g/api", stopped)).await;
    let db_stopped = seen.wait(from, "old db stopped", is("g/db", stopped)).await;
    assert!(worker_stopped < api_stopped && api_stopped < db_stopped);
    let new_ready = seen.wait(from, "new db ready", is("g/db", ready)).await;
    let worker_ready = seen
        .wait(new_ready, "worker ready again", is("g/worker", ready))
        .await;
    let api_ready = seen
        .wait(new_ready, "api ready again", is("g/api", ready))
        .await;
    assert!(api_ready < worker_ready);
    assert_eq!((db.spawned().len(), new_db.spawned().len()), (1, 1));
    assert!(!db.spawned()[0].is_alive(), "the old instance was stopped");

    // delete_child: api goes; worker (its dependant) is stopped and blocked, db runs on.
    let from = seen.seen.len();
    group.remove_member("api").await.unwrap();
    seen.wait(
        from,
        "api removed",
        is("g/api", |k| matches!(k, EventKind::MemberRemoved)),
    )
    .await;
    seen.wait(
        from,
        "worker blocked",
        is("g/worker", |k| matches!(k, EventKind::Blocked { .. })),
    )
    .await;
    assert!(group.status().iter().all(|m| m.name != "g/api"));
    assert_eq!(row(&group, "g/worker").state, MemberState::Blocked);
    assert_eq!(row(&group, "g/db").state, MemberState::Running);
    assert!(matches!(
        group.remove_member("api").await,
        Err(MemberError::NoSuchMember { .. })
    ));
    group.stop().await;
}

/// Replicas: one instance named `w`, scaled to three (`w-1` is the same process, renamed;
/// `w-2` and `w-3` are made with their instance numbers), then back to one (`w` again,
/// still the same process). A dependant of `w` waits for every instance.
#[tokio::test(start_paused = true)]
async fn replicas_scale_one_to_three_to_one_with_instance_numbers() {
    // Every supervisor made, with its instance number (validation may make one too, to
    // look at instance 1's policies: only those that spawned count).
    let made: Arc<Mutex<Vec<(u32, FakeSupervisor)>>> = Arc::default();
    let make = {
        let made = made.clone();
        move |n: u32| -> SharedSupervisor {
            let fake = fake("w");
            made.lock().unwrap().push((n, fake.clone()));
            Arc::new(fake)
        }
    };
    let running = |made: &Mutex<Vec<(u32, FakeSupervisor)>>| -> Vec<(u32, FakeSupervisor)> {
        made.lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| !f.spawned().is_empty())
            .cloned()
            .collect()
    };
    let front = fake("front");
    let group = supervise_group(
        GroupSpec::new("g")
            .order(StartOrder::Parallel)
            .member(Member::replicas("w", 1, make))
            .member(member(&front).depends_on("w", Condition::Ready)),
    )
    .unwrap();
    group.ready().await.unwrap();
    let names = |group: &ServiceHandle| -> Vec<String> {
        group.status().into_iter().map(|m| m.name).collect()
    };
    assert_eq!(names(&group), ["g/w", "g/front"]);
    let first_pid = row(&group, "g/w").pid.unwrap();

    assert!(group.scale("w", 3).await.unwrap());
    group.ready().await.unwrap();
    assert_eq!(names(&group), ["g/w-1", "g/w-2", "g/w-3", "g/front"]);
    assert_eq!(
        row(&group, "g/w-1").pid,
        Some(first_pid),
        "instance 1 kept running"
    );
    let numbers: Vec<u32> = running(&made).iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(group.backend_of("g/w-3").is_some());

    // Instance 1 crashes: it restarts under its new name.
    let mut seen = Seen::new(&group);
    running(&made)[0].1.spawned()[0].crash();
    seen.wait(0, "w-1 ready again", is("g/w-1", ready)).await;

    assert!(group.scale("g/w", 1).await.unwrap());
    assert_eq!(names(&group), ["g/w", "g/front"]);
    assert!(!group.scale("w", 1).await.unwrap(), "already one");
    let w = row(&group, "g/w");
    assert_eq!(w.state, MemberState::Running);
    let gone: Vec<bool> = running(&made)[1..]
        .iter()
        .map(|(_, f)| f.spawned()[0].is_alive())
        .collect();
    assert_eq!(gone, [false, false], "w-2 and w-3 were stopped");
    assert_eq!(
        front.spawned().len(),
        1,
        "scaling is no failure: front kept running"
    );
    assert!(matches!(
        group.scale("front", 2).await,
        Err(MemberError::NotReplicated { .. })
    ));
    group.stop().await;
}

/// The group's one intensity counts restarts of a member it started with, of an added
/// member and of a replica alike: the third of max 2 gives up.
#[tokio::test(start_paused = true)]
async fn one_intensity_counts_every_restart_whatever_the_member() {
    let (a, added) = (fake("a"), fake("added"));
    let replica = fake("r");
    let replica_make = {
        let replica = replica.clone();
        move |_| -> SharedSupervisor { Arc::new(replica.clone()) }
    };
    let group = supervise_group(
        GroupSpec::new("g")
            .order(StartOrder::Parallel)
            .intensity(Intensity::new(2, Duration::from_secs(600)))
            .member(member(&a))
            .member(Member::replicas("r", 2, replica_make)),
    )
    .unwrap();
    group.ready().await.unwrap();
    group.add_member(member(&added)).await.unwrap();
    group.ready().await.unwrap();
    let mut seen = Seen::new(&group);
    a.nth_spawned(1).await.crash();
    seen.wait(0, "a ready again", is("g/a", ready)).await;
    added.nth_spawned(1).await.crash();
    seen.wait(0, "added ready again", is("g/added", ready))
        .await;
    replica.nth_spawned(1).await.crash();
    let outcome = group.outcome().await;
    assert!(
        matches!(outcome, Outcome::GaveUp(limit) if limit.max_restarts == 2),
        "{outcome}"
    );
}

/// A wide parallel start is bounded: never more than `max_concurrent_starts` members are
/// being started at once; the others go as starts finish, and all get there.
#[tokio::test(start_paused = true)]
async fn starts_at_once_are_bounded() {
    let fakes: Vec<FakeSupervisor> = (0..6).map(|i| fake(&format!("m{i}"))).collect();
    for fake in &fakes {
        fake.queue_spawn(FakeSpawn::ReadyAfter(Duration::from_secs(10)));
    }
    let spec = fakes.iter().fold(
        GroupSpec::new("g")
            .order(StartOrder::Parallel)
            .max_concurrent_starts(2),
        |spec, fake| spec.member(member(fake)),
    );
    let group = supervise_group(spec).unwrap();
    let mut events = group.events();
    let (mut starting, mut most, mut ready) = (0i32, 0i32, 0);
    while ready < fakes.len() {
        let event = tokio::time::timeout(DEADLINE, events.next())
            .await
            .expect("an event")
            .expect("the stream")
            .expect("no lag");
        match event.kind {
            EventKind::Starting if &*event.service != "g" => starting += 1,
            EventKind::Ready { pid: Some(_), .. } => {
                starting -= 1;
                ready += 1;
            }
            _ => {}
        }
        most = most.max(starting);
    }
    assert_eq!(most, 2, "two at a time");
    group.ready().await.unwrap();
    group.stop().await;
}
