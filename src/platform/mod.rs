//! Layer 1: the platform. The few OS facts and actions the crate needs, behind one small
//! internal API with a Linux, a macOS and a Windows implementation (the shape of tokio's
//! `process` module: one type here, one `imp` per OS).
//!
//! Everything in this module is synchronous and cheap except [`ExitWatcher::wait`];
//! callers in the layers above run the file reads and hashing on the blocking pool.
//! This is the only module of the crate that contains `unsafe`.

use std::fs::File;
use std::io;
use std::path::PathBuf;

#[cfg(target_os = "linux")]
#[path = "linux/mod.rs"]
mod imp;

#[cfg(target_vendor = "apple")]
#[path = "macos.rs"]
mod imp;

#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

/// What Linux and macOS share (plain POSIX).
#[cfg(unix)]
mod unix;

mod files;
mod held;
mod helpers;
mod limits;
pub(crate) mod notify;
mod spawn;
mod tree;
pub(crate) mod users;
mod watch;
pub(crate) use files::{
    chown, connect_unix, is_executable_file, is_socket, owner_uid, private_no_follow, still_names,
    UNIX_SOCKETS,
};
pub(crate) use held::{duplicate, Descriptor, HeldSocket, CAN_PASS_DESCRIPTORS};
pub(crate) use helpers::{exec_errno, kill_group, own_process_group, ExecErrno};
#[cfg(feature = "toml")]
pub(crate) use helpers::{nudge_group, Nudge};
pub(crate) use limits::{open_files_for_children, raise_open_files};
pub(crate) use notify::NotifySocket;
pub(crate) use spawn::{
    spawn, Child, Credentials, LimitResource, ListenFd, PipeReader, ResourceLimit, SpawnError,
    SpawnPlan, SpawnStage, Stdio,
};
pub(crate) use watch::PathWatcher;

pub(crate) use tree::{
    listener_inodes, socket_holder, CgroupLimit, LimitRefused, Listening, ProcessTree, Tracking,
    TreeLeader, TreePlan, UsageFrom,
};

#[cfg(target_os = "linux")]
pub(crate) use imp::{async_fd, cgroup, inotify, listen, sockets};

#[cfg(not(any(target_os = "linux", target_vendor = "apple", windows)))]
compile_error!("running-process supports Linux, macOS and Windows");

/// A user database entry (`getpwnam_r` / `getpwuid_r`: `/etc/passwd`, or NSS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
    pub shell: std::path::PathBuf,
}

/// How a process ended, as far as the kernel tells us.
///
/// The status is known for our own children and, on Linux 6.15 and later, for any process
/// (`PIDFD_INFO_EXIT`). Elsewhere it is [`ExitStatus::Unknown`]: never invented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ExitStatus {
    /// The process exited normally with this code.
    Code(i32),
    /// The process was terminated by this signal (Unix).
    Signal(i32),
    /// The process is gone but the OS did not tell us how it ended.
    Unknown,
}

impl ExitStatus {
    /// `true` for an exit with code 0. `Unknown` is not a success.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    /// Convert a raw wait status (as produced by `wait(2)` on Unix).
    #[cfg(unix)]
    pub(crate) fn from_wait_status(raw: i32) -> Self {
        let termsig = raw & 0x7f;
        if termsig == 0 {
            ExitStatus::Code((raw >> 8) & 0xff)
        } else if termsig != 0x7f {
            ExitStatus::Signal(termsig)
        } else {
            ExitStatus::Unknown
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => write!(f, "killed by signal {signal}"),
            ExitStatus::Unknown => f.write_str("exit status unknown"),
        }
    }
}

/// Why a process handle could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// No such process (or not visible from our PID namespace).
    NotFound,
    /// The OS refuses process handles here (old kernel, seccomp profile).
    Unsupported(io::Error),
    /// Any other failure, such as a permission error.
    Other(io::Error),
}

/// The executable a process runs, as the OS reports its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExePath {
    /// The path, without any "deleted" marker.
    pub path: PathBuf,
    /// The file at `path` is no longer the image the process runs (Linux: ` (deleted)`).
    pub replaced: bool,
}

/// Identity of a file on disk: equal identities mean the same bytes were hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

/// A handle that pins one process: signals and exit notifications go through it, never
/// through a bare PID. Opening it is the first step of every identity check.
#[derive(Debug)]
pub(crate) struct ProcessHandle {
    inner: imp::ProcessHandle,
}

