//! A service file as systemd units: one `.service` per service and a `.target` for the set.

use crate::command::{
    GroupRef, HealthCheck, KillMode, Limit, Listener, Output, Readiness, UserRef,
};
use crate::compose::{Service, ServiceFile};
use crate::supervision::Condition;
use crate::supervision::{Jitter, RestartKind, Strategy};

use super::{
    awaited_completion, describe_health, describe_readiness, human_duration, path_text, seconds_up,
    signal_name, ExportError, ExportOptions, ExportedFile, Target,
};

/// The set as systemd units: `<group>-<service>.service` for each service, in file order,
/// then `<group>.target`, which `Wants=` every service (each one is `PartOf=` it), so
/// `systemctl start <group>.target` starts the set and `systemctl stop <group>.target`
/// stops it. Install them with `cp *.service *.socket *.target /etc/systemd/system/ &&
/// systemctl daemon-reload` (user units: `~/.config/systemd/user/` and `systemctl --user`).
/// The units are checked with `systemd-analyze verify` in CI (systemd 252, Debian 12): only
/// directives that version knows are written; and `tests/export_under_systemd.rs` runs
/// exported units under that systemd as PID 1 in a container.
///
/// Looks bare program names up in the service's `PATH` (its `env.PATH`, else the caller's)
/// as the service would, because `ExecStart=` wants an absolute path: this reads the file
/// system, so call it from a blocking context. A name that is not found stays bare, with a
/// comment (systemd then searches its own fixed path). Call it on a file read with
/// `ServiceFile::load` (feature `toml`) or after
/// [`resolve_paths`](ServiceFile::resolve_paths), so working directories are absolute.
///
/// | service file | unit |
/// |---|---|
/// | `program`, `args` | `ExecStart=` (arguments quoted, `%` and `$` escaped): a bare name found in systemd's own search path (`/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, which `Environment=PATH=` does not change) as its absolute path there; otherwise the file the service would run (its `env.PATH`, else the caller's), with a comment when systemd does not search its directory or it lies in a home directory (a version manager's shim, `~/.local/bin`) |
/// | `cwd` | `WorkingDirectory=` |
/// | `env` | `Environment=` (systemd starts from its own small environment: `env_clear` is how it always runs; without it, a comment says the supervisor's environment is not inherited) |
/// | `env_file` | `EnvironmentFile=` (read at each start) when systemd reads the file as the supervisor does (plain `KEY=value` lines) and `env` overrides none of its keys (systemd would let the file win); otherwise its values, read now, as `Environment=`, and a comment |
/// | `readiness` `notify` | `Type=notify`, `NotifyAccess=all` (readiness from any process of the service, as the supervisor accepts it) |
/// | `readiness` `started` | `Type=exec` (started once the program was executed, which is when the supervisor reports it started) |
/// | `readiness` `tcp`, `http`, `exec`, `unix_socket`, `file` | `Type=exec` and `ExecStartPost=<running-process> wait --timeout <ready_timeout> <check>`: the unit is active, and dependants ordered `After=` it start, only once the check passes, as under the supervisor (systemd has no such check; the wait accepts any listener, not only the service's). The binary is [`ExportOptions::wait_program`](super::ExportOptions::wait_program), named in a comment |
/// | `readiness` `delay` | `Type=exec`, `ExecStartPost=/bin/sleep <seconds>` |
/// | `readiness` `log_line`, `manifest` | `Type=exec` and a comment: systemd has neither, nor adopting a running daemon; dependants ordered `After=` it start once it runs |
/// | target of a `completed_successfully` dependency | `Type=oneshot`, `RemainAfterExit=yes`, `TimeoutStartSec=infinity`: dependants start after it exited 0 |
/// | `ready_timeout_ms` | `TimeoutStartSec=` (which covers the `ExecStartPost=` wait too) |
/// | `restart.kind` | `Restart=`: permanent `always`, transient `on-failure` (plus `RestartForceExitStatus=` for the signals systemd calls clean, since only exit 0 is normal here), temporary `no` |
/// | `restart.backoff` | `RestartSec=` its initial delay; multiplier, cap, jitter and reset as a comment (`RestartSteps=` and `RestartMaxDelaySec=` need systemd 254) |
/// | `group.intensity` | `StartLimitBurst=` (`max_restarts` + 1: the first start counts) and `StartLimitIntervalSec=` in `[Unit]`, counted per unit (a comment says so) |
/// | `health` `watchdog` | `WatchdogSec=` |
/// | other `health` | comment |
/// | `user`, `group`, `supplementary_groups`, `umask` | `User=`, `Group=`, `SupplementaryGroups=`, `UMask=` (an empty list of supplementary groups: comment); in user units ([`ExportOptions::user_units`](super::ExportOptions::user_units)) `UMask=` only, the rest a comment |
/// | `limits` | `LimitNOFILE=`, `LimitNPROC=`, `LimitCORE=` (`soft:hard`) |
/// | `stdout`, `stderr` | `file`: `StandardOutput=append:` (rotation: comment); `null`: `null`; `inherit`, `tracing`: the journal |
/// | `stop` | `KillSignal=`, `TimeoutStopSec=` (the grace), `KillMode=`; `request` (shutdown over the socket): comment |
/// | `depends_on` | `After=` the dependency's unit, and `Requires=` it (rest_for_one, one_for_all, and a `completed_successfully` one-shot) or `Wants=` it (one_for_one); `healthy`, and `ready` on a dependency whose readiness systemd cannot see (log line, identity handshake), add a comment |
/// | `group.strategy` | one_for_one: `Wants=`, so no restart reaches a dependant; rest_for_one: `Requires=`, so a restart of a unit, automatic ones included, restarts the running units that require it, transitively; one_for_all: also the `.target` `Requires=` every service, so a restart of one restarts the target and, through `PartOf=`, every service. A comment in the `.target` says which |
/// | `group.order` | sequential: a comment in the `.target` |
/// | `replicas` | one unit, and a comment (a template unit `NAME@.service` is the systemd way) |
/// | (the set) | `<group>.target`, `WantedBy=multi-user.target` (user units: `default.target`) |
/// | `cgroup = false`, `die_with_supervisor = false` | comments (systemd always tracks a unit by its cgroup and is the supervisor) |
pub fn systemd_units(file: &ServiceFile) -> Result<Vec<ExportedFile>, ExportError> {
    systemd_units_with(file, &ExportOptions::default())
}

