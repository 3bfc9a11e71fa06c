//! `testing::EphemeralStack` for a two-service stack (Debian's redis, and a Python HTTP
//! server that depends on it: `tests/fixtures/stack.toml`), against the same two programs
//! started on their own, in the same run:
//!
//! - one stack: from `EphemeralStack::start` until it returns (every service ready: redis
//!   said `READY=1` over sd_notify, the server answered `GET /` with 200), against spawning
//!   `redis-server` with the same arguments, connecting until its port accepts, then
//!   spawning the server and `GET /` until it answers 200 (the least any start of the two
//!   must wait for);
//! - 16 at once: the wall time until 16 stacks started together are all ready, against 16
//!   such pairs started together on their own.
//!
//! Everything is killed when dropped (the stacks, `kill_on_drop` for the baseline's
//! children). Skips with a note when redis-server or python3 is missing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::future::join_all;
use running_process::testing::{free_tcp_port, EphemeralStack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::common::{self, Metric};

/// Stacks started together in the parallel run.
const PARALLEL: usize = 16;

fn stack_file() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stack.toml"
    ))
}

pub async fn run(quick: bool, metrics: &mut Vec<Metric>) -> Result<(), Box<dyn std::error::Error>> {
    for program in ["redis-server", "python3"] {
        if !on_path(program) {
            metrics.push(Metric {
                name: "ephemeral stacks: SKIPPED".into(),
                note: Some(format!("{program} is not installed")),
                ..Metric::default()
            });
            return Ok(());
        }
    }
    let n = if quick { 3 } else { 20 };
    let (mut ours, mut alone) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        // Alternated, so that a change in the machine's load touches both alike.
        ours.push(one_stack().await?);
        alone.push(on_their_own().await?);
    }
    let mut alone_sorted = alone.clone();
    alone_sorted.sort();
    let baseline = common::ms(common::quantile(&alone_sorted, 0.5));
    metrics.push(
        Metric::from_samples(
            "EphemeralStack::start to ready (redis + python http)",
            "ms",
            &mut ours,
            common::ms,
        )
        .baseline("the two started on their own", baseline)
        .note("redis over sd_notify, the server over HTTP, the server after redis"),
    );
    metrics.push(Metric::from_samples(
        "redis + python http on their own (spawn, connect until accepted)",
        "ms",
        &mut alone,
        common::ms,
    ));

    let rounds = if quick { 1 } else { 5 };
    let (mut ours, mut alone) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        let stacks = join_all((0..PARALLEL).map(|_| EphemeralStack::start(stack_file()))).await;
        ours.push(started.elapsed());
        for stack in stacks {
            stack?;
        }
        let started = Instant::now();
        let pairs = join_all((0..PARALLEL).map(|_| start_alone())).await;
        alone.push(started.elapsed());
        for pair in pairs {
            pair?;
        }
    }
    let mut alone_sorted = alone.clone();
    alone_sorted.sort();
    let baseline = common::ms(common::quantile(&alone_sorted, 0.5));
    metrics.push(
        Metric::from_samples(
            format!("{PARALLEL} EphemeralStacks started at once, until all ready"),
            "ms",
            &mut ours,
            common::ms,
        )
        .baseline(format!("{PARALLEL} pairs on their own"), baseline),
    );
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// One stack from start to ready; dropped (killed) after.
async fn one_stack() -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let stack = EphemeralStack::start(stack_file()).await?;
    let took = started.elapsed();
    drop(stack);
    Ok(took)
}

/// The same two programs spawned by hand, each waited for by polling its port.
async fn on_their_own() -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let pair = start_alone().await?;
    let took = started.elapsed();
    drop(pair);
    Ok(took)
}

/// redis, then the server once redis accepts; both killed when dropped.
async fn start_alone() -> Result<(Child, Child, tempfile::TempDir), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (redis_port, web_port) = (free_tcp_port()?, free_tcp_port()?);
    let redis = Command::new("redis-server")
        .args([
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    while TcpStream::connect(("127.0.0.1", redis_port)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let web = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &web_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    while !http_ok(web_port).await {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((redis, web, dir))
}

async fn http_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.ends_with(b"200")
}
