//! Contention: sixteen separate processes (this binary, run again as callers) ask for the
//! same shared daemon at once. Counted: daemons spawned (one is right) and the time from
//! launching the callers until the last of them holds a verified handle. Each trial runs
//! the race on an empty directory, then again over the stale manifest its daemon left when
//! SIGKILLed.
//!
//! The shared daemon outlives the caller that spawned it; this process makes itself a
//! child subreaper so that orphaned daemons become its children, and it reaps each one it
//! stops (PID 1 here may not reap).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use running_process::command::{Acquired, CommandSpec, Output, Readiness, SharedDaemon};
use running_process::protocol::CacheManifest;
use running_process::BackendHandle;
use rustix::process::{set_child_subreaper, waitpid, Pid, WaitOptions};

use crate::common::{self, Metric};

/// The first argument that makes this binary a caller: `CALLER_FLAG <daemon> <dir>`.
pub const CALLER_FLAG: &str = "--contention-caller";
const CALLERS: usize = 16;

pub async fn run(
    daemon: &Path,
    quick: bool,
    metrics: &mut Vec<Metric>,
) -> Result<(), Box<dyn std::error::Error>> {
    set_child_subreaper(Some(rustix::process::getpid()))?;
    let trials = if quick { 2 } else { 15 };
    let mut fresh = Race::default();
    let mut stale = Race::default();
    for _ in 0..trials {
        let dir = tempfile::tempdir()?;
        fresh.run(daemon, dir.path()).await?;
        let first = verified(dir.path()).await?;
        first.force_kill()?;
        first.exited().await;
        reap(&first);
        stale.run(daemon, dir.path()).await?;
        let second = verified(dir.path()).await?;
        second.stop(Duration::from_secs(5)).await?;
        reap(&second);
    }
    for (what, race) in [("no manifest", &mut fresh), ("stale manifest", &mut stale)] {
        let spawns = race.spawns.iter().sum::<usize>();
        metrics.push(
            Metric::from_samples(
                format!("{CALLERS} processes acquire one shared daemon ({what}): until all hold a handle"),
                "ms",
                &mut race.all_handles,
                common::ms,
            )
            .note(format!(
                "daemons spawned per race: {spawns} in {} races (min {}, max {}); includes starting {CALLERS} processes",
                race.spawns.len(),
                race.spawns.iter().min().unwrap_or(&0),
                race.spawns.iter().max().unwrap_or(&0),
            )),
        );
    }
    Ok(())
}

/// Results of the races of one kind.
#[derive(Default)]
struct Race {
    all_handles: Vec<Duration>,
    spawns: Vec<usize>,
}

impl Race {
    async fn run(&mut self, daemon: &Path, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let me = std::env::current_exe()?;
        let launched = SystemTime::now();
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                tokio::process::Command::new(&me)
                    .arg(CALLER_FLAG)
                    .arg(daemon)
                    .arg(dir)
                    .kill_on_drop(true)
                    .output()
            })
            .collect();
        let mut pids = std::collections::BTreeSet::new();
        let mut spawned = 0;
        let mut last = launched;
        for output in futures::future::join_all(callers).await {
            let output = output?;
            let text = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() {
                return Err(format!(
                    "caller failed: {text} {}",
                    String::from_utf8_lossy(&output.stderr)
                )
                .into());
            }
            // "<pid> <spawned|adopted> <unix ns when it had its handle>"
            let words: Vec<&str> = text.split_whitespace().collect();
            let [pid, how, at] = words[..] else {
                return Err(format!("unexpected caller output {text:?}").into());
            };
            pids.insert(pid.to_owned());
            spawned += usize::from(how == "spawned");
            last = last.max(UNIX_EPOCH + Duration::from_nanos(at.parse()?));
        }
        if pids.len() != 1 {
            return Err(format!("callers ended up with daemons {pids:?}").into());
        }
        self.all_handles.push(last.duration_since(launched)?);
        self.spawns.push(spawned);
        Ok(())
    }
}

/// The shared daemon's spec: the demo daemon with its files in `dir`.
fn spec(daemon: &Path, dir: &Path) -> CommandSpec {
    CommandSpec::new("shared", daemon)
        .args(common::demo_args(dir, "shared"))
        .stdout(Output::Null)
        .stderr(Output::Null)
        .readiness(Readiness::Manifest {
            path: dir.join("shared.json"),
        })
}

/// A verified handle to the daemon the manifest in `dir` records.
async fn verified(dir: &Path) -> Result<BackendHandle, Box<dyn std::error::Error>> {
    let manifest = CacheManifest::read(dir.join("shared.json"))
        .await?
        .ok_or("no manifest")?;
    Ok(BackendHandle::try_from_manifest(&manifest)
        .await?
        .ok_or("the shared daemon is not verified")?)
}

/// Reap the exited daemon if it became our child (its caller exited first).
fn reap(handle: &BackendHandle) {
    if let Some(pid) = Pid::from_raw(handle.pid() as i32) {
        let _ = waitpid(Some(pid), WaitOptions::NOHANG);
    }
}

/// One caller: acquire the shared daemon, print `<pid> <how> <unix ns>` and exit.
pub fn caller(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [daemon, dir] = args else {
        return Err(format!("usage: {CALLER_FLAG} <daemon> <dir>").into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let acquired = SharedDaemon::new(spec(Path::new(daemon), Path::new(dir)))?
            .acquire()
            .await?;
        let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let how = match acquired {
            Acquired::Spawned(_) => "spawned",
            _ => "adopted",
        };
        println!("{} {how} {at}", acquired.handle().pid());
        Ok(())
    })
}
