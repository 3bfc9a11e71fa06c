//! inotify, registered with the tokio reactor: wake-ups for "this directory entry may have
//! changed" (readiness files, manifests) and "this file was modified" (a cgroup's
//! `cgroup.events`). Cancel-safe; wakes can be spurious, so callers re-check their
//! condition after each one.

use std::ffi::{OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use tokio::io::unix::AsyncFd;

/// An inotify instance with one watch.
///
/// Closing an inotify instance waits for an SRCU grace period in the kernel
/// (`fsnotify_destroy_group`): 10 to 20 ms measured here. Dropping a `Watch` therefore
/// closes it on the blocking pool, never on the async worker that dropped it.
#[derive(Debug)]
pub(crate) struct Watch {
    /// Always `Some` until dropped.
    fd: Option<AsyncFd<OwnedFd>>,
    /// Only events about this name in the watched directory count (`None`: every event).
    name: Option<OsString>,
}

/// Why [`Watch::next`] returned.
pub(crate) enum Wake {
    /// An event about the watched name (or an overflowed queue, which may have dropped one).
    Event,
    /// The watch is gone (directory removed or unmounted); no further events.
    WatchLost,
}

impl Watch {
    /// Watch directory `dir` for entries called `name` being created, moved in, written
    /// and closed, or changed in their attributes.
    pub(crate) fn entry(dir: &Path, name: &OsStr) -> io::Result<Watch> {
        let events = WatchFlags::CREATE
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::ATTRIB
            | WatchFlags::ONLYDIR;
        Self::new(dir, events, Some(name.to_owned()))
    }

    /// Watch one file for modification (kernel-generated files such as `cgroup.events`
    /// raise `IN_MODIFY` when their content changes).
    pub(crate) fn modified(file: &Path) -> io::Result<Watch> {
        Self::new(file, WatchFlags::MODIFY, None)
    }

    fn new(path: &Path, events: WatchFlags, name: Option<OsString>) -> io::Result<Watch> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        inotify::add_watch(&fd, path, events)?;
        Ok(Watch {
            fd: Some(super::async_fd(fd)?),
            name,
        })
    }

    /// Resolves at the next event that concerns the watched name. Cancel-safe: events are
    /// read only between the readiness wake-up and the return.
    pub(crate) async fn next(&self) -> io::Result<Wake> {
        let fd = self.fd.as_ref().expect("present until dropped");
        loop {
            let mut guard = fd.readable().await?;
            let wake = drain(fd.get_ref(), self.name.as_deref().map(OsStr::as_bytes))?;
            // `drain` read until EAGAIN, so clearing cannot lose a wake-up.
            guard.clear_ready();
            if let Some(wake) = wake {
                return Ok(wake);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        // Deregistered from the reactor here; closed where blocking is allowed.
        let fd = fd.into_inner();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(fd))),
            Err(_) => drop(fd),
        }
    }
}

/// Read every queued event; report whether any concerned `name` (any, when `None`).
fn drain(fd: &OwnedFd, name: Option<&[u8]>) -> io::Result<Option<Wake>> {
    // Room for at least one event with the longest name (16 + NAME_MAX + 1 bytes).
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut wake = None;
    loop {
        match reader.next() {
            Ok(event) => {
                let flags = event.events();
                if flags.intersects(ReadFlags::IGNORED | ReadFlags::UNMOUNT) {
                    wake = Some(Wake::WatchLost);
                } else if flags.contains(ReadFlags::QUEUE_OVERFLOW)
                    || name.is_none()
                    || event
                        .file_name()
                        .is_some_and(|n| Some(n.to_bytes()) == name)
                {
                    wake.get_or_insert(Wake::Event);
                }
            }
            Err(Errno::AGAIN) => return Ok(wake),
            Err(Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}
