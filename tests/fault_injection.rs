//! Fault injection with real processes, sockets and files: a supervisor SIGKILLed while it
//! supervises, a manifest writer SIGKILLed mid-write (hundreds of times), a full, read-only
//! or size-limited file system under a manifest write, a daemon that hangs, a crash loop.
//!
//! Helper processes (the supervisor to kill, the writers) are this test binary run again
//! with [`support::HELPER_ROLE`] set: see [`helper_process`]. Every wait is for an event,
//! an output line or a pidfd, under the shared generous deadline; nothing measures time.

#![cfg(target_os = "linux")]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use running_process::command::CommandSupervisor;
use running_process::protocol::{CacheManifest, ManifestError, SCHEMA_VERSION};
use running_process::supervision::{
    supervise_group, Backoff, Event, EventKind, GroupSpec, Intensity, Jitter, Outcome, RestartKind,
    RestartPolicy,
};
use running_process::ExitStatus;
use support::{
    collect_until, demo_spec, helper_command, helper_command_via, helper_line, helper_say,
    no_backoff, wait_gone, with_fast_hang_detection, within, PidGuard,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The name of the helper entry point below, as libtest knows it.
const ENTRY: &str = "helper_process";
/// The directory a helper works in.
const HELPER_DIR: &str = "RP_TEST_HELPER_DIR";
/// The first manifest version a writer helper writes.
const HELPER_START: &str = "RP_TEST_HELPER_START";

/// Not a test of its own: the entry point of the helper processes the tests below start
/// (this binary re-executed with [`support::HELPER_ROLE`] set). Run normally, it returns.
#[test]
fn helper_process() {
    let Ok(role) = std::env::var(support::HELPER_ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(HELPER_DIR).expect("helper dir"));
    match role.as_str() {
        "supervisor" => role_supervisor(&dir),
        "writer" => role_writer(&dir),
        "fsize" => role_fsize(&dir),
        "disk-full" => role_disk_full(&dir),
        other => panic!("unknown helper role {other}"),
    }
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------
// 1. The supervising process is SIGKILLed.

/// Members that die with their supervisor, and members meant to outlive it (manifest
/// readiness, so a later supervisor can adopt them).
const DOOMED: [&str; 2] = ["g/a", "g/c"];
const SURVIVORS: [&str; 2] = ["g/b", "g/d"];

fn mixed_group(dir: &Path) -> GroupSpec {
    let member = |name: &str, survives: bool| {
        Arc::new(CommandSupervisor::new(
            demo_spec(name, dir, &[])
                .die_with_supervisor(!survives)
                .restart(no_backoff(RestartKind::Permanent)),
        ))
    };
    GroupSpec::new("g")
        .service(member("a", false))
        .service(member("b", true))
        .service(member("c", false))
        .service(member("d", true))
}

/// Helper: supervise [`mixed_group`] until killed; print `pids name=pid ...` once ready.
fn role_supervisor(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let service = supervise_group(mixed_group(dir)).expect("a valid group spec");
        service.ready().await.expect("the group starts");
        let pids: Vec<String> = service
            .backends()
            .iter()
            .map(|(name, backend)| format!("{name}={}", backend.pid()))
            .collect();
        helper_say(&format!("pids {}", pids.join(" ")));
        std::future::pending::<()>().await;
    });
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one crash-and-adopt scenario, step by step
async fn a_sigkilled_supervisor_takes_its_children_and_the_next_one_adopts_the_survivors() {
    let dir = support::runtime_tempdir();
    let mut supervisor = helper_command(ENTRY, "supervisor")
        .env(HELPER_DIR, dir.path())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(supervisor.stdout.take().unwrap()).lines();
    let line = helper_line(&mut lines, "the helper's group is ready").await;
    let pids: BTreeMap<String, u32> = line
        .strip_prefix("pids ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .split_whitespace()
        .map(|pair| {
            let (name, pid) = pair.split_once('=').unwrap();
            (name.to_owned(), pid.parse().unwrap())
        })
        .collect();
    assert_eq!(pids.len(), 4, "{pids:?}");
    // Pinned now, while they run: whatever happens below, the test kills what it started.
    let guards: BTreeMap<&str, PidGuard> = pids
        .iter()
        .map(|(name, &pid)| (name.as_str(), PidGuard::pin(pid)))
        .collect();
    assert!(guards.values().all(PidGuard::is_running), "{pids:?}");

    supervisor.kill().await.unwrap(); // SIGKILL: no code of the supervisor runs after this
    for name in DOOMED {
        wait_gone(pids[name]).await;
    }
    // The kernel signals every child of the dead supervisor as it exits, so once the doomed
    // ones are gone the survivors' fate is decided: they must still run.
    let survived: Vec<&str> = SURVIVORS
        .into_iter()
        .filter(|name| guards[name].is_running())
        .collect();
    let left_doomed = DOOMED
        .into_iter()
        .filter(|name| guards[name].is_running())
        .count();
    eprintln!(
        "supervisor SIGKILLed: {left_doomed} of {} dying children left, {} of {} survivors running",
        DOOMED.len(),
        survived.len(),
        SURVIVORS.len()
    );
    assert_eq!(
        survived, SURVIVORS,
        "die_with_supervisor(false) outlives it"
    );

    // A new supervisor (this test) adopts the survivors and spawns the others again.
    let service = supervise_group(mixed_group(dir.path())).expect("a valid group spec");
    let mut events = service.events();
    let seen = collect_until(&mut events, "the new group is ready", |e| {
        &*e.service == "g" && matches!(e.kind, EventKind::Ready { .. })
    })
    .await;
    for name in SURVIVORS {
        let of = |e: &&Event| &*e.service == name;
        let adopted: Vec<u32> = seen
            .iter()
            .filter(of)
            .filter_map(|e| match e.kind {
                EventKind::AdoptedExisting { pid } => Some(pid),
                _ => None,
            })
            .collect();
        assert_eq!(adopted, [pids[name]], "{name} adopted: {seen:#?}");
        assert!(
            !seen
                .iter()
                .filter(of)
                .any(|e| matches!(e.kind, EventKind::Spawned { .. })),
            "{name} must not be spawned again: {seen:#?}"
        );
        let backend = service.backend_of(name).unwrap();
        assert_eq!(backend.pid(), pids[name]);
        within("ping the adopted daemon", backend.ping(support::DEADLINE))
            .await
            .unwrap();
    }
    for name in DOOMED {
        let respawned = seen
            .iter()
            .filter(|e| &*e.service == name)
            .find_map(|e| match e.kind {
                EventKind::Spawned { pid } => Some(pid),
                _ => None,
            });
        assert!(
            respawned.is_some_and(|pid| pid != pids[name]),
            "{name} spawned anew: {seen:#?}"
        );
    }
    let running: Vec<u32> = service.backends().iter().map(|(_, b)| b.pid()).collect();
    assert_eq!(within("stop", service.stop()).await, Outcome::Stopped);
    for pid in running {
        wait_gone(pid).await;
    }
    let left = guards.values().filter(|g| g.is_running()).count();
    eprintln!("after the adopting supervisor stopped: {left} processes left");
    assert_eq!(left, 0);
}

// ---------------------------------------------------------------------------------------
// 2. A writer SIGKILLed in the middle of manifest writes.

/// Writer processes started and SIGKILLed, each at a random moment of its write loop.
const KILLS: u64 = 200;
/// Versions a writer may write before it is killed (each writer's range is its own).
const RANGE: u64 = 1_000_000;

/// Manifest version `n`: large (48 KiB, a fill letter that changes with `n`) so that a write
/// spans many pages and a torn file would mix letters, and fully determined by `n`.
fn version(n: u64) -> CacheManifest {
    let letter = char::from(b'a' + (n % 26) as u8);
    CacheManifest {
        schema_version: SCHEMA_VERSION,
        service_name: format!("svc-{}", letter.to_string().repeat(48 * 1024)),
        service_version: n.to_string(),
        current_daemon: None,
        updated_at_unix_ms: n,
    }
}

/// The exact bytes `write` puts on disk for version `n`.
fn version_bytes(n: u64) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(&version(n)).unwrap();
    bytes.push(b'\n');
    bytes
}

/// Helper: write versions start, start+1, ... to `dir/m.json` until killed; say `first` once
/// the first write has completed.
fn role_writer(dir: &Path) {
    let start: u64 = std::env::var(HELPER_START).unwrap().parse().unwrap();
    let path = dir.join("m.json");
    for n in start.. {
        version(n).write_blocking(&path).expect("write");
        if n == start {
            helper_say("first");
        }
    }
}

/// Temp files in `dir` (every entry but the manifest); panics on any entry that is not a
/// manifest temp file of process `pid`, the writer just killed: those of earlier killed
/// writers must have been removed by the next writer.
fn temp_files_of(dir: &Path, pid: u32) -> usize {
    let mut found = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == "m.json" {
            continue;
        }
        let hex = name
            .strip_prefix(&format!(".m.json.{pid}."))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .unwrap_or_else(|| panic!("unexpected file {name:?} (writer pid {pid})"));
        assert!(
            hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
        found += 1;
    }
    found
}

#[tokio::test]
async fn a_writer_killed_mid_write_leaves_a_complete_manifest_every_time() {
    // On the real disk: fsync and rename are what is being tested.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).unwrap();
    let mut rng = u64::from_le_bytes(seed) | 1;
    eprintln!("kill delays from seed {rng:#x}");
    let (mut torn, mut temp_left, mut writes) = (0u64, 0usize, 0u64);
    for kill in 1..=KILLS {
        let start = kill * RANGE;
        let mut writer = helper_command(ENTRY, "writer")
            .env(HELPER_DIR, dir.path())
            .env(HELPER_START, start.to_string())
            .spawn()
            .unwrap();
        let pid = writer.id().unwrap();
        let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
        assert_eq!(helper_line(&mut lines, "the first write").await, "first");
        // xorshift: a kill moment 0 to 8 ms into the write loop. This delay is the fault's
        // timing, not synchronisation: nothing waits on it.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_micros(rng % 8_000)).await;
        writer.start_kill().unwrap();
        let status = within("the writer dies", writer.wait()).await.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "killed by our SIGKILL, not ended otherwise: {status}"
        );

        temp_left += temp_files_of(dir.path(), pid);
        // Complete means exactly the bytes of one version, never older than the writer's
        // first completed write; anything else (empty, cut short, mixed) is torn.
        let raw = std::fs::read(&path).unwrap();
        let n = CacheManifest::from_json(&raw, &path)
            .ok()
            .and_then(|m| m.service_version.parse::<u64>().ok())
            .filter(|n| (start..start + RANGE).contains(n) && raw == version_bytes(*n));
        let Some(n) = n else {
            torn += 1;
            eprintln!("kill {kill}: torn or stale manifest ({} bytes)", raw.len());
            continue;
        };
        writes += n - start + 1;
    }
    eprintln!(
        "{KILLS} writers SIGKILLed after {writes} completed writes in all: {torn} torn or empty \
         manifests; {temp_left} kills fell between a temp file's creation and its rename, and each \
         such temp file was gone after the next writer's first write"
    );
    assert_eq!(torn, 0);
}

