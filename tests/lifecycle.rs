//! The process lifecycle of `CommandSupervisor` with real processes: the spawner thread,
//! the whole tree (cgroup and process group), kill modes, fail-fast start errors, the last
//! output of a dying process, honest readiness. Linux.
#![cfg(target_os = "linux")]

mod support;

use std::path::Path;
use std::time::Duration;

use running_process::command::{CommandSpec, KillMode, Output, Readiness, StopSpec};
use running_process::supervision::{
    EventKind, ExecFailure, Intensity, Outcome, RestartKind, RestartPolicy, StartError,
};
use support::{next_matching, no_backoff, wait_gone, within};

fn sh(name: &str, script: &str) -> CommandSpec {
    CommandSpec::new(name, "sh").args(["-c", script])
}

/// Whether process `pid` is gone (or a zombie awaiting its reaper).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// "cgroup" when `pid` runs in a cgroup of the crate, else "process group".
fn tracking(pid: u32) -> &'static str {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    if cgroup.contains("running-process-") {
        "cgroup"
    } else {
        "process group"
    }
}

fn kill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        if let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
        }
    }
}

/// The pids a [`tree_spec`] instance wrote, and its files removed: the next instance's
/// readiness (the file `b`) then waits for that instance's own.
fn take_pids(dir: &Path) -> (u32, u32) {
    let pids = (read_pid(&dir.join("a")), read_pid(&dir.join("b")));
    for file in ["a", "b"] {
        std::fs::remove_file(dir.join(file)).unwrap();
    }
    pids
}

/// A shell whose tree has a child in its process group (`a`) and one that left it with
/// `setsid` (`b`); their pids go to files. `b` is written by that child itself once it has
/// its own session, so readiness (the file `b`) cannot race the `setsid`.
fn tree_spec(name: &str, dir: &Path) -> CommandSpec {
    let script = format!(
        "cd {dir}; rm -f a b; sleep 3600 & echo $! > a; \
         setsid sh -c 'echo $$ > b.tmp; mv b.tmp b; exec sleep 3601' & exec sleep 3602",
        dir = dir.display()
    );
    sh(name, &script)
        .readiness(Readiness::File {
            path: dir.join("b"),
        })
        .restart(no_backoff(RestartKind::Permanent))
}

