//! Shared by the examples: finding (or building) the demo daemon binary, the demo daemon's
//! spec, a per-user directory. (Events print themselves: `println!("{event}")`.)

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

/// A spec that runs the demo daemon named `name` with its socket and manifest in `dir`,
/// ready when the identity handshake succeeds. Its stdout is discarded; its stderr is
/// captured and discarded, so that its last line shows in the `Exited` event (`...; last
/// output: demo_daemon: crashing as asked`) instead of among the examples' own lines.
#[allow(dead_code)] // not every example uses it
pub fn demo_spec(
    name: &str,
    dir: &Path,
    extra: &[&str],
) -> Result<running_process::command::CommandSpec, Box<dyn std::error::Error>> {
    use running_process::command::{CommandSpec, Output, Readiness};
    let file = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    Ok(CommandSpec::new(name, demo_daemon_binary()?)
        .args([
            "--endpoint",
            &file("sock"),
            "--manifest",
            &file("json"),
            "--service",
            name,
        ])
        .args(extra.iter().copied())
        .stdout(Output::Null)
        .stderr(Output::Null)
        .readiness(Readiness::Manifest {
            path: dir.join(format!("{name}.json")),
        }))
}

/// A per-user directory for the examples' shared daemons: `$XDG_RUNTIME_DIR/running-process/
/// <name>` when the session has one, else `<temp>/running-process-user<uid>/<name>`.
#[allow(dead_code)] // not every example uses it
pub fn per_user_dir(name: &str) -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("running-process"),
        None => std::env::temp_dir().join(format!("running-process-user{}", user_id())),
    }
    .join(name)
}

#[cfg(unix)]
fn user_id() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(not(unix))]
fn user_id() -> u32 {
    0
}
