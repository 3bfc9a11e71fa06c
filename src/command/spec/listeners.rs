//! [`Listener`]: a listening socket the supervisor binds once and hands to every instance
//! of the service (systemd's socket activation).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A listening socket declared in a [`CommandSpec`](super::CommandSpec). The supervisor
/// binds it before the first start and keeps it across restarts; every instance finds the
/// spec's listeners at descriptors 3, 4, ... in the spec's order, with systemd's variables
/// `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` (the names), so programs written for
/// `sd_listen_fds`, Rust's `listenfd` or Python's `socket.fromfd(3, ...)` work unchanged.
/// While an instance restarts, clients wait in the socket's backlog instead of being
/// refused. Linux only: elsewhere a spec with listeners cannot start (an invalid spec).
///
/// ```
/// use running_process::command::{CommandSpec, Listener};
/// let spec = CommandSpec::new("web", "/usr/bin/my-server")
///     .listener(Listener::tcp("http", "127.0.0.1:8080"))
///     .listener(Listener::unix("control", "/run/user/1000/web/control.sock"));
/// let json = serde_json::to_string(&spec.listeners).unwrap();
/// assert_eq!(
///     json,
///     r#"[{"kind":"tcp","name":"http","address":"127.0.0.1:8080"},{"kind":"unix","name":"control","path":"/run/user/1000/web/control.sock"}]"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Listener {
    /// A Unix stream socket at `path`, bound by the crate's safe rules (those of
    /// [`DaemonListener::bind`](crate::protocol::DaemonListener::bind)): its directory is
    /// created 0700 if missing and refused if others can write to it, is a symlink or
    /// belongs to another user; the socket is 0600; a stale socket file left by a crash is
    /// replaced, a live one is never displaced. The supervisor removes it when it lets go
    /// of the listener.
    Unix {
        /// The name in `LISTEN_FDNAMES`.
        name: String,
        /// The socket path.
        path: PathBuf,
    },
    /// A TCP socket on `address`, a literal `ip:port` (`127.0.0.1:8080`, `[::1]:8080`; no
    /// host names, as with systemd's `ListenStream=`), with `SO_REUSEADDR`; an IPv6
    /// address listens on IPv6 only.
    Tcp {
        /// The name in `LISTEN_FDNAMES`.
        name: String,
        /// `ip:port`.
        address: String,
    },
}

impl Listener {
    /// A Unix stream socket called `name` at `path`.
    pub fn unix(name: impl Into<String>, path: impl Into<PathBuf>) -> Listener {
        Listener::Unix {
            name: name.into(),
            path: path.into(),
        }
    }

    /// A TCP socket called `name` on `address` (`ip:port`).
    pub fn tcp(name: impl Into<String>, address: impl Into<String>) -> Listener {
        Listener::Tcp {
            name: name.into(),
            address: address.into(),
        }
    }

    /// Its name in `LISTEN_FDNAMES`.
    pub fn name(&self) -> &str {
        match self {
            Listener::Unix { name, .. } | Listener::Tcp { name, .. } => name,
        }
    }

    /// Where it listens, for messages: the path or the address.
    pub fn address(&self) -> String {
        match self {
            Listener::Unix { path, .. } => path.display().to_string(),
            Listener::Tcp { address, .. } => address.clone(),
        }
    }
}
