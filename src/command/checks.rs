//! Readiness and health checks that reach out: an HTTP GET answered with a 2xx status, a
//! check command that exits 0.
//!
//! None has a deadline of its own: the caller applies one. All are cancel-safe: dropping
//! the future closes the connection, or kills the check command and (Unix) every process
//! it started. The one exception is name resolution for an HTTP host name, which runs on
//! tokio's blocking pool and finishes there; IP addresses and `localhost` (from
//! `/etc/hosts`) make it quick.

use std::fmt;
use std::net::Ipv6Addr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use std::path::Path;

use tokio::time::Instant;

use super::spec::{HealthCheck, HealthSpec};
use crate::handle::BackendHandle;
use crate::supervision::HealthError;
use crate::ExitStatus;

/// Why a readiness or health check of a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// A URL in the spec is not an `http://` URL this crate can request.
    #[error("{url:?}: {reason}")]
    BadUrl {
        /// The URL as written.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection to the address.
    #[error("cannot connect to {address}")]
    Connect {
        /// `host:port`, or a socket path.
        address: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed after connecting.
    #[error("GET {url}: cannot {what}")]
    HttpIo {
        /// The URL requested.
        url: String,
        /// `"send the request"` or `"read the response"`.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The peer did not answer with an HTTP/1.x status line.
    #[error("GET {url}: {reason}")]
    NotHttp {
        /// The URL requested.
        url: String,
        /// What it sent instead.
        reason: String,
    },
    /// The answer's status is not 2xx.
    #[error("GET {url}: {status_line}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The status line, as received.
        status_line: String,
    },
    /// The check command is empty.
    #[error("the check command is empty")]
    EmptyCommand,
    /// The check command could not be started or awaited.
    #[error("cannot run check {program:?}")]
    CommandSpawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The check command exited unsuccessfully.
    #[error("check {program:?} failed: {status}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    CommandFailed {
        /// The program.
        program: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// No `WATCHDOG=1` arrived within the limit.
    #[error("no WATCHDOG=1 for {silent:?} (limit {limit:?})")]
    WatchdogSilent {
        /// How long since the last one.
        silent: Duration,
        /// The limit.
        limit: Duration,
    },
    /// A watchdog check of a backend that has no sd_notify socket.
    #[error("no sd_notify watchdog for this backend")]
    NoWatchdog,
    /// A Unix-socket check on a system without Unix sockets.
    #[error("Unix-socket checks need a Unix system")]
    NeedsUnix,
}

impl From<CheckError> for crate::supervision::HealthError {
    fn from(error: CheckError) -> Self {
        crate::supervision::HealthError::Check(Box::new(error))
    }
}

/// Why reading a response head failed.
enum HeadError {
    Io(std::io::Error),
    NotHttp(String),
}

/// An `http://` URL, split into what a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    /// A host name or an IP address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// The path and query, starting with `/`. A fragment is dropped (never sent).
    pub path: String,
}

impl HttpUrl {
    /// Parse `http://host[:port][/path][?query]`; the host may be a name, an IPv4 address
    /// or a bracketed IPv6 address. The port defaults to 80, the path to `/`.
    pub(crate) fn parse(url: &str) -> Result<HttpUrl, CheckError> {
        let bad = |reason: String| CheckError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = strip_http_scheme(url).map_err(|error| bad(error.to_owned()))?;
        let rest = rest
            .split_once('#')
            .map_or(rest, |(before, _fragment)| before);
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (host, port) = parse_authority(authority).map_err(bad)?;
        // The path goes verbatim into the request line, which these would break.
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "the path holds a space or control character; percent-encode it".to_owned(),
            ));
        }
        let path = match path {
            "" => "/".to_owned(),
            query if query.starts_with('?') => format!("/{query}"),
            path => path.to_owned(),
        };
        Ok(HttpUrl { host, port, path })
    }

    /// The `Host:` header value: the host, bracketed if IPv6, with the port unless it is 80.
    pub(crate) fn authority(&self) -> String {
        match self.port {
            80 => self.bracketed_host(),
            port => format!("{}:{port}", self.bracketed_host()),
        }
    }

    /// `host:port` (IPv6 bracketed), the form `tokio::net::TcpStream::connect` resolves.
    pub(crate) fn connect_address(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

/// What follows `http://` (the scheme in any case), or why the URL is not one.
fn strip_http_scheme(url: &str) -> Result<&str, &'static str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("not a URL; expected http://host[:port]/path");
    };
    if scheme.eq_ignore_ascii_case("http") {
        Ok(rest)
    } else if scheme.eq_ignore_ascii_case("https") {
        Err("https:// is not supported (TLS is not supported); use http://")
    } else {
        Err("only http:// URLs are supported")
    }
}