impl ProcessHandle {
    /// Open a handle to `pid` (Linux `pidfd_open`, macOS a kqueue `EVFILT_PROC` knote,
    /// Windows `OpenProcess`).
    pub fn open(pid: u32) -> Result<Self, OpenError> {
        imp::ProcessHandle::open(pid).map(|inner| ProcessHandle { inner })
    }

    /// A handle from the pidfd a `clone3(CLONE_PIDFD)` returned (Linux), shared with the
    /// child's owner: one descriptor per child, not one per holder.
    #[cfg(target_os = "linux")]
    pub fn from_pidfd(pid: u32, pidfd: std::sync::Arc<std::os::fd::OwnedFd>) -> Self {
        ProcessHandle {
            inner: imp::ProcessHandle::from_pidfd(pid, pidfd),
        }
    }

    /// The PID this handle was opened for.
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// Non-blocking: has the process behind this handle exited (zombie or reaped)?
    pub fn has_exited(&self) -> io::Result<bool> {
        self.inner.has_exited()
    }

    /// Non-blocking and free of file reads: has the kernel signalled an exit? A hint only
    /// (`true` may be spurious), used to refuse a process that may have died mid-probe.
    pub fn exit_pending(&self) -> bool {
        self.inner.exit_pending()
    }

    /// A token naming exactly this process, comparable with [`peer_process_token`]: the
    /// pidfs inode on Linux 6.9+, `None` where the OS has no such thing.
    pub fn process_token(&self) -> Option<u64> {
        #[cfg(target_os = "linux")]
        return self.inner.process_token();
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Turn the handle into a watcher registered with the tokio reactor. Must be called
    /// from within a tokio runtime.
    pub fn into_watcher(self) -> io::Result<ExitWatcher> {
        self.inner.into_watcher().map(|inner| ExitWatcher { inner })
    }
}

/// Waits for the exit of one process, woken by the kernel (no polling).
#[derive(Debug)]
pub(crate) struct ExitWatcher {
    inner: imp::ExitWatcher,
}

impl ExitWatcher {
    /// Resolves once the exit is confirmed (readiness alone is only a hint), with the exit
    /// status when the OS gives it. Cancel-safe; meant for one waiter at a time.
    pub async fn wait(&self) -> ExitStatus {
        self.inner.wait().await
    }

    /// Kill through the watcher's handle. Succeeds if the process already exited.
    pub fn kill(&self) -> io::Result<()> {
        self.inner.kill()
    }

    /// Ask the process to stop (SIGTERM); see [`ProcessHandle::terminate`].
    pub fn terminate(&self) -> io::Result<()> {
        self.inner.terminate()
    }

    /// Send an arbitrary signal number through the handle (Unix only).
    #[cfg(unix)]
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        self.inner.signal(signal)
    }

    /// Send `nudge` through the handle (`Unsupported` where there are no signals).
    #[cfg(feature = "toml")]
    pub fn nudge(&self, nudge: Nudge) -> io::Result<()> {
        match nudge.number() {
            #[cfg(unix)]
            Some(signal) => self.inner.signal(signal),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no signals on this OS",
            )),
        }
    }
}

/// Whether this OS has cgroups, so that a service can be tracked, measured and limited as
/// one tree (Linux). Callers above ask this instead of naming the OS.
pub(crate) const HAS_CGROUPS: bool = cfg!(target_os = "linux");

/// Identifier of the current boot; empty where the OS has none.
pub(crate) fn boot_id() -> io::Result<String> {
    imp::boot_id()
}

/// The OS's start time of `pid`, in its native unit (Linux: clock ticks since boot, field
/// 22 of `/proc/PID/stat`). Only meaningful compared with another reading of the same OS.
pub(crate) fn start_time(pid: u32) -> io::Result<u64> {
    imp::start_time(pid)
}

/// The path of the executable `pid` runs.
pub(crate) fn exe_path(pid: u32) -> io::Result<ExePath> {
    imp::exe_path(pid)
}

/// Open the running image of `pid` for reading (Linux: `/proc/PID/exe`, which still reads
/// the original inode when the path was replaced).
pub(crate) fn open_exe(pid: u32) -> io::Result<File> {
    imp::open_exe(pid)
}

/// The identity of an open file, the key of the digest cache.
pub(crate) fn file_identity(file: &File) -> io::Result<FileIdentity> {
    #[cfg(unix)]
    return unix::file_identity(file);
    #[cfg(windows)]
    return imp::file_identity(file);
}

