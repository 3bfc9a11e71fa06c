//! Linux: fork and exec a child without any window for PID reuse.
//!
//! `clone3(CLONE_PIDFD)` returns the pidfd with the fork itself, and `CLONE_INTO_CGROUP`
//! starts the child inside its cgroup, so not even its first instruction runs outside it.
//! Where `clone3` is refused (kernels before 5.3, seccomp profiles that answer ENOSYS, as
//! Docker's does so that libc falls back), a plain `fork` is used, the pidfd is opened
//! right after it (the child cannot be reaped by anyone else before that, so the PID is
//! still ours), and the child moves itself into the cgroup before exec.
//!
//! On x86_64 the child shares the supervisor's memory until it execs (`CLONE_VM |
//! CLONE_VFORK`, as `posix_spawn` does) and runs on a stack of its own: no page tables are
//! copied, the supervisor's other threads take no copy-on-write faults and no TLB
//! shootdowns afterwards, and the kernel has no copied address space to tear down at exec.
//! The spawner thread is suspended until the child has exec'd or exited. Such a child may
//! write nothing of the parent's memory but its own stack (and its spawn's `LISTEN_PID`
//! buffer, below): it reads the prepared
//! arguments, resets every caught signal to its default before unblocking signals (a
//! handler would run on the parent's data), and reports failures through the pipe. Other
//! architectures fork (`clone3` without `CLONE_VM`).
//!
//! Between fork and exec the child may only make async-signal-safe system calls: the
//! parent is multi-threaded, and another thread may have held the allocator's lock at the
//! moment of the fork. Everything the child needs (C strings, pointer arrays, descriptors)
//! is therefore prepared before the fork, and the child uses raw system calls only (rustix
//! on its linux_raw backend, or libc's thin wrappers). In particular user and group are
//! changed with the per-thread system calls, not libc's `setuid`, whose process-wide
//! broadcast to "all threads" would act on the parent's thread list after a raw `clone3`.
//! A failure in the child is reported through a close-on-exec pipe as (stage, errno); a
//! successful exec closes the pipe, which the parent reads as success.
//!
//! Descriptors: the child gets its standard streams, the listening sockets of the plan at
//! 3, 4, ... (systemd's `LISTEN_FDS`), and nothing else. Every descriptor the crate opens
//! is close-on-exec; the child also marks every other descriptor from the first one after
//! the listeners on close-on-exec (`close_range(CLOSE_RANGE_CLOEXEC)`, Linux 5.11+), so
//! one the supervisor's process inherited or opened without the flag does not leak either.
//!
//! `LISTEN_PID` must be the child's own pid, which exists only after the fork: the
//! environment gets a buffer of this spawn's own, `LISTEN_PID=` followed by room for the
//! digits, and the child writes its pid there (`getpid`, then digits by hand: no
//! allocation) before exec. That buffer is the one piece of the parent's memory the child
//! writes; the parent thread is suspended meanwhile (or, after a plain `fork`, the child
//! writes its own copy) and the buffer belongs to this spawn alone.

use std::cell::UnsafeCell;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Resource, Rlimit, WaitId, WaitIdOptions};

use crate::platform::listen::LISTEN_FDS_START;
use crate::platform::spawn::{
    LimitResource, ListenFd, ResourceLimit, SpawnError, SpawnPlan, SpawnStage, Stdio,
};

/// `clone3` flag: return a pidfd for the child.
const CLONE_PIDFD: u64 = 0x1000;
/// `clone3` flag: the child shares our memory (until it execs).
#[cfg(target_arch = "x86_64")]
const CLONE_VM: u64 = 0x100;
/// `clone3` flag: the calling thread is suspended until the child execs or exits.
#[cfg(target_arch = "x86_64")]
const CLONE_VFORK: u64 = 0x4000;
/// `clone3` flag: start the child in the cgroup given by a directory descriptor (5.7+).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Set once `clone3` answered ENOSYS: every later spawn forks directly.
static NO_CLONE3: AtomicBool = AtomicBool::new(false);
/// Set once `CLONE_INTO_CGROUP` was refused as unknown (EINVAL, 5.3 to 5.6).
static NO_CLONE_INTO_CGROUP: AtomicBool = AtomicBool::new(false);
/// `clone3` flag: the child's caught signals start at their defaults (5.5+).
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
/// Set once `CLONE_CLEAR_SIGHAND` was refused (EINVAL): the child resets them itself. (An
/// EINVAL is blamed on it first, so a 5.5 or 5.6 kernel, which knows it but not
/// `CLONE_INTO_CGROUP`, ends up without either: only slower.)
static NO_CLEAR_SIGHAND: AtomicBool = AtomicBool::new(false);

