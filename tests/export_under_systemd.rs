//! `running-process export systemd` under a real systemd: a file of four services is
//! exported by the command line, the units are installed into a throw-away container whose
//! PID 1 is the machine's systemd (`systemd_container`), and systemd runs them:
//!
//! - `prepare`, a one-shot that `redis` depends on (`completed_successfully`);
//! - `redis`, Debian's redis-server, ready over sd_notify (`--supervised systemd`);
//! - `web`, a Python HTTP server with HTTP readiness, depending on redis being ready;
//! - `api`, socket-activated: systemd binds its listener and passes it as descriptor 3; it
//!   depends on `web` being ready, which only the exported `ExecStartPost=running-process
//!   wait http ...` can tell systemd.
//!
//! Checked: `systemctl start GROUP.target` makes every unit active and each serves; each
//! dependant started only after its dependency was ready (`systemctl show` timestamps, and
//! the moment the web server first answered); a SIGKILL of the api's main process is
//! restarted by systemd, and its socket refuses no connection meanwhile; `systemctl stop
//! GROUP.target` leaves no unit active, no process, no listener. Prints SKIPPED where the
//! container cannot boot (not root, no systemd-nspawn, no cgroup v2), or a program of the
//! file is missing.
#![cfg(target_os = "linux")]

mod systemd_container;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use systemd_container::{find, poll, Container};

const BIN: &str = env!("CARGO_BIN_EXE_running-process");

/// The group: its units are `shop-*.service`, `shop-api-http.socket`, `shop.target`.
const GROUP: &str = "shop";

/// The web server: answers every GET with 200 and notes (once) the CLOCK_MONOTONIC
/// microsecond of its first answer, which is what `systemctl show` timestamps count in.
const WEB: &str = r#"
import http.server, os, sys, time
first = []
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if not first:
            first.append(time.monotonic_ns() // 1000)
            with open("web-first-answer.tmp", "w") as f:
                f.write(str(first[0]))
            os.rename("web-first-answer.tmp", "web-first-answer")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"web\n")
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

/// The socket-activated service: accepts on descriptor 3 (LISTEN_FDS), answers `api`.
const API: &str = r#"
import socket
listener = socket.socket(fileno=3)
while True:
    connection, _ = listener.accept()
    connection.sendall(b"api\n")
    connection.close()
"#;

/// Three free loopback ports (bound then released; nothing else here binds them).
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    [0, 1, 2].map(|i| listeners[i].local_addr().unwrap().port())
}

fn service_file(ports: [u16; 3]) -> String {
    let [redis, web, api] = ports;
    let quote = |text: &str| format!("{text:?}");
    format!(
        r#"
[group]
name = "{GROUP}"

[services.prepare]
program = "sh"
args = ["-c", "mkdir -p data && echo prepared > data/prepared"]
restart = {{ kind = "temporary" }}

[services.redis]
program = "redis-server"
args = ["--port", "{redis}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--supervised", "systemd", "--daemonize", "no", "--dir", "data"]
readiness = {{ kind = "notify" }}
depends_on = {{ prepare = "completed_successfully" }}

[services.web]
program = "python3"
args = ["-c", {web_script}, "{web}"]
readiness = {{ kind = "http", url = "http://127.0.0.1:{web}/" }}
depends_on = {{ redis = "ready" }}

[services.api]
program = "python3"
args = ["-c", {api_script}]
listeners = [{{ kind = "tcp", name = "http", address = "127.0.0.1:{api}" }}]
depends_on = {{ web = "ready" }}
"#,
        web_script = quote(WEB),
        api_script = quote(API),
    )
}

