#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ossc_peer::fuzzing::protocol_roundtrip(data));
