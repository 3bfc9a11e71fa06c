//! systemd's readiness protocol (`sd_notify(3)`), both sides.
//!
//! A service tells its supervisor about itself by sending datagrams of newline-separated
//! `KEY=VALUE` assignments (`READY=1`, `STATUS=...`, `WATCHDOG=1`, ...) to the Unix
//! datagram socket named by `$NOTIFY_SOCKET`. [`NotifySocket`] is the supervisor's end,
//! [`notify`] and [`watchdog_interval`] the daemon's.
//!
//! Any process that can write to the socket can send a message. On Linux each message
//! carries the sender's pid as the kernel saw it ([`NotifyMessage::sender_pid`]): check it
//! against the service's pid before believing the message, as systemd does with
//! `NotifyAccess=main`.

use std::ffi::OsStr;
use std::io;
#[cfg(unix)]
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest datagram read; longer ones are truncated to this size. systemd uses the same
/// bound (`PIPE_BUF`), so no conforming daemon sends more.
pub const MAX_DATAGRAM: usize = crate::platform::notify::MAX_DATAGRAM;

/// The supervisor's end: a Unix datagram socket that services send their state to.
///
/// Dropping it removes the socket file.
#[cfg(unix)]
#[derive(Debug)]
pub struct NotifySocket(crate::platform::NotifySocket);

#[cfg(unix)]
impl NotifySocket {
    /// Bind a datagram socket at `path`, to be passed to services as `$NOTIFY_SOCKET`.
    ///
    /// The path should lie in a directory private to the supervisor (see
    /// [`DaemonListener::bind`](crate::protocol::DaemonListener::bind)): anyone who can
    /// write to the socket can send messages. An existing file at `path` is left alone and
    /// the bind fails (`AddrInUse`). On Linux `SO_PASSCRED` is enabled so that every
    /// message carries its sender's pid.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the socket is registered with its reactor).
    pub fn bind(path: impl Into<PathBuf>) -> io::Result<NotifySocket> {
        crate::platform::NotifySocket::bind(path.into()).map(NotifySocket)
    }

    /// The path the socket is bound to: the value for a service's `$NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Receive and [`parse`] the next datagram, with its sender's pid on Linux.
    ///
    /// Datagrams longer than [`MAX_DATAGRAM`] bytes are truncated. Cancel-safe: a
    /// datagram is consumed only when this returns it.
    pub async fn recv(&self) -> io::Result<NotifyMessage> {
        self.recv_with_fds().await.map(|(message, _closed)| message)
    }

    /// [`recv`](NotifySocket::recv), with the descriptors the sender attached
    /// (`SCM_RIGHTS`, as with `FDSTORE=1`), close-on-exec; at most [`MAX_FDS`] per
    /// datagram (the kernel closes the rest). Linux; elsewhere none are read.
    pub async fn recv_with_fds(&self) -> io::Result<(NotifyMessage, Vec<std::os::fd::OwnedFd>)> {
        receive(&self.0).await
    }
}

/// The next datagram of `socket`, parsed, with its descriptors.
pub(crate) async fn receive(
    socket: &crate::platform::NotifySocket,
) -> io::Result<(NotifyMessage, Vec<crate::platform::Descriptor>)> {
    let datagram = socket.recv().await?;
    let mut message = parse(&datagram.bytes);
    message.sender_pid = datagram.sender_pid;
    Ok((message, datagram.fds))
}

/// The most descriptors read from one datagram (systemd's `sd_pid_notify_with_fds` users
/// send a few; the kernel's own limit per message is 253).
pub const MAX_FDS: usize = crate::platform::notify::MAX_FDS;

/// One datagram of the notification protocol, parsed.
///
/// Flags are set when any assignment in the datagram sets them; for values, the last
/// assignment wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyMessage {
    /// The sender's pid as the kernel reported it (Linux `SCM_CREDENTIALS`); `None`
    /// elsewhere, and for messages that did not come from a socket.
    pub sender_pid: Option<u32>,
    /// `READY=1`: startup finished.
    pub ready: bool,
    /// `RELOADING=1`: the service is reloading its configuration.
    pub reloading: bool,
    /// `STOPPING=1`: the service is shutting down.
    pub stopping: bool,
    /// `WATCHDOG=1`: the service is alive (a keep-alive ping).
    pub watchdog: bool,
    /// `WATCHDOG=trigger`: the service asks to be treated as if its watchdog expired.
    pub watchdog_trigger: bool,
    /// `STATUS=...`: free-form status text for humans.
    pub status: Option<String>,
    /// `MAINPID=...`: the service's main process, when it is not the sender.
    pub main_pid: Option<u32>,
    /// `ERRNO=...`: the errno-style error the service failed with.
    pub errno: Option<i32>,
    /// `WATCHDOG_USEC=...`: the service asks for a new watchdog timeout.
    pub watchdog_usec: Option<u64>,
    /// Every other assignment, in order (`FDSTORE=1`, `EXTEND_TIMEOUT_USEC=...`, custom
    /// keys, and recognised keys with a value this parser does not understand).
    pub extra: Vec<(String, String)>,
}

