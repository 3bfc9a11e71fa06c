//! Shared helpers for the integration tests: start the demo daemon as a real process and
//! wait for its readiness line (an event, never a sleep).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use running_process::identity::Endpoint;
use running_process::protocol::CacheManifest;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Third-party daemons from Debian packages (redis, memcached, nginx, postgres).
#[cfg(target_os = "linux")]
pub mod daemons;

/// Generous deadline for anything a test waits on (the CI machine is small and shared).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How a killed process ends: by SIGKILL on Unix; on Windows `TerminateProcess`, which the
/// crate calls with exit code 1.
pub const KILLED: running_process::ExitStatus = if cfg!(windows) {
    running_process::ExitStatus::Code(1)
} else {
    running_process::ExitStatus::Signal(9)
};

/// The demo daemon's arguments for ignoring the graceful stop (`GracefulStop::Auto`):
/// SIGTERM on Unix, the shutdown request on Windows.
pub const IGNORE_GRACEFUL_STOP: &str = if cfg!(windows) {
    "--ignore-shutdown-request"
} else {
    "--ignore-sigterm"
};

/// Path of the demo daemon binary, built by `cargo test` with the other examples (or built
/// here if a test runner skipped examples).
pub fn demo_daemon_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| example_path("demo_daemon")).clone()
}

/// Set (by `.ci/wine-tests`) when cargo has already built the examples for this test's
/// target: a test run by Wine cannot run cargo, so it takes the binary as it finds it.
pub const EXAMPLES_BUILT: &str = "RP_TEST_EXAMPLES_BUILT";

/// Path of an example binary of this crate, built (or found up to date) by cargo once per
/// test process: `cargo test --test X` does not build the examples, and a binary left by
/// an earlier build may be stale. Cargo makes this a no-op when nothing changed (and is not
/// run at all with [`EXAMPLES_BUILT`] set).
pub fn example_path(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if std::env::var_os(EXAMPLES_BUILT).is_some() {
        assert!(
            path.is_file(),
            "{EXAMPLES_BUILT} is set but {} is missing",
            path.display()
        );
        return path;
    }
    if !built.iter().any(|n| n == name) {
        let mut build = std::process::Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "--example", name]);
        if profile_dir.file_name() == Some("release".as_ref()) {
            build.arg("--release");
        }
        // The same target directory as this test binary, wherever cargo put it.
        if let Some(target) = profile_dir.parent() {
            build.env("CARGO_TARGET_DIR", target);
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building example {name} failed");
        built.push(name.to_owned());
    }
    path
}

/// A demo daemon started by a test, in its own temporary directory.
pub struct DemoDaemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub endpoint: Endpoint,
    pub manifest_path: PathBuf,
    pub manifest: CacheManifest,
}

impl DemoDaemon {
    /// Start the demo daemon with extra arguments and wait until it is ready.
    pub async fn start(extra: &[&str]) -> DemoDaemon {
        Self::start_with_binary(&demo_daemon_path(), extra).await
    }

    /// Same, with a specific binary (a copy, for the replaced-binary test).
    pub async fn start_with_binary(binary: &Path, extra: &[&str]) -> DemoDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run").join("demo.sock");
        let manifest_path = dir.path().join("run").join("demo.json");
        let mut child = Command::new(binary)
            .arg("--endpoint")
            .arg(&socket)
            .arg("--manifest")
            .arg(&manifest_path)
            .args(extra)
            .stdout(Stdio::piped())
            // Its complaints (`ignoring SIGTERM`, ...) are not the test's output.
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn demo_daemon");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("demo_daemon ready within the deadline")
            .expect("read stdout")
            .expect("demo_daemon printed a line");
        assert!(
            ready.starts_with("ready pid="),
            "unexpected first line {ready:?}"
        );
        let manifest = CacheManifest::read(&manifest_path)
            .await
            .expect("manifest readable")
            .expect("manifest written before ready");
        let endpoint = manifest
            .current_daemon
            .as_ref()
            .expect("daemon recorded")
            .ipc_endpoint
            .clone();
        DemoDaemon {
            child,
            dir,
            endpoint,
            manifest_path,
            manifest,
        }
    }

    pub fn claim(&self) -> running_process::DaemonProcess {
        self.manifest
            .current_daemon
            .clone()
            .expect("daemon recorded")
    }

    /// The endpoint's path: the socket file on Unix, the pipe name on Windows.
    pub fn socket_path(&self) -> PathBuf {
        PathBuf::from(&self.endpoint.path)
    }
}

/// Await `future` with the shared deadline, failing the test with `what` if it passes.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {DEADLINE:?}"))
}

/// Wait until `done()` holds, for a condition the kernel raises no event for (a process's
/// scheduler state, a directory another process removes): looked at again every few
/// milliseconds, failing the test with `what` after the shared deadline.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    within(what, async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
}

