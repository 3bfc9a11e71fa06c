//! macOS: a kqueue `EVFILT_PROC` knote for the handle, libproc for the facts.
//!
//! The knote is registered first; the facts are then read by PID through `proc_pidinfo` and
//! `proc_pidpath`, and the caller confirms afterwards that the knote has not fired. An exit
//! (and so a recycled PID) in between is caught by that check, as on Linux with the pidfd.
//!
//! macOS has no pidfd, so signals still go through `kill(2)` by PID; see [`Knote::signal`]
//! for the race that leaves.

use std::ffi::{c_int, c_void, OsStr};
use std::fs::{self, File};
use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rustix::event::kqueue::{self, Event, EventFilter, EventFlags, ProcessEvents};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::{self, Pid, Signal};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{ExePath, ExitStatus, OpenError};

/// `NOTE_EXITSTATUS`: the exit event carries the wait status in `data`.
const EXIT_STATUS: ProcessEvents = ProcessEvents::from_bits_retain(libc::NOTE_EXITSTATUS);

#[derive(Debug)]
pub(crate) struct ProcessHandle {
    knote: Knote,
}

impl ProcessHandle {
    pub fn open(pid: u32) -> Result<Self, OpenError> {
        Knote::open(pid).map(|knote| ProcessHandle { knote })
    }

    pub fn pid(&self) -> u32 {
        self.knote.pid
    }

    pub fn has_exited(&self) -> io::Result<bool> {
        self.knote.poll_exit().map(|status| status.is_some())
    }

    /// Errors count as "pending", the safe side.
    pub fn exit_pending(&self) -> bool {
        self.knote.exit_signalled().unwrap_or(true)
    }

    pub fn into_watcher(self) -> io::Result<ExitWatcher> {
        // SAFETY: `Knote` owns the kqueue descriptor (an `OwnedFd`) for the whole life of the
        // `AsyncFd`, and its `as_raw_fd` always returns that same descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(self.knote, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(ExitWatcher { fd })
    }
}

#[derive(Debug)]
pub(crate) struct ExitWatcher {
    fd: AsyncFd<Knote>,
}

impl ExitWatcher {
    pub async fn wait(&self) -> ExitStatus {
        let pid = self.fd.get_ref().pid;
        // The exit event may already have been consumed by `has_exited` before this watcher
        // existed; then the kqueue will never become readable again.
        match self.fd.get_ref().poll_exit() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(pid, %error, "cannot confirm exit; assuming exited");
                return ExitStatus::Unknown;
            }
        }
        loop {
            let mut guard = match self.fd.readable().await {
                Ok(guard) => guard,
                // The reactor is gone (runtime shutting down): nothing can be confirmed.
                Err(_) => return ExitStatus::Unknown,
            };
            // Readiness is only a hint: drain the kqueue and look for the exit event.
            match self.fd.get_ref().poll_exit() {
                Ok(Some(status)) => return status,
                Ok(None) => {
                    tracing::debug!(pid, "spurious kqueue readiness; waiting again");
                    guard.clear_ready();
                }
                Err(error) => {
                    tracing::warn!(pid, %error, "cannot confirm exit; assuming exited");
                    return ExitStatus::Unknown;
                }
            }
        }
    }

    pub fn kill(&self) -> io::Result<()> {
        self.fd.get_ref().signal(Signal::KILL)
    }

    pub fn terminate(&self) -> io::Result<()> {
        self.fd.get_ref().signal(Signal::TERM)
    }

    pub fn signal(&self, signal: i32) -> io::Result<()> {
        self.fd.get_ref().signal(parse_signal(signal)?)
    }
}

/// A private kqueue holding one `EVFILT_PROC`/`NOTE_EXIT` knote for `pid`.
///
/// The exit event is one-shot (the kernel sets `EV_ONESHOT` on it), so once drained its
/// result lives in `exit`; the mutex also keeps two concurrent drains from both missing it.
///
/// Only [`Knote::poll_exit`] drains. Once a watcher exists, only its `wait` may call it:
/// a drain elsewhere empties the kqueue before the reactor reports it readable, and the
/// reactor then drops the wake-up (XNU re-checks the count), leaving `wait` asleep. The
/// signalling paths use the non-consuming [`Knote::exit_signalled`].
#[derive(Debug)]
struct Knote {
    pid: u32,
    kq: OwnedFd,
    exit: Mutex<Option<ExitStatus>>,
}

