//! The one way the crate runs blocking work (file system, `/proc`, hashing, user lookups)
//! off the tokio workers.

/// Run `work` on tokio's blocking pool and return what it returns.
///
/// A panic in `work` is resumed in the caller, as if it had run inline (a bug, not an
/// error to report). The only other way the pool fails a task is a runtime shutting down
/// before the task ran; every task of that runtime is then being dropped, this one
/// included, so the future simply never completes. Hence no error of its own: callers map
/// only the errors of `work`.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => std::future::pending().await,
    }
}
