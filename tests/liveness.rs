//! Liveness as a stream, exit detection and stopping, against real demo daemons (on every
//! platform: a kill ends a process with `support::KILLED`, the graceful stop is SIGTERM on
//! Unix and the shutdown request on Windows).

mod support;

use std::time::Duration;

use futures::StreamExt;
use running_process::handle::{BackendHandle, BackendHandleError};
use running_process::{ExitStatus, GracefulStop, Liveness};
use support::{within, DemoDaemon, DEADLINE, IGNORE_GRACEFUL_STOP, KILLED};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn verified(daemon: &DemoDaemon) -> BackendHandle {
    BackendHandle::try_from_manifest(&daemon.manifest)
        .await
        .expect("verified")
        .expect("recorded")
}

async fn collect(stream: impl futures::Stream<Item = Liveness>) -> Vec<Liveness> {
    within("liveness stream ends", stream.collect::<Vec<_>>()).await
}

#[tokio::test]
async fn sigkill_reaches_every_subscriber_and_the_stream_ends() {
    let mut daemon = DemoDaemon::start(&[]).await;
    let handle = verified(&daemon).await;
    let first = handle.liveness();
    let second = handle.clone().liveness();
    // Killed from outside the handle, as a crash or an OOM kill would.
    daemon.child.start_kill().unwrap();
    let (first, second) = tokio::join!(collect(first), collect(second));
    for seen in [&first, &second] {
        assert_eq!(
            seen.first(),
            Some(&Liveness::Alive),
            "current state first: {seen:?}"
        );
        assert_eq!(seen.last(), Some(&Liveness::Exited(KILLED)), "{seen:?}");
    }
    assert_eq!(within("exited", handle.exited()).await, KILLED);
    assert!(!handle.is_alive());
    // A subscriber arriving after the exit sees the final state once, then the end.
    assert_eq!(
        collect(handle.liveness()).await,
        vec![Liveness::Exited(KILLED)]
    );
    // SIGKILL left the socket file behind; the handle removed it after the exit. (A named
    // pipe vanishes with the process.)
    #[cfg(unix)]
    assert!(!daemon.socket_path().exists(), "stale socket removed");
}

#[tokio::test]
async fn a_crash_reports_its_exit_code_and_the_stale_socket_is_removed() {
    let daemon = DemoDaemon::start(&["--crash-after-ms", "300"]).await;
    #[cfg(unix)]
    let socket = daemon.socket_path();
    // A handle to our own child: no identity handshake that the crash could overtake.
    let DemoDaemon {
        child,
        endpoint,
        dir: _dir,
        ..
    } = daemon;
    let handle = BackendHandle::from_child(child, "demo", "", Some(endpoint))
        .await
        .expect("a handle to the child");
    assert_eq!(within("crash", handle.exited()).await, ExitStatus::Code(3));
    #[cfg(unix)]
    assert!(!socket.exists());
    // A directory at the endpoint is never touched (a file only, and only a socket).
}

#[tokio::test]
async fn graceful_shutdown_of_a_normal_daemon() {
    let daemon = DemoDaemon::start(&[]).await;
    let handle = verified(&daemon).await;
    let changes = handle.liveness();
    within("shutdown", handle.shutdown(DEADLINE))
        .await
        .expect("graceful");
    assert_eq!(
        collect(changes).await,
        vec![Liveness::Alive, Liveness::Exited(ExitStatus::Code(0))]
    );
    #[cfg(unix)]
    assert!(!daemon.socket_path().exists());
}

#[tokio::test]
async fn shutdown_request_over_the_socket() {
    let daemon = DemoDaemon::start(&[]).await;
    let handle = verified(&daemon).await;
    within(
        "shutdown",
        handle.shutdown_with(GracefulStop::Request, DEADLINE),
    )
    .await
    .expect("graceful");
    assert_eq!(handle.exited().await, ExitStatus::Code(0));
}

#[tokio::test]
async fn a_daemon_ignoring_sigterm_times_out_then_can_still_be_killed() {
    let daemon = DemoDaemon::start(&[IGNORE_GRACEFUL_STOP]).await;
    let handle = verified(&daemon).await;
    let error = handle
        .shutdown(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_matches!(error, BackendHandleError::ShutdownTimeout { pid } if *pid == handle.pid());
    assert!(handle.is_alive(), "still running after the timeout");
    handle.force_kill().unwrap();
    assert_eq!(within("killed", handle.exited()).await, KILLED);
    // Killing what is already dead is not an error.
    handle.force_kill().unwrap();
}

#[tokio::test]
async fn stop_escalates_to_kill() {
    let daemon = DemoDaemon::start(&[IGNORE_GRACEFUL_STOP]).await;
    let handle = verified(&daemon).await;
    let status = within("stop", handle.stop(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(status, KILLED);
}

#[tokio::test]
async fn connect_ping_and_the_daemons_own_protocol_share_the_socket() {
    let daemon = DemoDaemon::start(&[]).await;
    let handle = verified(&daemon).await;
    handle.ping(DEADLINE).await.expect("pong");
    let stream = handle.connect().await.expect("connect").into_inner();
    let (read, mut write) = tokio::io::split(stream);
    write
        .write_all(b"hello through the shared socket\n")
        .await
        .unwrap();
    let mut line = String::new();
    within("echo", BufReader::new(read).read_line(&mut line))
        .await
        .unwrap();
    assert_eq!(line, "hello through the shared socket\n");
    handle.stop(DEADLINE).await.unwrap();
}

#[tokio::test]
async fn handles_to_one_process_share_its_state() {
    let daemon = DemoDaemon::start(&[]).await;
    let a = verified(&daemon).await;
    let b = verified(&daemon).await;
    a.force_kill().unwrap();
    within("b sees a's kill", b.exited()).await;
    assert!(!a.is_alive() || within("a too", a.exited()).await == KILLED);
}

/// Unix: `sh` and re-parenting.
#[cfg(unix)]
#[tokio::test]
async fn exit_of_a_process_that_is_not_our_child_is_detected() {
    // `sh` starts the daemon in the background and exits: the daemon is re-parented, so
    // only the pidfd can tell us about its exit (no SIGCHLD, no wait for us).
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/orphan.sock");
    let manifest_path = dir.path().join("run/orphan.json");
    let script = format!(
        "'{}' --endpoint '{}' --manifest '{}' &",
        support::demo_daemon_path().display(),
        socket.display(),
        manifest_path.display()
    );
    let mut sh = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sh.stdout.take().unwrap()).lines();
    let ready = within("orphan ready", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(ready.starts_with("ready"), "{ready}");
    assert!(sh.wait().await.unwrap().success());

    let manifest = running_process::protocol::CacheManifest::read(&manifest_path)
        .await
        .unwrap()
        .unwrap();
    let handle = BackendHandle::try_from_manifest(&manifest)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(handle.pid(), sh.id().unwrap_or(0));
    let changes = handle.liveness();
    handle.force_kill().unwrap();
    let seen = collect(changes).await;
    assert_eq!(seen.first(), Some(&Liveness::Alive));
    // The status comes from PIDFD_INFO_EXIT (Linux 6.15+) once the new parent reaped it,
    // else it is reported unknown: never invented.
    match seen.last() {
        Some(Liveness::Exited(ExitStatus::Signal(9) | ExitStatus::Unknown)) => {}
        other => panic!("unexpected final state {other:?}"),
    }
    assert!(!socket.exists());
}
