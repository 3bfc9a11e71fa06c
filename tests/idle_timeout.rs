//! The daemon-side idle timeout: a daemon whose identity records `idle_timeout_secs` is
//! stopped by its `Responder` once nothing has used it for that long; an open connection
//! holds it. The clock logic itself is unit-tested under paused time in
//! `src/protocol/idle.rs`; these tests check the wiring (in-process, paused time) and real
//! daemons (real time, waiting for their exit, never sleeping).

#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use futures::StreamExt;
use running_process::command::{Acquired, SharedDaemon};
use running_process::identity::Endpoint;
use running_process::protocol::{DaemonListener, Incoming, Responder};
use running_process::{BackendHandle, DaemonProcess, ExitStatus};
use support::{within, DemoDaemon};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const IDLE: Duration = Duration::from_secs(1);

/// A responder in this process whose identity has a 1 s idle timeout.
struct Served {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    incoming: Incoming,
    shutdown: CancellationToken,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/d.sock");
    let endpoint = Endpoint::new("t", socket.to_str().unwrap());
    let listener = DaemonListener::bind(&endpoint).await.unwrap();
    let me = DaemonProcess::current_process_async(endpoint, Some(IDLE.as_secs() as u32))
        .await
        .unwrap();
    let responder = Responder::new("svc", "1", me);
    let shutdown = responder.shutdown_token();
    Served {
        _dir: dir,
        socket,
        incoming: responder.serve(listener),
        shutdown,
    }
}

/// Under paused time, `timeout` auto-advances the clock once every task waits, so "not
/// stopped for `hold`" is a statement about virtual time, reached at once. Then `release`
/// closes the connection, and the idle timeout must follow no sooner than `IDLE` after.
async fn held_until_released(served: &Served, hold: Duration, release: impl FnOnce()) {
    let held = tokio::time::timeout(hold, served.shutdown.cancelled()).await;
    assert!(held.is_err(), "idled out while a connection was open");
    release();
    let released = Instant::now();
    within(
        "idle timeout after the release",
        served.shutdown.cancelled(),
    )
    .await;
    assert!(
        released.elapsed() >= IDLE,
        "fired {:?} after",
        released.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn an_application_connection_holds_the_daemon_until_it_is_dropped() {
    let mut served = serve().await;
    let mut client = UnixStream::connect(&served.socket).await.unwrap();
    client.write_all(b"hello\n").await.unwrap();
    let conn = within("app connection", served.incoming.next())
        .await
        .expect("an application connection");
    // The client stays connected: it is the daemon's `AppConnection` that holds the clock.
    held_until_released(&served, 10 * IDLE, || drop(conn)).await;
    drop(client);
}

#[tokio::test(start_paused = true)]
async fn an_open_control_connection_holds_the_daemon_until_it_closes() {
    let served = serve().await;
    let mut client = UnixStream::connect(&served.socket).await.unwrap();
    // The magic alone: a control connection waiting for the rest of its first frame (the
    // control idle timeout, 10 s by default, would close it later).
    client.write_all(b"\0RPD").await.unwrap();
    held_until_released(&served, 5 * IDLE, || drop(client)).await;
}

#[tokio::test(start_paused = true)]
async fn without_an_idle_timeout_the_daemon_never_idles_out() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::new("t", dir.path().join("run/d.sock").to_str().unwrap());
    let listener = DaemonListener::bind(&endpoint).await.unwrap();
    let me = DaemonProcess::current_process_async(endpoint, None)
        .await
        .unwrap();
    let responder = Responder::new("svc", "1", me);
    let shutdown = responder.shutdown_token();
    let _incoming = responder.serve(listener);
    let waited = tokio::time::timeout(Duration::from_secs(3600), shutdown.cancelled()).await;
    assert!(waited.is_err(), "a daemon without idle timeout stopped");
}

#[tokio::test]
async fn a_demo_daemon_with_an_idle_timeout_exits_by_itself() {
    let daemon = DemoDaemon::start(&["--idle-timeout-secs", "1"]).await;
    assert_eq!(daemon.claim().idle_timeout_secs, Some(1), "in the manifest");
    // A handle to our own child: no connection is made, so nothing resets its clock, and
    // there is no race with a 1 s timeout on a loaded machine.
    let handle = BackendHandle::from_child(daemon.child, "demo", "0", None)
        .await
        .unwrap();
    assert_eq!(
        within("the daemon idles out", handle.exited()).await,
        ExitStatus::Code(0),
        "a clean exit, not a crash"
    );
    assert!(
        !daemon.dir.path().join("run/demo.sock").exists(),
        "it removed its socket"
    );
}

#[tokio::test]
async fn a_shared_daemon_that_idled_out_is_spawned_anew() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shared");
    // 2 s, not 1: the spawning `acquire` must probe the daemon before it idles out, and the
    // daemon's clock starts before it writes its manifest (fsync on a loaded disk).
    let spec = || support::demo_spec("shared", &dir, &["--idle-timeout-secs", "2"]);

    let first = SharedDaemon::new(spec()).unwrap().acquire().await.unwrap();
    assert_matches!(first, Acquired::Spawned(_));
    let first = first.into_handle();
    assert_eq!(first.daemon().idle_timeout_secs, Some(2));
    // Nobody uses it: it exits by itself.
    assert!(within("first idles out", first.exited()).await.success());

    let second = SharedDaemon::new(spec()).unwrap().acquire().await.unwrap();
    assert_matches!(second, Acquired::Spawned(_));
    let second = second.into_handle();
    assert_ne!(
        (second.pid(), second.daemon().start_time),
        (first.pid(), first.daemon().start_time),
        "a new daemon, not the old one"
    );
    // Cleanup is the feature under test: it goes away by itself too.
    assert!(within("second idles out", second.exited()).await.success());
}
