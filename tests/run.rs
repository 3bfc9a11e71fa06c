//! `running-process run -- CMD`: the set started in a private directory on ports of its
//! own, CMD run against it, everything stopped after, CMD's exit status passed on; a
//! service that dies mid-run stops CMD and is named; two runs of one file side by side.
//!
//! Every wait is for the kernel or a file the processes write, with a generous deadline.
#![cfg(target_os = "linux")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::daemons;
use support::{until, wait_gone, within, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_running-process");

/// A service that records its pid in the run's directory, says hello and sleeps; ready
/// once the pid is written.
const WORKER: &str = r#"
[services.worker]
program = "sh"
args = ["-c", "echo $$$$ > $RUNNING_PROCESS_RUN_DIR/worker.pid; echo worker says hello; exec sleep 3600"]
readiness = { kind = "exec", command = ["test", "-s", "${RUNNING_PROCESS_RUN_DIR}/worker.pid"], interval_ms = 20 }
"#;

/// CMD's first lines: the worker's pid, its cgroup (`0::` line) and the run's directory.
const REPORT: &str = "echo worker=$(cat $RUNNING_PROCESS_RUN_DIR/worker.pid); \
     echo cgroup=$(grep ^0:: /proc/$(cat $RUNNING_PROCESS_RUN_DIR/worker.pid)/cgroup | cut -c4-); \
     echo dir=$RUNNING_PROCESS_RUN_DIR; echo cmd=$$;";

fn project(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("running-process.toml"), text).unwrap();
    dir
}

/// `running-process run [args] -- sh -c script` in `dir`, to its end (bounded).
fn run(dir: &Path, args: &[&str], script: &str) -> Output {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .arg("run")
        .args(args)
        .args(["--", "sh", "-c", script])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    finish(command.spawn().unwrap())
}

/// Wait for `child` to end (bounded: killed and the test failed after the deadline).
fn finish(child: std::process::Child) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("`running-process run` did not end within {DEADLINE:?}");
        }
    }
}

/// The `key=value` line CMD printed.
fn value(output: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| {
            panic!(
                "no {key}= in the output:\n{stdout}\nstderr:\n{}",
                stderr(output)
            )
        })
        .to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Where cgroup v2 is mounted, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// After a run: the worker and CMD are gone, the run's directory removed, and (when the
/// worker had a cgroup) its cgroup and the supervisor's removed.
async fn assert_nothing_left(output: &Output) {
    let worker: u32 = value(output, "worker").parse().unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            stderr(output)
        )
    });
    let cmd: u32 = value(output, "cmd")
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    wait_gone(worker).await;
    wait_gone(cmd).await;
    let dir = PathBuf::from(value(output, "dir"));
    assert!(!dir.exists(), "{} left behind", dir.display());
    let cgroup = value(output, "cgroup");
    match cgroup2_mount() {
        Some(mount) if cgroup.contains("/running-process-") => {
            let service = mount.join(cgroup.trim_start_matches('/'));
            // The cgroup keeper removes them once the supervisor has exited.
            for dir in [&service, service.parent().unwrap()] {
                until(&format!("{} removed", dir.display()), || !dir.exists()).await;
            }
        }
        _ => println!("tree tracking: process group (no cgroup here: {cgroup})"),
    }
}

#[tokio::test]
async fn run_passes_the_exit_status_through_and_leaves_nothing() {
    let dir = project(WORKER);
    for (script, expected) in [("exit 0", 0), ("exit 7", 7), ("kill -KILL $$", 128 + 9)] {
        let output = run(dir.path(), &[], &format!("{REPORT} {script}"));
        assert_eq!(
            output.status.code(),
            Some(expected),
            "{script}: stderr:\n{}",
            stderr(&output)
        );
        // The service's output went to its log, not to the terminal.
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("worker says hello"),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert_nothing_left(&output).await;
    }
}

#[tokio::test]
async fn a_service_dying_mid_run_stops_the_command_and_names_the_service() {
    let dir = project(WORKER);
    // CMD kills the worker and would then sleep for an hour: it is stopped instead.
    let output = run(
        dir.path(),
        &[],
        &format!("{REPORT} kill -9 $(cat $RUNNING_PROCESS_RUN_DIR/worker.pid); exec sleep 3600"),
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "stderr:\n{err}");
    assert!(err.contains("service worker failed"), "{err}");
    assert!(err.contains("worker says hello"), "its last lines: {err}");
    assert!(err.contains("the command ended"), "{err}");
    assert_nothing_left(&output).await;

    // With --keep-going CMD finishes; the run still says the service failed.
    let output = run(
        dir.path(),
        &["--keep-going"],
        // Finished once the worker is reaped, which the supervisor does after handling
        // its exit: the failure happened while CMD ran.
        &format!(
            "{REPORT} w=$(cat $RUNNING_PROCESS_RUN_DIR/worker.pid); kill -9 $w; \
             while kill -0 $w 2>/dev/null; do sleep 0.01; done; echo finished=yes"
        ),
    );
    assert_eq!(output.status.code(), Some(125), "{}", stderr(&output));
    assert_eq!(value(&output, "finished"), "yes");
    assert!(stderr(&output).contains("service worker failed"));
}