// ---------------------------------------------------------------------------------------
// 3. A full, read-only or size-limited file system under a manifest write.

/// The OS error of a failed manifest write, which must be a typed `Io` error.
fn io_errno(result: Result<(), ManifestError>) -> i32 {
    match result {
        Err(ManifestError::Io { source, .. }) => source.raw_os_error().expect("an OS error"),
        other => panic!("expected ManifestError::Io, got {other:?}"),
    }
}

/// Entries of `dir` other than `keep`.
fn strays(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !keep.contains(&name.as_str()))
        .collect()
}

/// Helper: with `RLIMIT_FSIZE` at 16 KiB and SIGXFSZ caught, write the 48 KiB version 2 over
/// the version 1 already in `dir/m.json`; say `efbig <errno>`.
fn role_fsize(dir: &Path) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Caught (not ignored), SIGXFSZ no longer kills us and the write fails with EFBIG.
    let _caught = runtime.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25)).unwrap()
    });
    let limit = getrlimit(Resource::Fsize);
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current: Some(16 * 1024),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let errno = io_errno(version(2).write_blocking(&dir.join("m.json")));
    helper_say(&format!("efbig {errno}"));
}

#[tokio::test]
async fn a_write_past_the_file_size_limit_fails_typed_and_leaves_the_old_manifest() {
    // RLIMIT_FSIZE needs no privilege: the write fails in the middle of the temp file,
    // after 16 KiB of it reached the disk, which is the half-written case.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    version(1).write(&path).await.unwrap();
    let mut helper = helper_command(ENTRY, "fsize")
        .env(HELPER_DIR, dir.path())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let line = helper_line(&mut lines, "the limited write").await;
    let status = within("the helper exits", helper.wait()).await.unwrap();
    assert!(status.success(), "no panic, no SIGXFSZ death: {status}");
    assert_eq!(
        line,
        format!("efbig {}", rustix::io::Errno::FBIG.raw_os_error())
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        version_bytes(1),
        "old manifest intact"
    );
    assert_eq!(strays(dir.path(), &["m.json"]), Vec::<String>::new());
    eprintln!("RLIMIT_FSIZE: EFBIG, old manifest intact, 0 temp files left");
}

