//! The frame decoder on arbitrary bytes, fed in arbitrary chunks: no panic, bounded
//! buffering, every decoded frame round-trips, and the chunking changes nothing.
//! Input: a chunk plan, then the stream (see `protocol::fuzzing::split_plan`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use running_process::protocol::fuzzing::{check_frame_decoder, split_plan};

fuzz_target!(|input: &[u8]| {
    let (plan, data) = split_plan(input);
    check_frame_decoder(data, &plan);
});
