//! Layer 5: supervision. A small [`Supervisor`] trait (how to spawn, probe, check and stop
//! one backend) and the runtime that owns the hard loop around it: adopt or spawn, wait
//! until ready, watch liveness and health, restart by policy with backoff and intensity
//! limits, ordered groups with OTP strategies, a typed event stream, clean stops.
//!
//! Vocabulary follows Erlang/OTP's `supervisor` (restart kinds, strategies, intensity,
//! significant children) and systemd's service units.

pub mod event;
pub mod group;
pub mod health;
pub mod policy;
mod runtime;
pub mod supervisor;

pub use event::{Event, EventKind, EventStream, Lagged};
pub use group::{AutoShutdown, GroupSpec, GroupSpecError, Outcome, Strategy};
pub use health::HealthPolicy;
pub use policy::{
    Backoff, Intensity, IntensityExceeded, Jitter, RestartKind, RestartPolicy, Termination,
};
pub use runtime::{supervise, supervise_group, MemberState, MemberStatus, ServiceHandle};
pub use supervisor::{
    ExecFailure, HealthError, LastOutput, SharedSupervisor, SpawnContext, StartError, Supervisor,
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_READY_TIMEOUT, DEFAULT_STOP_GRACE,
};
