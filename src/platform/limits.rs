//! The open-files limit (`RLIMIT_NOFILE`) of the supervising process: raised from the
//! soft to the hard limit once, as systemd and Go's runtime do, and put back to the soft
//! limit the process started with for the children it spawns (a program that still uses
//! `select()` breaks above 1,024 descriptors: systemd gives its services that soft limit
//! too). Windows has no such limit.

use std::io;

/// The limit before and after [`raise_open_files`]; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFilesLimit {
    /// The soft limit the process started with.
    pub before: Option<u64>,
    /// The soft limit now.
    pub soft: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// The soft limit the process started with and the hard one, once [`raise_open_files`]
/// changed the soft limit (so children get the original back).
#[cfg(unix)]
static RAISED: std::sync::OnceLock<(Option<u64>, Option<u64>)> = std::sync::OnceLock::new();

/// Where the hard limit is "unlimited" (macOS), the most a soft limit may be (`OPEN_MAX`).
#[cfg(unix)]
const UNLIMITED_CAP: u64 = 10_240;

/// Raise the soft open-files limit of this process to its hard limit (idempotent). On
/// Windows: unlimited as far as this crate can tell (`Ok` with `None`s).
pub(crate) fn raise_open_files() -> io::Result<OpenFilesLimit> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let now = getrlimit(Resource::Nofile);
        let before = RAISED.get().map_or(now.current, |(before, _)| *before);
        if now.current == now.maximum {
            return Ok(OpenFilesLimit {
                before,
                soft: now.current,
                hard: now.maximum,
            });
        }
        let target = now.maximum.unwrap_or(UNLIMITED_CAP);
        let raised = Rlimit {
            current: Some(target),
            maximum: now.maximum,
        };
        setrlimit(Resource::Nofile, raised)?;
        let _ = RAISED.set((now.current, now.maximum));
        tracing::debug!(
            from = ?now.current,
            to = target,
            "raised the soft open-files limit to the hard limit"
        );
        Ok(OpenFilesLimit {
            before,
            soft: Some(target),
            hard: now.maximum,
        })
    }
    #[cfg(not(unix))]
    {
        Ok(OpenFilesLimit {
            before: None,
            soft: None,
            hard: None,
        })
    }
}

/// The open-files limit a child gets when its spec sets none: the soft limit this process
/// started with (and the hard one), once [`raise_open_files`] raised it; else `None` (the
/// child inherits ours, which is unchanged). Linux only: elsewhere children inherit the
/// raised limit.
pub(crate) fn open_files_for_children() -> Option<(Option<u64>, Option<u64>)> {
    #[cfg(target_os = "linux")]
    return RAISED.get().copied();
    #[cfg(not(target_os = "linux"))]
    None
}
