//! A private (0700) temporary directory, removed when dropped; and the sweep of those left
//! behind by processes that were killed before they could remove them.

use std::path::{Path, PathBuf};
use std::sync::Once;

/// Every private directory is `<temp>/running-process-<creator pid>-<service>-<random>`.
const PREFIX: &str = "running-process-";

/// A private (0700) directory under the system temp dir, removed when dropped (sd_notify
/// sockets, test backends).
pub(crate) struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    pub(crate) fn create(service: &str) -> std::io::Result<PrivateDir> {
        sweep_stale_once();
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
        let clean: String = service
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(32)
            .collect();
        let path = std::env::temp_dir().join(format!(
            "{PREFIX}{}-{}-{}",
            std::process::id(),
            clean,
            crate::hex::encode(&suffix)
        ));
        crate::protocol::manifest::create_private_dir(&path)?;
        Ok(PrivateDir { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Sweep the system temp dir once per process (the first time a private dir is created).
fn sweep_stale_once() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        let removed = sweep_stale(&std::env::temp_dir());
        if removed > 0 {
            tracing::debug!(removed, "removed private directories of killed processes");
        }
    });
}

/// Remove the private directories under `root` whose creator no longer exists: a process
/// killed by SIGKILL runs no destructor, so its test backend's or sd_notify socket's
/// directory stays behind. Only real directories (not symlinks) owned by this user are
/// touched; a creator PID that was recycled keeps its directory (left, never wrongly
/// removed). Best effort: returns how many were removed.
pub(crate) fn sweep_stale(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(creator) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if creator == me || !is_ours(&entry) {
            continue;
        }
        if !matches!(
            crate::platform::ProcessHandle::open(creator),
            Err(crate::platform::OpenError::NotFound)
        ) {
            continue; // alive (or unknowable): not ours to remove
        }
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A real directory (not a symlink) owned by this user.
fn is_ours(entry: &std::fs::DirEntry) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if Some(meta.uid()) != crate::platform::current_uid() {
            return false;
        }
    }
    meta.is_dir()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn sweeps_only_the_directories_of_dead_creators() {
        let root = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap(); // reaped: the PID names nobody (until recycled)
        let make = |name: String| {
            let path = root.path().join(name);
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("backend.log"), "x").unwrap();
            path
        };
        let stale = make(format!("{PREFIX}{dead}-test-aaaa"));
        let mine = make(format!("{PREFIX}{}-test-bbbb", std::process::id()));
        let alive = make(format!("{PREFIX}1-test-cccc")); // init lives
        let unrelated = make(format!("other-{dead}-test"));
        let target = make("target".to_owned());
        std::os::unix::fs::symlink(&target, root.path().join(format!("{PREFIX}{dead}-x-dd")))
            .unwrap();
        assert_eq!(sweep_stale(root.path()), 1);
        assert!(!stale.exists());
        assert!(mine.exists() && alive.exists() && unrelated.exists());
        assert!(
            target.join("backend.log").exists(),
            "a symlink is never followed"
        );
    }
}
