#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| osvc_fuzz::unix_request(data));