/// `host[:port]` or `[v6][:port]` → host (without brackets) and port.
fn parse_authority(authority: &str) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("credentials in URLs are not supported".to_owned());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (v6, after) = bracketed.split_once(']').ok_or("unclosed [ in the host")?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("invalid IPv6 address {v6:?}"))?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':').ok_or("unexpected text after ]")?),
        };
        (v6, port)
    } else {
        if authority.matches(':').count() > 1 {
            return Err("an IPv6 address needs brackets: http://[::1]:8080/".to_owned());
        }
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(format!("invalid host {host:?}"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("missing host".to_owned());
    }
    Ok((host.to_owned(), port.map_or(Ok(80), parse_port)?))
}

/// A decimal port from 1 to 65535.
fn parse_port(port: &str) -> Result<u16, String> {
    // Digits only: `parse` alone would take a sign.
    let number = match port.bytes().all(|b| b.is_ascii_digit()) {
        true => port.parse::<u16>().ok(),
        false => None,
    };
    match number {
        Some(number) if number != 0 => Ok(number),
        _ => Err(format!("bad port {port:?}")),
    }
}

/// `GET` for `url`, successful only for a 2xx status; otherwise the error quotes the status
/// line.
pub(crate) async fn http_ok(url: &HttpUrl) -> Result<(), CheckError> {
    let status = get_status(url).await?;
    if (200..=299).contains(&status.code) {
        Ok(())
    } else {
        Err(CheckError::HttpStatus {
            url: url.to_string(),
            status_line: status.line,
        })
    }
}

/// The final status line of a response.
#[derive(Debug, PartialEq, Eq)]
struct Status {
    code: u16,
    /// The whole line, without its line ending, for error messages.
    line: String,
}

/// The most of a response head read before giving up: the status line, and the interim
/// responses before it. A health endpoint answers in far less.
const MAX_HEAD: usize = 8 * 1024;

async fn get_status(url: &HttpUrl) -> Result<Status, CheckError> {
    let failed = |what, source| CheckError::HttpIo {
        url: url.to_string(),
        what,
        source,
    };
    let address = url.connect_address();
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|source| CheckError::Connect { address, source })?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: running-process\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| failed("send the request", error))?;
    read_status(&mut stream).await.map_err(|error| match error {
        HeadError::Io(source) => failed("read the response", source),
        HeadError::NotHttp(reason) => CheckError::NotHttp {
            url: url.to_string(),
            reason,
        },
    })
}

/// Read up to the end of the final status line.
async fn read_status(reader: &mut (impl AsyncRead + Unpin)) -> Result<Status, HeadError> {
    let mut lines = HeadLines::new(reader);
    loop {
        let status = parse_status_line(lines.next().await?).map_err(HeadError::NotHttp)?;
        // 101 would be final, but only answers an upgrade we never ask for.
        if !(100..=199).contains(&status.code) || status.code == 101 {
            return Ok(status);
        }
        // An interim response: its headers end at an empty line, then the next one starts.
        while !lines.next().await?.trim_ascii().is_empty() {}
    }
}

/// `HTTP/1.x NNN[ reason]` → the code and the line.
fn parse_status_line(line: &[u8]) -> Result<Status, String> {
    let line = String::from_utf8_lossy(line.trim_ascii_end()).into_owned();
    let digits =
        |text: &str, count| text.len() == count && text.bytes().all(|b| b.is_ascii_digit());
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_once(' '))
        .filter(|(minor, _)| digits(minor, 1))
        .and_then(|(_, rest)| rest.split(' ').next())
        .filter(|code| digits(code, 3))
        .and_then(|code| code.parse().ok());
    match code {
        Some(code) => Ok(Status { code, line }),
        None => Err(format!("not an HTTP/1.x status line: {:?}", shorten(&line))),
    }
}

