#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ossc_peer::fuzzing::agent_request(data));
