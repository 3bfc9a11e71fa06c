//! The crate's error type for handles and probes. Each variant says which check failed;
//! the layer errors it wraps ([`VerifyPidError`], [`IdentityError`], [`ProbeError`], ...)
//! name the exact step.

use std::io;
use std::time::Duration;

use crate::identity::{IdentityError, VerifyPidError};
use crate::protocol::{BindError, FrameError, ManifestError, UnsafePath};

/// `Result` with [`BackendHandleError`].
pub type Result<T, E = BackendHandleError> = std::result::Result<T, E>;

/// Why a backend could not be verified, reached or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendHandleError {
    /// The claim does not match what was asked for or what the daemon answered.
    #[error("identity check failed")]
    Identity(#[from] IdentityError),
    /// The process behind the PID is not the claimed one (dead, recycled, replaced...).
    #[error("process check failed")]
    VerifyPid(#[from] VerifyPidError),
    /// The socket exchange with the daemon failed.
    #[error("probe failed")]
    Probe(#[from] ProbeError),
    /// Connecting to the daemon's endpoint failed.
    #[error("cannot connect to the backend")]
    Connect(#[source] io::Error),
    /// A manifest could not be read or written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The daemon's socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The backend did not exit within the graceful-stop timeout. The handle is still
    /// usable: call `force_kill`.
    #[error("backend {pid} did not stop within the timeout")]
    ShutdownTimeout {
        /// The backend's PID.
        pid: u32,
    },
    /// A signal could not be delivered through the process handle.
    #[error("cannot signal backend {pid}")]
    Signal {
        /// The backend's PID.
        pid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The socket of a probe failed a check: its path (step 8 of the identity check in the
/// README) or the exchange over it (step 9).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The peer on the socket is not the verified process (or runs as another user).
    #[error("peer credentials mismatch: expected pid {expected_pid} uid {expected_uid:?}, peer has pid {actual_pid:?} uid {actual_uid:?}")]
    PeerCredentials {
        /// The verified process.
        expected_pid: u32,
        /// The uid that owns the verified process, where the OS has uids.
        expected_uid: Option<u32>,
        /// The peer's pid as reported by the OS, if it reports one.
        actual_pid: Option<u32>,
        /// The peer's uid, if the OS reports one.
        actual_uid: Option<u32>,
    },
    /// The kernel names the socket's peer process exactly (Linux: `SO_PEERPIDFD`), and it is
    /// not the verified process.
    #[error("the socket's peer is not the verified process {expected_pid}: {detail}")]
    PeerProcess {
        /// The verified process.
        expected_pid: u32,
        /// What the kernel said.
        detail: &'static str,
    },
    /// The socket path or its directory could have been planted or replaced by another
    /// user (a symlink, a directory writable by others, another owner): not connected to.
    #[error("the endpoint is not trusted")]
    UnsafeEndpoint(#[source] UnsafePath),
    /// The peer's credentials could not be read.
    #[error("cannot read peer credentials")]
    PeerCredentialsUnavailable(#[source] io::Error),
    /// The peer closed the connection without answering.
    #[error("the peer closed the connection without answering ({detail})")]
    NoAnswer {
        /// What happened.
        detail: String,
    },
    /// The reply echoed another nonce.
    #[error("the reply carries the wrong nonce")]
    WrongNonce,
    /// The peer sent bytes that are not a valid frame.
    #[error("malformed frame from the peer")]
    MalformedFrame(#[source] FrameError),
    /// The peer sent a valid frame of the wrong kind.
    #[error("unexpected {kind} frame from the peer")]
    UnexpectedFrame {
        /// Debug name of the frame kind received.
        kind: String,
    },
    /// The daemon answered with an error frame.
    #[error("the daemon refused: {message}")]
    Refused {
        /// The daemon's message.
        message: String,
    },
    /// No complete answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}
