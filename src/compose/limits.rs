//! The open-files limit a service file needs: raised to the hard limit and checked before
//! anything starts ([`check_open_files`]), so a file too big for the machine's limit fails
//! at once, naming the numbers, instead of after its 150th service.

use crate::command::{raise_open_files_limit, OpenFiles, SUPERVISOR_DESCRIPTORS};

use super::ServiceFile;

/// Why a service file cannot run within this process's open-files limit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenFilesError {
    /// The hard limit is below what the file needs: raising the soft limit cannot help.
    #[error(
        "the open-files limit is too low for this file: its {instances} service instances \
         need about {needed} descriptors (with {SUPERVISOR_DESCRIPTORS} for the supervisor), \
         and the hard limit is {hard}; raise it (`ulimit -Hn`, systemd's LimitNOFILE=, \
         /etc/security/limits.conf) or run fewer services"
    )]
    TooLow {
        /// The file's estimate ([`ServiceFile::descriptor_estimate`]).
        needed: u64,
        /// Its service instances (replicas counted).
        instances: u64,
        /// The hard limit.
        hard: u64,
    },
    /// The soft limit could not be raised to the hard one.
    #[error("cannot raise the soft open-files limit to the hard limit")]
    Raise(#[source] std::io::Error),
}

impl ServiceFile {
    /// About how many descriptors a supervisor of this file holds with every service
    /// running: each service's
    /// [`CommandSpec::descriptor_estimate`](crate::command::CommandSpec::descriptor_estimate)
    /// times its replicas, plus [`SUPERVISOR_DESCRIPTORS`].
    pub fn descriptor_estimate(&self) -> u64 {
        self.services
            .iter()
            .map(|s| s.spec.descriptor_estimate() * u64::from(s.replicas))
            .sum::<u64>()
            + SUPERVISOR_DESCRIPTORS
    }
}

/// Raise this process's soft open-files limit to the hard limit
/// ([`raise_open_files_limit`]) and check that `file` fits in it
/// ([`ServiceFile::descriptor_estimate`]): call it before
/// [`Stack::start`](super::Stack::start), as the `running-process` command line does, so
/// a file that cannot fit fails before anything runs.
pub fn check_open_files(file: &ServiceFile) -> Result<OpenFiles, OpenFilesError> {
    let limit = raise_open_files_limit().map_err(OpenFilesError::Raise)?;
    let needed = file.descriptor_estimate();
    match limit.hard {
        Some(hard) if hard < needed => Err(OpenFilesError::TooLow {
            needed,
            instances: file.services.iter().map(|s| u64::from(s.replicas)).sum(),
            hard,
        }),
        _ => Ok(limit),
    }
}
