//! Entry points for the fuzz targets (`fuzz/`) and the property tests
//! (`tests/fuzz_properties.rs`). Behind the non-default `fuzzing` feature and hidden from
//! the documentation: not part of the stable API.
//!
//! Each `check_*` function runs the real code on one input and panics when an invariant
//! breaks, so a fuzzer reports the input and a property test shrinks it. The invariants
//! live here, once, for both.
//!
//! Inputs can be fed in chunks: `lengths` are the sizes of successive chunks, cycled; a 0
//! means "everything left"; no lengths means one chunk. [`split_plan`] cuts such a plan
//! off the front of a raw fuzz input.

use std::mem::discriminant;
use std::path::Path;

use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::frame::{Frame, FrameCodec, FrameError, HEADER_LEN, MAGIC, MAX_PAYLOAD};
use super::manifest::{CacheManifest, ManifestError, MAX_MANIFEST_BYTES, SCHEMA_VERSION};
use super::responder::Responder;
pub use super::routing::{peek_wanted, route, ControlAction, ControlSession, Presented, Route};
use crate::identity::{DaemonProcess, Endpoint};

/// The largest buffer one frame may need: a full header and a full payload.
const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD;

/// Split a raw fuzz input into a chunk plan and the data: the first byte `k` says how many
/// of the following bytes are chunk lengths. An empty input is an empty plan and no data.
pub fn split_plan(input: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&k, rest)) = input.split_first() else {
        return (Vec::new(), input);
    };
    let k = usize::from(k).min(rest.len());
    let (plan, data) = rest.split_at(k);
    (plan.iter().map(|&b| usize::from(b)).collect(), data)
}

/// `data` cut into chunks by `lengths` (see the [module documentation](self)).
pub fn chunks<'a>(data: &'a [u8], lengths: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut plan = lengths.iter().cycle();
    while !rest.is_empty() {
        let len = match plan.next() {
            Some(&0) | None => rest.len(),
            Some(&len) => len.min(rest.len()),
        };
        let (chunk, tail) = rest.split_at(len);
        out.push(chunk);
        rest = tail;
    }
    out
}

/// What decoding a whole byte stream gives: the frames, then the error that stopped it, if
/// any (a stream that ends between frames has none).
pub fn decode_all(data: &[u8]) -> (Vec<Frame>, Option<FrameError>) {
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    loop {
        match FrameCodec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(error) => return (frames, Some(error)),
        }
    }
}

/// Assert that `frame` encodes within the size cap and decodes back to itself, consuming
/// exactly its encoding.
pub fn assert_round_trips(frame: &Frame) {
    let mut wire = BytesMut::new();
    FrameCodec
        .encode(frame.clone(), &mut wire)
        .unwrap_or_else(|e| panic!("{frame:?} does not re-encode: {e}"));
    assert!(wire.len() <= MAX_FRAME, "encoding exceeds one frame");
    let again = FrameCodec
        .decode(&mut wire)
        .unwrap_or_else(|e| panic!("re-encoded {frame:?} does not decode: {e}"));
    assert_eq!(again.as_ref(), Some(frame), "re-encoded frame differs");
    assert!(
        wire.is_empty(),
        "re-encoded frame left {} bytes",
        wire.len()
    );
}

/// Feed `data` to [`FrameCodec`] in the chunks `lengths` gives, decoding after each chunk
/// until it needs more or fails, then at the end of the stream. Checks that:
///
/// - nothing panics, and every decode call either makes progress or stops;
/// - the decoder never waits for more than one maximal frame, so a huge length prefix is
///   refused before anything is allocated for it, and the buffer stays bounded;
/// - every decoded frame re-encodes and decodes to itself ([`assert_round_trips`]);
/// - the chunking changes nothing: the frames and the kind of the final error are those of
///   [`decode_all`] on the whole input.
///
/// Returns the decoded frames.
pub fn check_frame_decoder(data: &[u8], lengths: &[usize]) -> Vec<Frame> {
    let capacity_bound = 2 * MAX_FRAME + data.len();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut error = None;
    'feed: for chunk in chunks(data, lengths) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            let decoded = FrameCodec.decode(&mut buf);
            assert!(
                buf.capacity() <= capacity_bound,
                "buffer grew to {} bytes",
                buf.capacity()
            );
            match decoded {
                Ok(Some(frame)) => {
                    assert!(buf.len() < before, "a frame was decoded from nothing");
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "a pending decode consumed bytes");
                    assert_waits_for_at_most_one_frame(&buf);
                    break;
                }
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    while error.is_none() {
        match FrameCodec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break,
            Err(e) => error = Some(e),
        }
    }
    for frame in &frames {
        assert_round_trips(frame);
    }
    let (whole_frames, whole_error) = decode_all(data);
    assert_eq!(frames, whole_frames, "chunking changed the frames");
    assert_eq!(
        error.as_ref().map(discriminant),
        whole_error.as_ref().map(discriminant),
        "chunking changed the error: {error:?} vs {whole_error:?}"
    );
    frames
}

