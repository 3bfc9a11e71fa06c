//! The paths existing callers are written against (`running_process::broker::...`).
//! Everything here is a re-export of the layered modules.

/// The wire, manifests and endpoints.
pub mod protocol {
    pub use crate::identity::Endpoint;
    pub use crate::protocol::*;
}

/// The verified handle and its error type.
pub mod backend_handle {
    pub use crate::handle::{
        BackendHandle, Connection, ExitStatus, GracefulStop, Liveness, ProbeOptions,
    };
    pub use crate::handle::{BackendHandleError, ProbeError, Result};
    pub use crate::identity::{DaemonProcess, IdentityError, VerifyPidError};
}