/// What the child needs, owned, prepared before the fork (`Send`, so it can travel to the
/// spawner thread).
pub(crate) struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    /// Descriptors to put at 0, 1 and 2 (`None`: inherit the supervisor's).
    stdio: [Option<OwnedFd>; 3],
    process_group: bool,
    credentials: crate::platform::spawn::Credentials,
    umask: Option<u32>,
    limits: Vec<(Resource, Rlimit)>,
    die_with_parent: bool,
    /// The directory of the cgroup the child starts in (a duplicate of the instance's).
    cgroup: Option<OwnedFd>,
    /// The listening sockets for 3, 4, ...: copies numbered above the last target, so no
    /// `dup2` of one can overwrite another before it is moved.
    listen_fds: Vec<OwnedFd>,
    /// `LISTEN_PID=`, completed by the child (with `listen_fds` only).
    listen_pid: Option<PidSlot>,
}

/// The `LISTEN_PID=` entry of one spawn's environment, with room for any pid's digits and
/// the NUL: the child writes its pid into it before exec (see the module documentation).
pub(crate) struct PidSlot(Box<UnsafeCell<[u8; PID_SLOT_LEN]>>);

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// The prefix, ten digits (a pid fits in 32 bits) and the NUL, rounded up.
const PID_SLOT_LEN: usize = 32;

impl PidSlot {
    fn new() -> PidSlot {
        let mut entry = [0u8; PID_SLOT_LEN];
        entry[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
        PidSlot(Box::new(UnsafeCell::new(entry)))
    }

    /// The NUL-terminated entry, for `envp`.
    fn as_ptr(&self) -> *const libc::c_char {
        self.0.get().cast()
    }

    /// Write `pid`'s digits after the prefix, NUL-terminated. Async-signal-safe: no
    /// allocation, no locks; called by the child only.
    fn fill(&self, pid: u32) {
        let mut digits = [0u8; 10];
        let mut len = 0;
        let mut rest = pid;
        loop {
            digits[len] = b'0' + (rest % 10) as u8;
            rest /= 10;
            len += 1;
            if rest == 0 {
                break;
            }
        }
        let entry = self.0.get().cast::<u8>();
        let start = LISTEN_PID_PREFIX.len();
        for i in 0..len {
            // SAFETY: `start + len` is at most 21, within the 32-byte buffer, which lives
            // (in the `Prepared` of this spawn) until after the child has exec'd or
            // exited; nothing else reads or writes it meanwhile: the parent thread is
            // suspended (`CLONE_VFORK`) or this is the child's own copy (`fork`).
            unsafe { entry.add(start + i).write(digits[len - 1 - i]) };
        }
        // SAFETY: as above; the NUL ends the entry.
        unsafe { entry.add(start + len).write(0) };
    }

    /// The entry as it reads now (tests).
    #[cfg(test)]
    fn read(&self) -> String {
        // SAFETY: no child is using it (tests only call this after `fill`).
        let bytes = unsafe { &*self.0.get() };
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }
}

/// The parent's ends of the pipes of a prepared spawn.
pub(crate) struct ParentPipes {
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

fn c_string(bytes: Vec<u8>) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| {
        SpawnError::new(
            SpawnStage::Prepare,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "an argument, variable or path contains a NUL byte",
            ),
        )
    })
}

fn os(value: OsString) -> Result<CString, SpawnError> {
    c_string(value.into_vec())
}

