#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardlog_tests::fuzz::iterator_token(data));
