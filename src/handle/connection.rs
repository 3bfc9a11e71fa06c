//! Connections to a backend's socket, with the peer bound to the verified process.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::{prelude::*, Stream};
use tokio_util::codec::Framed;

use crate::error::{BackendHandleError, ProbeError, Result};
use crate::identity::Endpoint;
use crate::protocol::{listener, Frame, FrameCodec};

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

    /// Check that the peer is process `pid` (where the OS reports peer PIDs) running as
    /// `uid` (where the OS has uids).
    pub(crate) fn check_peer(
        &self,
        pid: u32,
        uid: Option<u32>,
        check_pid: bool,
    ) -> Result<(), ProbeError> {
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
        let pid_ok = !check_pid || actual_pid.is_none_or(|p| p == pid);
        let uid_ok = uid.is_none() || actual_uid == uid;
        if pid_ok && uid_ok {
            Ok(())
        } else {
            Err(ProbeError::PeerCredentials {
                expected_pid: pid,
                expected_uid: uid,
                actual_pid,
                actual_uid,
            })
        }
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
