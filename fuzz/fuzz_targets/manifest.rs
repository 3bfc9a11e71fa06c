//! Manifest parsing on arbitrary bytes: a typed `ManifestError` or a valid manifest that
//! survives a write and a re-read, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use running_process::protocol::fuzzing::check_manifest;

fuzz_target!(|input: &[u8]| {
    let _ = check_manifest(input);
});