#[tokio::test]
async fn the_rest_of_the_tree_dies_before_the_replacement_starts() {
    let dir = tempfile::tempdir().unwrap();
    let service = tree_spec("tree", dir.path()).supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    let main = service.backend().unwrap();
    let (a, b) = take_pids(dir.path());
    let path = tracking(main.pid());
    println!("tree tracking: {path}");
    if path != "cgroup" {
        support::daemons::skip(
            "no cgroup v2 could be created here: the process-group test covers this machine",
        );
        kill(b);
        service.stop().await;
        return;
    }
    main.force_kill().unwrap();
    let exited = next_matching(&mut events, "exited", |e| {
        matches!(e.kind, EventKind::Exited { .. })
    })
    .await;
    // The event comes after the cleanup: by now both children are dead, the one that
    // called setsid() included (the cgroup tracked it).
    assert!(
        is_dead(a),
        "child in the process group survived ({exited:?})"
    );
    assert!(is_dead(b), "child that called setsid() survived");
    next_matching(&mut events, "replacement ready", |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    let replacement = service.backend().unwrap();
    assert_ne!(replacement.pid(), main.pid());
    let (a2, b2) = take_pids(dir.path());
    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    for pid in [replacement.pid(), a2, b2] {
        assert!(is_dead(pid), "process {pid} of the stopped tree survived");
    }
}

#[tokio::test]
async fn without_a_cgroup_the_process_group_dies_before_the_replacement_starts() {
    let dir = tempfile::tempdir().unwrap();
    let service = tree_spec("group", dir.path()).cgroup(false).supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    let main = service.backend().unwrap();
    let (a, b) = take_pids(dir.path());
    println!("tree tracking: {}", tracking(main.pid()));
    assert_eq!(tracking(main.pid()), "process group");
    main.force_kill().unwrap();
    next_matching(&mut events, "exited", |e| {
        matches!(e.kind, EventKind::Exited { .. })
    })
    .await;
    assert!(is_dead(a), "child in the process group survived");
    // The documented limit of the fallback: a process that left the group is not seen.
    assert!(
        !is_dead(b),
        "the setsid() child was expected to escape the process group"
    );
    kill(b);
    wait_gone(b).await;
    next_matching(&mut events, "replacement ready", |e| {
        matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    let (_, b2) = take_pids(dir.path());
    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    kill(b2);
}

/// A child that records SIGTERM in `marker` before it exits.
fn term_recording_spec(name: &str, dir: &Path, mode: KillMode) -> CommandSpec {
    // The child says it is ready only once its trap is set and its own child started, so
    // a stop cannot race the set-up.
    let script = format!(
        "cd {dir}; sh -c 'echo $$ > child.tmp; mv child.tmp child; \
         trap \"echo term > marker; exit 0\" TERM; sleep 3600 & touch ready; wait' & \
         exec sleep 3602",
        dir = dir.display()
    );
    sh(name, &script)
        .readiness(Readiness::File {
            path: dir.join("ready"),
        })
        .stop(StopSpec {
            kill_mode: mode,
            grace: Duration::from_secs(30),
            ..StopSpec::default()
        })
}

#[tokio::test]
async fn kill_modes_choose_who_gets_the_stop_signal() {
    for mode in [KillMode::ControlGroup, KillMode::Mixed, KillMode::Process] {
        let dir = tempfile::tempdir().unwrap();
        let service = term_recording_spec("modes", dir.path(), mode).supervise();
        within("ready", service.ready()).await.unwrap();
        let main = service.backend().unwrap().pid();
        println!("{mode:?}: tree tracking: {}", tracking(main));
        let child = read_pid(&dir.path().join("child"));
        assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
        let marker = dir.path().join("marker").exists();
        match mode {
            // SIGTERM to every process, the child traps it and writes the marker.
            KillMode::ControlGroup => {
                wait_gone(child).await;
                assert!(marker, "{mode:?}: the child never got SIGTERM");
            }
            // SIGTERM to the main process only, SIGKILL to the rest: no marker.
            KillMode::Mixed => {
                assert!(is_dead(child), "{mode:?}: the child survived the stop");
                assert!(!marker, "{mode:?}: the child got SIGTERM");
            }
            // The main process alone: the child lives on.
            KillMode::Process => {
                assert!(!is_dead(child), "{mode:?}: the child was killed");
                assert!(!marker);
                kill(child);
                wait_gone(child).await;
            }
        }
    }
}

#[tokio::test]
async fn a_misspelt_program_fails_once_at_once_naming_its_path() {
    let service = CommandSpec::new("typo", "redis-servr-no-such-program").supervise();
    let mut events = service.events();
    let outcome = within("outcome", service.ready()).await.unwrap_err();
    let Outcome::StartFailed { member, error } = &outcome else {
        panic!("expected StartFailed, got {outcome:?}");
    };
    assert_eq!(member, "typo");
    assert!(error.is_permanent());
    assert!(
        matches!(&**error, StartError::Exec { reason: ExecFailure::NotFound { .. }, program } if program.ends_with("redis-servr-no-such-program")),
        "{error:?}"
    );
    let message = support::chain(&**error);
    assert!(
        message.contains("redis-servr-no-such-program") && message.contains("PATH="),
        "{message}"
    );
    // Once: one StartFailed, no restart scheduled, no process ever spawned.
    let mut seen = Vec::new();
    while let Some(Ok(event)) = futures::StreamExt::next(&mut events).await {
        seen.push(event.kind);
    }
    let count = |pred: fn(&EventKind) -> bool| seen.iter().filter(|k| pred(k)).count();
    assert_eq!(
        count(|k| matches!(k, EventKind::StartFailed { .. })),
        1,
        "{seen:?}"
    );
    assert_eq!(
        count(|k| matches!(k, EventKind::RestartScheduled { .. })),
        0,
        "{seen:?}"
    );
    assert_eq!(
        count(|k| matches!(k, EventKind::Spawned { .. })),
        0,
        "{seen:?}"
    );
}

#[tokio::test]
async fn unexecutable_programs_and_bad_interpreters_say_why_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("data.txt");
    std::fs::write(&not_executable, "just text\n").unwrap();
    let bad_interpreter = dir.path().join("script");
    std::fs::write(&bad_interpreter, "#!/no/such/interpreter\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad_interpreter, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (program, expected) in [
        (&not_executable, "permission denied"),
        (&bad_interpreter, "bad interpreter"),
    ] {
        let service = CommandSpec::new("exec", program).supervise();
        let outcome = within("outcome", service.ready()).await.unwrap_err();
        let Outcome::StartFailed { error, .. } = outcome else {
            panic!("expected StartFailed, got {outcome:?}");
        };
        let message = support::chain(&*error);
        assert!(
            message.contains(&program.display().to_string()),
            "{message}"
        );
        assert!(message.contains(expected), "{message}");
    }
}

#[tokio::test]
async fn a_port_held_by_a_stranger_is_a_start_failure_naming_the_holder() {
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = stranger.local_addr().unwrap().to_string();
    let service = sh("stranger", "exec sleep 3600")
        .readiness(Readiness::tcp(address.clone()))
        .restart(RestartPolicy {
            intensity: Intensity::new(1, Duration::from_secs(3600)),
            ..no_backoff(RestartKind::Permanent)
        })
        .supervise();
    let mut events = service.events();
    let failed = next_matching(&mut events, "start failure", |e| {
        matches!(e.kind, EventKind::StartFailed { .. })
    })
    .await;
    let EventKind::StartFailed { error } = failed.kind else {
        unreachable!()
    };
    assert!(
        matches!(&*error, StartError::PortInUse { holder: Some(pid), address: a } if *pid == std::process::id() && *a == address),
        "{error:?}"
    );
    assert!(error.to_string().contains(&address), "{error}");
    // Never ready: its first start failed, so supervision ends with that failure.
    let outcome = within("outcome", service.ready()).await.unwrap_err();
    assert!(
        matches!(&outcome, Outcome::StartFailed { error, .. } if matches!(**error, StartError::PortInUse { .. })),
        "{outcome:?}"
    );
    drop(stranger);
}

#[tokio::test]
async fn a_stranger_listening_after_the_spawn_is_never_taken_for_the_service() {
    // The service never listens; a stranger starts listening on its port once it runs.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = probe.local_addr().unwrap();
    drop(probe);
    let service = sh("impostor", "exec sleep 3600")
        .readiness(Readiness::tcp(address.to_string()))
        .ready_timeout(Duration::from_secs(2))
        .restart(RestartPolicy {
            kind: RestartKind::Temporary,
            ..RestartPolicy::default()
        })
        .supervise();
    let mut events = service.events();
    next_matching(&mut events, "spawned", |e| {
        matches!(e.kind, EventKind::Spawned { .. })
    })
    .await;
    let Ok(stranger) = std::net::TcpListener::bind(address) else {
        println!("SKIPPED: port {address} was taken meanwhile");
        return;
    };
    let failed = next_matching(&mut events, "start failure", |e| {
        matches!(e.kind, EventKind::StartFailed { .. })
    })
    .await;
    assert!(
        matches!(&failed.kind, EventKind::StartFailed { error } if matches!(**error, StartError::ReadyTimeout(_))),
        "{failed:?}"
    );
    assert!(within("outcome", service.ready()).await.is_err());
    drop(stranger);
}

#[tokio::test]
async fn a_process_that_dies_before_ready_brings_its_last_words() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let service = sh(
        "words",
        "echo starting up; echo 'Bad directive at line 3: \"bogus\"' >&2; exit 1",
    )
    .stdout(Output::Null)
    .stderr(Output::Null)
    .readiness(Readiness::tcp(format!("127.0.0.1:{port}")))
    .restart(RestartPolicy {
        kind: RestartKind::Temporary,
        ..RestartPolicy::default()
    })
    .supervise();
    let mut events = service.events();
    let failed = next_matching(&mut events, "start failure", |e| {
        matches!(e.kind, EventKind::StartFailed { .. })
    })
    .await;
    let EventKind::StartFailed { error } = failed.kind else {
        unreachable!()
    };
    let StartError::ExitedBeforeReady { status, output } = &*error else {
        panic!("{error:?}");
    };
    assert_eq!(status.to_string(), "exit code 1");
    assert_eq!(
        output.lines(),
        ["starting up", "Bad directive at line 3: \"bogus\""]
    );
    assert!(error.to_string().contains("Bad directive"), "{error}");
}

#[tokio::test]
async fn an_exited_event_carries_the_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "touch {ready}; read line < {fifo}; echo \"fatal: $line\" >&2; exit 3",
        ready = dir.path().join("ready").display(),
        fifo = dir.path().join("fifo").display()
    );
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.path().join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let service = sh("last-lines", &script)
        .stderr(Output::Tracing)
        .readiness(Readiness::File {
            path: dir.path().join("ready"),
        })
        .restart(RestartPolicy {
            kind: RestartKind::Temporary,
            ..RestartPolicy::default()
        })
        .supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    std::fs::write(dir.path().join("fifo"), "out of memory\n").unwrap();
    let exited = next_matching(&mut events, "exited", |e| {
        matches!(e.kind, EventKind::Exited { .. })
    })
    .await;
    let EventKind::Exited { status, output, .. } = exited.kind else {
        unreachable!()
    };
    assert_eq!(status.to_string(), "exit code 3");
    assert_eq!(output.lines(), ["fatal: out of memory"]);
}

