//! Helpers for tests against real third-party daemons from Debian packages (`redis-server`,
//! `memcached`, `nginx-light`, `postgresql`): find the program, pick a port, write a
//! configuration that keeps every file inside a temporary directory, build the arguments
//! that run the daemon in the foreground, and talk to it once (the "is it really up"
//! round trip). Starting and supervising the daemon is left to the test.
//!
//! `.ci/run` installs the packages without starting their stock services; a test calls
//! [`find`] first and prints `SKIPPED: <program> is not installed` when it returns `None`.
//!
//! What each daemon does (Debian 12 builds; details on each helper below):
//!
//! | daemon    | sd_notify `READY=1`           | readiness log line (stream)                            | processes |
//! |-----------|-------------------------------|--------------------------------------------------------|-----------|
//! | redis     | yes, with `--supervised systemd`, from the main pid | `* Ready to accept connections` (stdout) | one (threads); argv rewritten to `redis-server 127.0.0.1:PORT` |
//! | memcached | no                            | with `-vv` only: `<N server listening (auto-negotiate)` (stderr) | one (threads) |
//! | nginx     | no                            | `[notice] ...: start worker processes` (stderr, at `notice` level) | master + N workers, same process group; workers outlive a SIGKILLed master and keep the port |
//! | postgres  | yes (built `--with-systemd`), from the postmaster | `LOG:  database system is ready to accept connections` (stderr) | postmaster + children, each child in its own session (`setsid`); children exit when the postmaster dies |
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long one round trip ([`redis_ping`], [`memcached_roundtrip`], [`nginx_get_index`],
/// [`postgres_select_1`]) may take before it counts as a failure: a daemon that accepted
/// the connection but never answers must not hang the test.
pub const ROUNDTRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// `program` as an absolute path: the first match in `$PATH`, then `/usr/sbin` and `/sbin`
/// (not in a non-root `$PATH` on Debian; `nginx` and `runuser` live there), `/usr/bin` and
/// `/bin` (for a stripped `$PATH`), then `/usr/lib/postgresql/<version>/bin` of the highest
/// installed version (where `postgres` and `initdb` live). `None` when it is not installed
/// (or not executable).
pub fn find(program: &str) -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    in_path
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .chain(postgres_bin_dir())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// `/usr/lib/postgresql/<version>/bin` of the highest version installed (versions compared
/// as numbers: 9.6 < 15 < 16).
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// A PostgreSQL program (`postgres`, `initdb`, `psql`) from the highest installed version's
/// directory, so that server, initdb and client match; else [`find`] (`psql` in `$PATH` is
/// Debian's `pg_wrapper`, which works too).
pub fn postgres_program(name: &str) -> Option<PathBuf> {
    postgres_bin_dir()
        .map(|dir| dir.join(name))
        .filter(|path| is_executable(path))
        .or_else(|| find(name))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read, released).
/// Another process may take it before the daemon binds it; the daemons here then fail at
/// once with "Address already in use" rather than hang.
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    probe.local_addr().expect("local_addr").port()
}

/// Whether this process runs as root (effective uid 0): memcached then needs `-u`, nginx a
/// `user` directive, and postgres (which refuses root) another user.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The uid and gid of `user`, from `/etc/passwd`.
pub fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

// ---------------------------------------------------------------------------------------
// nginx

/// The body of the `index.html` that [`nginx_config`] writes and [`nginx_get_index`]
/// expects.
pub const NGINX_INDEX: &str = "running-process nginx test\n";