/// `assert!(matches!(..))` that prints the value when it does not match.
#[macro_export]
macro_rules! assert_matches {
    ($value:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {{
        let value = &$value;
        assert!(
            matches!(value, $pattern $(if $guard)?),
            "expected {}, got {value:?}",
            stringify!($pattern)
        );
    }};
}

/// A command spec that runs the demo daemon under supervision with the identity
/// handshake for readiness, its files in `dir`. Its stdout is discarded, its stderr captured
/// and discarded: the last line shows in the `Exited` event, not in the test output.
pub fn demo_spec(name: &str, dir: &Path, extra: &[&str]) -> running_process::command::CommandSpec {
    use running_process::command::{CommandSpec, Output, Readiness};
    let run = dir.join("run");
    CommandSpec::new(name, demo_daemon_path())
        .args([
            "--endpoint".to_owned(),
            run.join(format!("{name}.sock")).display().to_string(),
            "--manifest".to_owned(),
            run.join(format!("{name}.json")).display().to_string(),
            "--service".to_owned(),
            name.to_owned(),
        ])
        .args(extra.iter().copied())
        .stdout(Output::Null)
        .stderr(Output::Null)
        .readiness(Readiness::Manifest {
            path: run.join(format!("{name}.json")),
        })
}

/// Read events until one matches `pred` (returning it), failing the test after the
/// deadline. Lag is a test failure: these tests read every event.
pub async fn next_matching(
    events: &mut running_process::supervision::EventStream,
    what: &str,
    mut pred: impl FnMut(&running_process::supervision::Event) -> bool,
) -> running_process::supervision::Event {
    use futures::StreamExt;
    within(what, async {
        loop {
            match events.next().await {
                Some(Ok(event)) if pred(&event) => return event,
                Some(Ok(_)) => {}
                Some(Err(lagged)) => panic!("{what}: {lagged}"),
                None => panic!("{what}: the event stream ended"),
            }
        }
    })
    .await
}

/// Collect every event until `pred` matches one (included).
pub async fn collect_until(
    events: &mut running_process::supervision::EventStream,
    what: &str,
    mut pred: impl FnMut(&running_process::supervision::Event) -> bool,
) -> Vec<running_process::supervision::Event> {
    let mut seen = Vec::new();
    next_matching(events, what, |event| {
        seen.push(event.clone());
        pred(event)
    })
    .await;
    seen
}

/// Wait until process `pid` has exited (zombie or gone), woken by its pidfd: an event, not a
/// poll loop. Panics after the deadline.
#[cfg(target_os = "linux")]
pub async fn wait_gone(pid: u32) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let waited = tokio::task::spawn_blocking(move || {
        let Some(id) = rustix::process::Pid::from_raw(pid as i32) else {
            return true;
        };
        let fd = match rustix::process::pidfd_open(id, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return true,
            Err(e) => panic!("pidfd_open({pid}): {e}"),
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let deadline = Timespec {
            tv_sec: DEADLINE.as_secs() as i64,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&deadline))
            .map(|n| n > 0)
            .unwrap_or(false)
    })
    .await
    .unwrap();
    assert!(waited, "process {pid} still alive after {DEADLINE:?}");
}

/// Wait until process `pid` has exited, woken by a process handle's signal (Windows): an
/// event, not a poll loop. Panics after the deadline.
#[cfg(windows)]
pub async fn wait_gone(pid: u32) {
    use windows_sys::Win32::Foundation::{CloseHandle, FALSE, WAIT_OBJECT_0};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE,
    };
    let waited = tokio::task::spawn_blocking(move || {
        // SAFETY: plain FFI; a null handle means no such process (any more).
        let handle = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, FALSE, pid) };
        if handle.is_null() {
            return true;
        }
        // SAFETY: `handle` is an open process handle with SYNCHRONIZE, closed once below.
        let waited = unsafe { WaitForSingleObject(handle, DEADLINE.as_millis() as u32) };
        // SAFETY: see above.
        unsafe { CloseHandle(handle) };
        waited == WAIT_OBJECT_0
    })
    .await
    .unwrap();
    assert!(waited, "process {pid} still alive after {DEADLINE:?}");
}

/// Environment variable that turns a re-executed test binary into a helper process (see
/// [`helper_command`]).
pub const HELPER_ROLE: &str = "RP_TEST_HELPER_ROLE";
/// Prefix of the lines a helper process prints for its parent test (libtest prints its own
/// lines around them).
pub const HELPER_PREFIX: &str = "@helper ";