#[tokio::test]
async fn exec_http_and_unix_socket_readiness_wait_for_the_service() {
    let dir = tempfile::tempdir().unwrap();
    // exec: ready once the command exits 0.
    let marker = dir.path().join("marker");
    let service = sh(
        "exec-ready",
        &format!("touch {}; exec sleep 3600", marker.display()),
    )
    .readiness(Readiness::exec([
        "test",
        "-e",
        &marker.display().to_string(),
    ]))
    .supervise();
    within("exec ready", service.ready()).await.unwrap();
    assert!(marker.exists());
    service.stop().await;

    // http: python's server answers 200 for the directory listing.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let service = CommandSpec::new("http-ready", "python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .cwd(dir.path())
        .stdout(Output::Null)
        .stderr(Output::Null)
        .readiness(Readiness::http(format!("http://127.0.0.1:{port}/")))
        .supervise();
    within("http ready", service.ready()).await.unwrap();
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    service.stop().await;

    // unix socket: bound and listened on by the service, owned by its user.
    let socket = dir.path().join("svc.sock");
    let service = CommandSpec::new("unix-ready", "python3")
        .args([
            "-c",
            "import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen()\ntime.sleep(3600)",
            &socket.display().to_string(),
        ])
        .readiness(Readiness::UnixSocket {
            path: socket.clone(),
        })
        .supervise();
    within("unix ready", service.ready()).await.unwrap();
    tokio::net::UnixStream::connect(&socket).await.unwrap();
    service.stop().await;
}