/// [`systemd_units`] with [`ExportOptions`]: [`ExportOptions::user_units`] writes units for
/// a user's service manager (`systemctl --user`), [`ExportOptions::wait_program`] names
/// the `running-process` binary of the `ExecStartPost=` waits.
pub fn systemd_units_with(
    file: &ServiceFile,
    options: &ExportOptions,
) -> Result<Vec<ExportedFile>, ExportError> {
    let group = unit_name(&file.group.name)?;
    let mut files = Vec::with_capacity(file.services.len() + 1);
    for service in &file.services {
        files.push(ExportedFile {
            name: format!("{group}-{}.service", unit_name(service.name())?),
            contents: service_unit(file, &group, service, options)?.render(),
        });
        for listener in &service.spec.listeners {
            files.push(ExportedFile {
                name: socket_unit_name(&group, service, listener)?,
                contents: socket_unit(file, &group, service, listener)?.render(),
            });
        }
    }
    files.push(ExportedFile {
        name: format!("{group}.target"),
        contents: target_unit(file, &group, options).render(),
    });
    Ok(files)
}

/// The characters systemd allows in a unit name, besides `\` escapes (not used here).
fn unit_name(name: &str) -> Result<String, ExportError> {
    let bad = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.')));
    let reason = match bad {
        _ if name.is_empty() => "it is empty".to_owned(),
        Some(c) => format!("systemd unit names allow only A-Z a-z 0-9 : - _ . (not {c:?})"),
        None if name.len() > 200 => "it is longer than 200 characters".to_owned(),
        None => return Ok(name.to_owned()),
    };
    Err(ExportError::Name {
        name: name.to_owned(),
        target: Target::Systemd,
        reason,
    })
}

/// A unit file being written: its sections, in order, each a list of lines.
#[derive(Default)]
struct Unit {
    sections: Vec<(&'static str, Vec<String>)>,
}

impl Unit {
    /// A unit that starts with these comment lines.
    fn headed(comments: &[&str]) -> Unit {
        let mut unit = Unit::default();
        let header = unit.section("");
        for text in comments {
            note(header, text);
        }
        unit
    }

