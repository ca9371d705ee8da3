//! `mutual cert verify` end to end: the real binary on certificates from a throwaway PKI, every
//! verdict with its exact reason label, JSON output, exit codes, and `openssl verify` agreeing
//! on the cases both can judge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

mod pki_common;

use mutual_test::{skip_without, Leaf, LeafOpts, TestPki};
use pki_common::chain_roles;

struct Fx {
    pki: TestPki,
    other: TestPki,
    server: Leaf,
    client: Leaf,
    expired: Leaf,
    future: Leaf,
    revoked: Leaf,
    foreign: Leaf,
    crl: std::path::PathBuf,
}

/// Built once for the whole file: issuing certificates is the slow part.
fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let pki = TestPki::new("verify");
        let other = TestPki::new("stranger");
        let server = pki.leaf(
            "server",
            LeafOpts::new("api")
                .san("dns:api.example.test")
                .san("ip:10.0.0.7")
                .san("uri:spiffe://example.org/ns/prod/sa/api")
                .server(),
        );
        let client = pki.leaf(
            "client",
            LeafOpts::new("web").san("uri:spiffe://example.org/web"),
        );
        // Expired an hour ago, so `--at` can reach back into its life (the intermediate
        // is only a day old).
        let mut old = LeafOpts::new("old").san("dns:api.example.test").server();
        old.not_before_secs = -3 * 3600;
        old.not_after_secs = -3600;
        let expired = pki.leaf("expired", old);
        let future = pki.leaf(
            "future",
            LeafOpts::new("new")
                .san("dns:api.example.test")
                .server()
                .not_yet_valid(),
        );
        let revoked = pki.leaf(
            "revoked",
            LeafOpts::new("gone").san("dns:gone.example.test").server(),
        );
        pki.revoke(&revoked);
        let crl = pki.crl("intermediate.crl");
        let foreign = other.leaf(
            "foreign",
            LeafOpts::new("x").san("dns:api.example.test").server(),
        );
        Fx {
            pki,
            other,
            server,
            client,
            expired,
            future,
            revoked,
            foreign,
            crl,
        }
    })
}

