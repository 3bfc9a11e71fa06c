//! An application managing several helper daemons: two private ones it starts in order and
//! stops in reverse order, and one shared with every other run of this program.
//!
//! ```text
//! cargo run --example helper_daemons                  # 5 seconds, then a clean stop
//! cargo run --example helper_daemons -- --seconds 20  # run a second one meanwhile: it adopts
//! cargo run --example helper_daemons -- --dir DIR     # the shared daemon's directory
//! ```
//!
//! 1. A supervision group (rest_for_one) starts `store`, then `indexer`, which depends on
//!    it: a restart of `store` would take `indexer` with it. Both are private demo daemons
//!    in a temporary directory and die with this program. Every event is printed.
//! 2. The `cache` daemon is shared, in a fixed per-user directory
//!    (`$XDG_RUNTIME_DIR/running-process/helper-daemons`, or
//!    `<temp dir>/running-process-user<uid>/helper-daemons`): the first run spawns it, runs
//!    started while it lives adopt it (verified), and it is started with an idle timeout
//!    of 30 s. This run keeps a connection to it open, which keeps it alive.
//! 3. After `--seconds` (or Ctrl-C) the group stops, `indexer` first, a summary is printed,
//!    and the connection to `cache` closes: it exits by itself 30 s after its last user,
//!    removing its files (socket, manifest, lock file) and their directory. That daemon,
//!    until then, is all a run leaves behind.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use running_process::command::{CommandSupervisor, SharedDaemon};
use running_process::supervision::{supervise_group, GroupSpec, Strategy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The private helpers, in start order: `indexer` depends on `store`.
const HELPERS: [&str; 2] = ["store", "indexer"];

/// The shared daemon's idle timeout.
const SHARED_IDLE_SECS: u32 = 30;

struct Args {
    seconds: u64,
    dir: PathBuf,
}

const USAGE: &str = "usage: helper_daemons [--seconds N] [--dir DIR]";

fn parse_args() -> Result<Args, String> {
    let mut parsed = Args {
        seconds: 5,
        dir: common::per_user_dir("helper-daemons"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().ok_or("--seconds needs a value")?;
                parsed.seconds = value
                    .parse()
                    .map_err(|_| format!("--seconds: `{value}` is not a number of seconds"))?;
            }
            "--dir" => parsed.dir = args.next().ok_or("--dir needs a value")?.into(),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("helper_daemons: {error}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::too_many_lines)] // the walkthrough the example shows, in reading order
async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let stamp = move || format!("{:>7.3}s", started.elapsed().as_secs_f64());

    // 1. The private helpers, in order.
    let private = tempfile::tempdir()?;
    let files = private.path().join("run");
    let helper = |name: &str| -> Result<_, Box<dyn std::error::Error>> {
        Ok(Arc::new(CommandSupervisor::new(common::demo_spec(
            name,
            &files,
            &[],
        )?)))
    };
    let mut group = GroupSpec::new("app").strategy(Strategy::RestForOne);
    for name in HELPERS {
        group = group.service(helper(name)?);
    }
    let supervision = supervise_group(group)?;
    let mut events = supervision.events();
    // Runs until the stream ends, which is when supervision has ended.
    let printer = tokio::spawn(async move {
        let mut seen = 0usize;
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    seen += 1;
                    println!("{event}");
                }
                Err(lagged) => println!("({lagged})"),
            }
        }
        seen
    });
    supervision
        .ready()
        .await
        .map_err(|outcome| format!("the helpers did not start: {outcome:?}"))?;
    let private_pids = HELPERS
        .iter()
        .filter_map(|name| supervision.backend_of(&format!("app/{name}")))
        .map(|backend| format!("{} pid {}", backend.service_name(), backend.pid()))
        .collect::<Vec<_>>()
        .join(", ");
    println!("{}  private helpers ready: {private_pids}", stamp());

    // 2. The shared helper: adopt it, or spawn it for everyone.
    let idle = SHARED_IDLE_SECS.to_string();
    let spec = common::demo_spec("cache", &args.dir, &["--idle-timeout-secs", &idle])?;
    let acquired = SharedDaemon::new(spec)?.acquire().await?;
    let how = if acquired.was_spawned() {
        "spawned"
    } else {
        "adopted"
    };
    let cache = acquired.into_handle();
    println!(
        "{}  shared daemon pid {} {how} (in {}, idle timeout {SHARED_IDLE_SECS} s)",
        stamp(),
        cache.pid(),
        args.dir.display()
    );
    // Using it: a connection held open for the whole run keeps it from idling out.
    let (reader, mut writer) = tokio::io::split(cache.connect().await?.into_inner());
    let mut replies = BufReader::new(reader).lines();
    writer
        .write_all(format!("hello from pid {}\n", std::process::id()).as_bytes())
        .await?;
    let reply = replies.next_line().await?.unwrap_or_default();
    println!("{}  cache echoed {reply:?}", stamp());

    // 3. Run, then stop in reverse order.
    tokio::select! {
        // Time passing is the point: the demo runs for this long.
        _ = tokio::time::sleep(Duration::from_secs(args.seconds)) => {}
        _ = tokio::signal::ctrl_c() => println!("{}  interrupted", stamp()),
        status = cache.exited() => println!("{}  the shared daemon exited: {status}", stamp()),
    }
    println!("{}  --- stopping (reverse order) ---", stamp());
    let outcome = supervision.stop().await;
    drop(supervision);
    let seen = printer.await?;
    drop((replies, writer));
    println!(
        "--- summary after {:.1}s ---",
        started.elapsed().as_secs_f64()
    );
    println!("private helpers: {outcome:?} in reverse order ({private_pids}); {seen} events");
    if cache.is_alive() {
        println!(
            "shared daemon: pid {} ({how}), left running: it exits by itself \
{SHARED_IDLE_SECS} s after its last user",
            cache.pid()
        );
    } else {
        println!("shared daemon: pid {} ({how}), has exited", cache.pid());
    }
    Ok(())
}