    fn section(&mut self, name: &'static str) -> &mut Vec<String> {
        self.sections.push((name, Vec::new()));
        &mut self.sections.last_mut().expect("just pushed").1
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for (i, (name, lines)) in self.sections.iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            if !name.is_empty() {
                text.push_str(&format!("[{name}]\n"));
            }
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

/// Add `# text` to `lines`.
fn note(lines: &mut Vec<String>, text: impl AsRef<str>) {
    lines.push(format!("# {}", text.as_ref()));
}

fn service_unit(
    file: &ServiceFile,
    group: &str,
    service: &Service,
    options: &ExportOptions,
) -> Result<Unit, ExportError> {
    let spec = &service.spec;
    let name = service.name();
    let oneshot = awaited_completion(file, name);
    let mut unit = Unit::headed(&[
        &format!(
            "Service `{name}` of the running-process group `{}`, exported by `running-process export systemd`.",
            file.group.name
        ),
        "Lines starting with # say what systemd cannot express of the service file.",
    ]);

    let lines = unit.section("Unit");
    lines.push(format!("Description={name} ({} group)", file.group.name));
    lines.push(format!("PartOf={group}.target"));
    dependencies(lines, file, group, service)?;
    for listener in &spec.listeners {
        // Its sockets come first and stay while it restarts; with start on demand the
        // first connection starts it (the target wants the sockets, not the service).
        let socket = socket_unit_name(group, service, listener)?;
        lines.push(format!("Requires={socket}"));
        lines.push(format!("After={socket}"));
    }
    intensity(lines, file);

    let lines = unit.section("Service");
    service_type(lines, spec, oneshot);
    exec_start(lines, service)?;
    if !oneshot {
        readiness_wait(lines, service, options)?;
    }
    working_directory(lines, service)?;
    environment(lines, service);
    identity(lines, spec, options.user_units);
    for (stream, output) in [
        ("StandardOutput", &spec.stdout),
        ("StandardError", &spec.stderr),
    ] {
        standard_stream(lines, name, stream, output)?;
    }
    restart(lines, spec, oneshot);
    health(lines, spec);
    stop(lines, spec);
    if spec.fd_store_max > 0 {
        lines.push(format!("FileDescriptorStoreMax={}", spec.fd_store_max));
    }
    quotas(lines, spec);
    if !spec.cgroup {
        note(
            lines,
            "cgroup = false: systemd always tracks a unit by its own cgroup.",
        );
    }
    if !spec.die_with_supervisor {
        note(
            lines,
            "die_with_supervisor = false: under systemd the service stops with its unit, never outlives it.",
        );
    }
    if service.replicas > 1 {
        note(
            lines,
            format!(
                "replicas = {}: this is one instance; for several, make it a template unit ({group}-{name}@.service, %i for RUNNING_PROCESS_INSTANCE) and start {group}-{name}@1 .. @{}.",
                service.replicas, service.replicas
            ),
        );
    }
    Ok(unit)
}

/// `After=` and `Requires=`/`Wants=` of each dependency, with what systemd cannot wait for.
fn dependencies(
    lines: &mut Vec<String>,
    file: &ServiceFile,
    group: &str,
    service: &Service,
) -> Result<(), ExportError> {
    for dependency in &service.depends_on {
        let other = format!("{group}-{}.service", unit_name(&dependency.service)?);
        let target = file.service(&dependency.service);
        let visible = target
            .is_some_and(|t| systemd_sees(&t.spec.readiness) || awaited_completion(file, t.name()));
        match dependency.condition {
            Condition::Healthy => note(
                lines,
                format!(
                    "depends_on {} = \"healthy\": systemd has no health state; this waits only until it is started{}.",
                    dependency.service,
                    if visible { " (ready)" } else { "" }
                ),
            ),
            Condition::Ready if !visible => note(
                lines,
                format!(
                    "depends_on {} = \"ready\": systemd cannot see its readiness ({}); this waits only until it runs.",
                    dependency.service,
                    target.map_or_else(String::new, |t| describe_readiness(&t.spec.readiness))
                ),
            ),
            _ => {}
        }
        lines.push(format!("After={other}"));
        lines.push(format!(
            "{}={other}",
            requirement(file.group.strategy, dependency.condition)
        ));
    }
    Ok(())
}

/// `Type=` and `TimeoutStartSec=`, with what the readiness becomes.
fn service_type(lines: &mut Vec<String>, spec: &crate::command::CommandSpec, oneshot: bool) {
    if oneshot {
        note(
            lines,
            "A dependant waits for it to complete successfully: a oneshot whose success starts them.",
        );
        if spec.readiness != Readiness::Started {
            note(
                lines,
                format!(
                    "readiness {} is not used: its completion is what counts.",
                    describe_readiness(&spec.readiness)
                ),
            );
        }
        lines.push("Type=oneshot".into());
        lines.push("RemainAfterExit=yes".into());
        lines.push("TimeoutStartSec=infinity".into());
        return;
    }
    match &spec.readiness {
        Readiness::Notify => {
            lines.push("Type=notify".into());
            // The supervisor believes READY=1 from any process of the service's tree.
            lines.push("NotifyAccess=all".into());
        }
        Readiness::Started => lines.push("Type=exec".into()),
        other if waited_after_start(other) => lines.push("Type=exec".into()),
        other => {
            note(
                lines,
                format!(
                    "readiness {}: systemd has no such check (only sd_notify); it counts the service as started once its program runs.",
                    describe_readiness(other)
                ),
            );
            match other {
                Readiness::Manifest { .. } => note(
                    lines,
                    "Adopting an already running daemon after verifying its identity has no systemd equivalent either.",
                ),
                _ => note(
                    lines,
                    "To make dependants wait for it, make the program use sd_notify (readiness notify).",
                ),
            }
            lines.push("Type=exec".into());
        }
    }
    lines.push(format!(
        "TimeoutStartSec={}",
        human_duration(spec.ready_timeout)
    ));
}

/// Readiness that systemd sees itself: the start (`Type=exec`), sd_notify (`Type=notify`),
/// and the checks an `ExecStartPost=` waits for ([`waited_after_start`]).
fn systemd_sees(readiness: &Readiness) -> bool {
    matches!(readiness, Readiness::Started | Readiness::Notify) || waited_after_start(readiness)
}

/// Readiness that an `ExecStartPost=` waits for: `running-process wait` for the checks
/// systemd has no directive for, `sleep` for a delay.
fn waited_after_start(readiness: &Readiness) -> bool {
    matches!(
        readiness,
        Readiness::Tcp { .. }
            | Readiness::Http { .. }
            | Readiness::Exec { .. }
            | Readiness::UnixSocket { .. }
            | Readiness::File { .. }
            | Readiness::Delay { .. }
    )
}

/// The words after `running-process wait --timeout T` for `readiness`, or `None` when
/// `wait` cannot check it.
fn wait_words(readiness: &Readiness, service: &str) -> Result<Option<Vec<String>>, ExportError> {
    let path = |path: &std::path::Path| -> Result<String, ExportError> {
        path_text(path, service, "readiness.path").map(str::to_owned)
    };
    Ok(Some(match readiness {
        Readiness::Tcp { address } => vec!["tcp".into(), address.clone()],
        Readiness::Http { url } => vec!["http".into(), url.clone()],
        Readiness::Exec { command, interval } => {
            let mut words = vec![
                "exec".into(),
                "--interval".into(),
                human_duration(*interval),
                "--".into(),
            ];
            words.extend(command.iter().cloned());
            words
        }
        Readiness::UnixSocket { path: p } => vec!["unix-socket".into(), path(p)?],
        Readiness::File { path: p } => vec!["file".into(), path(p)?],
        _ => return Ok(None),
    }))
}

/// `ExecStartPost=` for the readiness systemd cannot see: the unit becomes active, and the
/// units ordered `After=` it start, only once the check passed, as under `running-process`.
fn readiness_wait(
    lines: &mut Vec<String>,
    service: &Service,
    options: &ExportOptions,
) -> Result<(), ExportError> {
    let readiness = &service.spec.readiness;
    if let Readiness::Delay { delay } = readiness {
        note(
            lines,
            format!(
                "readiness: {} after the start, as an ExecStartPost= sleep.",
                human_duration(*delay)
            ),
        );
        lines.push(format!("ExecStartPost=/bin/sleep {}", delay.as_secs_f64()));
        return Ok(());
    }
    let Some(words) = wait_words(readiness, service.name())? else {
        return Ok(());
    };
    let program = match &options.wait_program {
        Some(path) => {
            let text = path_text(path, service.name(), "readiness")?.to_owned();
            note(
                lines,
                format!("readiness {}: systemd has no such check; `running-process wait` runs it after the start, so the unit is active (and the units ordered After= it start) only once it passes. ExecStartPost= runs {text}, the binary that exported this unit: the target host needs it there.", describe_readiness(readiness)),
            );
            if let Some(problem) = user_specific(path) {
                note(lines, format!("{text} is {problem}."));
            }
            text
        }
        None => {
            note(
                lines,
                format!("readiness {}: systemd has no such check; `running-process wait` runs it after the start, so the unit is active (and the units ordered After= it start) only once it passes. ExecStartPost= names `running-process`, which systemd looks for in its search path ({}).", describe_readiness(readiness), SYSTEMD_PATH.join(":")),
            );
            "running-process".to_owned()
        }
    };
    if matches!(readiness, Readiness::Exec { .. })
        && service.spec.user.is_some()
        && !options.user_units
    {
        note(
            lines,
            "The check command runs as User= here; under running-process it runs as the supervisor's user.",
        );
    }
    let mut line = format!(
        "ExecStartPost={} wait --timeout {}",
        exec_word(&program),
        human_duration(service.spec.ready_timeout)
    );
    for word in words {
        line.push(' ');
        line.push_str(&exec_word(&word));
    }
    lines.push(line);
    Ok(())
}

/// The directories systemd (252) searches for a command named without a `/`: fixed at
/// build time, whatever `Environment=PATH=` says (`ExecSearchPath=` came with 255).
const SYSTEMD_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Why `path` may not exist on another host or for another user: it lies in a home
/// directory (a version manager's shim, `~/.local/bin`, `~/.cargo/bin`...). `None` if not.
fn user_specific(path: &std::path::Path) -> Option<String> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let in_home = home
        .as_deref()
        .filter(|h| *h != std::path::Path::new("/"))
        .is_some_and(|h| path.starts_with(h))
        || path.starts_with("/root")
        || path.starts_with("/home");
    in_home.then(|| {
        "in a user-specific directory (a home directory: a version manager's shim, ~/.local/bin, ~/.cargo/bin...), which the target host and the unit's user may not have: install it system-wide (/usr/local/bin) or name a system path in the service file".to_owned()
    })
}

/// The program as the unit names it: a bare name found in systemd's own search path as its
/// standard absolute path there; otherwise found as the service would find it (its
/// `env.PATH`, else the exporting user's), with a comment when only a directory systemd
/// does not search, or a user-specific one, has it.
fn portable_program(
    lines: &mut Vec<String>,
    spec: &crate::command::CommandSpec,
) -> std::path::PathBuf {
    let program = &spec.program;
    let bare = !program.is_absolute() && program.components().count() == 1;
    if bare && !spec.env.contains_key("PATH") {
        let standard = SYSTEMD_PATH
            .iter()
            .map(|dir| std::path::Path::new(dir).join(program))
            .find(|candidate| crate::platform::is_executable_file(candidate));
        if let Some(found) = standard {
            return found;
        }
    }
    match super::super::check::find_program(spec) {
        Ok(found) => {
            let searched = found
                .parent()
                .is_some_and(|dir| SYSTEMD_PATH.iter().any(|d| dir == std::path::Path::new(d)));
            match user_specific(&found) {
                Some(problem) => note(lines, format!("program `{}` was found as {}, {problem}.", program.display(), found.display())),
                None if bare && !searched => note(lines, format!("program `{}` was found in PATH as {}, a directory systemd does not search ({}): the target host needs it at this path.", program.display(), found.display(), SYSTEMD_PATH.join(":"))),
                None => {}
            }
            found
        }
        Err(reason) => {
            note(
                lines,
                format!(
                    "program `{}` {reason} when exported: systemd will look for it in its own search path ({}).",
                    program.display(),
                    SYSTEMD_PATH.join(":")
                ),
            );
            program.clone()
        }
    }
}

/// `ExecStart=` with the program as [`portable_program`] names it.
fn exec_start(lines: &mut Vec<String>, service: &Service) -> Result<(), ExportError> {
    let spec = &service.spec;
    let program = portable_program(lines, spec);
    let program = path_text(&program, service.name(), "program")?;
    let mut line = format!("ExecStart={}", exec_word(program));
    for arg in &spec.args {
        line.push(' ');
        line.push_str(&exec_word(arg));
    }
    lines.push(line);
    Ok(())
}

/// One word of a command line (systemd.service "Command lines", systemd.syntax): `%` and
/// `$` doubled (specifiers and variables), quoted with C escapes when it is empty or has
/// anything but plain characters, and a lone `;` escaped (it separates commands).
fn exec_word(word: &str) -> String {
    let word = word.replace('%', "%%").replace('$', "$$");
    if word == ";" {
        return "\\;".into();
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_$".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word;
    }
    quoted(&word)
}

/// `"text"` with systemd's C escapes.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn working_directory(lines: &mut Vec<String>, service: &Service) -> Result<(), ExportError> {
    let Some(cwd) = &service.spec.cwd else {
        note(
            lines,
            "No cwd: systemd runs it in / (running-process in the service file's directory).",
        );
        return Ok(());
    };
    if !cwd.is_absolute() {
        return Err(ExportError::Value {
            service: service.name().to_owned(),
            key: "cwd".into(),
            reason: format!(
                "`{}` is relative: read the file with ServiceFile::load (or resolve_paths) first",
                cwd.display()
            ),
        });
    }
    let cwd = path_text(cwd, service.name(), "cwd")?;
    lines.push(format!("WorkingDirectory={}", cwd.replace('%', "%%")));
    Ok(())
}

/// `Environment=` for the service's environment (its `env` and its env files', merged as
/// the supervisor merges them), with `EnvironmentFile=` for each env file systemd reads
/// the same way (plain `KEY=value` lines whose keys `env` does not override): those are
/// read again at each start, as the supervisor reads them at each load.
fn environment(lines: &mut Vec<String>, service: &Service) {
    let spec = &service.spec;
    if !spec.env_clear {
        note(
            lines,
            "running-process passes its own environment on; systemd gives only its own (PATH, LANG, ...) and what follows: add EnvironmentFile= for more.",
        );
    }
    let mut from_files = std::collections::BTreeSet::new();
    for path in &service.env_files {
        match systemd_env_file(path, &spec.env) {
            Ok((text, keys)) => {
                lines.push(format!("EnvironmentFile={}", text.replace('%', "%%")));
                from_files.extend(keys);
            }
            Err(reason) => note(
                lines,
                format!(
                    "env_file {}: {reason}; its values, read when exported, are in Environment= below.",
                    path.display()
                ),
            ),
        }
    }
    for (key, value) in &spec.env {
        if from_files.contains(key) {
            continue;
        }
        lines.push(format!(
            "Environment={}",
            quoted(&format!("{key}={value}").replace('%', "%%"))
        ));
    }
}

/// An env file systemd reads as the supervisor does: its path and keys, or why not.
fn systemd_env_file(
    path: &std::path::Path,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(String, Vec<String>), String> {
    let text = path
        .to_str()
        .filter(|t| path.is_absolute() && !t.contains(['\n', '\r']))
        .ok_or("not an absolute UTF-8 path")?;
    let contents = std::fs::read_to_string(path).map_err(|e| format!("cannot be read ({e})"))?;
    let mut keys = Vec::new();
    for line in contents.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let plain = line.split_once('=').filter(|(key, value)| {
            !key.is_empty()
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !value.contains(['"', '\'', '\\', '$', '#', ';'])
                && value.trim() == *value
        });
        let Some((key, value)) = plain else {
            return Err("systemd does not read every line of it as running-process does (quotes, `export`, variables, comments after a value)".to_owned());
        };
        if env.get(key).is_some_and(|v| v != value) {
            return Err(format!(
                "env overrides {key}, which EnvironmentFile= would override in turn"
            ));
        }
        keys.push(key.to_owned());
    }
    Ok((text.to_owned(), keys))
}

/// `User=`, `Group=`, `SupplementaryGroups=`, `UMask=`, `Limit*=`.
fn identity(lines: &mut Vec<String>, spec: &crate::command::CommandSpec, user_units: bool) {
    let group = |g: &GroupRef| match g {
        GroupRef::Id(id) => id.to_string(),
        GroupRef::Name(name) => name.clone(),
    };
    if user_units {
        if spec.user.is_some() || spec.group.is_some() || spec.supplementary_groups.is_some() {
            note(
                lines,
                "user, group, supplementary_groups: a user unit runs as the user whose service manager runs it.",
            );
        }
    } else {
        user_and_groups(lines, spec, group);
    }
    if let Some(mask) = spec.umask {
        lines.push(format!("UMask={:04o}", mask.0));
    }
    let limits = [
        ("LimitNOFILE", spec.limits.open_files),
        ("LimitNPROC", spec.limits.processes),
        ("LimitCORE", spec.limits.core_size),
    ];
    for (key, limit) in limits {
        if let Some(limit) = limit {
            lines.push(format!("{key}={}", limit_value(limit)));
        }
    }
}

/// `User=`, `Group=`, `SupplementaryGroups=` of a system unit.
fn user_and_groups(
    lines: &mut Vec<String>,
    spec: &crate::command::CommandSpec,
    group: impl Fn(&GroupRef) -> String,
) {
    match &spec.user {
        Some(UserRef::Id(id)) => lines.push(format!("User={id}")),
        Some(UserRef::Name(name)) => lines.push(format!("User={name}")),
        None => {}
    }
    if let Some(g) = &spec.group {
        lines.push(format!("Group={}", group(g)));
    }
    match &spec.supplementary_groups {
        Some(groups) if groups.is_empty() => note(
            lines,
            "supplementary_groups = []: systemd cannot drop the user's supplementary groups.",
        ),
        Some(groups) => lines.push(format!(
            "SupplementaryGroups={}",
            groups.iter().map(&group).collect::<Vec<_>>().join(" ")
        )),
        None => {}
    }
}

fn limit_value(limit: Limit) -> String {
    let one = |v: Option<u64>| v.map_or_else(|| "infinity".to_owned(), |v| v.to_string());
    if limit.soft == limit.hard {
        one(limit.soft)
    } else {
        format!("{}:{}", one(limit.soft), one(limit.hard))
    }
}

fn standard_stream(
    lines: &mut Vec<String>,
    service: &str,
    key: &str,
    output: &Output,
) -> Result<(), ExportError> {
    match output {
        Output::Inherit => {}
        Output::Null => lines.push(format!("{key}=null")),
        Output::Tracing => {
            note(
                lines,
                "output tracing: each line is a tracing event under running-process; the journal here.",
            );
            lines.push(format!("{key}=journal"));
        }
        Output::File { path, rotate } => {
            if let Some(rotation) = rotate {
                note(
                    lines,
                    format!(
                        "rotation (max {} bytes, keep {}) is not done by systemd: use logrotate with copytruncate.",
                        rotation.max_bytes, rotation.keep
                    ),
                );
            }
            let path = path_text(path, service, &key.to_ascii_lowercase())?;
            lines.push(format!("{key}=append:{}", path.replace('%', "%%")));
        }
    }
    Ok(())
}

/// `Restart=` and `RestartSec=`, the rest of the backoff as a comment.
fn restart(lines: &mut Vec<String>, spec: &crate::command::CommandSpec, oneshot: bool) {
    let policy = &spec.restart;
    match policy.kind {
        RestartKind::Permanent => lines.push("Restart=always".into()),
        RestartKind::Transient => {
            lines.push("Restart=on-failure".into());
            // systemd counts these signals as a clean end; running-process only exit 0.
            // (systemd refuses RestartForceExitStatus= in a oneshot unit.)
            if !oneshot {
                lines.push("RestartForceExitStatus=SIGHUP SIGINT SIGTERM SIGPIPE".into());
            }
        }
        RestartKind::Temporary => {
            lines.push("Restart=no".into());
            return;
        }
    }
    let backoff = &policy.backoff;
    lines.push(format!("RestartSec={}", human_duration(backoff.initial)));
    if backoff.multiplier > 1.0 && backoff.max > backoff.initial {
        let steps = if backoff.initial.is_zero() {
            1
        } else {
            let ratio = backoff.max.as_secs_f64() / backoff.initial.as_secs_f64();
            (ratio.ln() / backoff.multiplier.ln()).ceil().max(1.0) as u64
        };
        note(
            lines,
            format!(
                "backoff: x{} per restart up to {}; systemd 254+ can approximate it: RestartSteps={steps} RestartMaxDelaySec={}s.",
                backoff.multiplier,
                human_duration(backoff.max),
                seconds_up(backoff.max)
            ),
        );
    }
    if backoff.jitter != Jitter::None {
        note(lines, "backoff jitter: systemd waits exactly RestartSec=.");
    }
    note(
        lines,
        format!(
            "backoff reset after {} of uptime: systemd has none.",
            human_duration(backoff.reset_after)
        ),
    );
    if !policy.retry_start_up {
        note(
            lines,
            "retry_start_up = false: running-process fails the set's start when a first start fails; systemd applies Restart= to it too.",
        );
    }
}

/// `StartLimitBurst=` and `StartLimitIntervalSec=` from the group's intensity.
fn intensity(lines: &mut Vec<String>, file: &ServiceFile) {
    let intensity = file.group.intensity;
    if intensity.max_restarts == u32::MAX {
        lines.push("StartLimitIntervalSec=0".into());
        return;
    }
    note(
        lines,
        format!(
            "intensity: more than {} restarts within {} stop the whole set under running-process; systemd counts starts per unit and fails only this one.",
            intensity.max_restarts,
            human_duration(intensity.period)
        ),
    );
    lines.push(format!(
        "StartLimitBurst={}",
        u64::from(intensity.max_restarts) + 1
    ));
    lines.push(format!(
        "StartLimitIntervalSec={}",
        human_duration(intensity.period)
    ));
}

fn health(lines: &mut Vec<String>, spec: &crate::command::CommandSpec) {
    let Some(health) = &spec.health else { return };
    match &health.check {
        HealthCheck::Watchdog { timeout } => {
            lines.push(format!("WatchdogSec={}", human_duration(*timeout)));
        }
        check => note(
            lines,
            format!(
                "health: {} every {} (timeout {}, unhealthy after {} failures) then a restart; systemd has only the sd_notify watchdog (WatchdogSec=).",
                describe_health(check),
                human_duration(health.policy.interval),
                human_duration(health.policy.timeout),
                health.policy.failures_before_unhealthy
            ),
        ),
    }
}

fn stop(lines: &mut Vec<String>, spec: &crate::command::CommandSpec) {
    let stop = &spec.stop;
    if stop.request {
        note(
            lines,
            "stop.request: running-process first asks over the daemon's socket; systemd sends KillSignal=. Add ExecStop= with a client command for that.",
        );
    }
    lines.push(format!("KillSignal={}", signal_name(stop.signal)));
    lines.push(format!("TimeoutStopSec={}", human_duration(stop.grace)));
    lines.push(format!(
        "KillMode={}",
        match stop.kill_mode {
            KillMode::ControlGroup => "control-group",
            KillMode::Mixed => "mixed",
            KillMode::Process => "process",
        }
    ));
}

/// How a service depends on a dependency: `Requires=` propagates restarts (an explicit
/// one, and the automatic restart after a crash) to the dependant, which is rest_for_one;
/// `Wants=` does not, which is one_for_one. A one-shot waited for is always required: a
/// failed one keeps its dependants from starting.
fn requirement(strategy: Strategy, condition: Condition) -> &'static str {
    match (strategy, condition) {
        (Strategy::OneForOne, Condition::CompletedSuccessfully) => "Requires",
        (Strategy::OneForOne, _) => "Wants",
        (Strategy::RestForOne | Strategy::OneForAll, _) => "Requires",
    }
}

