//! The wire: versioned, length-prefixed frames with a magic prefix and a hard size cap.
//! `docs/PROTOCOL.md` is the normative description; this file implements it.
//!
//! ```text
//! offset  size  field
//! 0       4     magic    00 52 50 44  ("\0RPD")
//! 4       1     version  1
//! 5       1     kind     see `FrameKind`
//! 6       2     reserved 0 (big-endian u16)
//! 8       4     length   payload length, big-endian u32, at most MAX_PAYLOAD
//! 12      len   payload  UTF-8 JSON object
//! ```

use serde::{Deserialize, Serialize};
use tokio_util::bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::identity::DaemonProcess;

/// The four bytes every frame starts with. The leading NUL keeps it apart from text
/// protocols, which lets the responder share one socket with the daemon's own protocol.
pub const MAGIC: [u8; 4] = *b"\0RPD";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 12;
/// Largest accepted payload. Anything bigger is refused before any allocation.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Length of a probe nonce, in bytes.
pub const NONCE_LEN: usize = 32;

/// Frame kinds (byte 5 of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum FrameKind {
    /// Client → daemon: prove your identity by echoing this nonce.
    ProbeRequest = 0x01,
    /// Daemon → client: the nonce and the daemon's identity.
    ProbeReply = 0x02,
    /// Client → daemon: are you responsive?
    Ping = 0x03,
    /// Daemon → client: yes.
    Pong = 0x04,
    /// Client → daemon: stop gracefully.
    Shutdown = 0x05,
    /// Daemon → client: the stop has begun.
    ShutdownAck = 0x06,
    /// Either way: the request could not be served.
    Error = 0x7f,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            0x01 => FrameKind::ProbeRequest,
            0x02 => FrameKind::ProbeReply,
            0x03 => FrameKind::Ping,
            0x04 => FrameKind::Pong,
            0x05 => FrameKind::Shutdown,
            0x06 => FrameKind::ShutdownAck,
            0x7f => FrameKind::Error,
            _ => return None,
        })
    }
}

/// Payload of a probe request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRequest {
    /// A fresh random nonce (64 hex digits on the wire).
    #[serde(with = "crate::hex::serde_array")]
    pub nonce: [u8; NONCE_LEN],
}

/// Payload of a probe reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReply {
    /// The nonce of the request, echoed.
    #[serde(with = "crate::hex::serde_array")]
    pub nonce: [u8; NONCE_LEN],
    /// The service the daemon provides.
    pub service_name: String,
    /// The version of that service.
    pub service_version: String,
    /// The daemon's own identity claim.
    pub daemon: DaemonProcess,
}

/// Payload of an error frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Human-readable reason.
    pub message: String,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// See [`FrameKind::ProbeRequest`].
    ProbeRequest(ProbeRequest),
    /// See [`FrameKind::ProbeReply`].
    ProbeReply(Box<ProbeReply>),
    /// See [`FrameKind::Ping`].
    Ping,
    /// See [`FrameKind::Pong`].
    Pong,
    /// See [`FrameKind::Shutdown`].
    Shutdown,
    /// See [`FrameKind::ShutdownAck`].
    ShutdownAck,
    /// See [`FrameKind::Error`].
    Error(ErrorReply),
}

impl Frame {
    /// The kind byte of this frame.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::ProbeRequest(_) => FrameKind::ProbeRequest,
            Frame::ProbeReply(_) => FrameKind::ProbeReply,
            Frame::Ping => FrameKind::Ping,
            Frame::Pong => FrameKind::Pong,
            Frame::Shutdown => FrameKind::Shutdown,
            Frame::ShutdownAck => FrameKind::ShutdownAck,
            Frame::Error(_) => FrameKind::Error,
        }
    }
}

/// A frame that could not be decoded or encoded. The connection carrying it is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The first bytes are not [`MAGIC`]: the peer does not speak this protocol.
    #[error("not a running-process frame (bad magic {found:02x?})")]
    BadMagic {
        /// The bytes found where the magic belongs.
        found: Vec<u8>,
    },
    /// A version this crate does not speak.
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// An unknown kind byte.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// Reserved header bits were set.
    #[error("reserved header field is 0x{0:04x}, must be 0")]
    Reserved(u16),
    /// The declared payload exceeds [`MAX_PAYLOAD`].
    #[error("frame payload of {len} bytes exceeds the {max}-byte cap")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The payload is not the JSON this kind requires.
    #[error("malformed {kind:?} payload")]
    Payload {
        /// The frame kind.
        kind: FrameKind,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes received of the unfinished frame.
        buffered: usize,
    },
    /// The transport failed.
    #[error("i/o error on the frame stream")]
    Io(#[from] std::io::Error),
}

/// `tokio_util` codec for [`Frame`]s. Refuses bad headers as soon as they arrive and never
/// allocates more than [`MAX_PAYLOAD`] for one frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let seen = src.len().min(MAGIC.len());
        if src[..seen] != MAGIC[..seen] {
            return Err(FrameError::BadMagic {
                found: src[..seen].to_vec(),
            });
        }
        if src.len() < HEADER_LEN {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        }
        let header = parse_header(&src[..HEADER_LEN])?;
        let total = HEADER_LEN + header.len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let payload = src.split_to(header.len);
        decode_payload(header.kind, &payload).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let kind = frame.kind();
        let payload =
            encode_payload(&frame).map_err(|source| FrameError::Payload { kind, source })?;
        if payload.len() > MAX_PAYLOAD {
            return Err(FrameError::TooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        dst.reserve(HEADER_LEN + payload.len());
        dst.put_slice(&MAGIC);
        dst.put_u8(VERSION);
        dst.put_u8(kind as u8);
        dst.put_u16(0);
        // MAX_PAYLOAD fits in u32.
        dst.put_u32(payload.len() as u32);
        dst.put_slice(&payload);
        Ok(())
    }
}

