//! Helpers of the crate's unit tests.

use std::time::Duration;

/// The generous deadline of a unit test's wait for an event (a loaded 2-core machine can
/// stall for seconds; an event that never comes fails the test instead of hanging it).
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// `future`'s output, or a panic naming the deadline.
pub(crate) async fn within_deadline<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("not resolved within the deadline")
}
