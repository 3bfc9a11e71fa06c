//! The demo daemon ([`demo_daemon_main`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;

use crate::blocking::blocking;
use crate::identity::{DaemonProcess, Endpoint};
use crate::protocol::{AppConnection, CacheManifest, DaemonListener, Responder};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

struct Args {
    endpoint: String,
    manifest: PathBuf,
    namespace: String,
    service: String,
    version: String,
    ready_delay: Duration,
    crash_after: Option<Duration>,
    hang_after: Option<Duration>,
    ignore_sigterm: bool,
    ignore_shutdown_request: bool,
    notify: bool,
    idle_timeout_secs: Option<u32>,
    manifest_unsynced: bool,
    require_inherited: bool,
}

const USAGE: &str =
    "usage: demo_daemon --endpoint <socket path> --manifest <file> [--namespace NS] \
[--service NAME] [--version VER] [--ready-delay-ms N] [--crash-after-ms N] [--hang-after-ms N] \
[--ignore-sigterm] [--ignore-shutdown-request] [--notify] [--idle-timeout-secs N] \
[--manifest-unsynced] [--require-inherited]";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut endpoint = None;
    let mut manifest = None;
    let mut parsed = Args {
        endpoint: String::new(),
        manifest: PathBuf::new(),
        namespace: "demo".into(),
        service: "demo".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ready_delay: Duration::ZERO,
        crash_after: None,
        hang_after: None,
        ignore_sigterm: false,
        ignore_shutdown_request: false,
        notify: false,
        idle_timeout_secs: None,
        manifest_unsynced: false,
        require_inherited: false,
    };
    let ms = |value: Option<String>, flag: &str| -> Result<Duration, String> {
        let value = value.ok_or(format!("{flag} needs a value"))?;
        value
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| format!("{flag}: `{value}` is not a number of milliseconds"))
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--endpoint" => endpoint = args.next(),
            "--manifest" => manifest = args.next().map(PathBuf::from),
            "--namespace" => parsed.namespace = args.next().ok_or("--namespace needs a value")?,
            "--service" => parsed.service = args.next().ok_or("--service needs a value")?,
            "--version" => parsed.version = args.next().ok_or("--version needs a value")?,
            "--ready-delay-ms" => parsed.ready_delay = ms(args.next(), "--ready-delay-ms")?,
            "--crash-after-ms" => parsed.crash_after = Some(ms(args.next(), "--crash-after-ms")?),
            "--hang-after-ms" => parsed.hang_after = Some(ms(args.next(), "--hang-after-ms")?),
            "--ignore-sigterm" => parsed.ignore_sigterm = true,
            "--ignore-shutdown-request" => parsed.ignore_shutdown_request = true,
            "--notify" => parsed.notify = true,
            "--manifest-unsynced" => parsed.manifest_unsynced = true,
            "--require-inherited" => parsed.require_inherited = true,
            "--idle-timeout-secs" => {
                let value = args.next().ok_or("--idle-timeout-secs needs a value")?;
                let secs = value.parse().map_err(|_| {
                    format!("--idle-timeout-secs: `{value}` is not a number of seconds")
                })?;
                parsed.idle_timeout_secs = Some(secs);
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    parsed.endpoint = endpoint.ok_or(format!("--endpoint is required\n{USAGE}"))?;
    parsed.manifest = manifest.ok_or(format!("--manifest is required\n{USAGE}"))?;
    Ok(parsed)
}

