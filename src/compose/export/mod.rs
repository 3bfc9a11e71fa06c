//! A [`ServiceFile`] as systemd units or Kubernetes manifests, for users who outgrow one
//! machine: `running-process export systemd|kubernetes` prints what these functions return.
//!
//! - [`systemd_units`]: one `<group>-<service>.service` unit per service and a
//!   `<group>.target` that wants them all (`systemctl start <group>.target` starts the set,
//!   `systemctl stop <group>.target` stops it, since every service is `PartOf=` it).
//! - [`kubernetes_manifests`]: one Pod per group, one container per service, so the
//!   services share `localhost` as they do under the supervisor (a Deployment of one
//!   replica when the Pod's restart policy is `Always`, which a Deployment requires).
//!
//! What the target cannot express (the identity handshake, log-line readiness, health
//! checks other than the sd_notify watchdog, output rotation, a group strategy...) is
//! written into the output as a `#` comment next to what it concerns, never dropped
//! silently. What cannot be exported at all is an [`ExportError`].
//!
//! # Each key of the service file
//!
//! "comment": the key is said in a `#` comment of the output, not carried out. The full
//! tables, with the details of each mapping, are on [`systemd_units`] and
//! [`kubernetes_manifests`].
//!
//! | key | systemd | Kubernetes |
//! |---|---|---|
//! | `program`, `args` | `ExecStart=`; a bare name found in systemd's search path as its absolute path there, else the path found (a comment if systemd does not search its directory) | `command`, `args` |
//! | `command` | as `program` `sh`, `args` `-c 'exec ...'` | the same |
//! | `cwd` | `WorkingDirectory=` | `workingDir` |
//! | `env` | `Environment=` | `env` |
//! | `env_file` | `EnvironmentFile=` when systemd reads the file alike (plain lines, no key `env` overrides), else its values as `Environment=` | its values as `env` |
//! | `env_clear` | (systemd always starts from its own environment; without it, a comment) | comment |
//! | `user`, `group` | `User=`, `Group=` (`--user` units: comment) | `runAsUser`, `runAsGroup` if numeric, else comment |
//! | `supplementary_groups` | `SupplementaryGroups=` | comment |
//! | `umask` | `UMask=` | comment |
//! | `limits` | `LimitNOFILE=`, `LimitNPROC=`, `LimitCORE=` | comment |
//! | `stdout`, `stderr` | `StandardOutput=`/`StandardError=` (`append:`, `null`, the journal); rotation: comment | comment (the container log) |
//! | `readiness` `started` | `Type=exec` | (none needed) |
//! | `readiness` `notify` | `Type=notify`, `NotifyAccess=all` | comment |
//! | `readiness` `tcp`, `http`, `exec` | `ExecStartPost=running-process wait tcp\|http\|exec ...` | `startupProbe` and `readinessProbe` |
//! | `readiness` `unix_socket`, `file` | `ExecStartPost=running-process wait unix-socket\|file ...` | comment |
//! | `readiness` `delay` | `ExecStartPost=/bin/sleep` | comment |
//! | `readiness` `log_line`, `manifest` | comment | comment |
//! | `ready_timeout_ms` | `TimeoutStartSec=` (also the wait's `--timeout`) | the `startupProbe`'s `failureThreshold` |
//! | `health` `tcp`, `http`, `exec` | comment | `livenessProbe` |
//! | `health` `watchdog` | `WatchdogSec=` | comment |
//! | `health` `ping`, `unix_socket` | comment | comment |
//! | `stop` `signal`, `grace_ms` | `KillSignal=`, `TimeoutStopSec=` | grace: the Pod's `terminationGracePeriodSeconds`; signal: comment |
//! | `stop` `kill_mode` | `KillMode=` | comment |
//! | `stop` `request` | comment | comment |
//! | `restart` `kind` | `Restart=` | the Pod's `restartPolicy` |
//! | `restart` `backoff` | `RestartSec=` (initial); the rest: comment | comment |
//! | `listeners` | one `.socket` unit each (`ListenStream=`, `FileDescriptorName=`) | TCP: `ports`; comment |
//! | `start_on_demand` | the target wants the sockets, not the service | comment |
//! | `fd_store_max` | `FileDescriptorStoreMax=` | comment |
//! | `memory_max` | `MemoryMax=` | `resources.limits.memory` (`Mi`, `Gi`) |
//! | `memory_high` | `MemoryHigh=` | comment |
//! | `cpu_max` | `CPUQuota=` | `resources.limits.cpu` (millicores: `50%` is `500m`) |
//! | `pids_max` | `TasksMax=` | comment (the kubelet's `podPidsLimit`) |
//! | `cgroup`, `die_with_supervisor` | comment | comment |
//! | `depends_on` `started`, `ready` | `After=` plus `Wants=` or `Requires=` (by strategy) | comment |
//! | `depends_on` `healthy` | as `ready`, and a comment | comment |
//! | `depends_on` `completed_successfully` | the dependency is `Type=oneshot`, `RemainAfterExit=yes`; `Requires=` | an init container |
//! | `replicas` | one unit, and a comment | comment |
//! | `profiles` | (the file as loaded: every service) | the same |
//! | `group.name` | the units' prefix and `<name>.target` | the object's name |
//! | `group.strategy` | `Wants=`/`Requires=` (one_for_all: the target `Requires=` each) | comment |
//! | `group.intensity` | `StartLimitBurst=`, `StartLimitIntervalSec=` (per unit) | comment |
//! | `group.order` | comment | comment |
//!
//! ```
//! # #[cfg(feature = "toml")] {
//! use running_process::compose::export::{kubernetes_manifests, systemd_units, ExportOptions};
//! use running_process::compose::ServiceFile;
//!
//! let file = ServiceFile::from_toml_str(r#"
//!     [group]
//!     name = "dev"
//!
//!     [services.web]
//!     program = "/usr/bin/python3"
//!     args = ["-m", "http.server", "8000"]
//!     readiness = { kind = "http", url = "http://127.0.0.1:8000/" }
//! "#, "running-process.toml")?;
//!
//! let units = systemd_units(&file)?;
//! assert_eq!(units[0].name, "dev-web.service");
//! assert!(units[0].contents.contains("ExecStart=/usr/bin/python3 -m http.server 8000"));
//! assert_eq!(units[1].name, "dev.target");
//!
//! let options = ExportOptions::default().image("python:3.12-slim");
//! let manifests = kubernetes_manifests(&file, &options)?;
//! assert!(manifests[0].contents.contains("httpGet:"));
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::ServiceFile;
use crate::command::{HealthCheck, Readiness, StopSignal};
use crate::supervision::Condition;

