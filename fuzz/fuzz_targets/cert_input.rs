//! `cert inspect` and `cert verify` read whatever file an operator points them at (PEM or DER,
//! one certificate or a chain): the parser must reject garbage with an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mutual_pki::inspect::inspect_pem_or_der(data);
});
