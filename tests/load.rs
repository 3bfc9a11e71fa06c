//! Load with real processes and sockets: a hundred supervised daemons SIGKILLed at once,
//! a thousand concurrent probes, a thousand connections that never say a word.
//! Every wait is for an event or an answer under the shared generous deadline; nothing
//! measures time.

#![cfg(target_os = "linux")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use running_process::command::CommandSupervisor;
use running_process::supervision::{
    supervise_group, EventKind, GroupSpec, Intensity, Outcome, RestartKind,
};
use running_process::{BackendHandle, ExitStatus, ProbeOptions};
use support::{collect_until, demo_spec, wait_gone, within, DemoDaemon};
use tokio::io::AsyncWriteExt;

const DAEMONS: usize = 100;
const PROBES: usize = 1000;
const SILENT: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_daemons_killed_at_once_are_all_restarted_and_verified() {
    let dir = support::runtime_tempdir();
    let policy = support::no_backoff(RestartKind::Permanent);
    let names: Vec<String> = (0..DAEMONS).map(|i| format!("d{i:03}")).collect();
    // Exactly one restart each is tolerated: a missed or doubled restart changes the count,
    // and one more than a hundred gives up.
    let mut group =
        GroupSpec::new("many").intensity(Intensity::new(DAEMONS as u32, Duration::from_secs(3600)));
    for name in &names {
        group = group.service(Arc::new(CommandSupervisor::new(
            demo_spec(name, dir.path(), &[]).restart(policy.clone()),
        )));
    }
    let service = supervise_group(group).expect("a valid group spec");
    let mut events = service.events();
    collect_until(&mut events, "all started", |e| {
        &*e.service == "many" && matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    let before: BTreeMap<String, BackendHandle> = service.backends().into_iter().collect();
    assert_eq!(before.len(), DAEMONS);

    for backend in before.values() {
        backend.force_kill().unwrap(); // SIGKILL through each pidfd, back to back
    }
    let mut waiting: BTreeSet<&str> = before.keys().map(String::as_str).collect();
    let seen = collect_until(&mut events, "every member ready again", |e| {
        if let EventKind::Ready { pid: Some(pid), .. } = e.kind {
            if before.get(&*e.service).is_some_and(|old| old.pid() != pid) {
                waiting.remove(&*e.service);
            }
        }
        waiting.is_empty()
    })
    .await;
    let count = |pred: fn(&EventKind) -> bool| seen.iter().filter(|e| pred(&e.kind)).count();
    let killed = count(|k| {
        matches!(
            k,
            EventKind::Exited {
                status: ExitStatus::Signal(9),
                ..
            }
        )
    });
    let restarts = count(|k| matches!(k, EventKind::RestartScheduled { .. }));
    let spawns = count(|k| matches!(k, EventKind::Spawned { .. }));
    let failed = count(|k| matches!(k, EventKind::StartFailed { .. }));
    eprintln!(
        "{DAEMONS} SIGKILLed at once: {killed} exits seen, {restarts} restarts, {spawns} spawns, \
         {failed} failed starts"
    );
    assert_eq!(
        (killed, restarts, spawns, failed),
        (DAEMONS, DAEMONS, DAEMONS, 0)
    );

    within("the group is ready", service.ready()).await.unwrap();
    let after: BTreeMap<String, BackendHandle> = service.backends().into_iter().collect();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    let before = &before;
    let pings = after.iter().map(|(name, backend)| async move {
        assert_ne!(backend.pid(), before[name].pid(), "{name} has a new pid");
        assert!(!before[name].is_alive());
        backend.ping(support::DEADLINE).await.is_ok()
    });
    let answered = within("ping all", futures::future::join_all(pings))
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    eprintln!("{answered} of {DAEMONS} replacements answered a ping");
    assert_eq!(answered, DAEMONS);

    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    for backend in after.values() {
        wait_gone(backend.pid()).await;
    }
}

/// Run `n` identity probes of `daemon` at once, each in its own task; how many succeeded.
async fn probe_concurrently(daemon: &DemoDaemon, n: usize) -> usize {
    let options = ProbeOptions::default().timeout(support::DEADLINE);
    let probes: Vec<_> = (0..n)
        .map(|_| {
            let (endpoint, claim, options) =
                (daemon.endpoint.clone(), daemon.claim(), options.clone());
            tokio::spawn(async move {
                BackendHandle::probe_with_options(&endpoint, &claim, None, &options)
                    .await
                    .map(drop)
            })
        })
        .collect();
    let results = within("all probes", futures::future::join_all(probes)).await;
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|joined| joined.unwrap().err().map(|e| e.to_string()))
        .collect();
    if let Some(first) = errors.first() {
        eprintln!("{} probes failed, the first: {first}", errors.len());
    }
    n - errors.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_probes_are_all_answered() {
    let daemon = DemoDaemon::start(&[]).await;
    let answered = probe_concurrently(&daemon, PROBES).await;
    let handle = BackendHandle::probe(&daemon.endpoint, &daemon.claim())
        .await
        .expect("still verified afterwards");
    within("ping after", handle.ping(support::DEADLINE))
        .await
        .unwrap();
    eprintln!("{answered} of {PROBES} concurrent probes answered; ping after: answered");
    assert_eq!(answered, PROBES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_connections_do_not_stop_probes_being_answered() {
    let daemon = DemoDaemon::start(&[]).await;
    let socket = daemon.socket_path();
    // Half say nothing at all (the responder's first-bytes wait); half send the control
    // magic and the start of a header, then nothing (its control idle wait).
    let mut silent = Vec::with_capacity(SILENT);
    for i in 0..SILENT {
        let mut stream = within("connect", tokio::net::UnixStream::connect(&socket))
            .await
            .unwrap();
        if i % 2 == 1 {
            stream.write_all(b"\0RPD\x01").await.unwrap();
        }
        silent.push(stream);
    }
    // The daemon accepts in order, so each probe below is accepted after all the silent
    // connections, which this test holds open throughout: the probes are answered while
    // a thousand connections the daemon has accepted are open and silent.
    let answered = probe_concurrently(&daemon, 100).await;
    let handle = BackendHandle::probe(&daemon.endpoint, &daemon.claim())
        .await
        .expect("verified while the silent connections are open");
    within("ping during", handle.ping(support::DEADLINE))
        .await
        .unwrap();
    eprintln!("{SILENT} silent connections open: {answered} of 100 probes answered, ping answered");
    assert_eq!(answered, 100);
    drop(silent);
    within("ping after", handle.ping(support::DEADLINE))
        .await
        .unwrap();
    assert!(handle.is_alive());
}