mod kubernetes;
mod systemd;
mod yaml;

pub use kubernetes::{kubernetes_manifests, PLACEHOLDER_IMAGE};
pub use systemd::{systemd_units, systemd_units_with};

/// Where a service file is exported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// systemd units ([`systemd_units`]).
    Systemd,
    /// Kubernetes manifests ([`kubernetes_manifests`]).
    Kubernetes,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Systemd => "systemd",
            Target::Kubernetes => "kubernetes",
        })
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    /// `systemd`, or `kubernetes` (also `k8s`).
    fn from_str(text: &str) -> Result<Target, String> {
        match text {
            "systemd" => Ok(Target::Systemd),
            "kubernetes" | "k8s" => Ok(Target::Kubernetes),
            other => Err(format!(
                "unknown export target `{other}`: systemd or kubernetes"
            )),
        }
    }
}

/// Choices an export needs that the service file does not hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportOptions {
    /// Kubernetes: the container image of every service without one in `images`.
    /// `None` writes [`PLACEHOLDER_IMAGE`] with a comment saying to replace it.
    pub image: Option<String>,
    /// Kubernetes: the container image of a service, by service name.
    pub images: BTreeMap<String, String>,
    /// systemd: units for a user's service manager (`systemctl --user`, installed in
    /// `~/.config/systemd/user/`): the target is `WantedBy=default.target`, and no unit has
    /// `User=` or `Group=` (a comment says so where the file sets them).
    pub user_units: bool,
    /// systemd: the `running-process` binary that `ExecStartPost=` runs to wait for a
    /// readiness systemd has no directive for (`running-process wait`). `None` writes the
    /// bare name, which systemd looks for in its search path; the command line writes its
    /// own path. A comment in each unit says which.
    pub wait_program: Option<PathBuf>,
}

impl ExportOptions {
    /// The image of every service without its own.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// systemd: user units ([`ExportOptions::user_units`]).
    pub fn user_units(mut self, user_units: bool) -> Self {
        self.user_units = user_units;
        self
    }

    /// systemd: the `running-process` binary of the readiness waits
    /// ([`ExportOptions::wait_program`]).
    pub fn wait_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.wait_program = Some(program.into());
        self
    }

    /// The image of one service.
    pub fn service_image(mut self, service: impl Into<String>, image: impl Into<String>) -> Self {
        self.images.insert(service.into(), image.into());
        self
    }
}

/// One file of an export: its name (no directory) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFile {
    /// The file name, for example `dev-web.service` or `dev.yaml`.
    pub name: String,
    /// The file's text, ending with a newline.
    pub contents: String,
}

