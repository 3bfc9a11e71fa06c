//! Layer 3: protocol. The wire format of the control frames ([`Frame`], [`FrameCodec`],
//! the header constants in [`wire`]), the daemon side that answers them ([`Responder`],
//! with its idle clock), safe socket binding ([`DaemonListener`]), manifest files on disk
//! ([`CacheManifest`]) and the ownership and mode checks on those paths ([`UnsafePath`]);
//! on Unix, the `sd_notify` wire ([`sd_notify`]).
//!
//! Uses the identity and platform layers.

pub(crate) mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod idle;
pub(crate) mod listen_fds;
pub(crate) mod listener;
pub(crate) mod manifest;
pub(crate) mod path_safety;
pub(crate) mod responder;
pub(crate) mod routing;
pub mod sd_notify;

pub use frame::{ErrorReply, Frame, FrameCodec, FrameError, FrameKind, ProbeReply, ProbeRequest};
pub use listen_fds::InheritError;
pub use listener::{BindError, DaemonListener};
pub use manifest::{CacheManifest, ManifestError, MAX_MANIFEST_BYTES, SCHEMA_VERSION};
pub use path_safety::UnsafePath;
pub use responder::{
    AppConnection, Incoming, Responder, DEFAULT_CONTROL_IDLE_TIMEOUT, DEFAULT_FIRST_BYTES_TIMEOUT,
};

/// The constants of the frame header (`docs/PROTOCOL.md`, section 2).
pub mod wire {
    pub use super::frame::{HEADER_LEN, MAGIC, MAX_PAYLOAD, NONCE_LEN, VERSION};
}
