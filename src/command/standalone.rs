//! A readiness check waited for outside the supervisor: what `running-process wait` runs,
//! and what an exported systemd unit's `ExecStartPost=` calls for the readiness systemd
//! cannot express.
//!
//! The checks are the supervisor's own ([`Readiness`], with the same HTTP client, check
//! command runner, file watch and connection attempts); only the ownership test is left
//! out, since there is no process tree to compare with: a listener counts whoever holds it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::readiness::{exec_passes, http_answers, tcp_accepts, unix_accepts};
use super::spec::Readiness;
use super::{checks::HttpUrl, CheckError};

/// Why [`wait_until_ready`] did not see its check pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The check did not pass within the timeout.
    #[error("{check}: not ready within {timeout:?}{}", last.as_deref().map(|l| format!(" (last attempt: {l})")).unwrap_or_default())]
    TimedOut {
        /// The check, in words (`http GET http://127.0.0.1:8000/`).
        check: String,
        /// How long it was waited for.
        timeout: Duration,
        /// Why the latest attempt failed, when one failed.
        last: Option<String>,
    },
    /// The check can only be done by the supervisor of the service (sd_notify, a log
    /// line, the identity handshake).
    #[error("{0}: only the service's supervisor can see this readiness")]
    Unsupported(String),
    /// An HTTP URL this crate cannot request.
    #[error("bad URL")]
    Url(#[source] CheckError),
    /// A TCP address that does not resolve, or resolves to nothing.
    #[error("address {address:?} does not resolve")]
    Address {
        /// The address as written.
        address: String,
        /// The resolver's error; `None` when it resolved to no address.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The check command is empty.
    #[error("the check command is empty")]
    EmptyCommand,
    /// A file cannot be watched (its directory does not exist, ...).
    #[error("cannot watch {path:?}")]
    Watch {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Wait until `check` passes, at most `timeout`: a TCP address accepts a connection, an
/// HTTP `GET` answers 2xx, a command exits 0 (run in `cwd`, every `interval` of the check),
/// a Unix socket accepts a connection, a file exists. [`Readiness::Started`] passes at
/// once and [`Readiness::Delay`] after its delay; sd_notify, log lines and the identity
/// handshake are [`WaitError::Unsupported`]. Polls as the supervisor does (5 ms doubling
/// to 200 ms; a file is watched). A timeout error says why the latest attempt failed.
///
/// ```no_run
/// # async fn demo() -> Result<(), running_process::command::WaitError> {
/// use std::time::Duration;
/// use running_process::command::{wait_until_ready, Readiness};
///
/// wait_until_ready(&Readiness::tcp("127.0.0.1:6379"), None, Duration::from_secs(10)).await?;
/// # Ok(()) }
/// ```
pub async fn wait_until_ready(
    check: &Readiness,
    cwd: Option<&Path>,
    timeout: Duration,
) -> Result<(), WaitError> {
    let mut last = None;
    let outcome = tokio::time::timeout(timeout, wait_for(check, cwd, &mut last)).await;
    match outcome {
        Ok(result) => result,
        Err(_) => Err(WaitError::TimedOut {
            check: check.describe(),
            timeout,
            last,
        }),
    }
}

/// The wait itself, without a deadline; `last` holds why the latest attempt failed.
async fn wait_for(
    check: &Readiness,
    cwd: Option<&Path>,
    last: &mut Option<String>,
) -> Result<(), WaitError> {
    match check {
        Readiness::Started => {}
        Readiness::Delay { delay } => tokio::time::sleep(*delay).await,
        Readiness::Tcp { address } => tcp_accepts(&resolve(address).await?, last).await,
        Readiness::Http { url } => {
            let parsed = HttpUrl::parse(url).map_err(WaitError::Url)?;
            http_answers(&parsed, last).await;
        }
        Readiness::Exec { command, interval } => {
            if command.is_empty() {
                return Err(WaitError::EmptyCommand);
            }
            exec_passes(command, *interval, cwd, last).await;
        }
        Readiness::UnixSocket { path } => unix_accepts(path, last).await,
        Readiness::File { path } => {
            *last = Some(format!("{} does not exist", path.display()));
            super::wait::file_appears(path)
                .await
                .map_err(|source| WaitError::Watch {
                    path: path.clone(),
                    source,
                })?;
        }
        Readiness::Notify | Readiness::LogLine { .. } | Readiness::Manifest { .. } => {
            return Err(WaitError::Unsupported(check.describe()));
        }
    }
    Ok(())
}

/// The socket addresses of `host:port`.
async fn resolve(address: &str) -> Result<Vec<std::net::SocketAddr>, WaitError> {
    let addrs: Vec<_> = tokio::net::lookup_host(address)
        .await
        .map_err(|source| WaitError::Address {
            address: address.to_owned(),
            source: Some(source),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(WaitError::Address {
            address: address.to_owned(),
            source: None,
        });
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::within_deadline;

    #[tokio::test]
    async fn a_listening_port_passes_and_a_closed_one_times_out_with_the_reason() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let long = Duration::from_secs(30);
        within_deadline(wait_until_ready(&Readiness::tcp(&address), None, long))
            .await
            .unwrap();
        drop(listener);
        let short = Duration::from_millis(300);
        let error = within_deadline(wait_until_ready(&Readiness::tcp(&address), None, short))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("not ready within 300ms"), "{text}");
        // Windows retries a refused connection for about two seconds: no attempt may end
        // within the timeout there.
        if cfg!(unix) {
            assert!(text.contains("cannot connect to"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_file_passes_once_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        let check = Readiness::File { path: path.clone() };
        let error = wait_until_ready(&check, None, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
        std::fs::write(&path, b"").unwrap();
        within_deadline(wait_until_ready(&check, None, Duration::from_secs(30)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn what_only_the_supervisor_sees_is_refused() {
        let error = wait_until_ready(&Readiness::Notify, None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(error, WaitError::Unsupported(_)), "{error}");
    }
}
