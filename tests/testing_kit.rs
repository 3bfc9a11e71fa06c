//! The testing kit, tested with the kit: a test as a user writes it, and the leak checks
//! (after a drop, a panicking test, a SIGKILLed test process).

#![cfg(any(target_os = "linux", windows))]

mod support;

#[cfg(unix)]
use std::path::PathBuf;
#[cfg(target_os = "linux")]
use std::process::Stdio;

use running_process::command::{CommandSpec, Readiness};
use running_process::testing::EphemeralBackend;
#[cfg(unix)]
use support::wait_gone;
use support::within;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn demo_backend() -> EphemeralBackend {
    EphemeralBackend::start(|dir| {
        CommandSpec::new("demo", support::demo_daemon_path())
            .args(["--endpoint", &dir.join("d.sock").display().to_string()])
            .args(["--manifest", &dir.join("d.json").display().to_string()])
            .readiness(Readiness::Manifest {
                path: dir.join("d.json"),
            })
    })
    .await
    .expect("the demo daemon starts")
}

/// How a user tests their own daemon with the kit.
#[tokio::test]
async fn a_test_written_with_the_kit() {
    let backend = demo_backend().await;
    backend
        .handle()
        .ping(support::DEADLINE)
        .await
        .expect("pong");
    let (read, mut write) =
        tokio::io::split(backend.handle().connect().await.unwrap().into_inner());
    write.write_all(b"ping the echo\n").await.unwrap();
    let mut line = String::new();
    within("echo", BufReader::new(read).read_line(&mut line))
        .await
        .unwrap();
    assert_eq!(line, "ping the echo\n");
}

/// Unix only for now: on Windows (Wine 8) the directory outlives the drop, its
/// `backend.log` still open in this process (see the README's platform section).
#[cfg(unix)]
#[tokio::test]
async fn dropping_kills_the_backend_and_removes_its_directory() {
    let backend = demo_backend().await;
    let (pid, dir) = (backend.handle().pid(), backend.dir().to_owned());
    #[cfg(unix)]
    assert!(dir.join("d.sock").exists());
    assert!(dir.join("d.json").exists());
    drop(backend);
    assert!(!dir.exists(), "directory removed");
    wait_gone(pid).await;
}

/// Unix only for now: on Windows (Wine 8) the directory outlives the drop, its
/// `backend.log` still open in this process (see the README's platform section).
#[cfg(unix)]
#[tokio::test]
async fn a_panicking_test_leaves_nothing_running() {
    let (tx, rx) = tokio::sync::oneshot::channel::<(u32, PathBuf, PathBuf)>();
    let test = tokio::spawn(async move {
        let backend = demo_backend().await;
        let facts = (
            backend.handle().pid(),
            backend.dir().to_owned(),
            backend.kept_log_path(),
        );
        tx.send(facts).unwrap();
        panic!("a failing assertion in a user's test");
    });
    let (pid, dir, kept) = rx.await.unwrap();
    assert!(test.await.unwrap_err().is_panic());
    assert!(!dir.exists(), "directory removed during the unwind");
    wait_gone(pid).await;
    // The output the failure message names outlives the directory.
    assert!(kept.is_file(), "{} was not kept", kept.display());
    assert!(!kept.starts_with(&dir));
    std::fs::remove_file(&kept).unwrap();
}

/// Linux: the backend dies with the killed test process by `PR_SET_PDEATHSIG`, which
/// Windows has no counterpart of here (a job object would be).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_sigkilled_test_process_leaves_nothing_running() {
    let mut test_process = tokio::process::Command::new(support::example_path("ephemeral_backend"))
        .arg("--hold")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(test_process.stdout.take().unwrap()).lines();
    let line = within("backend up", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let pid: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    test_process.kill().await.unwrap(); // SIGKILL (TerminateProcess): no destructor runs
    wait_gone(pid).await;
    // A killed process cannot remove its directory; the next process to use the kit
    // sweeps the directories whose creator is dead.
    let dir = PathBuf::from(line.split_whitespace().nth(3).unwrap());
    assert!(dir.exists(), "left behind by the killed process");
    let next = within(
        "next run of the kit",
        tokio::process::Command::new(support::example_path("ephemeral_backend"))
            .stdout(Stdio::null())
            .status(),
    )
    .await
    .unwrap();
    assert!(next.success());
    assert!(!dir.exists(), "swept by the next run");
}
