//! The probe: the whole identity check, from a claim to a verified process handle.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::error::{BackendHandleError, ProbeError, Result};
use crate::handle::connection::{Connection, PeerCheck};
use crate::identity::{
    verify::{verify_process, verify_process_cached},
    DaemonProcess, Endpoint, IdentityError, VerifyPidError,
};
use crate::platform::{self, ProcessHandle};
use crate::protocol::frame::{ProbeReply, ProbeRequest, NONCE_LEN};
use crate::protocol::{path_safety, Frame};

/// Default deadline for the socket exchange of a probe.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Settings of a probe.
///
/// ```
/// use std::time::Duration;
/// use running_process::ProbeOptions;
/// let options = ProbeOptions::default().timeout(Duration::from_secs(2));
/// assert_eq!(options.get_timeout(), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    timeout: Duration,
    check_peer_pid: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeout: DEFAULT_PROBE_TIMEOUT,
            check_peer_pid: true,
        }
    }
}

impl ProbeOptions {
    /// Deadline for the whole socket exchange: connect, credentials, nonce and reply
    /// (default [`DEFAULT_PROBE_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The configured deadline.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// Require the socket's peer PID to be the daemon's (default `true`). Turn it off for
    /// daemons whose socket is bound by another process (systemd socket activation, a
    /// parent that forks after `listen`); the uid is still checked.
    pub fn check_peer_pid(mut self, check: bool) -> Self {
        self.check_peer_pid = check;
        self
    }

    pub(crate) fn checks_peer_pid(&self) -> bool {
        self.check_peer_pid
    }
}

/// What a successful probe proved.
pub(crate) struct Verified {
    pub handle: ProcessHandle,
    /// Who the socket's peer must be on later connections.
    pub peer: PeerCheck,
    pub reply: ProbeReply,
}

/// Run the identity check of `DESIGN.md` in order. Cancel-safe: dropping the future drops
/// the process handle and the connection.
pub(crate) async fn probe(
    endpoint: &Endpoint,
    claim: &DaemonProcess,
    service: Option<(&str, &str)>,
    options: &ProbeOptions,
) -> Result<Verified> {
    let started = Instant::now();
    // 1. The endpoint asked for is the one in the claim.
    if endpoint != &claim.ipc_endpoint {
        return Err(IdentityError::EndpointMismatch {
            requested: endpoint.clone(),
            recorded: claim.ipc_endpoint.clone(),
        }
        .into());
    }

    // The socket and its directory: no symlinks, the directory private, both owned by the
    // daemon's user (or root), so no one could have planted what we connect to. These are
    // real files (a network home directory can stall), so they are inspected on the
    // blocking pool, in parallel with the process checks; their owners are held against
    // the daemon's uid once that is known, and the process checks' verdict comes first.
    let socket = PathBuf::from(claim.ipc_endpoint.os_name());
    let path_check = tokio::task::spawn_blocking(move || path_safety::inspect_socket(&socket));

    // 2 to 7: handle first, facts, digest, still alive. With the digest already cached
    // the checks only read /proc (memory, and the executable's inode is pinned by the
    // running process, so nothing waits on a disk) and run inline; hashing goes to the
    // blocking pool.
    let (handle, uid) = match verify_process_cached(claim)? {
        Some(handle) => (handle, process_owner(claim.pid)?),
        None => {
            let owned = claim.clone();
            tokio::task::spawn_blocking(move || {
                let handle = verify_process(&owned)?;
                Ok::<_, VerifyPidError>((handle, process_owner(owned.pid)?))
            })
            .await
            .map_err(|join| joined(claim.pid, join))??
        }
    };
    path_check
        .await
        .map_err(|join| joined(claim.pid, join))?
        .and_then(|owners| owners.require(uid))
        .map_err(ProbeError::UnsafeEndpoint)?;
    let peer = PeerCheck {
        pid: claim.pid,
        uid,
        check_pid: options.checks_peer_pid(),
        token: handle.process_token(),
    };
    let process_checked = started.elapsed();

    // 8. The socket: peer credentials, fresh nonce, identity in the reply; one deadline.
    let exchange = async {
        let connection = Connection::connect(endpoint).await?;
        connection.check_peer(&peer)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| BackendHandleError::Connect(std::io::Error::other(e)))?;
        let reply = match connection
            .request(Frame::ProbeRequest(ProbeRequest { nonce }), options.timeout)
            .await?
        {
            Frame::ProbeReply(reply) => *reply,
            other => {
                return Err(ProbeError::UnexpectedFrame {
                    kind: format!("{:?}", other.kind()),
                }
                .into())
            }
        };
        if reply.nonce != nonce {
            return Err(ProbeError::WrongNonce.into());
        }
        Ok::<_, BackendHandleError>(reply)
    };
    let reply = tokio::time::timeout(options.timeout, exchange)
        .await
        .unwrap_or(Err(ProbeError::Timeout(options.timeout).into()))?;

    // The pinned process must still be alive after the exchange: a PID is only recycled
    // after its process is gone, so a live handle means the peer PID was really ours.
    if handle.exit_pending() {
        return Err(VerifyPidError::ExitedDuringCheck { pid: claim.pid }.into());
    }
    if let Some((field, expected, actual)) = claim.first_difference(&reply.daemon) {
        return Err(IdentityError::FieldMismatch {
            field,
            expected,
            actual,
        }
        .into());
    }
    if let Some((name, version)) = service {
        for (field, expected, actual) in [
            ("service_name", name, reply.service_name.as_str()),
            ("service_version", version, reply.service_version.as_str()),
        ] {
            if expected != actual {
                return Err(IdentityError::FieldMismatch {
                    field,
                    expected: expected.to_owned(),
                    actual: actual.to_owned(),
                }
                .into());
            }
        }
    }
    tracing::debug!(
        pid = claim.pid,
        endpoint = %endpoint,
        process_checks_us = process_checked.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "backend verified"
    );
    Ok(Verified {
        handle,
        peer,
        reply,
    })
}

/// The uid that owns process `pid` (`None` where the OS has no uids).
fn process_owner(pid: u32) -> Result<Option<u32>, VerifyPidError> {
    platform::process_uid(pid).map_err(|source| VerifyPidError::Unreadable {
        pid,
        what: "owner",
        source,
    })
}

/// A blocking-pool task that did not finish (panicked, or its runtime shut down).
fn joined(pid: u32, join: tokio::task::JoinError) -> VerifyPidError {
    VerifyPidError::Unreadable {
        pid,
        what: "identity",
        source: std::io::Error::other(join),
    }
}
