#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferricorn_server::fuzzing::request_head(data);
});