/// This test binary, re-executed to run only the test `entry` with [`HELPER_ROLE`] set to
/// `role`: a helper process (a supervisor to SIGKILL, a writer to crash) built from the
/// crate as it is, with no extra binary. `entry` must do nothing unless the variable is set.
/// Stdout is piped (read it with [`helper_line`]); the process is killed if dropped.
pub fn helper_command(entry: &str, role: &str) -> Command {
    helper_command_via(&[], entry, role)
}

/// [`helper_command`] run through `wrapper` (say `["unshare", "--mount", "--"]`).
pub fn helper_command_via(wrapper: &[&str], entry: &str, role: &str) -> Command {
    let exe = std::env::current_exe().expect("test exe");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    command
        .args([entry, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(HELPER_ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// Print one line for the parent test (flushed at once).
pub fn helper_say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{HELPER_PREFIX}{line}").expect("stdout");
    out.flush().expect("flush stdout");
}

/// The next helper line (its prefix removed), skipping libtest's own output. Fails the test
/// if the output ends or the deadline passes first.
pub async fn helper_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    what: &str,
) -> String {
    within(what, async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("read helper stdout")
                .unwrap_or_else(|| panic!("{what}: the helper's output ended"));
            if let Some(rest) = line.strip_prefix(HELPER_PREFIX) {
                return rest.to_owned();
            }
        }
    })
    .await
}

/// A temporary directory where a runtime directory would be: on tmpfs (`/dev/shm`) where
/// there is one, as `$XDG_RUNTIME_DIR` is, else the default temporary directory. Tests that
/// start many daemons use it so their cost is not dominated by fsyncs of a shared disk.
pub fn runtime_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// A process this test did not spawn itself (a helper's child) pinned by a pidfd: dropping
/// the guard SIGKILLs it through the pidfd (never a bare, possibly recycled PID), so a
/// failing test leaves nothing behind.
#[cfg(target_os = "linux")]
pub struct PidGuard {
    pub pid: u32,
    fd: Option<std::os::fd::OwnedFd>,
}

#[cfg(target_os = "linux")]
impl PidGuard {
    /// Pin `pid`; `None` inside if it has already exited.
    pub fn pin(pid: u32) -> PidGuard {
        let fd = rustix::process::Pid::from_raw(pid as i32).and_then(|id| {
            rustix::process::pidfd_open(id, rustix::process::PidfdFlags::empty()).ok()
        });
        PidGuard { pid, fd }
    }

    /// Whether the process is still running (not exited, not a zombie): its pidfd is not
    /// readable yet.
    pub fn is_running(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let Some(fd) = &self.fd else { return false };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&now)).expect("poll pidfd") == 0
    }
}

#[cfg(target_os = "linux")]
impl Drop for PidGuard {
    fn drop(&mut self) {
        if let Some(fd) = &self.fd {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        }
    }
}

/// A restart policy of `kind` that restarts at once (no backoff, default intensity).
pub fn no_backoff(
    kind: running_process::supervision::RestartKind,
) -> running_process::supervision::RestartPolicy {
    running_process::supervision::RestartPolicy {
        kind,
        backoff: running_process::supervision::Backoff::none(),
        ..Default::default()
    }
}

/// `spec` watched for hangs: a ping every 100 ms with a 300 ms deadline, unhealthy after
/// `failures` misses in a row, and 300 ms of grace between SIGTERM and SIGKILL.
pub fn with_fast_hang_detection(
    spec: running_process::command::CommandSpec,
    failures: u32,
) -> running_process::command::CommandSpec {
    use running_process::command::{HealthCheck, HealthSpec, StopSpec};
    spec.health(HealthSpec {
        policy: running_process::supervision::HealthPolicy {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            failures_before_unhealthy: failures,
        },
        check: HealthCheck::Ping,
    })
    .stop(StopSpec {
        grace: Duration::from_millis(300),
        ..StopSpec::default()
    })
}

/// An error and each of its causes, joined by `": "` (the crate's errors print only their
/// own message; the cause is their `source()`).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// Wait until process `pid` has exited (a zombie counts), from the kernel: a pidfd becomes
/// readable when its process exits, child or not. Through Python's `os.pidfd_open`, since
/// the tests have no pidfd binding of their own; `None` when python3 is missing.
#[cfg(target_os = "linux")]
pub fn wait_exited(pid: u64) -> Option<()> {
    let script = format!(
        "import os, select, sys\n\
         try:\n    fd = os.pidfd_open({pid})\n\
         except ProcessLookupError:\n    sys.exit(0)\n\
         r, _, _ = select.select([fd], [], [], {})\n\
         sys.exit(0 if r else 1)\n",
        DEADLINE.as_secs()
    );
    let status = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .ok()?;
    assert!(
        status.success(),
        "pid {pid} did not exit within {DEADLINE:?}"
    );
    Some(())
}
