//! SHA-256 of executables, cached by file identity (device, inode, size, mtime), so a warm
//! probe of a known daemon never hashes its binary again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::platform::{self, FileIdentity};

/// Entries kept before the cache is trimmed. A process supervises a handful of distinct
/// executables; this only bounds memory against pathological churn.
const MAX_ENTRIES: usize = 256;

/// Counters of a [`DigestCache`], for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DigestCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Executables actually read and hashed.
    pub hashed: u64,
}

/// Process-wide cache of executable digests keyed by file identity.
///
/// A rebuilt or replaced binary has a new inode or mtime, hence a new key: a stale digest
/// is never returned for changed bytes. All methods block (file reads and hashing); call them
/// from the blocking pool.
#[derive(Debug, Default)]
pub struct DigestCache {
    entries: Mutex<HashMap<FileIdentity, [u8; 32]>>,
    hits: AtomicU64,
    hashed: AtomicU64,
}

impl DigestCache {
    /// The cache every probe in this process shares.
    pub fn global() -> &'static DigestCache {
        static GLOBAL: OnceLock<DigestCache> = OnceLock::new();
        GLOBAL.get_or_init(DigestCache::default)
    }

    /// Current counters.
    pub fn stats(&self) -> DigestCacheStats {
        DigestCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            hashed: self.hashed.load(Ordering::Relaxed),
        }
    }

    /// Forget every cached digest (the next probe of each executable hashes it again).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// SHA-256 of the image `pid` runs, read through the process (Linux: `/proc/PID/exe`,
    /// which still reads the original file after the path was replaced).
    pub fn digest_of_process(&self, pid: u32) -> io::Result<[u8; 32]> {
        self.digest_of_file(platform::open_exe(pid)?)
    }

    /// The cached SHA-256 of the image `pid` runs, or `None` when it would have to be
    /// hashed. Never reads the file's contents (an open and an `fstat`), so it is cheap
    /// enough for an async task.
    pub(crate) fn cached_digest_of_process(&self, pid: u32) -> io::Result<Option<[u8; 32]>> {
        let file = platform::open_exe(pid)?;
        Ok(self.cached(&platform::file_identity(&file)?))
    }

    /// SHA-256 of an open file, from the cache when its identity is known.
    pub fn digest_of_file(&self, mut file: File) -> io::Result<[u8; 32]> {
        let key = platform::file_identity(&file)?;
        if let Some(digest) = self.cached(&key) {
            return Ok(digest);
        }
        let digest = sha256_of(&mut file)?;
        self.hashed.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, digest);
        Ok(digest)
    }

    /// A cached digest, counted as a hit.
    fn cached(&self, key: &FileIdentity) -> Option<[u8; 32]> {
        let digest = *self.lock().get(key)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(digest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileIdentity, [u8; 32]>> {
        // The map holds plain data: a panic elsewhere cannot leave it inconsistent.
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Stream a file through SHA-256 in 64 KiB reads.
pub(crate) fn sha256_of(reader: &mut impl Read) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        let digest = sha256_of(&mut &b"abc"[..]).unwrap();
        assert_eq!(
            crate::hex::encode(&digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn second_lookup_is_a_hit_and_a_changed_file_is_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"one").unwrap();
        let cache = DigestCache::default();
        let first = cache.digest_of_file(File::open(&path).unwrap()).unwrap();
        let again = cache.digest_of_file(File::open(&path).unwrap()).unwrap();
        assert_eq!(first, again);
        assert_eq!(cache.stats(), DigestCacheStats { hits: 1, hashed: 1 });
        std::fs::write(&path, b"two, longer").unwrap();
        let changed = cache.digest_of_file(File::open(&path).unwrap()).unwrap();
        assert_ne!(first, changed);
        assert_eq!(cache.stats().hashed, 2);
    }
}
