//! The other ACME inputs from the network, beside the JWS (acme_jws.rs): a DNS answer read by
//! dns-01 validation (from any resolver on the path), an ARI certID from an unauthenticated GET,
//! and an External Account Binding inside newAccount. Each must refuse, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = u16::from_be_bytes([data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0)]);
    let _ = mutual_acme::dns::parse(data, id);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = mutual_acme::ari::CertId::parse(s);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(b) = mutual_acme::eab::Binding::parse(&v, "https://ca.test/acme/new-account") {
            let k = mutual_acme::jws::Jwk::Okp { x: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into() };
            let _ = b.verify("AAAA", &k);
        }
    }
});
