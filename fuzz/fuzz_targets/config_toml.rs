//! `mutual run --config` and `mutual config check` read an operator's file, re-read on every
//! edit: the parser and its whole-file validation must report errors, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mutual_proxy::config::parse(text, std::path::Path::new("/nonexistent-fuzz-base"));
    }
});