/// `<group>.target`: wants every service, says what the group's settings become.
fn target_unit(file: &ServiceFile, group: &str, options: &ExportOptions) -> Unit {
    let (systemctl, dir) = if options.user_units {
        ("systemctl --user", "~/.config/systemd/user/")
    } else {
        ("systemctl", "/etc/systemd/system/")
    };
    let mut unit = Unit::headed(&[
        &format!(
            "The running-process group `{}`: `{systemctl} start {group}.target` starts every service, `{systemctl} stop {group}.target` stops them (each is PartOf= it).",
            file.group.name
        ),
        &format!("Install: copy the exported files into {dir}, then `{systemctl} daemon-reload`."),
    ]);
    let lines = unit.section("Unit");
    let names: Vec<&str> = file.services.iter().map(Service::name).collect();
    lines.push(format!(
        "Description=running-process group {}: {}",
        file.group.name,
        names.join(", ")
    ));
    note(
        lines,
        match file.group.strategy {
            Strategy::OneForOne => "strategy one_for_one: a service Wants= its dependencies (Requires= a one-shot it waits for), so systemd restarts no dependant with them; a dependency that fails to start does not keep its dependants from starting.",
            Strategy::RestForOne => "strategy rest_for_one: a service Requires= its dependencies; when systemd restarts a unit (also automatically, after a crash) it restarts the running units that require it, and theirs in turn.",
            Strategy::OneForAll => "strategy one_for_all: this target Requires= every service and each is PartOf= it; when systemd restarts one (also automatically, after a crash) the target restarts and with it every service, completed one-shots included.",
        },
    );
    if file.group.order == crate::supervision::StartOrder::Sequential {
        note(
            lines,
            "order sequential: systemd starts units in parallel where After= allows; add After= between services to keep the file order.",
        );
    }
    let members = match file.group.strategy {
        Strategy::OneForAll => "Requires",
        Strategy::OneForOne | Strategy::RestForOne => "Wants",
    };
    for service in &file.services {
        // Names were checked when the service units were written. A service started on
        // demand is started by its sockets: the target wants those.
        if service.spec.start_on_demand {
            for listener in &service.spec.listeners {
                if let Ok(socket) = socket_unit_name(group, service, listener) {
                    lines.push(format!("{members}={socket}"));
                }
            }
        } else {
            lines.push(format!("{members}={group}-{}.service", service.name()));
        }
    }
    let lines = unit.section("Install");
    lines.push(if options.user_units {
        "WantedBy=default.target".into()
    } else {
        "WantedBy=multi-user.target".into()
    });
    unit
}

