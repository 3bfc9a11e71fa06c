//! Listening sockets and the processes holding them, read from `/proc` (Linux).
//!
//! Honest readiness: a port or socket path counts as ready only when the listening socket
//! is held by the service's own processes, not merely when *someone* accepts connections
//! there (a stale instance, another program that took the port). These functions name the
//! listening sockets by inode and the sockets each process holds; the caller compares.
//!
//! The tables are those of the network namespace of *this* process (`/proc/net` is
//! `/proc/self/net`): a service in another namespace is not seen. The kernel builds each
//! table chunk by chunk as it is read, not as one snapshot, so a socket opened or closed
//! during the read may or may not appear: callers poll, and the next round sees it.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A TCP socket in the LISTEN state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpListenerInfo {
    /// The socket's inode: the `N` of the `socket:[N]` links under `/proc/PID/fd`.
    pub inode: u64,
    /// The address it is bound to, as the kernel reports it (v4-mapped addresses stay
    /// IPv6).
    pub local: SocketAddr,
}

/// The listening TCP sockets that would accept a connection to `target`: bound to its port,
/// and to its address, the unspecified address of its family, or (IPv4 targets) `::` or
/// the v4-mapped form of the address.
///
/// An IPv6 listener on `::` is taken to accept IPv4 too (dual stack, Linux's default),
/// although one with `IPV6_V6ONLY` does not: the flag is per socket and `/proc` does not
/// show it. The only cheap hint would be a v4 listener on the same port (the kernel
/// refuses that next to a dual-stack one), but `SO_REUSEPORT` defeats even that. Erring
/// this way lists a socket too many, never one too few.
///
/// Several sockets may be listed (`SO_REUSEPORT`, or a specific and a wildcard listener);
/// the kernel hands a connection to the most specific one.
pub(crate) fn tcp_listeners(target: SocketAddr) -> io::Result<Vec<TcpListenerInfo>> {
    let mut listeners = parse_tcp_table(&read_text("/proc/net/tcp")?, target);
    match read_text("/proc/net/tcp6") {
        Ok(text) => listeners.extend(parse_tcp_table(&text, target)),
        // No tcp6 table: IPv6 is disabled or not built in, so nothing listens on it.
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    Ok(listeners)
}

/// The inodes of the listening Unix stream sockets bound to `path`, from `/proc/net/unix`.
///
/// The kernel reports the path exactly as it was passed to `bind(2)`: a service that bound
/// a relative path, or whose socket file was since moved, is not found under another
/// spelling. Abstract sockets appear as `@name`, so a path starting with `@` could match
/// one; absolute paths never do.
pub(crate) fn unix_listeners(path: &Path) -> io::Result<Vec<u64>> {
    Ok(parse_unix_table(&read_table("/proc/net/unix")?, path))
}

/// The inodes of the sockets process `pid` holds: the `socket:[N]` targets of its
/// `/proc/PID/fd/*` links. Descriptors closed while they are read are skipped; a process
/// that cannot be read (gone, another user's) is an error.
pub(crate) fn socket_inodes(pid: u32) -> io::Result<HashSet<u64>> {
    fd_sockets(pid)?.collect()
}

/// Every process holding the socket `inode`, in ascending PID order. Best effort, for
/// naming a stranger in an error message: processes that cannot be read are skipped.
pub(crate) fn socket_holders(inode: u64) -> Vec<u32> {
    let Ok(proc) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders: Vec<u32> = proc
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| holds_socket(pid, inode))
        .collect();
    holders.sort_unstable();
    holders
}

/// Whether `pid` holds socket `inode`; stops at the first match.
fn holds_socket(pid: u32, inode: u64) -> bool {
    fd_sockets(pid).is_ok_and(|mut sockets| sockets.any(|found| found.ok() == Some(inode)))
}

/// The socket inodes behind the descriptors of `pid`, read one link at a time.
fn fd_sockets(pid: u32) -> io::Result<impl Iterator<Item = io::Result<u64>>> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd"))?;
    Ok(fds.filter_map(|entry| {
        match entry.and_then(|entry| fs::read_link(entry.path())) {
            Ok(target) => socket_link_inode(target.as_os_str()).map(Ok),
            // Closed between the listing and the readlink.
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => Some(Err(error)),
        }
    }))
}