#[tokio::test]
async fn an_unknown_user_is_an_invalid_spec_not_a_retry() {
    let service = sh("nobody-here", "exit 0")
        .user("no-such-user-running-process")
        .supervise();
    let outcome = within("outcome", service.ready()).await.unwrap_err();
    let Outcome::StartFailed { error, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(matches!(*error, StartError::InvalidSpec(_)), "{error:?}");
    assert!(support::chain(&*error).contains("no-such-user-running-process"));
}

#[tokio::test]
async fn user_groups_umask_and_limits_apply_before_exec() {
    if !support::daemons::is_root() {
        support::daemons::skip("switching users needs root");
        return;
    }
    let Some((uid, gid)) = support::daemons::user_ids("nobody") else {
        support::daemons::skip("no user nobody");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = dir.path().join("out");
    let service = sh(
        "as-nobody",
        "id -u; id -g; id -G; ulimit -n; ulimit -c; umask; echo \"$HOME $USER\"",
    )
    .user("nobody")
    .umask(0o027)
    .limits(running_process::command::ResourceLimits {
        open_files: Some(running_process::command::Limit::both(123)),
        core_size: Some(running_process::command::Limit::both(0)),
        processes: None,
    })
    .stdout(Output::file(&out))
    .restart(RestartPolicy {
        kind: RestartKind::Temporary,
        ..RestartPolicy::default()
    })
    .supervise();
    assert_eq!(
        within("completed", service.outcome()).await,
        Outcome::Completed
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], uid.to_string(), "{text}");
    assert_eq!(lines[1], gid.to_string(), "{text}");
    assert!(
        !lines[2].split(' ').any(|g| g == "0"),
        "root's group kept: {text}"
    );
    assert_eq!(lines[3], "123", "{text}");
    assert_eq!(lines[4], "0", "{text}");
    assert_eq!(lines[5], "0027", "{text}");
    assert!(lines[6].ends_with(" nobody"), "{text}");
}

#[tokio::test]
async fn sd_notify_reaches_the_supervisor_from_another_user() {
    if !support::daemons::is_root() {
        support::daemons::skip("switching users needs root");
        return;
    }
    // Debian's interpreter: a per-user one (pyenv under /root) is out of nobody's reach.
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        support::daemons::skip("no /usr/bin/python3");
        return;
    }
    let service = CommandSpec::new("notify-nobody", python)
        .args([
            "-c",
            "import os,socket,time\ns=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.connect(os.environ['NOTIFY_SOCKET'])\ns.send(b'STATUS=up as nobody\\nREADY=1')\ntime.sleep(3600)",
        ])
        .user("nobody")
        .readiness(Readiness::Notify)
        .ready_timeout(Duration::from_secs(60))
        .supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    let status = next_matching(&mut events, "status", |e| {
        matches!(e.kind, EventKind::Status { .. })
    })
    .await;
    assert!(matches!(status.kind, EventKind::Status { ref status } if status == "up as nobody"));
    service.stop().await;
}

