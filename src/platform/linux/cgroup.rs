//! cgroup v2: one cgroup per service instance, so the whole process tree is tracked,
//! signalled and killed as one, as systemd does (`KillMode=control-group`).
//!
//! Layout: `<our cgroup>/running-process-<pid>-<start time>/<service>-<n>`. Our cgroup is
//! read from `/proc/self/cgroup` and the cgroup2 mount from `/proc/self/mountinfo` (it is
//! not always `/sys/fs/cgroup`: hybrid systems mount it at `/sys/fs/cgroup/unified`).
//! Creating the supervisor's directory needs write access to our own cgroup: root, or a
//! delegated subtree (systemd `Delegate=yes`). Without it (no cgroup2 mounted, or our
//! cgroup refuses us with `EACCES`, `EPERM` or `EROFS`: the machine's answer) the process
//! tracks every service by process group: chosen once, logged once, announced as an event
//! once and shown per service in the status. Any other failure to create a directory (no
//! descriptor left, a limit of the parent cgroup) fails the start that needed it: an
//! instance never silently gets less tracking than its siblings.
//!
//! Processes never get here by a write after the fact: `clone3(CLONE_INTO_CGROUP)`
//! starts them inside (or, on older kernels, the child writes itself into `cgroup.procs`
//! before exec), so a daemon that forks at once cannot leave a grandchild outside.
//!
//! Every instance gets a directory of its own, never used before. Creating one costs the
//! kernel tens of microseconds and the restart a wait, so it is done ahead: when an
//! instance's directory is removed (after its tree is gone, on the blocking pool, while
//! the replacement is being prepared), a fresh *spare* is created for the service's next
//! instance. A service keeps at most one spare, the process at most [`MAX_SPARES`]; the
//! keeper removes them with the rest when the supervisor exits. (A used directory is never
//! reused: besides the path naming one instance, on Linux 6.18 a process started with
//! `CLONE_INTO_CGROUP` in a cgroup that was ever `cgroup.kill`ed, even while empty, is
//! SIGKILLed at once, as a small C program showed.)
//!
//! A *keeper* process (forked once, before any service starts) holds the read end of a
//! pipe whose write end only the supervisor holds. When the supervisor exits, even by
//! SIGKILL, the keeper reads EOF and writes `cgroup.kill` of the supervisor's directory
//! (the main processes die by their parent-death signal, the keeper takes the rest of
//! every tree with them), waits for `populated 0`, and removes the directories: nothing is
//! left behind. Should the keeper itself be killed, the next supervisor sweeps what it
//! left.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal};

use super::inotify::{Wake, Watch};
use crate::platform::CgroupLimit;

/// The prefix of every supervisor's directory.
const PREFIX: &str = "running-process-";

/// At most this many spare directories are kept (one per service).
const MAX_SPARES: usize = 64;

/// Fresh directories made ahead, each for the next instance of its service.
static SPARES: Mutex<Vec<ServiceCgroup>> = Mutex::new(Vec::new());

/// Why this process tracks service trees by process group: set once, when the machine
/// gives it no cgroup v2 to write to (none mounted, no write access to its own cgroup) or
/// the kernel refused a start into one. The documented fallback, chosen once.
static FALLBACK: OnceLock<String> = OnceLock::new();

/// Set once the fallback has been announced as an event (it is logged when chosen).
static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// This supervisor's cgroup directory, with the keeper watching over it.
#[derive(Debug)]
pub(crate) struct SupervisorCgroup {
    path: PathBuf,
    /// The path relative to the cgroup2 mount, as `/proc/PID/cgroup` prints it.
    relative: String,
    next: AtomicU64,
    /// Held for the life of the process: the keeper sees EOF when it closes.
    _keeper: Option<OwnedFd>,
}