/// Open `/dev/null` or create the pipe for one stream; returns (child end, parent end).
fn stdio_fds(stdio: Stdio, output: bool) -> io::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    Ok(match stdio {
        Stdio::Inherit => (None, None),
        Stdio::Null => {
            let mode = if output {
                rustix::fs::OFlags::WRONLY
            } else {
                rustix::fs::OFlags::RDONLY
            };
            let null = rustix::fs::open(
                c"/dev/null",
                mode | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            (Some(null), None)
        }
        Stdio::Pipe => {
            // Close-on-exec on both ends, so no other child started meanwhile inherits them.
            let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            if output {
                (Some(write), Some(read))
            } else {
                (Some(read), Some(write))
            }
        }
        Stdio::File(file) => (Some(OwnedFd::from(file)), None),
    })
}

/// Turn the plan into what the child needs. Allocates; runs before the fork.
pub(crate) fn prepare(plan: SpawnPlan) -> Result<(Prepared, ParentPipes), SpawnError> {
    let program = os(plan.program.into_os_string())?;
    let mut argv = vec![os(plan.arg0)?];
    for arg in plan.args {
        argv.push(os(arg)?);
    }
    let mut envp = Vec::with_capacity(plan.env.len() + 2);
    let passing = !plan.listen_fds.is_empty();
    for (key, value) in plan.env {
        // The protocol's variables are this spawn's own (the command layer removes any the
        // supervisor inherited; this keeps a spec from contradicting them).
        if passing && is_listen_variable(&key) {
            continue;
        }
        let mut entry = key.into_vec();
        entry.push(b'=');
        entry.extend(value.into_vec());
        envp.push(c_string(entry)?);
    }
    let cwd = plan.cwd.map(|dir| os(dir.into_os_string())).transpose()?;
    let stdio_error = |e: io::Error| SpawnError::new(SpawnStage::Stdio, e);
    let (stdin, _) = stdio_fds(plan.stdin, false).map_err(stdio_error)?;
    let (stdout, parent_stdout) = stdio_fds(plan.stdout, true).map_err(stdio_error)?;
    let (stderr, parent_stderr) = stdio_fds(plan.stderr, true).map_err(stdio_error)?;
    let limits = plan.limits.iter().map(rlimit).collect();
    let cgroup = plan
        .cgroup
        .map(|cgroup| rustix::io::fcntl_dupfd_cloexec(cgroup.dir(), 0))
        .transpose()
        .map_err(|e| SpawnError::new(SpawnStage::Cgroup, e))?;
    let (listen_fds, listen_pid) = if passing {
        (
            listeners(&plan.listen_fds, &mut envp)?,
            Some(PidSlot::new()),
        )
    } else {
        (Vec::new(), None)
    };
    Ok((
        Prepared {
            program,
            argv,
            envp,
            cwd,
            stdio: [stdin, stdout, stderr],
            process_group: plan.process_group,
            credentials: plan.credentials.unwrap_or_default(),
            umask: plan.umask,
            limits,
            die_with_parent: plan.die_with_parent,
            cgroup,
            listen_fds,
            listen_pid,
        },
        ParentPipes {
            stdout: parent_stdout,
            stderr: parent_stderr,
        },
    ))
}

/// The kernel's resource and values for one of the plan's limits.
fn rlimit(limit: &ResourceLimit) -> (Resource, Rlimit) {
    let resource = match limit.resource {
        LimitResource::OpenFiles => Resource::Nofile,
        LimitResource::Processes => Resource::Nproc,
        LimitResource::CoreSize => Resource::Core,
    };
    let values = Rlimit {
        current: limit.soft,
        maximum: limit.hard,
    };
    (resource, values)
}

