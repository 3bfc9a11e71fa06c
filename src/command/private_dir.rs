//! A private (0700) temporary directory, removed when dropped.

use std::path::{Path, PathBuf};

/// A private (0700) directory under the system temp dir, removed when dropped (sd_notify
/// sockets, test backends).
pub(crate) struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    pub(crate) fn create(service: &str) -> std::io::Result<PrivateDir> {
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
        let clean: String = service
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(32)
            .collect();
        let path = std::env::temp_dir().join(format!(
            "running-process-{}-{}-{}",
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
