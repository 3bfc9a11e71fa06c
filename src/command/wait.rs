//! Readiness waits on files: a file appearing, a manifest being rewritten.
//!
//! A [`PathWatcher`] (the platform's: inotify on Linux, else polling) wakes the waits.
//! None of these waits has a deadline: the caller applies one.

use std::io;
use std::path::Path;

use crate::platform::PathWatcher;

/// Resolves once an entry exists at `path` (a dangling symlink counts). It may still be
/// empty or partly written: daemons should create readiness files by renaming them into
/// place. The parent directory must exist.
pub(crate) async fn file_appears(path: &Path) -> io::Result<()> {
    let mut watcher = PathWatcher::new(path)?;
    loop {
        // One `lstat`: too cheap to be worth the blocking pool.
        match std::fs::symlink_metadata(path) {
            Ok(_) => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        watcher.changed().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::test_util::within_deadline;

    #[tokio::test]
    async fn file_appears_resolves_when_another_task_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ready");
        let waiter = tokio::spawn({
            let target = target.clone();
            async move { file_appears(&target).await }
        });
        // Created only once the waiter is past its first check, so the wake is exercised;
        // whichever order the two tasks run in, the waiter cannot miss the file.
        tokio::task::yield_now().await;
        fs::write(&target, b"").unwrap();
        within_deadline(waiter).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn file_appears_resolves_at_once_for_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ready");
        fs::write(&target, b"").unwrap();
        within_deadline(file_appears(&target)).await.unwrap();
    }
}