struct Header {
    kind: FrameKind,
    len: usize,
}

fn parse_header(raw: &[u8]) -> Result<Header, FrameError> {
    let version = raw[4];
    if version != VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let kind = FrameKind::from_byte(raw[5]).ok_or(FrameError::UnknownKind(raw[5]))?;
    let reserved = u16::from_be_bytes([raw[6], raw[7]]);
    if reserved != 0 {
        return Err(FrameError::Reserved(reserved));
    }
    let len = u32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_PAYLOAD,
        });
    }
    Ok(Header { kind, len })
}

/// Payload-less kinds carry `{}`; their payload must still be a JSON object.
#[derive(Serialize, Deserialize)]
struct Empty {}

fn decode_payload(kind: FrameKind, payload: &[u8]) -> Result<Frame, FrameError> {
    let err = |source| FrameError::Payload { kind, source };
    // serde would also accept a JSON array for a struct; the protocol says object.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let source =
            <serde_json::Error as serde::de::Error>::custom("payload is not a JSON object");
        return Err(err(source));
    }
    Ok(match kind {
        FrameKind::ProbeRequest => {
            Frame::ProbeRequest(serde_json::from_slice(payload).map_err(err)?)
        }
        FrameKind::ProbeReply => {
            Frame::ProbeReply(Box::new(serde_json::from_slice(payload).map_err(err)?))
        }
        FrameKind::Error => Frame::Error(serde_json::from_slice(payload).map_err(err)?),
        FrameKind::Ping | FrameKind::Pong | FrameKind::Shutdown | FrameKind::ShutdownAck => {
            serde_json::from_slice::<Empty>(payload).map_err(err)?;
            match kind {
                FrameKind::Ping => Frame::Ping,
                FrameKind::Pong => Frame::Pong,
                FrameKind::Shutdown => Frame::Shutdown,
                _ => Frame::ShutdownAck,
            }
        }
    })
}

fn encode_payload(frame: &Frame) -> Result<Vec<u8>, serde_json::Error> {
    match frame {
        Frame::ProbeRequest(p) => serde_json::to_vec(p),
        Frame::ProbeReply(p) => serde_json::to_vec(p),
        Frame::Error(p) => serde_json::to_vec(p),
        Frame::Ping | Frame::Pong | Frame::Shutdown | Frame::ShutdownAck => {
            serde_json::to_vec(&Empty {})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frame: Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec.encode(frame, &mut buf).unwrap();
        buf
    }

    #[test]
    fn round_trips_byte_by_byte() {
        let frame = Frame::ProbeRequest(ProbeRequest {
            nonce: [7; NONCE_LEN],
        });
        let wire = encode(frame.clone());
        let mut buf = BytesMut::new();
        let mut decoded = None;
        for &b in wire.iter() {
            assert!(decoded.is_none(), "decoded before the last byte");
            buf.put_u8(b);
            decoded = FrameCodec.decode(&mut buf).unwrap();
        }
        assert_eq!(decoded, Some(frame));
        assert!(buf.is_empty());
    }

    #[test]
    fn header_layout_is_as_documented() {
        let wire = encode(Frame::Ping);
        assert_eq!(&wire[..], b"\0RPD\x01\x03\x00\x00\x00\x00\x00\x02{}");
    }

    #[test]
    fn refuses_bad_input_early() {
        let mut text = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(
            FrameCodec.decode(&mut text),
            Err(FrameError::BadMagic { .. })
        ));
        let mut one = BytesMut::from(&b"G"[..]);
        assert!(matches!(
            FrameCodec.decode(&mut one),
            Err(FrameError::BadMagic { .. })
        ));
        let mut huge = BytesMut::from(&b"\0RPD\x01\x01\x00\x00\xff\xff\xff\xff"[..]);
        assert!(matches!(
            FrameCodec.decode(&mut huge),
            Err(FrameError::TooLarge { .. })
        ));
        let mut version = BytesMut::from(&b"\0RPD\x02\x01\x00\x00\x00\x00\x00\x00"[..]);
        assert!(matches!(
            FrameCodec.decode(&mut version),
            Err(FrameError::UnsupportedVersion(2))
        ));
        let mut kind = BytesMut::from(&b"\0RPD\x01\x09\x00\x00\x00\x00\x00\x00"[..]);
        assert!(matches!(
            FrameCodec.decode(&mut kind),
            Err(FrameError::UnknownKind(9))
        ));
        let mut reserved = BytesMut::from(&b"\0RPD\x01\x03\x00\x01\x00\x00\x00\x02{}"[..]);
        assert!(matches!(
            FrameCodec.decode(&mut reserved),
            Err(FrameError::Reserved(1))
        ));
        let mut array = BytesMut::from(&b"\0RPD\x01\x03\x00\x00\x00\x00\x00\x02[]"[..]);
        assert!(matches!(
            FrameCodec.decode(&mut array),
            Err(FrameError::Payload { .. })
        ));
        let mut payload = BytesMut::from(&b"\0RPD\x01\x01\x00\x00\x00\x00\x00\x02{}"[..]);
        assert!(matches!(
            FrameCodec.decode(&mut payload),
            Err(FrameError::Payload { .. })
        ));
        let mut cut = BytesMut::from(&b"\0RPD\x01\x03\x00\x00\x00\x00\x00\x02{"[..]);
        assert!(matches!(
            FrameCodec.decode_eof(&mut cut),
            Err(FrameError::Truncated { .. })
        ));
    }
}
