//! A daemon binds its socket safely: private directory, 0600 socket, a stale socket
//! replaced, a live one never displaced, unsafe directories refused.

#![cfg(unix)]

mod support;

use std::os::unix::fs::PermissionsExt;

use running_process::identity::Endpoint;
use running_process::protocol::{BindError, DaemonListener};

fn endpoint_in(dir: &std::path::Path) -> Endpoint {
    Endpoint::new("test", dir.join("daemon.sock").to_str().unwrap())
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn creates_a_private_directory_and_a_private_socket() {
    let root = tempfile::tempdir().unwrap();
    let endpoint = endpoint_in(&root.path().join("runtime"));
    let listener = DaemonListener::bind(&endpoint).await.unwrap();
    assert_eq!(mode(&root.path().join("runtime")), 0o700);
    assert_eq!(mode(std::path::Path::new(&endpoint.path)), 0o600);
    drop(listener);
    assert!(
        !std::path::Path::new(&endpoint.path).exists(),
        "dropping the listener removes the socket"
    );
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let root = tempfile::tempdir().unwrap();
    let endpoint = endpoint_in(root.path());
    // A listener that goes away without unlinking, as a crashed daemon's does.
    drop(std::os::unix::net::UnixListener::bind(&endpoint.path).unwrap());
    assert!(std::path::Path::new(&endpoint.path).exists());
    let listener = DaemonListener::bind(&endpoint)
        .await
        .expect("stale socket replaced");
    let client = tokio::net::UnixStream::connect(&endpoint.path).await;
    assert!(client.is_ok());
    drop(listener);
}

#[tokio::test]
async fn a_live_socket_is_never_displaced() {
    let root = tempfile::tempdir().unwrap();
    let endpoint = endpoint_in(root.path());
    let live = tokio::net::UnixListener::bind(&endpoint.path).unwrap();
    let error = DaemonListener::bind(&endpoint).await.unwrap_err();
    assert_matches!(error, BindError::AlreadyRunning { .. });
    // The live listener still owns the path and still accepts.
    let (client, accepted) = tokio::join!(
        tokio::net::UnixStream::connect(&endpoint.path),
        live.accept()
    );
    assert!(client.is_ok() && accepted.is_ok());
}

#[tokio::test]
async fn refuses_a_world_writable_directory_and_a_non_socket() {
    let root = tempfile::tempdir().unwrap();
    let open_dir = root.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = DaemonListener::bind(&endpoint_in(&open_dir))
        .await
        .unwrap_err();
    assert_matches!(error, BindError::InsecureDirectory { .. });

    let endpoint = endpoint_in(root.path());
    std::fs::write(&endpoint.path, b"precious").unwrap();
    let error = DaemonListener::bind(&endpoint).await.unwrap_err();
    assert_matches!(error, BindError::NotASocket { .. });
    assert_eq!(
        std::fs::read(&endpoint.path).unwrap(),
        b"precious",
        "left untouched"
    );
}

#[tokio::test]
async fn refuses_a_symlinked_directory() {
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let error = DaemonListener::bind(&endpoint_in(&link)).await.unwrap_err();
    assert_matches!(error, BindError::InsecureDirectory { .. });
}
