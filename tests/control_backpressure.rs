//! A control client that sends requests but never reads the answers cannot pin the
//! responder's connection task: once a reply cannot be written for the control idle
//! timeout, the responder closes the connection.

#![cfg(unix)]

mod support;

use std::time::Duration;

use running_process::broker::protocol::{DaemonListener, Endpoint, Responder};
use running_process::DaemonProcess;
use support::within;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

#[tokio::test]
async fn a_client_that_never_reads_its_replies_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::new("t", dir.path().join("run/d.sock").to_str().unwrap());
    let listener = DaemonListener::bind(&endpoint).await.unwrap();
    let claim = DaemonProcess::current_process_async(endpoint.clone(), None)
        .await
        .unwrap();
    let _incoming = Responder::new("svc", "1", claim)
        .control_idle_timeout(Duration::from_millis(200))
        .serve(listener);

    let client = UnixStream::connect(&endpoint.path).await.unwrap();
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
