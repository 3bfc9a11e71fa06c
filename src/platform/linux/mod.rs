//! Linux: pidfd for the handle, `/proc` for the facts.
//!
//! The pidfd is opened first; the facts are then read by PID from `/proc`, and the caller
//! confirms afterwards that the pidfd is still not readable. That proves the facts were read
//! from the process the pidfd refers to, so a recycled PID cannot slip through.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use rustix::io::Errno;
use rustix::process::{self, Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{ExePath, ExitStatus, OpenError};

pub(crate) mod cgroup;
mod fork_exec;
pub(crate) mod inotify;
pub(crate) mod listen;
pub(crate) mod sockets;
mod spawner;
pub(crate) mod usage;

pub(crate) use spawner::{spawn, OwnedChild};

const DELETED_SUFFIX: &[u8] = b" (deleted)";

/// A pidfd, shared where a spawned child's owner (which reaps it) and its handle (which
/// watches and signals it) both need it: one descriptor per process.
pub(crate) type Pidfd = std::sync::Arc<OwnedFd>;

#[derive(Debug)]
pub(crate) struct ProcessHandle {
    pid: u32,
    pidfd: Pidfd,
}

impl ProcessHandle {
    pub fn open(pid: u32) -> Result<Self, OpenError> {
        let raw = i32::try_from(pid).map_err(|_| OpenError::NotFound)?;
        let Some(id) = Pid::from_raw(raw) else {
            return Err(OpenError::NotFound);
        };
        match process::pidfd_open(id, PidfdFlags::empty()) {
            Ok(pidfd) => Ok(ProcessHandle {
                pid,
                pidfd: Pidfd::new(pidfd),
            }),
            Err(Errno::SRCH) => Err(OpenError::NotFound),
            Err(e @ (Errno::NOSYS | Errno::PERM)) => Err(OpenError::Unsupported(e.into())),
            Err(e) => Err(OpenError::Other(e.into())),
        }
    }

    /// A handle from a pidfd we already hold (`clone3(CLONE_PIDFD)`), shared with the
    /// child's owner.
    pub fn from_pidfd(pid: u32, pidfd: Pidfd) -> Self {
        ProcessHandle { pid, pidfd }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn has_exited(&self) -> io::Result<bool> {
        pidfd_has_exited(&self.pidfd, self.pid)
    }

    pub fn exit_pending(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // Errors count as "pending": the caller then refuses, which is the safe side.
        poll(&mut fds, Some(&zero)).map_or(true, |ready| ready > 0)
    }

    pub fn process_token(&self) -> Option<u64> {
        pidfs_inode(self.pidfd.as_fd())
    }

    pub fn into_watcher(self) -> io::Result<ExitWatcher> {
        let fd = async_pidfd(self.pidfd)?;
        Ok(ExitWatcher { pid: self.pid, fd })
    }
}

/// `statfs` magic of pidfs (`PIDFS_MAGIC`), the filesystem behind pidfds since Linux 6.9.
const PIDFS_MAGIC: i64 = 0x5049_4446;

/// The pidfs inode of a pidfd: equal for every pidfd of one process, different for any
/// other process (Linux 6.9+). `None` on older kernels, whose pidfds share one anonymous
/// inode and so identify nothing.
fn pidfs_inode(pidfd: BorrowedFd<'_>) -> Option<u64> {
    let on_pidfs = rustix::fs::fstatfs(pidfd).ok()?.f_type as i64 == PIDFS_MAGIC;
    on_pidfs.then(|| rustix::fs::fstat(pidfd).ok().map(|st| st.st_ino))?
}

/// The process token (pidfs inode) of the process that listens on the other end of the
/// connected Unix socket `socket`, from `SO_PEERPIDFD` (Linux 6.5+).
///
/// `Ok(None)`: the kernel cannot tell (no `SO_PEERPIDFD`, or no pidfs). An error with
/// `ESRCH`: the peer process no longer exists.
pub(crate) fn peer_process_token(socket: BorrowedFd<'_>) -> io::Result<Option<u64>> {
    let mut raw: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `socket` is a valid open descriptor for the duration of the call (a
    // `BorrowedFd`), `raw` and `len` are live locals of the size the kernel writes for
    // `SO_PEERPIDFD` (an int), and `len` tells it that size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut raw as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENOPROTOOPT | libc::EINVAL | libc::EOPNOTSUPP) => Ok(None),
            _ => Err(error),
        };
    }
    if raw < 0 {
        return Ok(None);
    }
    // SAFETY: the kernel just returned `raw` as a new descriptor that nothing else owns;
    // the `OwnedFd` closes it exactly once.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(pidfs_inode(pidfd.as_fd()))
}

/// Register `fd` with the tokio reactor for readability. Must be called from within a
/// tokio runtime.
pub(crate) fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` owns the descriptor for the whole life of the `AsyncFd` and
    // always returns the same descriptor from `as_raw_fd`, which is all the contract asks.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// [`async_fd`] for a shared pidfd.
fn async_pidfd(fd: Pidfd) -> io::Result<AsyncFd<Pidfd>> {
    // SAFETY: the `Arc` keeps the descriptor open for the whole life of the `AsyncFd` (it
    // holds one reference; the descriptor closes only with the last), and always returns
    // the same descriptor from `as_raw_fd`. Only the handle registers it with the reactor
    // (the child's owner polls it from the spawner thread with `poll`, not epoll).
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

#[derive(Debug)]
pub(crate) struct ExitWatcher {
    pid: u32,
    fd: AsyncFd<Pidfd>,
}

impl ExitWatcher {
    pub async fn wait(&self) -> ExitStatus {
        loop {
            let mut guard = match self.fd.readable().await {
                Ok(guard) => guard,
                // The reactor is gone (runtime shutting down): nothing can be confirmed.
                Err(_) => return ExitStatus::Unknown,
            };
            // Readiness is a hint (ptrace, EDR tools): confirm before reporting.
            match pidfd_has_exited(self.fd.get_ref(), self.pid) {
                Ok(true) => return exit_status(self.fd.get_ref()),
                Ok(false) => {
                    tracing::debug!(pid = self.pid, "spurious pidfd readiness; waiting again");
                    guard.clear_ready();
                }
                Err(error) => {
                    tracing::warn!(pid = self.pid, %error, "cannot confirm exit; assuming exited");
                    return ExitStatus::Unknown;
                }
            }
        }
    }

    pub fn kill(&self) -> io::Result<()> {
        send(self.fd.get_ref(), Signal::KILL)
    }

    pub fn terminate(&self) -> io::Result<()> {
        send(self.fd.get_ref(), Signal::TERM)
    }

    pub fn signal(&self, signal: i32) -> io::Result<()> {
        let signal = Signal::from_named_raw(signal)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "unknown signal number"))?;
        send(self.fd.get_ref(), signal)
    }
}

/// Signal through the pidfd; a process that already exited counts as delivered.
fn send(pidfd: &OwnedFd, signal: Signal) -> io::Result<()> {
    match process::pidfd_send_signal(pidfd, signal) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Has the pidfd's process exited? Reaped processes are seen through fdinfo (`Pid: -1`),
/// zombies through the state letter in `/proc/PID/stat`. A reaped and recycled PID is
/// caught by fdinfo before the stat file is read.
///
/// For our own child one `waitid(WNOWAIT)` answers (and leaves the zombie in place): no
/// `/proc` file is opened on the exit path of the processes a supervisor spawned.
fn pidfd_has_exited(pidfd: &OwnedFd, pid: u32) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
    match process::waitid(WaitId::PidFd(pidfd.as_fd()), options) {
        Ok(Some(_)) => return Ok(true),
        Ok(None) => return Ok(false),
        // ECHILD: not our child (or already reaped): ask /proc.
        Err(_) => {}
    }
    let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
    let reaped = fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .map(|value| value.trim() == "-1")
        .unwrap_or(false);
    if reaped {
        return Ok(true);
    }
    match read_stat(pid) {
        Ok(stat) => Ok(matches!(stat.state, b'Z' | b'X')),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// The exit status: from `waitid(P_PIDFD, WNOWAIT)` for our own child (leaves the zombie
/// for its real owner to reap), else from `PIDFD_GET_INFO` (Linux 6.15+), else unknown.
fn exit_status(pidfd: &OwnedFd) -> ExitStatus {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
    if let Ok(Some(status)) = process::waitid(WaitId::PidFd(pidfd.as_fd()), options) {
        if let Some(code) = status.exit_status() {
            return ExitStatus::Code(code);
        }
        if let Some(signal) = status.terminating_signal() {
            return ExitStatus::Signal(signal);
        }
    }
    pidfd_info_exit(pidfd).unwrap_or(ExitStatus::Unknown)
}

/// `struct pidfd_info` as of Linux 6.15 (`PIDFD_INFO_SIZE_VER0`, 64 bytes).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

const PIDFD_INFO_EXIT: u64 = 1 << 3;
const PIDFD_GET_INFO: rustix::ioctl::Opcode =
    rustix::ioctl::opcode::read_write::<PidfdInfo>(0xFF, 11);

fn pidfd_info_exit(pidfd: &OwnedFd) -> Option<ExitStatus> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: PIDFD_GET_INFO takes a pointer to `struct pidfd_info`, which `PidfdInfo`
    // mirrors field for field (#[repr(C)], 64 bytes, the size encoded in the opcode).
    // Kernels without the ioctl answer ENOTTY/EINVAL and leave the struct untouched.
    let ioctl = unsafe { rustix::ioctl::Updater::<PIDFD_GET_INFO, PidfdInfo>::new(&mut info) };
    // SAFETY: `pidfd` is a valid pidfd and the ioctl object was built for it above.
    unsafe { rustix::ioctl::ioctl(pidfd, ioctl) }.ok()?;
    (info.mask & PIDFD_INFO_EXIT != 0).then(|| ExitStatus::from_wait_status(info.exit_code))
}

struct Stat {
    state: u8,
    start_time: u64,
}

/// Parse `/proc/PID/stat`: split after the **last** `)`, since the command name may hold
/// spaces and parentheses. Field 3 is the state, field 22 the start time.
fn read_stat(pid: u32) -> io::Result<Stat> {
    let mut raw = Vec::with_capacity(512);
    File::open(format!("/proc/{pid}/stat"))?.read_to_end(&mut raw)?;
    parse_stat(&raw).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unparsable /proc/{pid}/stat"),
        )
    })
}

fn parse_stat(raw: &[u8]) -> Option<Stat> {
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // `rest` starts at field 3 (state); field 22 is 19 further.
    let state = *fields.next()?.as_bytes().first()?;
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

/// The boot id, read once: it cannot change while this process runs (every verified
/// spawn asks for it).
pub(crate) fn boot_id() -> io::Result<String> {
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(id) = BOOT_ID.get() {
        return Ok(id.clone());
    }
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned();
    Ok(BOOT_ID.get_or_init(|| id).clone())
}

pub(crate) fn start_time(pid: u32) -> io::Result<u64> {
    read_stat(pid).map(|stat| stat.start_time)
}

pub(crate) fn exe_path(pid: u32) -> io::Result<ExePath> {
    let link = fs::read_link(format!("/proc/{pid}/exe"))?;
    let bytes = link.as_os_str().as_bytes();
    if let Some(stripped) = bytes.strip_suffix(DELETED_SUFFIX) {
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(stripped));
        return Ok(ExePath {
            path,
            replaced: true,
        });
    }
    Ok(ExePath {
        path: link,
        replaced: false,
    })
}

pub(crate) fn open_exe(pid: u32) -> io::Result<File> {
    File::open(format!("/proc/{pid}/exe"))
}

pub(crate) fn process_uid(pid: u32) -> io::Result<Option<u32>> {
    Ok(Some(fs::metadata(format!("/proc/{pid}"))?.uid()))
}

pub(crate) fn is_no_such_process(err: &io::Error) -> bool {
    err.raw_os_error() == Some(Errno::SRCH.raw_os_error()) || err.kind() == io::ErrorKind::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_hostile_command_names() {
        let mut raw = b"4242 (a) b) (c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 ".to_vec();
        raw.extend_from_slice(b"987654 20 21\n");
        let stat = parse_stat(&raw).expect("parses");
        assert_eq!(stat.state, b'S');
        assert_eq!(stat.start_time, 987_654);
    }

    #[test]
    fn stat_parsing_rejects_garbage() {
        assert!(parse_stat(b"").is_none());
        assert!(parse_stat(b"12 (x").is_none());
        assert!(parse_stat(b"12 (x) S 1 2").is_none());
    }

    #[test]
    fn wait_status_decoding() {
        assert_eq!(ExitStatus::from_wait_status(9), ExitStatus::Signal(9));
        assert_eq!(ExitStatus::from_wait_status(3 << 8), ExitStatus::Code(3));
        assert_eq!(ExitStatus::from_wait_status(0), ExitStatus::Code(0));
    }
}