/// Parse one datagram. Never fails: invalid UTF-8 is replaced (U+FFFD), lines without `=`
/// or with an empty key are skipped, malformed numbers are ignored, and only the first
/// [`MAX_DATAGRAM`] bytes are read, as [`NotifySocket::recv`] would.
pub fn parse(datagram: &[u8]) -> NotifyMessage {
    let datagram = &datagram[..datagram.len().min(MAX_DATAGRAM)];
    let text = String::from_utf8_lossy(datagram);
    let mut message = NotifyMessage::default();
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match (key, value) {
            ("", _) => {}
            ("READY", "1") => message.ready = true,
            ("RELOADING", "1") => message.reloading = true,
            ("STOPPING", "1") => message.stopping = true,
            ("WATCHDOG", "1") => message.watchdog = true,
            ("WATCHDOG", "trigger") => message.watchdog_trigger = true,
            ("STATUS", _) => message.status = Some(value.to_owned()),
            // Pid 0 is never a process.
            ("MAINPID", _) => {
                message.main_pid = value
                    .parse()
                    .ok()
                    .filter(|&pid| pid != 0)
                    .or(message.main_pid);
            }
            ("ERRNO", _) => message.errno = value.parse().ok().or(message.errno),
            ("WATCHDOG_USEC", _) => {
                message.watchdog_usec = value.parse().ok().or(message.watchdog_usec);
            }
            _ => message.extra.push((key.to_owned(), value.to_owned())),
        }
    }
    message
}

/// Daemon side: send `state` (for example `"READY=1\nSTATUS=listening"`) to the
/// supervisor named by `$NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` when `$NOTIFY_SOCKET` is unset (not supervised), `Ok(true)` once
/// sent. Synchronous: daemons notify rarely, and it must work before any runtime exists.
#[cfg(unix)]
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_to(&socket, state).map(|()| true),
        None => Ok(false),
    }
}

/// Send `state` to the notification socket `socket`: a path, or on Linux an abstract
/// socket name when it starts with `@`. The function behind [`notify`].
#[cfg(unix)]
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;

    let bytes = socket.as_bytes();
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty notification socket name",
        ));
    }
    let sender = UnixDatagram::unbound()?;
    let sent = match bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sender.send_to_addr(state.as_bytes(), &address)?
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract socket names exist only on Linux",
            ))
        }
        None => sender.send_to(state.as_bytes(), socket)?,
    };
    // Datagrams are sent whole or not at all; this only guards against a broken platform.
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification datagram sent partially",
        ));
    }
    Ok(())
}