/// `PR_SET_PDEATHSIG` follows the thread that forked. In a multi-thread runtime, the
/// worker that ran the spawn becomes a blocking-pool thread after `block_in_place` and
/// retires after the keep-alive; a daemon forked by it would be SIGKILLed then. Forked
/// from the spawner thread, it lives on.
#[test]
fn a_daemon_outlives_the_tokio_worker_that_started_it() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_keep_alive(Duration::from_millis(50))
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // The only worker: every task runs on it, the supervision loop (and so, before the
        // spawner thread, the fork) included.
        let worker = tokio::spawn(async { rustix::thread::gettid().as_raw_nonzero().get() })
            .await
            .unwrap();
        let service = support::demo_spec("outlive", dir.path(), &[]).supervise();
        let mut events = service.events();
        within("ready", service.ready()).await.unwrap();
        next_matching(&mut events, "ready", |e| {
            matches!(e.kind, EventKind::Ready { .. })
        })
        .await;
        let backend = service.backend().unwrap();

        // Watch the worker thread's exit (a pidfd on a thread: PIDFD_THREAD, Linux 6.9+).
        let thread = rustix::process::Pid::from_raw(worker).unwrap();
        let pidfd_thread = rustix::process::PidfdFlags::from_bits_retain(libc_o_excl());
        let Ok(thread_fd) = rustix::process::pidfd_open(thread, pidfd_thread) else {
            support::daemons::skip("no PIDFD_THREAD (Linux < 6.9): cannot watch a thread exit");
            service.stop().await;
            return;
        };
        // Hand the worker's core to a new thread; the old one becomes a blocking thread. It
        // stays blocked until a task has run on the new worker, so the core is taken and
        // the old thread cannot reclaim it.
        tokio::spawn(async {
            tokio::task::block_in_place(|| {
                let handle = tokio::runtime::Handle::current();
                handle.block_on(tokio::spawn(async {})).unwrap();
            })
        })
        .await
        .unwrap();
        // Wait on a plain thread: a blocking-pool task could land on the very thread.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            use rustix::event::{poll, PollFd, PollFlags, Timespec};
            let mut fds = [PollFd::new(&thread_fd, PollFlags::IN)];
            let deadline = Timespec {
                tv_sec: 60,
                tv_nsec: 0,
            };
            let _ = tx.send(
                poll(&mut fds, Some(&deadline))
                    .map(|n| n > 0)
                    .unwrap_or(false),
            );
        });
        assert!(
            rx.await.unwrap(),
            "the old worker thread did not retire within 60 s"
        );

        // The daemon answers, and no exit or restart was reported.
        within("ping", backend.ping(Duration::from_secs(10)))
            .await
            .expect("the daemon died with the worker thread");
        assert!(backend.is_alive());
        while let Some(Some(Ok(event))) =
            futures::FutureExt::now_or_never(futures::StreamExt::next(&mut events))
        {
            assert!(
                !matches!(
                    event.kind,
                    EventKind::Exited { .. } | EventKind::Spawned { .. }
                ),
                "{event:?}"
            );
        }
        assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    });
}

