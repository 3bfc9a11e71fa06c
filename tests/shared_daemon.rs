//! Sixteen separate processes ask for the same shared daemon at once: exactly one daemon
//! is spawned and all sixteen get a verified handle to it. Then the daemon is killed and the
//! race is run again over the stale manifest.

#![cfg(any(target_os = "linux", windows))]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use running_process::protocol::CacheManifest;
use running_process::BackendHandle;
use support::{wait_gone, within};

const CALLERS: usize = 16;

/// Start `CALLERS` processes at once; return (pid each reported, how many spawned, time
/// until the last one had its handle).
async fn race(dir: &Path) -> (BTreeSet<u32>, usize, Duration) {
    let binary = support::example_path("shared_daemon");
    // Each caller writes to files, not pipes: on Windows the daemon a caller spawns inherits
    // every inheritable handle of that caller (its standard output too), so a pipe would
    // stay open, and its reader waiting, until the daemon exits.
    let outputs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let runs: Vec<_> = (0..CALLERS)
        .map(|n| {
            let out = std::fs::File::create(outputs.path().join(format!("{n}.out"))).unwrap();
            let err = std::fs::File::create(outputs.path().join(format!("{n}.err"))).unwrap();
            let mut caller = tokio::process::Command::new(&binary);
            caller.arg("--dir").arg(dir).stdout(out).stderr(err);
            async move { caller.status().await }
        })
        .collect();
    let statuses = within("all callers finish", futures::future::join_all(runs)).await;
    let took = started.elapsed();
    let mut pids = BTreeSet::new();
    let mut spawned = 0;
    for (n, status) in statuses.into_iter().enumerate() {
        let status = status.expect("caller ran");
        let read =
            |ext: &str| std::fs::read_to_string(outputs.path().join(format!("{n}.{ext}"))).unwrap();
        let text = read("out");
        assert!(status.success(), "caller failed: {text} {}", read("err"));
        let mut words = text.split_whitespace();
        assert_eq!(words.next(), Some("pid"), "{text}");
        pids.insert(words.next().unwrap().parse::<u32>().unwrap());
        match words.next() {
            Some("spawned") => spawned += 1,
            Some("adopted") => {}
            other => panic!("unexpected {other:?} in {text}"),
        }
    }
    (pids, spawned, took)
}

async fn verified(dir: &Path) -> BackendHandle {
    let manifest = CacheManifest::read(dir.join("shared.json"))
        .await
        .unwrap()
        .unwrap();
    BackendHandle::try_from_manifest(&manifest)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn sixteen_processes_end_up_with_exactly_one_daemon() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shared");

    let (pids, spawned, took) = race(&dir).await;
    eprintln!("fresh: {CALLERS} callers, {spawned} spawn(s), all had a handle after {took:?}");
    assert_eq!(spawned, 1, "exactly one caller spawns");
    assert_eq!(pids.len(), 1, "everyone got the same daemon: {pids:?}");
    let daemon = verified(&dir).await;
    assert_eq!(Some(&daemon.pid()), pids.first());

    // Kill it: the manifest now names a dead process.
    daemon.force_kill().unwrap();
    within("killed", daemon.exited()).await;
    let (again, spawned, took) = race(&dir).await;
    eprintln!(
        "stale manifest: {CALLERS} callers, {spawned} spawn(s), all had a handle after {took:?}"
    );
    assert_eq!(
        spawned, 1,
        "the stale daemon is never adopted; one new spawn"
    );
    assert_eq!(again.len(), 1, "{again:?}");
    assert_ne!(again.first(), pids.first());

    let daemon = verified(&dir).await;
    let pid = daemon.pid();
    daemon.stop(support::DEADLINE).await.unwrap();
    wait_gone(pid).await;
}

#[tokio::test]
async fn a_daemon_from_another_executable_is_reused_refused_or_replaced_by_policy() {
    use running_process::command::{Acquired, DigestPolicy, SharedDaemon, SharedError};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shared");
    let first = SharedDaemon::new(support::demo_spec("shared", &dir, &[]))
        .unwrap()
        .acquire()
        .await
        .unwrap();
    assert_matches!(first, Acquired::Spawned(_));
    let running = first.into_handle();
    let mut other = running.daemon().exe_sha256;
    other[0] ^= 0xff; // "the app was upgraded": we expect another build

    let reused = SharedDaemon::new(support::demo_spec("shared", &dir, &[]))
        .unwrap()
        .expect_digest(other, DigestPolicy::Reuse)
        .acquire()
        .await
        .unwrap();
    assert_matches!(&reused, Acquired::Adopted(h) if h.pid() == running.pid());

    let refused = SharedDaemon::new(support::demo_spec("shared", &dir, &[]))
        .unwrap()
        .expect_digest(other, DigestPolicy::Refuse)
        .acquire()
        .await;
    assert_matches!(refused, Err(SharedError::DigestMismatch { pid, .. }) if *pid == running.pid());
    assert!(running.is_alive(), "refusing leaves it running");

    let replaced = SharedDaemon::new(support::demo_spec("shared", &dir, &[]))
        .unwrap()
        .expect_digest(other, DigestPolicy::Replace)
        .acquire()
        .await
        .unwrap();
    assert_matches!(&replaced, Acquired::Spawned(h) if h.pid() != running.pid());
    assert_eq!(
        within("old one stopped", running.exited()).await,
        running_process::ExitStatus::Code(0)
    );
    replaced.handle().stop(support::DEADLINE).await.unwrap();
}

#[tokio::test]
async fn a_spec_without_manifest_readiness_is_refused() {
    use running_process::command::{CommandSpec, SharedDaemon, SharedError};
    assert_matches!(
        SharedDaemon::new(CommandSpec::new("x", "true")),
        Err(SharedError::NeedsManifest)
    );
}
