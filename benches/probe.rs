//! Probe latency against a real demo daemon: cold (digest not cached) and warm.
//!
//! ```text
//! cargo bench --bench probe
//! ```
//!
//! Prints one JSON object per metric, then a table. Timings are measured here, never
//! asserted in tests.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use running_process::broker::protocol::CacheManifest;
use running_process::identity::DigestCache;
use running_process::BackendHandle;
use tokio::io::{AsyncBufReadExt, BufReader};

const TRIALS: usize = 300;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let daemon_bin = common::build_demo_daemon()?;
    let dir = tempfile::tempdir()?;
    let manifest_path = dir.path().join("run/bench.json");
    let mut child = tokio::process::Command::new(&daemon_bin)
        .arg("--endpoint")
        .arg(dir.path().join("run/bench.sock"))
        .arg("--manifest")
        .arg(&manifest_path)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    lines.next_line().await?;
    let manifest = CacheManifest::read(&manifest_path)
        .await?
        .ok_or("no manifest")?;
    let exe_size = std::fs::metadata(&daemon_bin)?.len();

    let mut cold = Vec::with_capacity(TRIALS);
    let mut warm = Vec::with_capacity(TRIALS);
    for _ in 0..TRIALS {
        DigestCache::global().clear();
        let started = Instant::now();
        let handle = BackendHandle::try_from_manifest(&manifest)
            .await?
            .ok_or("no daemon")?;
        cold.push(started.elapsed());
        drop(handle);
        let started = Instant::now();
        let handle = BackendHandle::try_from_manifest(&manifest)
            .await?
            .ok_or("no daemon")?;
        warm.push(started.elapsed());
        drop(handle);
    }
    let rows = [
        (
            format!("probe_cold ({} KiB executable)", exe_size / 1024),
            summarize(&mut cold),
        ),
        ("probe_warm".to_owned(), summarize(&mut warm)),
    ];
    for (name, (p50, p99)) in &rows {
        println!(
            "{{\"name\":\"{name}\",\"unit\":\"us\",\"n\":{TRIALS},\"p50\":{:.1},\"p99\":{:.1}}}",
            micros(*p50),
            micros(*p99)
        );
    }
    println!("\n| metric | n | p50 | p99 |\n|---|---|---|---|");
    for (name, (p50, p99)) in &rows {
        println!(
            "| {name} | {TRIALS} | {:.0} µs | {:.0} µs |",
            micros(*p50),
            micros(*p99)
        );
    }
    Ok(())
}

fn summarize(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (
        common::quantile(samples, 0.50),
        common::quantile(samples, 0.99),
    )
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