/// Helper, inside a private mount namespace: a 256 KiB tmpfs on `dir`; version 1 written;
/// the file system filled, then remounted read-only, version 2 written each time (it must
/// fail typed and leave version 1 alone); then writable again, version 2 written. Says
/// `skip <why>` if the mount is refused, else `enospc <errno> erofs <errno> recovered`.
fn role_disk_full(dir: &Path) {
    use std::io::Write;
    let mount = |args: &[&str]| {
        std::process::Command::new("mount")
            .args(args)
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    // mode=0700: a tmpfs root is 1777 by default, which manifest writes refuse.
    if !mount(&["-t", "tmpfs", "-o", "size=256k,mode=0700", "rp-fault-test"]) {
        helper_say("skip mounting a tmpfs was refused");
        return;
    }
    let path = dir.join("m.json");
    version(1).write_blocking(&path).unwrap();
    let intact = || {
        assert_eq!(std::fs::read(&path).unwrap(), version_bytes(1));
        assert_eq!(
            CacheManifest::read_blocking(&path).unwrap(),
            Some(version(1))
        );
    };

    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    let full = loop {
        if let Err(error) = filler.write_all(&chunk) {
            break error;
        }
    };
    assert_eq!(
        full.raw_os_error(),
        Some(rustix::io::Errno::NOSPC.raw_os_error())
    );
    drop(filler);
    let enospc = io_errno(version(2).write_blocking(&path));
    intact();
    assert_eq!(strays(dir, &["m.json", "filler"]), Vec::<String>::new());

    std::fs::remove_file(dir.join("filler")).unwrap();
    assert!(mount(&["-o", "remount,ro"]), "remount read-only");
    let erofs = io_errno(version(2).write_blocking(&path));
    intact();

    assert!(mount(&["-o", "remount,rw"]), "remount read-write");
    version(2).write_blocking(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), version_bytes(2));
    assert_eq!(strays(dir, &["m.json"]), Vec::<String>::new());
    helper_say(&format!("enospc {enospc} erofs {erofs} recovered"));
}

