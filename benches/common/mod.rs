//! Shared by the benchmarks.

use std::path::PathBuf;
use std::time::Duration;

/// Build the demo daemon in release mode (benchmarks do not build examples).
pub fn build_demo_daemon() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--example", "demo_daemon"])
        .status()?;
    if !status.success() {
        return Err("building demo_daemon failed".into());
    }
    Ok(PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/release/examples")
        .join(format!("demo_daemon{}", std::env::consts::EXE_SUFFIX)))
}

/// The `q` quantile of sorted samples (nearest rank).
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
