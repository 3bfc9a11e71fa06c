//! Layer 4: the handle. [`BackendHandle`] (probe constructors, liveness, connect, stop),
//! built on the identity check and the wire.

pub mod backend_handle;
pub mod connection;
pub(crate) mod control;
pub mod liveness;
pub mod probe;

pub use backend_handle::{BackendHandle, GracefulStop};
pub use connection::Connection;
pub use liveness::{ExitStatus, Liveness};
pub use probe::{ProbeOptions, DEFAULT_PROBE_TIMEOUT};