/// A buffer the decoder waits on holds part of one frame whose declared length is allowed.
fn assert_waits_for_at_most_one_frame(buf: &[u8]) {
    assert!(buf.len() < MAX_FRAME, "waiting with {} bytes", buf.len());
    if let Some(len) = buf.get(8..HEADER_LEN) {
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        assert!(len <= MAX_PAYLOAD, "waiting for a {len}-byte payload");
    }
}

/// The responder the fuzz targets answer as: a fixed, plausible daemon identity.
pub fn responder() -> Responder {
    let daemon = DaemonProcess {
        pid: 4242,
        start_time: 123_456,
        boot_id: "00000000-0000-4000-8000-000000000000".into(),
        exe_path: "/usr/bin/fuzzd".into(),
        exe_sha256: [0xab; 32],
        ipc_endpoint: Endpoint::new("fuzz", "/run/fuzz/d.sock"),
        started_at_unix_ms: 1_700_000_000_000,
        idle_timeout_secs: Some(60),
    };
    Responder::new("fuzzd", "1.0.0", daemon)
}

/// A stream delivered in chunks: each read returns at most the rest of the current chunk.
struct ChunkedReader<'a> {
    chunks: std::vec::IntoIter<&'a [u8]>,
    current: &'a [u8],
}

impl<'a> ChunkedReader<'a> {
    fn read(&mut self, max: usize) -> &'a [u8] {
        while self.current.is_empty() {
            match self.chunks.next() {
                Some(chunk) => self.current = chunk,
                None => return &[],
            }
        }
        let (read, rest) = self.current.split_at(max.min(self.current.len()));
        self.current = rest;
        read
    }
}

/// What the responder did with a connection: its route, and for a control connection the
/// actions it took, in order.
#[derive(Debug)]
pub struct Transcript {
    /// Where the first bytes sent the connection.
    pub route: Route,
    /// The bytes peeked before routing (replayed to the application).
    pub prefix: Vec<u8>,
    /// The control session's actions (empty unless the route is [`Route::Control`]).
    pub actions: Vec<ControlAction>,
}

/// Run a connection that sends `data` (in the chunks `lengths` gives, then closes) through
/// the responder's routing and control session, as `responder` answers it. Checks that:
///
/// - routing peeks at most the magic's length, replays exactly the bytes it peeked, and
///   sends to the control session exactly the streams that start with [`MAGIC`];
/// - a control connection always ends with one [`ControlAction::Close`], after one answer
///   per request frame (a probe reply with the request's nonce and the responder's
///   identity, a pong, a shutdown acknowledgement, or an error for a frame a client may
///   not send) and one error frame if the stream was malformed or cut short;
/// - every reply frame encodes and round-trips, and the session never buffers more than
///   one frame.
pub fn check_responder(responder: &Responder, data: &[u8], lengths: &[usize]) -> Transcript {
    let mut reader = ChunkedReader {
        chunks: chunks(data, lengths).into_iter(),
        current: &[],
    };
    let mut prefix = Vec::new();
    let mut peer_closed = false;
    loop {
        let wanted = peek_wanted(&prefix);
        if wanted == 0 {
            break;
        }
        let read = reader.read(wanted);
        assert!(read.len() <= wanted, "peeked past the magic");
        if read.is_empty() {
            peer_closed = true;
            break;
        }
        prefix.extend_from_slice(read);
    }
    let route = route(&prefix, peer_closed);
    assert!(prefix.len() <= MAGIC.len(), "peeked {} bytes", prefix.len());
    assert!(
        data.starts_with(&prefix),
        "the replayed prefix is not what was sent"
    );
    let expected_route = if data.starts_with(&MAGIC) {
        Route::Control
    } else if data.is_empty() {
        Route::Closed
    } else {
        Route::Application
    };
    assert_eq!(route, expected_route, "misrouted");
    let mut transcript = Transcript {
        route,
        prefix,
        actions: Vec::new(),
    };
    if route != Route::Control {
        return transcript;
    }

    // The loop `serve_control` runs, with reads from the chunks instead of a socket.
    let action_bound = data.len() / HEADER_LEN + 3;
    let mut session = ControlSession::new(&transcript.prefix);
    let mut ended = false;
    'session: loop {
        while let Some(action) = session.next_action(&responder.presented) {
            transcript.actions.push(action.clone());
            assert!(
                transcript.actions.len() <= action_bound,
                "more actions than the input can ask for"
            );
            if action == ControlAction::Close {
                break 'session;
            }
        }
        assert!(
            !ended,
            "neither closed nor answered at the end of the stream"
        );
        assert!(session.buffered() < MAX_FRAME, "buffering past one frame");
        match reader.read(4096) {
            [] => {
                ended = true;
                session.receive_eof();
            }
            read => session.receive(read),
        }
    }
    assert_eq!(
        session.next_action(&responder.presented),
        None,
        "an action after the close"
    );
    assert_answers(responder, data, &transcript.actions);
    transcript
}

