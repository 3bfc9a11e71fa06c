//! Layer 2: identity. [`DaemonProcess`] is the persisted claim a daemon makes about itself;
//! the verification (private here, run by the handle layer) proves or refuses that a live
//! process matches it; [`DigestCache`] hashes executables, keyed by file identity.
//!
//! Uses only the platform layer.

pub(crate) mod daemon_process;
pub(crate) mod digest;
pub(crate) mod endpoint;
pub(crate) mod error;
pub(crate) mod verify;

pub use daemon_process::DaemonProcess;
pub use digest::{DigestCache, DigestCacheStats};
pub use endpoint::Endpoint;
pub use error::{IdentityError, VerifyPidError};
