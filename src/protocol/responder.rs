//! The daemon side of the wire: answers probe, ping and shutdown frames on the daemon's
//! socket and hands every other connection to the application with the bytes it peeked
//! replayed, so the daemon's own protocol shares the socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::Stream as FuturesStream;
use interprocess::local_socket::tokio::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::frame::{Frame, FrameCodec, FrameError, MAGIC};
use super::idle::{IdleClock, IdleGuard};
use super::listener::DaemonListener;
use super::routing::{self, ControlAction, ControlSession, Presented, Route};
use crate::identity::DaemonProcess;

/// Default time a new connection gets to send its first bytes before it is handed to the
/// application as is (for protocols where the server speaks first).
pub const DEFAULT_FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a control connection may stay silent between frames (or leave a reply
/// unread) before it is closed.
pub const DEFAULT_CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (e.g. EMFILE) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Answers the crate's control frames for one daemon.
///
/// # Idle timeout
///
/// When the daemon's [`DaemonProcess::idle_timeout_secs`] is `Some(n)`, the responder
/// cancels the [shutdown token](Responder::shutdown_token) (the one a shutdown request
/// cancels) once the daemon has been unused for `n` seconds, and logs why at info level.
/// What counts as use:
///
/// - **every accepted connection** restarts the clock, whatever it turns out to be (a probe,
///   a ping, an application connection, or one closed without a word);
/// - **an open connection holds the clock**: a control connection (probe, ping) while it is
///   open, and an application connection from the moment it is accepted, while it waits in
///   [`Incoming`], and until the daemon drops its [`AppConnection`] (or turns it into the
///   bare stream with [`AppConnection::into_inner`], which gives up the hold);
/// - the clock starts when [`serve`](Responder::serve) is called, so a daemon that nobody
///   ever connects to exits too; the idle time restarts when the last open connection
///   closes.
///
/// Nothing else counts: work the daemon does on its own does not keep it alive. `Some(0)`
/// means it stops as soon as nothing is connected. The timeout fires once; the responder
/// keeps answering until the daemon drops [`Incoming`], so a client that connected just as
/// it fired may see the daemon exit after its answer (its liveness stream tells it).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use running_process::protocol::{DaemonListener, Responder};
/// use running_process::identity::Endpoint;
/// use running_process::DaemonProcess;
///
/// let endpoint = Endpoint::new("my-app", "/run/user/1000/my-app/cache.sock");
/// let listener = DaemonListener::bind(&endpoint).await?;
/// let me = DaemonProcess::current_process_async(endpoint, None).await?;
/// let responder = Responder::new("cache", "1.0.0", me);
/// let stop = responder.shutdown_token();
/// let mut incoming = responder.serve(listener);
/// loop {
///     tokio::select! {
///         _ = stop.cancelled() => break,
///         Some(conn) = incoming.next() => { /* serve the app protocol on `conn` */ drop(conn) }
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Responder {
    pub(super) presented: Presented,
    shutdown: CancellationToken,
    first_bytes_timeout: Duration,
    control_idle_timeout: Duration,
}

/// What the background tasks share: the responder's settings, frozen by `serve`.
type Shared = Responder;

impl Responder {
    /// A responder that presents `daemon` as the identity of service `name` `version`.
    pub fn new(
        service_name: impl Into<String>,
        service_version: impl Into<String>,
        daemon: DaemonProcess,
    ) -> Self {
        Responder {
            presented: Presented {
                service_name: service_name.into(),
                service_version: service_version.into(),
                daemon,
            },
            shutdown: CancellationToken::new(),
            first_bytes_timeout: DEFAULT_FIRST_BYTES_TIMEOUT,
            control_idle_timeout: DEFAULT_CONTROL_IDLE_TIMEOUT,
        }
    }

    /// How long a new connection may stay silent before it is handed to the application
    /// with nothing replayed (default [`DEFAULT_FIRST_BYTES_TIMEOUT`]).
    pub fn first_bytes_timeout(mut self, timeout: Duration) -> Self {
        self.first_bytes_timeout = timeout;
        self
    }

    /// How long a control connection may stay silent between frames, or leave a reply
    /// unread so that writing it cannot complete, before it is closed (default
    /// [`DEFAULT_CONTROL_IDLE_TIMEOUT`]).
    pub fn control_idle_timeout(mut self, timeout: Duration) -> Self {
        self.control_idle_timeout = timeout;
        self
    }

    /// Cancelled when a client sends a shutdown request, or when the daemon's idle timeout
    /// expires (see [the type's documentation](Responder#idle-timeout)). The daemon awaits it
    /// and stops.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Start answering on `listener` in a background task. Application connections arrive
    /// on the returned [`Incoming`] stream; dropping it stops the responder and closes the
    /// listener (which removes the socket file). The idle clock, if the daemon has an idle
    /// timeout, starts now.
    pub fn serve(self, listener: DaemonListener) -> Incoming {
        let (tx, rx) = mpsc::channel(64);
        let span = tracing::info_span!("responder", service = %self.presented.service_name, endpoint = %listener.endpoint());
        let idle = self
            .presented
            .daemon
            .idle_timeout_secs
            .map(|secs| IdleClock::new(Duration::from_secs(secs.into())));
        let task = tokio::spawn(serve_task(Arc::new(self), listener, tx, idle).instrument(span));
        Incoming {
            rx,
            task: task.abort_handle(),
        }
    }
}

/// The accept loop, and beside it the idle watch when there is an idle clock.
async fn serve_task(
    shared: Arc<Shared>,
    listener: DaemonListener,
    tx: mpsc::Sender<AppConnection>,
    idle: Option<IdleClock>,
) {
    let Some(clock) = idle else {
        return accept_loop(shared, listener, tx, None).await;
    };
    let shutdown = shared.shutdown.clone();
    let watch = async {
        clock.expired().await;
        tracing::info!(
            idle_timeout_secs = clock.timeout().as_secs(),
            "no connection for the idle timeout: shutting down"
        );
        shutdown.cancel();
    };
    // The watch fires once; the accept loop goes on until `Incoming` is dropped.
    tokio::join!(accept_loop(shared, listener, tx, Some(&clock)), watch);
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: DaemonListener,
    tx: mpsc::Sender<AppConnection>,
    idle: Option<&IdleClock>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                // A peer that vanished mid-accept is transient; running out of descriptors
                // is not, and retrying at once would spin. Time passing is the point here.
                tracing::warn!(error = %crate::report::Chain(&error), "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Taken at once, so the connection counts as use from its accept to its close.
        let guard = idle.map(IdleClock::guard);
        let shared = shared.clone();
        let tx = tx.clone();
        tokio::spawn(async move { route(shared, stream, guard, tx).await }.in_current_span());
    }
}

/// Peek at the first bytes: the magic means a control connection, anything else goes to
/// the application with the peeked bytes replayed. `guard` lives as long as the connection.
/// The decisions are [`super::control`]'s; this adds the socket and the timeout.
async fn route(
    shared: Arc<Shared>,
    mut stream: Stream,
    guard: Option<IdleGuard>,
    tx: mpsc::Sender<AppConnection>,
) {
    let mut prefix = Vec::with_capacity(MAGIC.len());
    let mut peer_closed = false;
    let peek = async {
        let mut buf = [0u8; MAGIC.len()];
        loop {
            let wanted = routing::peek_wanted(&prefix);
            if wanted == 0 {
                break;
            }
            let n = stream.read(&mut buf[..wanted]).await?;
            if n == 0 {
                peer_closed = true;
                break;
            }
            prefix.extend_from_slice(&buf[..n]);
        }
        io::Result::Ok(())
    };
    if let Ok(Err(error)) = tokio::time::timeout(shared.first_bytes_timeout, peek).await {
        tracing::debug!(error = %crate::report::Chain(&error), "connection failed before its first bytes");
        return;
    }
    match routing::route(&prefix, peer_closed) {
        Route::Closed => {}
        Route::Control => {
            serve_control(&shared, stream, &prefix).await;
            drop(guard);
        }
        Route::Application => {
            let conn = AppConnection {
                prefix,
                replayed: 0,
                stream,
                _idle: guard,
            };
            if tx.send(conn).await.is_err() {
                tracing::debug!("application connection dropped: nobody takes them");
            }
        }
    }
}

/// Serve a control connection: read, hand the bytes to a [`ControlSession`], carry out its
/// actions. A peer silent for the control idle timeout is closed, and so is one that does
/// not take its replies within that time.
async fn serve_control(shared: &Shared, mut stream: Stream, prefix: &[u8]) {
    let mut session = ControlSession::new(prefix);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(action) = session.next_action(&shared.presented) {
            let sent = match action {
                ControlAction::Reply(frame) => send(shared, &mut stream, frame).await,
                ControlAction::AckShutdown => {
                    // Acknowledge first: a daemon that exits as soon as the token fires
                    // would otherwise close the connection before the client hears back.
                    let _ = send(shared, &mut stream, Frame::ShutdownAck).await;
                    shared.shutdown.cancel();
                    Ok(())
                }
                ControlAction::Close => return,
            };
            if let Err(error) = sent {
                tracing::debug!(error = %crate::report::Chain(&error), "control reply not sent; closing");
                return;
            }
        }
        match tokio::time::timeout(shared.control_idle_timeout, stream.read(&mut chunk)).await {
            Err(_) => return, // idle control connection: close it
            Ok(Err(error)) => {
                tracing::debug!(error = %crate::report::Chain(&error), "control connection failed");
                return;
            }
            Ok(Ok(0)) => session.receive_eof(),
            Ok(Ok(n)) => session.receive(&chunk[..n]),
        }
    }
}

