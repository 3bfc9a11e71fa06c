//! Steps 2 to 7 of the identity check: prove that the live process behind a PID is the one a
//! [`DaemonProcess`] claims. Blocking (reads `/proc`, may hash): run on the blocking pool,
//! except [`verify_process_cached`], which never hashes.

use super::{digest::DigestCache, DaemonProcess, VerifyPidError};
use crate::platform::{self, OpenError, ProcessHandle};

/// Verify `claim` against the live process and return a handle pinned to it.
///
/// The handle is opened **first**; the facts are read afterwards and the handle is checked
/// to be still alive at the end, which proves the facts came from the handle's process and
/// not from a process that recycled the PID in between.
pub(crate) fn verify_process(claim: &DaemonProcess) -> Result<ProcessHandle, VerifyPidError> {
    let hash = |pid| DigestCache::global().digest_of_process(pid).map(Some);
    verify_process_with(claim, hash)?.ok_or(VerifyPidError::Unreadable {
        pid: claim.pid,
        what: "executable",
        source: std::io::Error::other("digest not computed"),
    })
}

/// [`verify_process`] without hashing: `Ok(None)` when the executable's digest is not
/// cached yet (nothing else is decided then). With a cached digest it only reads `/proc`
/// (or the OS's equivalent), which is cheap enough to run inline in an async task and
/// saves the blocking-pool round trip of a warm probe.
pub(crate) fn verify_process_cached(
    claim: &DaemonProcess,
) -> Result<Option<ProcessHandle>, VerifyPidError> {
    verify_process_with(claim, |pid| {
        DigestCache::global().cached_digest_of_process(pid)
    })
}

/// The checks, with step 6's digest from `digest` (`None`: unknown, stop there).
///
/// One straight checklist (steps 2 to 7, each refusing with its own error), kept in one
/// function so that it reads in the order the README lists it.
fn verify_process_with(
    claim: &DaemonProcess,
    digest: impl FnOnce(u32) -> std::io::Result<Option<[u8; 32]>>,
) -> Result<Option<ProcessHandle>, VerifyPidError> {
    let pid = claim.pid;
    let unreadable = |what| move |source| VerifyPidError::Unreadable { pid, what, source };

    // 2. The handle.
    let handle = match ProcessHandle::open(pid) {
        Ok(handle) => handle,
        Err(OpenError::NotFound) => return Err(VerifyPidError::Dead { pid }),
        Err(OpenError::Unsupported(source)) => {
            return Err(VerifyPidError::HandleUnsupported { pid, source })
        }
        Err(OpenError::Other(source)) => return Err(unreadable("process handle")(source)),
    };
    let gone = |e: &std::io::Error| platform::is_no_such_process(e);
    // A zombie still has a handle and readable facts, but it is dead.
    if handle.has_exited().unwrap_or(false) {
        return Err(VerifyPidError::Dead { pid });
    }

    // 3. Boot id, failing closed on an empty claim.
    if claim.boot_id.is_empty() {
        return Err(VerifyPidError::EmptyBootId);
    }
    let boot_id = platform::boot_id().map_err(unreadable("boot id"))?;
    if boot_id != claim.boot_id {
        return Err(VerifyPidError::BootId {
            expected: claim.boot_id.clone(),
            actual: boot_id,
        });
    }

    // 4. Start time.
    let start_time = match platform::start_time(pid) {
        Ok(t) => t,
        Err(e) if gone(&e) => return Err(VerifyPidError::Dead { pid }),
        Err(e) => return Err(unreadable("start time")(e)),
    };
    if start_time != claim.start_time {
        return Err(VerifyPidError::StartTime {
            pid,
            expected: claim.start_time,
            actual: start_time,
        });
    }

    // 5. Executable path; a replaced binary is its own failure.
    let exe = match platform::exe_path(pid) {
        Ok(exe) => exe,
        Err(e) if gone(&e) => return Err(VerifyPidError::ExitedDuringCheck { pid }),
        Err(e) => return Err(unreadable("executable path")(e)),
    };
    if exe.path != claim.exe_path {
        return Err(VerifyPidError::ExePath {
            pid,
            expected: claim.exe_path.clone(),
            actual: exe.path,
        });
    }
    if exe.replaced {
        return Err(VerifyPidError::BinaryReplaced {
            pid,
            path: exe.path,
        });
    }

    // 6. Digest of the running image (cached by file identity).
    let digest = match digest(pid) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(e) if gone(&e) => return Err(VerifyPidError::ExitedDuringCheck { pid }),
        Err(e) => return Err(unreadable("executable")(e)),
    };
    if digest != claim.exe_sha256 {
        return Err(VerifyPidError::ExeDigest {
            pid,
            expected: crate::hex::encode(&claim.exe_sha256),
            actual: crate::hex::encode(&digest),
        });
    }

    // 7. Still the same, live process.
    match handle.has_exited() {
        Ok(false) => Ok(Some(handle)),
        Ok(true) => Err(VerifyPidError::ExitedDuringCheck { pid }),
        Err(e) => Err(unreadable("process state")(e)),
    }
}
