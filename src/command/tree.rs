//! A service instance's process tree: its own cgroup where the supervisor can create one
//! (Linux, cgroup v2), else the process group its main process leads. The tree is what a
//! stop signals and kills, what is killed when the main process dies unexpectedly, and the
//! only place whose sockets readiness believes.

use crate::blocking::blocking;
use std::time::Duration;

use crate::handle::BackendHandle;

/// The cgroup of one instance (Linux).
#[cfg(target_os = "linux")]
pub(crate) type InstanceCgroup = std::sync::Arc<crate::platform::cgroup::ServiceCgroup>;
/// No cgroups outside Linux: a type with no values.
#[cfg(not(target_os = "linux"))]
#[derive(Debug, Clone)]
pub(crate) enum InstanceCgroup {}

/// How the instance's processes are tracked.
#[derive(Debug)]
pub(crate) enum Tree {
    /// Every process the instance started, wherever it went (`setsid()` included).
    #[cfg(target_os = "linux")]
    Cgroup(InstanceCgroup),
    /// The process group led by the main process (`leader`): processes that call
    /// `setsid()` or `setpgid()` leave it unseen.
    Group {
        /// The main process, whose PID is the group id.
        leader: u32,
    },
}

impl Tree {
    /// How the tree is tracked, for logs and events: `cgroup <path>` or `process group N`.
    pub(crate) fn describe(&self) -> String {
        match self {
            #[cfg(target_os = "linux")]
            Tree::Cgroup(cgroup) => format!("cgroup {}", cgroup.path().display()),
            Tree::Group { leader } => format!("process group {leader}"),
        }
    }

    /// Whether this tree is a cgroup.
    pub(crate) fn is_cgroup(&self) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Tree::Cgroup(_) => true,
            Tree::Group { .. } => false,
        }
    }

    /// Send `signal` to every process of the tree. For a process group, only while the
    /// main process is not reaped (the backend's handle keeps it so), so the group id
    /// cannot be anyone else's.
    #[cfg(unix)]
    pub(crate) fn signal_all(&self, main: &BackendHandle, signal: i32) {
        match self {
            #[cfg(target_os = "linux")]
            Tree::Cgroup(cgroup) => {
                if let Some(signal) = rustix::process::Signal::from_named_raw(signal) {
                    if let Err(error) = cgroup.signal(signal) {
                        tracing::debug!(error = %crate::report::Chain(&error), "cannot signal the cgroup; signalling the main process");
                        let _ = main.signal(signal.as_raw());
                    }
                }
            }
            Tree::Group { .. } => {
                if main.signal_process_group(signal).is_err() {
                    let _ = main.signal(signal);
                }
            }
        }
    }

    /// SIGKILL every process of the tree (cgroup: `cgroup.kill`, all at once).
    pub(crate) fn kill_all(&self, main: &BackendHandle) {
        match self {
            #[cfg(target_os = "linux")]
            Tree::Cgroup(cgroup) => {
                if let Err(error) = cgroup.kill() {
                    tracing::warn!(error = %crate::report::Chain(&error), "cannot kill the cgroup; killing the main process");
                    let _ = main.force_kill();
                }
            }
            Tree::Group { .. } => {
                #[cfg(unix)]
                if main
                    .signal_process_group(rustix::process::Signal::KILL.as_raw())
                    .is_ok()
                {
                    return;
                }
                let _ = main.force_kill();
            }
        }
    }

    /// The processes of the tree now (the main process included while it lives).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn pids(&self) -> Vec<u32> {
        match self {
            #[cfg(target_os = "linux")]
            Tree::Cgroup(cgroup) => cgroup.pids().unwrap_or_default(),
            Tree::Group { leader } => group_members(*leader),
        }
    }

    /// Whether `pid` belongs to the tree.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn contains(&self, pid: u32) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Tree::Cgroup(cgroup) => cgroup.contains(pid),
            Tree::Group { leader } => pid == *leader || process_group_of(pid) == Some(*leader),
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
            match self {
                #[cfg(target_os = "linux")]
                Tree::Cgroup(cgroup) => {
                    if let Err(error) = cgroup.wait_empty().await {
                        tracing::debug!(error = %crate::report::Chain(&error), "cannot watch the cgroup; assuming empty");
                    }
                }
                Tree::Group { leader } => wait_group_empty(*leader, main).await,
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
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
                .filter_map(|pid| crate::platform::ProcessHandle::open(pid).ok())
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

#[cfg_attr(not(unix), allow(dead_code))]
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
