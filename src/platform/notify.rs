//! The supervisor's end of sd_notify: a Unix datagram socket bound at a path, whose
//! datagrams arrive with their sender's pid (Linux `SO_PASSCRED`) and the descriptors
//! attached to them (`SCM_RIGHTS`, Linux). Windows has no such socket: [`NotifySocket::bind`]
//! is `Unsupported` there, so callers above need no `cfg`. The wire format is
//! `protocol::sd_notify`'s.

use std::io;
use std::path::{Path, PathBuf};

use super::Descriptor;

/// The largest datagram read; longer ones are truncated to this size. systemd uses the same
/// bound (`PIPE_BUF`), so no conforming daemon sends more.
pub(crate) const MAX_DATAGRAM: usize = 4096;

/// The most descriptors read from one datagram (systemd's `sd_pid_notify_with_fds` users
/// send a few; the kernel's own limit per message is 253).
pub(crate) const MAX_FDS: usize = 16;

/// One datagram as received.
pub(crate) struct Datagram {
    /// Its bytes, at most [`MAX_DATAGRAM`].
    pub bytes: Vec<u8>,
    /// The sender's pid as the kernel saw it (Linux; `None` elsewhere).
    pub sender_pid: Option<u32>,
    /// The descriptors attached (close-on-exec; Linux, else none).
    pub fds: Vec<Descriptor>,
}

/// A datagram socket bound at a path; dropping it removes the socket file.
#[derive(Debug)]
pub(crate) struct NotifySocket {
    #[cfg(unix)]
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Whether this OS has the socket ([`NotifySocket::bind`] is `Unsupported` otherwise).
    pub(crate) const SUPPORTED: bool = cfg!(unix);

    /// Bind at `path` (an existing file there is left alone: `AddrInUse`). On Linux
    /// `SO_PASSCRED` is enabled before anyone can know the path, so every datagram carries
    /// its sender's pid. Must be called within a tokio runtime.
    pub(crate) fn bind(path: PathBuf) -> io::Result<NotifySocket> {
        #[cfg(unix)]
        {
            let socket = std::os::unix::net::UnixDatagram::bind(&path)?;
            #[cfg(target_os = "linux")]
            let configured = rustix::net::sockopt::set_socket_passcred(&socket, true)
                .map_err(io::Error::from)
                .and_then(|()| socket.set_nonblocking(true));
            #[cfg(not(target_os = "linux"))]
            let configured = socket.set_nonblocking(true);
            match configured.and_then(|()| tokio::net::UnixDatagram::from_std(socket)) {
                Ok(socket) => Ok(NotifySocket { socket, path }),
                Err(error) => {
                    let _ = std::fs::remove_file(&path);
                    Err(error)
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "sd_notify sockets exist only on Unix",
            ))
        }
    }

    /// The path the socket is bound to.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram. Cancel-safe: a datagram is consumed only when this returns it.
    pub(crate) async fn recv(&self) -> io::Result<Datagram> {
        #[cfg(target_os = "linux")]
        return self
            .socket
            .async_io(tokio::io::Interest::READABLE, || recv_linux(&self.socket))
            .await;
        #[cfg(all(unix, not(target_os = "linux")))]
        {
            let mut bytes = vec![0u8; MAX_DATAGRAM];
            let len = self.socket.recv(&mut bytes).await?;
            bytes.truncate(len);
            Ok(Datagram {
                bytes,
                sender_pid: None,
                fds: Vec::new(),
            })
        }
        #[cfg(not(unix))]
        std::future::pending().await
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One non-blocking `recvmsg`, reading the `SCM_CREDENTIALS` that `SO_PASSCRED` adds and
/// the descriptors of an `SCM_RIGHTS`.
#[cfg(target_os = "linux")]
fn recv_linux(socket: &tokio::net::UnixDatagram) -> io::Result<Datagram> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    use std::io::IoSliceMut;
    use std::mem::MaybeUninit;

    let mut bytes = vec![0u8; MAX_DATAGRAM];
    let mut space =
        [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1), ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    // CMSG_CLOEXEC: file descriptors a sender attaches (FDSTORE=1) must not leak into a
    // child spawned meanwhile; those nobody keeps are closed when dropped.
    let received = recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if received.flags.contains(ReturnFlags::TRUNC) {
        tracing::debug!("sd_notify datagram longer than {MAX_DATAGRAM} bytes truncated");
    }
    if received.flags.contains(ReturnFlags::CTRUNC) {
        tracing::warn!(
            "sd_notify: more than {MAX_FDS} descriptors in one datagram; the rest were closed"
        );
    }
    let mut sender_pid = None;
    let mut fds = Vec::new();
    for message in control.drain() {
        match message {
            RecvAncillaryMessage::ScmCredentials(cred) => {
                sender_pid = u32::try_from(cred.pid.as_raw_nonzero().get()).ok();
            }
            RecvAncillaryMessage::ScmRights(rights) => fds.extend(rights),
            _ => {}
        }
    }
    bytes.truncate(received.bytes.min(MAX_DATAGRAM));
    Ok(Datagram {
        bytes,
        sender_pid,
        fds,
    })
}
