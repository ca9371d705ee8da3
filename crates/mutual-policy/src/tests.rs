//! Policy parsing and decisions, end to end from TOML text and real certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use mutual_test::{LeafOpts, TestPki};

fn ident(spiffe: Option<&str>, dns: &[&str], cn: Option<&str>) -> Identity {
    Identity {
        spiffe: spiffe.map(str::to_string),
        dns: dns.iter().map(|s| s.to_string()).collect(),
        cn: cn.map(str::to_string),
        serial: "01".into(),
        ..Identity::default()
    }
}

#[test]
fn design_example_parses_and_decides() {
    let p = Policy::from_toml(
        r#"
[[allow]]
spiffe = "spiffe://example.org/ns/prod/*"
[[allow]]
dns = "*.ops.example.org"
paths = ["/admin/*"]
methods = ["GET"]
"#,
    )
    .unwrap();
    assert_eq!(p.rules().len(), 2);
    let web = ident(Some("spiffe://example.org/ns/prod/sa/web"), &[], None);
    assert_eq!(
        p.authorize(&web, None),
        Decision {
            allowed: true,
            rule: Some(0)
        }
    );
    let dev = ident(Some("spiffe://example.org/ns/dev/sa/web"), &[], None);
    assert_eq!(
        p.authorize(&dev, None),
        Decision {
            allowed: false,
            rule: None
        }
    );

    let ops = ident(None, &["alice.ops.example.org"], None);
    // Connection level: identity matches, the HTTP layer re-checks per request.
    assert_eq!(p.authorize(&ops, None).rule, Some(1));
    assert!(!p.authorize_tcp(&ops).allowed);
    let get = Request {
        method: "GET",
        path: "/admin/users",
    };
    let post = Request {
        method: "POST",
        path: "/admin/users",
    };
    let other = Request {
        method: "GET",
        path: "/public",
    };
    assert_eq!(p.authorize(&ops, Some(&get)).rule, Some(1));
    assert!(!p.authorize(&ops, Some(&post)).allowed);
    assert!(!p.authorize(&ops, Some(&other)).allowed);
    // The SPIFFE rule has no methods/paths: it allows every request.
    assert!(p.authorize(&web, Some(&post)).allowed);
    assert!(p.has_http_rules());
}

#[test]
fn keys_in_a_rule_are_anded_and_lists_ored() {
    let p = Policy::from_toml(
        r#"
[[allow]]
dns = ["a.example.org", "b.example.org"]
cn = "svc"
"#,
    )
    .unwrap();
    assert!(
        p.authorize(&ident(None, &["b.example.org"], Some("svc")), None)
            .allowed
    );
    assert!(
        !p.authorize(&ident(None, &["b.example.org"], Some("other")), None)
            .allowed
    );
    assert!(
        !p.authorize(&ident(None, &["c.example.org"], Some("svc")), None)
            .allowed
    );
    assert!(!p.authorize(&ident(None, &[], None), None).allowed);
}

#[test]
fn empty_policy_denies() {
    let p = Policy::from_toml("").unwrap();
    assert!(p.is_empty());
    assert!(
        !p.authorize(&ident(Some("spiffe://a/b"), &[], None), None)
            .allowed
    );
    assert!(Policy::default().is_empty());
}

#[test]
fn allow_any_is_explicit() {
    let p = Policy::from_toml("[[allow]]\nallow_any = true\n").unwrap();
    assert!(p.authorize(&ident(None, &[], None), None).allowed);
    let e = Policy::from_toml("[[allow]]\nmethods = [\"GET\"]\n").unwrap_err();
    assert!(e.to_string().contains("allow_any"), "{e}");
    let e = Policy::from_toml("[[allow]]\nallow_any = true\ndns = \"x.org\"\n").unwrap_err();
    assert!(e.to_string().contains("cannot be combined"), "{e}");
}

