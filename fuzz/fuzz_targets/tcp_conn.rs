#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| osvc_fuzz::tcp_conn(data));
