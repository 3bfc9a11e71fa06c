//! The examples, run as a user runs them, checked by what they print. Every wait is for an
//! output line, with the shared generous deadline; nothing here measures time.

mod support;

use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A running example and the stdout lines it has printed so far.
struct ExampleRun {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl ExampleRun {
    fn start(name: &str, args: &[&str]) -> ExampleRun {
        let mut child = Command::new(support::example_path(name))
            .args(args)
            .stdout(Stdio::piped())
            // A failed run leaves nothing behind: its daemon dies with it.
            .kill_on_drop(true)
            .spawn()
            .expect("start the example");
        let stdout = child.stdout.take().expect("piped stdout");
        ExampleRun {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// Read lines until one satisfies `pred` and return it. Fails the test, showing the
    /// output so far, if the output ends or the deadline passes first.
    async fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(support::DEADLINE, async {
            while let Some(line) = self.lines.next_line().await.expect("read stdout") {
                self.seen.push(line.clone());
                if pred(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{what}: the output ended. Output:\n{}", self.output()),
            Err(_) => panic!(
                "{what}: not within {:?}. Output so far:\n{}",
                support::DEADLINE,
                self.output()
            ),
        }
    }

    /// [`expect`](Self::expect) a line containing `needle`.
    async fn expect_containing(&mut self, what: &str, needle: &str) -> String {
        self.expect(what, |line| line.contains(needle)).await
    }

    /// Read the rest of the output, then the exit status.
    async fn finish(mut self) -> (ExitStatus, String) {
        let status = support::within("the example exits", async {
            while let Some(line) = self.lines.next_line().await.expect("read stdout") {
                self.seen.push(line);
            }
            self.child.wait().await.expect("wait for the example")
        })
        .await;
        (status, self.output())
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }
}

/// The delay, in seconds, of a `restart #N in D` line (`D` as `Duration`'s `Debug`
/// prints it: `261.7ms`, `1.3s`).
#[cfg(unix)]
fn backoff_of(line: &str) -> f64 {
    let delay = line
        .split(" in ")
        .nth(1)
        .unwrap_or_else(|| panic!("no backoff in {line:?}"));
    let (number, scale) = if let Some(ms) = delay.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(us) = delay.strip_suffix("µs") {
        (us, 1e-6)
    } else if let Some(s) = delay.strip_suffix('s') {
        (s, 1.0)
    } else {
        panic!("bad delay in {line:?}")
    };
    number
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("bad delay in {line:?}"))
        * scale
}

/// Unix: the run is ended with SIGTERM (Windows would need a console for Ctrl-C).
#[cfg(unix)]
#[tokio::test]
async fn auto_restart_restarts_after_crashes_and_an_unhealthy_verdict_then_stops_cleanly() {
    // `--seconds` is only a backstop: the test ends the run with SIGTERM once it has seen
    // every mechanism, however long a loaded machine takes to get there.
    let mut run = ExampleRun::start("auto_restart", &["--seconds", "600"]);

    // Two crashes, each restarted after a longer backoff than the one before.
    let mut delays = Vec::new();
    for n in 1..=2 {
        run.expect("a crash", |l| {
            // `...: exit code 3; last output: demo_daemon: crashing as asked`
            l.contains("exited (pid ") && l.contains("): exit code 3")
        })
        .await;
        let restart = format!("restart #{n} in ");
        let restart = run.expect_containing("a restart after it", &restart).await;
        delays.push(backoff_of(&restart));
        run.expect_containing("the new daemon is ready", "ready (pid ")
            .await;
    }

    // A hang: consecutive failed checks, the unhealthy verdict, a kill, a restart.
    let verdict = run
        .expect_containing("the unhealthy verdict", "unhealthy (pid ")
        .await;
    let hung = verdict
        .split("unhealthy (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("a pid")
        .to_owned();
    let third_failure = format!("health check failed (pid {hung}, 3 in a row)");
    assert!(
        run.seen.iter().any(|line| line.contains(&third_failure)),
        "three checks failed before the verdict:\n{}",
        run.output()
    );
    let killed = format!("exited (pid {hung}): killed by signal 9");
    run.expect_containing("the hung daemon is killed", &killed)
        .await;
    let restart = run
        .expect_containing("a restart after the verdict", "restart #3 in ")
        .await;
    delays.push(backoff_of(&restart));
    run.expect_containing("the replacement is ready", "ready (pid ")
        .await;
    assert!(
        delays.windows(2).all(|w| w[0] < w[1]),
        "the backoff grows with each restart: {delays:?}"
    );

    // SIGTERM, as systemd or `kill` would send it: a clean stop and a summary.
    let pid = run.child.id().expect("the example runs");
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a valid pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
    run.expect_containing(
        "the signal is noticed",
        "--- SIGTERM received: stopping ---",
    )
    .await;
    run.expect("the daemon exits on SIGTERM", |l| {
        l.contains("exited (pid ") && l.ends_with("): exit code 0")
    })
    .await;
    run.expect("supervision stopped", |line| line.ends_with(": stopped"))
        .await;
    let (status, output) = run.finish().await;
    assert!(status.success(), "{status}:\n{output}");
    assert!(output.contains(": Stopped ---"), "{output}");
    assert!(
        output.contains("exits by kind: exit code 0: 1, exit code 3: 2, killed by signal 9: 1"),
        "{output}"
    );
}

#[tokio::test]
async fn auto_restart_stops_cleanly_when_its_seconds_are_up() {
    // Whatever the daemon is doing after a second (running, crashing, waiting out a
    // backoff), the stop is clean and the exit code 0.
    let mut run = ExampleRun::start("auto_restart", &["--seconds", "1"]);
    run.expect_containing("the time limit", "--- 1 s are up: stopping ---")
        .await;
    run.expect_containing("a summary", "--- summary after")
        .await;
    let (status, output) = run.finish().await;
    assert!(status.success(), "{status}:\n{output}");
    assert!(output.contains(": Stopped ---"), "{output}");
}

/// Run an example to its end with `$XDG_RUNTIME_DIR` (where `per_user_dir` puts the shared
/// daemons) pointed at `runtime`; fails the test unless it exits 0. Returns its stdout.
#[cfg(target_os = "linux")]
async fn run_to_end(name: &str, args: &[&str], runtime: &std::path::Path) -> String {
    let output = support::within(
        &format!("{name} {args:?} exits"),
        Command::new(support::example_path(name))
            .args(args)
            .env("XDG_RUNTIME_DIR", runtime)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{name} {args:?}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Everything under `root` (files and directories), relative to it, sorted.
#[cfg(target_os = "linux")]
fn everything_under(root: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            found.push(relative);
            if path.is_dir() {
                walk(root, &path, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(root, root, &mut found);
    found.sort();
    found
}

/// The pid in a `... pid N ...` line.
#[cfg(target_os = "linux")]
fn pid_in(line: &str) -> u32 {
    line.split("pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn shared_daemon_stop_with_nothing_running_says_so_and_spawns_nothing() {
    let runtime = support::runtime_tempdir();
    let output = run_to_end("shared_daemon", &["--stop"], runtime.path()).await;
    assert!(output.starts_with("nothing running"), "{output}");
    // No daemon was spawned: it would have left its socket, manifest and lock file.
    assert_eq!(everything_under(runtime.path()), Vec::<String>::new());
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn shared_daemon_stop_stops_the_running_daemon_and_leaves_nothing() {
    let runtime = support::runtime_tempdir();
    let spawned = run_to_end("shared_daemon", &[], runtime.path()).await;
    assert!(spawned.trim_end().ends_with(" spawned"), "{spawned}");
    let pid = pid_in(&spawned);
    let daemon = support::PidGuard::pin(pid); // killed if the test fails
    let adopted = run_to_end("shared_daemon", &[], runtime.path()).await;
    assert_eq!(adopted.trim_end(), format!("pid {pid} adopted"));
    // Documented: the daemon runs with its files until `--stop`.
    assert_eq!(
        everything_under(runtime.path()),
        [
            "running-process",
            "running-process/shared-demo",
            "running-process/shared-demo/shared.json",
            "running-process/shared-demo/shared.json.lock",
            "running-process/shared-demo/shared.sock",
        ]
    );

    let stopped = run_to_end("shared_daemon", &["--stop"], runtime.path()).await;
    let stopped = stopped.trim_end();
    // Linux 6.15+ reports a non-child's exit status through its pidfd; older kernels don't.
    assert!(
        stopped == format!("stopped pid {pid}: exit code 0")
            || stopped == format!("stopped pid {pid} (exit status unknown: it was not our child)"),
        "{stopped}"
    );
    support::wait_gone(pid).await;
    assert!(!daemon.is_running());
    assert_eq!(everything_under(runtime.path()), Vec::<String>::new());

    let again = run_to_end("shared_daemon", &["--stop"], runtime.path()).await;
    assert!(again.starts_with("nothing running"), "{again}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn helper_daemons_leaves_only_its_shared_daemon_which_removes_its_files_when_stopped() {
    use running_process::protocol::CacheManifest;
    use running_process::BackendHandle;
    let runtime = support::runtime_tempdir();
    let output = run_to_end("helper_daemons", &["--seconds", "0"], runtime.path()).await;
    let pid = pid_in(
        output
            .lines()
            .find(|line| line.contains("shared daemon pid "))
            .unwrap_or_else(|| panic!("no shared daemon line in:\n{output}")),
    );
    let _guard = support::PidGuard::pin(pid); // killed if the test fails
    assert!(output.contains("left running"), "{output}");
    // Documented: the shared daemon runs on (until its idle timeout), with its files.
    let dir = runtime.path().join("running-process/helper-daemons");
    assert_eq!(
        everything_under(runtime.path()),
        [
            "running-process",
            "running-process/helper-daemons",
            "running-process/helper-daemons/cache.json",
            "running-process/helper-daemons/cache.json.lock",
            "running-process/helper-daemons/cache.sock",
        ]
    );

    // Its clean exit (SIGTERM here; its idle timeout ends it the same way) removes them.
    let manifest = CacheManifest::read(dir.join("cache.json"))
        .await
        .unwrap()
        .expect("the shared daemon's manifest");
    let daemon = BackendHandle::try_from_manifest(&manifest)
        .await
        .unwrap()
        .expect("the shared daemon, verified");
    assert_eq!(daemon.pid(), pid);
    daemon.stop(support::DEADLINE).await.unwrap();
    support::wait_gone(pid).await;
    assert_eq!(everything_under(runtime.path()), ["running-process"]);
}
