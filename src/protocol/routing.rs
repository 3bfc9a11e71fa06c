//! The [`Responder`]'s decisions without the I/O: how a new connection is routed from its
//! first bytes, and what a control connection answers to the bytes it sends. The responder
//! wraps these in sockets and timeouts; the fuzz targets and property tests drive them
//! directly, so what they exercise is the code that serves real connections.

use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::frame::{ErrorReply, Frame, FrameCodec, ProbeReply, MAGIC};
use crate::identity::DaemonProcess;

/// Where a new connection goes, decided by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// It starts with [`MAGIC`]: the responder answers it.
    Control,
    /// Anything else, or nothing before the first-bytes timeout: the application gets it,
    /// with the peeked bytes replayed.
    Application,
    /// The peer closed it without sending a byte.
    Closed,
}

/// How many more bytes to peek at before routing a connection that has sent `prefix`:
/// none once `prefix` is the whole magic or has left it.
pub fn peek_wanted(prefix: &[u8]) -> usize {
    if prefix.len() < MAGIC.len() && MAGIC.starts_with(prefix) {
        MAGIC.len() - prefix.len()
    } else {
        0
    }
}

/// Route a connection that sent `prefix` before the peek stopped. `peer_closed` says the
/// peek stopped because the stream ended (rather than because [`peek_wanted`] reached 0 or
/// the first-bytes timeout expired).
pub fn route(prefix: &[u8], peer_closed: bool) -> Route {
    if prefix.starts_with(&MAGIC) {
        Route::Control
    } else if prefix.is_empty() && peer_closed {
        Route::Closed
    } else {
        Route::Application
    }
}

/// What a control connection calls for next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAction {
    /// Send this frame; if that fails, close the connection.
    Reply(Frame),
    /// Send [`Frame::ShutdownAck`], then cancel the shutdown token whether or not the
    /// acknowledgement could be sent.
    AckShutdown,
    /// Close the connection. Nothing follows.
    Close,
}

/// The state of one control connection: bytes go in ([`receive`](Self::receive),
/// [`receive_eof`](Self::receive_eof)), [`ControlAction`]s come out
/// ([`next_action`](Self::next_action)). One request frame gives one answer; a malformed
/// stream gives an error frame and then [`ControlAction::Close`]; so does the end of the
/// stream in the middle of a frame, and a clean end gives just the close.
///
/// The buffer stays bounded, to one unfinished frame (header and at most
/// [`MAX_PAYLOAD`](super::frame::MAX_PAYLOAD) bytes) plus what one `receive` adds, as long
/// as the caller drains [`next_action`](Self::next_action) before receiving more.
#[derive(Debug)]
pub struct ControlSession {
    buffer: BytesMut,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes may still arrive.
    Open,
    /// The peer finished sending; frames still buffered are answered.
    Ended,
    /// An error frame went out; the close comes next.
    Closing,
    /// The close went out.
    Closed,
}

impl ControlSession {
    /// A session whose peer has sent `prefix` so far (the bytes the router peeked).
    pub fn new(prefix: &[u8]) -> Self {
        ControlSession {
            buffer: BytesMut::from(prefix),
            state: State::Open,
        }
    }

    /// More bytes from the peer. Ignored once the stream ended or the session closes.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.state == State::Open {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// The peer will send nothing more.
    pub fn receive_eof(&mut self) {
        if self.state == State::Open {
            self.state = State::Ended;
        }
    }

    /// Bytes received and not yet decoded.
    #[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next thing to do, answering as `responder`; `None` when the session needs more
    /// bytes (or has closed).
    pub fn next_action(&mut self, responder: &Presented) -> Option<ControlAction> {
        let decoded = match self.state {
            State::Closed => return None,
            State::Closing => {
                self.state = State::Closed;
                return Some(ControlAction::Close);
            }
            State::Open => FrameCodec.decode(&mut self.buffer),
            State::Ended => FrameCodec.decode_eof(&mut self.buffer),
        };
        match decoded {
            Ok(Some(frame)) => Some(answer(responder, frame)),
            Ok(None) if self.state == State::Open => None,
            Ok(None) => {
                self.state = State::Closed;
                Some(ControlAction::Close)
            }
            Err(error) => {
                tracing::debug!(%error, "malformed control frame; closing");
                self.state = State::Closing;
                self.buffer = BytesMut::new();
                Some(ControlAction::Reply(Frame::Error(ErrorReply {
                    message: error.to_string(),
                })))
            }
        }
    }
}

/// What a daemon presents in its answer to an identity probe, besides the nonce.
#[derive(Debug, Clone)]
pub struct Presented {
    /// The service it provides.
    pub service_name: String,
    /// The version of that service.
    pub service_version: String,
    /// Its own identity.
    pub daemon: DaemonProcess,
}

/// The answer to one well-formed request.
fn answer(responder: &Presented, frame: Frame) -> ControlAction {
    match frame {
        Frame::ProbeRequest(request) => {
            tracing::trace!("identity probe");
            ControlAction::Reply(Frame::ProbeReply(Box::new(ProbeReply {
                nonce: request.nonce,
                service_name: responder.service_name.clone(),
                service_version: responder.service_version.clone(),
                daemon: responder.daemon.clone(),
            })))
        }
        Frame::Ping => ControlAction::Reply(Frame::Pong),
        Frame::Shutdown => {
            tracing::info!("shutdown requested over the socket");
            ControlAction::AckShutdown
        }
        other => ControlAction::Reply(Frame::Error(ErrorReply {
            message: format!("unexpected {:?} frame", other.kind()),
        })),
    }
}
