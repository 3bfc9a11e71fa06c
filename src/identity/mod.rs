//! Layer 2: identity. [`DaemonProcess`] is the persisted claim a daemon makes about itself;
//! `verify` proves (or refuses) that a live process matches it;
//! [`digest`] hashes executables with a cache keyed by file identity.

pub mod daemon_process;
pub mod endpoint;
pub mod digest;
pub mod error;
pub(crate) mod verify;

pub use daemon_process::DaemonProcess;
pub use endpoint::Endpoint;
pub use digest::{DigestCache, DigestCacheStats};
pub use error::{IdentityError, VerifyPidError};
