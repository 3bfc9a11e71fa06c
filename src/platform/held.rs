//! Descriptors the supervisor holds for its children: listening sockets bound once and
//! handed to every instance, and the entries of the file descriptor store. Only Linux
//! hands descriptors over (`LISTEN_FDS`); elsewhere every constructor returns
//! `Unsupported`, so callers above need no `cfg` of their own.

use std::io;
use std::net::SocketAddr;

/// An open descriptor held for children (Unix). Windows has none: no value exists there.
#[cfg(unix)]
pub(crate) type Descriptor = std::os::fd::OwnedFd;
/// An open descriptor held for children: none exists on Windows.
#[cfg(not(unix))]
#[derive(Debug)]
pub(crate) enum Descriptor {}

/// Whether this OS can hand listening sockets and stored descriptors to a child.
pub(crate) const CAN_PASS_DESCRIPTORS: bool = cfg!(target_os = "linux");

#[cfg(not(target_os = "linux"))]
fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "passing descriptors to a child needs Linux",
    )
}

/// A copy of `fd` for one spawn (close-on-exec; the spawn places it).
pub(crate) fn duplicate(fd: &Descriptor) -> io::Result<Descriptor> {
    #[cfg(target_os = "linux")]
    return super::listen::duplicate(fd);
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        let _ = fd;
        Err(unsupported())
    }
    #[cfg(not(unix))]
    match *fd {}
}

/// A listening socket the supervisor holds.
#[derive(Debug)]
pub(crate) struct HeldSocket {
    fd: Descriptor,
    /// Its inode, as `/proc/net/{tcp,tcp6,unix}` list it.
    inode: u64,
}

impl HeldSocket {
    /// A TCP socket bound to `addr` and listening (Linux).
    pub(crate) fn bind_tcp(addr: SocketAddr) -> io::Result<HeldSocket> {
        #[cfg(target_os = "linux")]
        return HeldSocket::new(super::listen::bind_tcp(addr)?);
        #[cfg(not(target_os = "linux"))]
        {
            let _ = addr;
            Err(unsupported())
        }
    }

    /// A bound Unix socket, made to listen with the kernel's largest backlog (as TCP).
    pub(crate) fn listen_unix(fd: Descriptor) -> io::Result<HeldSocket> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsFd;
            super::listen::listen_again(fd.as_fd())?;
            HeldSocket::new(fd)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = fd;
            Err(unsupported())
        }
    }

    #[cfg(target_os = "linux")]
    fn new(fd: Descriptor) -> io::Result<HeldSocket> {
        use std::os::fd::AsFd;
        let inode = super::listen::socket_inode(fd.as_fd())?;
        Ok(HeldSocket { fd, inode })
    }

    /// The socket's inode (the readiness checks' "a stranger already listens here" must
    /// not find the supervisor's own).
    pub(crate) fn inode(&self) -> u64 {
        self.inode
    }

    /// A copy for one spawn, reset to blocking first (a previous instance may have made
    /// the shared open file non-blocking).
    pub(crate) fn copy_for_spawn(&self) -> io::Result<Descriptor> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsFd;
            super::listen::set_blocking(self.fd.as_fd())?;
        }
        duplicate(&self.fd)
    }

    /// A watch that is readable when a connection waits in the backlog (nothing is
    /// accepted). Must be called within a tokio runtime.
    pub(crate) fn watch(&self) -> io::Result<BacklogWatch> {
        #[cfg(target_os = "linux")]
        return Ok(BacklogWatch {
            fd: super::async_fd(duplicate(&self.fd)?)?,
        });
        #[cfg(not(target_os = "linux"))]
        Err(unsupported())
    }
}

/// Wakes when a connection waits on a [`HeldSocket`].
#[derive(Debug)]
pub(crate) struct BacklogWatch {
    #[cfg(target_os = "linux")]
    fd: tokio::io::unix::AsyncFd<Descriptor>,
}

impl BacklogWatch {
    /// Resolves once the socket is readable. Cancel-safe.
    pub(crate) async fn readable(&self) {
        #[cfg(target_os = "linux")]
        let _ = self.fd.readable().await;
    }
}
