//! The listening sockets a [`CommandSupervisor`](super::CommandSupervisor) holds for its
//! service: bound once, on first need, before any process starts; kept across restarts;
//! a copy of each handed to every instance; watched for a waiting client while no
//! instance runs (start on demand); closed (and a Unix socket's file removed) when the
//! supervisor is dropped. And the file descriptor store. Only Linux passes descriptors to
//! a child: elsewhere a spec that declares either cannot be started.

use std::path::PathBuf;
use std::sync::Arc;

use super::spec::Listener;
use super::spec_error::SpecError;
use crate::platform::{self, Descriptor, HeldSocket, ListenFd};
use crate::supervision::{Demand, StartError};

/// The listening sockets held in this process, by their listeners' spec: what a new
/// supervisor of the same listeners takes over (weak: the sockets close with their last
/// holder).
static HANDOVER: std::sync::Mutex<std::collections::BTreeMap<String, std::sync::Weak<Held>>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The key of a list of listeners in [`HANDOVER`]: their serde form.
fn handover_key(spec: &[Listener]) -> String {
    serde_json::to_string(spec).unwrap_or_default()
}

/// The spec's listeners, bound on first use.
pub(crate) struct Listeners {
    spec: Vec<Listener>,
    held: tokio::sync::OnceCell<Arc<Held>>,
}

impl Listeners {
    pub(crate) fn new(spec: Vec<Listener>) -> Listeners {
        Listeners {
            spec,
            held: tokio::sync::OnceCell::new(),
        }
    }

    /// The sockets, bound now if they are not yet (on the blocking pool); none when the
    /// spec declares none. Sockets with the very same listeners that another supervisor
    /// of this process still holds are shared instead of bound again: a service whose
    /// spec is replaced (an edited file applied) keeps its listening sockets, so the
    /// replacement refuses no connection.
    pub(crate) async fn held(&self) -> Result<Arc<Held>, StartError> {
        if self.spec.is_empty() {
            return Ok(Arc::default());
        }
        if !platform::CAN_PASS_DESCRIPTORS {
            validate(&self.spec)?;
            return Err(SpecError::NeedsLinux("listeners").into());
        }
        let held = self
            .held
            .get_or_try_init(|| {
                let spec = self.spec.clone();
                async move {
                    let key = handover_key(&spec);
                    if let Some(held) = HANDOVER
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&key)
                        .and_then(std::sync::Weak::upgrade)
                    {
                        return Ok::<_, StartError>(held);
                    }
                    let held = crate::blocking::blocking(move || Held::bind(&spec))
                        .await
                        .map(Arc::new)?;
                    let mut handover = HANDOVER.lock().unwrap_or_else(|p| p.into_inner());
                    handover.retain(|_, held| held.strong_count() > 0);
                    handover.insert(key, Arc::downgrade(&held));
                    Ok(held)
                }
            })
            .await?;
        Ok(held.clone())
    }

    /// A future that completes when a client waits on one of the listeners (binding them
    /// first if needed).
    pub(crate) async fn connection_waiting(&self) -> Result<Demand, StartError> {
        let held = self.held().await?;
        if held.sockets.is_empty() {
            return Err(SpecError::OnDemandWithoutListeners.into());
        }
        Ok(Box::pin(async move { held.connection_waiting().await }))
    }
}

