//! The testing kit, for tests of your own daemons and of your supervision code.
//!
//! - [`EphemeralBackend`] runs a real daemon in its own private temporary directory
//!   (socket, manifest and logs inside it), waits until it is ready, and hands back a
//!   verified handle. Dropping it (also when the test panics) kills the daemon's whole
//!   process tree (its cgroup, else its process group) and removes the directory; if the
//!   test process itself is killed, the daemon dies with it (Linux: `PR_SET_PDEATHSIG`
//!   from the spawner thread, and the cgroup keeper for the rest of the tree). The daemon's output is captured in the
//!   directory and printed only when the test fails.
//! - [`demo_daemon_main`] is a real daemon to run in tests (the crate's own tests use it).
//! - [`free_tcp_port`] finds a loopback port for a daemon under test.
//! - `fake` (feature `test-util`) drives the supervision runtime with fake backends and
//!   no processes at all: crash them, hang them, make them unhealthy or their probe fail,
//!   under tokio's paused time.

mod demo_daemon;
mod ephemeral;
#[cfg(feature = "test-util")]
pub mod fake;
mod ports;
#[cfg(feature = "toml")]
mod run;
#[cfg(feature = "toml")]
mod stack;

pub use demo_daemon::demo_daemon_main;
pub use ephemeral::EphemeralBackend;
pub use ports::free_tcp_port;
#[cfg(feature = "toml")]
pub use run::{RunOptions, RunReport, ServiceFailure, DEFAULT_COMMAND_GRACE};
#[cfg(feature = "toml")]
pub use stack::{EphemeralStack, EphemeralStackBuilder, StackError, RUN_DIR_VARIABLE};
