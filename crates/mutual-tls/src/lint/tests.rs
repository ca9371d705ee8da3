//! Rule bookkeeping; the per-rule tests with openssl-made certificates are in
//! crates/mutual/tests/lint.rs.
#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn every_rule_is_used_and_every_used_rule_exists() {
    let src = include_str!("mod.rs");
    for r in RULES {
        let uses = src.matches(&format!("\"{}\"", r.id)).count();
        assert!(uses >= 2, "rule {} is declared but never raised", r.id);
    }
    for part in src.split("o.hit(").skip(1) {
        let id = part.trim_start().trim_start_matches('"');
        let id = &id[..id.find('"').unwrap()];
        assert!(rule(id).is_some(), "o.hit uses unknown rule {id}");
    }
}

#[test]
fn dns_syntax() {
    assert!(dns_syntax_ok("*.example.com", true));
    assert!(!dns_syntax_ok("*.example.com", false));
    assert!(!dns_syntax_ok("a_b.example.com", true));
    assert!(!dns_syntax_ok(".example.com", false));
    assert!(!dns_syntax_ok("a.*.example.com", true));
    assert_eq!(suffixes::classify("co.uk"), Some(suffixes::Kind::Icann));
    assert_eq!(suffixes::classify("com"), Some(suffixes::Kind::Icann));
    assert_eq!(
        suffixes::classify("S3.amazonaws.com"),
        Some(suffixes::Kind::Private)
    );
    assert_eq!(suffixes::classify("example.co.uk"), None);
}
