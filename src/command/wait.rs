//! Readiness waits: a file appearing, a TCP port accepting connections.
//!
//! On Linux a [`PathWatcher`] is woken by inotify. Elsewhere, or when inotify is
//! unavailable (watch limit reached, seccomp), it wakes every 50 ms instead: the only
//! polling in the crate, and only while waiting for a service to become ready. A port
//! that starts listening raises no event at all, so [`tcp_accepts`] retries connecting.
//! None of these waits has a deadline: the caller applies one.

use std::io;
use std::path::Path;
use std::time::Duration;

/// How often a [`PathWatcher`] without inotify wakes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Wakes when the directory entry of one path may have changed: created, moved into place,
/// written and closed, or its attributes changed.
///
/// Registration happens in [`PathWatcher::new`], so checking a condition and then awaiting
/// [`PathWatcher::changed`] in a loop misses no change. Wakes can be spurious.
#[derive(Debug)]
pub(crate) struct PathWatcher {
    /// `None`: polling (no inotify, or its watch was lost).
    #[cfg(target_os = "linux")]
    inotify: Option<inotify::Watch>,
}

impl PathWatcher {
    /// Start watching `path`. Its parent directory must exist; the file need not.
    /// Must be called within a tokio runtime.
    pub(crate) fn new(path: &Path) -> io::Result<PathWatcher> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !std::fs::metadata(dir)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "the parent of a watched path is not a directory",
            ));
        }
        #[cfg(target_os = "linux")]
        {
            let inotify = inotify::Watch::new(dir, name)
                .inspect_err(|error| {
                    tracing::debug!(?path, %error, "inotify unavailable; polling for readiness");
                })
                .ok();
            Ok(PathWatcher { inotify })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name; // validated all the same: only inotify needs it
            Ok(PathWatcher {})
        }
    }

    /// Resolves at the next event about the watched name (events about other entries of
    /// the directory are ignored), or after [`POLL_INTERVAL`] when polling. Cancel-safe.
    pub(crate) async fn changed(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(watch) = &self.inotify {
            if let inotify::Wake::WatchLost = watch.next().await? {
                // The directory was removed or unmounted: no event will ever come again.
                tracing::debug!("inotify watch lost; polling for readiness");
                self.inotify = None;
            }
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod inotify {
    use std::ffi::{OsStr, OsString};
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::OwnedFd;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
    use rustix::io::Errno;
    use tokio::io::unix::AsyncFd;

    /// An inotify instance watching one directory for one name in it.
    #[derive(Debug)]
    pub(super) struct Watch {
        fd: AsyncFd<OwnedFd>,
        name: OsString,
    }

    /// Why [`Watch::next`] returned.
    pub(super) enum Wake {
        /// An event about the name (or an overflowed queue, which may have dropped one).
        Event,
        /// The watch is gone (directory removed or unmounted); no further events.
        WatchLost,
    }

    impl Watch {
        pub(super) fn new(dir: &Path, name: &OsStr) -> io::Result<Watch> {
            let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
            let events = WatchFlags::CREATE
                | WatchFlags::CLOSE_WRITE
                | WatchFlags::MOVED_TO
                | WatchFlags::ATTRIB
                | WatchFlags::ONLYDIR;
            inotify::add_watch(&fd, dir, events)?;
            Ok(Watch {
                fd: crate::platform::async_fd(fd)?,
                name: name.to_owned(),
            })
        }

        /// Cancel-safe: events are read only between the readiness wake-up and the return.
        pub(super) async fn next(&self) -> io::Result<Wake> {
            loop {
                let mut guard = self.fd.readable().await?;
                let wake = drain(self.fd.get_ref(), self.name.as_bytes())?;
                // `drain` read until EAGAIN, so clearing cannot lose a wake-up.
                guard.clear_ready();
                if let Some(wake) = wake {
                    return Ok(wake);
                }
            }
        }
    }

    /// Read every queued event; report whether any concerned `name`.
    fn drain(fd: &OwnedFd, name: &[u8]) -> io::Result<Option<Wake>> {
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
                        || event.file_name().is_some_and(|n| n.to_bytes() == name)
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
}

/// Resolves once an entry exists at `path` (a dangling symlink counts). It may still be
/// empty or partly written: daemons should create readiness files by renaming them into
/// place. The parent directory must exist.
pub(crate) async fn file_appears(path: &Path) -> io::Result<()> {
    let mut watcher = PathWatcher::new(path)?;
    loop {
        // One `lstat`: too cheap to be worth the blocking pool.
        match std::fs::symlink_metadata(path) {
            Ok(_) => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        watcher.changed().await?;
    }
}

/// Resolves once a TCP connection to `addr` (`host:port`) succeeds; the connection is
/// closed at once. `addr` is resolved once, and every address it yields is tried in turn.
///
/// The OS raises no event when a port starts listening, so this polls, with a delay
/// growing from 5 ms to 200 ms between rounds: quick for a fast service, cheap for a slow
/// one. Errors other than resolution failures are retried; the caller's deadline ends it.
pub(crate) async fn tcp_accepts(addr: &str) -> io::Result<()> {
    const FIRST_DELAY: Duration = Duration::from_millis(5);
    const MAX_DELAY: Duration = Duration::from_millis(200);

    let addrs: Vec<_> = tokio::net::lookup_host(addr).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolved to no address"),
        ));
    }
    let mut delay = FIRST_DELAY;
    loop {
        for addr in &addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => return Ok(()),
                Err(error) => tracing::trace!(%addr, %error, "not accepting yet"),
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const DEADLINE: Duration = Duration::from_secs(30);

    async fn within_deadline<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, future)
            .await
            .expect("not resolved within the deadline")
    }

    /// Wait until `condition` holds, woken by `watcher` (the documented usage).
    async fn wait_until(watcher: &mut PathWatcher, condition: impl Fn() -> bool) {
        within_deadline(async {
            while !condition() {
                watcher.changed().await.unwrap();
            }
        })
        .await;
    }

    #[tokio::test]
    async fn the_watcher_sees_an_atomic_rename_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ready");
        let mut watcher = PathWatcher::new(&target).unwrap();
        let staging = dir.path().join("ready.tmp");
        fs::write(&staging, b"pid 1").unwrap();
        fs::rename(&staging, &target).unwrap();
        wait_until(&mut watcher, || target.exists()).await;
    }

    #[tokio::test]
    async fn the_watcher_sees_a_write_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state");
        fs::write(&target, b"starting").unwrap();
        let mut watcher = PathWatcher::new(&target).unwrap();
        fs::write(&target, b"ready").unwrap();
        wait_until(&mut watcher, || fs::read(&target).unwrap() == b"ready").await;
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_watcher_ignores_other_files_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ready");
        let mut watcher = PathWatcher::new(&target).unwrap();
        assert!(watcher.inotify.is_some(), "inotify unavailable");
        let mut witness = PathWatcher::new(&dir.path().join("other")).unwrap();
        fs::write(dir.path().join("ready.tmp"), b"noise").unwrap();
        fs::write(dir.path().join("other"), b"noise").unwrap();
        // Once the witness has seen "other", the reactor has also seen the watcher's fd
        // readable (same epoll turn, single-threaded runtime): a wake now would be theirs.
        within_deadline(witness.changed()).await.unwrap();
        let woken = futures::FutureExt::now_or_never(watcher.changed());
        assert!(woken.is_none(), "woken by an event about another file");
        fs::write(&target, b"").unwrap();
        within_deadline(watcher.changed()).await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_lost_watch_falls_back_to_polling() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let mut watcher = PathWatcher::new(&sub.join("ready")).unwrap();
        fs::remove_dir(&sub).unwrap();
        within_deadline(watcher.changed()).await.unwrap();
        assert!(watcher.inotify.is_none(), "still waiting on a dead watch");
        // Polling from now on: wakes without any event.
        within_deadline(watcher.changed()).await.unwrap();
    }

    #[tokio::test]
    async fn a_watcher_needs_an_existing_parent_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("ready");
        let error = PathWatcher::new(&missing).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(PathWatcher::new(&file.join("ready")).is_err());
    }

    #[tokio::test]
    async fn file_appears_resolves_when_another_task_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ready");
        let waiter = tokio::spawn({
            let target = target.clone();
            async move { file_appears(&target).await }
        });
        // Created only once the waiter is past its first check, so the wake is exercised;
        // whichever order the two tasks run in, the waiter cannot miss the file.
        tokio::task::yield_now().await;
        fs::write(&target, b"").unwrap();
        within_deadline(waiter).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn file_appears_resolves_at_once_for_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ready");
        fs::write(&target, b"").unwrap();
        within_deadline(file_appears(&target)).await.unwrap();
    }

    #[tokio::test]
    async fn tcp_accepts_resolves_once_a_listener_is_bound() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let waiter = tokio::spawn(async move { tcp_accepts(&addr.to_string()).await });
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("cannot rebind {addr} ({error}); skipping the tcp_accepts check");
                waiter.abort();
                return;
            }
        };
        within_deadline(waiter).await.unwrap().unwrap();
        drop(listener);
    }

    #[tokio::test]
    async fn tcp_accepts_fails_for_an_unresolvable_address() {
        assert!(within_deadline(tcp_accepts("not an address"))
            .await
            .is_err());
    }
}
