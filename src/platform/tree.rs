//! A service instance's process tree: its own cgroup where the supervisor can create one
//! (Linux, cgroup v2), else the process group its main process leads. The tree is what a
//! stop signals and kills, what is killed when the main process dies unexpectedly, and the
//! only place whose sockets readiness believes.
//!
//! The per-OS differences stay here: callers above see one [`ProcessTree`] with the same
//! methods everywhere (a process group off Linux; only the main process on Windows).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::blocking::blocking;

/// SIGKILL's number (Unix); a process group is killed with it.
#[cfg(unix)]
const KILL: i32 = rustix::process::Signal::KILL.as_raw();

/// The main process of a tree as the layers above hold it: signals reach it through its
/// handle, and its process group only while it is our own un-reaped child (so the group
/// id cannot be anyone else's).
pub(crate) trait TreeLeader {
    /// Send `signal` to the main process through its handle (Unix; elsewhere: kill).
    fn signal_main(&self, signal: i32) -> io::Result<()>;
    /// Send `signal` to the process group the main process leads; refused once it is
    /// reaped or where there are no process groups (never called there).
    #[cfg_attr(not(unix), allow(dead_code))]
    fn signal_group(&self, signal: i32) -> io::Result<()>;
    /// Kill the main process now through its handle.
    fn kill_main(&self) -> io::Result<()>;
}

/// Where an instance's processes are to go, decided before the spawn: a new cgroup of the
/// service (Linux, where the supervisor may make one), else the process group.
#[derive(Debug, Default)]
pub(crate) struct TreePlan {
    #[cfg(target_os = "linux")]
    cgroup: Option<std::sync::Arc<super::cgroup::ServiceCgroup>>,
}

/// How an instance's tree is tracked, as decided by its [`TreePlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tracking {
    /// Its own cgroup, at this path.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Cgroup(std::path::PathBuf),
    /// Its process group; `machine` says why the machine gives it no cgroup (the
    /// documented fallback), `None` when the caller did not ask for one.
    #[cfg_attr(not(unix), allow(dead_code))]
    ProcessGroup { machine: Option<&'static str> },
    /// Only the main process (Windows).
    #[cfg_attr(unix, allow(dead_code))]
    MainProcess,
}

/// Why an instance could not get the cgroup it was to run in (Linux): nothing is started.
#[derive(Debug)]
pub(crate) struct TreeError {
    /// The directory that could not be created (or the file that could not be read).
    pub path: std::path::PathBuf,
    /// The OS error.
    pub source: io::Error,
}

