//! What the crate exists for, measured against real demo daemons, each comparison against
//! the way peers do it, in the same run:
//!
//! ```text
//! cargo bench --bench daemons                      # everything (a few minutes)
//! cargo bench --bench daemons -- exit restart      # only some: exit restart spawn probe scale contention peers group stacks
//! cargo bench --bench daemons -- --quick           # small n, for a smoke test
//! ```
//!
//! Prints one JSON object per metric as it is measured, then a Markdown table. Timings are
//! measured here and never asserted. Linux only (the baselines use `/proc` and
//! `kill(pid, 0)`); elsewhere it prints that it skipped.

#[cfg(target_os = "linux")]
#[path = "../common/mod.rs"]
mod common;
#[cfg(target_os = "linux")]
mod contention;
#[cfg(target_os = "linux")]
mod exit;
#[cfg(target_os = "linux")]
mod group;
#[cfg(target_os = "linux")]
mod peers;
#[cfg(target_os = "linux")]
mod probe;
#[cfg(target_os = "linux")]
mod restart;
#[cfg(target_os = "linux")]
mod scale;
#[cfg(target_os = "linux")]
mod spawn_path;
#[cfg(target_os = "linux")]
mod stacks;

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("daemons benchmark: skipped on this platform (Linux only)");
}

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The contention benchmark runs this binary again as its sixteen callers.
    if args.first().map(String::as_str) == Some(contention::CALLER_FLAG) {
        return contention::caller(&args[1..]);
    }
    // The scale benchmark runs each of its shapes in a fresh process.
    if args.first().map(String::as_str) == Some(scale::CHILD_FLAG) {
        return scale::child(&args[1..]);
    }
    // The group benchmark, likewise, runs each of its shapes in a fresh process.
    if args.first().map(String::as_str) == Some(group::CHILD_FLAG) {
        return group::child(&args[1..]);
    }
    // The peers benchmark runs the crate's supervisor under test in a process of its own.
    if args.first().map(String::as_str) == Some(peers::CHILD_FLAG) {
        return peers::child(&args[1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let all = [
        "scale",
        "exit",
        "restart",
        "spawn",
        "probe",
        "contention",
        "peers",
        "group",
        "stacks",
    ];
    let mut chosen: Vec<&str> = all
        .iter()
        .copied()
        .filter(|name| args.iter().any(|a| a == name))
        .collect();
    if chosen.is_empty() {
        chosen = all.to_vec();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let daemon = common::build_demo_daemon()?;
        let mut metrics = Vec::new();
        for name in chosen {
            let before = metrics.len();
            match name {
                "scale" => scale::run(&daemon, quick, &mut metrics).await?,
                "exit" => exit::run(&daemon, quick, &mut metrics).await?,
                "restart" => restart::run(&daemon, quick, &mut metrics).await?,
                "spawn" => spawn_path::run(quick, &mut metrics).await?,
                "probe" => probe::run(&daemon, quick, &mut metrics).await?,
                "contention" => contention::run(&daemon, quick, &mut metrics).await?,
                "peers" => peers::run(quick, &mut metrics).await?,
                "group" => group::run(&daemon, quick, &mut metrics).await?,
                "stacks" => stacks::run(quick, &mut metrics).await?,
                _ => unreachable!(),
            }
            for metric in &metrics[before..] {
                println!("{}", metric.json());
            }
        }
        println!("\n{}", common::table(&metrics));
        Ok(())
    })
}
