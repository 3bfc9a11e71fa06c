//! Binding a daemon's socket safely: private directory, 0600 socket, a stale socket from a
//! crashed predecessor replaced, a live one never displaced. Or taking it from the
//! supervisor that holds it (socket activation, `listen_fds.rs`).

use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};

use super::listen_fds::{self, InheritError};
use crate::identity::Endpoint;

/// Why a daemon could not bind its endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Another live process already listens on the endpoint; it was left alone.
    #[error("another daemon is already listening on {path:?}")]
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket's directory is unsafe: writable by others, owned by another user, or a
    /// symlink.
    #[error("refusing to bind in {dir:?}: {reason}")]
    InsecureDirectory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Something other than a socket sits at the endpoint path; it was left alone.
    #[error("{path:?} exists and is not a socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A listening socket passed by the supervisor (`LISTEN_FDS`) could not be used, or
    /// one was required and none was passed.
    #[error("cannot take the listening socket for {path:?} from the supervisor")]
    Inherit {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: InheritError,
    },
    /// The OS refused.
    #[error("cannot bind {path:?}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A listening local socket for a daemon, created by [`DaemonListener::bind`] (or taken
/// from the supervisor by [`DaemonListener::inherit`]).
///
/// Dropping it removes the socket file it bound; a socket taken from the supervisor stays
/// (the supervisor owns it and keeps it for the next instance).
#[derive(Debug)]
pub struct DaemonListener {
    listener: Listener,
    endpoint: Endpoint,
    inherited: bool,
}

impl DaemonListener {
    /// Bind `endpoint` on the blocking pool.
    ///
    /// On Unix the socket's directory is created 0700 if missing, and refused if it is
    /// writable by group or others, owned by another user, or a symlink; the socket is
    /// created 0600. If a socket file already exists, a connection attempt decides: refused
    /// means a crashed predecessor left it (it is removed and the bind retried once),
    /// accepted means a live daemon owns it ([`BindError::AlreadyRunning`]).
    ///
    /// **Socket activation** (Linux): when the supervisor passed listening sockets
    /// (`LISTEN_FDS`, with `LISTEN_PID` this process), the one bound to the endpoint's path
    /// is taken instead of binding ([`DaemonListener::is_inherited`]): it must be a
    /// listening Unix stream socket, else [`BindError::Inherit`]. Passed sockets bound
    /// elsewhere are left for other claims; with none for this endpoint it binds as above.
    /// The variables are read (and unset, as `sd_listen_fds(1)` does, so the daemon's own
    /// children do not take them for theirs) by the first call in the process, which
    /// should come before the daemon starts threads that read the environment through
    /// libc. `LISTEN_PID` naming another process is ignored, as systemd's library does.
    pub async fn bind(endpoint: &Endpoint) -> Result<DaemonListener, BindError> {
        Self::bind_or_inherit(endpoint, false).await
    }

    /// Take the endpoint's listening socket from the supervisor (socket activation, see
    /// [`DaemonListener::bind`]), and fail with [`BindError::Inherit`] when none was
    /// passed ([`InheritError::Missing`]) instead of binding: for a daemon that must never
    /// bind its socket itself.
    pub async fn inherit(endpoint: &Endpoint) -> Result<DaemonListener, BindError> {
        Self::bind_or_inherit(endpoint, true).await
    }

    async fn bind_or_inherit(
        endpoint: &Endpoint,
        required: bool,
    ) -> Result<DaemonListener, BindError> {
        let endpoint = endpoint.clone();
        let path = PathBuf::from(endpoint.os_name());
        crate::blocking::blocking(move || {
            let inherit_error = |source| BindError::Inherit {
                path: path.clone(),
                source,
            };
            if let Some(fd) = listen_fds::claim(&path, required).map_err(inherit_error)? {
                return from_inherited(fd)
                    .map(|listener| DaemonListener {
                        listener,
                        endpoint,
                        inherited: true,
                    })
                    .map_err(|source| BindError::Io { path, source });
            }
            bind_blocking(&path, create).map(|listener| DaemonListener {
                listener,
                endpoint,
                inherited: false,
            })
        })
        .await
    }

    /// Whether the socket was taken from the supervisor rather than bound here.
    pub fn is_inherited(&self) -> bool {
        self.inherited
    }

    /// The endpoint this listener serves.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Accept the next connection.
    pub async fn accept(&self) -> io::Result<Stream> {
        self.listener.accept().await
    }
}

/// An inherited listening socket as the responder's listener (registered with tokio,
/// non-blocking; no name to reclaim).
#[cfg(target_os = "linux")]
fn from_inherited(fd: listen_fds::Inherited) -> io::Result<Listener> {
    use interprocess::os::unix::uds_local_socket::tokio::Listener as UdsListener;
    UdsListener::try_from(fd).map(Listener::from)
}

#[cfg(not(target_os = "linux"))]
fn from_inherited(fd: listen_fds::Inherited) -> io::Result<Listener> {
    match fd {}
}

/// Bind a Unix socket for the supervisor to hold and hand to its children: the same rules
/// as [`DaemonListener::bind`] (private directory, 0600, stale socket replaced, live one
/// kept), a blocking descriptor, and no removal on drop (the holder removes it).
#[cfg(target_os = "linux")]
pub(crate) fn bind_held(path: &Path) -> Result<crate::platform::Descriptor, BindError> {
    bind_blocking(path, |path| {
        let name = path.to_fs_name::<GenericFilePath>()?;
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        let listener = ListenerOptions::new()
            .name(name)
            .reclaim_name(false)
            .mode(0o600)
            .create_sync()?;
        match listener {
            interprocess::local_socket::Listener::UdSocket(socket) => Ok(socket.into()),
        }
    })
}

