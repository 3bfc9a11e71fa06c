//! Supervise a small group of demo daemons and watch what happens.
//!
//! ```text
//! cargo run --example supervise                 # 8 seconds of events, then a clean stop
//! cargo run --example supervise -- --seconds 20
//! cargo run --example supervise -- --hold       # run until killed (used by the tests)
//! ```
//!
//! Three demo daemons start in order (`store`, `cache`, `worker`); `worker` crashes every
//! two seconds and is restarted with backoff (rest_for_one: only it, as it is the last).
//! Every event is printed as it happens (`Display`: time, member, what happened); at the end
//! a status table (`ServiceHandle::status`) shows each member's state, PID, restarts and
//! last exit, and everything stops in reverse order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use running_process::command::CommandSupervisor;
use running_process::supervision::{
    supervise_group, Backoff, GroupSpec, Intensity, MemberStatus, RestartPolicy, Strategy,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut seconds = 8u64;
    let mut hold = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds N")?
            }
            "--hold" => hold = true,
            other => {
                return Err(format!("unknown argument {other}; try --seconds N or --hold").into())
            }
        }
    }
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    let service = |name: &str, extra: &[&str]| -> Result<_, Box<dyn std::error::Error>> {
        let spec = common::demo_spec(name, &run, extra)?.restart(RestartPolicy {
            backoff: Backoff::exponential(Duration::from_millis(200), 2.0, Duration::from_secs(2)),
            ..RestartPolicy::default()
        });
        Ok(Arc::new(CommandSupervisor::new(spec)))
    };
    let group = GroupSpec::new("demo")
        .strategy(Strategy::RestForOne)
        .intensity(Intensity::new(20, Duration::from_secs(60)))
        .service(service("store", &[])?)
        .service(service("cache", &["--ready-delay-ms", "300"])?)
        .service(service("worker", &["--crash-after-ms", "2000"])?);

    let supervision = supervise_group(group)?;
    // Subscribed before the runtime's task first runs: every event from the start.
    let mut events = supervision.events();
    // The printer runs until the stream ends, which is when supervision has ended.
    let printer = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => println!("{event}"),
                // `status()` below still tells where everything stands.
                Err(lagged) => println!("({lagged})"),
            }
        }
    });

    if hold {
        supervision
            .ready()
            .await
            .map_err(|o| format!("group did not start: {o:?}"))?;
        let pids: Vec<String> = supervision
            .backends()
            .iter()
            .map(|(_, b)| b.pid().to_string())
            .collect();
        println!("pids {}", pids.join(" "));
        printer.await?;
        return Ok(());
    }

    tokio::time::sleep(Duration::from_secs(seconds)).await;
    println!("--- status after {seconds} s ---");
    print_status(&supervision.status());
    println!("--- stopping (reverse order) ---");
    let outcome = supervision.stop().await;
    drop(supervision);
    printer.await?;
    println!("--- {outcome:?} ---");
    Ok(())
}

/// One line per member, in start order.
fn print_status(members: &[MemberStatus]) {
    println!(
        "{:<14} {:<22} {:>7} {:>8}  last exit",
        "member", "state", "pid", "restarts"
    );
    for member in members {
        let pid = member.pid.map_or("-".to_owned(), |pid| pid.to_string());
        let last_exit = member
            .last_exit
            .map_or("-".to_owned(), |status| status.to_string());
        println!(
            "{:<14} {:<22} {:>7} {:>8}  {last_exit}",
            member.name,
            member.state.to_string(),
            pid,
            member.restarts
        );
    }
}
