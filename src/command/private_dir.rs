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
        let Some(creator) = name.to_str().and_then(creator_of) else {
            continue;
        };
        if creator == me || !is_ours(&entry) {
            continue;
        }
        if !crate::platform::process_is_gone(creator) {
            continue; // alive (or unknowable): not ours to remove
        }
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The creator PID in a name of exactly our format, `running-process-<pid>-<service>-<12
/// hex digits>`; anything else (another program's directory, a user's
/// `running-process-1000` runtime directory) is never ours.
fn creator_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let (_service, suffix) = rest.rsplit_once('-')?;
    let hex = suffix.len() == 12 && suffix.bytes().all(|b| b.is_ascii_hexdigit());
    let pid: u32 = pid.parse().ok().filter(|&pid| pid > 0)?;
    hex.then_some(pid)
}

/// A real directory (not a symlink) owned by this user.
fn is_ours(entry: &std::fs::DirEntry) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
        return false;
    };
    // Windows has no numeric owners: both sides are `None` there.
    crate::platform::owner_uid(&meta) == crate::platform::current_uid() && meta.is_dir()
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
        let stale = make(format!("{PREFIX}{dead}-test-aaaaaaaaaaaa"));
        let mine = make(format!("{PREFIX}{}-test-bbbbbbbbbbbb", std::process::id()));
        let alive = make(format!("{PREFIX}1-test-cccccccccccc")); // init lives
        let unrelated = make(format!("other-{dead}-test"));
        // Look-alikes that are not ours: a per-user runtime directory, no random suffix.
        let per_user = make(format!("{PREFIX}{dead}"));
        let no_suffix = make(format!("{PREFIX}{dead}-helper-daemons"));
        let target = make("target".to_owned());
        let link = root.path().join(format!("{PREFIX}{dead}-x-dddddddddddd"));
        std::os::unix::fs::symlink(&target, link).unwrap();
        assert_eq!(sweep_stale(root.path()), 1);
        assert!(!stale.exists());
        assert!(mine.exists() && alive.exists() && unrelated.exists());
        assert!(per_user.exists() && no_suffix.exists());
        assert!(
            target.join("backend.log").exists(),
            "a symlink is never followed"
        );
    }
}