impl Knote {
    fn open(pid: u32) -> Result<Self, OpenError> {
        let raw = i32::try_from(pid).map_err(|_| OpenError::NotFound)?;
        let Some(id) = Pid::from_raw(raw) else {
            return Err(OpenError::NotFound);
        };
        let kq = kqueue::kqueue().map_err(|e| OpenError::Other(e.into()))?;
        // rustix does not set close-on-exec on kqueues; children must not inherit ours.
        rustix::io::fcntl_setfd(&kq, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| OpenError::Other(e.into()))?;
        // Ask for the wait status with the exit. The kernel grants it to the parent (and, on
        // recent macOS, to anyone allowed to SIGKILL the process) and answers EACCES
        // otherwise; then watch the bare exit, whose status stays unknown.
        let registered = match register(&kq, id, ProcessEvents::EXIT | EXIT_STATUS) {
            Err(Errno::ACCESS) => register(&kq, id, ProcessEvents::EXIT),
            other => other,
        };
        match registered {
            Ok(()) => Ok(Knote {
                pid,
                kq,
                exit: Mutex::new(None),
            }),
            // Also what a zombie answers: XNU does not attach knotes to exited processes.
            Err(Errno::SRCH) => Err(OpenError::NotFound),
            Err(e @ (Errno::NOSYS | Errno::PERM)) => Err(OpenError::Unsupported(e.into())),
            Err(e) => Err(OpenError::Other(e.into())),
        }
    }

