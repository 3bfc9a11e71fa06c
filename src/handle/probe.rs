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

/// Run the identity check, in the order the README's "What is checked, in order" lists
/// (steps 1 to 10). Cancel-safe: dropping the future drops the process handle and the
/// connection.
pub(crate) async fn probe(
    endpoint: &Endpoint,
    claim: &DaemonProcess,
    service: Option<(&str, &str)>,
    options: &ProbeOptions,
) -> Result<Verified> {
    let started = Instant::now();
    check_endpoint(endpoint, claim)?;
    // 2 to 7 and 8 run together; the process checks' verdict comes first.
    let socket = PathBuf::from(claim.ipc_endpoint.os_name());
    // `join!` polls in order: the path inspection (real files, which a network home
    // directory can stall) is handed to the blocking pool first, then the process checks
    // run meanwhile.
    let (owners, process) = tokio::join!(
        crate::blocking::blocking(move || path_safety::inspect_socket(&socket)),
        check_process(claim),
    );
    let (handle, uid) = process?;
    owners
        .and_then(|owners| owners.require(uid))
        .map_err(ProbeError::UnsafeEndpoint)?;
    let peer = PeerCheck {
        pid: claim.pid,
        uid,
        check_pid: options.checks_peer_pid(),
        token: handle.process_token(),
    };
    let process_checked = started.elapsed();
    let reply = tokio::time::timeout(options.timeout, exchange_nonce(endpoint, &peer, options))
        .await
        .unwrap_or(Err(ProbeError::Timeout(options.timeout).into()))?;
    check_reply(&handle, claim, &reply, service)?;
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

/// Step 1: the endpoint asked for is the one in the claim.
fn check_endpoint(endpoint: &Endpoint, claim: &DaemonProcess) -> Result<()> {
    if endpoint == &claim.ipc_endpoint {
        return Ok(());
    }
    Err(IdentityError::EndpointMismatch {
        requested: endpoint.clone(),
        recorded: claim.ipc_endpoint.clone(),
    }
    .into())
}

/// Steps 2 to 7: handle first, facts, digest, still alive; and the process's owner. With
/// the digest already cached the checks only read `/proc` (memory; the executable's inode
/// is pinned by the running process, so nothing waits on a disk) and run inline; hashing
/// goes to the blocking pool.
async fn check_process(claim: &DaemonProcess) -> Result<(ProcessHandle, Option<u32>)> {
    if let Some(handle) = verify_process_cached(claim)? {
        return Ok((handle, process_owner(claim.pid)?));
    }
    let owned = claim.clone();
    let checked = crate::blocking::blocking(move || {
        let handle = verify_process(&owned)?;
        Ok::<_, VerifyPidError>((handle, process_owner(owned.pid)?))
    });
    Ok(checked.await?)
}

/// Step 9: connect, check the peer's credentials against `peer`, send a fresh nonce and
/// require it echoed in a probe reply. The caller applies the deadline.
async fn exchange_nonce(
    endpoint: &Endpoint,
    peer: &PeerCheck,
    options: &ProbeOptions,
) -> Result<ProbeReply> {
    let connection = Connection::connect(endpoint).await?;
    connection.check_peer(peer)?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| BackendHandleError::Connect(std::io::Error::other(e)))?;
    let request = Frame::ProbeRequest(ProbeRequest { nonce });
    let reply = match connection.request(request, options.timeout).await? {
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
    Ok(reply)
}

/// Step 10: the pinned process is still alive after the exchange (a PID is only recycled
/// after its process is gone, so a live handle means the peer PID was really ours), and
/// the reply's identity, and service when asked, are the claim's.
fn check_reply(
    handle: &ProcessHandle,
    claim: &DaemonProcess,
    reply: &ProbeReply,
    service: Option<(&str, &str)>,
) -> Result<()> {
    if handle.exit_pending() {
        return Err(VerifyPidError::ExitedDuringCheck { pid: claim.pid }.into());
    }
    let mismatch = |(field, expected, actual)| IdentityError::FieldMismatch {
        field,
        expected,
        actual,
    };
    if let Some(difference) = claim.first_difference(&reply.daemon) {
        return Err(mismatch(difference).into());
    }
    let Some((name, version)) = service else {
        return Ok(());
    };
    for (field, expected, actual) in [
        ("service_name", name, reply.service_name.as_str()),
        ("service_version", version, reply.service_version.as_str()),
    ] {
        if expected != actual {
            return Err(mismatch((field, expected.to_owned(), actual.to_owned())).into());
        }
    }
    Ok(())
}

/// The uid that owns process `pid` (`None` where the OS has no uids).
fn process_owner(pid: u32) -> Result<Option<u32>, VerifyPidError> {
    platform::process_uid(pid).map_err(|source| VerifyPidError::Unreadable {
        pid,
        what: "owner",
        source,
    })
}
