//! Property tests over the fuzz targets' entry points (`protocol::fuzzing`, the `fuzzing`
//! feature): the frame decoder, the responder's handling of a connection's bytes, and
//! manifest parsing. The invariants each `check_*` asserts are listed on it; the tests here
//! add generated valid inputs and the properties specific to them.
//!
//! Deterministic: a fixed seed, and no failure files written (a failure prints the
//! minimal input; turn it into a unit test).

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use running_process::protocol::fuzzing::{
    check_frame_decoder, check_manifest, check_responder, responder, ControlAction, Route,
};
use running_process::protocol::wire::{HEADER_LEN, MAGIC, MAX_PAYLOAD, VERSION};
use running_process::protocol::{CacheManifest, ManifestError};
use running_process::protocol::{
    ErrorReply, Frame, FrameCodec, FrameError, ProbeReply, ProbeRequest,
};
use running_process::{DaemonProcess, Endpoint};
use serde_json::{json, Value};
use tokio_util::bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5eed_f00d),
        ..Config::default()
    }
}

/// Successive chunk lengths (cycled; 0 = the rest), as the `check_*` functions take them.
fn chunk_plan() -> impl Strategy<Value = Vec<usize>> {
    vec(0usize..40, 0..6)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9./-]{0,12}"]
}

fn daemon() -> impl Strategy<Value = DaemonProcess> {
    (
        (
            any::<u32>(),
            any::<u64>(),
            text(),
            text(),
            any::<[u8; 32]>(),
        ),
        (text(), text(), any::<u64>(), any::<Option<u32>>()),
    )
        .prop_map(
            |((pid, start_time, boot_id, exe, sha), (ns, path, started, idle))| DaemonProcess {
                pid,
                start_time,
                boot_id,
                exe_path: exe.into(),
                exe_sha256: sha,
                ipc_endpoint: Endpoint::new(ns, path),
                started_at_unix_ms: started,
                idle_timeout_secs: idle,
            },
        )
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(|nonce| Frame::ProbeRequest(ProbeRequest { nonce })),
        (any::<[u8; 32]>(), text(), text(), daemon()).prop_map(|(nonce, name, version, d)| {
            Frame::ProbeReply(Box::new(ProbeReply {
                nonce,
                service_name: name,
                service_version: version,
                daemon: d,
            }))
        }),
        Just(Frame::Ping),
        Just(Frame::Pong),
        Just(Frame::Shutdown),
        Just(Frame::ShutdownAck),
        text().prop_map(|message| Frame::Error(ErrorReply { message })),
    ]
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut wire = BytesMut::new();
    for frame in frames {
        FrameCodec.encode(frame.clone(), &mut wire).unwrap();
    }
    wire
}

/// Field names of the frames and the manifest, so generated objects often hit them.
const KEYS: &[&str] = &[
    "nonce",
    "message",
    "schema_version",
    "service_name",
    "service_version",
    "current_daemon",
    "updated_at_unix_ms",
    "pid",
    "ipc_endpoint",
    "path",
    "exe_sha256",
    "x",
];

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..3).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
        "[0-9a-fA-F]{64}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            btree_map(prop::sample::select(KEYS), inner, 0..5).prop_map(|fields| {
                Value::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
            }),
        ]
    })
}