/// The child's copies of the listeners (numbered above where they go, see
/// [`first_free_after_listeners`]), and their `LISTEN_FDS` and `LISTEN_FDNAMES` in `envp`
/// (`LISTEN_PID` is the child's to write, once it knows its pid).
fn listeners(listen_fds: &[ListenFd], envp: &mut Vec<CString>) -> Result<Vec<OwnedFd>, SpawnError> {
    let count = listen_fds.len();
    let names: Vec<&str> = listen_fds.iter().map(|l| l.name.as_str()).collect();
    envp.push(c_string(format!("LISTEN_FDS={count}").into_bytes())?);
    envp.push(c_string(
        format!("LISTEN_FDNAMES={}", names.join(":")).into_bytes(),
    )?);
    let above = first_free_after_listeners(count);
    listen_fds
        .iter()
        .map(|l| rustix::io::fcntl_dupfd_cloexec(&l.fd, above))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SpawnError::new(SpawnStage::Listeners, e))
}

/// `LISTEN_PID`, `LISTEN_FDS` or `LISTEN_FDNAMES`.
fn is_listen_variable(key: &std::ffi::OsStr) -> bool {
    matches!(
        key.as_encoded_bytes(),
        b"LISTEN_PID" | b"LISTEN_FDS" | b"LISTEN_FDNAMES"
    )
}

/// The first descriptor after `count` listeners at 3, 4, ...: the child's copies of the
/// listeners and its report pipe are numbered from here, out of the way of the `dup2`s.
fn first_free_after_listeners(count: usize) -> i32 {
    LISTEN_FDS_START + i32::try_from(count).unwrap_or(i32::MAX - LISTEN_FDS_START)
}

/// A started child: its PID and the pidfd from the fork.
pub(crate) struct Forked {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// Pointer arrays for `execve`, built before the fork from the owned strings.
struct ExecArgs<'a> {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    prepared: &'a Prepared,
    parent: Pid,
    /// `cgroup.procs` of the target cgroup, when the child must move itself there.
    cgroup_procs: Option<OwnedFd>,
    groups: Vec<rustix::process::Gid>,
    /// The kernel resets the child's caught signals (`CLONE_CLEAR_SIGHAND`).
    clear_sighand: bool,
}

/// Fork and exec. Blocks until the child has exec'd or failed; meant for the spawner
/// thread.
pub(crate) fn fork_exec(prepared: Prepared) -> Result<Forked, SpawnError> {
    let (forked, report) = loop {
        if let Some(result) = attempt(&prepared)? {
            break result;
        }
        // `clone3` or `CLONE_INTO_CGROUP` was refused: the flags say so now; try again.
    };
    // The child's ends of its pipes close here, in the parent, so EOF means the child and
    // everything it started closed them.
    drop(prepared);
    match read_report(&report) {
        None => Ok(forked),
        Some((stage, error)) => {
            // The child exits at once after reporting: reap it, so it leaves no zombie.
            let _ =
                rustix::process::waitid(WaitId::PidFd(forked.pidfd.as_fd()), WaitIdOptions::EXITED);
            Err(SpawnError::new(stage, error))
        }
    }
}

