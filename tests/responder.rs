//! The daemon side: control frames are answered, everything else reaches the application
//! with the peeked bytes replayed, and a shutdown request cancels the token.

#![cfg(unix)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use running_process::identity::Endpoint;
use running_process::protocol::{DaemonListener, Incoming, Responder};
use running_process::{BackendHandle, DaemonProcess, ProbeOptions};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

struct Served {
    _dir: tempfile::TempDir,
    endpoint: Endpoint,
    claim: DaemonProcess,
    incoming: Incoming,
    shutdown: tokio_util::sync::CancellationToken,
}

async fn serve(first_bytes_timeout: Duration) -> Served {
    serve_with(|responder| responder.first_bytes_timeout(first_bytes_timeout)).await
}

async fn serve_with(configure: impl FnOnce(Responder) -> Responder) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::new("t", dir.path().join("run/d.sock").to_str().unwrap());
    let listener = DaemonListener::bind(&endpoint).await.unwrap();
    let claim = DaemonProcess::current_process_async(endpoint.clone(), None)
        .await
        .unwrap();
    let responder = configure(Responder::new("svc", "1", claim.clone()));
    let shutdown = responder.shutdown_token();
    Served {
        _dir: dir,
        endpoint,
        claim,
        incoming: responder.serve(listener),
        shutdown,
    }
}

#[tokio::test]
async fn application_bytes_are_replayed_including_a_partial_magic() {
    let mut served = serve(support::DEADLINE).await;
    for sent in [&b"hello\n"[..], b"\0RPX and more", b"\0"] {
        let mut client = UnixStream::connect(&served.endpoint.path).await.unwrap();
        client.write_all(sent).await.unwrap();
        client.shutdown().await.unwrap(); // EOF lets a short prefix be routed
        let mut conn = within("app connection", served.incoming.next())
            .await
            .unwrap();
        let mut received = Vec::new();
        within("read", conn.read_to_end(&mut received))
            .await
            .unwrap();
        assert_eq!(received, sent);
    }
}

#[tokio::test]
async fn a_silent_client_reaches_the_application_after_the_first_bytes_timeout() {
    let mut served = serve(Duration::from_millis(50)).await;
    let mut client = UnixStream::connect(&served.endpoint.path).await.unwrap();
    let mut conn = within("handed over", served.incoming.next()).await.unwrap();
    // A server-speaks-first protocol can now greet.
    conn.write_all(b"220 hello\n").await.unwrap();
    let mut greeting = [0u8; 10];
    client.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220 hello\n");
}

#[tokio::test]
async fn probes_pings_and_shutdown_are_answered() {
    let served = serve(support::DEADLINE).await;
    let handle = BackendHandle::probe_with_service("svc", "1", &served.endpoint, &served.claim)
        .await
        .unwrap();
    handle.ping(support::DEADLINE).await.unwrap();
    assert!(!served.shutdown.is_cancelled());
    handle.request_shutdown(support::DEADLINE).await.unwrap();
    within("token cancelled", served.shutdown.cancelled()).await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_is_disconnected() {
    // Once a reply cannot be written for the control idle timeout, the responder closes the
    // connection: a client that sends requests and never reads cannot pin its task.
    let served =
        serve_with(|responder| responder.control_idle_timeout(Duration::from_millis(200))).await;
    let client = UnixStream::connect(&served.endpoint.path).await.unwrap();
    // Keep the read half open and unread: the replies pile up in the socket buffers.
    let (_unread, mut write) = client.into_split();
    let pings = b"\0RPD\x01\x03\x00\x00\x00\x00\x00\x02{}".repeat(4096);
    let mut sent = 0usize;
    let error = within("the responder closes the connection", async {
        loop {
            match write.write_all(&pings).await {
                Ok(()) => sent += pings.len(),
                Err(error) => return error,
            }
        }
    })
    .await;
    // Without the write timeout the responder blocks on its reply forever, stops reading,
    // and the loop above never sees an error.
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{error} after {sent} bytes"
    );
}

#[tokio::test]
async fn a_dropped_probe_closes_its_connection() {
    // A peer that never answers; the probe future is dropped mid-exchange. The peer must
    // then see the connection closed: nothing of the probe is left behind.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let endpoint = Endpoint::new("t", path.to_str().unwrap());
    let claim = DaemonProcess::current_process_async(endpoint.clone(), None)
        .await
        .unwrap();
    let options = ProbeOptions::default().timeout(support::DEADLINE);
    let mut probe = Box::pin(BackendHandle::probe_with_options(
        &endpoint, &claim, None, &options,
    ));
    let (mut peer, _) = tokio::select! {
        accepted = listener.accept() => accepted.unwrap(),
        _ = &mut probe => panic!("the probe cannot finish against a silent peer"),
    };
    // Let the probe send its request, then drop it.
    let mut header = [0u8; 12];
    tokio::select! {
        read = peer.read_exact(&mut header) => { read.unwrap(); }
        _ = &mut probe => panic!("the probe cannot finish against a silent peer"),
    }
    drop(probe);
    let mut rest = Vec::new();
    within("EOF after the drop", peer.read_to_end(&mut rest))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_control_connection_that_goes_silent_is_closed() {
    // A peer that opens a control connection (the magic) and then holds it forever: the
    // responder closes it after the control idle timeout instead of keeping a task and a
    // descriptor for it. (Without the timeout this read would wait out the deadline.)
    let served = serve_with(|r| r.control_idle_timeout(Duration::from_millis(100))).await;
    let mut client = UnixStream::connect(&served.endpoint.path).await.unwrap();
    client.write_all(b"\0RPD").await.unwrap();
    let mut rest = Vec::new();
    within("closed by the daemon", client.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty(), "nothing is answered to half a header");
    // The daemon is still fine.
    let handle = BackendHandle::probe_with_service("svc", "1", &served.endpoint, &served.claim)
        .await
        .unwrap();
    handle.ping(support::DEADLINE).await.unwrap();
}
