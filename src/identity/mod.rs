//! Layer 2: identity. [`DaemonProcess`] is the persisted claim a daemon makes about itself;
//! `verify` proves (or refuses) that a live process matches it;
//! [`digest`] hashes executables with a cache keyed by file identity.

pub mod daemon_process;
pub mod digest;
pub mod endpoint;
pub mod error;
pub(crate) mod verify;

pub use daemon_process::DaemonProcess;
pub use digest::{DigestCache, DigestCacheStats};
pub use endpoint::Endpoint;
pub use error::{IdentityError, VerifyPidError};