/// The effective user id of this process (`None` on Windows, which has no uids).
pub(crate) fn current_uid() -> Option<u32> {
    #[cfg(unix)]
    return unix::current_uid();
    #[cfg(not(unix))]
    None
}

/// The user id that owns `pid` (`None` on Windows).
pub(crate) fn process_uid(pid: u32) -> io::Result<Option<u32>> {
    imp::process_uid(pid)
}

/// Signal the process group `pgid`. Only safe for a group whose leader is our own child
/// that we have not reaped: while it exists, no other group can take its id.
#[cfg(unix)]
pub(crate) fn signal_process_group(pgid: u32, signal: i32) -> io::Result<()> {
    use rustix::process::{kill_process_group, Pid, Signal};
    let pid = i32::try_from(pgid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid process group id"))?;
    let signal = Signal::from_named_raw(signal)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "unknown signal number"))?;
    match kill_process_group(pid, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The [`ProcessHandle::process_token`] of the process listening at the other end of a
/// connected local socket (Linux: `SO_PEERPIDFD`). `Ok(None)` where the OS cannot tell;
/// an error (ESRCH) when that process no longer exists.
#[cfg(unix)]
pub(crate) fn peer_process_token(socket: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<u64>> {
    #[cfg(target_os = "linux")]
    return imp::peer_process_token(socket);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Ok(None)
    }
}

/// Whether no process `pid` exists (a recycled PID counts as existing: callers use this
/// only to clean up after the dead, where a false "exists" merely leaves something behind).
pub(crate) fn process_is_gone(pid: u32) -> bool {
    matches!(ProcessHandle::open(pid), Err(OpenError::NotFound))
}

/// Whether `err` says "no such process".
pub(crate) fn is_no_such_process(err: &io::Error) -> bool {
    imp::is_no_such_process(err)
}

// The layers above move handles and watchers across tasks and threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<ProcessHandle>();
    send_sync::<ExitWatcher>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_facts_are_readable_through_a_live_handle() {
        let pid = std::process::id();
        let first = start_time(pid).unwrap();
        assert_eq!(first, start_time(pid).unwrap());
        #[cfg(unix)]
        assert!(!boot_id().unwrap().is_empty());
        let exe = exe_path(pid).unwrap();
        assert!(!exe.replaced);
        assert_eq!(exe.path, std::env::current_exe().unwrap());
        let handle = ProcessHandle::open(pid).unwrap();
        assert_eq!(handle.pid(), pid);
        assert!(!handle.has_exited().unwrap());
        assert!(!handle.exit_pending());
        #[cfg(unix)]
        assert_eq!(current_uid(), process_uid(pid).unwrap());
        let identity = file_identity(&open_exe(pid).unwrap()).unwrap();
        assert_eq!(identity, file_identity(&open_exe(pid).unwrap()).unwrap());
    }

    /// The socket's peer is named exactly: our own listener gives our own token; a
    /// listener in another process (same uid, so `SO_PEERCRED` alone would only compare a
    /// PID) gives another token.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_peer_process_of_a_socket_is_named_exactly() {
        use std::os::fd::AsFd;
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.sock");
        let _listener = UnixListener::bind(&ours).unwrap();
        let me = ProcessHandle::open(std::process::id()).unwrap();
        let Some(my_token) = me.process_token() else {
            eprintln!("SKIPPED: no pidfs (Linux < 6.9)");
            return;
        };
        let client = UnixStream::connect(&ours).unwrap();
        assert_eq!(peer_process_token(client.as_fd()).unwrap(), Some(my_token));

        // Another process listening: python3 binds, prints a line once listening.
        let theirs = dir.path().join("theirs.sock");
        let mut other = std::process::Command::new("python3")
            .args(["-c", "import socket,sys;s=socket.socket(socket.AF_UNIX);s.bind(sys.argv[1]);s.listen();print('up',flush=True);sys.stdin.read()"])
            .arg(&theirs)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(other.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "up");
        let client = UnixStream::connect(&theirs).unwrap();
        let their_token = ProcessHandle::open(other.id()).unwrap().process_token();
        let peer = peer_process_token(client.as_fd()).unwrap();
        assert_eq!(peer, their_token);
        assert_ne!(peer, Some(my_token));
        drop(other.stdin.take());
        other.wait().unwrap();
    }

    #[test]
    fn a_missing_process_is_not_found() {
        // PID numbers above pid_max (4194304 at most on Linux) are never allocated.
        assert!(matches!(
            ProcessHandle::open(0x7fff_fff0),
            Err(OpenError::NotFound)
        ));
    }
}