/// A frame header with these fields, as the wire lays it out.
fn header(kind: u8, len: u32) -> BytesMut {
    let mut wire = BytesMut::new();
    wire.put_slice(&MAGIC);
    wire.put_u8(VERSION);
    wire.put_u8(kind);
    wire.put_u16(0);
    wire.put_u32(len);
    wire
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_decoder_survives_arbitrary_bytes(data in vec(any::<u8>(), 0..256), plan in chunk_plan()) {
        check_frame_decoder(&data, &plan);
    }

    #[test]
    fn the_decoder_survives_arbitrary_payloads_behind_a_valid_header(
        kind in prop_oneof![Just(1u8), Just(2), Just(3), Just(4), Just(5), Just(6), Just(0x7f), any::<u8>()],
        payload in prop_oneof![
            vec(any::<u8>(), 0..64),
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        ],
        declared_delta in -2i64..=2,
        plan in chunk_plan(),
    ) {
        let len = (payload.len() as i64 + declared_delta).max(0) as u32;
        let mut wire = header(kind, len);
        wire.put_slice(&payload);
        check_frame_decoder(&wire, &plan);
    }

    #[test]
    fn valid_frames_round_trip_in_any_chunking(frames in vec(frame(), 1..5), plan in chunk_plan()) {
        let wire = encode_all(&frames);
        prop_assert_eq!(check_frame_decoder(&wire, &plan), frames);
    }

    #[test]
    fn oversized_length_prefixes_are_refused_before_allocation(
        kind in prop_oneof![Just(1u8), Just(2), Just(3), Just(0x7f)],
        len in (MAX_PAYLOAD as u32 + 1)..=u32::MAX,
        tail in vec(any::<u8>(), 0..32),
    ) {
        // Header byte by byte: the decoder waits without reserving room for the payload.
        let full = header(kind, len);
        let mut buf = BytesMut::new();
        for &byte in &full[..HEADER_LEN - 1] {
            buf.put_u8(byte);
            prop_assert!(FrameCodec.decode(&mut buf).unwrap().is_none());
            prop_assert!(buf.capacity() < MAX_PAYLOAD);
        }
        buf.put_u8(full[HEADER_LEN - 1]);
        buf.put_slice(&tail);
        let capacity = buf.capacity();
        match FrameCodec.decode(&mut buf) {
            Err(FrameError::TooLarge { len: found, max }) => {
                prop_assert_eq!(found, len as usize);
                prop_assert_eq!(max, MAX_PAYLOAD);
            }
            other => prop_assert!(false, "expected TooLarge, got {:?}", other),
        }
        prop_assert_eq!(buf.capacity(), capacity, "reserved room for a refused frame");
    }

    #[test]
    fn manifests_from_arbitrary_bytes_are_typed_errors(raw in vec(any::<u8>(), 0..256)) {
        let _ = check_manifest(&raw);
    }

    #[test]
    fn manifests_from_arbitrary_json_are_typed_errors(value in json_value()) {
        let raw = serde_json::to_vec(&value).unwrap();
        let _ = check_manifest(&raw);
    }

    #[test]
    fn valid_manifests_read_back(
        name in "[a-z]{1,8}",
        version in text(),
        daemon in proptest::option::of(daemon()),
        updated in any::<u64>(),
    ) {
        let daemon = daemon.map(|mut d| {
            d.pid = d.pid.max(1);
            d.ipc_endpoint.path.insert(0, '/');
            d
        });
        let manifest = CacheManifest {
            updated_at_unix_ms: updated,
            ..CacheManifest::new(name, version, daemon)
        };
        let raw = serde_json::to_vec_pretty(&manifest).unwrap();
        prop_assert_eq!(check_manifest(&raw).unwrap(), manifest);
    }

    #[test]
    fn a_manifest_with_one_field_changed_is_read_or_refused_as_invalid(
        field in prop::sample::select(&[
            "schema_version", "service_name", "service_version", "current_daemon",
            "updated_at_unix_ms", "pid", "exe_sha256", "ipc_endpoint", "idle_timeout_secs",
        ][..]),
        replacement in proptest::option::of(json_value()),
    ) {
        let mut manifest = valid_manifest_json();
        let target = match field {
            "pid" | "exe_sha256" | "ipc_endpoint" | "idle_timeout_secs" => {
                manifest["current_daemon"].as_object_mut().unwrap()
            }
            _ => manifest.as_object_mut().unwrap(),
        };
        match replacement {
            Some(value) => target.insert(field.into(), value),
            None => target.remove(field),
        };
        let raw = serde_json::to_vec(&manifest).unwrap();
        match check_manifest(&raw) {
            Ok(_)
            | Err(ManifestError::Invalid { .. })
            | Err(ManifestError::NewerSchema { .. }) => {}
            Err(other) => prop_assert!(false, "well-formed JSON refused as {}", other),
        }
    }

    #[test]
    fn the_responder_answers_or_closes_on_arbitrary_bytes(
        magic in any::<bool>(),
        data in vec(any::<u8>(), 0..256),
        plan in chunk_plan(),
    ) {
        let mut stream = if magic { MAGIC.to_vec() } else { Vec::new() };
        stream.extend_from_slice(&data);
        check_responder(&responder(), &stream, &plan);
    }

    #[test]
    fn the_responder_answers_each_request_then_closes(
        requests in vec(frame(), 1..5),
        mut garbage in vec(any::<u8>(), 0..16),
        plan in chunk_plan(),
    ) {
        if let Some(first) = garbage.first_mut() {
            *first |= 1; // garbage never starts another frame's magic
        }
        let mut stream = encode_all(&requests);
        stream.put_slice(&garbage);
        let transcript = check_responder(&responder(), &stream, &plan);
        prop_assert_eq!(transcript.route, Route::Control);
        let (last, answers) = transcript.actions.split_last().unwrap();
        prop_assert_eq!(last, &ControlAction::Close);
        prop_assert_eq!(answers.len(), requests.len() + usize::from(!garbage.is_empty()));
        let shutdowns = requests.iter().filter(|r| **r == Frame::Shutdown).count();
        let acks = answers.iter().filter(|a| **a == ControlAction::AckShutdown).count();
        prop_assert_eq!(acks, shutdowns);
        if !garbage.is_empty() {
            let error = matches!(answers.last(), Some(ControlAction::Reply(Frame::Error(_))));
            prop_assert!(error, "garbage not answered with an error frame");
        }
    }
}

fn valid_manifest_json() -> Value {
    json!({
        "schema_version": 1,
        "service_name": "svc",
        "service_version": "1.0",
        "current_daemon": {
            "pid": 42,
            "start_time": 7,
            "boot_id": "b",
            "exe_path": "/bin/d",
            "exe_sha256": "ab".repeat(32),
            "ipc_endpoint": {"namespace_id": "n", "path": "/run/d.sock"},
            "started_at_unix_ms": 1,
            "idle_timeout_secs": null,
        },
        "updated_at_unix_ms": 5,
    })
}

#[test]
fn the_valid_manifest_template_is_valid() {
    let raw = serde_json::to_vec(&valid_manifest_json()).unwrap();
    assert!(check_manifest(&raw).is_ok());
}

#[test]
fn a_payload_of_exactly_the_cap_is_accepted_and_one_more_byte_is_not() {
    // `{"message":"…"}` is 14 bytes around the message.
    let frame = |len: usize| {
        Frame::Error(ErrorReply {
            message: "m".repeat(len - 14),
        })
    };
    let mut wire = BytesMut::new();
    FrameCodec.encode(frame(MAX_PAYLOAD), &mut wire).unwrap();
    assert_eq!(wire.len(), HEADER_LEN + MAX_PAYLOAD);
    assert_eq!(
        check_frame_decoder(&wire, &[4096]),
        vec![frame(MAX_PAYLOAD)]
    );
    let refused = FrameCodec.encode(frame(MAX_PAYLOAD + 1), &mut BytesMut::new());
    assert!(matches!(refused, Err(FrameError::TooLarge { .. })));
}
