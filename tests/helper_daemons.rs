//! `examples/helper_daemons.rs`, run twice at once over one shared directory: exactly one
//! run spawns the shared daemon and the other adopts the same one; both start their private
//! helpers in order, stop them in reverse order and exit 0.

#![cfg(any(target_os = "linux", windows))]

mod support;

use std::process::{Output, Stdio};

use running_process::protocol::CacheManifest;
use running_process::BackendHandle;
use support::{wait_gone, within};

/// (pid, "spawned" or "adopted") from the run's `shared daemon pid N how` line.
fn shared_line(text: &str) -> (u32, String) {
    let marker = "shared daemon pid ";
    let line = text
        .lines()
        .find_map(|line| line.split_once(marker).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no `{marker}` line in:\n{text}"));
    let mut words = line.split_whitespace();
    let pid = words.next().and_then(|w| w.parse().ok());
    let how = words.next().map(str::to_owned);
    match (pid, how) {
        (Some(pid), Some(how)) => (pid, how),
        _ => panic!("malformed `{line}` in:\n{text}"),
    }
}

/// Position of the first line that contains all of `parts`.
fn position(text: &str, parts: &[&str]) -> usize {
    text.lines()
        .position(|line| parts.iter().all(|part| line.contains(part)))
        .unwrap_or_else(|| panic!("no line with {parts:?} in:\n{text}"))
}

fn check_run(output: &Output) -> (u32, String) {
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "run failed ({}): {text}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        position(&text, &["app/store", "ready (pid"])
            < position(&text, &["app/indexer", "ready (pid"]),
        "store is ready before indexer starts:\n{text}"
    );
    assert!(
        position(&text, &["app/indexer", "stopped"]) < position(&text, &["app/store", "stopped"]),
        "indexer stops first:\n{text}"
    );
    position(&text, &["left running"]);
    shared_line(&text)
}

#[tokio::test]
async fn two_runs_at_once_share_one_daemon_and_stop_their_helpers_in_reverse_order() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shared");
    let binary = support::example_path("helper_daemons");
    // Output to files, not pipes: on Windows the shared daemon a run spawns inherits that
    // run's handles, and would keep a pipe open (and its reader waiting) until it exits.
    let outputs = tempfile::tempdir().unwrap();
    let run = |n: u32| {
        let path = |ext: &str| outputs.path().join(format!("{n}.{ext}"));
        let (out, err) = (path("out"), path("err"));
        let mut command = tokio::process::Command::new(&binary);
        command
            .args(["--seconds", "1", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .kill_on_drop(true);
        async move {
            let status = command.status().await?;
            Ok::<_, std::io::Error>(Output {
                status,
                stdout: std::fs::read(out)?,
                stderr: std::fs::read(err)?,
            })
        }
    };
    let (first, second) = within("both runs finish", futures::future::join(run(1), run(2))).await;
    let mut runs = [
        check_run(&first.expect("first run")),
        check_run(&second.expect("second run")),
    ];
    runs.sort_by(|a, b| a.1.cmp(&b.1));
    let [(adopted_pid, adopted), (spawned_pid, spawned)] = runs;
    assert_eq!(
        (adopted.as_str(), spawned.as_str()),
        ("adopted", "spawned"),
        "exactly one run spawns"
    );
    assert_eq!(adopted_pid, spawned_pid, "both use the same daemon");

    // It outlives both runs (until its 30 s idle timeout, which also cleans up after a
    // failed test); stop it through a verified handle.
    let manifest = CacheManifest::read(dir.join("cache.json"))
        .await
        .unwrap()
        .expect("the shared daemon's manifest");
    let daemon = BackendHandle::try_from_manifest(&manifest)
        .await
        .unwrap()
        .expect("the shared daemon, verified");
    assert_eq!(daemon.pid(), spawned_pid);
    daemon.stop(support::DEADLINE).await.unwrap();
    wait_gone(spawned_pid).await;
}
