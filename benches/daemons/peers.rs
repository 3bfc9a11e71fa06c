//! Against the peers, in one run: the same tiny C daemon (`benches/tiny_daemon.c`, built
//! here with `cc`) under a shell loop (the floor: fork + exec and nothing else), this
//! crate's `CommandSupervisor` (ready once started, zero backoff, unlimited intensity, in a
//! separate process: this binary run again), and each of runit's `runsv`, daemontools'
//! `supervise`, s6's `s6-supervise` and supervisord that is installed.
//!
//! 1. **Restart**: SIGKILL of the daemon → a new pid in its pid file and its Unix socket
//!    accepting a connection (the daemon writes the pid file after `listen`), seen through
//!    inotify on its directory, no polling. All supervisors run at once, each with its own
//!    daemon; each round kills each daemon in turn and waits for its replacement, and
//!    rounds start `SPACING` apart, so that a daemon is always older than one second when
//!    it is killed (runsv, supervise and s6-supervise wait a second before restarting a
//!    service that ran for less).
//! 2. **Supervisor CPU per restart**: the CPU time of the supervising process over the
//!    whole series (all its threads, from `/proc/PID/task/*/schedstat`: nanoseconds, where
//!    `stat`'s utime + stime count 10-ms ticks) divided by the restarts. It includes what
//!    the supervisor spends idle between kills (supervisord wakes every second).
//! 3. **Crash storm**: 100 daemons that exit at once, restarted in a loop for `STORM`:
//!    restarts per second (counted by the daemons themselves: each appends a byte to a
//!    file) and supervisor CPU per restart.
//!
//! `PEERS_OURS_ALSO="before=/path/to/another/daemons-HASH"` adds the crate's supervisor
//! from another build of this benchmark (an older commit, say) to both, for an A/B of a
//! change in the same run.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};

use crate::common::{self, Metric};

/// The first argument that makes this binary the crate's supervisor under test:
/// `CHILD_FLAG <tiny daemon> <dir>...` supervises one daemon per directory until its
/// standard input closes.
pub const CHILD_FLAG: &str = "--peers-supervisor";

const INSTALL: &str = "SKIPPED: not installed (apt-get install runit daemontools s6 supervisor)";
/// Between the starts of two rounds of kills: more than the one-second restart throttle of
/// runsv, supervise and s6-supervise.
const SPACING: Duration = Duration::from_millis(1200);
/// How long to wait for one restart before giving up on a supervisor.
const RESTART_TIMEOUT: Duration = Duration::from_secs(5);
const STORM_DAEMONS: usize = 100;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub async fn run(quick: bool, metrics: &mut Vec<Metric>) -> Result<(), Box<dyn std::error::Error>> {
    let found = tokio::task::block_in_place(|| run_blocking(quick));
    metrics.extend(found.map_err(|e| e.to_string())?);
    Ok(())
}

fn run_blocking(quick: bool) -> Result<Vec<Metric>, BoxError> {
    let mut metrics = Vec::new();
    let Some(cc) = which("cc") else {
        metrics.push(Metric {
            name: "peers".into(),
            note: Some("SKIPPED: no C compiler (`cc`) to build the tiny daemon".into()),
            ..Metric::default()
        });
        return Ok(metrics);
    };
    // Orphaned daemons (their supervisor stopped) become our children, to be reaped.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    let work = tempfile::tempdir()?;
    let daemon = work.path().join("tiny_daemon");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/tiny_daemon.c");
    let status = Command::new(cc)
        .args(["-O2", "-o"])
        .arg(&daemon)
        .arg(&source)
        .status()?;
    if !status.success() {
        return Err(format!("cc {} failed ({status})", source.display()).into());
    }
    let kills = if quick { 5 } else { 30 };
    let storm = if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    restarts(&daemon, work.path(), kills, &mut metrics)?;
    crash_storm(&daemon, work.path(), storm, &mut metrics)?;
    reap_orphans();
    Ok(metrics)
}

