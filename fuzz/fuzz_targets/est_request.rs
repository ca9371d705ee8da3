//! What a device sends to EST (`/.well-known/est/`) comes from anyone who can reach the port:
//! the path and label, the HTTP Basic header, the base64 framing and the PKCS#10 inside, and
//! (client side) the PKCS#7 certs-only answer and CSR attributes. None of it may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mutual_est::parse_for_fuzzing(data);
});
