//! Errors of the identity layer: which check refused the process.

use std::io;
use std::path::PathBuf;

use super::Endpoint;

/// A check on the process itself (steps 2 to 7 of the identity check) failed.
///
/// Each variant names one check, so a tool can say exactly why a daemon was not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyPidError {
    /// No process with this PID exists (or it is outside our PID namespace).
    #[error("process {pid} is not running")]
    Dead {
        /// The PID from the claim.
        pid: u32,
    },
    /// The OS refused to open a process handle (old kernel or a seccomp profile without
    /// `pidfd_open`), so identity cannot be checked race-free.
    #[error("cannot open a process handle for {pid}")]
    HandleUnsupported {
        /// The PID from the claim.
        pid: u32,
        /// The OS error (ENOSYS or EPERM on Linux).
        #[source]
        source: io::Error,
    },
    /// The claim records no boot id: it cannot be checked, so it is refused (fail closed).
    #[error("the claim records no boot id")]
    EmptyBootId,
    /// The claim was made during another boot.
    #[error("boot id mismatch: claim {expected}, this boot {actual}")]
    BootId {
        /// Boot id in the claim.
        expected: String,
        /// Boot id of the running system.
        actual: String,
    },
    /// The PID belongs to a process started at another time: the PID was recycled.
    #[error(
        "process {pid} start time mismatch: claim {expected}, process {actual} (recycled PID)"
    )]
    StartTime {
        /// The PID from the claim.
        pid: u32,
        /// Start time in the claim.
        expected: u64,
        /// Start time of the process now holding the PID.
        actual: u64,
    },
    /// The process runs another executable than the claim says.
    #[error("process {pid} runs {actual:?}, claim says {expected:?}")]
    ExePath {
        /// The PID from the claim.
        pid: u32,
        /// Executable path in the claim.
        expected: PathBuf,
        /// Executable path of the process.
        actual: PathBuf,
    },
    /// The executable file was deleted or replaced on disk after the process started.
    #[error("the executable of process {pid} ({path:?}) was replaced on disk after it started")]
    BinaryReplaced {
        /// The PID from the claim.
        pid: u32,
        /// The path the process was started from.
        path: PathBuf,
    },
    /// The SHA-256 of the running image differs from the claim.
    #[error(
        "executable digest mismatch for process {pid}: claim {expected}, running image {actual}"
    )]
    ExeDigest {
        /// The PID from the claim.
        pid: u32,
        /// Digest in the claim (hex).
        expected: String,
        /// Digest of the running image (hex).
        actual: String,
    },
    /// The process exited while it was being checked.
    #[error("process {pid} exited during verification")]
    ExitedDuringCheck {
        /// The PID from the claim.
        pid: u32,
    },
    /// A fact about the process could not be read (permissions, `/proc` unavailable).
    #[error("cannot read the {what} of process {pid}")]
    Unreadable {
        /// The PID being checked.
        pid: u32,
        /// Which fact: "boot id", "start time", "executable path", "executable".
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The claim itself does not match what was asked for (step 1 of the identity check in the
/// README) or what the daemon answered (step 10).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The endpoint asked for differs from the endpoint in the claim (step 1).
    #[error("endpoint mismatch: asked for {requested}, claim records {recorded}")]
    EndpointMismatch {
        /// The endpoint the caller asked for.
        requested: Endpoint,
        /// The endpoint recorded in the claim.
        recorded: Endpoint,
    },
    /// The daemon's answer names a different value for one identity field.
    #[error("identity field `{field}` differs: expected {expected:?}, daemon answered {actual:?}")]
    FieldMismatch {
        /// The field that differs, e.g. `start_time` or `service_name`.
        field: &'static str,
        /// The expected value, rendered as text.
        expected: String,
        /// The value the daemon answered, rendered as text.
        actual: String,
    },
}
