//! Layer 4: the handle. [`BackendHandle`] (probe constructors, liveness, connect, stop),
//! built on the identity check and the wire, and its error types.
//!
//! Uses the protocol, identity and platform layers.

pub(crate) mod backend_handle;
pub(crate) mod connection;
pub(crate) mod error;
pub(crate) mod liveness;
pub(crate) mod probe;
pub(crate) mod signals;

pub use backend_handle::{BackendHandle, GracefulStop};
pub use connection::Connection;
pub use error::{BackendHandleError, ProbeError, Result};
pub use liveness::{ExitStatus, Liveness};
pub use probe::{ProbeOptions, DEFAULT_PROBE_TIMEOUT};
