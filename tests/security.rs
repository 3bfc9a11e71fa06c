//! The runtime-path defences of `docs/SECURITY.md`: what a probe refuses to connect to and
//! what a manifest read or write refuses to touch, each named by the check that fails.
//! (Recycled PIDs, forged manifests, squatters, replaced binaries and malicious peers have
//! their tests in `probe.rs`, `replaced_binary.rs` and `misbehaving_peers.rs`.)

#![cfg(target_os = "linux")]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use running_process::protocol::{CacheManifest, ManifestError, UnsafePath};
use running_process::{BackendHandle, BackendHandleError, ProbeError};
use support::DemoDaemon;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

async fn probe_error(daemon: &DemoDaemon) -> BackendHandleError {
    BackendHandle::try_from_manifest(&daemon.manifest)
        .await
        .expect_err("the probe must refuse")
}

#[tokio::test]
async fn a_socket_in_a_directory_writable_by_others_is_not_connected_to() {
    let daemon = DemoDaemon::start(&[]).await;
    let run_dir = daemon.socket_path().parent().unwrap().to_owned();
    chmod(&run_dir, 0o777); // anyone could have replaced the socket
    let error = probe_error(&daemon).await;
    assert_matches!(
        error,
        BackendHandleError::Probe(ProbeError::UnsafeEndpoint(UnsafePath::Writable { .. }))
    );
    chmod(&run_dir, 0o700);
    assert!(BackendHandle::try_from_manifest(&daemon.manifest)
        .await
        .is_ok_and(|h| h.is_some()));
}

#[tokio::test]
async fn a_symlink_planted_at_the_socket_path_is_not_followed() {
    let daemon = DemoDaemon::start(&[]).await;
    // Another socket (the real daemon's, moved) reached through a symlink at the recorded
    // path: whatever it points to, a symlink there is refused before connecting.
    let moved = daemon.socket_path().with_extension("moved");
    std::fs::rename(daemon.socket_path(), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, daemon.socket_path()).unwrap();
    let error = probe_error(&daemon).await;
    assert_matches!(
        error,
        BackendHandleError::Probe(ProbeError::UnsafeEndpoint(UnsafePath::Symlink { .. }))
    );
}

#[tokio::test]
async fn a_socket_owned_by_another_user_is_not_connected_to() {
    if !is_root() {
        eprintln!("SKIPPED: giving a file to another user needs root");
        return;
    }
    let daemon = DemoDaemon::start(&[]).await;
    std::os::unix::fs::chown(daemon.socket_path(), Some(4242), Some(4242)).unwrap();
    let error = probe_error(&daemon).await;
    assert_matches!(
        error,
        BackendHandleError::Probe(ProbeError::UnsafeEndpoint(UnsafePath::WrongOwner {
            owner: 4242,
            ..
        }))
    );
}

#[tokio::test]
async fn a_listener_of_another_user_is_refused_by_its_uid() {
    if !is_root() {
        eprintln!("SKIPPED: running a listener as another user needs root");
        return;
    }
    let daemon = DemoDaemon::start(&[]).await;
    // Another user's process listens on a socket that ends up at the daemon's path with
    // the right owner and directory: only the peer's credentials tell.
    let theirs = tempfile::tempdir().unwrap();
    chmod(theirs.path(), 0o777);
    let their_socket = theirs.path().join("s.sock");
    let mut listener = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import os,socket,sys;os.setgid(4242);os.setuid(4242);\
             s=socket.socket(socket.AF_UNIX);s.bind(sys.argv[1]);s.listen();\
             print('up',flush=True);sys.stdin.read()",
        ])
        .arg(&their_socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut out = tokio::io::BufReader::new(listener.stdout.take().unwrap());
    let mut line = String::new();
    support::within(
        "listener up",
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line),
    )
    .await
    .unwrap();
    assert_eq!(line.trim(), "up");
    std::fs::remove_file(daemon.socket_path()).unwrap();
    std::fs::rename(&their_socket, daemon.socket_path()).unwrap();
    std::os::unix::fs::chown(daemon.socket_path(), Some(0), Some(0)).unwrap();
    let error = probe_error(&daemon).await;
    assert_matches!(
        error,
        BackendHandleError::Probe(ProbeError::PeerCredentials {
            actual_uid: Some(4242),
            ..
        })
    );
    listener.kill().await.unwrap();
}

async fn a_written_manifest() -> (tempfile::TempDir, std::path::PathBuf, CacheManifest) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    let manifest = CacheManifest::new("svc", "1", None);
    manifest.write(&path).await.unwrap();
    (dir, path, manifest)
}

#[tokio::test]
async fn a_manifest_reached_through_a_symlink_is_not_read() {
    let (dir, real, _) = a_written_manifest().await;
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_matches!(
        CacheManifest::read(&link).await,
        Err(ManifestError::Unsafe(UnsafePath::Symlink { .. }))
    );
    assert!(CacheManifest::read(&real).await.unwrap().is_some());
}

#[tokio::test]
async fn a_manifest_directory_writable_by_others_is_neither_read_nor_written() {
    let (dir, path, manifest) = a_written_manifest().await;
    chmod(dir.path(), 0o777);
    assert_matches!(
        CacheManifest::read(&path).await,
        Err(ManifestError::Unsafe(UnsafePath::Writable { .. }))
    );
    let before = std::fs::read(&path).unwrap();
    assert_matches!(
        manifest.write(&path).await,
        Err(ManifestError::Unsafe(UnsafePath::Writable { .. }))
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
    chmod(dir.path(), 0o700);
    assert!(CacheManifest::read(&path).await.unwrap().is_some());
}

#[tokio::test]
async fn a_manifest_writable_by_others_or_owned_by_another_user_is_not_read() {
    let (_dir, path, _) = a_written_manifest().await;
    chmod(&path, 0o666);
    assert_matches!(
        CacheManifest::read(&path).await,
        Err(ManifestError::Unsafe(UnsafePath::Writable { .. }))
    );
    chmod(&path, 0o600);
    if is_root() {
        std::os::unix::fs::chown(&path, Some(4242), Some(4242)).unwrap();
        assert_matches!(
            CacheManifest::read(&path).await,
            Err(ManifestError::Unsafe(UnsafePath::WrongOwner {
                owner: 4242,
                ..
            }))
        );
    } else {
        eprintln!("SKIPPED (owner part): giving a file to another user needs root");
    }
}
