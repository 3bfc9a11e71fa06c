//! [`CacheManifest`]: the JSON file where a daemon records who it is, read by clients that
//! want to reuse it. Writes are atomic; reads of bad files give typed errors.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::path_safety::{self, Kind, UnsafePath};
use crate::blocking::blocking;
use crate::identity::DaemonProcess;

/// The manifest schema this crate writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Manifests larger than this are refused unread (a manifest is a few hundred bytes).
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// A daemon's manifest: the service it provides and the process currently providing it.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use running_process::protocol::CacheManifest;
///
/// if let Some(manifest) = CacheManifest::read("/run/user/1000/my-app/cache.json").await? {
///     println!("{} {} recorded", manifest.service_name, manifest.service_version);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheManifest {
    /// Schema of this file; readers refuse newer schemas.
    pub schema_version: u32,
    /// Name of the service the daemon provides.
    pub service_name: String,
    /// Version of that service.
    pub service_version: String,
    /// The daemon currently serving, if one is recorded.
    pub current_daemon: Option<DaemonProcess>,
    /// When the manifest was last written (ms since the Unix epoch; informational).
    #[serde(default)]
    pub updated_at_unix_ms: u64,
}

/// A manifest could not be read or written. Nothing on disk is changed by a failed read.
/// A failed write leaves the previous file intact, except when only the final directory
/// fsync fails: the new file is then in place but its durability is not guaranteed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file exists but is empty.
    #[error("manifest {path:?} is empty")]
    Empty {
        /// The manifest path.
        path: PathBuf,
    },
    /// The JSON ends early: the file was cut short.
    #[error("manifest {path:?} is truncated")]
    Truncated {
        /// The manifest path.
        path: PathBuf,
        /// Where the parser ran out.
        #[source]
        source: serde_json::Error,
    },
    /// The file is not JSON at all.
    #[error("manifest {path:?} is not JSON")]
    NotJson {
        /// The manifest path.
        path: PathBuf,
        /// The syntax error.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a newer version of the crate.
    #[error("manifest {path:?} has schema {found}, this build reads up to {SCHEMA_VERSION}")]
    NewerSchema {
        /// The manifest path.
        path: PathBuf,
        /// The schema found.
        found: u64,
    },
    /// The JSON is well-formed but a field is missing, mistyped or invalid.
    #[error("manifest {path:?} is invalid: {reason}")]
    Invalid {
        /// The manifest path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file exceeds [`MAX_MANIFEST_BYTES`].
    #[error("manifest {path:?} is {len} bytes, more than the {MAX_MANIFEST_BYTES}-byte cap")]
    TooLarge {
        /// The manifest path.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// The manifest or its directory could have been written by someone else (a symlink,
    /// another user's file, a directory writable by others): not read, not written.
    #[error("manifest path not trusted")]
    Unsafe(#[from] UnsafePath),
    /// The file system refused (permissions, disk full, read-only, ...).
    #[error("cannot access manifest {path:?}")]
    Io {
        /// The manifest path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl DaemonProcess {
    /// The daemon recorded as current in a manifest, if any (a clone).
    pub fn from_manifest_current_daemon(manifest: &CacheManifest) -> Option<DaemonProcess> {
        manifest.current_daemon.clone()
    }
}

impl CacheManifest {
    /// A manifest for `service_name` at `service_version` recording `current_daemon`.
    pub fn new(
        service_name: impl Into<String>,
        service_version: impl Into<String>,
        current_daemon: Option<DaemonProcess>,
    ) -> Self {
        CacheManifest {
            schema_version: SCHEMA_VERSION,
            service_name: service_name.into(),
            service_version: service_version.into(),
            current_daemon,
            updated_at_unix_ms: crate::identity::daemon_process::unix_ms_now(),
        }
    }

    /// Read a manifest on the blocking pool. `Ok(None)` when the file does not exist.
    pub async fn read(path: impl AsRef<Path>) -> Result<Option<CacheManifest>, ManifestError> {
        let path = path.as_ref().to_owned();
        blocking(move || Self::read_blocking(&path)).await
    }

    /// Write the manifest atomically on the blocking pool: a temp file in the same
    /// directory, fsync, rename over `path`, fsync the directory. A missing parent
    /// directory is created private (0700); the file is 0600.
    pub async fn write(&self, path: impl AsRef<Path>) -> Result<(), ManifestError> {
        let path = path.as_ref().to_owned();
        let manifest = self.clone();
        blocking(move || manifest.write_blocking(&path)).await
    }

    /// [`CacheManifest::write`] without its two `fsync`s: still atomic (temp file, rename),
    /// so a reader never sees a partial file while the machine runs, but not durable: after
    /// a power loss or kernel crash the file may be the previous manifest, empty, or
    /// missing (each a class [`CacheManifest::read`] already reports). A manifest is stale
    /// after such a crash anyway (its daemon, and its boot, are gone), so a daemon that
    /// rewrites it at every start can skip the fsyncs (about 0.6-0.7 ms each on a quiet
    /// disk, far more on a busy one). See `docs/PROTOCOL.md`, section 8.2.
    pub async fn write_unsynced(&self, path: impl AsRef<Path>) -> Result<(), ManifestError> {
        let path = path.as_ref().to_owned();
        let manifest = self.clone();
        blocking(move || manifest.write_blocking_with(&path, Durability::Unsynced)).await
    }

    /// [`CacheManifest::write_unsynced`] for synchronous callers (blocks).
    pub fn write_unsynced_blocking(&self, path: &Path) -> Result<(), ManifestError> {
        self.write_blocking_with(path, Durability::Unsynced)
    }

    /// [`CacheManifest::read`] for synchronous callers (blocks).
    pub fn read_blocking(path: &Path) -> Result<Option<CacheManifest>, ManifestError> {
        let io_err = |source| ManifestError::Io {
            path: path.to_owned(),
            source,
        };
        let file = match open_no_follow(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if is_symlink_refusal(&e) => {
                return Err(UnsafePath::Symlink {
                    path: path.to_owned(),
                }
                .into())
            }
            Err(e) => return Err(io_err(e)),
        };
        let meta = file.metadata().map_err(io_err)?;
        // Only a manifest that nobody else could have written or swapped is read: a private
        // directory, a file of ours.
        let me = crate::platform::current_uid();
        path_safety::check(&path_safety::parent_dir(path), Kind::Directory, me)?;
        #[cfg(unix)]
        path_safety::check_metadata(path, &meta, Kind::File, me)?;
        let len = meta.len();
        if len > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                path: path.to_owned(),
                len,
            });
        }
        let mut raw = Vec::with_capacity(len as usize);
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(io_err)?;
        Self::from_json(&raw, path).map(Some)
    }

    /// Parse manifest JSON; `path` only names the source in errors.
    pub fn from_json(raw: &[u8], path: &Path) -> Result<CacheManifest, ManifestError> {
        use serde_json::error::Category;
        let path_buf = || path.to_owned();
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Err(ManifestError::Empty { path: path_buf() });
        }
        if raw.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                path: path_buf(),
                len: raw.len() as u64,
            });
        }
        // Parse generically first, so a newer schema is reported as such rather than as
        // whatever field it renamed.
        let value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|source| match source.classify() {
                Category::Eof => ManifestError::Truncated {
                    path: path_buf(),
                    source,
                },
                _ => ManifestError::NotJson {
                    path: path_buf(),
                    source,
                },
            })?;
        let schema = value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ManifestError::Invalid {
                path: path_buf(),
                reason: "missing or non-integer `schema_version`".into(),
            })?;
        if schema > u64::from(SCHEMA_VERSION) {
            return Err(ManifestError::NewerSchema {
                path: path_buf(),
                found: schema,
            });
        }
        let manifest: CacheManifest =
            serde_json::from_value(value).map_err(|e| ManifestError::Invalid {
                path: path_buf(),
                reason: e.to_string(),
            })?;
        manifest
            .validate()
            .map_err(|reason| ManifestError::Invalid {
                path: path_buf(),
                reason,
            })?;
        Ok(manifest)
    }

    /// Field checks beyond the JSON shape.
    fn validate(&self) -> Result<(), String> {
        if self.schema_version == 0 {
            return Err("`schema_version` must be at least 1".into());
        }
        if self.service_name.trim().is_empty() {
            return Err("`service_name` is empty".into());
        }
        if let Some(daemon) = &self.current_daemon {
            if daemon.pid == 0 {
                return Err("`current_daemon.pid` is 0".into());
            }
            if daemon.ipc_endpoint.path.is_empty() {
                return Err("`current_daemon.ipc_endpoint.path` is empty".into());
            }
        }
        Ok(())
    }

    /// [`CacheManifest::write`] for synchronous callers (blocks).
    pub fn write_blocking(&self, path: &Path) -> Result<(), ManifestError> {
        self.write_blocking_with(path, Durability::Synced)
    }

    fn write_blocking_with(
        &self,
        path: &Path,
        durability: Durability,
    ) -> Result<(), ManifestError> {
        let io_err = |source| ManifestError::Io {
            path: path.to_owned(),
            source,
        };
        self.validate().map_err(|reason| ManifestError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| io_err(io::Error::other(e)))?;
        let dir = path_safety::parent_dir(path);
        create_private_dir(&dir).map_err(io_err)?;
        path_safety::check(&dir, Kind::Directory, crate::platform::current_uid())?;
        write_atomic_with(path, &json, durability).map_err(io_err)
    }
}