#[tokio::test]
async fn a_service_that_cannot_start_is_reported_and_the_command_never_runs() {
    let dir = project(
        r#"
[services.broken]
program = "sh"
args = ["-c", "echo cannot find my config; exit 3"]
readiness = { kind = "tcp", address = "127.0.0.1:${port:broken}" }
restart = { kind = "temporary" }
"#,
    );
    let output = run(dir.path(), &[], "echo ran=yes");
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("ran=yes"));
    assert!(err.contains("broken"), "{err}");
    assert!(err.contains("cannot find my config"), "{err}");
}

/// A Python HTTP server on `${port:web}` serving the run's directory.
const WEB: &str = r#"
[services.web]
program = "python3"
args = ["-m", "http.server", "${port:web}", "--bind", "127.0.0.1", "--directory", "${RUNNING_PROCESS_RUN_DIR}"]
readiness = { kind = "http", url = "http://127.0.0.1:${port:web}/" }
"#;

#[tokio::test]
async fn two_concurrent_runs_of_one_file_get_their_own_ports() {
    if daemons::find("python3").is_none() {
        return daemons::skip("python3 is not installed");
    }
    let dir = project(WEB);
    let meeting = tempfile::tempdir().unwrap();
    // Each CMD puts a token in its run's directory, says it is there, waits until the
    // other one is too (so both stacks run at once), then fetches the token from its own
    // server on its own port.
    let script = format!(
        "set -e; echo $$ > $RUNNING_PROCESS_RUN_DIR/token; echo port=$RUNNING_PROCESS_PORT_WEB; \
         touch {meeting}/$RUNNING_PROCESS_PORT_WEB; \
         for i in $(seq 1 3000); do [ $(ls {meeting} | wc -l) -ge 2 ] && break; sleep 0.02; done; \
         [ $(ls {meeting} | wc -l) -ge 2 ]; \
         got=$(python3 -c \"import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:'+sys.argv[1]+'/token').read().decode().strip())\" $RUNNING_PROCESS_PORT_WEB); \
         [ \"$got\" = \"$$\" ]; echo token=ok",
        meeting = meeting.path().display()
    );
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(dir.path(), &[], &script));
        let b = s.spawn(|| run(dir.path(), &[], &script));
        (a.join().unwrap(), b.join().unwrap())
    });
    for output in [&a, &b] {
        assert_eq!(output.status.code(), Some(0), "stderr:\n{}", stderr(output));
        assert_eq!(value(output, "token"), "ok");
    }
    assert_ne!(value(&a, "port"), value(&b, "port"));
}

#[tokio::test]
async fn ctrl_c_stops_the_command_then_the_set() {
    let dir = project(WORKER);
    let fifo = dir.path().join("cmd-running");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    // CMD reports, says it runs on the FIFO, then waits for SIGINT, which it answers by
    // saying so and exiting 3 (its background `sleep` goes with its process group).
    let script = format!(
        "{REPORT} trap 'echo interrupted=yes; exit 3' INT; echo running > {fifo}; \
         sleep 3600 & wait $!",
        fifo = fifo.display()
    );
    let child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["run", "--", "sh", "-c", &script])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    within(
        "CMD runs",
        tokio::task::spawn_blocking(move || std::fs::read_to_string(fifo).unwrap()),
    )
    .await
    .unwrap();
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let output = finish(child);
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert_eq!(value(&output, "interrupted"), "yes");
    assert!(stderr(&output).contains("interrupted; the command exited with 3"));
    assert_nothing_left(&output).await;
}

/// On a terminal CMD stays in the terminal's foreground process group, so an interactive
/// command can read it (in a group of its own it would be stopped by SIGTTIN). `script`
/// gives `run` a pseudo-terminal and types a line into it.
#[test]
fn an_interactive_command_reads_the_terminal() {
    if daemons::find("script").is_none() {
        return daemons::skip("script (util-linux) is not installed");
    }
    let dir = project(WORKER);
    let inner = format!("{BIN} run -- sh -c 'read line; echo got=$line; exit 4'");
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"typed\n").unwrap();
    let output = finish(child);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("got=typed"), "{text}");
    assert_eq!(output.status.code(), Some(4), "{text}");
}