impl TreePlan {
    /// A plan for one instance of `service`: with `cgroup`, its service's spare cgroup or a
    /// new directory where the machine tracks trees by cgroup v2. Where it does not (no
    /// cgroup v2, no write access: the documented fallback, chosen once per process), the
    /// process group. A cgroup that cannot be created on a machine that has them is an
    /// error, never a quiet process group. Blocking (file system): for the blocking pool.
    pub(crate) fn new(service: &str, cgroup: bool) -> Result<TreePlan, TreeError> {
        #[cfg(target_os = "linux")]
        {
            use super::cgroup::{supervisor_cgroup, CreateError};
            if !cgroup {
                return Ok(TreePlan::default());
            }
            let root = match supervisor_cgroup() {
                Ok(Some(root)) => root,
                Ok(None) => return Ok(TreePlan::default()),
                Err(CreateError::Failed { path, source }) => {
                    return Err(TreeError { path, source })
                }
                Err(CreateError::Unavailable(_)) => return Ok(TreePlan::default()),
            };
            match root.create_service(service) {
                Ok(made) => Ok(TreePlan {
                    cgroup: Some(std::sync::Arc::new(made)),
                }),
                Err(source) => Err(TreeError {
                    path: root.path().to_owned(),
                    source,
                }),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (service, cgroup);
            Ok(TreePlan {})
        }
    }

    /// How the tree of the instance this plan starts is tracked.
    pub(crate) fn tracking(&self) -> Tracking {
        #[cfg(target_os = "linux")]
        {
            match &self.cgroup {
                Some(cgroup) => Tracking::Cgroup(cgroup.path().to_owned()),
                None => Tracking::ProcessGroup {
                    machine: super::cgroup::fallback(),
                },
            }
        }
        #[cfg(all(unix, not(target_os = "linux")))]
        {
            Tracking::ProcessGroup { machine: None }
        }
        #[cfg(not(unix))]
        {
            Tracking::MainProcess
        }
    }

    /// The machine-wide fallback's reason the first time it is asked for after it was
    /// chosen (to announce it once), else `None`.
    pub(crate) fn announce_fallback() -> Option<&'static str> {
        #[cfg(target_os = "linux")]
        return super::cgroup::announce_fallback();
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Write `limits` to the new cgroup before the process starts in it. Refused without
    /// a cgroup (the process group has no quotas) or where the cgroup lacks a controller.
    /// Blocking.
    #[allow(clippy::result_large_err)] // a refusal fails a start: rare, and read once
    pub(crate) fn set_limits(&self, limits: &[CgroupLimit]) -> Result<(), LimitRefused> {
        #[cfg(target_os = "linux")]
        if let Some(cgroup) = &self.cgroup {
            return cgroup.set_limits(limits).map_err(|refused| match refused {
                super::cgroup::LimitRefused::NoController {
                    limit,
                    path,
                    offered,
                } => LimitRefused::NoController {
                    limit,
                    path,
                    offered,
                },
                super::cgroup::LimitRefused::Write {
                    limit,
                    path,
                    source,
                } => LimitRefused::Write {
                    limit,
                    path,
                    source,
                },
            });
        }
        match limits.first() {
            None => Ok(()),
            Some(limit) => Err(LimitRefused::NoCgroup {
                limit: limit.clone(),
            }),
        }
    }

    /// Make `plan` start its process in this tree (Linux: `CLONE_INTO_CGROUP`).
    pub(crate) fn apply(&self, plan: &mut super::SpawnPlan) {
        #[cfg(target_os = "linux")]
        {
            plan.cgroup = self.cgroup.clone();
        }
        #[cfg(not(target_os = "linux"))]
        let _ = plan;
    }

    /// The tree of the process `leader` started by this plan.
    pub(crate) fn into_tree(self, leader: u32) -> ProcessTree {
        #[cfg(target_os = "linux")]
        if let Some(cgroup) = self.cgroup {
            return ProcessTree {
                kind: Kind::Cgroup(cgroup),
            };
        }
        ProcessTree::group(leader)
    }
}

/// The processes of one service instance.
#[derive(Debug)]
pub(crate) struct ProcessTree {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Every process the instance started, wherever it went (`setsid()` included).
    #[cfg(target_os = "linux")]
    Cgroup(std::sync::Arc<super::cgroup::ServiceCgroup>),
    /// The process group led by the main process (`leader`): processes that call
    /// `setsid()` or `setpgid()` leave it unseen.
    Group { leader: u32 },
}

/// One quota to write to an instance's cgroup before its process starts there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupLimit {
    /// The spec's name for it (`"memory_max"`).
    pub quota: &'static str,
    /// The controller it needs (`"memory"`).
    pub controller: &'static str,
    /// The file (`"memory.max"`).
    pub file: &'static str,
    /// What is written.
    pub value: String,
}

/// Why quotas were not written ([`TreePlan::set_limits`]).
#[derive(Debug)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) enum LimitRefused {
    /// The instance has no cgroup (cgroup v2 missing or not writable, not Linux).
    NoCgroup { limit: CgroupLimit },
    /// The cgroup does not offer the controller.
    NoController {
        limit: CgroupLimit,
        path: std::path::PathBuf,
        offered: String,
    },
    /// The write failed.
    Write {
        limit: CgroupLimit,
        path: std::path::PathBuf,
        source: io::Error,
    },
}

/// What a tree uses ([`ProcessTree::usage`]); `None`: not known here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TreeUsage {
    /// CPU time, microseconds.
    pub cpu_usec: Option<u64>,
    /// Memory, bytes (`memory.current`, or resident memory summed from `/proc`).
    pub memory: Option<u64>,
    /// The most memory used at once (`memory.peak`; only a cgroup knows it).
    pub memory_peak: Option<u64>,
    /// Tasks (threads).
    pub tasks: Option<u64>,
    /// Where the figures came from.
    pub source: UsageFrom,
}

/// Where a [`TreeUsage`] came from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) enum UsageFrom {
    /// Every figure from the cgroup's files.
    Cgroup,
    /// The cgroup, and `/proc` for what a missing controller does not give.
    CgroupAndProc,
    /// `/proc` alone (a process group).
    Proc,
    /// Nothing is known on this platform.
    #[default]
    Nothing,
}

