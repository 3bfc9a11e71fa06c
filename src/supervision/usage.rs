//! What each backend uses: CPU time and share, memory and its peak, tasks
//! ([`ResourceUsage`]), read on demand by [`ServiceHandle::sample_usage`] through the
//! [`UsageSampler`] its [`Supervisor`] hands out.
//!
//! [`ServiceHandle::sample_usage`]: crate::supervision::ServiceHandle::sample_usage
//! [`Supervisor`]: crate::supervision::Supervisor

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// What one backend (its whole process tree) uses, as sampled last. A figure the platform
/// cannot give is `None`: never invented.
///
/// For a [`CommandSupervisor`](crate::command::CommandSupervisor) on Linux the figures come
/// from the instance's cgroup v2 (`cpu.stat` `usage_usec`, `memory.current`,
/// `memory.peak`, `pids.current`). Where the memory or pids controller is not enabled in
/// the cgroup v2 hierarchy (a hybrid layout that keeps them in cgroup v1), memory is the
/// resident memory and tasks the threads of the cgroup's processes, summed from `/proc`,
/// and the peak is `None`; [`source`](ResourceUsage::source) says
/// [`UsageSource::CgroupAndProc`]. Without a cgroup (the process-group path) everything is
/// summed from `/proc` over the group's live processes ([`UsageSource::Proc`]): the peak
/// is `None`, and the CPU time of processes that have exited is not counted. Off Linux
/// nothing is sampled (`usage` stays `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResourceUsage {
    /// CPU time (user and system) used by the tree since the instance started,
    /// microseconds.
    pub cpu_usec: Option<u64>,
    /// CPU used over the last interval, in percent of one core (200 = two cores busy):
    /// since the previous sample of the same instance (the first interval begins when the
    /// instance was seen running, that is ready); `None` without an earlier reading or
    /// over an interval under a millisecond.
    pub cpu_percent: Option<f64>,
    /// Memory in use, bytes (`memory.current`: resident memory, page cache and kernel
    /// memory charged to the cgroup; from `/proc`: resident memory).
    pub memory_bytes: Option<u64>,
    /// The most memory used at once since the instance started, bytes (`memory.peak`,
    /// Linux 5.19+ with the memory controller).
    pub memory_peak_bytes: Option<u64>,
    /// Tasks (processes and threads) in the tree.
    pub tasks: Option<u64>,
    /// Where the figures came from.
    pub source: UsageSource,
    /// When they were read (wall clock; `sampled_at_unix_ms` in serde formats).
    #[serde(rename = "sampled_at_unix_ms", with = "crate::serde_util::unix_ms")]
    pub sampled_at: SystemTime,
}

impl ResourceUsage {
    /// A sample read now from `source`, with no figure yet (set the public fields).
    pub fn new(source: UsageSource) -> Self {
        ResourceUsage {
            cpu_usec: None,
            cpu_percent: None,
            memory_bytes: None,
            memory_peak_bytes: None,
            tasks: None,
            source,
            sampled_at: SystemTime::now(),
        }
    }
}

/// Where a [`ResourceUsage`] came from (snake_case in serde formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UsageSource {
    /// The instance's cgroup v2 files, every figure.
    Cgroup,
    /// The cgroup's files, and `/proc` for what a controller that is not enabled there
    /// does not give (memory as resident memory, tasks as threads; no peak).
    CgroupAndProc,
    /// `/proc`, summed over the processes of the instance's process group.
    Proc,
    /// Something else (a [`Supervisor`](crate::supervision::Supervisor) of your own).
    Other,
}

/// Reads what one running backend uses. It may block (files in `/proc` or a cgroup file
/// system): the runtime calls it on the blocking pool, never on a tokio worker. `None`:
/// nothing can be read now (the backend is gone).
pub type UsageSampler = Arc<dyn Fn() -> Option<ResourceUsage> + Send + Sync>;