/// Write `dir/nginx.conf` and `dir/index.html`: nginx in the foreground (`daemon off;
/// master_process on;`) with `workers` worker processes, serving `index.html` from `dir` on
/// 127.0.0.1:`port`. The pid file, logs, lock file and temporary directories all lie in
/// `dir` (nginx creates the temporary ones), so nothing under `/var` or `/run` is touched
/// and any number of instances can run side by side. The error log goes to stderr at
/// `notice` level, so the master's `start worker processes` line (printed after the
/// listening socket is bound) is there to wait for. As root, `user root;` keeps the
/// workers' uid (the default, `nobody`, could not read a 0700 temporary directory).
/// Returns the configuration's path, for [`nginx_args`].
pub fn nginx_config(dir: &Path, port: u16, workers: u32) -> PathBuf {
    std::fs::write(dir.join("index.html"), NGINX_INDEX).expect("write index.html");
    let d = dir.display();
    let user = if is_root() { "user root;\n" } else { "" };
    let config = format!(
        "daemon off;
master_process on;
worker_processes {workers};
{user}pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log stderr notice;
events {{
    worker_connections 64;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    server {{
        listen 127.0.0.1:{port};
        root {d};
        location / {{
            index index.html;
        }}
    }}
}}
"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).expect("write nginx.conf");
    path
}

/// Arguments that run nginx with `config` and prefix `dir`: `-c CONFIG -p DIR/ -e stderr`.
/// `-e stderr` sends even the errors nginx reports before it has read the configuration to
/// stderr; a bad directive gives `[emerg] ... unknown directive "..." in CONFIG:LINE` there
/// and exit code 1.
pub fn nginx_args(dir: &Path, config: &Path) -> Vec<OsString> {
    let mut prefix = dir.as_os_str().to_owned();
    prefix.push("/");
    vec![
        "-c".into(),
        config.as_os_str().to_owned(),
        "-p".into(),
        prefix,
        "-e".into(),
        "stderr".into(),
    ]
}

/// `GET /` from 127.0.0.1:`port` answers 200 with [`NGINX_INDEX`].
pub async fn nginx_get_index(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8(response).ok()?;
        Some(response.starts_with("HTTP/1.1 200") && response.ends_with(NGINX_INDEX))
    };
    matches!(
        tokio::time::timeout(ROUNDTRIP_TIMEOUT, exchange).await,
        Ok(Some(true))
    )
}

// ---------------------------------------------------------------------------------------
// memcached

/// Arguments that run memcached in the foreground on 127.0.0.1:`port`, TCP only (`-U 0`).
/// As root memcached refuses to start without `-u` (`can't run as root without the -u
/// switch`, exit 64); `-u root` keeps the uid (`-u nobody` works too but setuid()s away).
/// It prints nothing at startup unless `-vv` is added (then `<N server listening
/// (auto-negotiate)` on stderr, after pages of slab classes). A taken port: `failed to
/// listen on one of interface(s) 127.0.0.1: Address already in use` on stderr, exit 71.
pub fn memcached_args(port: u16) -> Vec<String> {
    let mut args: Vec<String> = ["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"]
        .map(String::from)
        .into();
    if is_root() {
        args.extend(["-u".to_owned(), "root".to_owned()]);
    }
    args
}

/// `set` a key, `get` it back over the text protocol: true if the value comes back.
pub async fn memcached_roundtrip(port: u16) -> bool {
    let exchange = async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let value = format!("v{}", std::process::id());
        let set = format!("set rp_test 0 0 {}\r\n{value}\r\n", value.len());
        write.write_all(set.as_bytes()).await.ok()?;
        if lines.next_line().await.ok()?? != "STORED" {
            return None;
        }
        write.write_all(b"get rp_test\r\n").await.ok()?;
        let header = lines.next_line().await.ok()??;
        let data = lines.next_line().await.ok()??;
        let end = lines.next_line().await.ok()??;
        Some(header == format!("VALUE rp_test 0 {}", value.len()) && data == value && end == "END")
    };
    matches!(
        tokio::time::timeout(ROUNDTRIP_TIMEOUT, exchange).await,
        Ok(Some(true))
    )
}

// ---------------------------------------------------------------------------------------
// redis

