//! The usage samplers of the running backends, and a sample of them all
//! ([`ServiceHandle::sample_usage`](super::ServiceHandle::sample_usage)): read on the
//! blocking pool, written into the status rows with the CPU share since the previous
//! sample.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::status::StatusBoard;
use crate::blocking::blocking;
use crate::handle::BackendHandle;
use crate::supervision::{ResourceUsage, Supervisor, UsageSampler};

/// The previous CPU reading of a backend: its CPU time and when it was read.
type LastCpu = Arc<Mutex<Option<(u64, Instant)>>>;

/// One running backend's sampler and its previous CPU reading.
struct Tracked {
    pid: u32,
    sampler: Option<UsageSampler>,
    /// The previous sample's CPU time and moment: first the reading taken when the
    /// backend was seen running (ready), so the first share is over the time since.
    last: LastCpu,
}

/// The samplers by member name.
#[derive(Default)]
pub(crate) struct Samplers(Mutex<BTreeMap<String, Tracked>>);

impl Samplers {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Tracked>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `name` runs `backend`: ask its supervisor for a sampler, once per backend.
    pub fn track(&self, name: &str, backend: &BackendHandle, supervisor: &dyn Supervisor) {
        let pid = backend.pid();
        if self.lock().get(name).is_some_and(|t| t.pid == pid) {
            return;
        }
        let sampler = supervisor.usage_sampler(backend);
        let last = LastCpu::default();
        if let (Some(sampler), Ok(runtime)) =
            (sampler.clone(), tokio::runtime::Handle::try_current())
        {
            // The baseline, off the workers; a sample taken before it lands has no share.
            let baseline = last.clone();
            runtime.spawn(blocking(move || {
                let cpu = sampler().and_then(|u| u.cpu_usec);
                let mut last = baseline.lock().unwrap_or_else(|p| p.into_inner());
                if let (Some(cpu), None) = (cpu, &*last) {
                    *last = Some((cpu, Instant::now()));
                }
            }));
        }
        self.lock()
            .insert(name.to_owned(), Tracked { pid, sampler, last });
    }

    /// `name` runs no backend.
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// `from` is now called `to`.
    pub fn rename(&self, from: &str, to: &str) {
        let mut map = self.lock();
        if let Some(tracked) = map.remove(from) {
            map.insert(to.to_owned(), tracked);
        }
    }

    /// Sample every running backend that has a sampler (all on one trip to the blocking
    /// pool), set the CPU share, and write the figures into the rows of `board`.
    pub async fn sample_into(&self, board: &StatusBoard) {
        let wanted: Vec<(String, u32, UsageSampler, LastCpu)> = self
            .lock()
            .iter()
            .filter_map(|(name, t)| Some((name.clone(), t.pid, t.sampler.clone()?, t.last.clone())))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let read: Vec<(String, u32, Option<ResourceUsage>)> = blocking(move || {
            wanted
                .into_iter()
                .map(|(name, pid, sampler, last)| {
                    let mut usage = sampler();
                    let at = Instant::now();
                    if let Some(usage) = usage.as_mut() {
                        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(cpu) = usage.cpu_usec {
                            usage.cpu_percent = last.and_then(|(before, from)| {
                                cpu_percent(before, cpu, at.duration_since(from))
                            });
                            *last = Some((cpu, at));
                        }
                    }
                    (name, pid, usage)
                })
                .collect()
        })
        .await;
        for (name, pid, usage) in read {
            let Some(usage) = usage else { continue };
            board.update(&name, |row| {
                // The backend was replaced meanwhile: this sample is of the old one.
                if row.pid == Some(pid) {
                    row.usage = Some(usage);
                }
            });
        }
    }
}

/// CPU time `before` → `now` (microseconds) over `elapsed`, in percent of one core;
/// `None` over an interval too short to say anything (under a millisecond).
fn cpu_percent(before: u64, now: u64, elapsed: std::time::Duration) -> Option<f64> {
    let wall = elapsed.as_micros();
    if wall < 1_000 {
        return None;
    }
    let used = now.saturating_sub(before) as f64;
    Some((used * 100.0 / wall as f64 * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cpu_share_is_per_core_over_the_interval() {
        assert_eq!(cpu_percent(0, 500_000, Duration::from_secs(1)), Some(50.0));
        assert_eq!(
            cpu_percent(1_000_000, 5_000_000, Duration::from_secs(2)),
            Some(200.0)
        );
        assert_eq!(cpu_percent(10, 5, Duration::from_secs(1)), Some(0.0));
        assert_eq!(cpu_percent(0, 5, Duration::from_micros(10)), None);
    }
}