    /// Non-blocking: drain the kqueue and report the exit if the knote fired (now or on an
    /// earlier call).
    fn poll_exit(&self) -> io::Result<Option<ExitStatus>> {
        let mut exit = self.exit.lock().unwrap_or_else(PoisonError::into_inner);
        if exit.is_some() {
            return Ok(*exit);
        }
        let mut events = [MaybeUninit::<Event>::uninit(); 1];
        let ready = loop {
            // SAFETY: the only knote on this kqueue is `EVFILT_PROC`, which refers to a PID,
            // not to a file descriptor, so no descriptor can go stale under it.
            match unsafe { kqueue::kevent(&self.kq, &[], &mut events, Some(Duration::ZERO)) } {
                Ok((ready, _)) => break ready,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        for event in ready.iter() {
            if let EventFilter::Proc { flags, .. } = event.filter() {
                if flags.contains(ProcessEvents::EXIT) {
                    *exit = Some(if flags.contains(EXIT_STATUS) {
                        // `data` is the process's wait(2) status (`p_xstat`).
                        ExitStatus::from_wait_status((event.data() & 0xffff) as i32)
                    } else {
                        ExitStatus::Unknown
                    });
                }
            }
        }
        Ok(*exit)
    }

    /// Non-consuming: has the exit been drained already, or is it pending on the kqueue (the
    /// knote is its only source of events)?
    fn exit_signalled(&self) -> io::Result<bool> {
        // Held so that a concurrent drain cannot slip between the two checks.
        let exit = self.exit.lock().unwrap_or_else(PoisonError::into_inner);
        if exit.is_some() {
            return Ok(true);
        }
        let mut fds = [PollFd::new(&self.kq, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            match poll(&mut fds, Some(&zero)) {
                Ok(ready) => return Ok(ready > 0),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Signal by PID once the knote says the process is still there; an exited process
    /// counts as delivered.
    ///
    /// Residual race (no pidfd on macOS): if the process exits, is reaped by its parent and
    /// its PID is reused between the check and `kill(2)`, the signal reaches the newcomer.
    /// The window is two back-to-back syscalls against a full exit, reap and PID wrap-around.
    fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.exit_signalled()? {
            return Ok(());
        }
        let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) else {
            return Ok(());
        };
        match process::kill_process(pid, signal) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsRawFd for Knote {
    fn as_raw_fd(&self) -> RawFd {
        self.kq.as_raw_fd()
    }
}

/// Add the `EVFILT_PROC` knote. With an empty event list, a registration error comes back
/// as the call's errno rather than as an `EV_ERROR` event.
fn register(kq: &OwnedFd, pid: Pid, flags: ProcessEvents) -> Result<(), Errno> {
    let change = Event::new(
        EventFilter::Proc { pid, flags },
        EventFlags::ADD,
        std::ptr::null_mut(),
    );
    let mut none: [MaybeUninit<Event>; 0] = [];
    loop {
        // SAFETY: an `EVFILT_PROC` knote refers to a PID, not to a file descriptor, so there
        // is no descriptor that must outlive the kqueue.
        match unsafe { kqueue::kevent(kq, &[change], &mut none, Some(Duration::ZERO)) } {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn parse_signal(signal: i32) -> io::Result<Signal> {
    Signal::from_named_raw(signal)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "unknown signal number"))
}

/// libproc calls return 0 (or -1) and set errno on failure.
fn libproc_error() -> io::Error {
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(0) {
        io::Error::other("libproc call failed without errno")
    } else {
        error
    }
}

fn bsd_info(pid: u32) -> io::Result<libc::proc_bsdinfo> {
    let raw = c_int::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    let mut info = MaybeUninit::<libc::proc_bsdinfo>::zeroed();
    let size = mem::size_of::<libc::proc_bsdinfo>() as c_int;
    // SAFETY: the buffer is a `proc_bsdinfo` of exactly `size` bytes, the layout
    // PROC_PIDTBSDINFO fills; the kernel writes at most `size` bytes.
    let written = unsafe {
        libc::proc_pidinfo(
            raw,
            libc::PROC_PIDTBSDINFO,
            0,
            info.as_mut_ptr().cast::<c_void>(),
            size,
        )
    };
    if written <= 0 {
        return Err(libproc_error());
    }
    if written < size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("short proc_pidinfo(PROC_PIDTBSDINFO) for pid {pid}"),
        ));
    }
    // SAFETY: zero-initialised, then fully written by the kernel (checked above); every
    // field is a plain integer or byte array, for which any bit pattern is valid.
    Ok(unsafe { info.assume_init() })
}

pub(crate) fn boot_id() -> io::Result<String> {
    // A UUID string, regenerated at every boot.
    let mut buf = [0u8; 64];
    let mut len = buf.len();
    // SAFETY: the name is NUL-terminated, `buf` is writable for `len` bytes and `len` is a
    // valid in/out length; no new value is set (null, 0).
    let rc = unsafe {
        libc::sysctlbyname(
            c"kern.bootsessionuuid".as_ptr(),
            buf.as_mut_ptr().cast::<c_void>(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let value = buf.get(..len).unwrap_or(&buf);
    let value = value.split(|&b| b == 0).next().unwrap_or_default();
    Ok(String::from_utf8_lossy(value).trim().to_owned())
}

/// Microseconds since the Unix epoch (`pbi_start_tvsec`/`pbi_start_tvusec`).
pub(crate) fn start_time(pid: u32) -> io::Result<u64> {
    let info = bsd_info(pid)?;
    Ok(info
        .pbi_start_tvsec
        .wrapping_mul(1_000_000)
        .wrapping_add(info.pbi_start_tvusec))
}

pub(crate) fn exe_path(pid: u32) -> io::Result<ExePath> {
    let raw = c_int::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    let mut buf = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    // SAFETY: `buf` is writable for the length passed; the kernel writes at most that much.
    let len =
        unsafe { libc::proc_pidpath(raw, buf.as_mut_ptr().cast::<c_void>(), buf.len() as u32) };
    if len <= 0 {
        return Err(libproc_error());
    }
    buf.truncate(len as usize);
    let path = PathBuf::from(OsStr::from_bytes(&buf));
    // macOS gives no cheap "(deleted)" marker: a path that is gone is the only replacement
    // we can see. A file swapped in at the same path goes unnoticed here.
    let replaced = matches!(
        fs::symlink_metadata(&path),
        Err(e) if e.kind() == io::ErrorKind::NotFound
    );
    Ok(ExePath { path, replaced })
}

/// Opens the executable by path: unlike Linux's `/proc/PID/exe`, this reads whatever file is
/// at that path now, so a replaced binary is hashed as the new file.
pub(crate) fn open_exe(pid: u32) -> io::Result<File> {
    File::open(exe_path(pid)?.path)
}

/// The effective uid (`pbi_uid`), like the owner of `/proc/PID` on Linux.
pub(crate) fn process_uid(pid: u32) -> io::Result<Option<u32>> {
    Ok(Some(bsd_info(pid)?.pbi_uid))
}

pub(crate) fn is_no_such_process(err: &io::Error) -> bool {
    err.raw_os_error() == Some(Errno::SRCH.raw_os_error()) || err.kind() == io::ErrorKind::NotFound
}