/// Run the demo daemon with this process's command line on a current-thread runtime of its
/// own, and return its exit code: 0 after a clean stop, 3 after `--crash-after-ms`, 2 for a
/// bad command line, 1 when it could not start.
///
/// The demo daemon is a real daemon built on this crate, which the crate's own tests,
/// benchmarks and examples run, and which a downstream crate can run in its tests too.
///
/// To get an executable, give your package a two-line binary (or example) and find it with
/// `env!("CARGO_BIN_EXE_<name>")`:
///
/// ```no_run
/// // src/bin/demo-daemon.rs (or tests/..., declared as a [[bin]] or [[example]])
/// fn main() -> std::process::ExitCode {
///     running_process::testing::demo_daemon_main()
/// }
/// ```
///
/// Its command line:
///
/// ```text
/// demo_daemon --endpoint <socket path> --manifest <file> [--namespace NS]
///             [--service NAME] [--version VER] [--ready-delay-ms N]
///             [--crash-after-ms N] [--hang-after-ms N] [--ignore-sigterm]
///             [--ignore-shutdown-request] [--notify] [--idle-timeout-secs N]
///             [--manifest-unsynced] [--require-inherited]
/// ```
///
/// It binds its socket, answers identity probes, serves a line-echo protocol on the same
/// socket, writes its manifest atomically once ready and then prints `ready pid=<pid>` on
/// stdout. On SIGTERM or a shutdown request (or its idle timeout) it removes its socket and
/// its manifest (if it still names this process; for a shared daemon also the lock file
/// `<manifest>.lock` and the directory, if that leaves it empty) and exits 0.
/// `--crash-after-ms` makes it exit with code 3 after that delay (leaving its socket
/// behind, as a crash would); `--hang-after-ms` makes it hang after that delay (alive, but
/// answering nothing, not even SIGTERM); `--ignore-sigterm` makes it ignore SIGTERM (on
/// Windows, Ctrl-Break); `--ignore-shutdown-request` makes it acknowledge a shutdown request
/// and keep running (the graceful stop on Windows, which has no SIGTERM).
/// `--notify` makes it announce readiness over systemd's sd_notify protocol (`READY=1`,
/// `STATUS=`) and, when `WATCHDOG_USEC` is set, send `WATCHDOG=1` at half that interval.
/// `--idle-timeout-secs` records an idle timeout in its identity (and so in its manifest);
/// its `Responder` then stops it, exit code 0, once no connection has been open that long.
/// `--manifest-unsynced` writes the manifest without its two fsyncs
/// (`CacheManifest::write_unsynced`: atomic, not durable across a crash, which leaves the
/// manifest stale anyway; `docs/PROTOCOL.md`, section 8.2).
///
/// Socket activation: when its supervisor passes a listening socket bound to the
/// `--endpoint` path (`LISTEN_FDS`, see [`DaemonListener::bind`]), it serves on that one
/// and leaves the socket file alone when it exits (the supervisor owns it);
/// `--require-inherited` makes it exit with code 1 and the reason on stderr when none is
/// passed, instead of binding the socket itself.
pub fn demo_daemon_main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("demo_daemon: {}", crate::report::Chain(&*error));
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let endpoint = Endpoint::new(args.namespace.clone(), args.endpoint.clone());
    let mut terminate = termination_signal()?;

    let listener = if args.require_inherited {
        DaemonListener::inherit(&endpoint).await?
    } else {
        DaemonListener::bind(&endpoint).await?
    };
    let owns_socket = !listener.is_inherited();
    let me = DaemonProcess::current_process_async(endpoint.clone(), args.idle_timeout_secs).await?;
    let responder = Responder::new(args.service.clone(), args.version.clone(), me.clone());
    let shutdown = responder.shutdown_token();
    let mut incoming = responder.serve(listener);

    // The point of this delay is time passing: it simulates a slow start.
    tokio::time::sleep(args.ready_delay).await;
    let manifest = CacheManifest::new(args.service, args.version, Some(me.clone()));
    if args.manifest_unsynced {
        manifest.write_unsynced(&args.manifest).await?;
    } else {
        manifest.write(&args.manifest).await?;
    }
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("ready pid={}\n", std::process::id()).as_bytes())
        .await?;
    stdout.flush().await?;
    if args.notify {
        announce_with_sd_notify()?;
    }

    let crash = after(args.crash_after);
    let hang = after(args.hang_after);
    tokio::pin!(crash, hang);
    let mut shutdown_ignored = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled(), if !shutdown_ignored => {
                if args.ignore_shutdown_request {
                    eprintln!("demo_daemon: ignoring the shutdown request");
                    shutdown_ignored = true;
                    continue;
                }
                break;
            }
            _ = terminate.recv() => {
                if args.ignore_sigterm {
                    eprintln!(
                        "demo_daemon: ignoring {}",
                        if cfg!(windows) { "Ctrl-Break" } else { "SIGTERM" }
                    );
                    continue;
                }
                break;
            }
            _ = &mut crash => {
                eprintln!("demo_daemon: crashing as asked");
                return Ok(ExitCode::from(3));
            }
            _ = &mut hang => {
                eprintln!("demo_daemon: hanging as asked");
                // Wedge the only runtime thread, as a deadlock would: the process stays
                // alive, but no task runs again (no pong, no SIGTERM handling).
                loop {
                    std::thread::park();
                }
            }
            Some(connection) = incoming.next() => {
                tokio::spawn(echo_lines(connection));
            }
        }
    }
    drop(incoming);
    let (socket, manifest) = (PathBuf::from(&args.endpoint), args.manifest.clone());
    blocking(move || {
        if owns_socket {
            let _ = std::fs::remove_file(&socket);
        }
        remove_own_files(&manifest, &me);
    })
    .await;
    Ok(ExitCode::SUCCESS)
}

