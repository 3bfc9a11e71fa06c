//! `testing::EphemeralStack`: Debian's redis and a Python HTTP server that depends on it,
//! started for one test on ports of their own (`tests/fixtures/stack.toml`); killed,
//! frozen and restarted from the test; and gone when it is dropped, also when the test
//! panics (its logs kept beside it) and on both flavours of `#[tokio::test]`.
#![cfg(target_os = "linux")]

mod support;

use std::path::{Path, PathBuf};

use running_process::supervision::EventKind;
use running_process::testing::{EphemeralStack, StackError};
use support::daemons::{self, redis_ping};
use support::{next_matching, until, wait_gone, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stack.toml");

/// Whether redis and python3 are here; prints `SKIPPED` when not.
fn have_daemons() -> bool {
    for program in ["redis-server", "python3"] {
        if daemons::find(program).is_none() {
            daemons::skip(&format!("{program} is not installed"));
            return false;
        }
    }
    true
}

/// `GET /path` from the web server: the status line.
async fn http_get(port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    reply.lines().next().unwrap_or_default().to_owned()
}

fn pid_of(stack: &EphemeralStack, service: &str) -> u32 {
    stack
        .stack()
        .status()
        .into_iter()
        .find(|row| row.name == service)
        .and_then(|row| row.pid)
        .unwrap_or_else(|| panic!("{service} has no pid"))
}

/// The state letter of `/proc/PID/stat` (`T` once stopped).
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_a_web_server_for_one_test() {
    if !have_daemons() {
        return;
    }
    let stack = within("the stack is ready", EphemeralStack::start(STACK))
        .await
        .unwrap();
    let (redis, web) = (stack.port("redis").unwrap(), stack.port("web").unwrap());
    assert_ne!(redis, web);
    assert!(redis_ping(redis).await, "redis answers on its own port");
    // What Debian's redis uses, read from its tree (cgroup, else `/proc`).
    let rows = stack.stack().sample_usage().await;
    let usage = rows
        .iter()
        .find(|row| row.name == "redis")
        .and_then(|row| row.usage.clone())
        .expect("redis's usage");
    assert!(usage.memory_bytes.unwrap_or(0) > 0, "{usage:?}");
    assert!(
        usage.cpu_usec.is_some() && usage.tasks.unwrap_or(0) >= 1,
        "{usage:?}"
    );
    std::fs::write(stack.dir().join("hello.txt"), "hi").unwrap();
    assert!(http_get(web, "/hello.txt").await.contains("200"));
    let env = stack.env();
    assert!(env.contains(&("RUNNING_PROCESS_PORT_REDIS".into(), redis.to_string())));
    assert!(env.contains(&(
        "RUNNING_PROCESS_RUN_DIR".into(),
        stack.dir().display().to_string()
    )));

    // Killed: the set restarts it, on the same port.
    let first = pid_of(&stack, "redis");
    let mut events = stack.stack().events();
    stack.kill("redis").unwrap();
    next_matching(&mut events, "redis is ready again", |e| {
        &*e.service == "redis" && matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    let second = pid_of(&stack, "redis");
    assert_ne!(first, second);
    assert!(redis_ping(redis).await, "the restarted redis answers");

    // Frozen: there, but answering nothing; thawed: answering again.
    stack.freeze("redis").unwrap();
    // No event tells a process's stop to anyone but its parent: look at its state.
    until("the frozen redis stops", || state_of(second) == Some('T')).await;
    assert!(!redis_ping(redis).await, "a frozen redis answers nothing");
    stack.thaw("redis").unwrap();
    assert!(redis_ping(redis).await, "a thawed redis answers");

    // Restart waits until it is ready again.
    let web_pid = pid_of(&stack, "web");
    within("web restarts", stack.restart("web")).await.unwrap();
    assert_ne!(pid_of(&stack, "web"), web_pid);
    assert!(http_get(web, "/hello.txt").await.contains("200"));
    assert!(matches!(
        stack.kill("nosuch"),
        Err(StackError::UnknownService(_))
    ));
    assert!(stack
        .logs("redis")
        .await
        .contains("Ready to accept connections"));

    let dir = stack.dir().to_owned();
    let web_pid = pid_of(&stack, "web");
    drop(stack);
    wait_gone(second).await;
    wait_gone(web_pid).await;
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn two_stacks_of_one_file_at_once_on_a_current_thread_runtime() {
    if !have_daemons() {
        return;
    }
    let (a, b) = within("both stacks are ready", async {
        tokio::join!(EphemeralStack::start(STACK), EphemeralStack::start(STACK))
    })
    .await;
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port("redis"), b.port("redis"));
    assert_ne!(a.dir(), b.dir());
    assert!(redis_ping(a.port("redis").unwrap()).await);
    assert!(redis_ping(b.port("redis").unwrap()).await);
    let pids = [pid_of(&a, "redis"), pid_of(&b, "redis"), pid_of(&a, "web")];
    let dirs = [a.dir().to_owned(), b.dir().to_owned()];
    drop((a, b));
    for pid in pids {
        wait_gone(pid).await;
    }
    for dir in dirs {
        assert!(!dir.exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_leaves_nothing_but_its_kept_logs() {
    if !have_daemons() {
        return;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<(PathBuf, u32, u32)>();
    let test = tokio::spawn(async move {
        let stack = EphemeralStack::start(STACK).await.unwrap();
        let facts = (
            stack.dir().to_owned(),
            pid_of(&stack, "redis"),
            pid_of(&stack, "web"),
        );
        tx.send(facts).unwrap();
        panic!("a test that fails on purpose, with its stack alive");
    });
    let (dir, redis, web) = within("the stack is ready", rx).await.unwrap();
    let joined = test.await;
    assert!(joined.unwrap_err().is_panic());
    wait_gone(redis).await;
    wait_gone(web).await;
    assert!(!dir.exists(), "{} left behind", dir.display());
    let kept = dir.with_extension("logs");
    let log = std::fs::read_to_string(kept.join("redis.log")).unwrap();
    assert!(log.contains("Ready to accept connections"), "{log}");
    std::fs::remove_dir_all(&kept).unwrap();
}

#[tokio::test]
async fn a_stack_that_cannot_start_says_which_service_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.toml");
    std::fs::write(
        &file,
        r#"
[services.broken]
program = "sh"
args = ["-c", "echo no config at /etc/broken.conf; exit 3"]
readiness = { kind = "tcp", address = "127.0.0.1:${port:broken}" }
restart = { kind = "temporary" }
"#,
    )
    .unwrap();
    let error = within("the start fails", EphemeralStack::start(&file))
        .await
        .unwrap_err();
    let StackError::NotReady {
        service,
        last_lines,
        kept_logs,
        ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(service.as_deref(), Some("broken"));
    assert!(
        last_lines.iter().any(|l| l.contains("no config")),
        "{error}"
    );
    let kept = kept_logs.clone().unwrap();
    assert!(error.to_string().contains("no config"), "{error}");
    remove(&kept);
}

/// A file of one service, `one`, that sleeps; in a temporary directory.
fn sleeper_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.toml");
    std::fs::write(
        &file,
        "[services.one]\nprogram = \"sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\n",
    )
    .unwrap();
    (dir, file)
}

fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn on_event_sees_the_stack_from_its_very_start() {
    let (_dir, file) = sleeper_file();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stack = EphemeralStack::builder(&file)
        .on_event(move |event| {
            let _ = tx.send(format!("{}: {}", event.service, event.kind));
        })
        .start()
        .await
        .unwrap();
    let mut seen = Vec::new();
    within("the start's events", async {
        while !seen.iter().any(|e: &String| e.starts_with("one: ready")) {
            seen.push(rx.recv().await.unwrap());
        }
    })
    .await;
    assert!(seen[0].contains("starting"), "{seen:?}");
    drop(stack);
}

/// A test whose future is cancelled (a timeout around it, an aborted task) drops its
/// stack there: every service dies and the directory goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_test_leaves_nothing() {
    let (_dir, file) = sleeper_file();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let stack = EphemeralStack::start(&file).await.unwrap();
        tx.send((stack.dir().to_owned(), pid_of(&stack, "one")))
            .unwrap();
        std::future::pending::<()>().await;
        drop(stack);
    });
    let (stack_dir, pid) = within("the stack is ready", rx).await.unwrap();
    test.abort();
    assert!(test.await.unwrap_err().is_cancelled());
    wait_gone(pid).await;
    assert!(!stack_dir.exists());
}