/// `socket:[N]` → `N`; `None` for links to anything else (files, pipes, anon inodes).
fn socket_link_inode(target: &OsStr) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Read a `/proc` table whole. Large reads, because the kernel resumes a table at each
/// read by position: fewer reads, fewer chances to skip an entry that moved meanwhile.
fn read_table(path: &str) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(64 * 1024);
    fs::File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read_table`] for the TCP tables, which are ASCII.
fn read_text(path: &str) -> io::Result<String> {
    String::from_utf8(read_table(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{path} is not text")))
}

/// `st` of a listening socket in `/proc/net/tcp{,6}` (`TCP_LISTEN`).
const TCP_LISTEN: &str = "0A";

/// The listeners in the text of `/proc/net/tcp` or `/proc/net/tcp6` that would accept a
/// connection to `target` (see [`tcp_listeners`]). Lines that do not parse (the header)
/// are skipped.
pub(crate) fn parse_tcp_table(text: &str, target: SocketAddr) -> Vec<TcpListenerInfo> {
    text.lines()
        .filter_map(parse_tcp_line)
        .filter(|(state, info)| *state == TCP_LISTEN && accepts(info.local, target))
        .map(|(_, info)| info)
        .collect()
}

/// One table line: `sl local_address rem_address st ... uid timeout inode ...`.
fn parse_tcp_line(line: &str) -> Option<(&str, TcpListenerInfo)> {
    let fields: Vec<&str> = line.split_whitespace().take(10).collect();
    if fields.len() < 10 {
        return None;
    }
    let info = TcpListenerInfo {
        inode: fields[9].parse().ok()?,
        local: parse_proc_socket_addr(fields[1])?,
    };
    Some((fields[3], info))
}

/// `ADDR:PORT` as `/proc/net/tcp{,6}` prints it: the address as the hex of its in-memory
/// 32-bit words (one for IPv4, four for IPv6), each printed as a native-endian integer,
/// so on little-endian machines the bytes of each word appear reversed; the port as plain
/// hex of its value.
fn parse_proc_socket_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(proc_word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (chunk, word) in bytes.chunks_exact_mut(4).zip(addr.as_bytes().chunks(8)) {
                chunk.copy_from_slice(&proc_word(std::str::from_utf8(word).ok()?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Eight hex digits printed from a native-endian `u32` → the four bytes it was read from.
fn proc_word(hex: &str) -> Option<[u8; 4]> {
    // `from_str_radix` would also take a leading `+`.
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

/// Whether a listener bound to `local` accepts a connection to `target`.
fn accepts(local: SocketAddr, target: SocketAddr) -> bool {
    if local.port() != target.port() {
        return false;
    }
    // A v4-mapped address is IPv4 on the wire, whether listened on or connected to.
    match (local.ip().to_canonical(), target.ip().to_canonical()) {
        (IpAddr::V4(local), IpAddr::V4(target)) => local == target || local.is_unspecified(),
        (IpAddr::V6(local), IpAddr::V6(target)) => local == target || local.is_unspecified(),
        // Dual stack: see `tcp_listeners` on `IPV6_V6ONLY`.
        (IpAddr::V6(local), IpAddr::V4(_)) => local.is_unspecified(),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// `__SO_ACCEPTCON` in the Flags column of `/proc/net/unix`: the socket is listening.
const SO_ACCEPTCON: u32 = 0x10000;
/// `SOCK_STREAM` in the Type column.
const SOCK_STREAM: &[u8] = b"0001";
/// `SS_UNCONNECTED` in the St column, the state of a listening socket.
const SS_UNCONNECTED: &[u8] = b"01";

/// The inodes of listening stream sockets bound to `path` in the text of `/proc/net/unix`.
/// Bytes, not `&str`: any process's socket path may be invalid UTF-8.
pub(crate) fn parse_unix_table(text: &[u8], path: &Path) -> Vec<u64> {
    let path = path.as_os_str().as_bytes();
    text.split(|&b| b == b'\n')
        .filter_map(parse_unix_line)
        .filter(|line| line.listening && line.path == path)
        .map(|line| line.inode)
        .collect()
}

/// The columns of one `/proc/net/unix` line that matter here.
struct UnixLine<'a> {
    listening: bool,
    inode: u64,
    path: &'a [u8],
}

/// `Num RefCount Protocol Flags Type St Inode[ Path]`. The path is everything after the
/// single space that follows the inode, so paths with spaces are kept whole (a path with
/// a newline cannot be told apart and never matches).
fn parse_unix_line(line: &[u8]) -> Option<UnixLine<'_>> {
    let mut rest = line;
    let mut fields = [&[][..]; 7];
    for field in &mut fields {
        let start = rest.iter().position(|&b| b != b' ')?;
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        (*field, rest) = rest.split_at(end);
    }
    let [_, _, _, flags, kind, state, inode] = fields;
    let flags = u32::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()?;
    Some(UnixLine {
        listening: flags & SO_ACCEPTCON != 0 && kind == SOCK_STREAM && state == SS_UNCONNECTED,
        inode: std::str::from_utf8(inode).ok()?.parse().ok()?,
        path: rest.strip_prefix(b" ").unwrap_or(rest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    // Lines captured from Linux 6.18 (x86_64), trailing columns shortened.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12220 1 000000006be4bebc 100 0 0 10 0
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 12219 2 00000000f756f0df 100 0 0 10 0
   3: 0100007F:C062 0100007F:1B5B 06 00000000:00000000 03:00000959 00000000     0        0 0 3 000000004a633f26
   5: 0100007F:C5B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 12225 2 000000002ecfaf7d 20 0 0 10 -1
   6: 0100007F:1F90 0100007F:C5B2 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000075f7352e 20 0 0 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12222 1 000000007f11912e 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F94 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12223 1 000000009f49a027 100 0 0 10 0
   2: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12221 1 000000002922c7d9 100 0 0 10 0
   3: 00000000000000000000000001000000:1F95 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 12230 1 000000002922c7d9 20 0 0 10 -1
";
    const UNIX: &[u8] = b"Num       RefCount Protocol Flags    Type St Inode Path
000000000e76d847: 00000002 00000000 00000000 0002 01 12389 /tmp/exp/notify.sock
00000000585ee5f3: 00000002 00000000 00010000 0001 01 12226 /tmp/x y.sock
000000005814c69f: 00000002 00000000 00000000 0002 01 12228 /tmp/x y.sock
00000000c1d2e3f4: 00000003 00000000 00000000 0001 03 12300 /tmp/x y.sock
0000000011223344: 00000002 00000000 00010000 0005 01 12231 /tmp/x y.sock
00000000904a9b50: 00000002 00000000 00010000 0001 01 12227 @abs@tract
00000000f34fecfc: 00000003 00000000 00000000 0001 03   233
";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn inodes(text: &str, target: &str) -> Vec<u64> {
        parse_tcp_table(text, addr(target))
            .iter()
            .map(|info| info.inode)
            .collect()
    }

    // The samples print native-endian words as a little-endian machine does.
    #[cfg(target_endian = "little")]
    #[test]
    fn proc_addresses_decode_word_by_word() {
        let parse = |text| parse_proc_socket_addr(text).unwrap();
        assert_eq!(parse("0100007F:1F90"), addr("127.0.0.1:8080"));
        assert_eq!(parse("00000000:1F91"), addr("0.0.0.0:8081"));
        assert_eq!(
            parse("00000000000000000000000001000000:1F92"),
            addr("[::1]:8082")
        );
        assert_eq!(
            parse("00000000000000000000000000000000:1F93"),
            addr("[::]:8083")
        );
        assert_eq!(
            parse("0000000000000000FFFF00000100007F:1F94"),
            addr("[::ffff:127.0.0.1]:8084")
        );
        assert_eq!(
            parse("000080FE00000000FF005452BC8B12FE:0016"),
            addr("[fe80::5254:ff:fe12:8bbc]:22")
        );
        for bad in [
            "",
            "0100007F",
            "0100007F:1F9",
            "+100007F:1F90",
            "0100007F0:1F90",
        ] {
            assert_eq!(parse_proc_socket_addr(bad), None, "{bad:?}");
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn tcp_listeners_are_matched_as_the_kernel_would_route() {
        // Exact address; the accepted connection (state 01, same port) is not a listener.
        assert_eq!(inodes(TCP, "127.0.0.1:8080"), [12219]);
        // 0.0.0.0 accepts any IPv4 address, but no IPv6 one.
        assert_eq!(inodes(TCP, "127.0.0.1:8081"), [12220]);
        assert_eq!(inodes(TCP, "10.1.2.3:8081"), [12220]);
        assert_eq!(inodes(TCP, "[::1]:8081"), [] as [u64; 0]);
        // Another port, or another address on the port.
        assert_eq!(inodes(TCP, "127.0.0.1:9999"), [] as [u64; 0]);
        assert_eq!(inodes(TCP, "127.0.0.2:8080"), [] as [u64; 0]);
        // A v4-mapped target is an IPv4 target.
        assert_eq!(inodes(TCP, "[::ffff:127.0.0.1]:8080"), [12219]);

        // ::1 only for ::1; an established socket on its port is not listed.
        assert_eq!(inodes(TCP6, "[::1]:8082"), [12221]);
        assert_eq!(inodes(TCP6, "[::1]:8085"), [] as [u64; 0]);
        assert_eq!(inodes(TCP6, "127.0.0.1:8082"), [] as [u64; 0]);
        // :: accepts IPv6 and, dual stack, IPv4.
        assert_eq!(inodes(TCP6, "[::1]:8083"), [12222]);
        assert_eq!(inodes(TCP6, "127.0.0.1:8083"), [12222]);
        // ::ffff:127.0.0.1 accepts 127.0.0.1 only, over IPv4.
        assert_eq!(inodes(TCP6, "127.0.0.1:8084"), [12223]);
        assert_eq!(inodes(TCP6, "[::ffff:127.0.0.1]:8084"), [12223]);
        assert_eq!(inodes(TCP6, "127.0.0.2:8084"), [] as [u64; 0]);
        assert_eq!(inodes(TCP6, "[::1]:8084"), [] as [u64; 0]);

        let found = parse_tcp_table(TCP6, addr("[::1]:8083"));
        assert_eq!(found[0].local, addr("[::]:8083"));
    }

    #[test]
    fn unix_listeners_are_listening_stream_sockets_at_the_exact_path() {
        let find = |path: &str| parse_unix_table(UNIX, Path::new(path));
        // Not the datagram socket, the connected one or the seqpacket one at that path.
        assert_eq!(find("/tmp/x y.sock"), [12226]);
        assert_eq!(find("/tmp/x"), [] as [u64; 0]);
        assert_eq!(find("/tmp/exp/notify.sock"), [] as [u64; 0]);
        assert_eq!(find("@abs@tract"), [12227]);
        // Unbound sockets have no path column.
        assert_eq!(find(""), [] as [u64; 0]);
    }

    #[test]
    fn socket_links_name_their_inode() {
        assert_eq!(socket_link_inode(OsStr::new("socket:[12226]")), Some(12226));
        for other in ["pipe:[12226]", "/dev/null", "socket:[]", "socket:[12226"] {
            assert_eq!(socket_link_inode(OsStr::new(other)), None, "{other:?}");
        }
    }

    #[test]
    fn a_listener_of_this_process_is_found_with_its_inode() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        // An accepted connection shares the port; it must not count as a listener.
        let _client = std::net::TcpStream::connect(local).unwrap();
        let _server = listener.accept().unwrap();
        let found = tcp_listeners(local).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].local, local);
        let ours = socket_inodes(std::process::id()).unwrap();
        assert!(ours.contains(&found[0].inode), "{found:?} not in {ours:?}");
        assert!(socket_holders(found[0].inode).contains(&std::process::id()));
    }

    #[test]
    fn a_dual_stack_listener_is_found_for_an_ipv4_target() {
        let listener = match std::net::TcpListener::bind("[::]:0") {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("SKIPPED: no IPv6 ({error})");
                return;
            }
        };
        let port = listener.local_addr().unwrap().port();
        let found = tcp_listeners(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(socket_inodes(std::process::id())
            .unwrap()
            .contains(&found[0].inode));
    }

    #[test]
    fn a_listener_of_another_process_names_that_process() {
        let mut other = Command::new("python3")
            .args([
                "-c",
                "import socket,sys;s=socket.socket();s.bind(('127.0.0.1',0));s.listen();\
                 print(s.getsockname()[1],flush=True);sys.stdin.read()",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(other.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        let found = tcp_listeners(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let holders = socket_holders(found[0].inode);
        assert!(holders.contains(&other.id()), "{holders:?}");
        assert!(!holders.contains(&std::process::id()), "{holders:?}");
        assert!(!socket_inodes(std::process::id())
            .unwrap()
            .contains(&found[0].inode));
        drop(other.stdin.take());
        other.wait().unwrap();
    }

    #[test]
    fn a_unix_listener_is_found_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("listener with spaces.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // A datagram socket bound nearby is not a listener.
        let other = dir.path().join("datagram.sock");
        let _datagram = std::os::unix::net::UnixDatagram::bind(&other).unwrap();
        let found = unix_listeners(&path).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(socket_inodes(std::process::id())
            .unwrap()
            .contains(&found[0]));
        assert!(unix_listeners(&other).unwrap().is_empty());
        assert!(unix_listeners(&dir.path().join("absent.sock"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_port_bound_but_not_listening_has_no_listener() {
        use rustix::net::{AddressFamily, SocketType};
        // Bound without listen(): the port stays ours, so no other test can start
        // listening on it, yet nobody listens.
        let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        rustix::net::bind(&socket, &SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let local = SocketAddr::try_from(rustix::net::getsockname(&socket).unwrap()).unwrap();
        assert!(tcp_listeners(local).unwrap().is_empty());
    }

    #[test]
    fn a_missing_process_has_no_readable_sockets() {
        // PID numbers above pid_max (4194304 at most on Linux) are never allocated.
        let error = socket_inodes(u32::MAX).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