/// On a clean exit: the manifest if it still names this process and, when it was shared
/// (`SharedDaemon` locks `<manifest>.lock`), that lock file and the directory if it is left
/// empty. Under that lock, taken without waiting: whoever holds it is about to adopt or
/// replace this daemon and rewrites the manifest anyway.
/// Blocking (files).
fn remove_own_files(manifest: &Path, me: &DaemonProcess) {
    let mut lock_path = manifest.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = match std::fs::OpenOptions::new().write(true).open(&lock_path) {
        Ok(file) if file.try_lock().is_ok() => Some(file),
        Ok(_busy) => return,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => return,
    };
    let names_me = matches!(
        CacheManifest::read_blocking(manifest),
        Ok(Some(CacheManifest { current_daemon: Some(daemon), .. })) if daemon == *me
    );
    if names_me {
        let _ = std::fs::remove_file(manifest);
    }
    if lock.is_some() {
        // Removed while held: a waiter that locked this file sees it gone and retries.
        let _ = std::fs::remove_file(&lock_path);
        if let Some(dir) = manifest.parent() {
            let _ = std::fs::remove_dir(dir); // only if empty
        }
    }
}

/// Completes after `delay`, or never without one. The point is time passing: it schedules a
/// simulated fault.
async fn after(delay: Option<Duration>) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

/// sd_notify: READY=1 with a status line, then watchdog keep-alives if asked for.
#[cfg(unix)]
fn announce_with_sd_notify() -> std::io::Result<()> {
    use crate::protocol::sd_notify;
    sd_notify::notify(&format!(
        "READY=1\nSTATUS=serving as pid {}",
        std::process::id()
    ))?;
    if let Some(interval) = sd_notify::watchdog_interval() {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                if sd_notify::notify("WATCHDOG=1").is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn announce_with_sd_notify() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "sd_notify is a Unix protocol",
    ))
}

/// The daemon's own protocol: every line received is sent back.
async fn echo_lines(connection: AppConnection) {
    let (read, mut write) = tokio::io::split(connection);
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
}

#[cfg(unix)]
fn termination_signal() -> std::io::Result<impl SignalRecv> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
}

#[cfg(windows)]
fn termination_signal() -> std::io::Result<impl SignalRecv> {
    tokio::signal::windows::ctrl_break()
}

/// `recv` on the platform's termination signal stream.
trait SignalRecv {
    async fn recv(&mut self) -> Option<()>;
}

#[cfg(unix)]
impl SignalRecv for tokio::signal::unix::Signal {
    async fn recv(&mut self) -> Option<()> {
        tokio::signal::unix::Signal::recv(self).await
    }
}

#[cfg(windows)]
impl SignalRecv for tokio::signal::windows::CtrlBreak {
    async fn recv(&mut self) -> Option<()> {
        tokio::signal::windows::CtrlBreak::recv(self).await
    }
}
