//! One helper daemon shared by every run of this program: the first run spawns it, later
//! (or concurrent) runs reuse it, verified.
//!
//! ```text
//! cargo run --example shared_daemon            # spawns the demo daemon, prints its pid
//! cargo run --example shared_daemon            # again: the same daemon is reused
//! cargo run --example shared_daemon -- --stop  # stop it
//! cargo run --example shared_daemon -- --dir /some/private/dir
//! ```

mod common;

use std::path::PathBuf;
use std::time::Duration;

use running_process::command::{Output, SharedDaemon};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dir = common::per_user_dir("shared-demo");
    let mut stop = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(args.next().ok_or("--dir DIR")?),
            "--stop" => stop = true,
            other => {
                return Err(format!("unknown argument {other}; try --dir DIR or --stop").into())
            }
        }
    }
    let spec = common::demo_spec("shared", &dir, &[])?.stderr(Output::Null);
    let acquired = SharedDaemon::new(spec)?.acquire().await?;
    let how = if acquired.was_spawned() {
        "spawned"
    } else {
        "adopted"
    };
    let daemon = acquired.into_handle();
    println!("pid {} {how}", daemon.pid());
    if stop {
        let status = daemon.stop(Duration::from_secs(5)).await?;
        println!("stopped: {status}");
    }
    Ok(())
}
