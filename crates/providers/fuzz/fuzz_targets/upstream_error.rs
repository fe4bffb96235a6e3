#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_providers_fuzz::upstream_error(data));
