//! Probe latency against a running demo daemon: cold (digest not cached) and warm; and the
//! cold cost for a ~20 MB executable (a copy of the demo daemon padded with trailing bytes
//! the loader ignores), showing what hashing costs and that the cache removes it.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use running_process::identity::DigestCache;
use running_process::protocol::CacheManifest;
use running_process::BackendHandle;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{self, Metric};

/// Size of the padded copy.
const LARGE: usize = 20 * 1024 * 1024;

pub async fn run(
    daemon: &Path,
    quick: bool,
    metrics: &mut Vec<Metric>,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let trials = if quick { 20 } else { 300 };
    probe_pair(daemon, dir.path(), "small", trials, true, metrics).await?;

    // The padded copy: the same ELF with pseudo-random bytes appended up to 20 MiB.
    let large = dir.path().join("demo_daemon_20mb");
    let mut bytes = std::fs::read(daemon)?;
    let mut rng = common::Rng::seeded();
    while bytes.len() < LARGE {
        bytes.extend_from_slice(&rng.next().to_le_bytes());
    }
    std::fs::write(&large, &bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&large, std::fs::Permissions::from_mode(0o755))?;
    }
    drop(bytes);
    probe_pair(
        &large,
        dir.path(),
        "large",
        if quick { 5 } else { 50 },
        false,
        metrics,
    )
    .await
}

/// Start `exe` as a demo daemon (killed when dropped) and wait for its `ready` line.
pub async fn start_ready(
    exe: &Path,
    dir: &Path,
    name: &str,
) -> Result<tokio::process::Child, Box<dyn std::error::Error>> {
    let mut child = tokio::process::Command::new(exe)
        .args(common::demo_args(dir, name))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    lines.next_line().await?.ok_or("the daemon did not start")?;
    Ok(child)
}

/// Start `exe` as a demo daemon, then probe it `trials` times cold and warm.
#[allow(clippy::too_many_lines)] // one measurement script: start, cold probes, warm probes, report
async fn probe_pair(
    exe: &Path,
    dir: &Path,
    name: &str,
    trials: usize,
    aims: bool,
    metrics: &mut Vec<Metric>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut child = start_ready(exe, dir, name).await?;
    let manifest = CacheManifest::read(dir.join(format!("{name}.json")))
        .await?
        .ok_or("no manifest")?;
    let size_mib = std::fs::metadata(exe)?.len() as f64 / (1024.0 * 1024.0);

    let mut cold = Vec::with_capacity(trials);
    let mut warm = Vec::with_capacity(trials);
    // The probe's own split of each warm probe (its "backend verified" debug event).
    let split = Arc::new(SplitRecorder::default());
    let mut process_checks = Vec::with_capacity(trials);
    // The floor of a warm probe, measured alongside it: one ping round trip over a new
    // Unix-socket connection, and the /proc reads that prove start time, path and owner.
    let daemon = manifest.current_daemon.clone().ok_or("no daemon")?;
    let mut ping = tokio_util::bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut running_process::protocol::FrameCodec,
        running_process::protocol::Frame::Ping,
        &mut ping,
    )?;
    let (mut round_trips, mut proc_reads) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        DigestCache::global().clear();
        let started = Instant::now();
        let handle = BackendHandle::try_from_manifest(&manifest)
            .await?
            .ok_or("no daemon")?;
        cold.push(started.elapsed());
        drop(handle);
        let recording = tracing::dispatcher::set_default(&tracing::Dispatch::from(split.clone()));
        let started = Instant::now();
        let handle = BackendHandle::try_from_manifest(&manifest)
            .await?
            .ok_or("no daemon")?;
        warm.push(started.elapsed());
        drop(recording);
        drop(handle);
        if let Some(us) = split.take() {
            process_checks.push(us);
        }
        if aims {
            round_trips.push(ping_round_trip(Path::new(&daemon.ipc_endpoint.path), &ping).await?);
            proc_reads.push(read_proc_facts(daemon.pid)?);
        }
    }
    child.kill().await?;
    let exe = format!("{size_mib:.1} MiB executable");
    let warm = Metric::from_samples(format!("probe warm ({exe})"), "µs", &mut warm, common::us);
    let cold = Metric::from_samples(format!("probe cold ({exe})"), "µs", &mut cold, common::us)
        .note("digest cache cleared before each probe");
    // Warm against cold: what the digest cache saves.
    let warm = warm.baseline("cold p50", cold.p50.unwrap_or(0.0));
    metrics.push(cold);
    if aims {
        let round_trip = Metric::from_samples(
            "floor, part: Unix-socket ping round trip (new connection)",
            "µs",
            &mut round_trips,
            common::us,
        );
        let reads = Metric::from_samples(
            "floor, part: /proc reads of a probe (stat, exe link, status)",
            "µs",
            &mut proc_reads,
            common::us,
        );
        let floor = round_trip.p50.unwrap_or(0.0) + reads.p50.unwrap_or(0.0);
        let times = warm.p50.unwrap_or(0.0) / floor.max(f64::MIN_POSITIVE);
        metrics.push(
            warm.aim("p50 < 300 µs; <= 2x the floor (round trip + /proc reads)")
                .note(format!("{times:.2}x the floor of {floor:.0} µs (p50 sum of the two parts below, same run)")),
        );
        metrics.push(round_trip);
        metrics.push(reads);
    } else {
        metrics.push(warm);
    }
    if aims && !process_checks.is_empty() {
        metrics.push(
            Metric::from_samples(
                format!("probe warm, part: process checks ({exe})"),
                "µs",
                &mut process_checks,
                |us| us as f64,
            )
            .note("handle, /proc facts, cached digest, owner (inline when the digest is cached); the rest of a warm probe is the socket exchange"),
        );
    }
    Ok(())
}

/// One ping frame and its pong over a new connection to `socket`.
async fn ping_round_trip(
    socket: &Path,
    ping: &[u8],
) -> Result<std::time::Duration, Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream.write_all(ping).await?;
    let mut pong = [0u8; running_process::protocol::wire::HEADER_LEN];
    stream.read_exact(&mut pong).await?;
    Ok(started.elapsed())
}

/// The facts a warm probe must read from /proc (the boot id is read once per process).
fn read_proc_facts(pid: u32) -> std::io::Result<std::time::Duration> {
    let started = Instant::now();
    std::fs::read(format!("/proc/{pid}/stat"))?;
    std::fs::read_link(format!("/proc/{pid}/exe"))?;
    std::fs::read(format!("/proc/{pid}/status"))?;
    Ok(started.elapsed())
}

/// Records `process_checks_us` of the probe's "backend verified" debug event; ignores
/// everything else.
#[derive(Default)]
struct SplitRecorder {
    last: Mutex<Option<u64>>,
}

impl SplitRecorder {
    fn take(&self) -> Option<u64> {
        self.last.lock().ok()?.take()
    }
}

impl tracing::Subscriber for SplitRecorder {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.fields().field("process_checks_us").is_some()
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        struct Visit(Option<u64>);
        impl tracing::field::Visit for Visit {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "process_checks_us" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut visit = Visit(None);
        event.record(&mut visit);
        if let (Some(us), Ok(mut last)) = (visit.0, self.last.lock()) {
            *last = Some(us);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