/// At most 200 characters of `text`, for quoting what a peer sent.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// The lines of a response head, read into one buffer of [`MAX_HEAD`] bytes that is never
/// refilled: the limit covers the whole head read so far.
struct HeadLines<'a, R> {
    reader: &'a mut R,
    buf: Vec<u8>,
    /// Start of the first line not yet returned.
    next: usize,
}

impl<'a, R: AsyncRead + Unpin> HeadLines<'a, R> {
    fn new(reader: &'a mut R) -> Self {
        HeadLines {
            reader,
            buf: Vec::with_capacity(MAX_HEAD),
            next: 0,
        }
    }

    /// The next line, with its line ending.
    async fn next(&mut self) -> Result<&[u8], HeadError> {
        let mut searched = self.next;
        loop {
            if let Some(offset) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let line = self.next..searched + offset + 1;
                self.next = line.end;
                return Ok(&self.buf[line]);
            }
            searched = self.buf.len();
            if self.buf.len() == MAX_HEAD {
                return Err(HeadError::NotHttp(format!(
                    "no status line in the first {MAX_HEAD} bytes"
                )));
            }
            let mut limited = (&mut *self.reader).take((MAX_HEAD - self.buf.len()) as u64);
            match limited.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return Err(HeadError::NotHttp(
                        "the connection closed before a status line".to_owned(),
                    ))
                }
                Ok(_) => {}
                Err(error) => return Err(HeadError::Io(error)),
            }
        }
    }
}

/// How much of a failed check's stderr its error quotes: the end, where the reason is.
const STDERR_TAIL: usize = 512;

/// How long stderr is still read after the check exited, waiting for its end. What the
/// check itself wrote is already in the pipe by then; only a process it left behind that
/// holds the pipe open (`daemon &`) makes this wait last.
const STDERR_GRACE: Duration = Duration::from_millis(250);

/// Run `command[0]` with the rest as arguments, stdin and stdout null; Ok if it exits with
/// code 0. Otherwise the error names the exit status and quotes the end of its stderr.
///
/// All of stderr is read (keeping only its end), so a chatty check never blocks on a full
/// pipe. On Unix the check leads its own process group, and dropping the future kills
/// that group: a shell's children go too.
pub(crate) async fn run_check(
    command: &[String],
    cwd: Option<&std::path::Path>,
) -> Result<(), CheckError> {
    let (program, args) = command.split_first().ok_or(CheckError::EmptyCommand)?;
    let spawn_failed = |source| CheckError::CommandSpawn {
        program: program.clone(),
        source,
    };
    let mut check = Check::spawn(program, args, cwd).map_err(spawn_failed)?;
    let mut stderr = check.0.stderr.take().expect("stderr is piped");
    let mut tail = Tail::default();
    let mut buf = [0u8; 8192];
    let mut stderr_open = true;
    let status = loop {
        tokio::select! {
            status = check.0.wait() => break status,
            read = stderr.read(&mut buf), if stderr_open => match read {
                Ok(0) | Err(_) => stderr_open = false,
                Ok(n) => tail.push(&buf[..n]),
            },
        }
    }
    .map_err(spawn_failed)?;
    if status.success() {
        return Ok(());
    }
    if stderr_open {
        let drain = async {
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                tail.push(&buf[..n]);
            }
        };
        let _ = tokio::time::timeout(STDERR_GRACE, drain).await;
    }
    Err(CheckError::CommandFailed {
        program: program.clone(),
        status: ExitStatus::from_std(status),
        stderr: tail.text(),
    })
}

/// A running check command. Dropped before its exit was collected, it kills the check's
/// process group (Unix); `kill_on_drop` kills the check itself everywhere.
struct Check(tokio::process::Child);

impl Check {
    fn spawn(
        program: &str,
        args: &[String],
        cwd: Option<&std::path::Path>,
    ) -> std::io::Result<Check> {
        let mut command = tokio::process::Command::new(program);
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        crate::platform::own_process_group(&mut command);
        command.spawn().map(Check)
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        // `id()` is `None` once the exit was collected. Until then the check is an
        // un-reaped group leader, so its group id cannot name anyone else's group.
        if let Some(pid) = self.0.id() {
            if let Err(error) = crate::platform::kill_group(pid) {
                tracing::debug!(pid, %error, "cannot kill the process group of a check");
            }
        }
    }
}

