//! Smoke checks of `support::daemons` against the real Debian daemons: each test starts one
//! daemon with plain `tokio::process::Command` (not the crate's supervisor) using the
//! helpers' arguments on a free port, waits until it answers, checks what the helpers'
//! documentation claims (readiness line, sd_notify, processes), stops it and checks that
//! nothing is left. A missing program prints `SKIPPED: ...` and passes.
//!
//! The wait polls the daemon's round trip every 50 ms up to 30 s: acceptable in a smoke
//! check of the helpers, not in the crate's own tests (which wait for events).

#![cfg(target_os = "linux")]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use support::daemons::{self, skip};
use support::wait_gone;
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

const READY_DEADLINE: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(50);

/// SIGKILLs the process group of the test's child (made with `process_group(0)`) when
/// dropped, so that a failing test leaves no daemon behind, nginx workers included. Dropped
/// before the child (declared after it), so the leader is not reaped yet and the group id
/// cannot have been reused; a test disarms it once it has reaped the leader itself.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|pgid| Pid::from_raw(pgid as i32)) {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }
}

/// Spawn `program args` in its own process group, stdout and stderr to files in `dir`.
fn spawn(program: &Path, args: &[impl AsRef<std::ffi::OsStr>], dir: &Path) -> (Child, GroupGuard) {
    spawn_with(Command::new(program), args, dir)
}

fn spawn_with(
    mut command: Command,
    args: &[impl AsRef<std::ffi::OsStr>],
    dir: &Path,
) -> (Child, GroupGuard) {
    let stdout = std::fs::File::create(dir.join("stdout.log")).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the daemon");
    let pid = child.id().expect("pid");
    (child, GroupGuard(Some(pid)))
}

fn log(dir: &Path, stream: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{stream}.log"))).unwrap_or_default()
}

