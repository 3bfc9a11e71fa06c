//! What each service uses, read from real processes: CPU time and share, memory and its
//! peak, tasks, from the instance's cgroup (with `/proc` for what a controller that is not
//! enabled does not give) and from `/proc` alone on the process-group path. Linux.
//!
//! Every wait is for readiness (a line the service prints once it has done its work),
//! with a generous deadline; nothing sleeps to let time pass.
#![cfg(target_os = "linux")]

mod support;

use std::path::{Path, PathBuf};

use running_process::command::{CommandSpec, Readiness};
use running_process::supervision::{ResourceUsage, ServiceHandle, UsageSource};
use support::within;

/// A shell that is ready at once, then burns CPU (a counting loop), says so on the FIFO
/// `done`, then idles. It waits for a `sleep` rather than exec it: a sample taken while
/// the main process execs could read its memory between the old image and the new one.
fn spinner(name: &str, done: &Path) -> CommandSpec {
    let script = format!(
        "echo go; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo spun > '{}'; sleep 3600",
        done.display()
    );
    CommandSpec::new(name, "sh")
        .args(["-c", &script])
        .readiness(Readiness::LogLine {
            pattern: "go".into(),
            stream: Default::default(),
        })
}

/// A FIFO the test reads a service's word from.
fn fifo(dir: &Path) -> PathBuf {
    let path = dir.join("done");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    path
}

/// Wait (off the workers) until someone writes a line to the FIFO `path`.
async fn read_fifo(path: PathBuf) -> String {
    tokio::task::spawn_blocking(move || std::fs::read_to_string(path).unwrap())
        .await
        .unwrap()
}

/// A Python process that holds 64 MiB it has written to, says so, then idles.
fn hog(name: &str) -> CommandSpec {
    CommandSpec::new(name, "python3")
        .args([
            "-c",
            "import sys, time\nb = b'x' * (64 << 20)\nprint('holding', flush=True)\ntime.sleep(3600)",
        ])
        .readiness(Readiness::LogLine {
            pattern: "holding".into(),
            stream: Default::default(),
        })
}

async fn sample(service: &ServiceHandle) -> ResourceUsage {
    let rows = service.sample_usage().await;
    let row = &rows[0];
    println!("{}: {:?}", row.name, row.usage);
    row.usage
        .clone()
        .unwrap_or_else(|| panic!("no usage for {}", row.name))
}

fn on_cgroup(usage: &ResourceUsage) {
    assert!(
        matches!(
            usage.source,
            UsageSource::Cgroup | UsageSource::CgroupAndProc
        ),
        "{usage:?}"
    );
    // The peak only comes from the memory controller.
    assert_eq!(
        usage.memory_peak_bytes.is_some(),
        usage.source == UsageSource::Cgroup,
        "{usage:?}"
    );
}

#[tokio::test]
async fn a_busy_service_shows_its_cpu_time_and_share_then_idles() {
    for cgroup in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let done = fifo(dir.path());
        let service = spinner("spinner", &done).cgroup(cgroup).supervise();
        within("the spinner ready", service.ready())
            .await
            .expect("ready");
        assert!(
            service.status()[0].usage.is_none(),
            "status() reads nothing"
        );
        within("the spinner done", read_fifo(done)).await;
        let busy = sample(&service).await;
        if cgroup {
            on_cgroup(&busy);
        } else {
            assert_eq!(busy.source, UsageSource::Proc);
            assert_eq!(busy.memory_peak_bytes, None);
        }
        // The loop ran in the shell, the main process: its CPU time is counted either way.
        let cpu = busy.cpu_usec.expect("CPU time");
        assert!(cpu >= 50_000, "{cpu} µs of CPU for the loop");
        let share = busy.cpu_percent.expect("a CPU share since it was ready");
        assert!(share > 20.0, "{share}% while it spun");
        assert!(busy.tasks.expect("tasks") >= 1);
        assert!(busy.memory_bytes.expect("memory") > 0);
        // status() now returns the figures of that sample, without reading.
        assert_eq!(service.status()[0].usage.as_ref(), Some(&busy));

        // Idle since: its share since the previous sample is (close to) nothing.
        let idle = sample(&service).await;
        assert!(idle.cpu_usec.unwrap() >= cpu);
        assert!(idle.cpu_percent.unwrap_or(0.0) < 50.0, "{idle:?}");
        service.stop().await;
    }
}

#[tokio::test]
async fn memory_held_by_a_service_shows_in_its_usage() {
    for cgroup in [true, false] {
        let service = hog("hog").cgroup(cgroup).supervise();
        within("the hog ready", service.ready())
            .await
            .expect("ready");
        let usage = sample(&service).await;
        if cgroup {
            on_cgroup(&usage);
        } else {
            assert_eq!(usage.source, UsageSource::Proc);
        }
        let memory = usage.memory_bytes.expect("memory");
        assert!(memory >= 60 << 20, "{memory} bytes for 64 MiB held");
        if let Some(peak) = usage.memory_peak_bytes {
            assert!(peak >= memory);
        }
        // A stopped service has no figures.
        service.stop().await;
        assert!(service.status()[0].usage.is_none());
    }
}

/// What a sample of a set costs, and that `status()` reads nothing: ten services in one
/// group, each in its own cgroup (or process group where none can be made).
#[tokio::test]
async fn sampling_ten_services_is_one_trip_and_status_stays_a_copy() {
    use running_process::command::CommandSupervisor;
    use running_process::supervision::{supervise_group, GroupSpec};
    use std::sync::Arc;
    use std::time::Instant;

    for cgroup in [true, false] {
        let mut spec = GroupSpec::new("ten");
        for i in 0..10 {
            let command = CommandSpec::new(format!("s{i}"), "sleep")
                .args(["3600"])
                .cgroup(cgroup);
            spec = spec.service(Arc::new(CommandSupervisor::new(command)));
        }
        let group = supervise_group(spec).unwrap();
        within("ten ready", group.ready()).await.expect("ready");
        let mut samples = Vec::new();
        for _ in 0..20 {
            let began = Instant::now();
            let rows = group.sample_usage().await;
            samples.push(began.elapsed());
            assert_eq!(rows.iter().filter(|r| r.usage.is_some()).count(), 10);
        }
        let mut copies = Vec::new();
        for _ in 0..20 {
            let began = Instant::now();
            let rows = group.status();
            copies.push(began.elapsed());
            assert_eq!(rows.len(), 10);
        }
        samples.sort();
        copies.sort();
        println!(
            "sample_usage of 10 services ({}): p50 {:?}, max {:?}; status(): p50 {:?}, max {:?}",
            if cgroup { "cgroups" } else { "process groups" },
            samples[10],
            samples[19],
            copies[10],
            copies[19]
        );
        group.stop().await;
    }
}
