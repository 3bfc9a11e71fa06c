//! One daemon by hand, step by step: start the demo daemon (a plain child process, no
//! supervisor), read its manifest, verify it from there as any other process would, see a
//! forged manifest refused, talk to it, watch it, stop it. (The README's main job, a
//! supervised group, is `cargo run --example supervise`.)
//!
//! ```text
//! cargo run --example probe_demo
//! ```
//!
//! Runs on built-in defaults: everything lives in a temporary directory that is removed at
//! the end.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use running_process::handle::BackendHandle;
use running_process::protocol::CacheManifest;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(30);

/// How `BackendHandle::stop` asks this platform's daemon to stop (`GracefulStop::Auto`).
#[cfg(target_os = "linux")]
const GRACEFUL_STOP: &str = "SIGTERM through the pidfd";
#[cfg(all(unix, not(target_os = "linux")))]
const GRACEFUL_STOP: &str = "SIGTERM by pid: no pidfd here";
#[cfg(windows)]
const GRACEFUL_STOP: &str = "a shutdown request over its endpoint: no SIGTERM here";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let daemon_bin = common::demo_daemon_binary()?;
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("run/demo.sock");
    let manifest_path = dir.path().join("run/demo.json");

    println!("1. starting {}", daemon_bin.display());
    let mut child = Command::new(&daemon_bin)
        .arg("--endpoint")
        .arg(&socket)
        .arg("--manifest")
        .arg(&manifest_path)
        .args(["--service", "demo-cache", "--version", "1.0.0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let ready = tokio::time::timeout(DEADLINE, stdout.next_line()).await??;
    println!("   daemon says: {}", ready.unwrap_or_default());

    let manifest = CacheManifest::read(&manifest_path)
        .await?
        .ok_or("no manifest written")?;
    let claim = manifest
        .current_daemon
        .clone()
        .ok_or("manifest records no daemon")?;
    println!(
        "2. manifest: {} {} pid {} exe {} sha256 {}…",
        manifest.service_name,
        manifest.service_version,
        claim.pid,
        claim.exe_path.display(),
        &claim.exe_sha256_hex()[..16]
    );

    let started = Instant::now();
    let handle = BackendHandle::try_from_manifest(&manifest)
        .await?
        .ok_or("no daemon")?;
    let cold = started.elapsed();
    let started = Instant::now();
    let again = BackendHandle::try_from_manifest(&manifest)
        .await?
        .ok_or("no daemon")?;
    let warm = started.elapsed();
    println!(
        "3. verified: cold probe {cold:?} (hashes the binary), warm probe {warm:?} (digest cached)"
    );
    drop(again);

    let mut forged = manifest.clone();
    if let Some(daemon) = forged.current_daemon.as_mut() {
        daemon.start_time += 1; // what a recycled PID looks like
    }
    match BackendHandle::try_from_manifest(&forged).await {
        Err(why) => println!("4. a forged manifest is refused: {why}"),
        Ok(_) => return Err("a forged manifest was accepted".into()),
    }

    let watcher = {
        let changes = handle.liveness();
        tokio::spawn(async move {
            let mut changes = changes;
            while let Some(change) = changes.next().await {
                println!("   liveness: {change:?}");
            }
        })
    };

    let rtt = handle.ping(DEADLINE).await?;
    println!("5. ping answered in {rtt:?}");
    let (read, mut write) = tokio::io::split(handle.connect().await?.into_inner());
    write.write_all(b"hello, daemon\n").await?;
    let mut echoed = String::new();
    BufReader::new(read).read_line(&mut echoed).await?;
    println!(
        "6. the daemon's own protocol on the same socket echoed: {}",
        echoed.trim_end()
    );

    println!("7. stopping gracefully ({GRACEFUL_STOP}, kill after 5 s)");
    let status = handle.stop(Duration::from_secs(5)).await?;
    watcher.await?;
    println!("   exited: {status}; alive now: {}", handle.is_alive());
    println!("   socket removed: {}", !socket.exists());
    let _ = child.wait().await;
    Ok(())
}