/// Why the supervisor's cgroup could not be created.
#[derive(Debug)]
pub(crate) enum CreateError {
    /// The machine gives this process no cgroup v2 to write to: the documented fallback
    /// (process groups) applies, for good.
    Unavailable(String),
    /// Creating it failed for another reason (no descriptor left, no memory, a limit of
    /// the parent cgroup): the start that needed it fails; a later one tries again.
    Failed {
        /// What was being read or created.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// The supervisor's cgroup, created on first use. `Ok(None)` where the machine gives no
/// cgroup v2 to write to, or cgroups were given up after the kernel refused a start into
/// one ([`fallback`] says why; chosen once, logged once). `Err` when creating it failed
/// otherwise: not cached, the next start tries again. Blocking (file system): call it
/// from the blocking pool or the spawner thread.
pub(crate) fn supervisor_cgroup() -> Result<Option<&'static SupervisorCgroup>, CreateError> {
    static CGROUP: OnceLock<SupervisorCgroup> = OnceLock::new();
    static CREATING: Mutex<()> = Mutex::new(());
    if FALLBACK.get().is_some() {
        return Ok(None);
    }
    if let Some(cgroup) = CGROUP.get() {
        return Ok(Some(cgroup));
    }
    let _once = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(cgroup) = CGROUP.get() {
        return Ok(Some(cgroup));
    }
    if FALLBACK.get().is_some() {
        return Ok(None);
    }
    match SupervisorCgroup::create() {
        Ok(cgroup) => {
            tracing::debug!(path = %cgroup.path.display(), "service trees are tracked by cgroup v2");
            Ok(Some(CGROUP.get_or_init(|| cgroup)))
        }
        Err(CreateError::Unavailable(reason)) => {
            fall_back(reason);
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Choose the process-group fallback for the rest of this process's life (the first
/// reason is kept), and log it once.
fn fall_back(reason: String) {
    let mut chosen = false;
    let reason = FALLBACK.get_or_init(|| {
        chosen = true;
        reason
    });
    if chosen {
        tracing::debug!(%reason, "service trees are tracked by process group, not cgroup, for every service of this supervisor (announced by the next start)");
    }
}

/// Why service trees are tracked by process group in this process, once that is chosen.
pub(crate) fn fallback() -> Option<&'static str> {
    FALLBACK.get().map(String::as_str)
}

/// The fallback's reason the first time this is called after it was chosen (so it is
/// announced as an event once), else `None`.
pub(crate) fn announce_fallback() -> Option<&'static str> {
    let reason = fallback()?;
    (!ANNOUNCED.swap(true, Ordering::Relaxed)).then_some(reason)
}

/// Stop using cgroups in this process (the kernel refused a spawn into one).
pub(crate) fn disable(reason: &io::Error) {
    fall_back(format!(
        "the kernel refused to start a process in a cgroup ({reason})"
    ));
}

/// Where cgroup v2 is mounted (the first cgroup2 entry of `mountinfo`).
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace()
            .nth(4)
            .map(|p| PathBuf::from(unescape(p)))
    })
}

/// `mountinfo` escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(code) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Our cgroup v2 path (relative to the mount) from `/proc/self/cgroup`'s `0::` line.
fn own_cgroup(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim_end().to_owned())
}

impl SupervisorCgroup {
    fn create() -> Result<SupervisorCgroup, CreateError> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|source| CreateError::Failed {
                path: path.into(),
                source,
            })
        };
        let mount = cgroup2_mount(&read("/proc/self/mountinfo")?)
            .ok_or_else(|| CreateError::Unavailable("cgroup v2 is not mounted".into()))?;
        let own = own_cgroup(&read("/proc/self/cgroup")?).ok_or_else(|| {
            CreateError::Unavailable("this process belongs to no cgroup v2".into())
        })?;
        let parent = mount.join(own.trim_start_matches('/'));
        sweep(&parent);
        let me = std::process::id();
        let start = super::start_time(me).map_err(|source| CreateError::Failed {
            path: format!("/proc/{me}/stat").into(),
            source,
        })?;
        let name = format!("{PREFIX}{me}-{start}");
        let path = parent.join(&name);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            // Not delegated to us (not root, no `Delegate=yes`), or mounted read-only (a
            // container): the machine's answer, not a passing failure.
            Err(e) if is_not_ours(&e) => {
                return Err(CreateError::Unavailable(format!(
                    "no write access to its own cgroup {} ({e})",
                    parent.display()
                )))
            }
            Err(source) => return Err(CreateError::Failed { path, source }),
        }
        let relative = format!("{}/{name}", own.trim_end_matches('/'));
        enable_controllers(&path);
        // The keeper is what makes a SIGKILLed supervisor take its trees with it: without
        // it (no pipe, no fork: out of descriptors or processes) no cgroup is used yet, and
        // the start that needed one fails; the next one tries again. (Before Linux 5.14
        // there is no `cgroup.kill` and no keeper: the next supervisor sweeps instead.)
        let keeper = if path.join("cgroup.kill").exists() {
            match start_keeper(&path) {
                Ok(fd) => Some(fd),
                Err(source) => {
                    let _ = std::fs::remove_dir(&path);
                    return Err(CreateError::Failed { path, source });
                }
            }
        } else {
            None
        };
        Ok(SupervisorCgroup {
            path,
            relative,
            next: AtomicU64::new(1),
            _keeper: keeper,
        })
    }

    /// The supervisor's directory (where each instance's cgroup is created).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A new, empty cgroup for one instance of `service`: the spare made ahead for it if
    /// there is one, else a directory created now.
    pub(crate) fn create_service(&self, service: &str) -> io::Result<ServiceCgroup> {
        let clean = clean_name(service);
        let spare = {
            let mut spares = SPARES.lock().unwrap_or_else(|p| p.into_inner());
            let found = spares.iter().position(|spare| spare.service == clean);
            found.map(|i| spares.swap_remove(i))
        };
        match spare {
            Some(spare) => Ok(spare),
            None => self.create_dir(clean),
        }
    }

    /// A fresh directory for an instance of the service named `clean`.
    fn create_dir(&self, clean: String) -> io::Result<ServiceCgroup> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{clean}-{n}");
        let path = self.path.join(&name);
        std::fs::create_dir(&path)?;
        let dir = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let events = rustix::fs::openat(
            &dir,
            c"cgroup.events",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(ServiceCgroup {
            relative: format!("{}/{name}", self.relative),
            path,
            dir,
            events,
            service: clean,
        })
    }
}

