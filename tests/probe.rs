//! Probing real demo daemons: what is accepted, and each way a claim is refused.

mod support;

use running_process::handle::{BackendHandle, BackendHandleError};
use running_process::identity::Endpoint;
use running_process::identity::IdentityError;
use running_process::identity::{DaemonProcess, VerifyPidError};
use support::{within, DemoDaemon};

#[tokio::test]
async fn live_daemon_probes_by_endpoint_and_by_manifest() {
    let daemon = DemoDaemon::start(&["--service", "soldr", "--version", "1.2.3"]).await;
    let claim = daemon.claim();

    let by_endpoint = BackendHandle::probe(&daemon.endpoint, &claim)
        .await
        .expect("verified");
    assert!(by_endpoint.is_alive());
    assert_eq!(*by_endpoint.daemon(), claim);
    assert_eq!(by_endpoint.service_name(), "soldr");

    let by_manifest = BackendHandle::try_from_manifest(&daemon.manifest)
        .await
        .expect("verified")
        .expect("a daemon is recorded");
    assert_eq!(by_manifest.service_version(), "1.2.3");
    assert_eq!(by_manifest.pid(), daemon.child.id().unwrap());

    let with_service =
        BackendHandle::probe_with_service("soldr", "1.2.3", &daemon.endpoint, &claim).await;
    assert!(with_service.is_ok(), "{with_service:?}");
    within("stop", by_manifest.stop(support::DEADLINE))
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_service_or_endpoint_is_refused() {
    let daemon = DemoDaemon::start(&["--service", "soldr", "--version", "1.2.3"]).await;
    let claim = daemon.claim();
    let error = BackendHandle::probe_with_service("zccache", "1.2.3", &daemon.endpoint, &claim)
        .await
        .unwrap_err();
    assert_matches!(
        error,
        BackendHandleError::Identity(IdentityError::FieldMismatch {
            field: "service_name",
            ..
        })
    );
    let other = Endpoint::new("demo", "/elsewhere.sock");
    let error = BackendHandle::probe_with_service("soldr", "1.2.3", &other, &claim)
        .await
        .unwrap_err();
    assert_matches!(
        error,
        BackendHandleError::Identity(IdentityError::EndpointMismatch { .. })
    );
    assert!(BackendHandle::probe(&other, &claim).await.is_none());
}

#[tokio::test]
async fn dead_pid_is_refused() {
    let mut daemon = DemoDaemon::start(&[]).await;
    daemon.child.kill().await.unwrap(); // kill and reap: the PID is gone
    let error = BackendHandle::try_from_manifest(&daemon.manifest)
        .await
        .unwrap_err();
    assert_matches!(
        error,
        BackendHandleError::VerifyPid(VerifyPidError::Dead { .. })
    );
    assert!(BackendHandle::probe_manifest(&daemon.manifest)
        .await
        .is_none());
}

#[tokio::test]
async fn recycled_pid_is_refused() {
    // The manifest of daemon A, but its PID now names daemon B: same executable, another
    // process. The start time gives it away.
    let a = DemoDaemon::start(&[]).await;
    let b = DemoDaemon::start(&[]).await;
    let mut claim = a.claim();
    claim.pid = b.claim().pid;
    let error =
        BackendHandle::probe_with_service("demo", env!("CARGO_PKG_VERSION"), &a.endpoint, &claim)
            .await
            .unwrap_err();
    assert_matches!(
        error,
        BackendHandleError::VerifyPid(VerifyPidError::StartTime { .. })
    );
}

type Forge = fn(&mut DaemonProcess);
type Expect = fn(&BackendHandleError) -> bool;

#[tokio::test]
async fn each_forged_field_is_refused_by_its_own_check() {
    use BackendHandleError::{Identity, VerifyPid};
    let daemon = DemoDaemon::start(&[]).await;
    let cases: [(&str, Forge, Expect); 6] = [
        (
            "boot id",
            |c| c.boot_id = "00000000-0000-0000-0000-000000000000".into(),
            |e| matches!(e, VerifyPid(VerifyPidError::BootId { .. })),
        ),
        (
            "empty boot id",
            |c| c.boot_id.clear(),
            |e| matches!(e, VerifyPid(VerifyPidError::EmptyBootId)),
        ),
        (
            "start time",
            |c| c.start_time += 1,
            |e| matches!(e, VerifyPid(VerifyPidError::StartTime { .. })),
        ),
        (
            "exe path",
            |c| c.exe_path = "/usr/bin/true".into(),
            |e| matches!(e, VerifyPid(VerifyPidError::ExePath { .. })),
        ),
        (
            "digest",
            |c| c.exe_sha256[0] ^= 0xff,
            |e| matches!(e, VerifyPid(VerifyPidError::ExeDigest { .. })),
        ),
        // A field the process checks cannot see, but the daemon's own answer contradicts.
        (
            "idle timeout",
            |c| c.idle_timeout_secs = Some(42),
            |e| {
                matches!(
                    e,
                    Identity(IdentityError::FieldMismatch {
                        field: "idle_timeout_secs",
                        ..
                    })
                )
            },
        ),
    ];
    for (name, forge, expected) in cases {
        let mut claim = daemon.claim();
        forge(&mut claim);
        let error =
            BackendHandle::probe_with_options(&daemon.endpoint, &claim, None, &Default::default())
                .await
                .expect_err(name);
        assert!(expected(&error), "{name}: {error}");
    }
    // The genuine claim still passes, so the refusals above were the forged fields.
    let genuine = daemon.claim();
    let handle =
        BackendHandle::probe_with_options(&daemon.endpoint, &genuine, None, &Default::default())
            .await;
    assert!(handle.is_ok());
}

/// Unix: a socket file another process can bind once the daemon's is removed.
#[cfg(unix)]
#[tokio::test]
async fn a_squatter_on_the_endpoint_is_refused_by_peer_credentials() {
    // The daemon is alive and genuine, but its socket path now belongs to another process
    // (this test) that does not know the protocol.
    let daemon = DemoDaemon::start(&[]).await;
    std::fs::remove_file(daemon.socket_path()).unwrap();
    let squatter = std::os::unix::net::UnixListener::bind(daemon.socket_path()).unwrap();
    let error = BackendHandle::try_from_manifest(&daemon.manifest)
        .await
        .unwrap_err();
    assert_matches!(error, BackendHandleError::Probe(running_process::ProbeError::PeerCredentials { actual_pid: Some(pid), .. }) if *pid == std::process::id());
    drop(squatter);
}