#[test]
fn unknown_keys_are_rejected_with_line() {
    let e = Policy::from_toml(
        "[[allow]]\ndns = \"x.example.org\"\n\n[[allow]]\nspife = \"spiffe://a/b\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 5"), "{e}");
    assert!(e.contains("spife"), "{e}");
    let e = Policy::from_toml("[[deny]]\ndns = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1"), "{e}");
    let e = Policy::from_toml("[[allow]\n").unwrap_err().to_string();
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn invalid_patterns_are_rejected_with_rule_position() {
    let e = Policy::from_toml(
        "[[allow]]\ndns = \"ok.example.org\"\n[[allow]]\nspiffe = \"spiffe://*/x\"\n",
    )
    .unwrap_err();
    match &e {
        PolicyError::InRule { line, rule, source } => {
            assert_eq!((*line, *rule), (3, 1));
            assert!(matches!(**source, PolicyError::InvalidPattern { .. }));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(Policy::from_toml("[[allow]]\ndns = []\n").is_err());
    assert!(Policy::from_toml("[[allow]]\ndns = \"a.b\"\npaths = [\"admin\"]\n").is_err());
    assert!(Policy::from_toml("[[allow]]\ndns = \"a.b\"\nmethods = [\"G T\"]\n").is_err());
}

#[test]
fn from_flags_one_rule_per_value() {
    let p = Policy::from_flags(
        &["spiffe://example.org/ns/*/sa/web".into()],
        &["*.internal.example".into(), "db.example.org".into()],
        &["legacy".into()],
        &["ops".into()],
        false,
    )
    .unwrap();
    assert_eq!(p.rules().len(), 5);
    assert_eq!(
        p.authorize(&ident(None, &["DB.example.org"], None), None)
            .rule,
        Some(2)
    );
    let mut ou = ident(None, &[], None);
    ou.ou = vec!["ops".into()];
    assert_eq!(p.authorize(&ou, None).rule, Some(4));
    assert!(Policy::from_flags(&["spiffe://*/x".into()], &[], &[], &[], false).is_err());
    let any = Policy::from_flags(&[], &[], &[], &[], true).unwrap();
    assert!(any.authorize(&ident(None, &[], None), None).allowed);
    let merged = p.merged(Policy::from_toml("[[allow]]\nip = \"10.0.0.0/8\"\n").unwrap());
    let mut ip = ident(None, &[], None);
    ip.ip = vec!["10.1.2.3".into()];
    assert_eq!(merged.authorize(&ip, None).rule, Some(5));
}

#[test]
fn identity_from_real_certificate() {
    let pki = TestPki::new("policy");
    let leaf = pki.leaf(
        "web",
        LeafOpts::new("web")
            .san("uri:spiffe://example.org/ns/prod/sa/web")
            .san("dns:web.example.org")
            .san("ip:10.1.2.3")
            .ou("payments"),
    );
    let id = Identity::from_der(&leaf.der).unwrap();
    assert_eq!(
        id.spiffe.as_deref(),
        Some("spiffe://example.org/ns/prod/sa/web")
    );
    assert_eq!(id.dns, ["web.example.org"]);
    assert_eq!(id.ip, ["10.1.2.3"]);
    assert_eq!(id.cn.as_deref(), Some("web"));
    assert_eq!(id.ou, ["payments"]);
    assert_eq!(id.serial, leaf.serial_hex);
    assert_eq!(id.sha256.len(), 64);
    assert!(id.issuer.contains("policy Intermediate"), "{}", id.issuer);
    assert!(id.subject.contains("CN=web"), "{}", id.subject);
    assert!(id.not_after > 0);
    assert_eq!(id.principal(), "spiffe://example.org/ns/prod/sa/web");

    // The reports' reader agrees with the identity and keeps the SANs' order and spelling.
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf.der).unwrap();
    let f = CertFacts::of(&cert, &leaf.der);
    let sans = [
        "uri:spiffe://example.org/ns/prod/sa/web",
        "dns:web.example.org",
        "ip:10.1.2.3",
    ];
    assert_eq!(f.sans, sans);
    assert_eq!(f.spiffe_id, id.spiffe);
    assert_eq!(f.eku, Some(vec!["clientAuth".to_string()]));
    assert_eq!(f.sha256, id.sha256);

    let two = pki.leaf(
        "two",
        LeafOpts::new("two")
            .san("uri:spiffe://example.org/a")
            .san("uri:spiffe://example.org/b")
            .san("dns:two.example.org"),
    );
    let id = Identity::from_der(&two.der).unwrap();
    assert_eq!(id.spiffe, None, "two SPIFFE IDs mean no SPIFFE identity");
    assert_eq!(id.principal(), "two.example.org");

    let cn_only = pki.leaf("cn", LeafOpts::new("legacy-client"));
    let id = Identity::from_der(&cn_only.der).unwrap();
    assert_eq!(id.principal(), "legacy-client");
    assert!(Identity::from_der(b"not a cert").is_err());
}

#[test]
fn principal_falls_back_to_serial() {
    let id = Identity {
        serial: "0abc".into(),
        ..Identity::default()
    };
    assert_eq!(id.principal(), "0abc");
    let id = Identity {
        ip: vec!["::1".into()],
        serial: "1".into(),
        ..Identity::default()
    };
    assert_eq!(id.principal(), "::1");
}
