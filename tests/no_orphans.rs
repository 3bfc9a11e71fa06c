//! A supervisor that is SIGKILLed leaves no child behind: its daemons die with it
//! (`PR_SET_PDEATHSIG`), even though nothing got the chance to stop them.

#![cfg(target_os = "linux")]

mod support;

use std::process::Stdio;

use support::{wait_gone, within};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn killing_the_supervising_process_kills_its_daemons() {
    let mut supervisor = tokio::process::Command::new(support::example_path("supervise"))
        .arg("--hold")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(supervisor.stdout.take().unwrap()).lines();
    let pids: Vec<u32> = within("the group is ready", async {
        loop {
            let line = lines.next_line().await.unwrap().expect("supervisor output");
            if let Some(rest) = line.strip_prefix("pids ") {
                break rest
                    .split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect();
            }
        }
    })
    .await;
    assert_eq!(pids.len(), 3, "three daemons: {pids:?}");
    for &pid in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} runs"
        );
    }

    supervisor.kill().await.unwrap(); // SIGKILL: no cleanup code runs in the supervisor
    for pid in pids {
        wait_gone(pid).await;
    }
}
