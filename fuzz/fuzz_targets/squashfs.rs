//! cargo-fuzz target: rsing::fuzzing::squashfs (see docs/fuzzing.md).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rsing::fuzzing::squashfs(data);
});
