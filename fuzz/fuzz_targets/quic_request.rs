#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ossc_peer::fuzzing::quic_request(data));