/// Where a readiness check expects the service to listen (read only on Linux).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) enum Listening<'a> {
    /// Any of these TCP addresses.
    Tcp(&'a [SocketAddr]),
    /// This Unix socket path.
    Unix(&'a Path),
}

impl ProcessTree {
    /// The process group `leader` leads.
    pub(crate) fn group(leader: u32) -> ProcessTree {
        ProcessTree {
            kind: Kind::Group { leader },
        }
    }

    /// How the tree is tracked, for logs and events: `cgroup <path>` or `process group N`.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Cgroup(cgroup) => format!("cgroup {}", cgroup.path().display()),
            Kind::Group { leader } => format!("process group {leader}"),
        }
    }

    /// Whether this tree is a cgroup (whose directory is removed when it is dropped).
    pub(crate) fn is_cgroup(&self) -> bool {
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Cgroup(_) => true,
            Kind::Group { .. } => false,
        }
    }

    /// Send `signal` to every process of the tree, falling back to the main process alone.
    /// Blocking for a cgroup (its members are read from its files). Windows has no
    /// signals: the main process is killed.
    pub(crate) fn signal_all(&self, main: &dyn TreeLeader, signal: i32) {
        #[cfg(unix)]
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Cgroup(cgroup) => {
                if let Some(signal) = rustix::process::Signal::from_named_raw(signal) {
                    if let Err(error) = cgroup.signal(signal) {
                        tracing::debug!(error = %crate::report::Chain(&error), "cannot signal the cgroup; signalling the main process");
                        let _ = main.signal_main(signal.as_raw());
                    }
                }
            }
            Kind::Group { .. } => {
                if main.signal_group(signal).is_err() {
                    let _ = main.signal_main(signal);
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = signal;
            let _ = main.kill_main();
        }
    }

    /// SIGKILL every process of the tree (cgroup: `cgroup.kill`, all at once), falling
    /// back to the main process alone.
    pub(crate) fn kill_all(&self, main: &dyn TreeLeader) {
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Cgroup(cgroup) => {
                if let Err(error) = cgroup.kill() {
                    tracing::warn!(error = %crate::report::Chain(&error), "cannot kill the cgroup; killing the main process");
                    let _ = main.kill_main();
                }
            }
            Kind::Group { .. } => {
                #[cfg(unix)]
                if main.signal_group(KILL).is_ok() {
                    return;
                }
                let _ = main.kill_main();
            }
        }
    }

    /// The processes of the tree now (the main process included while it lives; off
    /// Linux only the leader is known).
    fn pids(&self) -> Vec<u32> {
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Cgroup(cgroup) => cgroup.pids().unwrap_or_default(),
            Kind::Group { leader } => group_members(*leader),
        }
    }

    /// What the tree uses now (blocking: cgroup files or `/proc`). A cgroup gives its CPU
    /// time, and memory, peak and tasks where its controllers are enabled; what it cannot
    /// give (but the peak) is summed over its processes from `/proc`. A process group is
    /// summed from `/proc` (CPU time of processes that have exited is not counted then).
    /// Off Linux nothing is known.
    pub(crate) fn usage(&self, main: u32) -> TreeUsage {
        #[cfg(target_os = "linux")]
        {
            use super::imp::usage::proc_sums;
            match &self.kind {
                Kind::Cgroup(cgroup) => {
                    let from = cgroup.usage();
                    let mut usage = TreeUsage {
                        cpu_usec: from.cpu_usec,
                        memory: from.memory,
                        memory_peak: from.memory_peak,
                        tasks: from.tasks,
                        source: UsageFrom::Cgroup,
                    };
                    if from.cpu_usec.is_none() || from.memory.is_none() || from.tasks.is_none() {
                        let sums = proc_sums(&cgroup.pids().unwrap_or_default());
                        usage.cpu_usec = usage.cpu_usec.or(Some(sums.cpu_usec));
                        usage.memory = usage.memory.or(Some(sums.rss_bytes));
                        usage.tasks = usage.tasks.or(Some(sums.threads));
                        usage.source = UsageFrom::CgroupAndProc;
                    }
                    usage
                }
                Kind::Group { leader } => {
                    let mut pids = group_members(*leader);
                    if !pids.contains(&main) {
                        pids.push(main);
                    }
                    let sums = proc_sums(&pids);
                    TreeUsage {
                        cpu_usec: Some(sums.cpu_usec),
                        memory: Some(sums.rss_bytes),
                        memory_peak: None,
                        tasks: Some(sums.threads),
                        source: UsageFrom::Proc,
                    }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = main;
            TreeUsage::default()
        }
    }

    /// How many times the OOM killer killed a process of the tree (a cgroup with the
    /// memory controller; otherwise `None`). Blocking.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Cgroup(cgroup) => cgroup.oom_kills(),
            Kind::Group { .. } => None,
        }
    }

    /// Whether `pid` belongs to the tree.
    pub(crate) fn contains(&self, pid: u32) -> bool {
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Cgroup(cgroup) => cgroup.contains(pid),
            Kind::Group { leader } => pid == *leader || process_group_of(pid) == Some(*leader),
        }
    }

    /// Whether every socket listening at `at` belongs to the tree (`main` included), and
    /// there is at least one. Blocking (`/proc` scans). Where the OS does not say who
    /// listens (off Linux), `true`: a connection then decides.
    pub(crate) fn owns_listeners(&self, main: u32, at: Listening<'_>) -> bool {
        #[cfg(target_os = "linux")]
        {
            let inodes = listener_inodes(at);
            if inodes.is_empty() {
                return false;
            }
            let mut pids = self.pids();
            pids.push(main);
            pids.sort_unstable();
            pids.dedup();
            let ours: std::collections::HashSet<u64> = pids
                .into_iter()
                .flat_map(|pid| super::sockets::socket_inodes(pid).unwrap_or_default())
                .collect();
            match inodes.iter().find(|i| !ours.contains(i)) {
                None => true,
                Some(&foreign) => {
                    tracing::debug!(
                        holders = ?super::sockets::socket_holders(foreign),
                        "a listener on the readiness address is not the service's; not ready"
                    );
                    false
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (main, at, self.pids());
            true
        }
    }

    /// Resolves once no process of the tree is left, or after `deadline` (then `false`).
    ///
    /// A cgroup reports it as an event (`populated 0` in `cgroup.events`). A process group
    /// raises none, so its members are found in `/proc` (on the blocking pool) and each is
    /// waited for through its pidfd, then the group is looked at again, until no member is
    /// left: woken by exits, never by a timer. The main process, still un-reaped, counts as
    /// gone.
    pub(crate) async fn wait_empty(&self, main: u32, deadline: Duration) -> bool {
        let wait = async {
            match &self.kind {
                #[cfg(target_os = "linux")]
                Kind::Cgroup(cgroup) => {
                    if let Err(error) = cgroup.wait_empty().await {
                        tracing::debug!(error = %crate::report::Chain(&error), "cannot watch the cgroup; assuming empty");
                    }
                }
                Kind::Group { leader } => wait_group_empty(*leader, main).await,
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }
}

/// The inodes of the sockets listening at `at` (Linux; elsewhere none are known).
pub(crate) fn listener_inodes(at: Listening<'_>) -> Vec<u64> {
    #[cfg(target_os = "linux")]
    match at {
        Listening::Tcp(addrs) => addrs
            .iter()
            .flat_map(|a| super::sockets::tcp_listeners(*a).unwrap_or_default())
            .map(|l| l.inode)
            .collect(),
        Listening::Unix(path) => super::sockets::unix_listeners(path).unwrap_or_default(),
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = at;
        Vec::new()
    }
}

/// A process holding the socket `inode`, if the OS tells (Linux).
pub(crate) fn socket_holder(inode: u64) -> Option<u32> {
    #[cfg(target_os = "linux")]
    return super::sockets::socket_holders(inode).first().copied();
    #[cfg(not(target_os = "linux"))]
    {
        let _ = inode;
        None
    }
}

/// Wait until process group `leader` has no member but `main`, each member's exit an
/// event from its pidfd.
async fn wait_group_empty(leader: u32, main: u32) {
    loop {
        let members = blocking(move || {
            group_members(leader)
                .into_iter()
                .filter(|&pid| pid != main)
                // Pinned, then checked again: a PID recycled since the scan is no member.
                .filter_map(|pid| super::ProcessHandle::open(pid).ok())
                .filter(|handle| process_group_of(handle.pid()) == Some(leader))
                .collect::<Vec<_>>()
        })
        .await;
        if members.is_empty() {
            return;
        }
        for member in members {
            match member.into_watcher() {
                Ok(watcher) => {
                    watcher.wait().await;
                }
                Err(error) => {
                    tracing::debug!(error = %crate::report::Chain(&error), "cannot watch a group member; looking again");
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// The live (not zombie) members of process group `pgid`, from `/proc` (Linux; elsewhere
/// only the leader is known).
fn group_members(pgid: u32) -> Vec<u32> {
    #[cfg(target_os = "linux")]
    {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                stat_fields(pid).is_some_and(|(state, group)| group == pgid && state != 'Z')
            })
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        vec![pgid]
    }
}

fn process_group_of(pid: u32) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        stat_fields(pid).map(|(_, group)| group)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// State and process group of `pid` from `/proc/PID/stat` (split after the last `)`).
#[cfg(target_os = "linux")]
fn stat_fields(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}
