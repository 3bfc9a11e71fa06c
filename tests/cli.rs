//! The `running-process` command line against real processes: a service file's start order
//! and parallelism, Ctrl-C, a detached supervisor (status, restart, stop, logs, events,
//! adoption, a SIGKILLed supervisor), bad files, and real Debian daemons (redis, memcached).
//!
//! Every wait is for something the program prints or the kernel reports, with a generous
//! deadline; nothing sleeps to let time pass.
#![cfg(target_os = "linux")]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use support::daemons;
use support::{wait_exited, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_running-process");

/// A service file in a private directory, and the detached supervisor it may have: stopped
/// when the test ends, also on failure.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(text: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("running-process.toml"), text).unwrap();
        Project { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            // The detached supervisor's state directory lives in the test's own directory:
            // isolated from other tests and the user's, and removed with it.
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .stdin(Stdio::null());
        command
    }

    /// Run a command to its end (with the deadline) and return what it printed.
    fn run(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = wait_output(child);
        println!(
            "$ running-process {}\n{}{}(exit {:?})",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            output.status.code()
        );
        output
    }

    /// `status --json`: the supervisor's pid and every service's row.
    fn status(&self) -> serde_json::Value {
        let output = self.run(&["status", "--json"]);
        assert!(output.status.success(), "status failed");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// `up` in the foreground, and its output as it comes.
    fn up_foreground(&self) -> (Child, Lines) {
        let mut up = self
            .command(&["up"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Lines::of(&mut up);
        (up, lines)
    }

    /// `events`, followed from the moment it says so; killed when dropped.
    fn follow_events(&self) -> Follower {
        let mut child = self
            .command(&["events"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Lines::of(&mut child);
        lines.wait_for("following events");
        Follower { child, lines }
    }

    fn service<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no row for {name} in {status}"))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Stop a detached supervisor, if one runs (exit 3 when none does).
        let _ = self
            .command(&["stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A running `events` command and its lines.
struct Follower {
    child: Child,
    lines: Lines,
}

impl std::ops::Deref for Follower {
    type Target = Lines;
    fn deref(&self) -> &Lines {
        &self.lines
    }
}

impl std::ops::DerefMut for Follower {
    fn deref_mut(&mut self) -> &mut Lines {
        &mut self.lines
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait for a child with the deadline; kill it past the deadline and fail.
fn wait_output(mut child: Child) -> Output {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(mut s) = stdout {
            let _ = std::io::Read::read_to_end(&mut s, &mut out);
        }
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_end(&mut s, &mut err);
        }
        let status = child.wait().unwrap();
        let _ = tx.send(Output {
            status,
            stdout: out,
            stderr: err,
        });
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => output,
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("running-process (pid {pid}) did not finish within {DEADLINE:?}");
        }
    }
}

/// The lines a running child prints on stdout, as they come.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(child: &mut Child) -> Lines {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("| {line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Wait for a line containing `text`; the index of that line among those seen.
    fn wait_for(&mut self, text: &str) -> usize {
        if let Some(i) = self.seen.iter().position(|l| l.contains(text)) {
            return i;
        }
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line);
                    if self.seen.last().unwrap().contains(text) {
                        return self.seen.len() - 1;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} within {DEADLINE:?}; seen: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Every line until the program closes its output.
    fn rest(&mut self) -> &[String] {
        let end = Instant::now() + DEADLINE;
        while let Ok(line) = self
            .rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        &self.seen
    }

    fn has(&self, text: &str) -> bool {
        self.seen.iter().any(|l| l.contains(text))
    }
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn kill9(pid: u64) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

/// Two services that become ready only when the test creates `go-a` and `go-b`, and one
/// that depends on both: the order is decided by the test, not by timing.
const GATED: &str = r#"
[services.a]
program = "sh"
args = ["-c", "echo a is up; exec sleep 1000"]
readiness = { kind = "exec", command = ["test", "-e", "go-a"] }

[services.b]
program = "sh"
args = ["-c", "echo b is up; exec sleep 1000"]
readiness = { kind = "exec", command = ["test", "-e", "go-b"] }

[services.c]
program = "sh"
args = ["-c", "echo c is up; exec sleep 1000"]
depends_on = { a = "ready", b = "ready" }
"#;

#[test]
fn services_start_in_dependency_order_in_parallel_where_allowed_and_ctrl_c_stops_them_in_reverse() {
    let project = Project::new(GATED);
    let (up, mut lines) = project.up_foreground();

    // a and b are both spawned while neither is ready: they start in parallel.
    lines.wait_for("c: waiting for a ready, b ready");
    lines.wait_for("a: spawned");
    lines.wait_for("b: spawned");
    assert!(!lines.has("a: ready") && !lines.has("b: ready"));
    lines.wait_for("a | a is up");

    std::fs::write(project.path("go-a"), "").unwrap();
    let a_ready = lines.wait_for("a: ready");
    assert!(!lines.has("c: spawned"), "c must wait for b too");
    std::fs::write(project.path("go-b"), "").unwrap();
    let b_ready = lines.wait_for("b: ready");
    let c_spawned = lines.wait_for("c: spawned");
    assert!(c_spawned > a_ready && c_spawned > b_ready);
    lines.wait_for("c | c is up");
    lines.wait_for("c: ready");

    interrupt(&up);
    let seen = lines.rest().to_vec();
    let status = wait_output(up).status;
    let at = |text: &str| {
        seen.iter()
            .position(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no {text:?}"))
    };
    assert!(
        at("c: stopped") < at("a: stopping"),
        "dependants stop first"
    );
    assert!(
        at("c: stopped") < at("b: stopping"),
        "dependants stop first"
    );
    assert!(seen.iter().any(|l| l.starts_with("summary: stopped")));
    assert!(
        seen.iter().all(|l| !l.contains('\x1b')),
        "no colors when not a terminal"
    );
    assert_eq!(status.code(), Some(0), "everything stopped cleanly");
}

#[test]
#[allow(clippy::too_many_lines)] // one end-to-end CLI session, step by step
fn a_detached_run_restarts_a_crash_shows_it_and_restarts_and_stops_one_service() {
    let project = Project::new(
        r#"
[group]
name = "detached"

[services.steady]
program = "sh"
args = ["-c", "echo steady line; exec sleep 1000"]

[services.crashy]
program = "sh"
args = ["-c", "echo crashy started; exec sleep 1000"]
restart = { kind = "permanent", backoff = { initial_ms = 10 } }

[services.quiet]
program = "sh"
args = ["-c", "echo to the file; exec sleep 1000"]
stdout = { kind = "file", path = "quiet.log" }
"#,
    );
    let up = project.run(&["up", "--detach"]);
    assert!(up.status.success());
    assert!(String::from_utf8_lossy(&up.stdout).contains("started the supervisor"));

    let before = project.status();
    let crashy = Project::service(&before, "crashy");
    assert_eq!(crashy["state"], "running");
    let old_pid = crashy["pid"].as_u64().unwrap();

    // Follow the events, then crash it.
    let mut events = project.follow_events();
    kill9(old_pid);
    events.wait_for("crashy: exited");
    events.wait_for("crashy: restart #1");
    events.wait_for("crashy: ready");
    drop(events);

    let after = project.status();
    let crashy = Project::service(&after, "crashy");
    assert_eq!(crashy["state"], "running");
    assert_eq!(crashy["restarts"], 1);
    assert_eq!(crashy["last_exit"], serde_json::json!({ "Signal": 9 }));
    assert_ne!(crashy["pid"].as_u64().unwrap(), old_pid);
    let table = String::from_utf8_lossy(&project.run(&["status"]).stdout).into_owned();
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
    assert!(table.contains("signal 9"), "{table}");

    // stop NAME: that one only; restart NAME brings it back with a new process.
    let steady_pid = Project::service(&after, "steady")["pid"].as_u64().unwrap();
    assert!(project.run(&["stop", "steady"]).status.success());
    let stopped = project.status();
    assert_eq!(Project::service(&stopped, "steady")["state"], "stopped");
    assert!(Project::service(&stopped, "steady")["pid"].is_null());
    assert_eq!(Project::service(&stopped, "crashy")["state"], "running");
    wait_exited(steady_pid);
    let start = project.run(&["start", "steady"]);
    assert!(String::from_utf8_lossy(&start.stdout).contains("starting steady"));
    let mut events = project.follow_events();
    // It may be ready already: status decides, the events only wake us.
    if Project::service(&project.status(), "steady")["state"] != "running" {
        events.wait_for("steady: ready");
    }
    let restarted = project.status();
    assert_eq!(Project::service(&restarted, "steady")["state"], "running");
    assert_ne!(
        Project::service(&restarted, "steady")["pid"]
            .as_u64()
            .unwrap(),
        steady_pid
    );

    drop(events);
    let again = project.run(&["start", "crashy"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("crashy is running or waiting already"));

    // restart NAME: a running service, stopped and started again.
    let crashy_pid = Project::service(&restarted, "crashy")["pid"]
        .as_u64()
        .unwrap();
    let mut events = project.follow_events();
    assert!(project.run(&["restart", "crashy"]).status.success());
    let stopping = events.wait_for("crashy: stopping");
    let ready = events.wait_for("crashy: ready");
    assert!(ready > stopping);
    drop(events);
    let after_restart = project.status();
    assert_ne!(
        Project::service(&after_restart, "crashy")["pid"]
            .as_u64()
            .unwrap(),
        crashy_pid
    );
    assert_eq!(
        Project::service(&after_restart, "crashy")["restarts"],
        1,
        "a manual restart is not counted"
    );

    // logs: the lines it wrote, with times.
    let logs = project.run(&["logs", "steady", "-n", "5"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("steady line"));
    let quiet = project.run(&["logs", "quiet"]);
    let quiet = String::from_utf8_lossy(&quiet.stdout);
    let log = project.path("quiet.log");
    assert!(
        quiet.contains(&format!(
            "(quiet: stdout goes to {})",
            std::path::absolute(&log).unwrap().display()
        )),
        "{quiet}"
    );
    // The same file in the foreground as well would run every service twice.
    let twice = project.run(&["up"]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("a detached supervisor (pid"));
    let unknown = project.run(&["restart", "nosuch"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no service called `nosuch`"));

    // stop: everything, and the supervisor exits (the kernel says so through its handle).
    let supervisor = restarted["supervisor"]["pid"].as_u64().unwrap();
    let stop = project.run(&["stop"]);
    assert!(stop.status.success());
    assert!(String::from_utf8_lossy(&stop.stdout)
        .contains(&format!("the supervisor (pid {supervisor})")));
    let gone = project.run(&["status"]);
    assert_eq!(gone.status.code(), Some(3), "no supervisor any more");
}

#[test]
fn two_up_detach_at_once_start_one_supervisor_and_the_other_adopts_it() {
    let project =
        Project::new("[services.one]\nprogram = \"sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\n");
    let spawn = || {
        project
            .command(&["up", "--detach"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let outputs = [wait_output(first), wait_output(second)];
    let texts: Vec<String> = outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .collect();
    println!("{texts:#?}");
    assert!(outputs.iter().all(|o| o.status.success()));
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("started the supervisor"))
            .count(),
        1
    );
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("is already running"))
            .count(),
        1
    );
    let pid = |t: &str| {
        t.split("(pid ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .map(str::to_owned)
    };
    assert_eq!(pid(&texts[0]), pid(&texts[1]), "one supervisor");
    // And a third, later, adopts too.
    let third = project.run(&["up", "--detach"]);
    assert!(String::from_utf8_lossy(&third.stdout).contains("is already running"));
}

#[test]
fn a_sigkilled_supervisor_takes_its_services_with_it_and_the_next_up_starts_cleanly() {
    if Command::new("python3").arg("--version").output().is_err() {
        println!("SKIPPED: python3 (for a pidfd wait) is missing");
        return;
    }
    let project = Project::new(
        "[services.one]\nprogram = \"sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\n\n[services.two]\nprogram = \"sh\"\nargs = [\"-c\", \"sleep 1000 & wait\"]\ndepends_on = [\"one\"]\n",
    );
    assert!(project.run(&["up", "--detach"]).status.success());
    let status = project.status();
    let supervisor = status["supervisor"]["pid"].as_u64().unwrap();
    let services: Vec<u64> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pid"].as_u64().unwrap())
        .collect();
    kill9(supervisor);
    wait_exited(supervisor).unwrap();
    for pid in &services {
        wait_exited(*pid).unwrap();
    }
    // two's child `sleep` is in its tree too: no process of the test's sleep 1000 family
    // is left with two's process as an ancestor; the cgroup (or process group) kill took it.
    let up = project.run(&["up", "--detach"]);
    assert!(up.status.success());
    let text = String::from_utf8_lossy(&up.stdout);
    assert!(
        text.contains("started the supervisor"),
        "a new one, not the dead one: {text}"
    );
    let again = project.status();
    assert_ne!(again["supervisor"]["pid"].as_u64().unwrap(), supervisor);
    for name in ["one", "two"] {
        assert_eq!(Project::service(&again, name)["state"], "running");
    }
}

/// Each kind of bad file: one message with file:line:column, exit code 2, nothing started
/// (the service would create `started`; no supervisor is left).
#[test]
fn bad_files_give_one_located_message_and_start_nothing() {
    let service = "program = \"sh\"\nargs = [\"-c\", \"touch started; exec sleep 1000\"]\n";
    let cases: [(&str, String, &str); 6] = [
        ("unknown key", format!("[services.a]\n{service}restrat = {{ kind = \"permanent\" }}\n"), ":4:1: services.a.restrat: unknown field `restrat`"),
        ("wrong type", format!("[services.a]\n{service}ready_timeout_ms = \"soon\"\n"), ":4:20: services.a.ready_timeout_ms: invalid type"),
        ("cycle", format!("[services.a]\n{service}depends_on = [\"b\"]\n[services.b]\n{service}depends_on = [\"a\"]\n"), ":4:15: services.a.depends_on.b: dependency cycle: a -> b -> a"),
        ("unknown dependency", format!("[services.a]\n{service}depends_on = [\"db\"]\n"), ":4:15: services.a.depends_on.db: unknown service `db`"),
        ("duplicate name", format!("[services.a]\n{service}[services.a]\n{service}"), ":4:11: duplicate key"),
        ("missing program", "[services.a]\nprogram = \"no-such-daemon-rp\"\n".to_owned(), ":2:1: services.a.program: program `no-such-daemon-rp` not found in PATH"),
    ];
    for (what, text, expected) in cases {
        let project = Project::new(&text);
        for args in [&["check"][..], &["up"], &["up", "--detach"]] {
            let output = project.run(args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{what}: {args:?}");
            assert!(stderr.contains(expected), "{what}: {args:?}: {stderr}");
            assert_eq!(
                stderr.matches("error:").count(),
                1,
                "{what}: one message: {stderr}"
            );
            assert!(stderr.contains("nothing was started"), "{what}: {stderr}");
        }
        assert!(!project.path("started").exists(), "{what}: a service ran");
        assert_eq!(
            project.run(&["status"]).status.code(),
            Some(3),
            "{what}: no supervisor"
        );
    }
}

#[test]
fn without_a_file_up_says_how_to_write_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .arg("up")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("running-process.toml does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[services.web]"),
        "an example file: {stderr}"
    );
}

/// Real Debian daemons under a detached supervisor: memcached waits for redis to be healthy
/// (TCP readiness, then its first passing TCP health check), a crash of redis is restarted,
/// and with `rest_for_one` memcached restarts after it.
#[test]
#[allow(clippy::too_many_lines)] // one end-to-end session with real daemons, step by step
fn redis_and_memcached_from_a_service_file() {
    let (Some(redis), Some(memcached)) =
        (daemons::find("redis-server"), daemons::find("memcached"))
    else {
        println!("SKIPPED: redis-server or memcached is not installed (.ci/run installs them)");
        return;
    };
    let (redis_port, memcached_port) = (daemons::free_port(), daemons::free_port());
    let dir = tempfile::tempdir().unwrap();
    let quoted = |args: Vec<String>| {
        args.iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        r#"
[group]
strategy = "rest_for_one"

[services.redis]
program = "{redis}"
args = [{redis_args}]
readiness = {{ kind = "tcp", address = "127.0.0.1:{redis_port}" }}
health = {{ check = {{ kind = "tcp", address = "127.0.0.1:{redis_port}" }}, interval_ms = 100 }}
restart = {{ kind = "permanent", backoff = {{ initial_ms = 10 }} }}

[services.memcached]
program = "{memcached}"
args = [{memcached_args}]
readiness = {{ kind = "tcp", address = "127.0.0.1:{memcached_port}" }}
depends_on = {{ redis = "healthy" }}
"#,
        redis = redis.display(),
        memcached = memcached.display(),
        redis_args = quoted(daemons::redis_args(redis_port, dir.path())),
        memcached_args = quoted(daemons::memcached_args(memcached_port)),
    );
    let project = Project::new(&text);
    assert!(project.run(&["up", "--detach"]).status.success());
    let status = project.status();
    // memcached waited for redis's first passing health check.
    assert_eq!(
        Project::service(&status, "redis")["health"]["kind"],
        "healthy"
    );
    let redis_pid = Project::service(&status, "redis")["pid"].as_u64().unwrap();
    let memcached_pid = Project::service(&status, "memcached")["pid"]
        .as_u64()
        .unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_ok());
    assert!(std::net::TcpStream::connect(("127.0.0.1", memcached_port)).is_ok());

    let mut events = project.follow_events();
    kill9(redis_pid);
    events.wait_for("redis: restart #1");
    events.wait_for("redis: rest_for_one: restarting memcached with it");
    events.wait_for("memcached: ready");
    drop(events);
    let after = project.status();
    assert_ne!(
        Project::service(&after, "redis")["pid"].as_u64().unwrap(),
        redis_pid
    );
    assert_ne!(
        Project::service(&after, "memcached")["pid"]
            .as_u64()
            .unwrap(),
        memcached_pid
    );
    // A restart on request is followed by the strategy too.
    let mut events = project.follow_events();
    assert!(project.run(&["restart", "redis"]).status.success());
    let restarted = events.wait_for("redis: rest_for_one: restarting memcached with it");
    events.wait_for("memcached: ready");
    assert!(events.seen[restarted..]
        .iter()
        .any(|l| l.contains("memcached: ready")));
    drop(events);
    let logs =
        String::from_utf8_lossy(&project.run(&["logs", "redis", "-n", "50"]).stdout).into_owned();
    assert!(
        logs.contains("Ready to accept connections"),
        "redis's own log lines: {logs}"
    );
    let mut client = std::net::TcpStream::connect(("127.0.0.1", redis_port)).unwrap();
    client.write_all(b"PING\r\n").unwrap();
    let mut reply = String::new();
    BufReader::new(client).read_line(&mut reply).unwrap();
    assert_eq!(reply, "+PONG\r\n");
}

/// The README's service file: two demo daemons (identity handshake, sd_notify) and a
/// Python web server (HTTP readiness and health), in the foreground, then exported.
#[test]
fn the_example_service_file_runs_and_exports() {
    if Command::new("python3").arg("--version").output().is_err() {
        println!("SKIPPED: python3 (the example's web server) is missing");
        return;
    }
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/running-process.toml");
    let demo = support::demo_daemon_path();
    if !example
        .parent()
        .unwrap()
        .join("../target/debug/examples/demo_daemon")
        .exists()
    {
        println!(
            "SKIPPED: the example names ../target/debug/examples/demo_daemon; this build's is {}",
            demo.display()
        );
        return;
    }
    let mut up = Command::new(BIN)
        .args(["up", "-f"])
        .arg(&example)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut up);
    lines.wait_for(": ready: every member");
    let mut page = std::net::TcpStream::connect(("127.0.0.1", 8765)).unwrap();
    page.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut status_line = String::new();
    BufReader::new(page).read_line(&mut status_line).unwrap();
    assert!(status_line.contains("200"), "{status_line}");
    interrupt(&up);
    lines.rest();
    assert_eq!(wait_output(up).status.code(), Some(0));

    let export = Command::new(BIN)
        .args(["export", "systemd", "-f"])
        .arg(&example)
        .output()
        .unwrap();
    let units = String::from_utf8_lossy(&export.stdout);
    assert!(export.status.success());
    assert!(
        units.contains("# ---- example-index.service ----"),
        "{units}"
    );
    assert!(units.contains("Type=notify"), "{units}");
}

/// A service that ignores SIGTERM makes the first Ctrl-C's stop wait for its grace period;
/// a second Ctrl-C ends `up` at once (exit 130), and the service dies with it.
#[test]
fn a_second_ctrl_c_forces_the_stop() {
    let project = Project::new(
        r#"
[services.stubborn]
program = "sh"
args = ["-c", "trap '' TERM; echo ignoring TERM; while :; do sleep 1; done"]
stop = { grace_ms = 600000 }
"#,
    );
    let (up, mut lines) = project.up_foreground();
    lines.wait_for("stubborn | ignoring TERM");
    lines.wait_for(": ready: every member");
    let status_line = lines
        .seen
        .iter()
        .find(|l| l.contains("stubborn: spawned (pid "))
        .unwrap()
        .clone();
    let pid: u64 = status_line
        .split("(pid ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    interrupt(&up);
    lines.wait_for("stubborn: stopping");
    interrupt(&up);
    lines.wait_for("forced");
    assert_eq!(wait_output(up).status.code(), Some(130));
    if wait_exited(pid).is_none() {
        println!("SKIPPED (the service's end): python3 (for a pidfd wait) is missing");
    }
}

/// Socket activation from a service file: the detached supervisor holds a TCP listener for
/// a Python program that knows only `socket.fromfd(3, ...)`; after a SIGKILL of the
/// program, a client that connects meanwhile is answered by the replacement.
#[test]
fn a_service_file_listener_is_held_across_a_crash() {
    if Command::new("python3").arg("--version").output().is_err() {
        println!("SKIPPED: python3 is missing");
        return;
    }
    let port = daemons::free_port();
    let script = "import os, socket\\nl = socket.fromfd(3, socket.AF_INET, socket.SOCK_STREAM)\\nwhile True:\\n    c, _ = l.accept()\\n    c.sendall(b'%d\\\\n' % os.getpid())\\n    c.close()\\n";
    let project = Project::new(&format!(
        r#"
[services.echo]
program = "python3"
args = ["-c", "{script}"]
listeners = [{{ kind = "tcp", name = "web", address = "127.0.0.1:{port}" }}]
restart = {{ kind = "permanent", backoff = {{ initial_ms = 200 }} }}
"#
    ));
    assert!(project.run(&["up", "--detach"]).status.success());
    let ask = || {
        let stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("the held socket accepts");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line.trim().parse::<u64>().unwrap()
    };
    let first = ask();
    let mut events = project.follow_events();
    kill9(first);
    events.wait_for("echo: exited");
    // Connected while no instance runs (the backoff): it waits in the backlog.
    let second = ask();
    assert_ne!(first, second, "answered by the replacement");
    assert_eq!(
        Project::service(&project.status(), "echo")["pid"].as_u64(),
        Some(second)
    );
}

/// `up --detach` against a running supervisor applies the edited file: `--dry-run` says
/// what it would do and changes nothing; the apply leaves the unchanged service running
/// (same pid), replaces the edited one, adds the new one and removes the gone one, then
/// says every service is ready.
#[test]
fn up_detach_applies_an_edited_file_to_the_running_set() {
    let v1 = r#"
[services.keep]
program = "sh"
args = ["-c", "exec sleep 1000"]

[services.edit]
program = "sh"
args = ["-c", "echo ${EDIT_GREETING:-v1}; exec sleep 1000"]

[services.gone]
program = "sh"
args = ["-c", "exec sleep 1000"]
"#;
    let project = Project::new(v1);
    assert!(project.run(&["up", "--detach"]).status.success());
    let before = project.status();
    let pid =
        |status: &serde_json::Value, name: &str| Project::service(status, name)["pid"].as_u64();
    let (keep, edit) = (pid(&before, "keep").unwrap(), pid(&before, "edit").unwrap());

    std::fs::write(
        project.path("running-process.toml"),
        v1.replace("[services.gone]", "[services.new]"),
    )
    .unwrap();
    std::fs::write(project.path(".env"), "EDIT_GREETING=v2\n").unwrap();
    let dry = project.run(&["up", "--detach", "--dry-run"]);
    let dry_text = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(dry.status.success());
    for line in [
        "keep: unchanged",
        "edit: replaced: args",
        "new: added",
        "gone: removed",
        "dry run",
    ] {
        assert!(dry_text.contains(line), "{line:?} in {dry_text}");
    }
    assert!(
        pid(&project.status(), "gone").is_some(),
        "the dry run changed nothing"
    );

    let applied = project.run(&["up", "--detach"]);
    let text = String::from_utf8_lossy(&applied.stdout).into_owned();
    assert!(applied.status.success(), "{text}");
    for line in [
        "applying the file",
        "keep: unchanged",
        "edit: replaced: args",
        "new: added",
        "gone: removed",
        "every service is ready",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let after = project.status();
    assert_eq!(pid(&after, "keep"), Some(keep), "left alone: same process");
    assert_ne!(pid(&after, "edit").unwrap(), edit);
    assert!(pid(&after, "new").is_some());
    assert!(
        after["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "gone"),
        "{after}"
    );
    // An edit that is not valid is refused at its line, and the set is untouched.
    std::fs::write(
        project.path("running-process.toml"),
        "[services.keep]\nprogram = \"sh\"\nargs = [\"-c\", \"${RP_CLI_TEST_UNSET}\"]\n",
    )
    .unwrap();
    let refused = project.run(&["up", "--detach"]);
    let err = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success());
    assert!(
        err.contains(
            "running-process.toml:3:15: services.keep.args: variable RP_CLI_TEST_UNSET is not set"
        ),
        "{err}"
    );
    assert_eq!(pid(&project.status(), "keep"), Some(keep));
}

/// `up NAME` starts that service and what it depends on; `--profile` turns a profile on;
/// `config` prints the effective file; `scale NAME=N` runs N instances, each serving on its
/// own port (chosen from `${RUNNING_PROCESS_INSTANCE}`), and back to one.
#[test]
fn part_of_a_file_profiles_config_and_scale() {
    // Three free ports in a row: instance k serves on base + k.
    let base = (0..200)
        .map(|_| daemons::free_port() / 10 * 10)
        .find(|base| (1..=3).all(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok()))
        .expect("three free ports in a row");
    let text = format!(
        r#"
[services.db]
program = "sh"
args = ["-c", "exec sleep 1000"]

[services.web]
program = "python3"
args = ["-m", "http.server", "{prefix}${{RUNNING_PROCESS_INSTANCE}}", "--bind", "127.0.0.1"]
readiness = {{ kind = "tcp", address = "127.0.0.1:{prefix}${{RUNNING_PROCESS_INSTANCE}}" }}
depends_on = ["db"]

[services.other]
program = "sh"
args = ["-c", "exec sleep 1000"]

[services.debugger]
program = "sh"
args = ["-c", "exec sleep 1000"]
profiles = ["debug"]
"#,
        prefix = base / 10
    );
    let project = Project::new(&text);
    let config = project.run(&["config", "web"]);
    let config_text = String::from_utf8_lossy(&config.stdout).into_owned();
    assert!(config.status.success());
    assert!(config_text.contains("[services.web]") && config_text.contains("[services.db]"));
    assert!(!config_text.contains("[services.other]"), "{config_text}");

    assert!(project.run(&["up", "--detach", "web"]).status.success());
    let names = |status: &serde_json::Value| -> Vec<String> {
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&project.status()), ["db", "web"]);

    let scaled = project.run(&["scale", "web=3"]);
    assert!(scaled.status.success());
    assert!(String::from_utf8_lossy(&scaled.stdout).contains("every service is ready"));
    assert_eq!(names(&project.status()), ["db", "web-1", "web-2", "web-3"]);
    for k in 1..=3 {
        let page = std::net::TcpStream::connect(("127.0.0.1", base + k));
        assert!(page.is_ok(), "instance {k} serves on {}", base + k);
    }
    assert!(project.run(&["scale", "web=1"]).status.success());
    assert_eq!(names(&project.status()), ["db", "web"]);

    // The whole file with a profile on: the rest is added, web left alone.
    let web = Project::service(&project.status(), "web")["pid"].as_u64();
    let all = project.run(&["up", "--detach", "--profile", "debug"]);
    let all_text = String::from_utf8_lossy(&all.stdout).into_owned();
    assert!(all.status.success(), "{all_text}");
    assert!(all_text.contains("web: unchanged"), "{all_text}");
    assert_eq!(names(&project.status()), ["db", "web", "other", "debugger"]);
    assert_eq!(
        Project::service(&project.status(), "web")["pid"].as_u64(),
        web
    );
}

/// `up --watch` applies the file when it is saved: the edited service is replaced, the
/// other one keeps running.
#[test]
fn up_watch_applies_the_file_when_it_is_saved() {
    let text = "[services.a]\nprogram = \"sh\"\nargs = [\"-c\", \"echo a is up; exec sleep 1000\"]\n\n[services.b]\nprogram = \"sh\"\nargs = [\"-c\", \"echo b is up; exec sleep 1000\"]\n";
    let project = Project::new(text);
    let mut up = project
        .command(&["up", "--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut up);
    lines.wait_for(": ready: every member");
    std::fs::write(
        project.path("running-process.toml"),
        text.replace("echo b is up", "echo b is up again"),
    )
    .unwrap();
    lines.wait_for("== watch: a: unchanged");
    lines.wait_for("b: replaced: args");
    lines.wait_for("b | b is up again");
    interrupt(&up);
    lines.rest();
    assert_eq!(wait_output(up).status.code(), Some(0));
    // a stops only with everything, after the Ctrl-C.
    let ctrl_c = lines.wait_for("stopping every service");
    let a_stopping = lines.wait_for("a: stopping");
    assert!(a_stopping > ctrl_c, "{:#?}", lines.seen);
}

/// `${port:KEY}` under a detached supervisor: `status` shows the ports it chose (JSON and
/// the table), and applying an edited file keeps them: an unchanged service keeps its
/// process and port, an edited one is replaced on the same port, and a real server
/// (Python's) answers there.
#[test]
fn a_detached_supervisor_keeps_its_chosen_ports_across_an_apply() {
    if daemons::find("python3").is_none() {
        return daemons::skip("python3 is not installed");
    }
    let v1 = r#"
[services.web]
program = "python3"
args = ["-m", "http.server", "${port:web}", "--bind", "127.0.0.1"]
readiness = { kind = "http", url = "http://127.0.0.1:${port:web}/" }

[services.side]
program = "sh"
args = ["-c", "echo ${SIDE:-v1} on ${port:side}; exec sleep 1000"]
"#;
    let project = Project::new(v1);
    assert!(project.run(&["up", "--detach"]).status.success());
    let before = project.status();
    let port = |status: &serde_json::Value, key: &str| status["ports"][key].as_u64().unwrap();
    let pid =
        |status: &serde_json::Value, name: &str| Project::service(status, name)["pid"].as_u64();
    let (web, side) = (port(&before, "web"), port(&before, "side"));
    assert_ne!(web, side);
    let table = String::from_utf8_lossy(&project.run(&["status"]).stdout).into_owned();
    assert!(
        table.contains(&format!("side={side}")) && table.contains(&format!("web={web}")),
        "{table}"
    );

    std::fs::write(project.path(".env"), "SIDE=v2\n").unwrap();
    let applied = project.run(&["up", "--detach"]);
    let text = String::from_utf8_lossy(&applied.stdout).into_owned();
    assert!(applied.status.success(), "{text}");
    assert!(text.contains("web: unchanged"), "{text}");
    assert!(text.contains("side: replaced"), "{text}");
    let after = project.status();
    assert_eq!((port(&after, "web"), port(&after, "side")), (web, side));
    assert_eq!(pid(&after, "web"), pid(&before, "web"));
    assert_ne!(pid(&after, "side"), pid(&before, "side"));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", web as u16)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
}

/// `running-process wait`: each kind of check passes once it holds (exit 0) and a timeout
/// fails with the reason (exit 1); a check waited for before it holds passes when it does.
#[test]
fn wait_passes_when_the_check_holds_and_times_out_with_the_reason() {
    let project = Project::new("");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let passes = |args: &[&str]| {
        let output = project.run(args);
        assert!(output.status.success(), "{args:?}");
    };
    passes(&["wait", "--timeout", "30s", "tcp", &address]);
    passes(&["wait", "exec", "--", "sh", "-c", "exit 0"]);
    std::fs::write(project.path("ready"), "").unwrap();
    passes(&["wait", "file", "ready"]);
    drop(listener);

    let fails = |args: &[&str], reason: &str| {
        let output = project.run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{reason:?} in {stderr}");
    };
    fails(
        &["wait", "--timeout", "300ms", "tcp", &address],
        "not ready within 300ms (last attempt: cannot connect to",
    );
    fails(
        &[
            "wait",
            "--timeout",
            "1s",
            "exec",
            "--interval",
            "100ms",
            "--",
            "sh",
            "-c",
            "echo nope >&2; exit 3",
        ],
        "exit code 3: nope",
    );
    fails(
        &[
            "wait",
            "--timeout",
            "1s",
            "http",
            &format!("http://{address}/"),
        ],
        "http GET http://",
    );
    fails(
        &["wait", "--timeout", "1s", "file", "absent"],
        "absent does not exist",
    );

    // Started before the file exists: passes once it is created.
    let waiting = project
        .command(&["wait", "--timeout", "60s", "file", "later"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(project.path("later"), "").unwrap();
    let output = wait_output(waiting);
    assert!(output.status.success(), "{output:?}");
}

/// A file of `n` services, each running `sleep` after `touch started-N` in the project
/// directory (so a test can tell whether any was started).
fn many_sleepers(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[services.s{i}]\nprogram = \"sh\"\nargs = [\"-c\", \"touch started-{i}; exec sleep 1000\"]\n\n"
            )
        })
        .collect()
}

impl Project {
    /// `running-process ARGS` run by `sh -c 'SETUP; exec running-process ARGS'`.
    fn run_after(&self, setup: &str, args: &str) -> Output {
        let script = format!("{setup}; exec {BIN} {args}");
        let mut sh = Command::new("sh");
        sh.args(["-c", &script])
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = wait_output(sh.spawn().unwrap());
        println!(
            "$ sh -c '{script}'\n{}{}(exit {:?})",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            output.status.code()
        );
        output
    }

    /// The files a detached supervisor keeps in the state directory, by name.
    fn state_files(&self) -> Vec<String> {
        let base = self.path("run").join("running-process");
        let Ok(dirs) = std::fs::read_dir(base) else {
            return Vec::new();
        };
        dirs.flatten()
            .flat_map(|dir| {
                std::fs::read_dir(dir.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn started(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .filter(|f| f.file_name().to_string_lossy().starts_with("started-"))
            .count()
    }
}

/// Issue 30: a hard open-files limit too low for the file (set for the command by
/// `ulimit -n`, soft and hard) is named with its numbers, before anything starts: no
/// service ran, no supervisor, nothing in the state directory; in the foreground too.
#[test]
fn a_hard_open_files_limit_too_low_for_the_file_is_named_and_nothing_is_left() {
    let project = Project::new(&many_sleepers(40));
    for args in ["up --detach", "up"] {
        let output = project.run_after("ulimit -n 64", args);
        assert!(!output.status.success(), "{args} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("the open-files limit is too low for this file")
                && stderr.contains("40 service instances")
                && stderr.contains("the hard limit is 64"),
            "{args}: {stderr}"
        );
        assert_eq!(project.started(), 0, "{args}: a service was started");
        assert_eq!(project.state_files(), Vec::<String>::new(), "{args}");
    }
}

/// Issue 30: under a soft limit of 64 (the hard one higher) the supervisor raises its own
/// soft limit to the hard one, and 40 services (about 200 descriptors) all run; each gets
/// the soft limit of 64 back, one pidfd per service is held, and the status says how each
/// tree is tracked.
#[test]
fn a_low_soft_limit_is_raised_by_the_supervisor_and_children_get_it_back() {
    let hard = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    if hard.parse::<u64>().is_ok_and(|h| h < 1024) {
        println!("SKIPPED: the hard open-files limit ({hard}) is too low for 40 services");
        return;
    }
    let mut text = many_sleepers(40);
    text.push_str(
        "[services.probe]\nprogram = \"sh\"\nargs = [\"-c\", \"ulimit -Sn > soft; echo up; exec sleep 1000\"]\n\
         readiness = { kind = \"log_line\", pattern = \"up\" }\ncgroup = false\n",
    );
    let project = Project::new(&text);
    let up = project.run_after("ulimit -Sn 64", "up --detach");
    assert!(
        up.status.success(),
        "up --detach failed under a soft limit of 64"
    );
    assert_eq!(project.started(), 40);
    let soft = std::fs::read_to_string(project.path("soft")).unwrap();
    assert_eq!(soft.trim(), "64", "the service got the raised limit");

    let status = project.status();
    let supervisor = status["supervisor"]["pid"].as_u64().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{supervisor}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields[3], fields[4],
        "soft = hard in the supervisor: {line}"
    );
    for service in status["services"].as_array().unwrap() {
        assert_eq!(service["state"], "running", "{service}");
        assert!(service["last_start_error"].is_null(), "{service}");
        let kind = &service["tree"]["kind"];
        if service["name"] == "probe" {
            assert_eq!(kind, "process_group", "{service}");
            assert_eq!(service["tree"]["reason"], "its spec turns cgroups off");
        } else {
            assert!(kind == "cgroup" || kind == "process_group", "{service}");
        }
    }
    let pidfds = std::fs::read_dir(format!("/proc/{supervisor}/fd"))
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("pidfd"))
        })
        .count();
    let all = std::fs::read_dir(format!("/proc/{supervisor}/fd"))
        .unwrap()
        .count();
    println!("the supervisor of 41 services holds {all} descriptors, {pidfds} pidfds");
    // One per service, and the cgroup keeper's.
    assert!(pidfds <= 42, "{pidfds} pidfds for 41 services");
}

/// The cgroup v2 directory of this test process, where it may create a child (root with a
/// writable cgroup v2), or why not.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or("cgroup v2 is not mounted")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup v2 membership")?;
    let dir = mount.join(own.trim().trim_start_matches('/'));
    let probe = dir.join(format!("rp-probe-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .map_err(|e| format!("cannot create a cgroup in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_dir(&probe);
    Ok(dir)
}

/// Every process in cgroup `dir` and below.
fn cgroup_pids(dir: &std::path::Path) -> Vec<u64> {
    let mut pids: Vec<u64> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&entry.path()));
        }
    }
    pids
}

/// Issue 30: on a machine with cgroup v2, a service whose cgroup cannot be created (the
/// parent cgroup allows one descendant: the supervisor's own directory) does not start in
/// its process group instead: the start fails with `StartError::Cgroup`, `up --detach`
/// prints the whole cause, and afterwards nothing runs and neither the manifest, the
/// socket nor the lock file is left (the log is).
#[test]
fn a_cgroup_that_cannot_be_created_fails_the_start_and_up_says_why() {
    let parent = match own_cgroup_dir() {
        Ok(dir) => dir,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    if Command::new("python3").arg("--version").output().is_err() {
        println!("SKIPPED: python3 (for a pidfd wait) is missing");
        return;
    }
    let limited = parent.join(format!("rp-test-limited-{}", std::process::id()));
    std::fs::create_dir(&limited).unwrap();
    std::fs::write(limited.join("cgroup.max.descendants"), "1").unwrap();
    let project = Project::new(&many_sleepers(3));
    let setup = format!("echo $$ > {}", limited.join("cgroup.procs").display());
    let up = project.run_after(&setup, "up --detach");
    let stderr = String::from_utf8_lossy(&up.stderr).into_owned();

    // Whatever the outcome, nothing of it may survive: the supervisor, its keeper and the
    // services all lived in `limited`; each exit is awaited through a pidfd.
    for pid in cgroup_pids(&limited) {
        wait_exited(pid).unwrap();
    }
    for entry in std::fs::read_dir(&limited).unwrap().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    std::fs::remove_dir(&limited).unwrap();

    assert!(!up.status.success(), "up --detach must fail");
    assert!(
        stderr.contains("failed to start: cannot create a cgroup for this instance in")
            && stderr.contains("Resource temporarily unavailable"),
        "the whole cause: {stderr}"
    );
    assert!(stderr.contains("nothing is left running"), "{stderr}");
    let left = project.state_files();
    assert_eq!(left, vec!["supervisor.log".to_owned()], "{left:?}");
    let log = std::fs::read_dir(project.path("run").join("running-process"))
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_to_string(d.path().join("supervisor.log")).unwrap())
        .collect::<String>();
    assert!(
        log.contains("start failed: cannot create a cgroup"),
        "{log}"
    );
    assert!(
        !log.contains("fallback"),
        "no process-group fallback: {log}"
    );
}

/// Issue 30: where the machine gives the supervisor no cgroup v2 to write to (here: it
/// runs as `nobody`, whose own cgroup is root's), the documented fallback is chosen once,
/// announced once (one `fallback for every service` event in the log, with the reason),
/// and every status row says its tree is tracked by process group, and why.
#[test]
fn without_cgroups_for_the_supervisor_the_fallback_is_announced_once_and_shown_per_service() {
    if !rustix::process::geteuid().is_root()
        || Command::new("setpriv").arg("--version").output().is_err()
    {
        println!("SKIPPED: needs root and setpriv (to run the supervisor as nobody)");
        return;
    }
    let project = Project::new(&many_sleepers(3));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(project.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = "exec setpriv --reuid 65534 --regid 65534 --clear-groups";
    let run = |args: &str| {
        let script = format!("{as_nobody} {BIN} {args}");
        let child = Command::new("sh")
            .args(["-c", &script])
            .current_dir(project.dir.path())
            .env("NO_COLOR", "1")
            .env("XDG_RUNTIME_DIR", project.path("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = wait_output(child);
        println!(
            "$ {script}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let up = run("up --detach");
    let status = run("status --json");
    let stop = run("stop");
    assert!(up.status.success() && status.status.success() && stop.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let rows = status["services"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let mut reasons = Vec::new();
    for row in rows {
        assert_eq!(row["tree"]["kind"], "process_group", "{row}");
        reasons.push(row["tree"]["reason"].as_str().unwrap().to_owned());
    }
    assert!(
        reasons.iter().all(|r| r == &reasons[0] && !r.is_empty()),
        "{reasons:?}"
    );
    let log = std::fs::read_dir(project.path("run").join("running-process"))
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_to_string(d.path().join("supervisor.log")).unwrap())
        .collect::<String>();
    let warned = log
        .lines()
        .filter(|l| l.starts_with("warn: fallback for every service"))
        .count();
    assert_eq!(warned, 1, "one tracing warning: {log}");
    let announced: Vec<&str> = log
        .lines()
        // The event's line (`HH:MM:SS.mmm s0: fallback ... (REASON)`), not the warning's.
        .filter(|l| l.contains(": fallback for every service: process groups instead of cgroups ("))
        .collect();
    assert_eq!(announced.len(), 1, "announced once: {log}");
    assert!(announced[0].contains(&reasons[0]), "{log}");
}

/// Issue 30: a start that fails after start-up (the service exits before it is ready) is
/// in `status --json` with its whole cause, `last_start_error`, and in the table's state.
#[test]
fn status_carries_the_last_start_error_with_its_cause() {
    let project = Project::new(
        r#"
[services.flaky]
program = "sh"
args = ["-c", "if [ -e started ]; then echo no second start >&2; exit 3; fi; touch started; echo up; exec sleep 1000"]
readiness = { kind = "log_line", pattern = "up" }
restart = { kind = "permanent", backoff = { initial_ms = 600000 } }
"#,
    );
    assert!(project.run(&["up", "--detach"]).status.success());
    assert!(Project::service(&project.status(), "flaky")["last_start_error"].is_null());
    let mut events = project.follow_events();
    assert!(project.run(&["restart", "flaky"]).status.success());
    events.wait_for("flaky: start failed");
    drop(events);
    let status = project.status();
    let flaky = Project::service(&status, "flaky");
    let error = flaky["last_start_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exited before it was ready (exit code 3)")
            && error.contains("no second start"),
        "{flaky}"
    );
    let table = String::from_utf8_lossy(&project.run(&["status"]).stdout).into_owned();
    assert!(table.contains("exit code 3"), "{table}");
}

#[test]
fn status_shows_what_each_service_uses() {
    let project = Project::new(
        r#"
[group]
name = "usage"

[services.busy]
program = "sh"
args = ["-c", "while :; do :; done"]

[services.holder]
program = "python3"
args = ["-c", "import time\nb = b'x' * (48 << 20)\nprint('holding', flush=True)\ntime.sleep(3600)"]
readiness = { kind = "log_line", pattern = "holding" }
"#,
    );
    assert!(project.run(&["up", "--detach"]).status.success());
    // Until the busy loop has run for a tenth of a second of CPU (each status a new
    // sample; the share is over the time since the previous one).
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        let status = project.status();
        let busy = &Project::service(&status, "busy")["usage"];
        if busy["cpu_usec"].as_u64().unwrap_or(0) >= 100_000 {
            break status;
        }
        assert!(Instant::now() < deadline, "busy never used CPU: {status}");
    };
    let busy = &Project::service(&status, "busy")["usage"];
    let holder = &Project::service(&status, "holder")["usage"];
    println!("busy: {busy}\nholder: {holder}");
    assert!(busy["cpu_percent"].as_f64().unwrap() > 10.0, "{busy}");
    assert!(busy["tasks"].as_u64().unwrap() >= 1);
    assert!(
        holder["memory_bytes"].as_u64().unwrap() >= 40 << 20,
        "{holder}"
    );
    assert!(holder["sampled_at_unix_ms"].as_u64().is_some());
    assert!(
        ["cgroup", "cgroup_and_proc", "proc"].contains(&holder["source"].as_str().unwrap()),
        "{holder}"
    );

    let table = project.run(&["status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    let header = text.lines().next().unwrap();
    assert!(header.contains("CPU") && header.contains("MEM"), "{text}");
    let row = text.lines().find(|l| l.starts_with("holder")).unwrap();
    assert!(row.contains('M') && row.contains('%'), "{row}");
}
