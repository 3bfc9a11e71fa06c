//! The testing kit, for tests of your own daemons and of your supervision code.
//!
//! - [`EphemeralBackend`] runs a real daemon in its own private temporary directory
//!   (socket, manifest and logs inside it), waits until it is ready, and hands back a
//!   verified handle. Dropping it (also when the test panics) kills the daemon's whole
//!   process tree (its cgroup, else its process group) and removes the directory; if the
//!   test process itself is killed, the daemon dies with it (Linux: `PR_SET_PDEATHSIG`
//!   from the spawner thread, and the cgroup keeper for the rest of the tree). The
//!   daemon's output is captured in the directory and printed only when the test fails.
//! - `EphemeralStack` (feature `toml`) runs the services of a service file for one test:
//!   a private temporary directory, a free loopback port for each `${port:KEY}`, every
//!   service ready before the test goes on; `kill`, `freeze` (SIGSTOP), `thaw` and
//!   `restart` one to test how the code copes; dropping it (also on a panic or when the
//!   test's future is cancelled) kills every tree at once and removes the directory,
//!   keeping the logs beside it when the test failed. `EphemeralStack::run` runs a command
//!   against it, as `running-process run` does.
//! - [`demo_daemon_main`] is a real daemon to run in tests (the crate's own tests use it).
//! - [`free_tcp_port`] finds a loopback port for a daemon under test.
//! - `fake` (feature `test-util`) drives the supervision runtime with fake backends and
//!   no processes at all: crash them, hang them, make them unhealthy or their probe fail,
//!   under tokio's paused time.
//!
//! # Testing against real services
//!
//! ```no_run
//! # #[cfg(feature = "toml")]
//! # async fn a_test() -> Result<(), Box<dyn std::error::Error>> {
//! use running_process::testing::EphemeralStack;
//!
//! // tests/stack.toml:
//! //   [services.redis]
//! //   program = "redis-server"
//! //   args = ["--port", "${port:redis}", "--save", "", "--dir", "${RUNNING_PROCESS_RUN_DIR}"]
//! //   readiness = { kind = "tcp", address = "127.0.0.1:${port:redis}" }
//! let stack = EphemeralStack::start("tests/stack.toml").await?;
//! let port = stack.port("redis").expect("the file uses ${port:redis}");
//! let _client = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
//! stack.kill("redis")?; // a crash: restarted on the same port
//! # Ok(()) }
//! ```
//!
//! Next to testcontainers-rs: no Docker and no images, native processes that start in
//! milliseconds, many stacks of one file side by side. Not a container's isolation: the
//! services run as the test's user, with the machine's programs and file system.

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