/// Whether creating a directory failed because the cgroup is not ours to write to.
fn is_not_ours(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS)
    )
}

/// The controllers quotas use, enabled for the services' cgroups where the supervisor's
/// own directory is offered them (written to its `cgroup.subtree_control`; it holds no
/// process, so the kernel allows it). A failure only means quotas will be refused.
fn enable_controllers(path: &Path) {
    let offered = std::fs::read_to_string(path.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|c| offered.split_whitespace().any(|o| o == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        tracing::debug!(
            offered = offered.trim(),
            "no memory, cpu or pids controller in cgroup v2: quotas will be refused"
        );
        return;
    }
    if let Err(error) = std::fs::write(path.join("cgroup.subtree_control"), wanted.join(" ")) {
        tracing::debug!(%error, ?wanted, "cannot enable cgroup controllers: quotas will be refused");
    }
}

/// Why a limit was not written to a service's cgroup.
#[derive(Debug)]
pub(crate) enum LimitRefused {
    /// The cgroup does not offer the controller.
    NoController {
        limit: CgroupLimit,
        path: PathBuf,
        offered: String,
    },
    /// The write failed.
    Write {
        limit: CgroupLimit,
        path: PathBuf,
        source: io::Error,
    },
}

/// The part of an instance's directory name taken from the service name.
fn clean_name(service: &str) -> String {
    service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect()
}

/// The cgroup of one service instance. Dropping it removes the directory if it is empty,
/// and makes the service's spare if it has none (see the module documentation).
#[derive(Debug)]
pub(crate) struct ServiceCgroup {
    path: PathBuf,
    relative: String,
    dir: OwnedFd,
    /// The service part of the name, which a spare is found by.
    service: String,
    /// `cgroup.events`, open for the life of the directory (read with `pread`).
    events: OwnedFd,
}

impl ServiceCgroup {
    /// The directory in the cgroup file system.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory descriptor `CLONE_INTO_CGROUP` takes.
    pub(crate) fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The PIDs in this cgroup and its descendants (a daemon may create sub-cgroups in a
    /// delegated tree).
    pub(crate) fn pids(&self) -> io::Result<Vec<u32>> {
        let mut pids = Vec::new();
        collect_pids(&self.path, &mut pids)?;
        Ok(pids)
    }

    /// Whether any process is left (`populated 1` in `cgroup.events`): one `pread` of the
    /// descriptor held since the directory was created, no path lookup, no allocation.
    pub(crate) fn is_populated(&self) -> io::Result<bool> {
        let mut text = [0u8; 256];
        let n = rustix::io::pread(&self.events, &mut text, 0)?;
        Ok(text[..n]
            .split(|&b| b == b'\n')
            .any(|line| line.trim_ascii() == b"populated 1"))
    }

    /// SIGKILL every process of the tree at once (`cgroup.kill`, Linux 5.14+; before that,
    /// each process through a pidfd, repeated until none is left unsignalled). An empty
    /// tree (the usual case: its main process was all of it) is left alone.
    pub(crate) fn kill(&self) -> io::Result<()> {
        if self.is_populated().ok() == Some(false) {
            return Ok(());
        }
        let kill = rustix::fs::openat(
            &self.dir,
            c"cgroup.kill",
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        match kill.and_then(|fd| rustix::io::write(&fd, b"1")) {
            Ok(_) => Ok(()),
            Err(Errno::NOENT) => self.signal(Signal::KILL),
            Err(e) => Err(e.into()),
        }
    }

    /// Send `signal` to every process of the tree, each through a pidfd (a PID read from
    /// `cgroup.procs` that exits meanwhile is simply skipped).
    pub(crate) fn signal(&self, signal: Signal) -> io::Result<()> {
        for pid in self.pids()? {
            let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            else {
                continue;
            };
            let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            else {
                continue;
            };
            // Opened by PID: confirm it is still a member, so a recycled PID is spared.
            if !self.contains(pid.as_raw_nonzero().get() as u32) {
                continue;
            }
            let _ = rustix::process::pidfd_send_signal(&pidfd, signal);
        }
        Ok(())
    }

    /// Whether process `pid` is in this cgroup (or below it).
    pub(crate) fn contains(&self, pid: u32) -> bool {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return false;
        };
        own_cgroup(&text).is_some_and(|path| {
            path == self.relative
                || path
                    .strip_prefix(&self.relative)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// The text of the file `name` of this cgroup; `None` if it cannot be read (a
    /// controller that is not enabled here has no files).
    fn read(&self, name: &std::ffi::CStr) -> Option<String> {
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut text = Vec::with_capacity(512);
        let mut buf = [0u8; 512];
        loop {
            match rustix::io::read(&fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(Errno::INTR) => continue,
                Err(_) => return None,
            }
        }
        String::from_utf8(text).ok()
    }

    /// What the tree uses, as far as this cgroup's files tell: `usage_usec` of `cpu.stat`
    /// (always there in cgroup v2), `memory.current` and `memory.peak` (the memory
    /// controller, Linux 5.19+ for the peak), `pids.current` (the pids controller). A
    /// controller that is not enabled for the cgroup gives `None`. Blocking.
    pub(crate) fn usage(&self) -> CgroupUsage {
        let number = |name: &std::ffi::CStr| {
            self.read(name)
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        CgroupUsage {
            cpu_usec: self
                .read(c"cpu.stat")
                .and_then(|text| keyed(&text, "usage_usec")),
            memory: number(c"memory.current"),
            memory_peak: number(c"memory.peak"),
            tasks: number(c"pids.current"),
        }
    }

    /// Write `limits` (before any process is in the cgroup), each after checking that the
    /// cgroup offers its controller. Blocking.
    pub(crate) fn set_limits(&self, limits: &[CgroupLimit]) -> Result<(), LimitRefused> {
        let offered = self.read(c"cgroup.controllers").unwrap_or_default();
        for limit in limits {
            if !offered.split_whitespace().any(|c| c == limit.controller) {
                return Err(LimitRefused::NoController {
                    limit: limit.clone(),
                    path: self.path.clone(),
                    offered: match offered.trim() {
                        "" => "none".to_owned(),
                        some => some.to_owned(),
                    },
                });
            }
            let path = self.path.join(limit.file);
            if let Err(source) = std::fs::write(&path, &limit.value) {
                return Err(LimitRefused::Write {
                    limit: limit.clone(),
                    path,
                    source,
                });
            }
        }
        Ok(())
    }

    /// How many times the OOM killer killed a process of this cgroup (`oom_kill` of
    /// `memory.events`); `None` without the memory controller. Blocking.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        keyed(&self.read(c"memory.events")?, "oom_kill")
    }

    /// Resolves once no process is left in the tree: an inotify event on `cgroup.events`,
    /// not a poll. Cancel-safe.
    pub(crate) async fn wait_empty(&self) -> io::Result<()> {
        // Usually empty already (the main process was the tree): no inotify instance then,
        // since closing one waits for an SRCU grace period (milliseconds).
        if !self.is_populated()? {
            return Ok(());
        }
        let watch = Watch::modified(&self.path.join("cgroup.events"))?;
        loop {
            if !self.is_populated()? {
                return Ok(());
            }
            if let Wake::WatchLost = watch.next().await? {
                return Ok(()); // the cgroup itself is gone
            }
        }
    }
}

impl Drop for ServiceCgroup {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir(&self.path) {
            tracing::debug!(path = %self.path.display(), %error, "cgroup not removed (processes left?)");
        }
        // The spare for the service's next instance, made now rather than when it starts.
        let wanted = {
            let spares = SPARES.lock().unwrap_or_else(|p| p.into_inner());
            spares.len() < MAX_SPARES && !spares.iter().any(|s| s.service == self.service)
        };
        if !wanted {
            return;
        }
        let Ok(Some(root)) = supervisor_cgroup() else {
            return;
        };
        match root.create_dir(self.service.clone()) {
            Ok(spare) => {
                let mut spares = SPARES.lock().unwrap_or_else(|p| p.into_inner());
                if spares.len() < MAX_SPARES && !spares.iter().any(|s| s.service == spare.service) {
                    spares.push(spare);
                    return;
                }
                // Another drop made one meanwhile: this one goes (its own drop, below,
                // removes it and finds the spare there).
                drop(spares);
                drop(spare);
            }
            Err(error) => {
                tracing::debug!(service = %self.service, %error, "no spare cgroup made");
            }
        }
    }
}

/// What a cgroup's files say it uses (`None`: no such file here).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CgroupUsage {
    pub cpu_usec: Option<u64>,
    pub memory: Option<u64>,
    pub memory_peak: Option<u64>,
    pub tasks: Option<u64>,
}

/// The value of `key` in a flat-keyed cgroup file (`cpu.stat`, `memory.events`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

fn collect_pids(dir: &Path, pids: &mut Vec<u32>) -> io::Result<()> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            // A sub-cgroup removed meanwhile is simply gone.
            let _ = collect_pids(&entry.path(), pids);
        }
    }
    Ok(())
}