fn mutual(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mutual"))
        .arg("cert")
        .arg("verify")
        .args(args)
        .output()
        .unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs with --json and returns (exit code, parsed JSON).
fn verify_json(leaf: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let f = fx();
    let mut args = vec![p(leaf), "--roots", p(&f.pki.root), "--json"];
    args.extend_from_slice(extra);
    let out = mutual(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

fn assert_reason(leaf: &Path, extra: &[&str], code: i32, reason: &str) -> serde_json::Value {
    let (c, v) = verify_json(leaf, extra);
    assert_eq!(v["reason"], reason, "{v}");
    assert_eq!(c, code, "{v}");
    assert_eq!(v["valid"], code == 0, "{v}");
    v
}

#[test]
fn valid_chain_is_ok_with_its_path() {
    let f = fx();
    let v = assert_reason(&f.server.cert, &["--name", "api.example.test"], 0, "ok");
    assert_eq!(chain_roles(&v), ["leaf", "intermediate", "root"]);
    assert_eq!(v["chain"][0]["serial"], f.server.serial_hex.as_str());
    assert_reason(&f.server.cert, &["--name", "10.0.0.7"], 0, "ok");
    assert_reason(
        &f.server.cert,
        &["--name", "spiffe://example.org/ns/prod/sa/api"],
        0,
        "ok",
    );
    assert_reason(&f.client.cert, &["--purpose", "client"], 0, "ok");
    // Human output: the label and exit 0.
    let out = mutual(&[p(&f.server.cert), "--roots", p(&f.pki.root)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
}

#[test]
fn intermediates_can_come_from_a_separate_file() {
    let f = fx();
    let leaf_only = f.pki.path("server-leaf-only.pem");
    std::fs::write(&leaf_only, &f.server.leaf_pem).unwrap();
    assert_reason(&leaf_only, &[], 1, "unknown_ca");
    assert_reason(
        &leaf_only,
        &["--intermediates", p(&f.pki.intermediate)],
        0,
        "ok",
    );
}

#[test]
fn expired_and_not_yet_valid() {
    let f = fx();
    let v = assert_reason(&f.expired.cert, &[], 1, "expired");
    let d = v["detail"].as_str().unwrap();
    assert!(
        d.starts_with("certificate expired at ") && d.contains(", now "),
        "{d}"
    );
    assert_reason(&f.future.cert, &[], 1, "not_yet_valid");
    // --at moves the clock back into the expired certificate's life.
    let past = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    let at = past
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_reason(&f.expired.cert, &["--at", &at], 0, "ok");
    assert_reason(&f.server.cert, &["--at", &at], 1, "not_yet_valid");
    assert_reason(
        &f.server.cert,
        &["--at", "2200-01-01T00:00:00Z"],
        1,
        "expired",
    );
}

#[test]
fn unknown_ca() {
    let f = fx();
    assert_reason(&f.foreign.cert, &[], 1, "unknown_ca");
    let out = mutual(&[p(&f.foreign.cert), "--roots", p(&f.pki.root)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("invalid: unknown_ca"), "{text}");
    assert!(text.contains("hint: "), "{text}");
    // ...and it is fine against its own root.
    let out = mutual(&[p(&f.foreign.cert), "--roots", p(&f.other.root)]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn name_mismatch_dns_ip_and_spiffe() {
    let f = fx();
    let v = assert_reason(
        &f.server.cert,
        &["--name", "db.example.test"],
        1,
        "name_mismatch",
    );
    assert!(
        v["detail"].as_str().unwrap().contains("db.example.test"),
        "{v}"
    );
    assert_reason(&f.server.cert, &["--name", "10.0.0.8"], 1, "name_mismatch");
    let v = assert_reason(
        &f.server.cert,
        &["--name", "spiffe://example.org/ns/prod/sa/db"],
        1,
        "name_mismatch",
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("spiffe://example.org/ns/prod/sa/api"),
        "{v}"
    );
    // A SPIFFE ID is matched exactly, not as a prefix.
    assert_reason(
        &f.server.cert,
        &["--name", "uri:spiffe://example.org/ns/prod"],
        1,
        "name_mismatch",
    );
}

#[test]
fn wrong_purpose() {
    let f = fx();
    let v = assert_reason(&f.client.cert, &["--purpose", "server"], 1, "wrong_purpose");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("client authentication"),
        "{v}"
    );
    assert_reason(&f.server.cert, &["--purpose", "client"], 1, "wrong_purpose");
}

#[test]
fn revoked_via_crl() {
    let f = fx();
    assert_reason(&f.revoked.cert, &["--crl", p(&f.crl)], 1, "revoked");
    // Without the CRL nothing says it is revoked.
    assert_reason(&f.revoked.cert, &[], 0, "ok");
    // A good leaf with only the intermediate's CRL: the intermediate's own status is unknown
    // (whole-chain checking, as the proxy does) unless only the leaf is checked.
    assert_reason(
        &f.server.cert,
        &["--crl", p(&f.crl)],
        1,
        "revocation_unknown",
    );
    assert_reason(
        &f.server.cert,
        &["--crl", p(&f.crl), "--crl-leaf-only"],
        0,
        "ok",
    );
    assert_reason(
        &f.revoked.cert,
        &["--crl", p(&f.crl), "--crl-leaf-only"],
        1,
        "revoked",
    );
}

#[test]
fn malformed_or_missing_input_is_exit_2() {
    let f = fx();
    let bad = f.pki.path("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\n!!!notbase64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = f.pki.path("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    let garbage_der = f.pki.path("garbage.pem");
    std::fs::write(
        &garbage_der,
        "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (args, what) in [
        (vec![p(&bad), "--roots", p(&f.pki.root)], "bad.pem"),
        (vec![p(&empty), "--roots", p(&f.pki.root)], "empty.pem"),
        (
            vec![p(&garbage_der), "--roots", p(&f.pki.root)],
            "garbage.pem",
        ),
        (vec![p(&f.server.cert), "--roots", p(&empty)], "empty.pem"),
        (
            vec![
                p(&f.server.cert),
                "--roots",
                p(&f.pki.root),
                "--crl",
                p(&empty),
            ],
            "empty.pem",
        ),
        (
            vec!["/nonexistent/leaf.pem", "--roots", p(&f.pki.root)],
            "/nonexistent/leaf.pem",
        ),
        (
            vec![
                p(&f.server.cert),
                "--roots",
                p(&f.pki.root),
                "--at",
                "yesterday",
            ],
            "--at",
        ),
        // --crl-leaf-only says which CRLs are needed: without --crl it would check nothing.
        (
            vec![
                p(&f.server.cert),
                "--roots",
                p(&f.pki.root),
                "--crl-leaf-only",
            ],
            "required arguments were not provided:\n  --crl <FILE>",
        ),
    ] {
        let out = mutual(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
    }
}

/// openssl verify agrees with us on valid, expired and unknown-CA chains.
#[test]
fn openssl_agrees() {
    if skip_without("openssl") {
        return;
    }
    let f = fx();
    let openssl_ok = |leaf: &Leaf| {
        Command::new("openssl")
            .args([
                "verify",
                "-CAfile",
                p(&f.pki.root),
                "-untrusted",
                p(&f.pki.intermediate),
            ])
            .arg(&leaf.cert)
            .output()
            .unwrap()
    };
    for (leaf, ours, openssl_err) in [
        (&f.server, "ok", None),
        (&f.expired, "expired", Some("certificate has expired")),
        (
            &f.foreign,
            "unknown_ca",
            Some("unable to get local issuer certificate"),
        ),
    ] {
        let (_, v) = verify_json(&leaf.cert, &[]);
        assert_eq!(v["reason"], ours);
        let o = openssl_ok(leaf);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        match openssl_err {
            None => assert!(o.status.success(), "{text}"),
            Some(msg) => {
                assert!(!o.status.success(), "{text}");
                assert!(text.contains(msg), "{text}");
            }
        }
    }
}
