//! Error chains on one line, for logs, events and command-line tools. The crate's errors print only their own
//! message and return their cause from `source()` (so that `{:#}` reports and anyhow print
//! each cause once); where a log line or an event must tell the whole story, it prints the
//! chain through [`Chain`].

use std::error::Error;
use std::fmt;

/// Displays an error and each of its causes, joined by `": "`: the crate's errors print
/// only their own message, so this is the one line that tells the whole story (the
/// `running-process` command line prints its errors with it).
///
/// ```
/// use running_process::report::Chain;
///
/// let error = std::io::Error::other("the disk is full");
/// assert_eq!(Chain(&error).to_string(), "the disk is full");
/// ```
pub struct Chain<'a>(pub &'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Every error of the crate that has a cause prints its own message only, so that a
    //! report of the chain (`{:#}` with anyhow, or [`Chain`]) names each cause once. The
    //! `match`es below are exhaustive: a new variant does not compile until it is listed
    //! here, with a sample if it has a cause.

    use std::error::Error;
    use std::io;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::Chain;
    use crate::command::{CheckError, SharedError, SpecError};
    use crate::handle::{BackendHandleError, ExitStatus, ProbeError};
    use crate::identity::VerifyPidError;
    use crate::protocol::{
        BindError, FrameError, FrameKind, InheritError, ManifestError, UnsafePath,
    };
    use crate::supervision::{ExecFailure, HealthError, LastOutput, StartError};

    fn os() -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, "the OS says no")
    }

    fn unsafe_path() -> UnsafePath {
        UnsafePath::Unreadable {
            path: "/run/x".into(),
            source: os(),
        }
    }

    fn json() -> serde_json::Error {
        serde_json::from_str::<u8>("x").unwrap_err()
    }

    /// One error of each variant that has a cause.
    #[allow(clippy::too_many_lines)] // one sample per error variant with a cause: a checklist
    fn samples() -> Vec<Box<dyn Error + Send + Sync>> {
        let start = || StartError::Spawn(os());
        let inherit_io = || InheritError::Io {
            name: "web".into(),
            source: os(),
        };
        vec![
            Box::new(VerifyPidError::HandleUnsupported {
                pid: 1,
                source: os(),
            }),
            Box::new(VerifyPidError::Unreadable {
                pid: 1,
                what: "boot id",
                source: os(),
            }),
            Box::new(FrameError::Payload {
                kind: FrameKind::Ping,
                source: json(),
            }),
            Box::new(FrameError::Io(os())),
            Box::new(ManifestError::Truncated {
                path: "m".into(),
                source: json(),
            }),
            Box::new(ManifestError::NotJson {
                path: "m".into(),
                source: json(),
            }),
            Box::new(ManifestError::Unsafe(unsafe_path())),
            Box::new(ManifestError::Io {
                path: "m".into(),
                source: os(),
            }),
            Box::new(BindError::Io {
                path: "s".into(),
                source: os(),
            }),
            Box::new(BindError::Inherit {
                path: "s".into(),
                source: inherit_io(),
            }),
            Box::new(inherit_io()),
            Box::new(StartError::Listener {
                name: "web".into(),
                address: "127.0.0.1:1".into(),
                source: Box::new(os()),
            }),
            Box::new(StartError::Listener {
                name: "ctl".into(),
                address: "/run/x/s".into(),
                source: Box::new(BindError::InsecureDirectory {
                    dir: "/run/x".into(),
                    reason: "writable by others",
                }),
            }),
            Box::new(unsafe_path()),
            Box::new(BackendHandleError::VerifyPid(VerifyPidError::Unreadable {
                pid: 1,
                what: "start time",
                source: os(),
            })),
            Box::new(BackendHandleError::Probe(ProbeError::MalformedFrame(
                FrameError::Io(os()),
            ))),
            Box::new(BackendHandleError::Connect(os())),
            Box::new(BackendHandleError::Manifest(ManifestError::Unsafe(
                unsafe_path(),
            ))),
            Box::new(BackendHandleError::Bind(BindError::Io {
                path: "s".into(),
                source: os(),
            })),
            Box::new(BackendHandleError::Signal {
                pid: 1,
                source: os(),
            }),
            Box::new(ProbeError::UnsafeEndpoint(unsafe_path())),
            Box::new(ProbeError::PeerCredentialsUnavailable(os())),
            Box::new(start()),
            Box::new(StartError::Prepare {
                what: "the output file",
                path: "o".into(),
                source: os(),
            }),
            Box::new(StartError::Cgroup {
                parent: "/sys/fs/cgroup/x".into(),
                source: os(),
            }),
            Box::new(StartError::Exec {
                program: "p".into(),
                reason: ExecFailure::Other(os()),
            }),
            Box::new(StartError::Setup {
                program: "p".into(),
                stage: "setuid",
                source: os(),
            }),
            Box::new(StartError::from(SpecError::Lookup {
                what: "user x".into(),
                source: os(),
            })),
            Box::new(StartError::from(SpecError::Quota(
                crate::command::QuotaError::Write {
                    quota: "memory_max",
                    value: "1".into(),
                    path: "memory.max".into(),
                    source: os(),
                },
            ))),
            Box::new(StartError::from(SpecError::Url {
                field: "readiness",
                source: CheckError::BadUrl {
                    url: "x".into(),
                    reason: "not a URL".into(),
                },
            })),
            Box::new(StartError::Backend(BackendHandleError::Connect(os()))),
            Box::new(StartError::Group {
                member: "g/m".into(),
                error: Arc::new(start()),
            }),
            Box::new(HealthError::Backend(BackendHandleError::Connect(os()))),
            Box::new(HealthError::from(CheckError::Connect {
                address: "a:1".into(),
                source: os(),
            })),
            Box::new(CheckError::HttpIo {
                url: "u".into(),
                what: "read the response",
                source: os(),
            }),
            Box::new(CheckError::CommandSpawn {
                program: "c".into(),
                source: os(),
            }),
            Box::new(SpecError::Address {
                address: "a".into(),
                source: Some(os()),
            }),
            Box::new(SharedError::Lock {
                path: "l".into(),
                source: os(),
            }),
            Box::new(SharedError::Replace(BackendHandleError::Connect(os()))),
            Box::new(SharedError::Start(start())),
        ]
    }

    #[test]
    fn each_cause_is_printed_once() {
        for error in samples() {
            let chain = Chain(&*error).to_string();
            let mut link: Option<&dyn Error> = Some(&*error);
            let mut links = 0;
            while let Some(current) = link {
                links += 1;
                if let Some(source) = current.source() {
                    let (own, cause) = (current.to_string(), source.to_string());
                    assert!(
                        !own.contains(&cause),
                        "{own:?} repeats its cause {cause:?} (chain: {chain})"
                    );
                }
                link = current.source();
            }
            assert!(links >= 2, "a sample without a cause: {chain}");
            assert_eq!(
                chain.matches("the OS says no").count(),
                usize::from(chain.contains("the OS says no")),
                "{chain}"
            );
        }
    }

    #[test]
    fn the_chain_names_every_cause() {
        let error = StartError::from(SpecError::Lookup {
            what: "user x".into(),
            source: os(),
        });
        assert_eq!(
            Chain(&error).to_string(),
            "invalid service spec: cannot look up user x: the OS says no"
        );
    }

    /// Exhaustive: a new variant must be added to `samples` (if it has a cause) or here.
    #[allow(dead_code)]
    fn every_variant_is_considered(
        start: StartError,
        health: HealthError,
        shared: SharedError,
        bind: BindError,
        inherit: InheritError,
        spec: SpecError,
    ) {
        match bind {
            BindError::Inherit { .. } | BindError::Io { .. } => {} // sampled
            BindError::AlreadyRunning { .. }
            | BindError::InsecureDirectory { .. }
            | BindError::NotASocket { .. } => {} // no cause
        }
        match inherit {
            InheritError::Io { .. } => {} // sampled
            InheritError::Missing
            | InheritError::NotOurs { .. }
            | InheritError::Malformed { .. }
            | InheritError::Closed { .. }
            | InheritError::NoMatch { .. }
            | InheritError::WrongKind { .. }
            | InheritError::Unsupported => {} // no cause
        }
        match spec {
            SpecError::Lookup { .. }
            | SpecError::Url { .. }
            | SpecError::Address { .. }
            | SpecError::Quota(_) => {}
            SpecError::EmptyProgram
            | SpecError::EmptyCommand(_)
            | SpecError::UnknownUser(_)
            | SpecError::UnknownGroup(_)
            | SpecError::RotationOfDetached(_)
            | SpecError::NeedsUnix(_)
            | SpecError::NeedsLinux(_)
            | SpecError::Listener { .. }
            | SpecError::OnDemandWithoutListeners => {} // no cause
        }
        match start {
            StartError::Listener { .. }
            | StartError::Spawn(_)
            | StartError::Prepare { .. }
            | StartError::Cgroup { .. }
            | StartError::Exec { .. }
            | StartError::Setup { .. }
            | StartError::InvalidSpec(_)
            | StartError::Backend(_)
            | StartError::Group { .. } => {} // sampled
            StartError::PortInUse { .. }
            | StartError::ExitedBeforeReady { .. }
            | StartError::ReadyTimeout(_)
            | StartError::ReadinessLost(_)
            | StartError::GroupEnded { .. } => {} // no cause
        }
        match health {
            HealthError::Backend(_) | HealthError::Check(_) => {}
            HealthError::Timeout(_) | HealthError::Failed(_) => {}
        }
        match shared {
            SharedError::Lock { .. } | SharedError::Replace(_) | SharedError::Start(_) => {}
            SharedError::NeedsManifest
            | SharedError::LockTimeout(..)
            | SharedError::DigestMismatch { .. } => {}
        }
        let _ = (
            ExitStatus::Unknown,
            LastOutput::default(),
            PathBuf::new(),
            Duration::ZERO,
        );
    }
}
