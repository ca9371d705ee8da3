//! Identity extraction reads the peer's certificate: the peer chooses those bytes (after the chain
//! verified, but the parser must never be the weak point).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = mutual_policy::Identity::from_der(data) {
        let _ = id.principal();
    }
});
