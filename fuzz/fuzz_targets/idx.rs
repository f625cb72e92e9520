//! Coverage-guided fuzzing of the idx reader: whatever the bytes, an Ok or an Err, never a
//! panic, an abort or a hang (the check itself is in backprop's tests/fuzz_replay.rs, which
//! replays the corpus on stable Rust).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    backprop::fuzzing::idx(data);
});