/// `PIDFD_THREAD` is `O_EXCL`.
fn libc_o_excl() -> u32 {
    rustix::fs::OFlags::EXCL.bits()
}

#[tokio::test]
async fn a_ready_message_from_outside_the_service_is_ignored() {
    let service = sh("notify-stranger", "exec sleep 3600")
        .readiness(Readiness::Notify)
        .ready_timeout(Duration::from_secs(3))
        .restart(RestartPolicy {
            kind: RestartKind::Temporary,
            ..RestartPolicy::default()
        })
        .supervise();
    let mut events = service.events();
    let spawned = next_matching(&mut events, "spawned", |e| {
        matches!(e.kind, EventKind::Spawned { .. })
    })
    .await;
    let EventKind::Spawned { pid } = spawned.kind else {
        unreachable!()
    };
    // This test process is no part of the service: its READY=1 must not count.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let socket = environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"NOTIFY_SOCKET="))
        .map(|path| std::path::PathBuf::from(String::from_utf8_lossy(path).into_owned()))
        .expect("NOTIFY_SOCKET in the service's environment");
    let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sender.send_to(b"READY=1", &socket).unwrap();
    let failed = next_matching(&mut events, "start failure", |e| {
        matches!(
            e.kind,
            EventKind::StartFailed { .. } | EventKind::Ready { .. }
        )
    })
    .await;
    assert!(
        matches!(&failed.kind, EventKind::StartFailed { error } if matches!(**error, StartError::ReadyTimeout(_))),
        "{failed:?}"
    );
}

/// A daemon that outlives its supervisor must not write into a pipe only the supervisor
/// reads (its first write after the supervisor's exit would kill it with SIGPIPE):
/// discarded output is `/dev/null`, file output is the file itself.
#[tokio::test]
async fn a_detached_daemon_writes_its_output_itself() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let service = sh("detached", "exec sleep 3600")
        .die_with_supervisor(false)
        .stdout(Output::Null)
        .stderr(Output::file(&log))
        .supervise();
    within("ready", service.ready()).await.unwrap();
    let pid = service.backend().unwrap().pid();
    let target = |fd: u32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    assert_eq!(target(1), Path::new("/dev/null"));
    assert_eq!(target(2), log);
    service.stop().await;
    // Attached, the same streams are read by the supervisor (last lines, rotation).
    let service = sh("attached", "exec sleep 3600")
        .stdout(Output::Null)
        .supervise();
    within("ready", service.ready()).await.unwrap();
    let pid = service.backend().unwrap().pid();
    let stdout = std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
    assert!(stdout.to_string_lossy().starts_with("pipe:"), "{stdout:?}");
    service.stop().await;
}

