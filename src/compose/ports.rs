//! Per-run ports: `${port:KEY}` in a service file is a free loopback TCP port, chosen when
//! the file is loaded, the same number for the same key everywhere in the file. Two loads
//! of one file (two `running-process run`s, two `EphemeralStack`s) get different numbers,
//! so they can run side by side.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The prefix of the environment variable a port is passed to a command under:
/// `RUNNING_PROCESS_PORT_<KEY>` ([`Ports::env`]).
pub const PORT_VARIABLE_PREFIX: &str = "RUNNING_PROCESS_PORT_";

/// The ports a service file's `${port:KEY}` references were given, by key.
///
/// A load that is given the ports of an earlier one (`LoadOptions::ports`, feature
/// `toml`) keeps their numbers for the keys it still uses, so that applying an edited file
/// to a running set does not move its services to new ports.
///
/// ```
/// use running_process::compose::Ports;
///
/// let ports = Ports::from_iter([("redis".to_owned(), 6400), ("web-api".to_owned(), 8080)]);
/// assert_eq!(ports.get("redis"), Some(6400));
/// assert_eq!(
///     ports.env(),
///     vec![
///         ("RUNNING_PROCESS_PORT_REDIS".to_owned(), "6400".to_owned()),
///         ("RUNNING_PROCESS_PORT_WEB_API".to_owned(), "8080".to_owned()),
///     ]
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ports(BTreeMap<String, u16>);

impl Ports {
    /// The port of `key`, if the file used it.
    pub fn get(&self, key: &str) -> Option<u16> {
        self.0.get(key).copied()
    }

    /// Every key and its port, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> {
        self.0.iter().map(|(key, port)| (key.as_str(), *port))
    }

    /// Whether the file used no `${port:...}`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The variable a key's port is passed under: `RUNNING_PROCESS_PORT_` and the key in
    /// upper case, `-` and `.` as `_`.
    pub fn variable_name(key: &str) -> String {
        let mut name = String::from(PORT_VARIABLE_PREFIX);
        name.extend(key.chars().map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        }));
        name
    }

    /// The environment a command run against the set gets: one
    /// `RUNNING_PROCESS_PORT_<KEY>=<port>` per key, by key.
    pub fn env(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(key, port)| (Ports::variable_name(key), port.to_string()))
            .collect()
    }

    /// The port of `key`: the one given before if there is one, else a free one, recorded.
    #[cfg_attr(not(feature = "toml"), allow(dead_code))] // `${port:...}` is read by `load.rs`
    pub(crate) fn resolve(&mut self, key: &str, before: &Ports) -> io::Result<u16> {
        if let Some(port) = self.get(key) {
            return Ok(port);
        }
        let port = match before.get(key) {
            Some(port) => port,
            None => free_loopback_port()?,
        };
        self.0.insert(key.to_owned(), port);
        Ok(port)
    }
}

impl FromIterator<(String, u16)> for Ports {
    fn from_iter<I: IntoIterator<Item = (String, u16)>>(iter: I) -> Self {
        Ports(iter.into_iter().collect())
    }
}

/// How many ports this process handed out are remembered, so that it does not hand out
/// one of them again while a service may not have bound it yet.
const REMEMBERED: usize = 4096;

/// The ports this process handed out last.
static HANDED_OUT: Mutex<VecDeque<u16>> = Mutex::new(VecDeque::new());

/// A TCP port on `127.0.0.1` that was free a moment ago: the OS picked it for a listener
/// that is closed again before this returns, and this process has not handed it out
/// recently. (The OS picks from its ephemeral range at a random offset, so two processes
/// rarely get the same one; a service that then finds its port taken fails its readiness
/// check loudly: `StartError::PortInUse` on Linux.)
pub(crate) fn free_loopback_port() -> io::Result<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    // Keep the listeners of refused picks open while looking, so the OS offers others.
    let mut refused = Vec::new();
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if handed_out.contains(&port) {
            refused.push(listener);
            continue;
        }
        if handed_out.len() == REMEMBERED {
            handed_out.pop_front();
        }
        handed_out.push_back(port);
        return Ok(port);
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "the OS kept offering loopback ports this process handed out already",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_never_hands_out_a_port_twice_in_a_row() {
        let ports: Vec<u16> = (0..200).map(|_| free_loopback_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
    }

    #[test]
    fn resolve_keeps_a_key_and_reuses_what_was_given_before() {
        let before = Ports::from_iter([("db".to_owned(), 1234)]);
        let mut ports = Ports::default();
        assert_eq!(ports.resolve("db", &before).unwrap(), 1234);
        let web = ports.resolve("web", &before).unwrap();
        assert_ne!(web, 0);
        assert_eq!(ports.resolve("web", &before).unwrap(), web);
        assert_eq!(ports.iter().count(), 2);
        assert_eq!(
            Ports::variable_name("web-api.v2"),
            "RUNNING_PROCESS_PORT_WEB_API_V2"
        );
    }
}
