//! Shared by the examples: finding (or building) the demo daemon binary.

use std::path::{Path, PathBuf};

/// The demo daemon sits next to the running example; build it if this run did not.
pub fn demo_daemon_binary() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or("example has no directory")?;
    let path = dir.join(format!("demo_daemon{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let release = dir.parent().and_then(Path::file_name) == Some("release".as_ref());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--example", "demo_daemon"]);
        if release {
            build.arg("--release");
        }
        if !build.status()?.success() {
            return Err("building the demo daemon failed".into());
        }
    }
    Ok(path)
}