/// The last [`STDERR_TAIL`] bytes of a stream.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        // Trim in batches, not at every read.
        if self.0.len() > 4 * STDERR_TAIL {
            self.0.drain(..self.0.len() - STDERR_TAIL);
        }
    }

    /// The tail as trimmed text; a character cut in two at the start is dropped.
    fn text(&self) -> String {
        let mut start = self.0.len().saturating_sub(STDERR_TAIL);
        // Skip UTF-8 continuation bytes rather than print a replacement character.
        while self.0.get(start).is_some_and(|&b| b & 0xC0 == 0x80) {
            start += 1;
        }
        String::from_utf8_lossy(&self.0[start..]).trim().to_owned()
    }
}

/// Run `health`'s check once against `backend` (in `cwd`, for a check command).
/// `last_beat`: when the service last sent `WATCHDOG=1` (`None`: no sd_notify reader).
pub(crate) async fn run_health_check(
    health: &HealthSpec,
    backend: &BackendHandle,
    cwd: Option<&Path>,
    last_beat: Option<Instant>,
) -> Result<(), HealthError> {
    match &health.check {
        HealthCheck::Ping => backend
            .ping(health.policy.timeout)
            .await
            .map(drop)
            .map_err(HealthError::Backend),
        HealthCheck::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
            .await
            .map(drop)
            .map_err(|source| {
                CheckError::Connect {
                    address: address.clone(),
                    source,
                }
                .into()
            }),
        HealthCheck::Http { url } => Ok(http_ok(&HttpUrl::parse(url)?).await?),
        HealthCheck::Exec { command } => Ok(run_check(command, cwd).await?),
        HealthCheck::UnixSocket { path } => Ok(unix_connect(path).await?),
        HealthCheck::Watchdog { timeout } => match last_beat {
            Some(at) if at.elapsed() <= *timeout => Ok(()),
            Some(at) => Err(CheckError::WatchdogSilent {
                silent: at.elapsed(),
                limit: *timeout,
            }
            .into()),
            None => Err(CheckError::NoWatchdog.into()),
        },
    }
}

