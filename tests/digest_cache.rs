//! A warm probe does not hash the executable again. Own test binary, so no other test
//! moves the process-wide counters.

mod support;

use running_process::identity::DigestCache;
use running_process::BackendHandle;
use support::DemoDaemon;

#[tokio::test]
async fn a_warm_probe_does_not_rehash() {
    let daemon = DemoDaemon::start(&[]).await;
    let before = DigestCache::global().stats();
    let cold = BackendHandle::probe_manifest(&daemon.manifest)
        .await
        .expect("verified");
    let after_cold = DigestCache::global().stats();
    assert_eq!(
        after_cold.hashed,
        before.hashed + 1,
        "the first probe hashes the daemon's binary"
    );

    let warm = BackendHandle::probe_manifest(&daemon.manifest)
        .await
        .expect("verified");
    let after_warm = DigestCache::global().stats();
    assert_eq!(
        after_warm.hashed, after_cold.hashed,
        "the warm probe must not hash again"
    );
    assert_eq!(after_warm.hits, after_cold.hits + 1);
    assert_eq!(cold.pid(), warm.pid());
}
