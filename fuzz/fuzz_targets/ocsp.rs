//! `mutual ca serve --ocsp` parses OCSP requests from anyone (GET and POST), and `serve
//! --ocsp-staple` parses what a responder answers: both readers must reject garbage with a reason,
//! never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mutual_pki::ca::ocsp::parse_request(data);
    let _ = mutual_tls::ocsp::check_response(data, b"", b"", 0);
});