/// Export `file` with the command line into `out`.
fn export(file: &Path, out: &Path) {
    let output = Command::new(BIN)
        .args(["export", "systemd", "-f"])
        .arg(file)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "export: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Connect to `port` and read what it says first (`request` sent before).
fn ask(port: u16, request: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    // The servers here close after answering, except redis: its answer is one line.
    while !answer.ends_with(b"\n") {
        match stream.read(&mut buf)? {
            0 => break,
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn unit(name: &str) -> String {
    format!("{GROUP}-{name}")
}

#[test]
fn exported_units_run_under_systemd() {
    for program in ["redis-server", "python3", "sh"] {
        if find(program).is_none() {
            println!("SKIPPED: `{program}` is not installed (the service file runs it)");
            return;
        }
    }
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("export-under-systemd-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let ports = free_ports();
    let file = dir.join("running-process.toml");
    std::fs::write(&file, service_file(ports)).unwrap();
    let units = dir.join("units");
    export(&file, &units);

    let binary = Path::new(BIN).canonicalize().unwrap();
    let bin_dir = binary.parent().unwrap();
    let container = match Container::boot(&[&dir], &[bin_dir], dir.join("nspawn.log")) {
        Ok(container) => container,
        Err(why) => {
            println!("SKIPPED: the systemd container cannot boot here: {why}");
            return;
        }
    };
    println!("booted in {:?}", started.elapsed());
    let install = format!(
        "cp {}/* /etc/systemd/system/ && systemctl daemon-reload",
        units.display()
    );
    let output = container.run(&["sh", "-c", &install]);
    assert!(output.status.success(), "{output:?}");

    container.systemctl(&["start", &format!("{GROUP}.target")]);
    everything_serves(&container, &dir, ports);
    dependants_started_after_ready(&container, &dir);
    a_killed_main_process_restarts_behind_its_socket(&container, ports[2]);
    stop_leaves_nothing(&container, ports);
    println!("done in {:?}", started.elapsed());
}

/// Every unit is active and each service answers.
fn everything_serves(container: &Container, dir: &Path, [redis, web, api]: [u16; 3]) {
    for name in [
        "prepare.service",
        "redis.service",
        "web.service",
        "api.service",
        "api-http.socket",
    ] {
        assert_eq!(
            container.property(&unit(name), "ActiveState"),
            "active",
            "{name}\n{}",
            container.journal()
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("data/prepared")).unwrap(),
        "prepared\n"
    );
    assert_eq!(ask(redis, b"PING\r\n").unwrap(), "+PONG\r\n");
    let answer = ask(web, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert_eq!(ask(api, b"").unwrap(), "api\n");
}

/// `prepare` exited before redis started; redis was ready (READY=1) before web started; web
/// answered HTTP (its `ExecStartPost=` wait) before its unit was active and before api
/// started.
fn dependants_started_after_ready(container: &Container, dir: &Path) {
    let at = |name: &str, property: &str| container.monotonic(&unit(name), property);
    let prepared = at("prepare.service", "ExecMainExitTimestampMonotonic");
    let redis_started = at("redis.service", "ExecMainStartTimestampMonotonic");
    let redis_ready = at("redis.service", "ActiveEnterTimestampMonotonic");
    let web_started = at("web.service", "ExecMainStartTimestampMonotonic");
    let web_active = at("web.service", "ActiveEnterTimestampMonotonic");
    let api_started = at("api.service", "ExecMainStartTimestampMonotonic");
    let first_answer: u64 = std::fs::read_to_string(dir.join("web-first-answer"))
        .expect("web answered the readiness wait")
        .parse()
        .unwrap();
    let after = |t: u64| i128::from(t) - i128::from(prepared);
    println!(
        "µs after prepare exited: redis started {}, ready {}; web started {}, first answered {}, active {}; api started {}",
        after(redis_started),
        after(redis_ready),
        after(web_started),
        after(first_answer),
        after(web_active),
        after(api_started)
    );
    assert!(
        prepared <= redis_started,
        "redis started before prepare exited"
    );
    assert!(
        redis_ready <= web_started,
        "web started before redis was ready"
    );
    assert!(
        web_started <= first_answer,
        "web answered before it started?"
    );
    assert!(
        first_answer <= web_active,
        "web was active before it answered HTTP"
    );
    assert!(
        web_active <= api_started,
        "api started before web was ready"
    );
}

/// SIGKILL of api's main process: systemd restarts it, and connections made meanwhile wait
/// in the socket's backlog instead of being refused.
fn a_killed_main_process_restarts_behind_its_socket(container: &Container, port: u16) {
    let api = unit("api.service");
    let before = container.property(&api, "MainPID");
    let done = Arc::new(AtomicBool::new(false));
    let client = std::thread::spawn({
        let done = done.clone();
        move || {
            let (mut answered, mut refused, mut other) = (0u32, Vec::new(), Vec::new());
            while !done.load(Ordering::Relaxed) {
                match ask(port, b"") {
                    Ok(text) if text == "api\n" => answered += 1,
                    Ok(text) => other.push(format!("answer {text:?}")),
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        refused.push(e.to_string())
                    }
                    // A connection the killed process had accepted is reset: not a refusal.
                    Err(e) => other.push(e.to_string()),
                }
            }
            (answered, refused, other)
        }
    });
    container.systemctl(&["kill", "--kill-whom=main", "--signal=SIGKILL", &api]);
    let after = poll("api restarted with a new main process", || {
        let pid = container.property(&api, "MainPID");
        let active = container.property(&api, "ActiveState") == "active";
        (active && pid != "0" && pid != before).then_some(pid)
    });
    // Answers from the new process, then the client stops.
    let restarts = container.property(&api, "NRestarts");
    assert_eq!(ask(port, b"").unwrap(), "api\n");
    done.store(true, Ordering::Relaxed);
    let (answered, refused, other) = client.join().unwrap();
    println!(
        "api: main pid {before} -> {after}, NRestarts={restarts}; {answered} answers, {} refused, other: {other:?}",
        refused.len()
    );
    assert_eq!(restarts, "1");
    assert!(
        refused.is_empty(),
        "refused across the restart: {refused:?}"
    );
    assert!(answered > 0);
}

/// `systemctl stop GROUP.target`: every unit inactive, no process left in their cgroups,
/// nothing listening.
fn stop_leaves_nothing(container: &Container, ports: [u16; 3]) {
    container.systemctl(&["stop", &format!("{GROUP}.target")]);
    let names = [
        "prepare.service",
        "redis.service",
        "web.service",
        "api.service",
        "api-http.socket",
    ];
    for name in names {
        // Stop jobs run in reverse order: the target's ends before its services' do.
        poll(&format!("{name} inactive"), || {
            (container.property(&unit(name), "ActiveState") == "inactive").then_some(())
        });
    }
    let slice = container.cgroup().join("payload/system.slice");
    for name in &names[..4] {
        let events = slice.join(unit(name)).join("cgroup.events");
        let populated = std::fs::read_to_string(&events).is_ok_and(|t| t.contains("populated 1"));
        assert!(!populated, "{name} has processes left");
    }
    for port in ports {
        let refused = TcpStream::connect(("127.0.0.1", port)).map(drop);
        assert!(refused.is_err(), "something still listens on {port}");
    }
}
