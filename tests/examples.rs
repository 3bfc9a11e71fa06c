//! The examples, run as a user runs them, checked by what they print. Every wait is for an
//! output line, with the shared generous deadline; nothing here measures time.

#![cfg(unix)]

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

/// The delay of a `restart #N in D s (backoff)` line.
fn backoff_of(line: &str) -> f64 {
    let delay = line
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" s (backoff)"))
        .unwrap_or_else(|| panic!("no backoff in {line:?}"));
    delay
        .parse()
        .unwrap_or_else(|_| panic!("bad delay in {line:?}"))
}

#[tokio::test]
async fn auto_restart_restarts_after_crashes_and_an_unhealthy_verdict_then_stops_cleanly() {
    // `--seconds` is only a backstop: the test ends the run with SIGTERM once it has seen
    // every mechanism, however long a loaded machine takes to get there.
    let mut run = ExampleRun::start("auto_restart", &["--seconds", "600"]);

    // Two crashes, each restarted after a longer backoff than the one before.
    let mut delays = Vec::new();
    for n in 1..=2 {
        run.expect("a crash", |l| l.contains("exited: exit code 3"))
            .await;
        let restart = run.expect("a restart after the crash", |l| {
            l.contains(&format!("restart #{n} in "))
        });
        delays.push(backoff_of(&restart.await));
        run.expect("the restarted daemon is ready", |l| {
            l.contains("ready: pid")
        })
        .await;
    }

    // A hang: consecutive failed checks, the unhealthy verdict, a kill, a restart.
    run.expect("a failed health check", |l| {
        l.contains("health check failed (1 in a row)")
    })
    .await;
    let verdict = run
        .expect("the unhealthy verdict", |l| {
            l.contains("unhealthy: stopping pid")
        })
        .await;
    let hung = verdict.rsplit(' ').next().unwrap().to_owned();
    assert!(
        run.seen
            .iter()
            .any(|l| l.contains(&format!("health check failed (3 in a row) for pid {hung}"))),
        "three checks failed before the verdict:\n{}",
        run.output()
    );
    run.expect("the hung daemon is killed", |l| {
        l.contains(&format!("pid {hung} exited: killed by signal 9"))
    })
    .await;
    let restart = run
        .expect("a restart after the verdict", |l| {
            l.contains("restart #3 in ")
        })
        .await;
    delays.push(backoff_of(&restart));
    run.expect("the replacement is ready", |l| l.contains("ready: pid"))
        .await;
    assert!(
        delays.windows(2).all(|w| w[0] < w[1]),
        "the backoff grows with each restart: {delays:?}"
    );

    // SIGTERM, as systemd or `kill` would send it: a clean stop and a summary.
    let pid = run.child.id().expect("the example runs");
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a valid pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
    run.expect("the signal is noticed", |l| {
        l.contains("--- SIGTERM received: stopping ---")
    })
    .await;
    run.expect("the daemon exits by itself on SIGTERM", |l| {
        l.contains("exited: exit code 0")
    })
    .await;
    run.expect("supervision stopped", |l| l.ends_with("stopped"))
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
    run.expect("the time limit", |l| {
        l.contains("--- 1 s are up: stopping ---")
    })
    .await;
    run.expect("a summary", |l| l.starts_with("--- summary after"))
        .await;
    let (status, output) = run.finish().await;
    assert!(status.success(), "{status}:\n{output}");
    assert!(output.contains(": Stopped ---"), "{output}");
}
