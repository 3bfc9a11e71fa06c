//! `running-process wait [--timeout T] CHECK`: wait until a readiness check passes, with
//! the checks a service file's `readiness` uses
//! ([`running_process::command::wait_until_ready`]). An exported systemd unit runs it as
//! `ExecStartPost=` for the readiness systemd has no directive for.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use running_process::command::{wait_until_ready, Readiness};

use crate::printer;

/// The check to wait for (the `kind`s of a service file's `readiness`).
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP address accepts a connection: `tcp 127.0.0.1:6379`.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// An HTTP GET answers 2xx: `http http://127.0.0.1:8000/health`.
    Http {
        /// `http://host[:port]/path` (no TLS).
        url: String,
    },
    /// A command exits 0, run again every interval: `exec -- pg_isready -h 127.0.0.1`.
    Exec {
        /// Time between two runs (`250ms`, `1s`; the service file's default).
        #[arg(long, value_parser = parse_duration, default_value = "250ms")]
        interval: Duration,
        /// The program and its arguments (no shell).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// A Unix stream socket accepts a connection: `unix-socket /run/app.sock`.
    UnixSocket {
        /// The socket file.
        path: PathBuf,
    },
    /// A file exists: `file /run/app/ready`.
    File {
        /// The file.
        path: PathBuf,
    },
}

impl Check {
    /// The service file's readiness this check is.
    pub fn readiness(self) -> Readiness {
        match self {
            Check::Tcp { address } => Readiness::Tcp { address },
            Check::Http { url } => Readiness::Http { url },
            Check::Exec { interval, command } => Readiness::Exec { command, interval },
            Check::UnixSocket { path } => Readiness::UnixSocket { path },
            Check::File { path } => Readiness::File { path },
        }
    }
}

/// The default of `--timeout`.
pub const DEFAULT_TIMEOUT: &str = "90s";

/// A duration as `human_duration` writes it: a number with `us`, `ms`, `s`, `min` (or `m`),
/// or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (for example 250ms, 10s, 2min)"))?;
    match unit {
        "us" => Ok(Duration::from_micros(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" | "min" => Ok(Duration::from_secs(number.saturating_mul(60))),
        other => Err(format!(
            "unknown unit `{other}` in `{text}`: us, ms, s or min"
        )),
    }
}

/// Wait for `check` at most `timeout`: success once it passes; otherwise the reason on
/// standard error and a failing exit code.
pub async fn run(check: Check, timeout: Duration) -> ExitCode {
    let readiness = check.readiness();
    // An exec check runs where `wait` runs (an exported unit's WorkingDirectory=).
    match wait_until_ready(&readiness, None, timeout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            printer::stderr().print(format!(
                "running-process wait: {}",
                running_process::report::Chain(&error)
            ));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_they_are_written() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500us"), Ok(Duration::from_micros(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