/// Arguments that run redis-server in the foreground on 127.0.0.1:`port`, persisting
/// nothing (`--save "" --appendonly no`), its working directory `dir`, and reporting
/// readiness over sd_notify (`--supervised systemd`: Debian's build sends `STATUS=...` and
/// `READY=1` from the main pid once it listens, `STOPPING=1` on SIGTERM; without
/// `$NOTIFY_SOCKET` it only logs `systemd supervision error: NOTIFY_SOCKET not found!`). The log goes to stdout; its readiness line
/// is `* Ready to accept connections`. SIGTERM is a clean exit (code 0); a taken port is
/// `Failed listening on port PORT (TCP), aborting.` and exit code 1.
pub fn redis_args(port: u16, dir: &Path) -> Vec<String> {
    let port = port.to_string();
    let dir = dir.display().to_string();
    [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--supervised",
        "systemd",
        "--daemonize",
        "no",
        "--dir",
        &dir,
    ]
    .map(String::from)
    .into()
}

/// Send `PING` over RESP and expect `+PONG`.
pub async fn redis_ping(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(ROUNDTRIP_TIMEOUT, exchange).await,
        Ok(Some(true))
    )
}

// ---------------------------------------------------------------------------------------
// postgres

/// The user the PostgreSQL server runs as when the tests run as root (postgres refuses to
/// run as root).
pub const POSTGRES_USER: &str = "postgres";

/// The uid and gid postgres should run with: the `postgres` user's when this process is
/// root, `None` (this process's own) otherwise. For std/tokio `Command::uid`/`gid` (std
/// drops the supplementary groups too), or see [`as_postgres_user`].
pub fn postgres_ids() -> Option<(u32, u32)> {
    if is_root() {
        Some(user_ids(POSTGRES_USER).expect("a `postgres` user (the postgresql package adds it)"))
    } else {
        None
    }
}

/// The socket directory [`postgres_cluster`] creates in `dir`, writable by the server.
pub fn postgres_socket_dir(dir: &Path) -> PathBuf {
    dir.join("sock")
}

