//! Linux: listening sockets that the supervisor holds and hands to its children by
//! systemd's socket-activation protocol (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`,
//! descriptors from 3), and the daemon's side of it: taking them from the environment.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::net::{sockopt, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

/// The first descriptor of the protocol (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FDS_START: i32 = 3;

/// The backlog of every listener: the kernel's maximum (`somaxconn` caps it), as systemd's
/// `Backlog=` default. Connections wait here while a daemon restarts.
const BACKLOG: i32 = libc::SOMAXCONN;

/// A TCP socket bound to `addr` and listening: `SO_REUSEADDR` (a restarted supervisor
/// binds again at once, despite connections in `TIME_WAIT`), IPv6 sockets IPv6-only (an
/// `[::]` listener does not take the IPv4 port too), close-on-exec, blocking (as systemd
/// passes them; the daemon chooses).
pub(crate) fn bind_tcp(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let socket = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    if addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&socket, true)?;
    }
    rustix::net::bind(&socket, &addr)?;
    rustix::net::listen(&socket, BACKLOG)?;
    Ok(socket)
}

/// The address family of a socket, as far as the crate cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `AF_UNIX`.
    Unix,
    /// `AF_INET`.
    Inet,
    /// `AF_INET6`.
    Inet6,
    /// Anything else.
    Other,
}

impl Family {
    /// A short name for messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Family::Unix => "unix",
            Family::Inet => "ipv4",
            Family::Inet6 => "ipv6",
            Family::Other => "another family",
        }
    }
}

/// What a descriptor is, checked before a daemon serves on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SocketFacts {
    /// Its family.
    pub family: Family,
    /// A stream socket.
    pub stream: bool,
    /// `listen` was called on it.
    pub listening: bool,
    /// The path it is bound to (Unix, bound to a path).
    pub path: Option<PathBuf>,
}

/// The facts of `fd`; `Ok(None)` when it is not a socket at all.
pub(crate) fn socket_facts(fd: BorrowedFd<'_>) -> io::Result<Option<SocketFacts>> {
    let stat = rustix::fs::fstat(fd)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Ok(None);
    }
    let address = rustix::net::getsockname(fd)?;
    let family = match address.address_family() {
        AddressFamily::UNIX => Family::Unix,
        AddressFamily::INET => Family::Inet,
        AddressFamily::INET6 => Family::Inet6,
        _ => Family::Other,
    };
    let path = SocketAddrUnix::try_from(address).ok().and_then(|unix| {
        unix.path_bytes()
            .map(|p| std::ffi::OsStr::from_bytes(p).into())
    });
    Ok(Some(SocketFacts {
        family,
        stream: sockopt::socket_type(fd)? == SocketType::STREAM,
        listening: sockopt::socket_acceptconn(fd)?,
        path,
    }))
}

/// The inode of a socket (what `/proc/net/tcp` and `/proc/net/unix` list).
pub(crate) fn socket_inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_ino)
}

/// `listen` again on an inherited Unix socket: the kernel records the peer credentials a
/// connecting client sees (`SO_PEERCRED`, `SO_PEERPIDFD`) at every `listen`, so from now
/// on clients see this process, not the supervisor that bound it.
pub(crate) fn listen_again(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::net::listen(fd, BACKLOG)?)
}

/// Clear `O_NONBLOCK` on the open file (shared with every copy of the descriptor): each
/// child gets its listeners blocking, as systemd passes them, whatever the one before set.
pub(crate) fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    if flags.contains(rustix::fs::OFlags::NONBLOCK) {
        rustix::fs::fcntl_setfl(fd, flags - rustix::fs::OFlags::NONBLOCK)?;
    }
    Ok(())
}

