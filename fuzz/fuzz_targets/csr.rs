//! `mutual cert sign` and the online CA's `/v1/sign` and `/v1/renew` take CSRs from requesters:
//! the CSR reader (PEM or DER, requested SAN extension) must reject garbage, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mutual_pki::ca::csr_sans(data);
});