/// Other builds of this benchmark to run as the crate's supervisor next to this one (an
/// A/B of a change in the same run): `PEERS_OURS_ALSO="label=/path/to/daemons-HASH,..."`.
fn other_builds() -> &'static [(String, PathBuf)] {
    static BUILDS: std::sync::OnceLock<Vec<(String, PathBuf)>> = std::sync::OnceLock::new();
    BUILDS.get_or_init(|| {
        std::env::var("PEERS_OURS_ALSO")
            .unwrap_or_default()
            .split(',')
            .filter_map(|item| item.split_once('='))
            .map(|(label, path)| (label.trim().to_owned(), PathBuf::from(path.trim())))
            .collect()
    })
}

/// The supervisors under test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    ShellLoop,
    Ours,
    /// The crate's supervisor from another build ([`other_builds`]).
    OtherBuild(usize),
    Runsv,
    Supervise,
    S6,
    Supervisord,
}

impl Kind {
    fn all() -> Vec<Kind> {
        let mut all = vec![Kind::ShellLoop, Kind::Ours];
        all.extend((0..other_builds().len()).map(Kind::OtherBuild));
        all.extend([Kind::Runsv, Kind::Supervise, Kind::S6, Kind::Supervisord]);
        all
    }

    fn label(self) -> String {
        match self {
            Kind::ShellLoop => "floor: sh -c 'while :; do daemon; done'".into(),
            Kind::Ours => "running-process CommandSupervisor (Started, Backoff::none())".into(),
            Kind::OtherBuild(i) => format!(
                "running-process CommandSupervisor, build {:?}",
                other_builds()[i].0
            ),
            Kind::Runsv => "runit runsv".into(),
            Kind::Supervise => "daemontools supervise".into(),
            Kind::S6 => "s6-supervise".into(),
            Kind::Supervisord => "supervisord".into(),
        }
    }

    /// The crate's supervisor, this build or another.
    fn is_ours(self) -> bool {
        matches!(self, Kind::Ours | Kind::OtherBuild(_))
    }