/// One `.socket` unit per listener, so that each has its own `FileDescriptorName=` (systemd
/// names every socket of a unit alike): `<group>-<service>-<listener>.socket`.
fn socket_unit_name(
    group: &str,
    service: &Service,
    listener: &Listener,
) -> Result<String, ExportError> {
    Ok(format!(
        "{group}-{}-{}.socket",
        unit_name(service.name())?,
        unit_name(listener.name())?
    ))
}

/// A listener as systemd's socket activation: systemd binds it, holds it across restarts,
/// and passes it by the same `LISTEN_FDS` protocol the supervisor uses.
fn socket_unit(
    file: &ServiceFile,
    group: &str,
    service: &Service,
    listener: &Listener,
) -> Result<Unit, ExportError> {
    let name = service.name();
    let mut unit = Unit::headed(&[&format!(
        "Listener `{}` of service `{name}` (running-process group `{}`): systemd holds the socket and passes it as LISTEN_FDS, as the supervisor does.",
        listener.name(),
        file.group.name
    )]);
    let lines = unit.section("Unit");
    lines.push(format!(
        "Description={} socket of {name} ({} group)",
        listener.name(),
        file.group.name
    ));
    lines.push(format!("PartOf={group}.target"));
    let lines = unit.section("Socket");
    match listener {
        Listener::Unix { path, .. } => {
            let path = path_text(path, name, &format!("listeners.{}", listener.name()))?;
            lines.push(format!("ListenStream={path}"));
            note(lines, "The supervisor's safe-bind rules: socket 0600 in a 0700 directory of its own user.");
            lines.push("SocketMode=0600".into());
            lines.push("DirectoryMode=0700".into());
        }
        Listener::Tcp { address, .. } => {
            // systemd sets SO_REUSEADDR on its listening sockets itself, as the supervisor does.
            lines.push(format!("ListenStream={address}"));
            if address.starts_with('[') {
                lines.push("BindIPv6Only=ipv6-only".into());
            }
        }
    }
    lines.push(format!("FileDescriptorName={}", listener.name()));
    lines.push(format!("Service={group}-{}.service", unit_name(name)?));
    if service.spec.start_on_demand {
        note(lines, "start_on_demand: the first connection starts the service (Accept=no); after an idle exit the next one starts it again.");
    }
    let lines = unit.section("Install");
    lines.push("WantedBy=sockets.target".into());
    Ok(unit)
}