/// Kill and remove the directories of supervisors that no longer exist (their keeper may
/// have been killed too, or cgroup.kill was missing). A recycled PID has another start
/// time, so a live supervisor's directory is never touched.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some((pid, start)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            continue;
        };
        if super::start_time(pid).ok() == Some(start) {
            continue; // that supervisor still runs
        }
        let path = entry.path();
        let _ = std::fs::write(path.join("cgroup.kill"), b"1");
        if let Ok(children) = std::fs::read_dir(&path) {
            for child in children.flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
        }
        match std::fs::remove_dir(&path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "removed the cgroup of a dead supervisor")
            }
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "cgroup of a dead supervisor not removed yet")
            }
        }
    }
}

/// Fork the keeper; returns the write end of its pipe, to be held until the process ends.
fn start_keeper(path: &Path) -> io::Result<OwnedFd> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a cgroup path"))
    };
    let open = |p: &Path, flags: OFlags| -> io::Result<OwnedFd> {
        Ok(rustix::fs::open(
            c(p)?.as_c_str(),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    };
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a cgroup at the root"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a cgroup without a name"))?;
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    fork_keeper(KeeperFds {
        read,
        kill: open(&path.join("cgroup.kill"), OFlags::WRONLY)?,
        dir: open(path, OFlags::RDONLY | OFlags::DIRECTORY)?,
        parent: open(parent, OFlags::RDONLY | OFlags::DIRECTORY)?,
        name: c(Path::new(name))?,
    })?;
    Ok(write)
}

