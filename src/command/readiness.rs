//! Waiting until a command is ready, believing only the service's own processes.
//!
//! A TCP or HTTP port counts only when its listening socket is held by a process of the
//! service's tree: the socket inode from `/proc/net/tcp{,6}` must be among the
//! descriptors of the tree's processes (Linux). A stranger that listens on the port (or an
//! orphan of an earlier instance) is never taken for the service; if it listens before
//! the spawn, the start fails at once with [`StartError::PortInUse`] naming it. Elsewhere
//! the ownership cannot be read and a successful connection is believed.
//!
//! The OS raises no event when a port starts listening, so these waits poll, with a delay
//! growing from 5 ms to 50 ms: quick for a fast service, cheap for a slow one. The
//! caller's ready timeout ends them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::checks::{self, HttpUrl};
use super::spec::Readiness;
use super::spec_error::SpecError;
use super::wait;
use crate::blocking::blocking;
use crate::handle::BackendHandle;
use crate::platform::{self, Listening, ProcessTree};
use crate::protocol::CacheManifest;
use crate::supervision::StartError;

/// Parse a readiness URL: a bad one is an invalid spec.
fn parse_url(url: &str) -> Result<HttpUrl, StartError> {
    HttpUrl::parse(url).map_err(|source| {
        SpecError::Url {
            field: "readiness",
            source,
        }
        .into()
    })
}

const FIRST_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_millis(50);

/// The pause between two looks at something that raises no event: 5 ms, doubling to 50 ms
/// (a service that takes 300 ms to listen is seen within 50 ms of it, not 200).
struct Pause(Duration);

impl Pause {
    fn new() -> Pause {
        Pause(FIRST_DELAY)
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_DELAY);
    }
}

/// What a readiness wait looks at.
pub(crate) struct ReadyWait<'a> {
    /// The main process.
    pub main: &'a BackendHandle,
    /// Its tree.
    pub tree: &'a Arc<ProcessTree>,
    /// The service's user, for the ownership of a Unix socket.
    pub uid: Option<u32>,
    /// Set by the sd_notify reader on `READY=1`.
    pub notified: watch::Receiver<bool>,
    /// The first line matching a log-line pattern.
    pub line: oneshot::Receiver<String>,
    /// The service's working directory, where an exec check runs.
    pub cwd: Option<&'a std::path::Path>,
}

/// The addresses a TCP or HTTP readiness watches, resolved (`Ok(None)` for other kinds).
pub(crate) async fn watched_addresses(
    readiness: &Readiness,
) -> Result<Option<(String, Vec<SocketAddr>)>, StartError> {
    let address = match readiness {
        Readiness::Tcp { address } => address.clone(),
        Readiness::Http { url } => parse_url(url)?.connect_address(),
        _ => return Ok(None),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address.as_str())
        .await
        .map_err(|source| SpecError::Address {
            address: address.clone(),
            source: Some(source),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(SpecError::Address {
            address,
            source: None,
        }
        .into());
    }
    Ok(Some((address, addrs)))
}

/// Before the spawn: fail if another process already listens where the service will
/// (it could never become ready, and a connection would reach the stranger). `ours`: the
/// inodes of the listeners the supervisor holds for the service, which are not strangers.
pub(crate) async fn check_free(readiness: &Readiness, ours: &[u64]) -> Result<(), StartError> {
    let (address, inodes) = if let Some((address, addrs)) = watched_addresses(readiness).await? {
        let inodes = blocking(move || platform::listener_inodes(Listening::Tcp(&addrs))).await;
        (address, inodes)
    } else if let Readiness::UnixSocket { path } = readiness {
        let owned = path.clone();
        let inodes = blocking(move || platform::listener_inodes(Listening::Unix(&owned))).await;
        (path.display().to_string(), inodes)
    } else {
        return Ok(());
    };
    match inodes.iter().find(|i| !ours.contains(i)) {
        None => Ok(()),
        Some(&inode) => Err(StartError::PortInUse {
            address,
            holder: platform::socket_holder(inode),
        }),
    }
}

/// Wait for `readiness`; for the manifest handshake, returns the verified handle.
pub(crate) async fn wait_ready(
    readiness: &Readiness,
    wait: ReadyWait<'_>,
) -> Result<BackendHandle, StartError> {
    let ReadyWait {
        main,
        tree,
        uid,
        mut notified,
        line,
        cwd,
    } = wait;
    match readiness {
        Readiness::Started => {}
        Readiness::Delay { delay } => tokio::time::sleep(*delay).await,
        Readiness::Notify => {
            notified
                .wait_for(|ready| *ready)
                .await
                .map_err(|_| StartError::ReadinessLost("sd_notify"))?;
        }
        Readiness::Tcp { .. } => {
            let (_, addrs) = watched_addresses(readiness).await?.unwrap_or_default();
            listening_in_tree(&addrs, main, tree).await;
        }
        Readiness::Http { url } => {
            let parsed = parse_url(url)?;
            let (_, addrs) = watched_addresses(readiness).await?.unwrap_or_default();
            listening_in_tree(&addrs, main, tree).await;
            http_answers(&parsed, &mut None).await;
        }
        Readiness::Exec { command, interval } => {
            if command.is_empty() {
                return Err(SpecError::EmptyCommand("exec readiness").into());
            }
            exec_passes(command, *interval, cwd, &mut None).await;
        }
        Readiness::UnixSocket { path } => unix_socket_in_tree(path, uid, main, tree).await,
        Readiness::File { path } => {
            wait::file_appears(path)
                .await
                .map_err(|source| StartError::Prepare {
                    what: "a watch for",
                    path: path.clone(),
                    source,
                })?
        }
        Readiness::LogLine { .. } => {
            if line.await.is_err() {
                // The stream ended without the line. Usually the process is exiting, and the
                // caller reports that exit; otherwise the ready timeout ends the wait.
                std::future::pending::<()>().await;
            }
        }
        Readiness::Manifest { path } => return verified_from_manifest(path, main.pid()).await,
    }
    Ok(main.clone())
}

/// Resolves once `GET url` answers 2xx, asking again after a growing pause; `last` holds
/// why the latest attempt failed.
pub(crate) async fn http_answers(url: &HttpUrl, last: &mut Option<String>) {
    let mut pause = Pause::new();
    while let Err(error) = checks::http_ok(url).await {
        tracing::trace!(%url, error = %crate::report::Chain(&error), "not ready yet");
        *last = Some(crate::report::Chain(&error).to_string());
        pause.wait().await;
    }
}

/// Resolves once `command` exits 0 (run in `cwd`), run again every `interval`; `last`
/// holds why the latest run failed.
pub(crate) async fn exec_passes(
    command: &[String],
    interval: Duration,
    cwd: Option<&Path>,
    last: &mut Option<String>,
) {
    while let Err(error) = checks::run_check(command, cwd).await {
        tracing::debug!(?command, error = %crate::report::Chain(&error), "readiness command failed; trying again");
        *last = Some(crate::report::Chain(&error).to_string());
        tokio::time::sleep(interval).await;
    }
}

/// Resolves once a connection to one of `addrs` succeeds (any listener: outside the
/// supervisor there is no tree to check), trying again after a growing pause.
pub(crate) async fn tcp_accepts(addrs: &[SocketAddr], last: &mut Option<String>) {
    let mut pause = Pause::new();
    loop {
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => return,
                Err(error) => *last = Some(format!("cannot connect to {addr}: {error}")),
            }
        }
        pause.wait().await;
    }
}

