//! Layer 6 (conveniences): a ready [`Supervisor`](crate::supervision::Supervisor) for OS
//! commands, configured by a serialisable [`CommandSpec`].

mod launch;
mod notify;
pub(crate) mod output;
pub(crate) mod private_dir;
mod probes;
mod readiness;
pub mod shared;
pub mod spec;
pub mod supervisor;
mod tree;
pub(crate) mod wait;

pub use shared::{Acquired, DigestPolicy, SharedDaemon, SharedError};
pub use spec::{
    CommandSpec, GroupRef, HealthCheck, HealthSpec, KillMode, Limit, Output, Readiness,
    ResourceLimits, Rotation, StopSignal, StopSpec, StreamName, Umask, UserRef,
};
pub use supervisor::CommandSupervisor;
