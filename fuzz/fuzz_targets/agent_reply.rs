#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ossc_preload::fuzzing::agent_reply(data));
