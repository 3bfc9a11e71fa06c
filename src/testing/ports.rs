//! Free loopback ports for tests.

use std::io;

/// A TCP port on `127.0.0.1` that was free a moment ago: the OS picked it for a listener
/// that is closed again before this returns, and this process has not handed it out
/// recently (here or for a service file's `${port:KEY}`: the same allocator).
///
/// Another process can take the port before your daemon binds it. A
/// [`Readiness::Tcp`](crate::command::Readiness::Tcp) check then fails with
/// [`StartError::PortInUse`](crate::supervision::StartError::PortInUse) instead of
/// believing the stranger (Linux), so such a test fails loudly rather than passing wrongly.
///
/// ```
/// let port = running_process::testing::free_tcp_port()?;
/// assert_ne!(port, 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn free_tcp_port() -> io::Result<u16> {
    crate::compose::free_loopback_port()
}