/// Not a test of its own: the entry point of the helper processes of
/// [`a_sigkilled_supervisor_leaves_neither_processes_nor_cgroups`] (role `keeper`) and
/// [`a_cgroup_that_cannot_be_created_fails_the_start_with_a_typed_error`] (role
/// `cgroup-limited`): this binary re-executed with `support::HELPER_ROLE` set. Run
/// normally, it returns.
#[test]
fn helper_process() {
    let Ok(role) = std::env::var(support::HELPER_ROLE) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if role == "cgroup-limited" {
        return runtime.block_on(start_in_a_limited_cgroup());
    }
    runtime.block_on(async {
        // A tree with a child that left the process group: only the cgroup tracks it.
        let dir = tempfile::tempdir().unwrap();
        let service = tree_spec("keeper", dir.path()).supervise();
        service.ready().await.unwrap();
        let main = service.backend().unwrap().pid();
        let b = read_pid(&dir.path().join("b"));
        let cgroup = std::fs::read_to_string(format!("/proc/{main}/cgroup")).unwrap();
        let keeper = keeper_of(std::process::id());
        support::helper_say(&format!(
            "main {main} escaped {b} keeper {} cgroup {}",
            keeper.map_or(0, |k| k),
            cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("")
        ));
        std::future::pending::<()>().await;
    });
}

/// The `cgroup-limited` helper: one service, whose start must fail with
/// `StartError::Cgroup` (its process runs in a cgroup that allows one descendant, the
/// supervisor's directory); it says which error it got.
async fn start_in_a_limited_cgroup() {
    let service = sh("limited", "exec sleep 3600").supervise();
    let verdict = match service.ready().await {
        Ok(()) => "started (wrong)".to_owned(),
        Err(Outcome::StartFailed { error, .. }) => match &*error {
            StartError::Cgroup { .. } => format!("typed {}", support::chain(&*error)),
            other => format!("untyped {}", support::chain(other)),
        },
        Err(other) => format!("ended {other}"),
    };
    support::helper_say(&verdict);
}

/// The keeper: a child of `parent` called `rp-keeper`.
fn keeper_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(')'))
            else {
                return false;
            };
            comm == "rp-keeper" && rest.split_whitespace().nth(1) == Some(&parent.to_string())
        })
}

#[tokio::test]
async fn a_sigkilled_supervisor_leaves_neither_processes_nor_cgroups() {
    use tokio::io::AsyncBufReadExt;
    let mut helper = support::helper_command("helper_process", "keeper")
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(helper.stdout.take().unwrap()).lines();
    let line = support::helper_line(&mut lines, "the helper's service is ready").await;
    let words: Vec<&str> = line.split_whitespace().collect();
    let [_, main, _, escaped, _, keeper, _, cgroup] = words[..] else {
        panic!("unexpected line {line:?}");
    };
    let (main, escaped, keeper): (u32, u32, u32) = (
        main.parse().unwrap(),
        escaped.parse().unwrap(),
        keeper.parse().unwrap(),
    );
    if !cgroup.contains("running-process-") || keeper == 0 {
        support::daemons::skip(&format!(
            "no cgroup (or no keeper) here ({line}): the process group fallback cannot do this"
        ));
        helper.kill().await.unwrap();
        kill(escaped);
        return;
    }
    println!("tree tracking: cgroup {cgroup}, keeper {keeper}");
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(str::to_owned))?
        })
        .unwrap();
    let service_dir = Path::new(&mount).join(cgroup.trim_start_matches('/'));
    let supervisor_dir = service_dir.parent().unwrap().to_owned();
    assert!(service_dir.is_dir());

    helper.kill().await.unwrap(); // SIGKILL: no code of the supervisor runs after this
    wait_gone(main).await; // its parent-death signal
    wait_gone(escaped).await; // the keeper's cgroup.kill
    wait_gone(keeper).await; // the keeper ends once it has removed the directories
    assert!(
        !service_dir.exists(),
        "{} left behind",
        service_dir.display()
    );
    assert!(
        !supervisor_dir.exists(),
        "{} left behind",
        supervisor_dir.display()
    );
}

