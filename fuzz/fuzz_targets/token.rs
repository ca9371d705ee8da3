//! Enrollment tokens arrive from anyone who can reach `mutual ca serve`: the JWT reader (form,
//! base64url, header, key id, signature) and the claims parser must refuse garbage, never panic.
//! The claims parser is fed directly too, since a random token never carries a valid signature.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mutual_ca_server::token::{decode_claims, Provisioner};

fn provisioner() -> &'static Provisioner {
    static P: OnceLock<(tempfile::TempDir, Provisioner)> = OnceLock::new();
    &P.get_or_init(|| {
        let d = tempfile::tempdir().expect("temp dir");
        let p = Provisioner::load_or_create(d.path(), b"fuzz").expect("provisioner");
        (d, p)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = provisioner().verify(s, 1_800_000_000);
    }
    let _ = decode_claims(data, 1_800_000_000);
});
