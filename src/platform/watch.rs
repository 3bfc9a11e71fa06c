//! Waking when a path's directory entry may have changed: inotify on Linux; elsewhere, or
//! when inotify is unavailable (watch limit reached, seccomp), a wake every 50 ms, used only
//! while waiting for a service to become ready. The callers (`command::wait`) need no
//! `cfg`.

use std::io;
use std::path::Path;
use std::time::Duration;

/// How often a [`PathWatcher`] without inotify wakes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Wakes when the directory entry of one path may have changed: created, moved into place,
/// written and closed, or its attributes changed.
///
/// Registration happens in [`PathWatcher::new`], so checking a condition and then awaiting
/// [`PathWatcher::changed`] in a loop misses no change. Wakes can be spurious.
#[derive(Debug)]
pub(crate) struct PathWatcher {
    /// `None`: polling (no inotify, or its watch was lost).
    #[cfg(target_os = "linux")]
    inotify: Option<super::inotify::Watch>,
}

impl PathWatcher {
    /// Start watching `path`. Its parent directory must exist; the file need not.
    /// Must be called within a tokio runtime.
    pub(crate) fn new(path: &Path) -> io::Result<PathWatcher> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !std::fs::metadata(dir)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "the parent of a watched path is not a directory",
            ));
        }
        #[cfg(target_os = "linux")]
        {
            let inotify = super::inotify::Watch::entry(dir, name)
                .inspect_err(|error| {
                    tracing::debug!(?path, error = %crate::report::Chain(&error), "inotify unavailable; polling for readiness");
                })
                .ok();
            Ok(PathWatcher { inotify })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name; // validated all the same: only inotify needs it
            Ok(PathWatcher {})
        }
    }

    /// Resolves at the next event about the watched name (events about other entries of
    /// the directory are ignored), or after [`POLL_INTERVAL`] when polling. Cancel-safe.
    pub(crate) async fn changed(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(watch) = &self.inotify {
            if let super::inotify::Wake::WatchLost = watch.next().await? {
                // The directory was removed or unmounted: no event will ever come again.
                tracing::debug!("inotify watch lost; polling for readiness");
                self.inotify = None;
            }
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::test_util::within_deadline;

    /// Wait until `condition` holds, woken by `watcher` (the documented usage).
    async fn wait_until(watcher: &mut PathWatcher, condition: impl Fn() -> bool) {
        within_deadline(async {
            while !condition() {
                watcher.changed().await.unwrap();
            }
        })
        .await;
    }

    #[tokio::test]
    async fn the_watcher_sees_an_atomic_rename_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ready");
        let mut watcher = PathWatcher::new(&target).unwrap();
        let staging = dir.path().join("ready.tmp");
        fs::write(&staging, b"pid 1").unwrap();
        fs::rename(&staging, &target).unwrap();
        wait_until(&mut watcher, || target.exists()).await;
    }

    #[tokio::test]
    async fn the_watcher_sees_a_write_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state");
        fs::write(&target, b"starting").unwrap();
        let mut watcher = PathWatcher::new(&target).unwrap();
        fs::write(&target, b"ready").unwrap();
        wait_until(&mut watcher, || fs::read(&target).unwrap() == b"ready").await;
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_watcher_ignores_other_files_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ready");
        let mut watcher = PathWatcher::new(&target).unwrap();
        assert!(watcher.inotify.is_some(), "inotify unavailable");
        let mut witness = PathWatcher::new(&dir.path().join("other")).unwrap();
        fs::write(dir.path().join("ready.tmp"), b"noise").unwrap();
        fs::write(dir.path().join("other"), b"noise").unwrap();
        // Once the witness has seen "other", the reactor has also seen the watcher's fd
        // readable (same epoll turn, single-threaded runtime): a wake now would be theirs.
        within_deadline(witness.changed()).await.unwrap();
        let woken = futures_util::FutureExt::now_or_never(watcher.changed());
        assert!(woken.is_none(), "woken by an event about another file");
        fs::write(&target, b"").unwrap();
        within_deadline(watcher.changed()).await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_lost_watch_falls_back_to_polling() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let mut watcher = PathWatcher::new(&sub.join("ready")).unwrap();
        fs::remove_dir(&sub).unwrap();
        within_deadline(watcher.changed()).await.unwrap();
        assert!(watcher.inotify.is_none(), "still waiting on a dead watch");
        // Polling from now on: wakes without any event.
        within_deadline(watcher.changed()).await.unwrap();
    }

    #[tokio::test]
    async fn a_watcher_needs_an_existing_parent_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("ready");
        let error = PathWatcher::new(&missing).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(PathWatcher::new(&file.join("ready")).is_err());
    }
}