    /// The program it needs on `PATH` (`None`: always there).
    fn program(self) -> Option<&'static str> {
        match self {
            Kind::ShellLoop | Kind::Ours | Kind::OtherBuild(_) => None,
            Kind::Runsv => Some("runsv"),
            Kind::Supervise => Some("supervise"),
            Kind::S6 => Some("s6-supervise"),
            Kind::Supervisord => Some("supervisord"),
        }
    }

    fn installed(self) -> bool {
        self.program().is_none_or(|p| which(p).is_some())
    }

    /// Start supervising one daemon per directory in `dirs` (one process for the shell
    /// loop, ours and supervisord; one per directory for the others).
    fn start(self, daemon: &Path, dirs: &[PathBuf], work: &Path) -> Result<Vec<Child>, BoxError> {
        let quiet = |command: &mut Command| {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        };
        let mut children = Vec::new();
        match self {
            Kind::ShellLoop => {
                // One shell per daemon, so each loop is one process to measure.
                for dir in dirs {
                    let mut command = Command::new("sh");
                    command.arg("-c").arg(format!(
                        "while :; do '{}' '{}'; done",
                        daemon.display(),
                        dir.display()
                    ));
                    quiet(&mut command);
                    children.push(command.spawn()?);
                }
            }
            Kind::Ours | Kind::OtherBuild(_) => {
                let exe = match self {
                    Kind::OtherBuild(i) => other_builds()[i].1.clone(),
                    _ => std::env::current_exe()?,
                };
                let mut command = Command::new(exe);
                command.arg(CHILD_FLAG).arg(daemon).args(dirs);
                quiet(&mut command);
                command.stdin(Stdio::piped());
                children.push(command.spawn()?);
            }
            Kind::Runsv | Kind::Supervise | Kind::S6 => {
                for dir in dirs {
                    let run = dir.join("run");
                    if !run.exists() {
                        std::os::unix::fs::symlink(daemon, &run)?;
                    }
                    let mut command = Command::new(self.program().expect("a peer"));
                    command.arg(dir);
                    quiet(&mut command);
                    children.push(command.spawn()?);
                }
            }
            Kind::Supervisord => {
                let conf = work.join(format!("supervisord-{}.conf", dirs.len()));
                let mut text = format!(
                    "[supervisord]\nnodaemon=true\nuser=root\nlogfile={0}/supervisord-{1}.log\n\
                     pidfile={0}/supervisord-{1}.pid\nchildlogdir={0}\n",
                    work.display(),
                    dirs.len()
                );
                for (i, dir) in dirs.iter().enumerate() {
                    text.push_str(&format!(
                        "\n[program:tiny{i}]\ncommand={} {}\nautorestart=true\nstartsecs=0\n\
                         startretries=1000000\nstdout_logfile=NONE\nstderr_logfile=NONE\n",
                        daemon.display(),
                        dir.display()
                    ));
                }
                std::fs::write(&conf, text)?;
                let mut command = Command::new("supervisord");
                command.arg("-n").arg("-c").arg(&conf);
                quiet(&mut command);
                children.push(command.spawn()?);
            }
        }
        Ok(children)
    }

    /// Stop the supervisors: ours by closing its standard input (it stops its services
    /// and exits); the others by SIGKILL (their daemons, orphaned, are killed and reaped
    /// by the caller).
    fn stop(self, children: Vec<Child>) {
        for mut child in children {
            if self.is_ours() {
                drop(child.stdin.take());
            } else {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// One supervisor in the restart series.
struct Contestant {
    kind: Kind,
    dir: PathBuf,
    children: Vec<Child>,
    watch: OwnedFd,
    samples: Vec<Duration>,
    cpu_before: u64,
    cpu_after: u64,
    failure: Option<String>,
}

#[allow(clippy::too_many_lines)] // one measurement per peer supervisor, each a short script
fn restarts(
    daemon: &Path,
    work: &Path,
    kills: usize,
    metrics: &mut Vec<Metric>,
) -> Result<(), BoxError> {
    let mut contestants = Vec::new();
    let mut skipped = Vec::new();
    for kind in Kind::all() {
        if !kind.installed() {
            skipped.push(kind);
            continue;
        }
        let dir = work.join(format!("restart-{}", contestants.len()));
        std::fs::create_dir(&dir)?;
        let watch = watch_dir(&dir)?;
        let children = kind.start(daemon, std::slice::from_ref(&dir), work)?;
        let mut contestant = Contestant {
            kind,
            dir,
            children,
            watch,
            samples: Vec::with_capacity(kills),
            cpu_before: 0,
            cpu_after: 0,
            failure: None,
        };
        if let Err(error) = wait_serving(&contestant, 0, Duration::from_secs(10)) {
            contestant.failure = Some(format!("did not start: {error}"));
        }
        contestants.push(contestant);
    }
    for c in &mut contestants {
        c.cpu_before = cpu_ns(c.children[0].id());
    }
    for r in 0..kills {
        let round = Instant::now();
        // Each round starts with another supervisor: the first kill after the pause meets
        // idle CPUs, and that should not always fall on the same one.
        let first = r % contestants.len().max(1);
        let (early, late) = contestants.split_at_mut(first);
        for c in late.iter_mut().chain(early).filter(|c| c.failure.is_none()) {
            match kill_and_wait(c) {
                Ok(took) => c.samples.push(took),
                Err(error) => c.failure = Some(format!("restart failed: {error}")),
            }
        }
        std::thread::sleep(SPACING.saturating_sub(round.elapsed()));
    }
    for c in &mut contestants {
        c.cpu_after = cpu_ns(c.children[0].id());
    }
    let floor = contestants
        .iter()
        .find(|c| c.kind == Kind::ShellLoop)
        .and_then(|c| p(&c.samples, 0.5));
    for mut c in contestants {
        let served = read_pid(&c.dir);
        c.kind.stop(std::mem::take(&mut c.children));
        // Ours stops its daemon; the others leave it to us.
        if let (Some(pid), false) = (served, c.kind.is_ours()) {
            kill_and_reap(pid);
        }
        let n = c.samples.len();
        if let Some(failure) = &c.failure {
            metrics.push(Metric {
                name: format!("peers, restart: {}", c.kind.label()),
                note: Some(format!("FAILED after {n} restarts: {failure}")),
                ..Metric::default()
            });
            if n == 0 {
                continue;
            }
        }
        let p90 = p(&c.samples, 0.9).unwrap_or(0.0);
        let mut metric = Metric::from_samples(
            format!(
                "peers, restart: SIGKILL → new pid + socket accepting, {}",
                c.kind.label()
            ),
            "ms",
            &mut c.samples,
            common::ms,
        );
        let mut note = format!("p90 {p90:.2} ms");
        if let (Some(floor), Some(p50)) = (floor, metric.p50) {
            note.push_str(&format!("; {:.2}× the floor's p50", p50 / floor));
        }
        metric = metric.note(note);
        if c.kind.is_ours() {
            metric = metric.aim("≤ 1.15× the floor, below runsv and supervise");
        }
        metrics.push(metric);
        let cpu = c.cpu_after.saturating_sub(c.cpu_before) as f64 / 1e3 / n.max(1) as f64;
        let mut metric = Metric {
            name: format!("peers, supervisor CPU per restart: {}", c.kind.label()),
            unit: "µs".into(),
            n,
            value: Some(cpu),
            ..Metric::default()
        }
        .note(format!(
            "all threads of the supervising process over {n} restarts {} s apart (idle time included)",
            SPACING.as_secs_f64()
        ));
        if c.kind.is_ours() {
            metric = metric.aim("below runsv and supervise");
        }
        metrics.push(metric);
    }
    for kind in skipped {
        metrics.push(Metric {
            name: format!("peers: {}", kind.label()),
            note: Some(INSTALL.into()),
            ..Metric::default()
        });
    }
    Ok(())
}

/// SIGKILL the daemon `c` supervises and time until a new one serves.
fn kill_and_wait(c: &Contestant) -> Result<Duration, BoxError> {
    let old = read_pid(&c.dir).ok_or("no pid file")?;
    drain(&c.watch);
    let started = Instant::now();
    kill_process(Pid::from_raw(old).ok_or("bad pid")?, Signal::KILL)?;
    wait_serving(c, old, RESTART_TIMEOUT)?;
    Ok(started.elapsed())
}

/// Wait until the pid file of `c` names a process other than `old` and its socket accepts.
fn wait_serving(c: &Contestant, old: i32, timeout: Duration) -> Result<(), BoxError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pid) = read_pid(&c.dir) {
            if pid != old && std::os::unix::net::UnixStream::connect(c.dir.join("sock")).is_ok() {
                return Ok(());
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no new daemon within {timeout:?}").into());
        }
        let tick = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(
            &c.watch,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&tick)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => drain(&c.watch),
            Err(e) => return Err(e.into()),
        }
    }
}