/// What the cgroup keeper holds: the pipe it waits on, and the supervisor's cgroup
/// (its `cgroup.kill`, the directory, and the parent directory with the name, to remove it).
pub(crate) struct KeeperFds {
    pub read: OwnedFd,
    pub kill: OwnedFd,
    pub dir: OwnedFd,
    pub parent: OwnedFd,
    pub name: std::ffi::CString,
}

/// Fork the cgroup keeper: a process that blocks reading `fds.read` and, once every write
/// end is closed (the supervisor exited, however), kills every tree in the supervisor's
/// cgroup (`cgroup.kill`), waits until it is empty, removes the service directories and
/// the supervisor's own, and exits: nothing is left behind. It keeps no other descriptor,
/// so it holds none of the supervisor's sockets or pipes open. Its pidfd goes to the
/// spawner thread's reaper, in case it dies first.
pub(crate) fn fork_keeper(fds: KeeperFds) -> io::Result<u32> {
    // SAFETY: the child only runs `keeper_main`, which makes async-signal-safe system
    // calls on descriptors and memory prepared before the fork, and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        keeper_main(&fds);
    }
    drop(fds);
    let raw = Pid::from_raw(pid).expect("fork returned a positive pid");
    if let Ok(pidfd) = rustix::process::pidfd_open(raw, PidfdFlags::empty()) {
        super::spawner::reap_later(super::Pidfd::new(pidfd));
    }
    Ok(pid as u32)
}