/// One try: `Ok(None)` when the kernel refused a feature and the spawn should be retried
/// without it; else the child and the read end of its report pipe.
fn attempt(prepared: &Prepared) -> Result<Option<(Forked, OwnedFd)>, SpawnError> {
    let null_terminated = |strings: &[CString]| {
        let mut pointers: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        pointers
    };
    let use_clone3 = !NO_CLONE3.load(Ordering::Relaxed);
    let into_cgroup =
        prepared.cgroup.is_some() && use_clone3 && !NO_CLONE_INTO_CGROUP.load(Ordering::Relaxed);
    let clear_sighand = use_clone3 && !NO_CLEAR_SIGHAND.load(Ordering::Relaxed);
    let mut envp = null_terminated(&prepared.envp);
    if let Some(slot) = &prepared.listen_pid {
        envp.insert(envp.len() - 1, slot.as_ptr());
    }
    let mut args = ExecArgs {
        argv: null_terminated(&prepared.argv),
        envp,
        prepared,
        parent: rustix::process::getpid(),
        cgroup_procs: None,
        groups: prepared
            .credentials
            .groups
            .iter()
            .flatten()
            .map(|&g| rustix::process::Gid::from_raw(g))
            .collect(),
        clear_sighand,
    };
    if let (Some(cgroup), false) = (&prepared.cgroup, into_cgroup) {
        let procs = rustix::fs::openat(
            cgroup,
            c"cgroup.procs",
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        );
        args.cgroup_procs = Some(procs.map_err(|e| SpawnError::new(SpawnStage::Cgroup, e))?);
    }
    let (report_read, mut report_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SpawnError::new(SpawnStage::Prepare, e))?;
    let above = first_free_after_listeners(prepared.listen_fds.len());
    if !prepared.listen_fds.is_empty() && report_write.as_raw_fd() < above {
        // The child writes its report until exec: keep it clear of the listeners' targets.
        report_write = rustix::io::fcntl_dupfd_cloexec(&report_write, above)
            .map_err(|e| SpawnError::new(SpawnStage::Prepare, e))?;
    }
    let forked = if use_clone3 {
        match clone3(&args, &report_write, into_cgroup) {
            Ok(forked) => forked,
            Err(Errno::NOSYS) | Err(Errno::PERM) => {
                tracing::debug!("clone3 unavailable; forking and opening the pidfd afterwards");
                NO_CLONE3.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            Err(Errno::INVAL) if clear_sighand => {
                tracing::debug!("CLONE_CLEAR_SIGHAND unavailable; the child resets its signals");
                NO_CLEAR_SIGHAND.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            Err(Errno::INVAL) if into_cgroup => {
                tracing::debug!(
                    "CLONE_INTO_CGROUP unavailable; the child enters its cgroup itself"
                );
                NO_CLONE_INTO_CGROUP.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            Err(errno) => return Err(SpawnError::new(SpawnStage::Fork, errno)),
        }
    } else {
        fork_then_open(&args, &report_write)?
    };
    Ok(Some((forked, report_read)))
}

/// Read the child's report: `None` when the pipe closed empty (exec succeeded).
fn read_report(pipe: &OwnedFd) -> Option<(SpawnStage, io::Error)> {
    let mut buf = [0u8; 8];
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::io::read(pipe, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(error) => return Some((SpawnStage::Fork, error.into())),
        }
    }
    if filled == 0 {
        return None;
    }
    if filled < buf.len() {
        return Some((
            SpawnStage::Fork,
            io::Error::other("the child's error report was cut short"),
        ));
    }
    let stage = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Some((
        SpawnStage::from_code(stage),
        io::Error::from_raw_os_error(errno),
    ))
}

fn clone3(args: &ExecArgs<'_>, report: &OwnedFd, into_cgroup: bool) -> Result<Forked, Errno> {
    let mut pidfd: libc::c_int = -1;
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut clone_args = CloneArgs {
        flags: CLONE_PIDFD,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if args.clear_sighand {
        clone_args.flags |= CLONE_CLEAR_SIGHAND;
    }
    if into_cgroup {
        if let Some(cgroup) = &args.prepared.cgroup {
            clone_args.flags |= CLONE_INTO_CGROUP;
            clone_args.cgroup = cgroup.as_raw_fd() as u64;
        }
    }
    #[cfg(target_arch = "x86_64")]
    let ret = shared::clone3_vfork(&mut clone_args, args, report.as_fd())?;
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: `clone_args` is a valid `struct clone_args` of the size passed, `pidfd`
    // outlives the call (the kernel writes the new descriptor there), no stack is given,
    // so the child continues on a copy of this thread's stack exactly like `fork`. In the
    // child, `child_main` makes only async-signal-safe system calls on memory prepared
    // before the call, and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &clone_args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    {
        if ret < 0 {
            return Err(Errno::from_raw_os_error(
                io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        if ret == 0 {
            child_main(args, report.as_fd());
        }
    }
    // SAFETY: the kernel returned `pidfd` as a new descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Forked {
        pid: ret as u32,
        pidfd,
    })
}

/// The child that shares our memory until exec (x86_64): its stack and the entry point.
#[cfg(target_arch = "x86_64")]
mod shared {
    use std::cell::Cell;
    use std::io;
    use std::os::fd::BorrowedFd;

    use rustix::io::Errno;

    use super::{child_main, CloneArgs, ExecArgs, CLONE_VFORK, CLONE_VM};

    /// The child's stack: plenty for `child_main`, which only makes system calls.
    const STACK: usize = 64 * 1024;
    /// An inaccessible page below it, so an overflow faults instead of writing into
    /// whatever mapping lies below.
    const GUARD: usize = 4096;

    thread_local! {
        /// The child stack of this thread (the spawner thread: one spawn at a time, the
        /// thread suspended while the child uses it), mapped on first use and kept.
        static CHILD_STACK: Cell<usize> = const { Cell::new(0) };
    }

    /// The lowest usable address of this thread's child stack.
    fn child_stack() -> io::Result<usize> {
        CHILD_STACK.with(|stack| {
            if stack.get() == 0 {
                // SAFETY: a fresh anonymous private mapping nobody else refers to; its first
                // page is left inaccessible as the guard, the rest made read-write.
                let base = unsafe {
                    let base = libc::mmap(
                        std::ptr::null_mut(),
                        STACK + GUARD,
                        libc::PROT_NONE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                        -1,
                        0,
                    );
                    if base == libc::MAP_FAILED {
                        return Err(io::Error::last_os_error());
                    }
                    let usable = base.cast::<u8>().add(GUARD).cast();
                    if libc::mprotect(usable, STACK, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                        let error = io::Error::last_os_error();
                        libc::munmap(base, STACK + GUARD);
                        return Err(error);
                    }
                    base as usize
                };
                stack.set(base + GUARD);
            }
            Ok(stack.get())
        })
    }

    /// What the child's entry point gets: a pointer to this, on the parent's stack (the
    /// parent thread is suspended until the child execs or exits, so it stays valid).
    struct Start<'a, 'b> {
        args: &'a ExecArgs<'b>,
        report: BorrowedFd<'a>,
    }

    extern "C" fn entry(start: *const libc::c_void) -> ! {
        // SAFETY: `start` is the `Start` that `clone3_vfork` passed, alive on the
        // suspended parent thread's stack.
        let start = unsafe { &*start.cast::<Start<'_, '_>>() };
        child_main(start.args, start.report)
    }

    /// `clone3` with `CLONE_VM | CLONE_VFORK` added to `clone_args`, the child running
    /// `child_main` on its own stack. Returns the child's PID once it has exec'd or exited.
    pub(super) fn clone3_vfork(
        clone_args: &mut CloneArgs,
        args: &ExecArgs<'_>,
        report: BorrowedFd<'_>,
    ) -> Result<libc::c_long, Errno> {
        let stack = child_stack().map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::NOMEM))?;
        clone_args.flags |= CLONE_VM | CLONE_VFORK;
        clone_args.stack = stack as u64;
        clone_args.stack_size = STACK as u64;
        let start = Start { args, report };
        let ret: libc::c_long;
        // SAFETY: `clone_args` is a valid `struct clone_args` of the size passed, and what
        // it points to (the pidfd slot, the stack) outlives the call. The parent only gets
        // the return value (rax; the kernel clobbers rcx and r11). The child starts on its
        // own stack, whose top (`stack + STACK`, 16-byte aligned since the mapping is
        // page-aligned) is the ABI's alignment for a `call`; it never returns from the
        // asm: it calls `entry`, which never returns, with the `Start` above, which the
        // suspended parent keeps alive. `child_main` writes only to its own stack and to
        // this spawn's `LISTEN_PID` buffer, which nothing else touches meanwhile, and
        // makes async-signal-safe system calls (see the module documentation).
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                // The child, on its own stack.
                "xor ebp, ebp",
                "mov rdi, r12",
                "call r13",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone3 => ret,
                in("rdi") clone_args as *mut CloneArgs,
                in("rsi") std::mem::size_of::<CloneArgs>(),
                in("r12") &start as *const Start<'_, '_>,
                in("r13") entry as extern "C" fn(*const libc::c_void) -> !,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        if ret < 0 {
            return Err(Errno::from_raw_os_error(-(ret as i32)));
        }
        Ok(ret)
    }
}

fn fork_then_open(args: &ExecArgs<'_>, report: &OwnedFd) -> Result<Forked, SpawnError> {
    // SAFETY: as for `clone3`: the child only runs `child_main`, which is async-signal-safe
    // and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::new(
            SpawnStage::Fork,
            io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        child_main(args, report.as_fd());
    }
    // Our un-reaped child: its PID cannot be reused before we wait for it.
    let raw = Pid::from_raw(pid).expect("fork returned a positive pid");
    let pidfd = rustix::process::pidfd_open(raw, PidfdFlags::empty())
        .map_err(|e| SpawnError::new(SpawnStage::Fork, e))?;
    Ok(Forked {
        pid: pid as u32,
        pidfd,
    })
}