/// Encode and write one frame, within the control idle timeout.
async fn send(shared: &Shared, stream: &mut Stream, frame: Frame) -> Result<(), FrameError> {
    let mut wire = BytesMut::new();
    FrameCodec.encode(frame, &mut wire)?;
    let write = async {
        stream.write_all(&wire).await?;
        stream.flush().await
    };
    match tokio::time::timeout(shared.control_idle_timeout, write).await {
        Ok(result) => Ok(result?),
        Err(elapsed) => Err(FrameError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            elapsed,
        ))),
    }
}

/// Application connections accepted by a [`Responder`]. Dropping it stops the responder.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<AppConnection>,
    task: tokio::task::AbortHandle,
}

impl FuturesStream for Incoming {
    type Item = AppConnection;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AppConnection>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection for the daemon's own protocol. Reading first yields the bytes the responder
/// peeked, then the rest of the stream. While it exists, the daemon is not idle (see
/// [`Responder`]'s idle timeout).
#[derive(Debug)]
pub struct AppConnection {
    prefix: Vec<u8>,
    replayed: usize,
    stream: Stream,
    /// Holds the idle clock until the connection is dropped.
    _idle: Option<IdleGuard>,
}

impl AppConnection {
    /// The underlying local-socket stream (any peeked bytes not yet read are lost). The
    /// stream no longer holds the idle clock: a daemon with an idle timeout that serves
    /// long-lived connections should keep the `AppConnection` instead.
    pub fn into_inner(self) -> Stream {
        self.stream
    }
}

impl AsyncRead for AppConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.prefix.len() {
            let rest = &this.prefix[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AppConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
