//! # running-process
//!
//! Supervise local helper daemons from tokio, without ever trusting the wrong process.
//!
//! A [`BackendHandle`] exists only after a daemon's identity has been **verified**: same
//! boot, same process start time, same executable path and SHA-256 of the running image,
//! and a fresh nonce answered over its local socket by a peer with matching credentials.
//! A stale manifest, PID file or socket path is never trusted. The handle pins the process
//! (Linux pidfd, macOS kqueue, Windows process handle): liveness changes arrive as a
//! [`Stream`](futures::Stream) from the kernel, and signals never reach a recycled PID.
//!
//! ## Layers
//!
//! | module | layer |
//! |---|---|
//! | `platform` (private) | process handles, exit notification, `/proc` facts per OS |
//! | [`identity`] | [`DaemonProcess`] claims, their verification, the digest cache |
//! | [`protocol`] | the wire ([`protocol::frame`]), the daemon-side [`Responder`](protocol::Responder), socket binding, [`CacheManifest`](protocol::CacheManifest) files |
//! | [`handle`] | [`BackendHandle`]: probe, liveness, connect, stop |
//! | [`broker`] | the stable paths existing callers use (re-exports) |
//!
//! ## Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use running_process::broker::backend_handle::BackendHandle;
//! use running_process::broker::protocol::CacheManifest;
//!
//! # async fn demo() -> running_process::Result<()> {
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
//! Only Linux is tested; the macOS and Windows implementations type-check.
//!
//! Verification hashes executables with `sha2`, which a downstream debug build compiles
//! unoptimised (over a second for a 36 MiB binary): add `[profile.dev.package.sha2]
//! opt-level = 3` to your `Cargo.toml` (see the README, "Using it from your crate").

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod broker;
pub mod command;
pub mod error;
pub mod handle;
mod hex;
pub mod identity;
mod platform;
pub mod protocol;
mod serde_util;
pub mod supervision;
pub mod testing;

pub use error::{BackendHandleError, ProbeError, Result};
pub use handle::{BackendHandle, Connection, ExitStatus, GracefulStop, Liveness, ProbeOptions};
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
