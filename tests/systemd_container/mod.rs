//! A throw-away container whose PID 1 is the machine's own systemd (Debian's
//! `systemd-container`: `systemd-nspawn` over the host's root, `--volatile=yes`, so nothing
//! it writes outlives it), reached with `nsenter`. It shares the host's network: what its
//! units serve on the loopback, the test reaches.
//!
//! Booted with `systemd.unit=basic.target`, so no daemon enabled on the host starts inside;
//! in a cgroup of its own (created here, removed on drop), so two containers never share
//! one. Dropping it kills every process of that cgroup (`cgroup.kill`), waits until the
//! cgroup is empty and removes it, on every path, a failed assertion included.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The deadline of every wait on the container (a loaded 2-core machine is slow to boot).
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A booted container; torn down on drop.
pub struct Container {
    nspawn: Child,
    /// The container's PID 1 (systemd), as the host sees it.
    init: u32,
    /// The cgroup directories made for it, one per mounted hierarchy (`cgroup.kill` is in the
    /// first, the cgroup v2 one).
    cgroups: Vec<PathBuf>,
    /// nspawn's output, shown when the boot fails.
    log: PathBuf,
}

/// Poll `done` until it returns `Some`, at most [`DEADLINE`]: the things waited for here
/// (a boot, a unit's state, a cgroup emptying) raise no event this side can wait on. The
/// pause between two looks grows from 10 ms to 200 ms.
pub fn poll<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// `program` in `PATH` or in `/usr/bin`, `/usr/sbin`.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// The cgroup directories to create for a container named `name`: the cgroup v2 one first
/// (a pure v2 mount, or the `unified` one of a hybrid layout, plus the hybrid's `name=systemd`
/// hierarchy, which systemd in the container also uses). `None`: no cgroup v2 to kill with.
fn cgroup_dirs(name: &str) -> Option<Vec<PathBuf>> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return Some(vec![root.join(name)]);
    }
    if root.join("unified/cgroup.procs").exists() {
        let mut dirs = vec![root.join("unified").join(name)];
        if root.join("systemd/cgroup.procs").exists() {
            dirs.push(root.join("systemd").join(name));
        }
        return Some(dirs);
    }
    None
}

