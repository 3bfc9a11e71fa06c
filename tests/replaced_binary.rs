//! A daemon whose executable was replaced on disk after it started is refused, with the
//! replacement named as the reason. Own test binary: it copies and execs a file.

#![cfg(unix)]

mod support;

use running_process::handle::{BackendHandle, BackendHandleError};
use running_process::identity::VerifyPidError;
use support::DemoDaemon;

#[tokio::test]
async fn binary_replaced_on_disk_is_refused() {
    let bin_dir = tempfile::tempdir().unwrap();
    let copy = bin_dir.path().join("demo_daemon");
    std::fs::copy(support::demo_daemon_path(), &copy).unwrap();
    let daemon = DemoDaemon::start_with_binary(&copy, &[]).await;
    assert!(
        BackendHandle::probe_manifest(&daemon.manifest)
            .await
            .is_some(),
        "genuine before the upgrade"
    );

    // An "upgrade": the file at the path is replaced by other bytes.
    std::fs::remove_file(&copy).unwrap();
    std::fs::write(&copy, b"#!/bin/sh\necho upgraded\n").unwrap();

    let error = BackendHandle::try_from_manifest(&daemon.manifest)
        .await
        .unwrap_err();
    assert_matches!(
        error,
        BackendHandleError::VerifyPid(VerifyPidError::BinaryReplaced { .. })
    );
}
