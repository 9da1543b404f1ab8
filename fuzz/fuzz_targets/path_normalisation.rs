#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ossc_preload::fuzzing::path_normalisation(data));
