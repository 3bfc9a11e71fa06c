//! Why a [`CommandSpec`](super::CommandSpec) cannot work as written: the source of
//! [`StartError::InvalidSpec`](crate::supervision::StartError::InvalidSpec).

use super::checks::CheckError;

/// A [`CommandSpec`](super::CommandSpec) that cannot work as written. Reported as the
/// source of [`StartError::InvalidSpec`](crate::supervision::StartError::InvalidSpec),
/// which is permanent: retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The program is empty.
    #[error("the program is empty")]
    EmptyProgram,
    /// A check command (readiness or health `exec`) is empty.
    #[error("the {0} command is empty")]
    EmptyCommand(&'static str),
    /// No user has this name.
    #[error("no such user: {0:?}")]
    UnknownUser(String),
    /// No group has this name.
    #[error("no such group: {0:?}")]
    UnknownGroup(String),
    /// The user or group database could not be read.
    #[error("cannot look up {what}")]
    Lookup {
        /// What was looked up (`user "www-data"`, `uid 33`, `group "adm"`).
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A URL of the spec is not one this crate can request.
    #[error("bad {field} URL")]
    Url {
        /// `"readiness"` or `"health"`.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: CheckError,
    },
    /// A readiness address does not resolve, or resolves to nothing.
    #[error("readiness address {address:?} does not resolve")]
    Address {
        /// The address as written.
        address: String,
        /// The resolver's error; `None` when it resolved to no address.
        #[source]
        source: Option<std::io::Error>,
    },
    /// Output rotation of a daemon that outlives the supervisor (nobody would read its
    /// output to rotate it).
    #[error("{0:?}: rotation needs the supervisor to read the output, and this daemon outlives it (die_with_supervisor is false)")]
    RotationOfDetached(std::path::PathBuf),
    /// The feature needs another operating system.
    #[error("{0} needs a Unix system")]
    NeedsUnix(&'static str),
    /// The feature is implemented on Linux only.
    #[error("{0}: only supported on Linux")]
    NeedsLinux(&'static str),
    /// A listener of the spec cannot work as written.
    #[error("listener {name:?}: {reason}")]
    Listener {
        /// The listener's name.
        name: String,
        /// What is wrong (`"the address is not a literal ip:port"`, ...).
        reason: &'static str,
    },
    /// `start_on_demand` without a listener: nothing would ever start it.
    #[error("start_on_demand needs at least one listener")]
    OnDemandWithoutListeners,
    /// A quota (`memory_max`, `memory_high`, `cpu_max`, `pids_max`) cannot be enforced
    /// here; the service is not started without it.
    #[error(transparent)]
    Quota(#[from] QuotaError),
}

/// Why a quota of a [`CommandSpec`](super::CommandSpec) (`memory_max`, `memory_high`,
/// `cpu_max`, `pids_max`) cannot be enforced: the service is refused rather than run
/// without it. Reported as [`SpecError::Quota`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The instance gets no cgroup of its own, which quotas are written to.
    #[error("{quota} needs a cgroup of the service's own, and {reason}")]
    NoCgroup {
        /// The first quota set (`"memory_max"`, ...).
        quota: &'static str,
        /// Why there is none: `cgroup = false`, `die_with_supervisor = false`, cgroup v2
        /// not mounted or not writable, or not Linux.
        reason: String,
    },
    /// The service's cgroup lacks the controller the quota needs (a hybrid layout that
    /// keeps it in cgroup v1, or a parent that does not delegate it).
    #[error("{quota} needs the cgroup v2 {controller} controller, which is not available in {} (it offers: {offered})", path.display())]
    NoController {
        /// The quota (`"memory_max"`, ...).
        quota: &'static str,
        /// The controller (`"memory"`, `"cpu"`, `"pids"`).
        controller: &'static str,
        /// The service's cgroup.
        path: std::path::PathBuf,
        /// What its `cgroup.controllers` lists (`"hugetlb"`, or `"none"`).
        offered: String,
    },
    /// Writing the quota to the cgroup failed.
    #[error("cannot write {quota} = {value:?} to {}", path.display())]
    Write {
        /// The quota (`"memory_max"`, ...).
        quota: &'static str,
        /// What was written.
        value: String,
        /// The file written.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl From<SpecError> for crate::supervision::StartError {
    fn from(error: SpecError) -> Self {
        crate::supervision::StartError::InvalidSpec(Box::new(error))
    }
}