/// What makes a service file impossible to export (everything else that does not map is
/// a comment in the output).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A service or group name cannot name a systemd unit or a Kubernetes object.
    #[error("`{name}` cannot be a {target} name: {reason}; rename it in the service file")]
    Name {
        /// The service or group name.
        name: String,
        /// The export target.
        target: Target,
        /// What is wrong with it.
        reason: String,
    },
    /// Two services become the same Kubernetes container name once made valid.
    #[error("services `{first}` and `{second}` would both be the container `{container}`")]
    NameClash {
        /// One service.
        first: String,
        /// The other.
        second: String,
        /// The container name both map to.
        container: String,
    },
    /// A value cannot be written in the target's syntax (a path that is not UTF-8, a line
    /// break in a path, a relative working directory).
    #[error("services.{service}.{key}: {reason}")]
    Value {
        /// The service.
        service: String,
        /// Its key at fault.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// A path as UTF-8 text on one line, or the [`ExportError::Value`] of `service.key`.
fn path_text<'a>(path: &'a Path, service: &str, key: &str) -> Result<&'a str, ExportError> {
    let error = |reason: &str| ExportError::Value {
        service: service.to_owned(),
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let text = path
        .to_str()
        .ok_or_else(|| error("the path is not UTF-8"))?;
    if text.contains(['\n', '\r']) {
        return Err(error("the path has a line break"));
    }
    Ok(text)
}

/// Whether some service waits for `name` to complete successfully (a one-shot task: a
/// `Type=oneshot` unit, an init container).
fn awaited_completion(file: &ServiceFile, name: &str) -> bool {
    file.services.iter().any(|s| {
        s.depends_on
            .iter()
            .any(|d| d.service == name && d.condition == Condition::CompletedSuccessfully)
    })
}

/// A stop signal's name, as systemd's `KillSignal=` and a Dockerfile's `STOPSIGNAL` write it.
fn signal_name(signal: StopSignal) -> &'static str {
    match signal {
        StopSignal::Sigterm => "SIGTERM",
        StopSignal::Sigint => "SIGINT",
        StopSignal::Sighup => "SIGHUP",
        StopSignal::Sigquit => "SIGQUIT",
        StopSignal::Sigusr1 => "SIGUSR1",
        StopSignal::Sigusr2 => "SIGUSR2",
        StopSignal::Sigkill => "SIGKILL",
    }
}

/// A readiness check in words, for comments: `tcp 127.0.0.1:6400`.
fn describe_readiness(readiness: &Readiness) -> String {
    readiness.describe()
}

/// A health check in words, for comments: `http GET http://127.0.0.1:8000/`.
fn describe_health(check: &HealthCheck) -> String {
    match check {
        HealthCheck::Ping => "a ping frame over the daemon's socket".into(),
        HealthCheck::Tcp { address } => format!("tcp {address}"),
        HealthCheck::Http { url } => format!("http GET {url}"),
        HealthCheck::Exec { command } => format!("exec {command:?}"),
        HealthCheck::UnixSocket { path } => format!("unix socket {}", path.display()),
        HealthCheck::Watchdog { timeout } => {
            format!("sd_notify WATCHDOG=1 within {}", human_duration(*timeout))
        }
    }
}

use crate::command::spec::human_duration;

/// Whole seconds, rounded up (Kubernetes probe fields, systemd's `RestartMaxDelaySec=`).
fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl ServiceFile {
    /// This file as the files of `target` ([`systemd_units`] or [`kubernetes_manifests`]).
    /// For systemd it looks programs up in `PATH`: call it from a blocking context.
    pub fn export(
        &self,
        target: Target,
        options: &ExportOptions,
    ) -> Result<Vec<ExportedFile>, ExportError> {
        match target {
            Target::Systemd => systemd_units_with(self, options),
            Target::Kubernetes => kubernetes_manifests(self, options),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_systemd_time_spans() {
        assert_eq!(human_duration(Duration::from_secs(300)), "300s");
        assert_eq!(human_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(human_duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(human_duration(Duration::ZERO), "0s");
        assert_eq!(seconds_up(Duration::from_millis(1)), 1);
        assert_eq!(seconds_up(Duration::from_secs(2)), 2);
    }

    #[test]
    fn targets_parse_and_display() {
        assert_eq!("systemd".parse::<Target>(), Ok(Target::Systemd));
        assert_eq!("k8s".parse::<Target>(), Ok(Target::Kubernetes));
        assert_eq!(Target::Kubernetes.to_string(), "kubernetes");
        assert!("nomad".parse::<Target>().is_err());
    }
}
