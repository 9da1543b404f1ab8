#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ossc_core::fuzzing::store_key(data));