/// The child's first step. Signals: the spawner thread blocks them all, and so does the
/// child until here. A handler of the supervisor must not run in the child (sharing its
/// memory, it would act on the supervisor's data): every caught signal goes back to its
/// default first, done by the kernel with `CLONE_CLEAR_SIGHAND` (`clear_sighand`), else
/// here, as `posix_spawn` does. The program starts with none blocked and SIGPIPE at its
/// default (Rust ignores it in the supervisor). Async-signal-safe.
fn reset_signals(clear_sighand: bool) {
    // SAFETY: `sigaction`, `sigprocmask` and `signal` are async-signal-safe; the actions
    // and the set are locals. `sigaction` of a signal libc reserves fails harmlessly.
    unsafe {
        let reset = if clear_sighand { 0 } else { libc::SIGRTMAX() };
        for signal in 1..=reset {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction != libc::SIG_DFL
                && current.sa_sigaction != libc::SIG_IGN
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The child between fork and exec. Only async-signal-safe system calls; no allocation,
/// no locks, no panics. One straight checklist in the order the kernel needs it (cgroup,
/// process group, standard streams, limits, umask, groups before group before user, the
/// directory, the parent-death signal after the user switch, exec), each step reporting
/// its own stage on failure.
fn child_main(args: &ExecArgs<'_>, report: BorrowedFd<'_>) -> ! {
    let p = args.prepared;
    let fail = |stage: SpawnStage, errno: Errno| -> ! {
        let mut message = [0u8; 8];
        message[..4].copy_from_slice(&stage.code().to_ne_bytes());
        message[4..].copy_from_slice(&errno.raw_os_error().to_ne_bytes());
        let _ = rustix::io::write(report, &message);
        // SAFETY: `_exit` ends the process without running any user-space cleanup, which
        // is what a forked child that failed must do.
        unsafe { libc::_exit(127) }
    };

    reset_signals(args.clear_sighand);

    if let Some(procs) = &args.cgroup_procs {
        // Writing "0" moves the writing process.
        if let Err(errno) = rustix::io::write(procs, b"0") {
            fail(SpawnStage::Cgroup, errno);
        }
    }
    if p.process_group {
        if let Err(errno) = rustix::process::setpgid(None, None) {
            fail(SpawnStage::ProcessGroup, errno);
        }
    }
    for (target, fd) in p.stdio.iter().enumerate() {
        let Some(fd) = fd else { continue };
        if let Err(errno) = dup_onto(fd, target as RawFd) {
            fail(SpawnStage::Stdio, errno);
        }
    }
    if let Some(slot) = &p.listen_pid {
        slot.fill(rustix::process::getpid().as_raw_nonzero().get() as u32);
    }
    for (target, fd) in (LISTEN_FDS_START..).zip(&p.listen_fds) {
        // SAFETY: `dup2` is async-signal-safe and touches only this process's descriptor
        // table; the source is open (owned by `Prepared`) and numbered above every target.
        // The copy at `target` is not close-on-exec: it is what the program inherits.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            fail(SpawnStage::Listeners, last_errno());
        }
    }
    mark_the_rest_cloexec(first_free_after_listeners(p.listen_fds.len()));
    for (resource, limit) in &p.limits {
        if let Err(errno) = rustix::process::setrlimit(*resource, *limit) {
            fail(SpawnStage::Limits, errno);
        }
    }
    if let Some(mask) = p.umask {
        rustix::process::umask(rustix::fs::Mode::from_bits_truncate(mask));
    }
    // Groups, then group, then user: dropping the user first would lose the right to
    // change the others.
    if p.credentials.groups.is_some() {
        if let Err(errno) = rustix::thread::set_thread_groups(&args.groups) {
            fail(SpawnStage::Groups, errno);
        }
    }
    if let Some(gid) = p.credentials.gid {
        let gid = rustix::process::Gid::from_raw(gid);
        if let Err(errno) = rustix::thread::set_thread_res_gid(gid, gid, gid) {
            fail(SpawnStage::Gid, errno);
        }
    }
    if let Some(uid) = p.credentials.uid {
        let uid = rustix::process::Uid::from_raw(uid);
        if let Err(errno) = rustix::thread::set_thread_res_uid(uid, uid, uid) {
            fail(SpawnStage::Uid, errno);
        }
    }
    if let Some(dir) = &p.cwd {
        if let Err(errno) = rustix::process::chdir(dir.as_c_str()) {
            fail(SpawnStage::Chdir, errno);
        }
    }
    if p.die_with_parent {
        // After the user switch, which resets the parent-death signal. The "parent" is the
        // spawner thread, which lives as long as the supervisor process.
        if let Err(errno) =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        {
            fail(SpawnStage::DeathSignal, errno);
        }
        // The supervisor may have died before the prctl: nobody would signal us then.
        if rustix::process::getppid() != Some(args.parent) {
            fail(SpawnStage::DeathSignal, Errno::SRCH);
        }
    }
    // SAFETY: `program`, `argv` and `envp` point to NUL-terminated strings and
    // NULL-terminated arrays prepared before the fork and alive in this copy of memory.
    unsafe {
        libc::execve(p.program.as_ptr(), args.argv.as_ptr(), args.envp.as_ptr());
    }
    fail(SpawnStage::Exec, last_errno())
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// Mark every descriptor from `first` on close-on-exec, so nothing but the standard streams
/// and the listeners reaches the program (Linux 5.11+; older kernels refuse the flag and
/// the descriptors keep their own flags: the crate opens all of its own close-on-exec).
/// Async-signal-safe.
fn mark_the_rest_cloexec(first: i32) {
    // SAFETY: `close_range` only changes flags in this process's descriptor table; with
    // `CLOSE_RANGE_CLOEXEC` it closes nothing, so the report pipe stays open until exec.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Put `fd` at `target` (0, 1 or 2) without close-on-exec.
fn dup_onto(fd: &OwnedFd, target: RawFd) -> Result<(), Errno> {
    if fd.as_raw_fd() == target {
        // Already there (the supervisor had closed that stream): only clear CLOEXEC.
        return rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty());
    }
    match target {
        0 => rustix::stdio::dup2_stdin(fd),
        1 => rustix::stdio::dup2_stdout(fd),
        _ => rustix::stdio::dup2_stderr(fd),
    }
}

/// Reap `pidfd`'s process if it has exited (no blocking). `true` when it is gone.
pub(crate) fn try_reap(pidfd: BorrowedFd<'_>) -> bool {
    match rustix::process::waitid(
        WaitId::PidFd(pidfd),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    ) {
        Ok(Some(_)) => true,
        Ok(None) => false,
        // ECHILD: already reaped (or not our child): nothing left to do.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_slot_reads_as_the_variable_for_any_pid() {
        for pid in [1, 7, 10, 4_194_304, u32::MAX] {
            let slot = PidSlot::new();
            slot.fill(pid);
            assert_eq!(slot.read(), format!("LISTEN_PID={pid}"));
        }
        // Written twice (never happens, but must stay well-formed): the shorter one wins.
        let slot = PidSlot::new();
        slot.fill(123_456);
        slot.fill(42);
        assert_eq!(slot.read(), "LISTEN_PID=42");
    }
}
