//! Layer 6 (conveniences): a ready [`Supervisor`](crate::supervision::Supervisor) for OS
//! commands, configured by a serialisable [`CommandSpec`].

pub(crate) mod output;
pub(crate) mod private_dir;
pub mod shared;
pub mod spec;
pub mod supervisor;
pub(crate) mod wait;

pub use shared::{Acquired, DigestPolicy, SharedDaemon, SharedError};
pub use spec::{
    CommandSpec, HealthCheck, HealthSpec, Output, Readiness, StopSignal, StopSpec, StreamName,
};
pub use supervisor::CommandSupervisor;