/// Held listeners need Linux (the only OS that hands them to children).
#[cfg(not(target_os = "linux"))]
pub(crate) fn bind_held(path: &Path) -> Result<crate::platform::Descriptor, BindError> {
    Err(BindError::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::Unsupported, "held listeners need Linux"),
    })
}

fn bind_blocking<T>(path: &Path, create: impl Fn(&Path) -> io::Result<T>) -> Result<T, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    prepare_unix_dir(path)?;
    // Two daemons starting at once must not both find the socket stale and both replace
    // it: the check-and-replace runs under an exclusive lock on a sibling file.
    #[cfg(unix)]
    let _lock = lock_sibling(path).map_err(io_err)?;
    match create(path) {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            remove_if_stale(path)?;
            create(path).map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    BindError::AlreadyRunning {
                        path: path.to_owned(),
                    }
                } else {
                    io_err(e)
                }
            })
        }
        Err(e) => Err(io_err(e)),
    }
}

fn create(path: &Path) -> io::Result<Listener> {
    let name = path.to_fs_name::<GenericFilePath>()?;
    #[allow(unused_mut)]
    let mut options = ListenerOptions::new().name(name).reclaim_name(true);
    #[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd"))]
    {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        options = options.mode(0o600);
    }
    options.create_tokio()
}

/// An existing socket file that refuses connections belongs to a dead daemon: remove it.
/// Anything that accepts is live and stays.
fn remove_if_stale(path: &Path) -> Result<(), BindError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::symlink_metadata(path).map_err(|source| BindError::Io {
            path: path.to_owned(),
            source,
        })?;
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket {
                path: path.to_owned(),
            });
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(BindError::AlreadyRunning {
                path: path.to_owned(),
            }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing stale socket left by a dead daemon");
                std::fs::remove_file(path).map_err(|source| BindError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
            Err(source) => Err(BindError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
    #[cfg(not(unix))]
    {
        // Named pipes vanish with their last handle: "in use" always means live.
        Err(BindError::AlreadyRunning {
            path: path.to_owned(),
        })
    }
}

/// An exclusive `flock` on `<socket>.lock`, needed only while binding. Dropping it removes
/// the file, then releases the lock (as does the process dying, which leaves the file).
#[cfg(unix)]
struct SiblingLock {
    path: PathBuf,
    _file: std::fs::File,
}

#[cfg(unix)]
impl Drop for SiblingLock {
    fn drop(&mut self) {
        // Removed while held, so a daemon leaves nothing but its socket: a waiter that
        // locked the removed file sees that and locks a new one (see `lock_sibling`).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Take the exclusive `flock` on `<socket>.lock`, on the file the path names once locked
/// (the holder before us may have removed the one we opened).
#[cfg(unix)]
fn lock_sibling(path: &Path) -> io::Result<SiblingLock> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        let ours = file.metadata()?;
        match std::fs::symlink_metadata(&path) {
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                return Ok(SiblingLock { path, _file: file })
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(unix)]
fn prepare_unix_dir(path: &Path) -> Result<(), BindError> {
    use super::path_safety::{self, Kind, UnsafePath};
    let dir = path_safety::parent_dir(path);
    super::manifest::create_private_dir(&dir).map_err(|source| BindError::Io {
        path: path.to_owned(),
        source,
    })?;
    match path_safety::check(&dir, Kind::Directory, crate::platform::current_uid()) {
        Ok(()) => Ok(()),
        Err(UnsafePath::Unreadable { source, .. }) => Err(BindError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(unsafe_dir) => Err(BindError::InsecureDirectory {
            dir,
            reason: unsafe_dir.reason(),
        }),
    }
}

/// After a daemon's confirmed exit, remove the socket file it left at `endpoint`, if that
/// file is a socket (never a directory or a regular file) and nobody accepts on it.
pub(crate) fn remove_stale_socket(endpoint: &Endpoint) {
    let path = Path::new(&endpoint.path);
    if path.as_os_str().is_empty() || !path.exists() {
        return;
    }
    if let Err(error) = remove_if_stale(path) {
        tracing::debug!(path = %path.display(), %error, "left the socket file in place");
    }
}

/// Connect to an endpoint (no identity check: see `BackendHandle::connect` for that).
pub(crate) async fn connect(endpoint: &Endpoint) -> io::Result<Stream> {
    let name = endpoint.os_name().to_fs_name::<GenericFilePath>()?;
    Stream::connect(name).await
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn stale_socket_cleanup_touches_only_dead_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| Endpoint::new("t", dir.path().join(name).to_str().unwrap());

        let a_dir = at("a-directory");
        std::fs::create_dir(&a_dir.path).unwrap();
        remove_stale_socket(&a_dir);
        assert!(Path::new(&a_dir.path).is_dir());

        let a_file = at("a-file");
        std::fs::write(&a_file.path, b"data").unwrap();
        remove_stale_socket(&a_file);
        assert!(Path::new(&a_file.path).is_file());

        let live = at("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live.path).unwrap();
        remove_stale_socket(&live);
        assert!(Path::new(&live.path).exists());

        let stale = at("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale.path).unwrap());
        remove_stale_socket(&stale);
        assert!(!Path::new(&stale.path).exists());
    }
}