/// Connect to the Unix socket at `path` (Unix; elsewhere [`CheckError::NeedsUnix`]).
async fn unix_connect(path: &Path) -> Result<(), CheckError> {
    if !crate::platform::UNIX_SOCKETS {
        return Err(CheckError::NeedsUnix);
    }
    crate::platform::connect_unix(path)
        .await
        .map_err(|source| CheckError::Connect {
            address: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    use crate::test_util::within_deadline;

    /// Send `GET` for `url` and return the status code of the answer, whatever it is; the
    /// rest of the response is not read. 1xx interim responses (`103 Early Hints`) are
    /// skipped.
    async fn http_get(url: &HttpUrl) -> Result<u16, CheckError> {
        Ok(get_status(url).await?.code)
    }

    fn url(text: &str) -> HttpUrl {
        HttpUrl::parse(text).unwrap()
    }

    fn parts(text: &str) -> (String, u16, String) {
        let url = url(text);
        (url.host, url.port, url.path)
    }

    #[test]
    fn urls_parse_into_host_port_and_path() {
        let cases = [
            ("http://localhost", ("localhost", 80, "/")),
            ("http://localhost/", ("localhost", 80, "/")),
            (
                "HTTP://Example.COM:8080/health",
                ("Example.COM", 8080, "/health"),
            ),
            (
                "http://127.0.0.1:9/a/b?x=1&y=2",
                ("127.0.0.1", 9, "/a/b?x=1&y=2"),
            ),
            ("http://127.0.0.1?ready", ("127.0.0.1", 80, "/?ready")),
            ("http://host/path#fragment", ("host", 80, "/path")),
            ("http://[::1]:8080/x", ("::1", 8080, "/x")),
            ("http://[::ffff:127.0.0.1]/", ("::ffff:127.0.0.1", 80, "/")),
            (
                "http://my_host-1.local:65535",
                ("my_host-1.local", 65535, "/"),
            ),
        ];
        for (text, (host, port, path)) in cases {
            assert_eq!(
                parts(text),
                (host.to_owned(), port, path.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn urls_give_their_host_header_and_connect_address() {
        let v6 = url("http://[::1]:8080/x");
        assert_eq!(v6.authority(), "[::1]:8080");
        assert_eq!(v6.connect_address(), "[::1]:8080");
        assert_eq!(v6.to_string(), "http://[::1]:8080/x");
        let default_port = url("http://localhost?q");
        assert_eq!(default_port.authority(), "localhost");
        assert_eq!(default_port.connect_address(), "localhost:80");
        assert_eq!(default_port.to_string(), "http://localhost/?q");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let cases = [
            ("https://localhost/", "TLS is not supported"),
            ("ftp://localhost/", "only http://"),
            ("localhost:8080", "not a URL"),
            ("http://", "missing host"),
            ("http:///path", "missing host"),
            ("http://:8080/", "missing host"),
            ("http://[]:80/", "invalid IPv6"),
            ("http://host:/", "bad port"),
            ("http://host:0/", "bad port"),
            ("http://host:65536/", "bad port"),
            ("http://host:+80/", "bad port"),
            ("http://host:http/", "bad port"),
            ("http://[::1/", "unclosed"),
            ("http://[::1]x/", "after ]"),
            ("http://::1/", "needs brackets"),
            ("http://user:pw@host/", "credentials"),
            ("http://ho st/", "invalid host"),
            ("http://host/a b", "percent-encode"),
            ("http://host/a\r\nX: y", "percent-encode"),
        ];
        for (text, reason) in cases {
            let error = HttpUrl::parse(text).unwrap_err();
            assert!(error.to_string().contains(reason), "{text:?}: {error}");
        }
    }

    #[tokio::test]
    async fn status_lines_are_parsed_and_interim_responses_skipped() {
        async fn status(mut response: &[u8]) -> Result<Status, String> {
            read_status(&mut response)
                .await
                .map_err(|error| match error {
                    HeadError::Io(error) => error.to_string(),
                    HeadError::NotHttp(reason) => reason,
                })
        }
        let ok = status(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            ok.unwrap(),
            Status {
                code: 200,
                line: "HTTP/1.1 200 OK".to_owned()
            }
        );
        assert_eq!(status(b"HTTP/1.0 204\n").await.unwrap().code, 204);
        let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 503 Busy\r\n";
        assert_eq!(status(hints).await.unwrap().code, 503);
        for (bad, reason) in [
            (&b"HTTP/2 200 OK\r\n"[..], "not an HTTP/1.x status line"),
            (b"HTTP/1.1 20 OK\r\n", "not an HTTP/1.x status line"),
            (b"SSH-2.0-OpenSSH_9.6\r\n", "not an HTTP/1.x status line"),
            (b"HTTP/1.1 200 OK", "closed before a status line"),
            (b"", "closed before a status line"),
            (
                &[b'x'; MAX_HEAD + 1],
                "no status line in the first 8192 bytes",
            ),
        ] {
            let error = status(bad).await.unwrap_err();
            assert!(error.to_string().contains(reason), "{error}");
        }
    }

    /// A server on 127.0.0.1 that answers one connection with `response` (or, if `None`,
    /// closes it unanswered) and returns the request head it received.
    async fn serve_once(response: Option<&'static [u8]>) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                if stream.read_buf(&mut request).await.unwrap() == 0 {
                    break;
                }
            }
            if let Some(response) = response {
                stream.write_all(response).await.unwrap();
            }
            String::from_utf8(request).unwrap()
        });
        (port, server)
    }

    #[tokio::test]
    async fn a_2xx_answer_is_ok_and_the_request_is_well_formed() {
        let (port, server) =
            serve_once(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
        let target = url(&format!("http://127.0.0.1:{port}/health?full=1"));
        within_deadline(http_ok(&target)).await.unwrap();
        let request = within_deadline(server).await.unwrap();
        assert_eq!(
            request,
            format!(
                "GET /health?full=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 User-Agent: running-process\r\nConnection: close\r\n\r\n"
            )
        );
    }

    #[tokio::test]
    async fn a_503_answer_is_its_status_and_an_error_quoting_it() {
        const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        let (port, _server) = serve_once(Some(UNAVAILABLE)).await;
        let target = url(&format!("http://127.0.0.1:{port}/"));
        assert_eq!(within_deadline(http_get(&target)).await.unwrap(), 503);
        let (port, _server) = serve_once(Some(UNAVAILABLE)).await;
        let target = url(&format!("http://127.0.0.1:{port}/"));
        let error = within_deadline(http_ok(&target)).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("HTTP/1.1 503 Service Unavailable"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_connection_closed_unanswered_is_an_error() {
        let (port, server) = serve_once(None).await;
        let target = url(&format!("http://127.0.0.1:{port}/"));
        let error = within_deadline(http_get(&target)).await.unwrap_err();
        assert!(
            error.to_string().contains("closed before a status line"),
            "{error}"
        );
        within_deadline(server).await.unwrap();
    }

    #[tokio::test]
    async fn an_ipv6_server_is_reached_by_its_bracketed_address() {
        let listener = match TcpListener::bind("[::1]:0").await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("SKIPPED: no IPv6 loopback ({error})");
                return;
            }
        };
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
        });
        let target = url(&format!("http://[::1]:{port}/"));
        assert_eq!(within_deadline(http_get(&target)).await.unwrap(), 204);
        within_deadline(server).await.unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_port_nobody_listens_on_is_a_connect_error() {
        use rustix::net::{AddressFamily, SocketType};
        // Bound without listen(): connections are refused, and no one else can take it.
        let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        rustix::net::bind(&socket, &loopback).unwrap();
        let local =
            std::net::SocketAddr::try_from(rustix::net::getsockname(&socket).unwrap()).unwrap();
        let target = url(&format!("http://{local}/"));
        let error = within_deadline(http_get(&target)).await.unwrap_err();
        assert!(error.to_string().contains("cannot connect"), "{error}");
    }

    fn command(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| arg.to_string()).collect()
    }

    /// A check that runs `script` with the platform's shell.
    fn shell(script: &str) -> Vec<String> {
        crate::test_util::shell(script)
    }

    #[tokio::test]
    async fn a_check_exiting_0_is_ok() {
        within_deadline(run_check(&shell("exit 0"), None))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_check_names_its_exit_code() {
        let error = within_deadline(run_check(&shell("exit 1"), None))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("exit code 1"), "{error}");
    }

    #[tokio::test]
    async fn a_failed_check_quotes_its_stderr() {
        let script = crate::test_util::WINDOWS_OR_SH
            .pick("echo boom 1>&2 & exit 3", "echo boom >&2; exit 3");
        let error = within_deadline(run_check(&shell(script), None))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("boom"), "{error}");
        assert!(error.to_string().contains("exit code 3"), "{error}");
    }

    /// Unix only: `head` and `tr` make the megabyte.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_chatty_check_is_drained_and_only_its_end_quoted() {
        // 1 MiB of stderr, far more than a pipe holds, then the reason.
        let script = "head -c 1048576 /dev/zero | tr '\\0' x >&2; echo the-reason >&2; exit 2";
        let error = within_deadline(run_check(&command(&["sh", "-c", script]), None))
            .await
            .unwrap_err();
        assert!(error.to_string().ends_with("the-reason"), "{error}");
        assert!(error.to_string().contains("exit code 2"), "{error}");
        assert!(error.to_string().len() < 2 * STDERR_TAIL, "{error}");
    }

    #[tokio::test]
    async fn a_check_that_cannot_start_is_an_error_naming_it() {
        let error = within_deadline(run_check(&command(&["/no/such/check-program"]), None))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("/no/such/check-program"),
            "{error}"
        );
        assert!(within_deadline(run_check(&[], None)).await.is_err());
    }

    /// Dropping a running check kills it and what it started: here a shell and the `sleep`
    /// it put in the background. Both are pinned by process handles before the drop, so
    /// their exits are seen even if the PIDs are reused.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_dropped_check_kills_its_process_group() {
        use crate::platform::ProcessHandle;
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!(
            "sleep 1000 & echo $$ $! > {0}.tmp && mv {0}.tmp {0}; wait",
            pids.display()
        );
        let check =
            tokio::spawn(async move { run_check(&command(&["sh", "-c", &script]), None).await });
        within_deadline(crate::command::wait::file_appears(&pids))
            .await
            .unwrap();
        let text = std::fs::read_to_string(&pids).unwrap();
        let watchers: Vec<_> = text
            .split_whitespace()
            .map(|pid| {
                let handle = ProcessHandle::open(pid.parse().unwrap()).unwrap();
                handle.into_watcher().unwrap()
            })
            .collect();
        assert_eq!(watchers.len(), 2, "{text:?}");
        check.abort();
        assert!(within_deadline(check).await.unwrap_err().is_cancelled());
        for watcher in &watchers {
            within_deadline(watcher.wait()).await;
        }
    }
}
