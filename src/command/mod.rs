//! Layer 6 (conveniences): a ready [`Supervisor`](crate::supervision::Supervisor) for OS
//! commands, configured by a serialisable [`CommandSpec`].
//!
//! # A service is its whole process tree
//!
//! [`CommandSupervisor`] starts every instance from one spawner thread that lives as long
//! as the process (so `PR_SET_PDEATHSIG` follows the supervisor, not a tokio worker that
//! may retire), with `clone3(CLONE_PIDFD)` (the pidfd comes with the fork), as the spec's
//! user and within its limits. What "the tree" is depends on what the machine allows:
//!
//! | where | the tree | on an unexpected exit of the main process | supervisor SIGKILLed |
//! |---|---|---|---|
//! | Linux, cgroup v2 writable (root, or a delegated subtree) | its own cgroup, entered with `CLONE_INTO_CGROUP` | `cgroup.kill`, then wait for `populated 0` (an event) | main process: parent-death signal; the rest: the keeper process's `cgroup.kill` |
//! | Linux without cgroup v2 for the supervisor (none mounted, its cgroup not writable: chosen once, announced once, shown per service), or [`CommandSpec::cgroup`](CommandSpec#structfield.cgroup) `false` | the process group it leads | SIGKILL to the group while the dead leader is still un-reaped; members found in `/proc`, each exit awaited through its pidfd, until none is left | main process only; `setsid()` children escape everything |
//! | macOS | the process group | the group | nothing: the main process survives too |
//! | Windows | the main process | nothing more | nothing: kill on drop only |
//!
//! Stops follow [`KillMode`]; readiness believes only the tree's own listeners (Linux).
//! Where the machine has cgroup v2 for the supervisor, an instance whose cgroup cannot be
//! created does not start ([`StartError::Cgroup`](crate::supervision::StartError::Cgroup)):
//! it never runs quietly in its process group instead. Each start reports how its tree is
//! tracked ([`MemberStatus::tree`](crate::supervision::MemberStatus::tree)).
//!
//! # Descriptors
//!
//! [`raise_open_files_limit`] raises the supervisor's soft open-files limit to the hard
//! one (children get the original back); [`CommandSpec::descriptor_estimate`] says what a
//! supervisor holds per running instance.
//!
//! # Listeners: restarts that refuse no connection (Linux)
//!
//! A spec's [`Listener`]s are bound by the supervisor once, before the first start, and
//! handed to every instance at descriptors 3, 4, ... with systemd's `LISTEN_FDS`,
//! `LISTEN_PID` and `LISTEN_FDNAMES`; nothing else of the supervisor's descriptors reaches
//! the child. While an instance restarts, clients wait in the backlog.
//! [`CommandSpec::start_on_demand`](CommandSpec#structfield.start_on_demand) starts it on
//! the first connection only, and again after each clean exit. The protocol, and how the
//! child's own pid gets into `LISTEN_PID`: `docs/PROTOCOL.md`, section 1.4.
//!
//! # Example
//!
//! A spec can be written in code or read from a file (every type here is serde, and an
//! unknown key is an error rather than a silent default):
//!
//! ```
//! use running_process::command::{CommandSpec, HealthCheck, Readiness};
//!
//! let spec: CommandSpec = serde_json::from_str(r#"{
//!     "name": "cache",
//!     "program": "redis-server",
//!     "args": ["--port", "6400", "--save", ""],
//!     "readiness": { "kind": "tcp", "address": "127.0.0.1:6400" },
//!     "health": { "check": { "kind": "tcp", "address": "127.0.0.1:6400" }, "interval_ms": 5000 },
//!     "restart": { "kind": "permanent" }
//! }"#)?;
//! assert_eq!(spec.readiness, Readiness::tcp("127.0.0.1:6400"));
//! assert!(matches!(spec.health.unwrap().check, HealthCheck::Tcp { .. }));
//!
//! let typo = serde_json::from_str::<CommandSpec>(r#"{ "name": "x", "program": "x", "argz": [] }"#);
//! assert!(typo.unwrap_err().to_string().contains("unknown field `argz`"));
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! Supervising it is one call, [`supervise`](crate::supervision::supervise) with a
//! [`CommandSupervisor`] (see the crate's front page).

mod checks;
mod descriptors;
mod instance;
pub(crate) mod launch;
mod listeners;
mod notify;
pub(crate) mod output;
pub(crate) mod private_dir;
mod readiness;
pub(crate) mod shared;
pub(crate) mod spec;
mod spec_error;
mod standalone;
mod start;
mod stop;
pub(crate) mod supervisor;
pub(crate) mod wait;

pub use checks::CheckError;
pub use descriptors::{raise_open_files_limit, OpenFiles, SUPERVISOR_DESCRIPTORS};
pub use shared::{Acquired, DigestPolicy, SharedDaemon, SharedError, DEFAULT_LOCK_TIMEOUT};
pub use spec::{
    ByteSize, CommandSpec, CpuQuota, GroupRef, HealthCheck, HealthSpec, KillMode, Limit, Listener,
    Output, Readiness, ResourceLimits, Rotation, StopSignal, StopSpec, StreamName, Umask, UserRef,
    DEFAULT_EXEC_INTERVAL,
};
pub use spec_error::{QuotaError, SpecError};
pub use standalone::{wait_until_ready, WaitError};
pub use supervisor::CommandSupervisor;
