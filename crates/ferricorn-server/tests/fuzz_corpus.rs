//! Replays the fuzz corpus (fuzz/corpus/<target>/) through the fuzz targets' entry
//! points on stable Rust: the CI smoke for the fuzzers, and a regression test for every
//! input a fuzzing run ever saved.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        run(&std::fs::read(&path).expect("corpus file"));
        n += 1;
    }
    assert!(n > 0, "empty corpus for {target}");
}

#[test]
fn request_head_corpus() {
    replay("request_head", ferricorn_server::fuzzing::request_head);
}

#[test]
fn framing_corpus() {
    replay("framing", ferricorn_server::fuzzing::framing);
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header", ferricorn_server::fuzzing::proxy_header);
}

#[test]
fn settings_corpus() {
    replay("settings", ferricorn_server::fuzzing::settings);
}