impl Container {
    /// Boot a container that sees each of `binds` at its own path (read-write) and each of
    /// `read_only` read-only. `Err` says why it cannot boot here (for SKIPPED).
    pub fn boot(binds: &[&Path], read_only: &[&Path], log: PathBuf) -> Result<Container, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("id: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root (systemd-nspawn needs root)".into());
        }
        let nspawn = find("systemd-nspawn")
            .ok_or("systemd-nspawn is not installed (Debian package systemd-container)")?;
        find("nsenter").ok_or("nsenter is not installed (Debian package util-linux)")?;
        let name = format!("rp-export-{}", std::process::id());
        let cgroups = cgroup_dirs(&name).ok_or("no cgroup v2 hierarchy to run it in")?;
        for dir in &cgroups {
            std::fs::create_dir(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut args = vec![
            "-D".to_owned(),
            "/".into(),
            "--volatile=yes".into(),
            "--register=no".into(),
            "--keep-unit".into(),
            format!("--machine={name}"),
        ];
        args.extend(binds.iter().map(|p| format!("--bind={}", p.display())));
        args.extend(
            read_only
                .iter()
                .map(|p| format!("--bind-ro={}", p.display())),
        );
        args.extend(
            [
                "--boot",
                "systemd.firstboot=off",
                "systemd.unit=basic.target",
            ]
            .map(String::from),
        );
        // The shell enters the new cgroups, then becomes nspawn, so the container starts there.
        let enter = cgroups
            .iter()
            .map(|dir| format!("echo $$ > '{}/cgroup.procs' && ", dir.display()))
            .collect::<String>();
        let out = std::fs::File::create(&log).map_err(|e| format!("cannot create the log: {e}"))?;
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(format!("{enter}exec \"$0\" \"$@\""))
            .arg(&nspawn)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn();
        let nspawn = match spawned {
            Ok(child) => child,
            Err(e) => {
                remove_cgroups(&cgroups);
                return Err(format!("cannot run systemd-nspawn: {e}"));
            }
        };
        let mut container = Container {
            nspawn,
            init: 0,
            cgroups,
            log,
        };
        container.init = container.find_init()?;
        container.wait_booted()?;
        Ok(container)
    }

    /// The container's systemd: nspawn's child process named `systemd`.
    fn find_init(&mut self) -> Result<u32, String> {
        let parent = self.nspawn.id();
        let start = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(pid) = child_named(parent, "systemd") {
                return Ok(pid);
            }
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                return Err(format!(
                    "systemd-nspawn ended ({status}) before booting: {}",
                    self.log_tail()
                ));
            }
            if start.elapsed() > DEADLINE {
                return Err(format!(
                    "no systemd below systemd-nspawn within {DEADLINE:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Wait for the end of the boot (`systemctl is-system-running --wait`, once its bus
    /// answers).
    fn wait_booted(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let output = self.run(&["systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            match state.as_str() {
                "running" | "degraded" => return Ok(()),
                _ if start.elapsed() > DEADLINE => {
                    return Err(format!(
                        "the container's systemd is `{state}` after {DEADLINE:?}: {}",
                        self.log_tail()
                    ));
                }
                // Not answering yet (its bus is not up): look again.
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Run `command` inside the container (its mount, PID, UTS and IPC namespaces).
    pub fn run(&self, command: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-m", "-p", "-u", "-i", "--"])
            .args(command)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter runs")
    }

    /// `systemctl ARGS` inside the container; panics with its output unless it succeeds.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut command = vec!["systemctl"];
        command.extend_from_slice(args);
        let output = self.run(&command);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "systemctl {args:?}: {}\n{text}{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.journal()
        );
        text
    }

    /// A property of a unit (`systemctl show -p NAME --value`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", "-p", name, "--value", unit])
            .trim()
            .to_owned()
    }

    /// A `...TimestampMonotonic` property, in microseconds of CLOCK_MONOTONIC.
    pub fn monotonic(&self, unit: &str, name: &str) -> u64 {
        let value = self.property(unit, name);
        value
            .parse()
            .unwrap_or_else(|_| panic!("{unit} {name} = {value:?}"))
    }

    /// The container's journal, for failure messages.
    pub fn journal(&self) -> String {
        let output = self.run(&["journalctl", "--no-pager", "-n", "80"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The cgroup v2 directory the container runs in (its units' cgroups are below).
    pub fn cgroup(&self) -> &Path {
        &self.cgroups[0]
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Every process of the container (its systemd, its units, nspawn itself) at once.
        if let Err(error) = std::fs::write(self.cgroups[0].join("cgroup.kill"), "1") {
            eprintln!("cannot kill the container's cgroup: {error}");
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        let events = self.cgroups[0].join("cgroup.events");
        let start = Instant::now();
        while std::fs::read_to_string(&events).is_ok_and(|text| text.contains("populated 1")) {
            if start.elapsed() > DEADLINE {
                eprintln!("the container's cgroup is still populated after {DEADLINE:?}");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        remove_cgroups(&self.cgroups);
    }
}

/// Remove each of `dirs` with the cgroups below it, deepest first.
fn remove_cgroups(dirs: &[PathBuf]) {
    fn remove(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&entry.path());
                }
            }
        }
        if let Err(error) = std::fs::remove_dir(dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                eprintln!("cannot remove the cgroup {}: {error}", dir.display());
            }
        }
    }
    for dir in dirs {
        remove(dir);
    }
}

/// A child of `parent` whose command name is `name`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
            (ppid == parent && comm == name).then_some(pid)
        })
}