/// An inotify instance reporting files renamed into `dir` (the pid file's last step).
fn watch_dir(dir: &Path) -> Result<OwnedFd, BoxError> {
    use rustix::fs::inotify;
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
    inotify::add_watch(&fd, dir, inotify::WatchFlags::MOVED_TO)?;
    Ok(fd)
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 4096];
    while matches!(rustix::io::read(fd, &mut buf), Ok(n) if n > 0) {}
}

fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// SIGKILL a daemon whose supervisor is gone (it is our child now: we are a subreaper)
/// and reap it.
fn kill_and_reap(pid: i32) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = kill_process(pid, Signal::KILL);
        let _ = waitpid(Some(pid), WaitOptions::empty());
    }
}

/// Whether `done` became true within `deadline`, checked every 10 ms (the daemons count
/// their starts in files; no event tells when a count changes).
fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    while !done() {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Reap whatever orphans are left (crashing daemons whose supervisor was killed mid-way).
fn reap_orphans() {
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        while let Ok(Some(_)) = waitpid(None, WaitOptions::NOHANG) {}
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time of all threads of `pid` in nanoseconds (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Quantile of durations in milliseconds.
fn p(samples: &[Duration], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    Some(common::ms(common::quantile(&sorted, q)))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// 100 crashing daemons for `window` under the shell loops, ours, runsv and supervise.
fn crash_storm(
    daemon: &Path,
    work: &Path,
    window: Duration,
    metrics: &mut Vec<Metric>,
) -> Result<(), BoxError> {
    let mut kinds = vec![Kind::ShellLoop, Kind::Ours];
    kinds.extend((0..other_builds().len()).map(Kind::OtherBuild));
    kinds.extend([Kind::Runsv, Kind::Supervise]);
    for kind in kinds {
        let name = format!(
            "peers, crash storm ({STORM_DAEMONS} daemons exiting at once): {}",
            kind.label()
        );
        if !kind.installed() {
            metrics.push(Metric {
                name,
                note: Some(INSTALL.into()),
                ..Metric::default()
            });
            continue;
        }
        let base = work.join(format!("storm-{}", metrics.len()));
        let dirs: Vec<PathBuf> = (0..STORM_DAEMONS)
            .map(|i| base.join(i.to_string()))
            .collect();
        for dir in &dirs {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("crash"), b"")?;
        }
        let children = kind.start(daemon, &dirs, work)?;
        let pids: Vec<u32> = children.iter().map(Child::id).collect();
        let count = || -> u64 {
            dirs.iter()
                .filter_map(|d| std::fs::metadata(d.join("count")).ok())
                .map(|m| m.len())
                .sum()
        };
        let cpu = || -> u64 { pids.iter().map(|&pid| cpu_ns(pid)).sum() };
        // Warm-up: every daemon has started at least once (its supervisor is in its loop).
        let counted = |d: &PathBuf| std::fs::metadata(d.join("count")).is_ok_and(|m| m.len() > 0);
        if !wait_until(Duration::from_secs(30), || dirs.iter().all(counted)) {
            kind.stop(children);
            reap_orphans();
            return Err(format!("{name}: not every daemon started within 30 s").into());
        }
        let (count_before, cpu_before, started) = (count(), cpu(), Instant::now());
        std::thread::sleep(window);
        let (count_after, cpu_after, took) = (count(), cpu(), started.elapsed());
        kind.stop(children);
        reap_orphans();
        let restarts = count_after.saturating_sub(count_before);
        let cpu_us = cpu_after.saturating_sub(cpu_before) as f64 / 1e3;
        metrics.push(Metric {
            name: format!("{name}: restarts per second"),
            unit: "restarts/s".into(),
            n: restarts as usize,
            value: Some(restarts as f64 / took.as_secs_f64()),
            note: Some(format!(
                "{restarts} restarts in {:.1} s, counted by the daemons",
                took.as_secs_f64()
            )),
            ..Metric::default()
        });
        metrics.push(Metric {
            name: format!("{name}: supervisor CPU per restart"),
            unit: "µs".into(),
            n: restarts as usize,
            value: Some(cpu_us / restarts.max(1) as f64),
            note: Some(format!(
                "{:.0} ms of supervisor CPU in {:.1} s ({:.0}% of one core), over {} process(es)",
                cpu_us / 1e3,
                took.as_secs_f64(),
                cpu_us / 1e4 / took.as_secs_f64(),
                pids.len()
            )),
            ..Metric::default()
        });
    }
    Ok(())
}

/// The crate's supervisor under test, in its own process: one `CommandSupervisor` per
/// directory (`tiny_daemon DIR`), ready once started, zero backoff, unlimited intensity,
/// until standard input closes.
pub fn child(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use running_process::command::{CommandSpec, CommandSupervisor};
    use running_process::supervision::{supervise, Backoff, Intensity, RestartPolicy};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    let [daemon, dirs @ ..] = args else {
        return Err(format!("usage: {CHILD_FLAG} <daemon> <dir>...").into());
    };
    // `PEERS_RUNTIME=current_thread`: the supervisor on a current-thread runtime (fewer
    // threads to wake per restart) instead of the default multi-thread one.
    let runtime = if std::env::var("PEERS_RUNTIME").as_deref() == Ok("current_thread") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let services: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let spec = CommandSpec::new(format!("tiny{i}"), daemon)
                    .args([dir])
                    .restart(RestartPolicy {
                        backoff: Backoff::none(),
                        intensity: Intensity::unlimited(),
                        ..RestartPolicy::default()
                    });
                supervise(Arc::new(CommandSupervisor::new(spec)))
            })
            .collect();
        let mut rest = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut rest).await;
        for service in services {
            service.stop().await;
        }
        Ok(())
    })
}