/// Whether an atomic replace also makes itself durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// `fsync` the file before the rename and the directory after it.
    Synced,
    /// No `fsync`: atomic while the machine runs, not across a crash.
    Unsynced,
}

/// Atomic replace of `path` with `contents` (see [`CacheManifest::write`] and
/// [`CacheManifest::write_unsynced`]).
fn write_atomic_with(path: &Path, contents: &[u8], durability: Durability) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "manifest path has no file name",
        )
    })?;
    // The caller created and checked the directory.
    let dir = path_safety::parent_dir(path);
    remove_orphaned_temp_files(&dir, &file_name.to_string_lossy());
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(io::Error::other)?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        crate::hex::encode(&suffix)
    ));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.write_all(b"\n")?;
        if durability == Durability::Synced {
            file.sync_all()?;
        }
        drop(file);
        rename_over(&tmp, path)?;
        match durability {
            Durability::Synced => sync_dir(&dir),
            Durability::Unsynced => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `rename(from, to)`, replacing `to`. On Windows the replace fails with `PermissionDenied`
/// while another process has `to` open (a reader of the manifest; always under Wine 8, and
/// on Windows wherever the POSIX rename semantics are unavailable): readers hold it for one
/// read, so the replace is retried for up to 2 s, pausing 1 ms doubling to 50 ms.
#[cfg(windows)]
fn rename_over(from: &Path, to: &Path) -> io::Result<()> {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pause = Duration::from_millis(1);
    loop {
        match fs::rename(from, to) {
            Err(error)
                if error.kind() == io::ErrorKind::PermissionDenied && Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

#[cfg(not(windows))]
fn rename_over(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
}

/// Remove the temp files of earlier writers of `<dir>/<file_name>` that died between
/// creating their temp file and renaming it (SIGKILL, power loss): named
/// `.<file_name>.<pid>.<16 hex>.tmp` with a PID that no longer exists. Best effort.
fn remove_orphaned_temp_files(dir: &Path, file_name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{file_name}.");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(writer) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|rest| rest.split_once('.'))
            .filter(|(_, hex)| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if writer != std::process::id() && crate::platform::process_is_gone(writer) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Open `path` for reading without following a final symlink (Unix `O_NOFOLLOW`).
fn open_no_follow(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        rustix::fs::OFlags::NOFOLLOW.bits() as i32,
    );
    options.open(path)
}

/// `O_NOFOLLOW` met a symlink (`ELOOP`).
fn is_symlink_refusal(error: &io::Error) -> bool {
    #[cfg(unix)]
    return error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error());
    #[cfg(not(unix))]
    {
        let _ = error;
        false
    }
}

/// Create `dir` (and missing ancestors) with mode 0700 where the OS has modes.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// fsync a directory so a rename in it is durable (a no-op where directories cannot be
/// opened, i.e. Windows).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<CacheManifest, ManifestError> {
        CacheManifest::from_json(raw.as_bytes(), Path::new("m.json"))
    }

    #[test]
    fn classifies_bad_files() {
        assert!(matches!(parse(""), Err(ManifestError::Empty { .. })));
        assert!(matches!(parse("  \n"), Err(ManifestError::Empty { .. })));
        assert!(matches!(
            parse("{\"schema_version\": 1, \"serv"),
            Err(ManifestError::Truncated { .. })
        ));
        assert!(matches!(
            parse("not json"),
            Err(ManifestError::NotJson { .. })
        ));
        assert!(matches!(
            parse("{\"schema_version\": 9, \"whatever\": true}"),
            Err(ManifestError::NewerSchema { found: 9, .. })
        ));
        assert!(matches!(
            parse("{\"schema_version\": 1}"),
            Err(ManifestError::Invalid { .. })
        ));
        assert!(matches!(parse("[1,2]"), Err(ManifestError::Invalid { .. })));
        assert!(matches!(
            parse("{\"schema_version\":1,\"service_name\":\" \",\"service_version\":\"1\",\"current_daemon\":null}"),
            Err(ManifestError::Invalid { .. })
        ));
    }

    #[test]
    fn write_then_read_round_trips_with_private_modes() {
        for unsynced in [false, true] {
            write_then_read_round_trips(unsynced);
        }
    }

    /// The same checks for both durabilities: the unsynced write differs only in its fsyncs.
    fn write_then_read_round_trips(unsynced: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new-dir/manifest.json");
        let manifest = CacheManifest::new("svc", "1.0", None);
        if unsynced {
            manifest.write_unsynced_blocking(&path).unwrap();
            // A second write replaces the first, atomically, as the synced one does.
            manifest.write_unsynced_blocking(&path).unwrap();
        } else {
            manifest.write_blocking(&path).unwrap();
        }
        assert_eq!(CacheManifest::read_blocking(&path).unwrap(), Some(manifest));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dir_mode = fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700);
            let file_mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(file_mode & 0o777, 0o600);
        }
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert_eq!(
            CacheManifest::read_blocking(&dir.path().join("absent.json")).unwrap(),
            None
        );
    }
}
