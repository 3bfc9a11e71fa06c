//! The listening sockets a [`CommandSupervisor`](super::CommandSupervisor) holds for its
//! service: bound once, on first need, before any process starts; kept across restarts;
//! a copy of each handed to every instance; watched for a waiting client while no
//! instance runs (start on demand); closed (and a Unix socket's file removed) when the
//! supervisor is dropped.

use super::spec::Listener;
use super::spec_error::SpecError;
use crate::supervision::{Demand, StartError};

/// The spec's listeners, bound on first use.
pub(crate) struct Listeners {
    spec: Vec<Listener>,
    #[cfg(target_os = "linux")]
    held: tokio::sync::OnceCell<std::sync::Arc<linux::Held>>,
}

impl Listeners {
    pub(crate) fn new(spec: Vec<Listener>) -> Listeners {
        Listeners {
            spec,
            #[cfg(target_os = "linux")]
            held: tokio::sync::OnceCell::new(),
        }
    }

    /// The sockets, bound now if they are not yet (on the blocking pool). `Ok(None)` when
    /// the spec declares none.
    #[cfg(target_os = "linux")]
    pub(crate) async fn held(&self) -> Result<Option<std::sync::Arc<linux::Held>>, StartError> {
        if self.spec.is_empty() {
            return Ok(None);
        }
        let held = self
            .held
            .get_or_try_init(|| {
                let spec = self.spec.clone();
                async move {
                    crate::blocking::blocking(move || linux::Held::bind(&spec))
                        .await
                        .map(std::sync::Arc::new)
                }
            })
            .await?;
        Ok(Some(held.clone()))
    }

    /// A future that completes when a client waits on one of the listeners (binding them
    /// first if needed).
    pub(crate) async fn connection_waiting(&self) -> Result<Demand, StartError> {
        #[cfg(target_os = "linux")]
        {
            match self.held().await? {
                Some(held) => Ok(Box::pin(async move { held.connection_waiting().await })),
                None => Err(SpecError::OnDemandWithoutListeners.into()),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.unsupported()?;
            Err(SpecError::OnDemandWithoutListeners.into())
        }
    }

    /// Off Linux: a spec with listeners cannot be started.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn unsupported(&self) -> Result<(), StartError> {
        validate(&self.spec)?;
        if self.spec.is_empty() {
            Ok(())
        } else {
            Err(SpecError::NeedsLinux("listeners").into())
        }
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
        if name.is_empty() || name.len() > 255 {
            return Err(bad(listener, "the name must have 1 to 255 characters"));
        }
        if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(bad(
                listener,
                "the name must be printable ASCII without spaces or `:` (LISTEN_FDNAMES)",
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

#[cfg(target_os = "linux")]
pub(crate) mod linux {
    use std::os::fd::{AsFd, OwnedFd};
    use std::path::PathBuf;

    use super::{validate, Listener};
    use crate::platform::{self, listen, ListenFd};
    use crate::supervision::StartError;

    /// One bound listener.
    struct Socket {
        name: String,
        fd: OwnedFd,
        /// Its inode, as `/proc/net/{tcp,tcp6,unix}` list it.
        inode: u64,
        /// The file of a Unix socket, removed on drop.
        path: Option<PathBuf>,
    }

    /// The bound listeners of one service, in the spec's order.
    pub(crate) struct Held {
        sockets: Vec<Socket>,
    }

    impl Held {
        /// Bind every listener, in order; the first failure names its listener, and the
        /// ones bound before it are closed again. Blocking (file system).
        pub(super) fn bind(spec: &[Listener]) -> Result<Held, StartError> {
            validate(spec)?;
            let mut held = Held {
                sockets: Vec::with_capacity(spec.len()),
            };
            for listener in spec {
                let failed =
                    |source: Box<dyn std::error::Error + Send + Sync>| StartError::Listener {
                        name: listener.name().to_owned(),
                        address: listener.address(),
                        source,
                    };
                let (fd, path) = match listener {
                    Listener::Tcp { address, .. } => {
                        let addr = address.parse().expect("validated");
                        (listen::bind_tcp(addr).map_err(|e| failed(e.into()))?, None)
                    }
                    Listener::Unix { path, .. } => {
                        let fd = crate::protocol::listener::bind_held(path)
                            .map_err(|e| failed(e.into()))?;
                        // The kernel's largest backlog, as for TCP.
                        listen::listen_again(fd.as_fd()).map_err(|e| failed(e.into()))?;
                        (fd, Some(path.clone()))
                    }
                };
                let inode = listen::socket_inode(fd.as_fd()).map_err(|e| failed(e.into()))?;
                held.sockets.push(Socket {
                    name: listener.name().to_owned(),
                    fd,
                    inode,
                    path,
                });
            }
            Ok(held)
        }

        /// The inodes of the sockets (the readiness checks' "a stranger already listens
        /// here" must not find the supervisor's own).
        pub(crate) fn inodes(&self) -> Vec<u64> {
            self.sockets.iter().map(|s| s.inode).collect()
        }

        /// Copies for one spawn, each reset to blocking first (a previous instance may have
        /// made the shared open file non-blocking).
        pub(crate) fn for_spawn(&self) -> std::io::Result<Vec<ListenFd>> {
            self.sockets
                .iter()
                .map(|socket| {
                    listen::set_blocking(socket.fd.as_fd())?;
                    Ok(ListenFd {
                        name: socket.name.clone(),
                        fd: listen::duplicate(&socket.fd)?,
                    })
                })
                .collect()
        }

        /// Completes when a connection waits on any of the sockets: readable, which a
        /// listening socket is when its backlog is not empty. Nothing is accepted: the
        /// connection is for the instance about to start. Cancel-safe.
        pub(crate) async fn connection_waiting(&self) {
            let mut watches = Vec::new();
            for socket in &self.sockets {
                match listen::duplicate(&socket.fd).and_then(platform::async_fd) {
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
}
