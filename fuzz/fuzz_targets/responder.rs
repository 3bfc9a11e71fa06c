//! The responder's handling of a connection's bytes (routing by the first bytes, then the
//! control session), fed in arbitrary chunks: no panic, every request answered, a close at
//! the end. Input: a chunk plan, then the stream (see `protocol::fuzzing::split_plan`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use running_process::protocol::fuzzing::{check_responder, responder, split_plan};
use running_process::protocol::Responder;

static RESPONDER: OnceLock<Responder> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    let (plan, data) = split_plan(input);
    check_responder(RESPONDER.get_or_init(responder), data, &plan);
});
