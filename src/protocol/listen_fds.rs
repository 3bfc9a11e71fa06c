//! The daemon's side of socket activation: listening sockets passed by a supervisor with
//! systemd's protocol (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, descriptors from 3),
//! taken once per process and claimed by [`DaemonListener`](super::DaemonListener).

#[cfg(not(target_os = "linux"))]
use std::path::Path;
use std::path::PathBuf;

/// Why an inherited listening socket could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InheritError {
    /// A listener was required ([`DaemonListener::inherit`](super::DaemonListener::inherit))
    /// and none was passed: `LISTEN_FDS` is not set.
    #[error("no listening socket was passed: LISTEN_FDS is not set (the supervisor declares no listener for this service?)")]
    Missing,
    /// `LISTEN_PID` names another process: the descriptors were meant for that process
    /// (this one inherited its environment) and are left alone.
    #[error(
        "LISTEN_PID is {listen_pid:?}, not this process ({pid}): the passed sockets are not for it"
    )]
    NotOurs {
        /// The value of `LISTEN_PID`.
        listen_pid: String,
        /// This process.
        pid: u32,
    },
    /// A variable of the protocol is malformed.
    #[error("{variable}={value:?} is malformed")]
    Malformed {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// A descriptor `LISTEN_FDS` names is not open.
    #[error("descriptor {fd} is named by LISTEN_FDS but is not open")]
    Closed {
        /// The descriptor.
        fd: i32,
    },
    /// Sockets were passed, but none is bound to the endpoint's path.
    #[error("none of the passed sockets is bound to {}: {passed}", path.display())]
    NoMatch {
        /// The endpoint's path.
        path: PathBuf,
        /// What was passed, `name (kind)` each.
        passed: String,
    },
    /// The socket passed for the endpoint is not a listening Unix stream socket.
    #[error("the passed socket {name:?} is {found}, not a listening unix stream socket")]
    WrongKind {
        /// Its name (`LISTEN_FDNAMES`).
        name: String,
        /// What it is (`"not listening"`, `"a datagram socket"`, ...).
        found: &'static str,
    },
    /// A passed descriptor could not be inspected or taken over.
    #[error("cannot use the passed socket {name:?}")]
    Io {
        /// Its name (`LISTEN_FDNAMES`).
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Inheriting listeners is implemented on Linux only.
    #[error("inheriting a listening socket is only supported on Linux")]
    Unsupported,
}

#[cfg(target_os = "linux")]
pub(crate) use linux::claim;

#[cfg(not(target_os = "linux"))]
/// Elsewhere nothing is ever passed.
pub(crate) fn claim(_path: &Path, required: bool) -> Result<Option<Inherited>, InheritError> {
    if required {
        Err(InheritError::Unsupported)
    } else {
        Ok(None)
    }
}

/// A listening socket taken from the environment.
#[cfg(target_os = "linux")]
pub(crate) type Inherited = std::os::fd::OwnedFd;
/// A listening socket taken from the environment (never, off Linux).
#[cfg(not(target_os = "linux"))]
pub(crate) type Inherited = std::convert::Infallible;

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsFd, OwnedFd};
    use std::path::Path;
    use std::sync::Mutex;

    use super::InheritError;
    use crate::platform::listen::{self, Family, ListenEnv};

    /// What this process was passed, read from the environment once.
    enum Passed {
        /// Not read yet.
        Unread,
        /// Nothing (no `LISTEN_FDS`).
        Nothing,
        /// `LISTEN_PID` named another process.
        NotOurs(String),
        /// A malformed variable.
        Malformed(&'static str, String),
        /// A named descriptor was not open.
        Closed(i32),
        /// The descriptors with their names; `None` once claimed.
        Fds(Vec<(String, Option<OwnedFd>)>),
    }

    impl Passed {
        /// Read (and remove) the variables of the environment.
        fn read() -> Passed {
            match listen::take_listen_env() {
                ListenEnv::Absent => Passed::Nothing,
                ListenEnv::NotOurs { listen_pid } => Passed::NotOurs(listen_pid),
                ListenEnv::Malformed { variable, value } => Passed::Malformed(variable, value),
                ListenEnv::Closed { fd } => Passed::Closed(fd),
                ListenEnv::Fds(fds) => {
                    Passed::Fds(fds.into_iter().map(|(n, fd)| (n, Some(fd))).collect())
                }
            }
        }
    }

    static PASSED: Mutex<Passed> = Mutex::new(Passed::Unread);

    /// The passed listening socket bound to `path`, checked and taken (each one can be
    /// claimed once). `Ok(None)`: nothing passed for it; then `required` makes that an
    /// error. Blocking only in the sense of a few system calls.
    pub(crate) fn claim(path: &Path, required: bool) -> Result<Option<OwnedFd>, InheritError> {
        let mut passed = PASSED.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*passed, Passed::Unread) {
            *passed = Passed::read();
        }
        let fds = match &mut *passed {
            Passed::Unread | Passed::Nothing if required => return Err(InheritError::Missing),
            Passed::Unread | Passed::Nothing => return Ok(None),
            Passed::NotOurs(listen_pid) if required => {
                return Err(InheritError::NotOurs {
                    listen_pid: listen_pid.clone(),
                    pid: std::process::id(),
                })
            }
            Passed::NotOurs(listen_pid) => {
                // systemd's `sd_listen_fds` ignores them too: they are another process's.
                tracing::debug!(%listen_pid, "LISTEN_FDS is for another process; binding");
                return Ok(None);
            }
            Passed::Malformed(variable, value) => {
                return Err(InheritError::Malformed {
                    variable,
                    value: value.clone(),
                })
            }
            Passed::Closed(fd) => return Err(InheritError::Closed { fd: *fd }),
            Passed::Fds(fds) => fds,
        };
        let mut seen = Vec::new();
        for (name, slot) in fds.iter_mut() {
            let Some(fd) = slot else { continue };
            let io = |source| InheritError::Io {
                name: name.clone(),
                source,
            };
            let facts = listen::socket_facts(fd.as_fd()).map_err(io)?;
            let Some(facts) = facts else {
                seen.push(format!("{name} (not a socket)"));
                continue;
            };
            if facts.path.as_deref() != Some(path) {
                seen.push(format!("{name} ({})", facts.family.as_str()));
                continue;
            }
            let found = if facts.family != Family::Unix {
                Some("not a unix socket")
            } else if !facts.stream {
                Some("a datagram socket")
            } else if !facts.listening {
                Some("not listening")
            } else {
                None
            };
            if let Some(found) = found {
                return Err(InheritError::WrongKind {
                    name: name.clone(),
                    found,
                });
            }
            // Clients that connect from now on see this process as the peer (the probe's
            // peer-pid check, docs/PROTOCOL.md section 1.4).
            listen::listen_again(fd.as_fd()).map_err(io)?;
            return Ok(slot.take());
        }
        if required {
            return Err(InheritError::NoMatch {
                path: path.to_owned(),
                passed: if fds.is_empty() {
                    "none was passed (LISTEN_FDS=0)".to_owned()
                } else if seen.is_empty() {
                    "all were claimed already".to_owned()
                } else {
                    seen.join(", ")
                },
            });
        }
        Ok(None)
    }
}
