//! The ACME request parser (mutual-acme's `Jws::parse` and the JWK checks) takes bytes from
//! anyone who can reach `/acme/`: it must refuse, never panic, and a parsed request must verify
//! (or be refused) without panicking either.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(j) = mutual_acme::jws::Jws::parse(data) {
        if let mutual_acme::jws::KeyRef::Jwk(k) = &j.protected.key {
            let _ = j.verify(k);
            let _ = k.thumbprint();
            let _ = k.raw();
        }
        let _ = j.json::<serde_json::Value>();
    }
});