/// Daemon side: how often to send `WATCHDOG=1`, or `None` when no watchdog is enabled.
///
/// Reads `$WATCHDOG_USEC` and, if set, `$WATCHDOG_PID`, which must be this process's pid
/// (the variables were meant for another process otherwise). Returns half the timeout, as
/// `sd_watchdog_enabled(3)` recommends, so one late ping is not fatal.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_from(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.parse().ok().filter(|&usec| usec > 0)?;
    if let Some(pid) = pid {
        if pid.to_str()?.parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

// The socket tests need Unix; the parser is the same everywhere.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    use crate::test_util::DEADLINE;

    async fn recv(socket: &NotifySocket) -> NotifyMessage {
        tokio::time::timeout(DEADLINE, socket.recv())
            .await
            .expect("no datagram within the deadline")
            .unwrap()
    }

    #[test]
    fn parse_reads_every_known_key() {
        let message = parse(
            b"READY=1\nRELOADING=1\nSTOPPING=1\nWATCHDOG=1\nWATCHDOG=trigger\n\
              STATUS=serving on port 80\nMAINPID=4242\nERRNO=2\nWATCHDOG_USEC=5000000\n\
              EXTEND_TIMEOUT_USEC=100\nX_CUSTOM=a=b",
        );
        assert_eq!(
            message,
            NotifyMessage {
                sender_pid: None,
                ready: true,
                reloading: true,
                stopping: true,
                watchdog: true,
                watchdog_trigger: true,
                status: Some("serving on port 80".into()),
                main_pid: Some(4242),
                errno: Some(2),
                watchdog_usec: Some(5_000_000),
                extra: vec![
                    ("EXTEND_TIMEOUT_USEC".into(), "100".into()),
                    ("X_CUSTOM".into(), "a=b".into()),
                ],
            }
        );
    }

    #[test]
    fn parse_tolerates_garbage() {
        assert_eq!(parse(b""), NotifyMessage::default());
        let message = parse(
            b"\n\nno equals sign\n=value\nREADY=0\nMAINPID=0\nMAINPID=-3\nERRNO=x\n\
              WATCHDOG_USEC=99999999999999999999999\nWATCHDOG=maybe\nSTATUS=caf\xc3\xa9 \xff\xfe",
        );
        assert!(!message.ready && !message.watchdog && !message.watchdog_trigger);
        assert_eq!(message.main_pid, None);
        assert_eq!(message.errno, None);
        assert_eq!(message.watchdog_usec, None);
        assert_eq!(message.status.as_deref(), Some("café \u{fffd}\u{fffd}"));
        // A recognised key with a value we do not understand is kept for the caller.
        assert_eq!(
            message.extra,
            vec![
                ("READY".to_string(), "0".to_string()),
                ("WATCHDOG".to_string(), "maybe".to_string()),
            ]
        );
        // A malformed value does not erase an earlier good one.
        assert_eq!(parse(b"ERRNO=5\nERRNO=oops").errno, Some(5));
    }

    #[test]
    fn parse_reads_at_most_one_datagram_worth() {
        let mut input = b"READY=1\nSTATUS=".to_vec();
        input.resize(10 * MAX_DATAGRAM, b'x');
        input.extend_from_slice(b"\nSTOPPING=1");
        let message = parse(&input);
        assert!(message.ready);
        assert!(!message.stopping, "bytes past MAX_DATAGRAM were read");
        assert_eq!(
            message.status.map(|status| status.len()),
            Some(MAX_DATAGRAM - "READY=1\nSTATUS=".len())
        );
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process() {
        let usec = Some(OsStr::new("3000000"));
        let half = Some(Duration::from_millis(1500));
        assert_eq!(watchdog_interval_from(usec, None, 7), half);
        assert_eq!(watchdog_interval_from(usec, Some(OsStr::new("7")), 7), half);
        assert_eq!(watchdog_interval_from(usec, Some(OsStr::new("8")), 7), None);
        assert_eq!(watchdog_interval_from(usec, Some(OsStr::new("x")), 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some(OsStr::new("0")), None, 7), None);
        assert_eq!(
            watchdog_interval_from(Some(OsStr::new("-1")), None, 7),
            None
        );
    }

    #[tokio::test]
    async fn a_notification_round_trips_with_the_sender_pid() {
        let dir = tempfile::tempdir().unwrap();
        let socket = NotifySocket::bind(dir.path().join("notify")).unwrap();
        notify_to(socket.path().as_os_str(), "READY=1\nSTATUS=hi").unwrap();
        let message = recv(&socket).await;
        assert!(message.ready);
        assert_eq!(message.status.as_deref(), Some("hi"));
        #[cfg(target_os = "linux")]
        assert_eq!(message.sender_pid, Some(std::process::id()));
        #[cfg(not(target_os = "linux"))]
        assert_eq!(message.sender_pid, None);
    }

    #[tokio::test]
    async fn an_oversized_datagram_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let socket = NotifySocket::bind(dir.path().join("notify")).unwrap();
        let state = format!("STATUS={}\nREADY=1", "x".repeat(3 * MAX_DATAGRAM));
        notify_to(socket.path().as_os_str(), &state).unwrap();
        notify_to(socket.path().as_os_str(), "STOPPING=1").unwrap();
        let first = recv(&socket).await;
        assert!(!first.ready, "bytes past MAX_DATAGRAM were read");
        assert_eq!(
            first.status.map(|s| s.len()),
            Some(MAX_DATAGRAM - "STATUS=".len())
        );
        // The rest of the long datagram is dropped, not read as the next message.
        assert!(recv(&socket).await.stopping);
    }

    #[tokio::test]
    async fn dropping_the_socket_removes_its_file_and_a_taken_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = NotifySocket::bind(&path).unwrap();
        assert!(NotifySocket::bind(&path).is_err());
        assert!(path.exists(), "a failed bind removed the existing socket");
        drop(socket);
        assert!(!path.exists());
    }

    #[test]
    fn notify_to_reports_a_missing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody");
        assert!(notify_to(missing.as_os_str(), "READY=1").is_err());
        assert!(notify_to(OsStr::new(""), "READY=1").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notify_to_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};

        let name = format!("running-process-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let len = receiver.recv(&mut buf).unwrap();
        assert!(parse(&buf[..len]).watchdog);
    }

    #[tokio::test]
    async fn a_separate_process_is_identified_by_its_pid() {
        // The real interpreter, not a version-manager shim that would fork it.
        let probe = tokio::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .await;
        let python = match probe {
            Ok(output) if output.status.success() => {
                String::from_utf8_lossy(&output.stdout).trim().to_owned()
            }
            _ => {
                eprintln!("python3 unavailable; skipping the separate-process check");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let socket = NotifySocket::bind(dir.path().join("notify")).unwrap();
        let script = "import os, socket, sys\n\
                      s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                      s.sendto(b'READY=1\\nMAINPID=%d' % os.getpid(), sys.argv[1])\n";
        let mut child = tokio::process::Command::new(&python)
            .args(["-c", script])
            .arg(socket.path())
            .spawn()
            .unwrap();
        let child_pid = child.id();
        // Received before the child is reaped, as a supervisor would.
        let message = recv(&socket).await;
        assert!(child.wait().await.unwrap().success());
        assert!(message.ready);
        assert_ne!(message.main_pid, Some(std::process::id()));
        #[cfg(target_os = "linux")]
        {
            assert_eq!(message.sender_pid, child_pid);
            assert_eq!(message.sender_pid, message.main_pid);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = child_pid;
    }
}