/// Check the listeners as written: names usable in `LISTEN_FDNAMES` (1 to 255 printable
/// ASCII characters, no `:`) and unique, addresses literal `ip:port`.
fn validate(listeners: &[Listener]) -> Result<(), SpecError> {
    let bad = |listener: &Listener, reason| SpecError::Listener {
        name: listener.name().to_owned(),
        reason,
    };
    for (i, listener) in listeners.iter().enumerate() {
        let name = listener.name();
        if !valid_name(name) {
            return Err(bad(
                listener,
                "the name must be 1 to 255 printable ASCII characters without spaces or `:` (LISTEN_FDNAMES)",
            ));
        }
        if listeners[..i].iter().any(|l| l.name() == name) {
            return Err(bad(listener, "another listener has the same name"));
        }
        match listener {
            Listener::Tcp { address, .. } if address.parse::<std::net::SocketAddr>().is_err() => {
                return Err(bad(listener, "the address is not a literal ip:port"));
            }
            Listener::Unix { path, .. } if path.as_os_str().is_empty() => {
                return Err(bad(listener, "the path is empty"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `name` can stand in `LISTEN_FDNAMES`: 1 to 255 printable ASCII characters,
/// no space, no `:` (systemd's rule for `FileDescriptorName=` and `FDNAME=`).
fn valid_name(name: &str) -> bool {
    (1..=255).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// One bound listener.
struct Socket {
    name: String,
    socket: HeldSocket,
    /// The file of a Unix socket, removed on drop.
    path: Option<PathBuf>,
}

/// The bound listeners of one service, in the spec's order.
#[derive(Default)]
pub(crate) struct Held {
    sockets: Vec<Socket>,
}

impl Held {
    /// Bind every listener, in order; the first failure names its listener, and the
    /// ones bound before it are closed again. Blocking (file system).
    fn bind(spec: &[Listener]) -> Result<Held, StartError> {
        validate(spec)?;
        let mut held = Held {
            sockets: Vec::with_capacity(spec.len()),
        };
        for listener in spec {
            let failed = |source: Box<dyn std::error::Error + Send + Sync>| StartError::Listener {
                name: listener.name().to_owned(),
                address: listener.address(),
                source,
            };
            let (socket, path) = match listener {
                Listener::Tcp { address, .. } => {
                    let addr = address
                        .parse()
                        .map_err(|e: std::net::AddrParseError| failed(e.into()))?;
                    let socket = HeldSocket::bind_tcp(addr).map_err(|e| failed(e.into()))?;
                    (socket, None)
                }
                Listener::Unix { path, .. } => {
                    let fd =
                        crate::protocol::listener::bind_held(path).map_err(|e| failed(e.into()))?;
                    let socket = HeldSocket::listen_unix(fd).map_err(|e| failed(e.into()))?;
                    (socket, Some(path.clone()))
                }
            };
            held.sockets.push(Socket {
                name: listener.name().to_owned(),
                socket,
                path,
            });
        }
        Ok(held)
    }

    /// The inodes of the sockets (the readiness checks' "a stranger already listens
    /// here" must not find the supervisor's own).
    pub(crate) fn inodes(&self) -> Vec<u64> {
        self.sockets.iter().map(|s| s.socket.inode()).collect()
    }

    /// Copies for one spawn, each reset to blocking first (a previous instance may have
    /// made the shared open file non-blocking).
    pub(crate) fn for_spawn(&self) -> std::io::Result<Vec<ListenFd>> {
        self.sockets
            .iter()
            .map(|socket| {
                Ok(ListenFd {
                    name: socket.name.clone(),
                    fd: socket.socket.copy_for_spawn()?,
                })
            })
            .collect()
    }

    /// Completes when a connection waits on any of the sockets: readable, which a
    /// listening socket is when its backlog is not empty. Nothing is accepted: the
    /// connection is for the instance about to start. Cancel-safe.
    async fn connection_waiting(&self) {
        let mut watches = Vec::new();
        for socket in &self.sockets {
            match socket.socket.watch() {
                Ok(watch) => watches.push(watch),
                Err(error) => {
                    tracing::warn!(listener = %socket.name, %error, "cannot watch the listener; starting now");
                    return;
                }
            }
        }
        let readable = watches.iter().map(|w| Box::pin(w.readable()));
        let _ = futures_util::future::select_all(readable).await;
    }
}

/// The file descriptor store (systemd's `FDSTORE=1`): descriptors an instance handed
/// over, passed to every later instance after the listeners. Size 0: no store.
pub(crate) struct FdStore {
    max: usize,
    entries: std::sync::Mutex<Vec<(String, Descriptor)>>,
}

impl FdStore {
    pub(crate) fn new(max: u32) -> FdStore {
        FdStore {
            max: max as usize,
            entries: std::sync::Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<(String, Descriptor)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply one sd_notify message of the service (its assignments other than the
    /// well-known ones, `extra`): `FDSTOREREMOVE=1` drops the entries named `FDNAME`, then
    /// `FDSTORE=1` keeps `fds` under `FDNAME` (`stored` when absent or unusable), up to
    /// the store's size; the rest are closed.
    pub(crate) fn apply(&self, extra: &[(String, String)], fds: Vec<Descriptor>) {
        let set = |key: &str| extra.iter().any(|(k, v)| k == key && v == "1");
        let name = extra
            .iter()
            .rev()
            .find(|(key, _)| key == "FDNAME")
            .map(|(_, name)| name.as_str());
        let mut entries = self.entries();
        if let (true, Some(name)) = (set("FDSTOREREMOVE"), name) {
            entries.retain(|(n, _)| n != name);
        }
        if !set("FDSTORE") || fds.is_empty() {
            return;
        }
        let name = name.filter(|n| valid_name(n)).unwrap_or("stored");
        let room = self.max.saturating_sub(entries.len());
        if fds.len() > room {
            tracing::warn!(
                max = self.max,
                dropped = fds.len() - room,
                "the file descriptor store is full; closing what does not fit"
            );
        }
        entries.extend(fds.into_iter().take(room).map(|fd| (name.to_owned(), fd)));
    }

    /// Copies for one spawn, in the order they were stored; an error where a store
    /// cannot exist (it is refused before the first start, off Linux).
    pub(crate) fn for_spawn(&self) -> Result<Vec<ListenFd>, StartError> {
        if self.max > 0 && !platform::CAN_PASS_DESCRIPTORS {
            return Err(SpecError::NeedsLinux("the file descriptor store").into());
        }
        self.entries()
            .iter()
            .map(|(name, fd)| {
                Ok(ListenFd {
                    name: name.clone(),
                    fd: platform::duplicate(fd)?,
                })
            })
            .collect::<std::io::Result<_>>()
            .map_err(StartError::Spawn)
    }
}

impl Drop for Held {
    /// Each Unix socket's file is removed while its socket is still open (so nobody
    /// can bind the path in between and lose it to the removal), then the sockets
    /// close; on the blocking pool when there is a file to remove.
    fn drop(&mut self) {
        let sockets = std::mem::take(&mut self.sockets);
        if sockets.iter().all(|s| s.path.is_none()) {
            return;
        }
        let remove = move || {
            for socket in sockets {
                if let Some(path) = &socket.path {
                    let _ = std::fs::remove_file(path);
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::Listener;
    use super::{FdStore, Held};

    #[test]
    fn held_sockets_are_bound_once_named_and_their_files_removed_when_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("svc.sock");
        let spec = [
            Listener::unix("ctl", &path),
            Listener::tcp("web", "127.0.0.1:0"),
        ];
        let held = Held::bind(&spec).unwrap();
        assert_eq!(held.inodes().len(), 2);
        let names: Vec<String> = held
            .for_spawn()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["ctl", "web"]);
        // A live socket is never displaced, not even by a second holder.
        let error = Held::bind(&spec[..1]).map(drop).unwrap_err();
        assert!(
            crate::report::Chain(&error)
                .to_string()
                .contains("already listening"),
            "{error}"
        );
        drop(held);
        assert!(!path.exists());
        drop(Held::bind(&spec).unwrap());
    }

    /// The assignments of a datagram the store reads.
    fn extra(datagram: &[u8]) -> Vec<(String, String)> {
        crate::protocol::sd_notify::parse(datagram).extra
    }

    fn fd() -> std::os::fd::OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn names(store: &FdStore) -> Vec<String> {
        store
            .for_spawn()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect()
    }

    #[test]
    fn the_fd_store_keeps_names_removes_by_name_and_stays_within_its_size() {
        let store = FdStore::new(3);
        store.apply(&extra(b"FDSTORE=1\nFDNAME=conn"), vec![fd(), fd()]);
        store.apply(&extra(b"FDSTORE=1"), vec![fd()]);
        assert_eq!(names(&store), ["conn", "conn", "stored"]);
        // Full: the extra one is closed, not kept.
        store.apply(&extra(b"FDSTORE=1\nFDNAME=late"), vec![fd()]);
        assert_eq!(names(&store).len(), 3);
        store.apply(&extra(b"FDSTOREREMOVE=1\nFDNAME=conn"), Vec::new());
        assert_eq!(names(&store), ["stored"]);
        // A name LISTEN_FDNAMES cannot carry is replaced; descriptors without FDSTORE=1
        // are not kept.
        store.apply(&extra(b"FDSTORE=1\nFDNAME=a:b"), vec![fd()]);
        store.apply(&extra(b"STATUS=x"), vec![fd()]);
        assert_eq!(names(&store), ["stored", "stored"]);
    }
}