/// The quotas: `MemoryHigh=`, `MemoryMax=`, `CPUQuota=`, `TasksMax=` (the same cgroup
/// v2 files the supervisor writes).
fn quotas(lines: &mut Vec<String>, spec: &crate::command::CommandSpec) {
    if let Some(high) = spec.memory_high {
        lines.push(format!("MemoryHigh={high}"));
    }
    if let Some(max) = spec.memory_max {
        lines.push(format!("MemoryMax={max}"));
    }
    if let Some(cpu) = spec.cpu_max {
        lines.push(format!("CPUQuota={cpu}"));
    }
    if let Some(tasks) = spec.pids_max {
        lines.push(format!("TasksMax={tasks}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_words_are_quoted_and_escaped() {
        assert_eq!(exec_word("--port"), "--port");
        assert_eq!(exec_word(""), "\"\"");
        assert_eq!(exec_word("a b"), "\"a b\"");
        assert_eq!(exec_word("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(exec_word("100%"), "100%%");
        assert_eq!(exec_word("$HOME"), "$$HOME");
        assert_eq!(exec_word(";"), "\\;");
        assert_eq!(exec_word("it's"), "\"it's\"");
    }

    #[test]
    fn unit_names_refuse_what_systemd_refuses() {
        assert_eq!(unit_name("web-1.api").unwrap(), "web-1.api");
        assert!(unit_name("web server").is_err());
        assert!(unit_name("").is_err());
        assert!(unit_name("a/b").is_err());
    }

    #[test]
    fn home_directories_are_user_specific() {
        let home = std::path::Path::new;
        assert!(user_specific(home("/root/.pyenv/shims/python3")).is_some());
        assert!(user_specific(home("/home/ann/.local/bin/tool")).is_some());
        assert!(user_specific(home("/usr/bin/python3")).is_none());
        assert!(user_specific(home("/opt/tool/bin/tool")).is_none());
    }

    #[test]
    fn limits_are_soft_colon_hard() {
        assert_eq!(limit_value(Limit::both(4096)), "4096");
        assert_eq!(limit_value(Limit::unlimited()), "infinity");
        assert_eq!(
            limit_value(Limit {
                soft: Some(1024),
                hard: None
            }),
            "1024:infinity"
        );
    }
}