/// Create a database cluster in `dir/data` (and the socket directory `dir/sock`) and return
/// the data directory. `dir` should be a fresh temporary directory directly in a
/// world-traversable directory such as `/tmp`: as root it is handed to the `postgres` user
/// (chown), and `initdb`, which refuses root, runs as that user (`runuser -u postgres --`;
/// a one-shot setup step, so a wrapper that forks is fine). Trust authentication, user
/// `postgres`, no fsync, C locale. Panics if anything fails (a setup step). About a second.
pub fn postgres_cluster(dir: &Path) -> PathBuf {
    let initdb = postgres_program("initdb").expect("initdb is installed");
    let data = dir.join("data");
    let sock = postgres_socket_dir(dir);
    std::fs::create_dir_all(&sock).expect("create the socket directory");
    let mut command = match postgres_ids() {
        Some((uid, gid)) => {
            let (uid, gid) = (
                rustix::fs::Uid::from_raw(uid),
                rustix::fs::Gid::from_raw(gid),
            );
            for path in [dir, &sock] {
                rustix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
            }
            let runuser = find("runuser").expect("runuser (util-linux) is installed");
            let mut command = std::process::Command::new(runuser);
            command.args(["-u", POSTGRES_USER, "--"]).arg(initdb);
            command
        }
        None => std::process::Command::new(initdb),
    };
    let output = command
        .arg("-D")
        .arg(&data)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .env_remove("PGDATA")
        .stdin(Stdio::null())
        .output()
        .expect("run initdb");
    assert!(
        output.status.success(),
        "initdb failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    data
}

/// Arguments that run the postmaster in the foreground: `-D DATA -k SOCKDIR -p PORT -c
/// listen_addresses=127.0.0.1`. It logs to stderr; the readiness line is `LOG:  database
/// system is ready to accept connections`. Debian's build has systemd support: with
/// `$NOTIFY_SOCKET` set it sends `READY=1` (and `STOPPING=1` on shutdown) from the
/// postmaster's pid, as the `postgres` user, so the socket must be writable by that user.
/// Run it as [`postgres_ids`] (or through [`as_postgres_user`]).
pub fn postgres_args(data: &Path, sockdir: &Path, port: u16) -> Vec<OsString> {
    vec![
        "-D".into(),
        data.as_os_str().to_owned(),
        "-k".into(),
        sockdir.as_os_str().to_owned(),
        "-p".into(),
        port.to_string().into(),
        "-c".into(),
        "listen_addresses=127.0.0.1".into(),
    ]
}

/// `program args` as the `postgres` user when this process is root, for a spawner that
/// cannot set the uid itself: `setpriv --reuid=postgres --regid=postgres --init-groups --
/// program args`. setpriv exec()s, so the spawned pid is the postmaster's. Unchanged when
/// not root.
pub fn as_postgres_user(program: &Path, args: Vec<OsString>) -> (PathBuf, Vec<OsString>) {
    if !is_root() {
        return (program.to_owned(), args);
    }
    let setpriv = find("setpriv").expect("setpriv (util-linux) is installed");
    let mut wrapped: Vec<OsString> = vec![
        format!("--reuid={POSTGRES_USER}").into(),
        format!("--regid={POSTGRES_USER}").into(),
        "--init-groups".into(),
        "--".into(),
        program.as_os_str().to_owned(),
    ];
    wrapped.extend(args);
    (setpriv, wrapped)
}

/// `select 1` through psql, both over TCP (127.0.0.1:`port`) and over the Unix socket in
/// `sockdir`: true if both print `1`.
pub async fn postgres_select_1(port: u16, sockdir: &Path) -> bool {
    let Some(psql) = postgres_program("psql") else {
        return false;
    };
    for host in [Path::new("127.0.0.1"), sockdir] {
        let run = tokio::process::Command::new(&psql)
            .arg("-h")
            .arg(host)
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-X", "-w", "-Atc", "select 1"])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(ROUNDTRIP_TIMEOUT, run).await {
            Ok(Ok(output)) if output.status.success() && output.stdout == b"1\n" => {}
            _ => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// "nothing left" checks

/// Pids of the running processes whose executable is `exe` (by `/proc/PID/exe`, so it
/// matches whatever a process wrote over its argv: nginx's `nginx: worker process`).
/// Zombies have no executable and are not listed; neither is this process.
pub fn processes_of_exe(exe: &Path) -> Vec<u32> {
    let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_owned());
    scan_proc(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|link| link == exe))
}

/// Pids of the running processes whose command line (arguments joined by spaces, as
/// `/proc/PID/cmdline` shows it now) contains `needle`. Mind the daemons that rewrite it:
/// redis shows `redis-server 127.0.0.1:PORT`, nginx workers `nginx: worker process`,
/// postgres children `postgres: checkpointer` (use [`processes_of_exe`] for those).
/// Zombies (empty command line) and this process are not listed.
pub fn processes_with_cmdline_containing(needle: &str) -> Vec<u32> {
    scan_proc(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
            let line: Vec<u8> = raw
                .strip_suffix(b"\0")
                .unwrap_or(&raw)
                .iter()
                .map(|&b| if b == 0 { b' ' } else { b })
                .collect();
            String::from_utf8_lossy(&line).contains(needle)
        })
    })
}

/// The parent, process group and session of `pid` (from `/proc/PID/stat`), `None` once it
/// is gone.
pub fn ppid_pgid_sid(pid: u32) -> Option<(u32, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp session ...`; comm may contain spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(1);
    let mut next = || fields.next()?.parse::<u32>().ok();
    Some((next()?, next()?, next()?))
}

/// Pids of the children of `parent` still in the process table (zombies included).
pub fn children_of(parent: u32) -> Vec<u32> {
    scan_proc(|pid| ppid_pgid_sid(pid).is_some_and(|(ppid, _, _)| ppid == parent))
}

fn scan_proc(mut matches: impl FnMut(u32) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && matches(pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Print `SKIPPED: why` for a test that cannot run here. Written to stderr directly, not
/// through `eprintln!`, so libtest's output capture does not hide it when the test passes.
pub fn skip(why: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "SKIPPED: {why}");
    let _ = err.flush();
}