/// The actions are one answer per request of `data`, an error if it was malformed, a close.
fn assert_answers(responder: &Responder, data: &[u8], actions: &[ControlAction]) {
    let (requests, error) = decode_all(data);
    let (last, answers) = actions.split_last().expect("at least the close");
    assert_eq!(last, &ControlAction::Close, "not closed at the end");
    let expected = requests.len() + usize::from(error.is_some());
    assert_eq!(answers.len(), expected, "not one answer per request");
    for (request, answer) in requests.iter().zip(answers) {
        match (request, answer) {
            (Frame::ProbeRequest(probe), ControlAction::Reply(Frame::ProbeReply(reply))) => {
                assert_eq!(reply.nonce, probe.nonce, "probe reply with another nonce");
                assert_eq!(reply.service_name, responder.presented.service_name);
                assert_eq!(reply.service_version, responder.presented.service_version);
                assert_eq!(reply.daemon, responder.presented.daemon);
            }
            (Frame::Ping, ControlAction::Reply(Frame::Pong))
            | (Frame::Shutdown, ControlAction::AckShutdown) => {}
            (
                Frame::ProbeReply(_) | Frame::Pong | Frame::ShutdownAck | Frame::Error(_),
                ControlAction::Reply(Frame::Error(_)),
            ) => {}
            (request, answer) => panic!("{request:?} answered with {answer:?}"),
        }
    }
    if error.is_some() {
        assert!(
            matches!(answers.last(), Some(ControlAction::Reply(Frame::Error(_)))),
            "a malformed stream is not answered with an error frame"
        );
    }
    for answer in answers {
        if let ControlAction::Reply(frame) = answer {
            assert_round_trips(frame);
        }
    }
}

/// Parse `raw` as a manifest with [`CacheManifest::from_json`]. Checks that:
///
/// - an accepted manifest satisfies what readers rely on (a known schema, a service name,
///   a recorded daemon with a PID and an endpoint) and survives writing and re-reading;
/// - a refused one gets the error for its kind of badness: never an I/O error (nothing was
///   read from disk), `Empty` exactly for blank input, `TooLarge` exactly past the cap;
///   and every error displays.
pub fn check_manifest(raw: &[u8]) -> Result<CacheManifest, ManifestError> {
    let path = Path::new("fuzz.json");
    let parsed = CacheManifest::from_json(raw, path);
    match &parsed {
        Ok(manifest) => {
            assert!((1..=SCHEMA_VERSION).contains(&manifest.schema_version));
            assert!(!manifest.service_name.trim().is_empty());
            if let Some(daemon) = &manifest.current_daemon {
                assert_ne!(daemon.pid, 0);
                assert!(!daemon.ipc_endpoint.path.is_empty());
            }
            for json in [
                serde_json::to_vec(manifest).expect("serialize"),
                serde_json::to_vec_pretty(manifest).expect("serialize"),
            ] {
                let again = CacheManifest::from_json(&json, path)
                    .unwrap_or_else(|e| panic!("written manifest does not read back: {e}"));
                assert_eq!(&again, manifest, "manifest changed through a write");
            }
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            let blank = raw.iter().all(u8::is_ascii_whitespace);
            let too_large = raw.len() as u64 > MAX_MANIFEST_BYTES;
            match error {
                ManifestError::Empty { .. } => assert!(blank, "`Empty` for non-blank input"),
                ManifestError::TooLarge { .. } => assert!(too_large && !blank),
                ManifestError::Io { .. } => panic!("an I/O error from parsing: {error}"),
                _ => assert!(!blank && !too_large, "{error} for blank or huge input"),
            }
        }
    }
    parsed
}