/// What the environment passed this process (`sd_listen_fds`).
#[derive(Debug)]
pub(crate) enum ListenEnv {
    /// No `LISTEN_FDS`.
    Absent,
    /// `LISTEN_PID` names another process: the descriptors are not for us (left alone).
    NotOurs {
        /// The value of `LISTEN_PID`.
        listen_pid: String,
    },
    /// A variable that is not what the protocol says.
    Malformed {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// A passed descriptor is not open.
    Closed {
        /// The descriptor.
        fd: i32,
    },
    /// The descriptors, from 3 on, with their names (`LISTEN_FDNAMES`, else `"unknown"`
    /// as systemd says), made close-on-exec.
    Fds(Vec<(String, OwnedFd)>),
}

/// Read `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, unset them (as `sd_listen_fds(1)`
/// does, so the process's own children do not take them for theirs), and take ownership
/// of the descriptors they name when `LISTEN_PID` is this process.
///
/// Call it once per process: the caller keeps what it returns (the descriptors can be
/// owned only once).
pub(crate) fn take_listen_env() -> ListenEnv {
    let read = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let (pid, fds, names) = (
        read("LISTEN_PID"),
        read("LISTEN_FDS"),
        read("LISTEN_FDNAMES"),
    );
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // Edition 2021: safe to call. std serialises its own environment accesses; code
        // that reads the environment through libc on another thread meanwhile could race,
        // which is why daemons should take their listeners early (docs/PROTOCOL.md).
        std::env::remove_var(name);
    }
    let Some(fds) = fds else {
        return ListenEnv::Absent;
    };
    let listen_pid = pid.unwrap_or_default();
    if listen_pid.parse::<u32>().ok() != Some(std::process::id()) {
        return ListenEnv::NotOurs { listen_pid };
    }
    let malformed = |variable, value: &str| ListenEnv::Malformed {
        variable,
        value: value.to_owned(),
    };
    let Ok(count) = fds.parse::<i32>() else {
        return malformed("LISTEN_FDS", &fds);
    };
    if !(0..=4096).contains(&count) {
        return malformed("LISTEN_FDS", &fds);
    }
    let names: Vec<String> = match &names {
        Some(list) if !list.is_empty() => list.split(':').map(str::to_owned).collect(),
        _ => vec!["unknown".to_owned(); count as usize],
    };
    if names.len() != count as usize {
        return malformed("LISTEN_FDNAMES", names.join(":").as_str());
    }
    let mut taken = Vec::with_capacity(names.len());
    for (raw, name) in (LISTEN_FDS_START..).zip(names) {
        // SAFETY: `fcntl(F_GETFD)` on any integer is memory-safe: it answers EBADF for a
        // descriptor that is not open.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            return ListenEnv::Closed { fd: raw };
        }
        // SAFETY: the descriptor is open, and by the protocol (`LISTEN_PID` is this
        // process) it was passed to this process for it to own; the environment naming it
        // was just removed, and the caller takes it only once, so nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
        taken.push((name, fd));
    }
    ListenEnv::Fds(taken)
}

/// A copy of `fd` for one spawn.
pub(crate) fn duplicate(fd: impl AsFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn tcp_listeners_bind_both_families_and_describe_themselves() {
        let v4 = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let facts = socket_facts(v4.as_fd()).unwrap().unwrap();
        assert_eq!(facts.family, Family::Inet);
        assert!(facts.stream && facts.listening && facts.path.is_none());
        assert!(sockopt::socket_reuseaddr(&v4).unwrap());
        // IPv6 loopback may be missing in a container: only then is it skipped.
        match bind_tcp("[::1]:0".parse().unwrap()) {
            Ok(v6) => {
                assert_eq!(
                    socket_facts(v6.as_fd()).unwrap().unwrap().family,
                    Family::Inet6
                );
                assert!(sockopt::ipv6_v6only(&v6).unwrap());
            }
            Err(error) => eprintln!("SKIPPED (ipv6): {error}"),
        }
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(socket_facts(file.as_fd()).unwrap(), None);
    }

    #[test]
    fn blocking_mode_is_restored_for_the_next_child() {
        let socket = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        rustix::fs::fcntl_setfl(&socket, rustix::fs::OFlags::NONBLOCK).unwrap();
        set_blocking(socket.as_fd()).unwrap();
        assert!(!rustix::fs::fcntl_getfl(&socket)
            .unwrap()
            .contains(rustix::fs::OFlags::NONBLOCK));
    }
}
