//! The detached supervisor's requests and replies: one JSON object per line, over an
//! application connection of the crate's protocol (after the client verified the
//! supervisor's identity). `docs/PROTOCOL.md` section 10 documents them.

use running_process::compose::Ports;
use running_process::supervision::MemberStatus;
use serde::{Deserialize, Serialize};

use crate::output::Line;

/// A request: the first line a client sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every service's status row.
    Status,
    /// Reply once every service has been ready (or the set ended).
    WaitReady,
    /// Restart one service.
    Restart { service: String },
    /// Start one service that is not running.
    Start { service: String },
    /// Stop one service, or everything and the supervisor (`service` absent).
    Stop { service: Option<String> },
    /// The last `lines` lines of a service, then (with `follow`) new ones as they come.
    Logs {
        service: String,
        lines: usize,
        follow: bool,
    },
    /// The events, as they happen (one line of text each).
    Events,
    /// Apply these files (merged in order, then `services` and `profiles` selected) to
    /// the running set: one `ok` line per service (`web: replaced: args`), then (unless
    /// `dry_run`) one once every service is ready, or an error naming the one that is not.
    Apply {
        files: Vec<std::path::PathBuf>,
        services: Vec<String>,
        profiles: Vec<String>,
        dry_run: bool,
    },
    /// Run `replicas` instances of a service.
    Scale { service: String, replicas: u32 },
}

/// A reply line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// Done; `message` says what for a person.
    Ok { message: String },
    /// The status rows, and the ports the file's `${port:KEY}` were given.
    Status {
        services: Vec<MemberStatus>,
        #[serde(default, skip_serializing_if = "Ports::is_empty")]
        ports: Ports,
    },
    /// One output line (`logs`).
    Line { line: Line },
    /// One event, as text (`events`).
    Event { text: String },
    /// The request failed.
    Error { message: String },
}
