//! cargo-fuzz target: rsing::fuzzing::sif (see docs/fuzzing.md).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rsing::fuzzing::sif(data);
});