/// A signal mask field of `/proc/PID/status` (`SigBlk`, `SigIgn`, `SigCgt`), as a bit set.
fn signal_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// The child shares the supervisor's memory until exec (x86_64) and is started from a
/// thread that blocks every signal, while the supervisor catches some (SIGUSR1 here) and
/// ignores SIGPIPE: the program must still start with no signal blocked, SIGPIPE at its
/// default and nothing caught, and die of a SIGUSR1 as a program that catches nothing does.
#[tokio::test]
async fn a_child_starts_with_default_signals_whatever_the_supervisor_catches() {
    let _usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .expect("a SIGUSR1 handler in the supervisor");
    let service = CommandSpec::new("signals", "sleep")
        .args(["3600"])
        .restart(no_backoff(RestartKind::Temporary))
        .supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    let child = service.backend().unwrap();
    let pid = child.pid();
    assert_eq!(
        signal_mask(pid, "SigBlk"),
        0,
        "signals blocked in the child"
    );
    let sigpipe = 1u64 << (libc_sigpipe() - 1);
    assert_eq!(
        signal_mask(pid, "SigIgn") & sigpipe,
        0,
        "SIGPIPE ignored in the child"
    );
    assert_eq!(signal_mask(pid, "SigCgt"), 0, "`sleep` catches nothing");
    child.signal(libc_sigusr1()).unwrap();
    let exited = next_matching(&mut events, "exited", |e| {
        matches!(e.kind, EventKind::Exited { .. })
    })
    .await;
    assert!(
        exited.to_string().contains("signal 10") || exited.to_string().contains("SIGUSR1"),
        "the child did not die of SIGUSR1: {exited}"
    );
    service.stop().await;
}

fn libc_sigpipe() -> u32 {
    rustix::process::Signal::PIPE.as_raw() as u32
}

fn libc_sigusr1() -> i32 {
    rustix::process::Signal::USR1.as_raw()
}

/// Issue 30: on a machine with cgroup v2, an instance whose cgroup cannot be created does
/// not start in its process group instead: its start fails with `StartError::Cgroup`
/// naming the directory and the OS error (the helper runs in a cgroup that allows one
/// descendant: the supervisor's directory; `cgroup.max.descendants`).
#[tokio::test]
async fn a_cgroup_that_cannot_be_created_fails_the_start_with_a_typed_error() {
    use tokio::io::AsyncBufReadExt;
    let Some(parent) = writable_own_cgroup() else {
        support::daemons::skip("no writable cgroup v2 here (root with cgroup v2 needed)");
        return;
    };
    let limited = parent.join(format!("rp-lifecycle-limited-{}", std::process::id()));
    std::fs::create_dir(&limited).unwrap();
    std::fs::write(limited.join("cgroup.max.descendants"), "1").unwrap();
    let enter = format!(
        "echo $$ > {} && exec \"$0\" \"$@\"",
        limited.join("cgroup.procs").display()
    );
    let mut helper =
        support::helper_command_via(&["sh", "-c", &enter], "helper_process", "cgroup-limited")
            .spawn()
            .unwrap();
    let mut lines = tokio::io::BufReader::new(helper.stdout.take().unwrap()).lines();
    let verdict = support::helper_line(&mut lines, "the helper's verdict").await;
    within("the helper's exit", helper.wait()).await.unwrap();
    // The keeper of the helper's supervisor cgroup ends once the helper is gone.
    let left: Vec<u32> = std::fs::read_to_string(limited.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    for pid in left {
        wait_gone(pid).await;
    }
    for entry in std::fs::read_dir(&limited).unwrap().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    std::fs::remove_dir(&limited).unwrap();
    assert!(
        verdict.starts_with("typed cannot create a cgroup for this instance in ")
            && verdict.contains("Resource temporarily unavailable"),
        "{verdict}"
    );
}

/// This process's cgroup v2 directory, if it may create a cgroup in it.
fn writable_own_cgroup() -> Option<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = mount.join(own.trim().trim_start_matches('/'));
    let probe = dir.join(format!("rp-lifecycle-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).ok()?;
    std::fs::remove_dir(&probe).ok()?;
    Some(dir)
}