/// Resolves once the Unix socket at `path` accepts a connection (any owner: outside the
/// supervisor there is no tree to check), trying again after a growing pause.
pub(crate) async fn unix_accepts(path: &Path, last: &mut Option<String>) {
    let mut pause = Pause::new();
    loop {
        match crate::platform::connect_unix(path).await {
            Ok(_) => return,
            Err(error) => {
                *last = Some(format!("cannot connect to {}: {error}", path.display()));
            }
        }
        pause.wait().await;
    }
}

/// Resolves once one of `addrs` has a listening socket, every listener there belongs to
/// the tree, and a connection succeeds.
async fn listening_in_tree(addrs: &[SocketAddr], main: &BackendHandle, tree: &Arc<ProcessTree>) {
    let mut pause = Pause::new();
    loop {
        for addr in addrs {
            // `/proc` scans of the tree's descriptors: the blocking pool.
            let (addr, pid, tree) = (*addr, main.pid(), tree.clone());
            let ours = blocking(move || tree.owns_listeners(pid, Listening::Tcp(&[addr]))).await;
            if !ours {
                continue;
            }
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => return,
                Err(error) => {
                    tracing::trace!(%addr, error = %crate::report::Chain(&error), "not accepting yet")
                }
            }
        }
        pause.wait().await;
    }
}

/// Resolves once `path` is a socket owned by the service's user, listened on by the tree,
/// and accepting connections.
async fn unix_socket_in_tree(
    path: &Path,
    uid: Option<u32>,
    main: &BackendHandle,
    tree: &Arc<ProcessTree>,
) {
    let mut pause = Pause::new();
    loop {
        if unix_socket_ready(path, uid, main, tree).await {
            return;
        }
        pause.wait().await;
    }
}

async fn unix_socket_ready(
    path: &Path,
    uid: Option<u32>,
    main: &BackendHandle,
    tree: &Arc<ProcessTree>,
) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !crate::platform::is_socket(&meta) {
        return false;
    }
    let owner = crate::platform::owner_uid(&meta);
    if uid.is_some_and(|uid| owner != Some(uid)) {
        tracing::debug!(path = %path.display(), ?owner, "socket not owned by the service's user; not ready");
        return false;
    }
    let (owned, pid, tree) = (path.to_owned(), main.pid(), tree.clone());
    let ours = blocking(move || tree.owns_listeners(pid, Listening::Unix(&owned))).await;
    if !ours {
        return false;
    }
    crate::platform::connect_unix(path).await.is_ok()
}

/// Wait until the manifest records process `pid`, then verify it through the full probe.
async fn verified_from_manifest(path: &Path, pid: u32) -> Result<BackendHandle, StartError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let owned = dir.to_owned();
    blocking(move || crate::protocol::manifest::create_private_dir(&owned))
        .await
        .map_err(|source| StartError::Prepare {
            what: "the manifest directory",
            path: dir.to_owned(),
            source,
        })?;
    let watch_failed = |source| StartError::Prepare {
        what: "a watch for",
        path: path.to_owned(),
        source,
    };
    let mut watcher = crate::platform::PathWatcher::new(path).map_err(watch_failed)?;
    loop {
        match CacheManifest::read(path).await {
            Ok(Some(manifest)) => match &manifest.current_daemon {
                Some(daemon) if daemon.pid == pid => {
                    return Ok(BackendHandle::probe_with_service(
                        &manifest.service_name,
                        &manifest.service_version,
                        &daemon.ipc_endpoint,
                        daemon,
                    )
                    .await?);
                }
                _ => {}
            },
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(error = %crate::report::Chain(&error), "manifest not readable yet")
            }
        }
        watcher.changed().await.map_err(watch_failed)?;
    }
}
