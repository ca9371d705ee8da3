//! The policy file is operator input read on every reload: no input may panic or hang the parser,
//! and a parsed policy must decide for any identity without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mutual_policy::{Identity, Policy, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = Policy::from_toml(text) {
        let id = Identity {
            spiffe: Some("spiffe://example.org/ns/prod/sa/web".into()),
            dns: vec!["a.internal.example".into()],
            cn: Some("web".into()),
            ..Default::default()
        };
        let _ = policy.authorize(&id, None);
        let _ = policy.authorize(&id, Some(&Request { method: "GET", path: "/admin/x/../y" }));
    }
});
