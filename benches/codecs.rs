//! Throughput of the wire and file formats, with criterion: frames encoded and decoded
//! (the probe reply is the largest frame a probe moves), manifests serialized, parsed,
//! written (atomically, with fsyncs) and read.
//!
//! ```text
//! cargo bench --bench codecs
//! ```

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use running_process::protocol::CacheManifest;
use running_process::protocol::{Frame, FrameCodec, ProbeReply, ProbeRequest};
use running_process::{DaemonProcess, Endpoint};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

fn daemon() -> DaemonProcess {
    DaemonProcess {
        pid: 4242,
        start_time: 123_456_789,
        boot_id: "0f5b1c9e-2a53-4c1e-9a4e-6a1f0c2d7b11".into(),
        exe_path: PathBuf::from("/usr/lib/my-app/cache-daemon"),
        exe_sha256: [0xab; 32],
        ipc_endpoint: Endpoint::new("my-app", "/run/user/1000/my-app/cache.sock"),
        started_at_unix_ms: 1_700_000_000_000,
        idle_timeout_secs: Some(600),
    }
}

fn frames() -> [(&'static str, Frame); 3] {
    [
        ("ping", Frame::Ping),
        (
            "probe_request",
            Frame::ProbeRequest(ProbeRequest { nonce: [7; 32] }),
        ),
        (
            "probe_reply",
            Frame::ProbeReply(Box::new(ProbeReply {
                nonce: [7; 32],
                service_name: "cache".into(),
                service_version: "1.2.3".into(),
                daemon: daemon(),
            })),
        ),
    ]
}

fn encoded(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec.encode(frame.clone(), &mut buf).expect("encodes");
    buf
}

fn frame_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for (name, frame) in frames() {
        let wire = encoded(&frame);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            let mut buf = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                buf.clear();
                FrameCodec
                    .encode(black_box(frame.clone()), &mut buf)
                    .expect("encodes");
                black_box(&buf);
            })
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| black_box(FrameCodec.decode(buf).expect("decodes")),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn manifest_codec(c: &mut Criterion) {
    let manifest = CacheManifest::new("cache", "1.2.3", Some(daemon()));
    let json = serde_json::to_vec_pretty(&manifest).expect("serializes");
    let mut group = c.benchmark_group("manifest");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("to_json", |b| {
        b.iter(|| black_box(serde_json::to_vec_pretty(black_box(&manifest)).expect("serializes")))
    });
    group.bench_function("from_json", |b| {
        b.iter(|| {
            black_box(
                CacheManifest::from_json(black_box(&json), "m.json".as_ref()).expect("parses"),
            )
        })
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("run/manifest.json");
    manifest.write_blocking(&path).expect("writes");
    group.bench_function("read_blocking", |b| {
        b.iter(|| black_box(CacheManifest::read_blocking(&path).expect("reads")))
    });
    // Atomic write: temp file, fsync, rename, directory fsync. Dominated by the fsyncs.
    group.sample_size(20);
    group.bench_function("write_blocking (atomic, fsync)", |b| {
        b.iter(|| manifest.write_blocking(&path).expect("writes"))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: these are microsecond operations, and the whole bench stays near a minute.
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = frame_codec, manifest_codec
}
criterion_main!(benches);
