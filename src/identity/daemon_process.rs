//! [`DaemonProcess`]: the identity a daemon claims, as written into its manifest.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{digest::DigestCache, Endpoint, VerifyPidError};
use crate::platform;

/// The identity of a running daemon process: who it is (boot, PID, start time), what it
/// runs (executable path and SHA-256 of the running image) and where it listens.
///
/// A daemon builds its own with [`DaemonProcess::current_process`] and records it in its
/// [`CacheManifest`](crate::protocol::CacheManifest). A client never trusts one as
/// is: [`BackendHandle`](crate::BackendHandle) verifies every field against the live process
/// before a handle exists.
///
/// In JSON, `exe_sha256` is 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DaemonProcess {
    /// Process id.
    pub pid: u32,
    /// The OS's start time of the process (Linux: field 22 of `/proc/PID/stat`, in clock
    /// ticks since boot; macOS: microseconds since the epoch; Windows: creation FILETIME).
    pub start_time: u64,
    /// Identifier of the boot the process runs in (Linux: `/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Path of the executable the process was started from.
    pub exe_path: PathBuf,
    /// SHA-256 of the running executable image.
    #[serde(with = "crate::hex::serde_array")]
    pub exe_sha256: [u8; 32],
    /// Where the daemon listens.
    pub ipc_endpoint: Endpoint,
    /// Wall-clock time the daemon described itself, in milliseconds since the Unix epoch
    /// (informational; never used for verification).
    pub started_at_unix_ms: u64,
    /// Seconds of idleness after which the daemon exits by itself, if it does.
    pub idle_timeout_secs: Option<u32>,
}

impl DaemonProcess {
    /// Describe the calling process, for a daemon about to write its manifest.
    ///
    /// This reads `/proc` and hashes the executable (a few ms for a large binary; cached
    /// afterwards), so from async code prefer [`DaemonProcess::current_process_async`].
    ///
    /// ```no_run
    /// use running_process::identity::DaemonProcess;
    /// use running_process::identity::Endpoint;
    ///
    /// let endpoint = Endpoint::new("my-app", "/run/user/1000/my-app/cache.sock");
    /// let me = DaemonProcess::current_process(endpoint, Some(600))?;
    /// assert_eq!(me.pid, std::process::id());
    /// # Ok::<(), running_process::handle::BackendHandleError>(())
    /// ```
    pub fn current_process(
        ipc_endpoint: Endpoint,
        idle_timeout_secs: Option<u32>,
    ) -> Result<DaemonProcess, VerifyPidError> {
        Self::describe(std::process::id(), ipc_endpoint, idle_timeout_secs)
    }

    /// Read the identity of process `pid` from the OS (blocking: reads `/proc`, may hash).
    /// The caller is responsible for knowing that `pid` is the process it means (its own
    /// PID, or a child it has not reaped); this is not a verification.
    pub(crate) fn describe(
        pid: u32,
        ipc_endpoint: Endpoint,
        idle_timeout_secs: Option<u32>,
    ) -> std::result::Result<DaemonProcess, VerifyPidError> {
        let unreadable = |what| move |source| VerifyPidError::Unreadable { pid, what, source };
        let boot_id = platform::boot_id().map_err(unreadable("boot id"))?;
        let start_time = platform::start_time(pid).map_err(unreadable("start time"))?;
        let exe = platform::exe_path(pid).map_err(unreadable("executable path"))?;
        if exe.replaced {
            return Err(VerifyPidError::BinaryReplaced {
                pid,
                path: exe.path,
            });
        }
        let exe_sha256 = DigestCache::global()
            .digest_of_process(pid)
            .map_err(unreadable("executable"))?;
        Ok(DaemonProcess {
            pid,
            start_time,
            boot_id,
            exe_path: exe.path,
            exe_sha256,
            ipc_endpoint,
            started_at_unix_ms: unix_ms_now(),
            idle_timeout_secs,
        })
    }

    /// [`DaemonProcess::current_process`] on the blocking pool, for async callers.
    pub async fn current_process_async(
        ipc_endpoint: Endpoint,
        idle_timeout_secs: Option<u32>,
    ) -> Result<DaemonProcess, VerifyPidError> {
        crate::blocking::blocking(move || Self::current_process(ipc_endpoint, idle_timeout_secs))
            .await
    }

    /// The executable digest as lower-case hex.
    pub fn exe_sha256_hex(&self) -> String {
        crate::hex::encode(&self.exe_sha256)
    }

    /// Compare with another claim field by field; the first differing field is returned
    /// with both values rendered as text. `started_at_unix_ms` is informational and skipped.
    pub(crate) fn first_difference(
        &self,
        other: &DaemonProcess,
    ) -> Option<(&'static str, String, String)> {
        fn diff<T: PartialEq + std::fmt::Debug>(
            field: &'static str,
            a: &T,
            b: &T,
        ) -> Option<(&'static str, String, String)> {
            (a != b).then(|| (field, format!("{a:?}"), format!("{b:?}")))
        }
        diff("pid", &self.pid, &other.pid)
            .or_else(|| diff("start_time", &self.start_time, &other.start_time))
            .or_else(|| diff("boot_id", &self.boot_id, &other.boot_id))
            .or_else(|| diff("exe_path", &self.exe_path, &other.exe_path))
            .or_else(|| {
                diff(
                    "exe_sha256",
                    &self.exe_sha256_hex(),
                    &other.exe_sha256_hex(),
                )
            })
            .or_else(|| diff("ipc_endpoint", &self.ipc_endpoint, &other.ipc_endpoint))
            .or_else(|| {
                diff(
                    "idle_timeout_secs",
                    &self.idle_timeout_secs,
                    &other.idle_timeout_secs,
                )
            })
    }
}

pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
