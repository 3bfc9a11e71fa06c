//! Descriptors: what a supervisor holds for each running instance of a [`CommandSpec`]
//! (an estimate, [`CommandSpec::descriptor_estimate`]), and the open-files limit it raises
//! for itself ([`raise_open_files_limit`]).

use std::io;

use super::spec::{CommandSpec, Output, Readiness};

/// Descriptors a supervising process keeps besides its services' (the async runtime, the
/// spawner thread, the cgroup keeper's pipe, standard streams, its own socket and its
/// clients, a manifest or log being written): the reserve [`raise_open_files_limit`]'s
/// callers add to the services' estimates.
pub const SUPERVISOR_DESCRIPTORS: u64 = 64;

/// The open-files limit (`RLIMIT_NOFILE`) of the supervising process; `None` is
/// unlimited (and every field is `None` on Windows, which has no such limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenFiles {
    /// The soft limit the process started with.
    pub before: Option<u64>,
    /// The soft limit now (the hard one, once raised).
    pub soft: Option<u64>,
    /// The hard limit: the most this process may have.
    pub hard: Option<u64>,
}

/// Raise this process's soft open-files limit to its hard limit, as systemd and Go's
/// runtime do at start (the common soft limit of 1,024 is reached by about 150 services);
/// idempotent. Children started afterwards by a [`CommandSupervisor`](super::CommandSupervisor)
/// get the soft limit the process started with back (Linux; unless their spec sets
/// `limits.open_files`), since a program using `select()` breaks above 1,024; on macOS
/// they inherit the raised one. Where the hard limit is unlimited (macOS) the soft one
/// becomes 10,240 (`OPEN_MAX`). Cheap (two system calls).
///
/// The `running-process` command line calls it before it starts anything (through
/// [`compose::check_open_files`](crate::compose::check_open_files)).
pub fn raise_open_files_limit() -> io::Result<OpenFiles> {
    let limit = crate::platform::raise_open_files()?;
    Ok(OpenFiles {
        before: limit.before,
        soft: limit.soft,
        hard: limit.hard,
    })
}

impl CommandSpec {
    /// About how many descriptors a supervisor holds for one running instance of this
    /// spec: an estimate for a limit check, not a bound (a service's own descriptors count
    /// against its own limit, not the supervisor's).
    ///
    /// Per running instance, a [`CommandSupervisor`](super::CommandSupervisor) holds:
    ///
    /// | descriptors | what |
    /// |---|---|
    /// | 1 | the pidfd of its main process (one, shared by its owner and its handle) |
    /// | 1 per stream read | the read end of its stdout and of its stderr, when the supervisor reads them ([`Output::Tracing`], or a rotated file, which adds the file it writes) |
    /// | 4 | with a cgroup (Linux): the directory and its `cgroup.events`, and the same for the spare cgroup made ahead for its next instance |
    /// | 1 | its sd_notify socket (`Readiness::Notify`, a watchdog, an fd store) |
    /// | 1 per listener, `fd_store_max` | the listening sockets held for it, the descriptors it may store |
    /// | 2 | in passing: a readiness or health check's connection, an inotify watch while its tree empties |
    ///
    /// Measured (issue 30): a supervisor of 500 services of `sleep`, their output read,
    /// each in a cgroup, held 2,514 descriptors, about 5 per service (no spare yet: spares
    /// are made when an instance ends), against an estimate of 9.
    pub fn descriptor_estimate(&self) -> u64 {
        let streams: u64 = [&self.stdout, &self.stderr]
            .into_iter()
            .map(|output| match output {
                Output::Tracing => 1,
                Output::File {
                    rotate: Some(_), ..
                } => 2,
                _ => 0,
            })
            .sum();
        let cgroup = if crate::platform::HAS_CGROUPS && self.cgroup && self.die_with_supervisor {
            4
        } else {
            0
        };
        let watchdog = matches!(
            self.health.as_ref().map(|h| &h.check),
            Some(super::spec::HealthCheck::Watchdog { .. })
        );
        let notify = u64::from(
            matches!(self.readiness, Readiness::Notify) || watchdog || self.fd_store_max > 0,
        );
        let held = self.listeners.len() as u64 + u64::from(self.fd_store_max);
        1 + streams + cgroup + notify + held + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_counts_what_the_spec_asks_for() {
        let plain = CommandSpec::new("a", "sleep");
        let base = plain.descriptor_estimate();
        let cgroup = if cfg!(target_os = "linux") { 4 } else { 0 };
        assert_eq!(base, 1 + cgroup + 2);
        let read = CommandSpec::new("b", "sleep")
            .stdout(Output::Tracing)
            .stderr(Output::Tracing)
            .readiness(Readiness::Notify);
        assert_eq!(read.descriptor_estimate(), base + 3);
        let mut detached = CommandSpec::new("c", "sleep");
        detached.cgroup = false;
        assert_eq!(detached.descriptor_estimate(), 3);
    }

    #[test]
    fn raising_the_limit_is_idempotent_and_reaches_the_hard_limit() {
        let first = raise_open_files_limit().unwrap();
        let second = raise_open_files_limit().unwrap();
        assert_eq!(first, second);
        #[cfg(target_os = "linux")]
        assert_eq!(second.soft, second.hard);
    }
}