/// Poll `answers` every 50 ms until it is true, failing if `child` exits first or 30 s
/// pass (with the daemon's output in the message).
async fn wait_answering<F, Fut>(what: &str, child: &mut Child, dir: &Path, mut answers: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + READY_DEADLINE;
    loop {
        if answers().await {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{what} exited ({status}) before answering\nstdout:\n{}\nstderr:\n{}",
                log(dir, "stdout"),
                log(dir, "stderr")
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not answering within {READY_DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
            log(dir, "stdout"),
            log(dir, "stderr")
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Send `signal` to the child and return its exit code (`None`: killed by a signal).
async fn stop(child: &mut Child, signal: Signal) -> Option<i32> {
    let pid = Pid::from_raw(child.id().expect("not reaped yet") as i32).unwrap();
    kill_process(pid, signal).unwrap();
    support::within("the daemon exits", child.wait())
        .await
        .unwrap()
        .code()
}

/// A datagram socket at `path` for `$NOTIFY_SOCKET`, and the text of every datagram
/// received within a short while after readiness (the daemon has sent them by then).
async fn notify_messages(socket: &UnixDatagram) -> Vec<String> {
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(len)) =
        tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
    {
        messages.push(String::from_utf8_lossy(&buf[..len]).into_owned());
    }
    messages
}

fn said_ready(messages: &[String]) -> bool {
    messages
        .iter()
        .any(|m| m.lines().any(|line| line == "READY=1"))
}

#[tokio::test]
async fn redis_smoke() {
    let Some(redis) = daemons::find("redis-server") else {
        return skip("redis-server is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = daemons::free_port();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut command = Command::new(&redis);
    command.env("NOTIFY_SOCKET", &notify_path);
    let (mut child, mut guard) =
        spawn_with(command, &daemons::redis_args(port, dir.path()), dir.path());
    wait_answering("redis", &mut child, dir.path(), || {
        daemons::redis_ping(port)
    })
    .await;

    assert!(
        said_ready(&notify_messages(&notify).await),
        "redis sent READY=1"
    );
    assert!(log(dir.path(), "stdout").contains("Ready to accept connections"));
    let pid = child.id().unwrap();
    assert_eq!(
        daemons::processes_with_cmdline_containing(&format!("127.0.0.1:{port}")),
        vec![pid],
        "redis is one process, its argv rewritten to `redis-server 127.0.0.1:PORT`"
    );
    assert_eq!(stop(&mut child, Signal::TERM).await, Some(0));
    guard.disarm();
    assert!(daemons::processes_with_cmdline_containing(&format!("127.0.0.1:{port}")).is_empty());
}

#[tokio::test]
async fn memcached_smoke() {
    let Some(memcached) = daemons::find("memcached") else {
        return skip("memcached is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = daemons::free_port();
    let args = daemons::memcached_args(port);
    let (mut child, mut guard) = spawn(&memcached, &args, dir.path());
    wait_answering("memcached", &mut child, dir.path(), || {
        daemons::memcached_roundtrip(port)
    })
    .await;

    // A second instance on the same port fails at once.
    let second = Command::new(&memcached)
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let second = support::within("the second memcached exits", second)
        .await
        .unwrap();
    assert_eq!(second.status.code(), Some(71), "EX_OSERR for a taken port");
    assert!(String::from_utf8_lossy(&second.stderr).contains("Address already in use"));

    assert_eq!(stop(&mut child, Signal::TERM).await, Some(0));
    guard.disarm();
    assert!(daemons::processes_with_cmdline_containing(&format!("-p {port} ")).is_empty());
}

#[tokio::test]
async fn nginx_smoke() {
    let Some(nginx) = daemons::find("nginx") else {
        return skip("nginx is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = daemons::free_port();
    let config = daemons::nginx_config(dir.path(), port, 2);
    let (mut child, mut guard) = spawn(
        &nginx,
        &daemons::nginx_args(dir.path(), &config),
        dir.path(),
    );
    wait_answering("nginx", &mut child, dir.path(), || {
        daemons::nginx_get_index(port)
    })
    .await;

    assert!(log(dir.path(), "stderr").contains("start worker processes"));
    let master = child.id().unwrap();
    let workers = daemons::children_of(master);
    assert_eq!(workers.len(), 2, "two workers: {workers:?}");
    let ours: Vec<u32> = daemons::processes_of_exe(&nginx)
        .into_iter()
        .filter(|&pid| daemons::ppid_pgid_sid(pid).is_some_and(|(_, pgid, _)| pgid == master))
        .collect();
    let mut expected = workers.clone();
    expected.push(master);
    expected.sort_unstable();
    assert_eq!(
        ours, expected,
        "master and workers share the master's process group"
    );
    assert_eq!(
        daemons::processes_with_cmdline_containing(&config.display().to_string()),
        vec![master],
        "only the master's argv names the config (workers show `nginx: worker process`)"
    );

    assert_eq!(stop(&mut child, Signal::TERM).await, Some(0));
    guard.disarm();
    for worker in workers {
        wait_gone(worker).await;
    }
}

#[tokio::test]
async fn nginx_reports_a_bad_directive_on_stderr() {
    let Some(nginx) = daemons::find("nginx") else {
        return skip("nginx is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let config = daemons::nginx_config(dir.path(), daemons::free_port(), 1);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("no_such_directive on;\n{text}")).unwrap();
    let output = Command::new(&nginx)
        .args(daemons::nginx_args(dir.path(), &config))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = support::within("nginx exits", output).await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[emerg]") && stderr.contains("unknown directive \"no_such_directive\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn postgres_smoke() {
    let Some(postgres) = daemons::postgres_program("postgres") else {
        return skip("postgres is not installed");
    };
    if daemons::postgres_program("initdb").is_none() || daemons::postgres_program("psql").is_none()
    {
        return skip("initdb or psql is not installed");
    }
    if daemons::is_root() && daemons::user_ids(daemons::POSTGRES_USER).is_none() {
        return skip("running as root and there is no `postgres` user to run postgres as");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = daemons::postgres_cluster(dir.path());
    let sockdir = daemons::postgres_socket_dir(dir.path());
    let port = daemons::free_port();

    // The notify socket must be writable by the user postgres runs as.
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    if let Some((uid, gid)) = daemons::postgres_ids() {
        rustix::fs::chown(
            &notify_path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .unwrap();
    }
    let (program, args) =
        daemons::as_postgres_user(&postgres, daemons::postgres_args(&data, &sockdir, port));
    let mut command = Command::new(program);
    command.env("NOTIFY_SOCKET", &notify_path);
    let (mut child, mut guard) = spawn_with(command, &args, dir.path());
    wait_answering("postgres", &mut child, dir.path(), || {
        daemons::postgres_select_1(port, &sockdir)
    })
    .await;

    assert!(
        said_ready(&notify_messages(&notify).await),
        "postgres sent READY=1"
    );
    assert!(log(dir.path(), "stderr").contains("database system is ready to accept connections"));
    let postmaster = child.id().unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{postmaster}/exe")).unwrap(),
        std::fs::canonicalize(&postgres).unwrap(),
        "the spawned pid is the postmaster (setpriv exec()s)"
    );
    let children = daemons::children_of(postmaster);
    assert!(!children.is_empty());
    for &pid in &children {
        if let Some((_, pgid, sid)) = daemons::ppid_pgid_sid(pid) {
            assert_eq!(
                (pgid, sid),
                (pid, pid),
                "each postgres child is a session leader"
            );
        }
    }

    // SIGINT: fast shutdown, exit code 0, the children go first.
    assert_eq!(stop(&mut child, Signal::INT).await, Some(0));
    guard.disarm();
    for pid in children {
        wait_gone(pid).await;
    }
    assert!(daemons::processes_with_cmdline_containing(&data.display().to_string()).is_empty());
}
