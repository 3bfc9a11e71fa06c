//! # running-process
//!
//! Supervise local helper daemons from tokio, without ever trusting the wrong process.
//!
//! A [`BackendHandle`] exists only after a daemon's identity has been **verified**: same
//! boot, same process start time, same executable path and SHA-256 of the running image,
//! and a fresh nonce answered over its local socket by a peer with matching credentials.
//! A stale manifest, PID file or socket path is never trusted. The handle pins the process
//! (Linux pidfd, macOS kqueue, Windows process handle): liveness changes arrive as a
//! stream from the kernel, and signals never reach a recycled PID.
//!
//! ## Supervise a program, with auto-restart
//!
//! A [`CommandSpec`](command::CommandSpec) says what to run and when it is ready; the
//! runtime restarts it by its [`RestartPolicy`](supervision::RestartPolicy) (exponential
//! backoff, intensity limit) and reports every step as a typed [`Event`](supervision::Event).
//!
//! ```no_run
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use running_process::command::{CommandSpec, CommandSupervisor, Readiness};
//! use running_process::supervision::supervise;
//!
//! # async fn demo() {
//! let spec = CommandSpec::new("web", "python3")
//!     .args(["-m", "http.server", "8000", "--bind", "127.0.0.1"])
//!     .readiness(Readiness::Tcp { address: "127.0.0.1:8000".into() });
//! let service = supervise(Arc::new(CommandSupervisor::new(spec)));
//! let mut events = service.events();
//! tokio::spawn(async move {
//!     while let Some(Ok(event)) = events.next().await {
//!         println!("{event}"); // "web: spawned pid 4242", "web: ready", ...
//!     }
//! });
//! service.ready().await.expect("web started");
//! // ... crashes are restarted; stop() stops the whole process tree.
//! service.stop().await;
//! # }
//! ```
//!
//! ## Spawn an ephemeral backend in a test
//!
//! [`EphemeralBackend`](testing::EphemeralBackend) runs a real daemon in a private temporary
//! directory, waits until it is ready and verified, and kills its whole tree and removes
//! the directory when dropped, also when the test panics.
//!
//! ```no_run
//! use running_process::command::{CommandSpec, Readiness};
//! use running_process::testing::EphemeralBackend;
//!
//! # async fn a_test() -> Result<(), running_process::supervision::StartError> {
//! // In an integration test, `env!("CARGO_BIN_EXE_my-daemon")` names your daemon's binary.
//! let backend = EphemeralBackend::start(|dir| {
//!     CommandSpec::new("my-daemon", "/path/to/my-daemon")
//!         .args(["--socket", &dir.join("d.sock").display().to_string()])
//!         .args(["--manifest", &dir.join("d.json").display().to_string()])
//!         .readiness(Readiness::Manifest { path: dir.join("d.json") })
//! })
//! .await?;
//! let _connection = backend.handle().connect().await?;
//! # Ok(()) }
//! ```
//!
//! ## Run several helpers, in order
//!
//! A [`GroupSpec`](supervision::GroupSpec) starts its members in order, each once the one
//! before it is ready, restarts them by an OTP strategy and stops them in reverse order.
//!
//! ```no_run
//! use std::sync::Arc;
//! use running_process::command::{CommandSpec, CommandSupervisor, Readiness};
//! use running_process::supervision::{supervise_group, GroupSpec, Strategy};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = CommandSpec::new("store", "redis-server")
//!     .args(["--port", "6400", "--save", ""])
//!     .readiness(Readiness::Tcp { address: "127.0.0.1:6400".into() });
//! let indexer = CommandSpec::new("indexer", "/usr/local/bin/indexer")
//!     .readiness(Readiness::Notify); // sd_notify READY=1
//! let group = GroupSpec::new("app")
//!     .strategy(Strategy::RestForOne) // the store restarts: so does the indexer
//!     .service(Arc::new(CommandSupervisor::new(store)))
//!     .service(Arc::new(CommandSupervisor::new(indexer)));
//! let app = supervise_group(group)?;
//! app.ready().await.map_err(|outcome| format!("{outcome:?}"))?;
//! for member in app.status() {
//!     println!("{} {:?} pid {:?}", member.name, member.state, member.pid);
//! }
//! app.stop().await;
//! # Ok(()) }
//! ```
//!
//! ## Run a file of services
//!
//! A [`ServiceFile`](compose::ServiceFile) (TOML with the feature `toml`) names several
//! commands, their `depends_on` conditions and the set's strategy; a
//! [`Stack`](compose::Stack) runs it: independent services in parallel, dependants once
//! their dependencies are ready, healthy or completed, dependants stopped first. The
//! `running-process` command line (feature `cli`) is this, plus a detached supervisor.
//!
//! ```no_run
//! # #[cfg(feature = "toml")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures_util::StreamExt;
//! use running_process::compose::{ServiceFile, Stack};
//!
//! let stack = Stack::start(ServiceFile::load("running-process.toml").await?)?;
//! let mut events = stack.events();
//! tokio::spawn(async move {
//!     while let Some(Ok(event)) = events.next().await {
//!         println!("{event}"); // "12:00:01.250 web: waiting for store ready", ...
//!     }
//! });
//! stack.ready().await.map_err(|outcome| outcome.to_string())?;
//! stack.stop().await;
//! # Ok(()) }
//! ```
//!
//! ## Trust nothing on disk
//!
//! ```no_run
//! use std::time::Duration;
//! use running_process::handle::BackendHandle;
//! use running_process::protocol::CacheManifest;
//!
//! # async fn demo() -> running_process::handle::Result<()> {
//! if let Some(manifest) = CacheManifest::read("/run/user/1000/my-app/cache.json").await? {
//!     if let Some(handle) = BackendHandle::probe_manifest(&manifest).await {
//!         println!("reusing verified daemon {}", handle.pid());
//!         let _stream = handle.connect().await?.into_inner();
//!         handle.stop(Duration::from_secs(5)).await?;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! ## Layers
//!
//! Each module uses only the ones above it in this table (`tests/layers.rs` checks it).
//!
//! | module | layer |
//! |---|---|
//! | [`report`] | [`Chain`](report::Chain): an error and its causes on one line |
//! | `platform` (private) | process handles, spawning, exit notification, `/proc`, cgroups, per OS |
//! | [`identity`] | [`DaemonProcess`] claims, their verification, the digest cache |
//! | [`protocol`] | the wire ([`Frame`](protocol::Frame)), the daemon-side [`Responder`](protocol::Responder), socket binding (or taking the socket a supervisor passed), [`CacheManifest`](protocol::CacheManifest) files, `sd_notify` |
//! | [`handle`] | [`BackendHandle`]: probe, liveness, connect, stop |
//! | [`supervision`] | the [`Supervisor`](supervision::Supervisor) trait and the runtime: restarts, groups, events |
//! | [`command`] | [`CommandSupervisor`](command::CommandSupervisor) for OS programs, [`SharedDaemon`](command::SharedDaemon) |
//! | [`compose`] | a [`ServiceFile`](compose::ServiceFile) of services with dependencies, run as a [`Stack`](compose::Stack) (the `running-process` command line) |
//! | [`testing`] | [`EphemeralBackend`](testing::EphemeralBackend), fake backends (feature `test-util`) |
//!
//! Every item has one path, in its layer. The root re-exports the headline types of the
//! handle and identity layers ([`BackendHandle`], [`BackendHandleError`], [`Result`],
//! [`Connection`], [`ExitStatus`], [`GracefulStop`], [`Liveness`], [`ProbeError`],
//! [`ProbeOptions`], [`DaemonProcess`], [`Endpoint`]). `running_process::broker::...` is
//! the older set of paths, kept for existing callers (`docs/API.md`).
//!
//! ## Using it from your crate
//!
//! - Verification hashes executables with `sha2`, which a debug build compiles unoptimised
//!   (over a second per verified spawn of a 36 MiB debug binary). Add to your
//!   `Cargo.toml`:
//!   ```toml
//!   [profile.dev.package.sha2]
//!   opt-level = 3
//!   ```
//! - An integration test finds a binary of its own package with
//!   `env!("CARGO_BIN_EXE_<name>")`; [`testing::free_tcp_port`] gives it a port.
//! - Linux is tested natively (cgroup v2 where writable, else process groups), Windows
//!   under Wine in CI; macOS type-checks. What differs: the `command` module docs.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod blocking;
#[doc(hidden)]
pub mod broker;
pub mod command;
pub mod compose;
pub mod handle;
mod hex;
pub mod identity;
mod platform;
pub mod protocol;
pub mod report;
mod serde_util;
pub mod supervision;
#[cfg(test)]
mod test_util;
pub mod testing;

#[doc(no_inline)]
pub use handle::{
    BackendHandle, BackendHandleError, Connection, ExitStatus, GracefulStop, Liveness, ProbeError,
    ProbeOptions, Result,
};
#[doc(no_inline)]
pub use identity::{DaemonProcess, Endpoint};

/// The usage examples of `docs/API.md` (the contract with existing callers), compiled as
/// doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/API.md")]
pub struct ApiExamples;

/// The README's examples, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;
