#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_providers_fuzz::stream_anthropic(data));
