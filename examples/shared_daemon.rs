//! One helper daemon shared by every run of this program: the first run spawns it, later
//! (or concurrent) runs reuse it, verified.
//!
//! ```text
//! cargo run --example shared_daemon            # spawns the demo daemon, prints its pid
//! cargo run --example shared_daemon            # again: the same daemon is reused
//! cargo run --example shared_daemon -- --stop  # stop it (if one runs; never spawns one)
//! cargo run --example shared_daemon -- --dir /some/private/dir
//! ```
//!
//! The daemon and its files (socket, manifest, lock file) live in a per-user directory
//! (`$XDG_RUNTIME_DIR/running-process/shared-demo`, or
//! `<temp dir>/running-process-user<uid>/shared-demo`) until `--stop`: the daemon then
//! removes them as it exits, and nothing is left.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use running_process::command::SharedDaemon;
use running_process::protocol::CacheManifest;
use running_process::{BackendHandle, ExitStatus};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dir = None;
    let mut stop = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(args.next().ok_or("--dir DIR")?)),
            "--stop" => stop = true,
            other => {
                return Err(format!("unknown argument {other}; try --dir DIR or --stop").into())
            }
        }
    }
    let default_dir = dir.is_none();
    let dir = dir.unwrap_or_else(|| common::per_user_dir("shared-demo"));
    if stop {
        stop_running(&dir).await?;
        if default_dir {
            // `per_user_dir`'s parent, created for it, if nothing else uses it.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        return Ok(());
    }
    let spec = common::demo_spec("shared", &dir, &[])?;
    let acquired = SharedDaemon::new(spec)?.acquire().await?;
    let how = if acquired.was_spawned() {
        "spawned"
    } else {
        "adopted"
    };
    println!("pid {} {how}", acquired.handle().pid());
    Ok(())
}

/// Stop the daemon the manifest names, once verified; never spawn one to stop it.
async fn stop_running(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let manifest = match CacheManifest::read(dir.join("shared.json")).await? {
        Some(manifest) => manifest,
        None => {
            println!("nothing running: no manifest in {}", dir.display());
            return Ok(());
        }
    };
    let daemon = match BackendHandle::try_from_manifest(&manifest).await {
        Ok(Some(daemon)) => daemon,
        Ok(None) => {
            println!("nothing running: the manifest names no live daemon");
            return Ok(());
        }
        Err(why) => {
            println!("nothing running: the manifest's daemon is not it ({why})");
            return Ok(());
        }
    };
    let pid = daemon.pid();
    match daemon.stop(Duration::from_secs(5)).await? {
        // An adopted daemon is not our child: only a kernel that reports the exit status
        // of any process (Linux 6.15+, through the pidfd) tells how it ended.
        ExitStatus::Unknown => {
            println!("stopped pid {pid} (exit status unknown: it was not our child)")
        }
        status => println!("stopped pid {pid}: {status}"),
    }
    Ok(())
}