#[tokio::test]
async fn a_full_or_read_only_file_system_fails_typed_and_leaves_the_old_manifest() {
    // A real full file system (ENOSPC) and a real read-only one (EROFS): root ignores file
    // modes, but not these. A private mount namespace keeps the mount from everyone else
    // and it vanishes with the helper.
    let ns = ["unshare", "--mount", "--propagation", "private", "--"];
    let usable = tokio::process::Command::new(ns[0])
        .args(&ns[1..4])
        .arg("true")
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !usable {
        eprintln!("SKIPPED: no private mount namespace here (`unshare --mount` refused)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut helper = helper_command_via(&ns, ENTRY, "disk-full")
        .env(HELPER_DIR, dir.path())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let line = helper_line(&mut lines, "the disk-full helper's verdict").await;
    let status = within("the helper exits", helper.wait()).await.unwrap();
    if let Some(why) = line.strip_prefix("skip ") {
        eprintln!("SKIPPED: {why}");
        return;
    }
    assert!(status.success(), "no panic in the helper: {status}");
    assert_eq!(
        line,
        format!(
            "enospc {} erofs {} recovered",
            rustix::io::Errno::NOSPC.raw_os_error(),
            rustix::io::Errno::ROFS.raw_os_error()
        )
    );
    eprintln!("full tmpfs: ENOSPC; read-only: EROFS; old manifest intact both times, 0 temp files left; a write succeeds once writable");
}

// ---------------------------------------------------------------------------------------
// 4. A daemon that hangs: alive, answering nothing.

#[tokio::test]
async fn a_daemon_that_hangs_is_found_unhealthy_killed_and_replaced() {
    let dir = support::runtime_tempdir();
    // `--hang-after-ms` wedges the daemon's only runtime thread after it is ready: it keeps
    // accepting at the kernel level but answers nothing, not even SIGTERM. A second is
    // ample for the supervisor to verify it first.
    let spec = with_fast_hang_detection(
        demo_spec("hangs", dir.path(), &["--hang-after-ms", "1000"])
            .restart(no_backoff(RestartKind::Permanent)),
        3,
    );
    let service = spec.supervise();
    let mut events = service.events();
    within("ready", service.ready()).await.unwrap();
    let hung = service.backend().unwrap();
    let seen = collect_until(
        &mut events,
        "a replacement is ready",
        |e| matches!(e.kind, EventKind::Ready { pid: Some(pid), .. } if pid != hung.pid()),
    )
    .await;
    // Three failed checks in a row, the verdict, SIGTERM ignored, SIGKILL, one restart.
    let failures: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::HealthCheckFailed {
                pid, consecutive, ..
            } if pid == hung.pid() => Some(consecutive),
            _ => None,
        })
        .collect();
    assert!(failures.ends_with(&[1, 2, 3]), "{seen:#?}");
    let after_verdict: Vec<&EventKind> = seen
        .iter()
        .map(|e| &e.kind)
        .skip_while(|k| !matches!(k, EventKind::Unhealthy { .. }))
        .filter(|k| !matches!(k, EventKind::ProbeRejected { .. }))
        .collect();
    assert_matches!(
        after_verdict[..],
        [
            EventKind::Unhealthy { pid },
            EventKind::Exited { status: ExitStatus::Signal(9), .. },
            EventKind::RestartScheduled { attempt: 1, .. },
            EventKind::Starting,
            EventKind::Spawned { .. },
            EventKind::Ready { .. },
        ] if *pid == hung.pid()
    );
    assert!(!hung.is_alive());
    let replacement = service.backend().unwrap();
    eprintln!(
        "hung pid {} found after {} failed pings, killed, replaced by pid {}: 1 restart",
        hung.pid(),
        failures.len(),
        replacement.pid()
    );
    within("stop", service.stop()).await;
    wait_gone(replacement.pid()).await;
}

