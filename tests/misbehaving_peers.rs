//! Peers that misbehave on the socket. The claim describes this test process itself, and
//! the test process listens on the endpoint, so the process checks and the peer credentials
//! pass and only the behaviour on the wire decides.

#![cfg(unix)]

mod support;

use std::time::Duration;

use running_process::handle::{BackendHandle, BackendHandleError};
use running_process::identity::DaemonProcess;
use running_process::identity::Endpoint;
use running_process::identity::IdentityError;
use running_process::protocol::Responder;
use running_process::{ProbeError, ProbeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

struct Squatter {
    _dir: tempfile::TempDir,
    endpoint: Endpoint,
    claim: DaemonProcess,
}

/// A claim for this test process, and the listener it holds on the claimed endpoint.
async fn squatter() -> (Squatter, UnixListener) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peer.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let endpoint = Endpoint::new("test", path.to_str().unwrap());
    let claim = DaemonProcess::current_process_async(endpoint.clone(), None)
        .await
        .unwrap();
    let squatter = Squatter {
        _dir: dir,
        endpoint,
        claim,
    };
    (squatter, listener)
}

/// Accept one connection and run `behave` on it in the background.
fn serve_once<F, Fut>(listener: UnixListener, behave: F) -> tokio::task::JoinHandle<()>
where
    F: FnOnce(UnixStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        behave(stream).await;
    })
}

async fn probe_error(s: &Squatter, timeout: Duration) -> BackendHandleError {
    let options = ProbeOptions::default().timeout(timeout);
    BackendHandle::probe_with_options(&s.endpoint, &s.claim, None, &options)
        .await
        .expect_err("a misbehaving peer must not produce a handle")
}

/// Read the probe request so the peer's reply follows it, as a real peer's would.
async fn read_request(stream: &mut UnixStream) -> Vec<u8> {
    let mut header = [0u8; 12];
    stream.read_exact(&mut header).await.unwrap();
    let len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    payload
}

#[tokio::test]
async fn a_peer_that_accepts_and_closes_fails_fast() {
    let (s, listener) = squatter().await;
    serve_once(listener, |stream| async move { drop(stream) });
    // With a one-minute deadline, a Timeout would mean we waited it out; NoAnswer means
    // the close was noticed at once.
    let error = probe_error(&s, support::DEADLINE).await;
    assert_matches!(
        error,
        BackendHandleError::Probe(ProbeError::NoAnswer { .. })
    );
}

#[tokio::test]
async fn a_peer_that_never_answers_fails_at_the_deadline() {
    let (s, listener) = squatter().await;
    let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
    serve_once(listener, |stream| async move {
        let _ = held_rx.await; // hold the connection open, silent
        drop(stream);
    });
    let error = probe_error(&s, Duration::from_millis(300)).await;
    assert_matches!(error, BackendHandleError::Probe(ProbeError::Timeout(_)));
    drop(held_tx);
}

#[tokio::test]
async fn a_peer_that_answers_with_the_wrong_nonce_is_refused() {
    let (s, listener) = squatter().await;
    let claim = s.claim.clone();
    serve_once(listener, move |mut stream| async move {
        read_request(&mut stream).await;
        let payload = serde_json::json!({
            "nonce": "11".repeat(32),
            "service_name": "x",
            "service_version": "1",
            "daemon": claim,
        })
        .to_string();
        let mut frame = b"\0RPD\x01\x02\x00\x00".to_vec();
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload.as_bytes());
        stream.write_all(&frame).await.unwrap();
    });
    let error = probe_error(&s, support::DEADLINE).await;
    assert_matches!(error, BackendHandleError::Probe(ProbeError::WrongNonce));
}

#[tokio::test]
async fn a_peer_that_does_not_know_the_protocol_is_refused() {
    // An echo server: it sends our own probe request back.
    let (s, listener) = squatter().await;
    serve_once(listener, |mut stream| async move {
        let mut buf = [0u8; 4096];
        if let Ok(n) = stream.read(&mut buf).await {
            let _ = stream.write_all(&buf[..n]).await;
        }
        let _ = stream.read(&mut buf).await;
    });
    let error = probe_error(&s, support::DEADLINE).await;
    assert_matches!(
        error,
        BackendHandleError::Probe(ProbeError::UnexpectedFrame { .. })
    );
}

#[tokio::test]
async fn malformed_and_oversized_frames_are_refused() {
    for (name, reply) in [
        ("text", b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        (
            "oversized",
            b"\0RPD\x01\x02\x00\x00\x7f\xff\xff\xff".to_vec(),
        ),
        (
            "bad json",
            b"\0RPD\x01\x02\x00\x00\x00\x00\x00\x05{nope".to_vec(),
        ),
        (
            "truncated",
            b"\0RPD\x01\x02\x00\x00\x00\x00\x01\x00{".to_vec(),
        ),
    ] {
        let (s, listener) = squatter().await;
        serve_once(listener, move |mut stream| async move {
            read_request(&mut stream).await;
            let _ = stream.write_all(&reply).await;
        });
        let error = probe_error(&s, support::DEADLINE).await;
        assert!(
            matches!(
                error,
                BackendHandleError::Probe(ProbeError::MalformedFrame(_))
            ),
            "{name}: {error}"
        );
    }
}

#[tokio::test]
async fn an_answer_with_another_identity_names_the_field() {
    // A real responder, but presenting an identity that differs from the claim.
    let (s, listener) = squatter().await;
    drop(listener);
    std::fs::remove_file(&s.endpoint.path).unwrap();
    let listener = running_process::protocol::DaemonListener::bind(&s.endpoint)
        .await
        .unwrap();
    let mut presented = s.claim.clone();
    presented.exe_path = "/somewhere/else".into();
    let _incoming = Responder::new("svc", "1", presented).serve(listener);
    let error = BackendHandle::probe(&s.endpoint, &s.claim).await;
    assert!(error.is_none());
    let error = BackendHandle::probe_with_service("svc", "1", &s.endpoint, &s.claim)
        .await
        .unwrap_err();
    assert_matches!(
        error,
        BackendHandleError::Identity(IdentityError::FieldMismatch {
            field: "exe_path",
            ..
        })
    );
}
