//! Layer 3: protocol. The wire format of the control frames ([`frame`]), the daemon side
//! that answers them ([`responder`], with its idle clock), safe socket binding
//! ([`listener`]), manifest files on disk ([`manifest`]) and the ownership and mode checks
//! on those paths ([`path_safety`]).

mod control;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod idle;
pub mod listener;
pub mod manifest;
pub mod path_safety;
pub mod responder;
#[cfg(unix)]
pub mod sd_notify;

pub use crate::identity::Endpoint;
pub use frame::{Frame, FrameCodec, FrameError, FrameKind, ProbeReply, ProbeRequest};
pub use listener::{BindError, DaemonListener};
pub use manifest::{CacheManifest, ManifestError, SCHEMA_VERSION};
pub use path_safety::UnsafePath;
pub use responder::{AppConnection, Incoming, Responder};