// ---------------------------------------------------------------------------------------
// 5. A crash loop.

#[tokio::test]
async fn a_crash_loop_stops_at_the_intensity_limit_without_a_restart_storm() {
    const MAX_RESTARTS: u32 = 3;
    let dir = support::runtime_tempdir();
    // Crashes as soon as it is ready (or before the supervisor has verified it: a failed
    // start counts the same).
    let policy = RestartPolicy {
        kind: RestartKind::Permanent,
        backoff: Backoff::exponential(Duration::from_millis(20), 2.0, Duration::from_secs(1))
            .with_jitter(Jitter::None),
        intensity: Intensity::new(MAX_RESTARTS, Duration::from_secs(600)),
        // Its first start can fail too (it may crash before it is verified): retried like
        // any other crash, which is what this test is about.
        retry_start_up: true,
    };
    let spec = demo_spec("crashy", dir.path(), &["--crash-after-ms", "0"]).restart(policy);
    let service = spec.supervise();
    let mut events = service.events();
    assert_matches!(
        within("outcome", service.outcome()).await,
        Outcome::GaveUp(reason) if reason.max_restarts == MAX_RESTARTS
    );
    // The whole stream, to its end: nothing may be spawned after giving up.
    let mut seen = Vec::new();
    within("the event stream ends", async {
        use futures::StreamExt;
        while let Some(event) = events.next().await {
            seen.push(event.expect("no lag"));
        }
    })
    .await;
    let spawned: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Spawned { pid } => Some(pid),
            _ => None,
        })
        .collect();
    let delays: Vec<Duration> = seen
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::RestartScheduled { delay, .. } => Some(delay),
            _ => None,
        })
        .collect();
    eprintln!(
        "crash loop: {} spawns for max_restarts = {MAX_RESTARTS}, backoff {delays:?}, then gave up",
        spawned.len()
    );
    assert_eq!(spawned.len(), MAX_RESTARTS as usize + 1, "{seen:#?}");
    assert_eq!(
        delays,
        [20, 40, 80].map(Duration::from_millis),
        "each restart waits longer"
    );
    let last_spawn = seen
        .iter()
        .rposition(|e| matches!(e.kind, EventKind::Spawned { .. }))
        .unwrap();
    let gave_up = seen
        .iter()
        .position(|e| matches!(e.kind, EventKind::GaveUp { .. }))
        .unwrap();
    assert!(last_spawn < gave_up, "{seen:#?}");
    for pid in spawned {
        wait_gone(pid).await;
    }
}