/// How long the keeper waits for the killed trees to be gone before it removes what it
/// can anyway (a process stuck in uninterruptible sleep), in 100 ms rounds.
const KEEPER_ROUNDS: u32 = 200;

fn keeper_main(fds: &KeeperFds) -> ! {
    let _ = rustix::thread::set_name(c"rp-keeper");
    let mut keep = [
        fds.read.as_raw_fd(),
        fds.kill.as_raw_fd(),
        fds.dir.as_raw_fd(),
        fds.parent.as_raw_fd(),
    ];
    keep.sort_unstable();
    close_all_but(&keep);
    let mut buf = [0u8; 64];
    loop {
        match rustix::io::read(&fds.read, &mut buf) {
            Ok(0) => break,
            Ok(_) | Err(Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    let _ = rustix::io::write(&fds.kill, b"1");
    // Wait for `populated 0`: the kernel raises POLLPRI on `cgroup.events` when it changes.
    if let Ok(events) = rustix::fs::openat(
        &fds.dir,
        c"cgroup.events",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        for _ in 0..KEEPER_ROUNDS {
            let mut text = [0u8; 256];
            let n = rustix::io::pread(&events, &mut text, 0).unwrap_or(0);
            if text[..n].windows(11).any(|w| w == b"populated 0") {
                break;
            }
            let mut poll = [rustix::event::PollFd::new(
                &events,
                rustix::event::PollFlags::PRI,
            )];
            let tick = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            let _ = rustix::event::poll(&mut poll, Some(&tick));
        }
    }
    // The service directories, then the supervisor's own (a directory of a cgroup can go
    // once it has no process and no child cgroup).
    let mut entries = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let mut dir = rustix::fs::RawDir::new(&fds.dir, &mut entries);
    while let Some(Ok(entry)) = dir.next() {
        let name = entry.file_name();
        if entry.file_type() == rustix::fs::FileType::Directory
            && name.to_bytes() != b"."
            && name.to_bytes() != b".."
        {
            let _ = rustix::fs::unlinkat(&fds.dir, name, rustix::fs::AtFlags::REMOVEDIR);
        }
    }
    let _ = rustix::fs::unlinkat(
        &fds.parent,
        fds.name.as_c_str(),
        rustix::fs::AtFlags::REMOVEDIR,
    );
    // SAFETY: `_exit` ends the forked process without running any user-space cleanup.
    unsafe { libc::_exit(0) }
}

/// Close every descriptor but `keep` (sorted), with `close_range` over the gaps.
fn close_all_but(keep: &[RawFd]) {
    let mut first: libc::c_uint = 0;
    for &fd in keep {
        let fd = fd as libc::c_uint;
        if fd > first {
            // SAFETY: `close_range` only closes descriptors of this (forked) process.
            unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0) };
        }
        first = fd + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_wherever_it_is() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let spaced = "29 23 0:26 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
        assert_eq!(
            cgroup2_mount(spaced),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
        assert_eq!(
            cgroup2_mount("31 23 0:28 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }

    #[test]
    fn flat_keyed_files_are_read_by_key() {
        let text = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
        assert_eq!(keyed(text, "usage_usec"), Some(1234));
        assert_eq!(keyed(text, "system_usec"), Some(234));
        assert_eq!(keyed(text, "nice_usec"), None);
    }

    #[test]
    fn our_cgroup_is_the_v2_line() {
        let text = "9:name=systemd:/\n4:memory:/process_api/a8\n0::/user.slice/app.scope\n";
        assert_eq!(own_cgroup(text).as_deref(), Some("/user.slice/app.scope"));
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }
}
