//! Exit detection: SIGKILL sent to a verified backend → the exit event on its liveness
//! stream (pidfd), against `kill(pid, 0)` polled every 100 ms and every 10 ms, all three
//! watching the same kill.
//!
//! The daemon is our child, reaped at once by a thread blocked in `waitpid` (as a parent
//! that does its job would): `kill(pid, 0)` succeeds on a zombie, so without prompt reaping
//! the polls would never see the exit. The kill lands at a random phase of the polls.

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use running_process::protocol::CacheManifest;
use running_process::{BackendHandle, Liveness};
use rustix::process::{pidfd_open, pidfd_send_signal, test_kill_process, Pid, PidfdFlags, Signal};

use crate::common::{self, Metric};

pub async fn run(
    daemon: &Path,
    quick: bool,
    metrics: &mut Vec<Metric>,
) -> Result<(), Box<dyn std::error::Error>> {
    let trials = if quick { 20 } else { 200 };
    let dir = tempfile::tempdir()?;
    let mut stream_samples = Vec::with_capacity(trials);
    let mut poll_10 = Vec::with_capacity(trials);
    let mut poll_100 = Vec::with_capacity(trials);
    let mut reaped = Vec::with_capacity(trials);
    let mut rng = common::Rng::seeded();
    for trial in 0..trials {
        let child = ReapedChild::spawn(daemon, dir.path(), &format!("exit{trial}"))?;
        let manifest = CacheManifest::read(dir.path().join(format!("exit{trial}.json")))
            .await?
            .ok_or("no manifest")?;
        let handle = BackendHandle::try_from_manifest(&manifest)
            .await?
            .ok_or("the daemon is not verified")?;
        let mut liveness = handle.liveness();
        if liveness.next().await != Some(Liveness::Alive) {
            return Err("the daemon is not alive".into());
        }
        let pid = Pid::from_raw(handle.pid() as i32).ok_or("pid 0")?;
        let fast = tokio::spawn(poll_until_gone(pid, Duration::from_millis(10)));
        let slow = tokio::spawn(poll_until_gone(pid, Duration::from_millis(100)));
        // A random phase against both polls.
        tokio::time::sleep(Duration::from_micros(rng.below(100_000))).await;
        let killed_at = Instant::now();
        handle.force_kill()?;
        loop {
            match liveness.next().await {
                Some(Liveness::Exited(_)) => break,
                Some(_) => {}
                None => return Err("liveness stream ended without an exit".into()),
            }
        }
        stream_samples.push(killed_at.elapsed());
        poll_10.push(fast.await?.saturating_duration_since(killed_at));
        poll_100.push(slow.await?.saturating_duration_since(killed_at));
        drop(handle);
        reaped.push(child.finish().saturating_duration_since(killed_at));
    }
    let p50 = |samples: &mut Vec<Duration>| {
        samples.sort();
        common::ms(common::quantile(samples, 0.5))
    };
    let (base_10, base_100) = (p50(&mut poll_10), p50(&mut poll_100));
    let stream = Metric::from_samples(
        "exit detection: SIGKILL → liveness stream event (pidfd)",
        "ms",
        &mut stream_samples,
        common::ms,
    );
    metrics.push(
        stream
            .clone()
            .baseline("kill(pid,0) every 100 ms, p50", base_100)
            .aim("p50 < 1 ms and ≥ 50× faster than the 100 ms poll"),
    );
    metrics.push(stream.baseline("kill(pid,0) every 10 ms, p50", base_10));
    metrics.push(Metric::from_samples(
        "baseline: kill(pid,0) polled every 100 ms",
        "ms",
        &mut poll_100,
        common::ms,
    ));
    metrics.push(Metric::from_samples(
        "baseline: kill(pid,0) polled every 10 ms",
        "ms",
        &mut poll_10,
        common::ms,
    ));
    metrics.push(
        Metric::from_samples(
            "floor: SIGKILL → waitpid returns in the parent",
            "ms",
            &mut reaped,
            common::ms,
        )
        .note("the kernel's own exit cost, seen by a thread blocked in waitpid"),
    );
    Ok(())
}

/// Poll `kill(pid, 0)` every `every` until it fails; when it did.
async fn poll_until_gone(pid: Pid, every: Duration) -> Instant {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        if test_kill_process(pid).is_err() {
            return Instant::now();
        }
    }
}

/// A demo daemon started as our child and reaped by a thread blocked in `waitpid` as soon
/// as it exits. Killed through a pidfd when dropped early (a pidfd never reaches a
/// recycled PID).
struct ReapedChild {
    pidfd: OwnedFd,
    /// Returns when `waitpid` returned.
    reaper: Option<std::thread::JoinHandle<Instant>>,
}

impl ReapedChild {
    /// Start the daemon and wait for its `ready` line.
    fn spawn(daemon: &Path, dir: &Path, name: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let mut child = std::process::Command::new(daemon)
            .args(common::demo_args(dir, name))
            .stdout(Stdio::piped())
            .spawn()?;
        let pid = Pid::from_raw(child.id() as i32).ok_or("pid 0")?;
        let pidfd = pidfd_open(pid, PidfdFlags::empty())?;
        let stdout = child.stdout.take().expect("piped");
        let reaper = std::thread::spawn(move || {
            let _ = child.wait();
            Instant::now()
        });
        let guard = ReapedChild {
            pidfd,
            reaper: Some(reaper),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("ready") {
            return Err(format!("the daemon did not start: {line:?}").into());
        }
        Ok(guard)
    }

    /// Wait until it has exited and been reaped; when `waitpid` returned.
    fn finish(mut self) -> Instant {
        let reaper = self.reaper.take().expect("finished once");
        reaper.join().unwrap_or_else(|_| Instant::now())
    }
}

impl Drop for ReapedChild {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.take() {
            let _ = pidfd_send_signal(&self.pidfd, Signal::KILL);
            let _ = reaper.join();
        }
    }
}
