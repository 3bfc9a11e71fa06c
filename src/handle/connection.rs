//! Connections to a backend's socket, with the peer bound to the verified process.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::{prelude::*, Stream};
use tokio_util::codec::Framed;

use super::error::{BackendHandleError, ProbeError, Result};
use crate::identity::Endpoint;
use crate::protocol::{listener, Frame, FrameCodec};

/// Who must be at the other end of a connection to a verified backend.
#[derive(Debug, Clone)]
pub(crate) struct PeerCheck {
    /// The verified process.
    pub pid: u32,
    /// The uid it runs as, where the OS has uids.
    pub uid: Option<u32>,
    /// Compare the peer's PID (off for sockets bound by another process, such as systemd
    /// socket activation); also gates the exact process comparison.
    pub check_pid: bool,
    /// The verified process's token (Linux 6.9+: pidfs inode), compared with the peer's
    /// from `SO_PEERPIDFD`.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub token: Option<u64>,
}

/// A connection to a backend's local socket.
///
/// From [`BackendHandle::connect`](crate::BackendHandle::connect) the peer has been checked
/// to be the verified process; [`Connection::connect`] connects to an endpoint unchecked.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
}

impl Connection {
    /// Connect to `endpoint` without any identity check.
    pub async fn connect(endpoint: &Endpoint) -> Result<Connection> {
        listener::connect(endpoint)
            .await
            .map(|stream| Connection { stream })
            .map_err(BackendHandleError::Connect)
    }

    /// The tokio local-socket stream, for the daemon's own protocol.
    pub fn into_inner(self) -> Stream {
        self.stream
    }

    /// Borrow the stream.
    pub fn get_ref(&self) -> &Stream {
        &self.stream
    }

    /// Check that the peer is the expected process (see [`PeerCheck`]).
    pub(crate) fn check_peer(&self, expected: &PeerCheck) -> Result<(), ProbeError> {
        let creds = self
            .stream
            .peer_creds()
            .map_err(ProbeError::PeerCredentialsUnavailable)?;
        // `pid_t` is signed on Unix and `u32` on Windows.
        #[allow(clippy::useless_conversion)]
        let actual_pid = creds.pid().and_then(|p| u32::try_from(p).ok());
        #[cfg(unix)]
        let actual_uid = creds.euid();
        #[cfg(not(unix))]
        let actual_uid: Option<u32> = None;
        let pid_ok = !expected.check_pid || actual_pid.is_none_or(|p| p == expected.pid);
        let uid_ok = expected.uid.is_none() || actual_uid == expected.uid;
        if !(pid_ok && uid_ok) {
            return Err(ProbeError::PeerCredentials {
                expected_pid: expected.pid,
                expected_uid: expected.uid,
                actual_pid,
                actual_uid,
            });
        }
        if expected.check_pid {
            self.check_peer_process(expected)?;
        }
        Ok(())
    }

    /// Where the kernel names the peer process exactly (Linux: `SO_PEERPIDFD` and pidfs),
    /// require it to be the pinned process itself, not merely one with the same PID.
    #[cfg(unix)]
    fn check_peer_process(&self, expected: &PeerCheck) -> Result<(), ProbeError> {
        use std::os::fd::AsFd;
        let Some(token) = expected.token else {
            return Ok(());
        };
        let interprocess::local_socket::tokio::Stream::UdSocket(socket) = &self.stream;
        match crate::platform::peer_process_token(socket.as_fd()) {
            Ok(None) => Ok(()),
            Ok(Some(peer)) if peer == token => Ok(()),
            Ok(Some(_)) => Err(ProbeError::PeerProcess {
                expected_pid: expected.pid,
                detail: "the listening process is another process (pidfd identity differs)",
            }),
            Err(error) if crate::platform::is_no_such_process(&error) => {
                Err(ProbeError::PeerProcess {
                    expected_pid: expected.pid,
                    detail: "the listening process no longer exists",
                })
            }
            Err(error) => Err(ProbeError::PeerCredentialsUnavailable(error)),
        }
    }

    #[cfg(not(unix))]
    fn check_peer_process(&self, _expected: &PeerCheck) -> Result<(), ProbeError> {
        Ok(())
    }

    /// Send one control frame and read one reply, all within `timeout`.
    pub(crate) async fn request(
        self,
        frame: Frame,
        timeout: Duration,
    ) -> Result<Frame, ProbeError> {
        let exchange = async move {
            let mut framed = Framed::new(self.stream, FrameCodec);
            if let Err(error) = framed.send(frame).await {
                return Err(ProbeError::NoAnswer {
                    detail: format!("sending the request failed: {error}"),
                });
            }
            match framed.next().await {
                None => Err(ProbeError::NoAnswer {
                    detail: "end of stream".into(),
                }),
                Some(Err(crate::protocol::FrameError::Io(error))) => Err(ProbeError::NoAnswer {
                    detail: error.to_string(),
                }),
                Some(Err(error)) => Err(ProbeError::MalformedFrame(error)),
                Some(Ok(Frame::Error(reply))) => Err(ProbeError::Refused {
                    message: reply.message,
                }),
                Some(Ok(reply)) => Ok(reply),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ProbeError::Timeout(timeout)))
    }
}

impl From<Connection> for Stream {
    fn from(connection: Connection) -> Stream {
        connection.stream
    }
}
