//! The CA's life cycle (issue 19, docs/lifecycle.md) with the real binary and real peers:
//! intermediate rotation (each row says its issuer, each issuer signs its own CRL, checked by
//! `openssl crl` / `openssl verify`), a rotation picked up by a running `ca serve` without a
//! restart (the CA dir is what replicas share), renewal across the rotation, per-issuer CRLs
//! over HTTP with curl, and `/v1/roots` with its version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;
use pki_common::{curl_in, issuer_cn, mutual, mutual_pw, openssl, renew_at, s, CaServe, TestCa};

use std::path::{Path, PathBuf};

/// The `issuer` of every inventory row, by name.
fn issuers_by_name(rows: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["issuer"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Serials (lowercase hex) a CRL lists, read by openssl after it checked the CRL's signature
/// against `issuer_pem` (a CRL signed by another key fails here).
fn crl_serials(crl: &Path, issuer_pem: &Path) -> Vec<String> {
    let o = openssl(&[
        "crl",
        "-in",
        s(crl),
        "-inform",
        if crl.extension().is_some_and(|e| e == "pem") {
            "PEM"
        } else {
            "DER"
        },
        "-CAfile",
        s(issuer_pem),
        "-noout",
        "-text",
    ]);
    assert_eq!(o.code, 0, "{}", o.text());
    assert!(o.stderr.contains("verify OK"), "{}", o.text());
    let mut v: Vec<String> = o
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|x| x.trim().to_ascii_lowercase())
        .collect();
    v.sort();
    v
}

fn serial_of(rows: &[serde_json::Value], name: &str) -> String {
    rows.iter().find(|r| r["name"] == name).unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `openssl verify` of a chain file (leaf + its intermediate) against the root alone.
fn verify_chain(root: &str, chain: &Path) {
    let o = openssl(&["verify", "-CAfile", root, "-untrusted", s(chain), s(chain)]);
    assert_eq!(o.code, 0, "{}", o.text());
}

#[test]
fn rotate_intermediate_records_issuers_and_signs_a_crl_per_issuer() {
    let ca = TestCa::new(&[]);
    let cdp = "http://crl.test/v1/crl/{issuer}";
    ca.issue("before", &["--crl-url", cdp]).ok();
    let r = mutual(&["ca", "rotate-intermediate", "--dir", ca.d(), "--json"]).ok();
    let r: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(r["id"], "int-2");
    assert_eq!(r["default"], "int-2");
    assert_eq!(r["retired"], serde_json::json!(["int-1"]));
    let int2 = ca.dir.join("issuers/int-2.pem");
    assert!(int2.exists());

    // New certificates come from int-2 at once; the CDP names their own issuer.
    ca.issue("after", &["--crl-url", cdp]).ok();
    let out = Path::new(ca.o());
    assert_eq!(issuer_cn(&out.join("before.pem")), "Test CA Intermediate");
    assert_eq!(issuer_cn(&out.join("after.pem")), "Test CA Intermediate 2");
    let text = |p: &Path| openssl(&["x509", "-in", s(p), "-noout", "-text"]).stdout;
    assert!(text(&out.join("before.pem")).contains("URI:http://crl.test/v1/crl/int-1"));
    assert!(text(&out.join("after.pem")).contains("URI:http://crl.test/v1/crl/int-2"));
    // Certificates from both issuers verify against the one root during the overlap.
    let root = ca.root();
    verify_chain(&root, &out.join("before.pem"));
    verify_chain(&root, &out.join("after.pem"));

    // Each row says who signed it, in JSON and in the table.
    let rows = ca.inventory();
    assert_eq!(
        issuers_by_name(&rows),
        vec![
            ("after".to_string(), "int-2".to_string()),
            ("before".to_string(), "int-1".to_string())
        ]
    );
    let table = mutual(&["cert", "list", "--dir", ca.d()]).ok().stdout;
    assert!(table.lines().next().unwrap().contains("ISSUER"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("before") && l.contains("int-1")),
        "{table}"
    );

    // A retiring issuer signs no new certificate; an unknown one is named as such.
    ca.issue("old", &["--issuer", "int-1"])
        .fails_with("no active issuer \"int-1\"");
    ca.issue("nope", &["--issuer", "int-7"])
        .fails_with("no active issuer \"int-7\"");

    // Revoke one of each: each issuer's CRL lists its own, signed by its own key.
    let (s1, s2) = (serial_of(&rows, "before"), serial_of(&rows, "after"));
    for serial in [&s1, &s2] {
        mutual(&["cert", "revoke", "--dir", ca.d(), serial]).ok();
    }
    let crl1 = ca.tmp.path().join("int-1.crl.pem");
    let crl2 = ca.tmp.path().join("int-2.crl.pem");
    mutual(&[
        "ca",
        "crl",
        "--dir",
        ca.d(),
        "--issuer",
        "int-1",
        "--out",
        s(&crl1),
    ])
    .ok();
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl2)]).ok();
    assert_eq!(crl_serials(&crl1, Path::new(&ca.intermediate())), vec![s1]);
    assert_eq!(crl_serials(&crl2, &int2), vec![s2]);
    // int-2 is not the issuer of int-1's CRL.
    let wrong = openssl(&["crl", "-in", s(&crl1), "-CAfile", s(&int2), "-noout"]);
    assert_ne!(wrong.code, 0);
    assert!(
        wrong
            .stderr
            .contains("Error getting CRL issuer certificate"),
        "{}",
        wrong.text()
    );

    // A second issuer of another key type, beside the default, chosen by key type.
    let r = mutual(&[
        "ca",
        "rotate-intermediate",
        "--dir",
        ca.d(),
        "--add",
        "--key-type",
        "ecdsa-p384",
        "--json",
    ])
    .ok();
    let r: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (r["id"].as_str(), r["default"].as_str()),
        (Some("int-3"), Some("int-2"))
    );
    ca.issue("p384", &["--issuer", "ecdsa-p384"]).ok();
    ca.issue("default", &[]).ok();
    assert_eq!(issuer_cn(&out.join("p384.pem")), "Test CA Intermediate 3");
    assert_eq!(
        issuer_cn(&out.join("default.pem")),
        "Test CA Intermediate 2"
    );
    // A listing needs no password (no key is unlocked), as `cert list` needs none.
    let list = mutual_pw(None, &["ca", "issuers", "--dir", ca.d(), "--json"]).ok();
    let list: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    let states: Vec<(&str, &str, bool)> = list
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap(),
                i["state"].as_str().unwrap(),
                i["default"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("int-1", "retiring", false),
            ("int-2", "active", true),
            ("int-3", "active", false)
        ]
    );
}

/// A CA made with the leading-dot `--permitted-dns .internal.example` (the operator's choice
/// `ca init` warns about): its new intermediates carry the same constraint, and the rotations
/// warn the same way and succeed. They failed with "bug: ... fails its own lint" (exit 2)
/// after the new intermediate was already the default.
#[test]
fn rotations_of_a_leading_dot_constrained_ca_warn_and_succeed() {
    let ca = TestCa::new(&["--permitted-dns", ".internal.example"]);
    let warned = |o: &pki_common::Out| {
        assert_eq!(o.code, 0, "{}", o.text());
        assert!(
            o.stderr.contains(
                "warning: the intermediate certificate: error name-constraints-dns-invalid"
            ),
            "{}",
            o.text()
        );
    };
    let o = mutual(&["ca", "rotate-intermediate", "--dir", ca.d()]).ok();
    warned(&o);
    mutual(&["ca", "rotate-root", "--dir", ca.d(), "--min-overlap", "1s"]).ok();
    let o = until_ok(
        &["ca", "rotate-root", "--dir", ca.d(), "--activate"],
        std::time::Duration::from_secs(20),
    );
    warned(&o);
    let list = mutual(&["ca", "issuers", "--dir", ca.d(), "--json"]).ok();
    let list: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
}

#[test]
fn rotate_intermediate_refuses_without_the_root_key_and_changes_nothing() {
    let ca = TestCa::new(&[]);
    let before = ca.snapshot();
    std::fs::rename(ca.dir.join("root.key"), ca.tmp.path().join("root.key")).unwrap();
    let o = mutual(&["ca", "rotate-intermediate", "--dir", ca.d()]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr.contains("is not here (moved offline?)"),
        "{}",
        o.text()
    );
    std::fs::rename(ca.tmp.path().join("root.key"), ca.dir.join("root.key")).unwrap();
    assert_eq!(ca.snapshot(), before);
    assert!(!ca.dir.join("issuers").exists());
    // A --validity too short to be of use is said so (it was "roll the root over first", with
    // a root years from its end).
    mutual(&[
        "ca",
        "rotate-intermediate",
        "--dir",
        ca.d(),
        "--validity",
        "1h",
    ])
    .fails_with("--validity must be more than a day");
    assert_eq!(ca.snapshot(), before);
}

/// curl GET with our root as the only trust anchor: (status, lowercase headers, body bytes).
fn curl(ca: &CaServe, path: &str, args: &[&str]) -> (u16, String, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let a = curl_in(tmp.path(), ca.root(), &format!("{}{path}", ca.url()), args);
    assert_eq!(a.curl_code, 0, "{}", a.stderr);
    (a.status, a.headers.to_ascii_lowercase(), a.body)
}

#[test]
fn a_running_ca_picks_up_a_rotation_and_serves_a_crl_per_issuer() {
    let ca = CaServe::with_new_ca("Life CA", &[], &[]);
    let work = tempfile::tempdir().unwrap();
    let enroll = |name: &str| -> PathBuf {
        let out = work.path().join(name);
        let t = ca.token(&[&format!("dns:{name}.test")], "1h", "client");
        ca.enroll(&t, &out).ok();
        out
    };
    let a = enroll("a");
    assert_eq!(issuer_cn(&a.join("cert.pem")), "Life CA Intermediate");

    // Rotated by another process while this one serves: the next request uses int-2.
    mutual(&["ca", "rotate-intermediate", "--dir", s(ca.d())]).ok();
    let b = enroll("b");
    assert_eq!(issuer_cn(&b.join("cert.pem")), "Life CA Intermediate 2");

    // A certificate from the retiring issuer renews (mTLS with its old chain) into int-2.
    let url = ca.url();
    let (cert_a, key_a) = (a.join("cert.pem"), a.join("key.pem"));
    renew_at(&url, &cert_a, &key_a, &[]).ok();
    assert_eq!(issuer_cn(&cert_a), "Life CA Intermediate 2");
    let root = s(&ca.root()).to_string();
    verify_chain(&root, &cert_a);

    // Revoke the first certificate (int-1's) and b (int-2's).
    let rows = ca.inventory();
    let old_a = rows
        .iter()
        .find(|r| r["issuer"] == "int-1" && r["sans"][0] == "dns:a.test")
        .unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let b_serial = rows.iter().find(|r| r["sans"][0] == "dns:b.test").unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_string();
    for serial in [&old_a, &b_serial] {
        mutual(&["cert", "revoke", "--dir", s(ca.d()), serial]).ok();
    }

    let int1 = ca.d().join("intermediate.pem");
    let int2 = ca.d().join("issuers/int-2.pem");
    let save = |path: &str, name: &str| -> (PathBuf, String) {
        let (code, headers, body) = curl(&ca, path, &[]);
        assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
        let p = work.path().join(name);
        std::fs::write(&p, body).unwrap();
        (p, headers)
    };
    let (c1, h1) = save("/v1/crl/int-1", "c1.crl");
    let (c2, h2) = save("/v1/crl/int-2", "c2.crl");
    let (cur, _) = save("/v1/crl", "cur.crl");
    assert_eq!(crl_serials(&c1, &int1), vec![old_a]);
    assert_eq!(crl_serials(&c2, &int2), vec![b_serial.clone()]);
    // /v1/crl is the default (current) issuer's.
    assert_eq!(crl_serials(&cur, &int2), vec![b_serial]);
    assert!(h1.contains("etag: \"crl-"), "{h1}");
    assert!(h2.contains("etag: \"crl-int-2-"), "{h2}");

    let (code, _, body) = curl(&ca, "/v1/crl/int-9", &[]);
    assert_eq!(code, 404);
    let p: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(p["reason"], "not_found", "{p}");

    // The trust bundle: PEM as before (even to `Accept: application/json`, which enroll clients
    // send), JSON with ?format=json, the version in a header of both.
    let (code, headers, pem) = curl(&ca, "/v1/roots", &[]);
    assert_eq!(code, 200);
    assert!(
        headers.contains("mutual-trust-bundle-version: 1"),
        "{headers}"
    );
    assert_eq!(pem, std::fs::read(ca.root()).unwrap());
    let (_, _, same) = curl(&ca, "/v1/roots", &["-H", "Accept: application/json"]);
    assert_eq!(same, pem);
    let (code, headers, body) = curl(&ca, "/v1/roots?format=json", &[]);
    assert_eq!(code, 200);
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["version"], 1);
    assert_eq!(j["roots_pem"].as_str().unwrap().as_bytes(), pem.as_slice());
    assert_eq!(j["sha256"].as_array().unwrap().len(), 1);
}

/// A lifetime the CA honours after it was set (a token's --ttl-cert) is cut at the end of the
/// intermediate when that has come nearer (here: rotated to a 25-hour one after the token was
/// minted), as renewal and EST always did: the enrollment answered bad_request "use a shorter
/// --ttl", a flag the client does not have. A CRL's nextUpdate likewise.
#[test]
fn a_token_outliving_a_newer_short_intermediate_enrolls_to_its_end() {
    let ca = CaServe::with_new_ca("Short CA", &[], &["--crl-next-update", "48h"]);
    let work = tempfile::tempdir().unwrap();
    let t = ca.token(&["dns:late.test"], "48h", "client");
    let o = mutual(&[
        "ca",
        "rotate-intermediate",
        "--dir",
        s(ca.d()),
        "--validity",
        "25h",
        "--json",
    ])
    .ok();
    let r: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(r["default"], "int-2", "{r}");
    let out = work.path().join("late");
    ca.enroll(&t, &out).ok();
    let cert = out.join("cert.pem");
    assert_eq!(issuer_cn(&cert), "Short CA Intermediate 2");
    verify_chain(s(&ca.root()), &cert);
    let list = mutual_pw(None, &["ca", "issuers", "--dir", s(ca.d()), "--json"]).ok();
    let list: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    let int2 = list.iter().find(|i| i["id"] == "int-2").unwrap();
    let row = ca
        .inventory()
        .into_iter()
        .find(|r| r["sans"][0] == "dns:late.test")
        .unwrap();
    // Ends within seconds before the intermediate, not 48 hours after issuance.
    let ends = row["not_after"].as_str().unwrap().to_string();
    let limit = int2["not_after"].as_str().unwrap().to_string();
    assert!(ends <= limit, "{ends} > {limit}");
    let life = row["not_after_unix"].as_i64().unwrap() - row["created_at_unix"].as_i64().unwrap();
    assert!((89_900..=90_000).contains(&life), "{life} s: {row}");
    // Its CRL too: nextUpdate at the intermediate's end, not 48 h on (/v1/crl/int-2 answered
    // 500: the CRL could not be signed).
    let (code, _, body) = curl(&ca, "/v1/crl/int-2", &[]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let crl = work.path().join("int-2.crl");
    std::fs::write(&crl, body).unwrap();
    let int2_pem = ca.d().join("issuers/int-2.pem");
    let next = openssl(&[
        "crl",
        "-in",
        s(&crl),
        "-inform",
        "DER",
        "-CAfile",
        s(&int2_pem),
        "-noout",
        "-nextupdate",
    ]);
    assert_eq!(next.code, 0, "{}", next.text());
    let int2_end = openssl(&["x509", "-in", s(&int2_pem), "-noout", "-enddate"]).stdout;
    let secs = |t: &str| {
        let o = std::process::Command::new("date")
            .args(["-u", "-d", t.split_once('=').unwrap().1.trim(), "+%s"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let (crl_next, int_end) = (secs(&next.stdout), secs(&int2_end));
    assert!(
        (int_end - 10..=int_end).contains(&crl_next),
        "CRL nextUpdate {crl_next}, intermediate ends {int_end}"
    );
    // The same token's lifetime given now is refused where it is given.
    mutual(&[
        "token",
        "create",
        "--dir",
        s(ca.d()),
        "--san",
        "dns:later.test",
        "--ttl-cert",
        "48h",
    ])
    .fails_with("--ttl-cert 2 d: a certificate cannot outlive the intermediate");
}

/// A certificate whose recorded names the CA has since stopped issuing (an address written as
/// a dNSName, as an older version issued it: made here by rewriting the inventory row) is
/// refused renewal with name_not_allowed and what to do. /v1/renew answered 500 internal.
#[test]
fn renewal_of_a_name_the_ca_no_longer_issues_says_what_to_do() {
    let ca = CaServe::with_new_ca("Legacy CA", &[], &[]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("svc");
    let t = ca.token(&["dns:svc.test"], "1h", "server");
    ca.enroll(&t, &out).ok();
    let sql = r#"UPDATE certificates SET sans='["dns:10.0.0.1"]' WHERE sans LIKE '%svc.test%'"#;
    pki_common::update_inventory_row(ca.d(), sql, &[]);
    let o = renew_at(
        &ca.url(),
        &out.join("cert.pem"),
        &out.join("key.pem"),
        &["--json"],
    );
    assert_ne!(o.code, 0, "{}", o.text());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["error"]["reason"], "name_not_allowed", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the certificate names dns:10.0.0.1, which this CA no longer issues"),
        "{v}"
    );
}

#[test]
fn renew_exec_runs_once_per_renewal_and_a_failure_keeps_the_new_certificate() {
    let ca = CaServe::with_new_ca("Hook CA", &[], &[]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("svc");
    let t = ca.token(&["dns:svc.test"], "1h", "server");
    ca.enroll(&t, &out).ok();
    let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
    let log = work.path().join("hook.log");
    let url = ca.url();
    let serial_now = || {
        openssl(&["x509", "-in", s(&cert), "-noout", "-serial"])
            .stdout
            .trim()
            .trim_start_matches("serial=")
            .to_ascii_lowercase()
    };
    let hook = format!(
        "echo \"$MUTUAL_SERIAL $MUTUAL_PREVIOUS_SERIAL $MUTUAL_CERT\" >> {}",
        s(&log)
    );
    let before = serial_now();
    let o = renew_at(&url, &cert, &key, &["--exec", &hook]).ok();
    assert!(o.stdout.contains("exec  exit status 0"), "{}", o.text());
    let after = serial_now();
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        vec![format!("{after} {before} {}", s(&cert))],
        "one run, with the new and old serials"
    );

    // A failing hook: exit 1 with its status, and the renewal stands.
    let o = renew_at(&url, &cert, &key, &["--exec", "exit 3"]);
    assert_eq!(o.code, 1, "{}", o.text());
    assert!(
        o.stderr
            .contains("--exec failed (exit status 3); the new certificate"),
        "{}",
        o.text()
    );
    let third = serial_now();
    assert_ne!(third, after);
    assert!(o.stderr.contains(&third), "{}", o.text());
    verify_chain(s(&ca.root()), &cert);
}

/// `mutual cert verify LEAF --roots ROOTS [EXTRA...]`: the webpki path builder (it tries every
/// candidate issuer, as rustls peers do).
fn webpki_verify(leaf: &Path, roots: &Path, extra: &[&str]) -> pki_common::Out {
    let mut a = vec!["cert", "verify", s(leaf), "--roots", s(roots)];
    a.extend_from_slice(extra);
    mutual(&a)
}

/// Runs `args` until it exits 0 (a condition that becomes true with time: the overlap, an
/// expiry), at most `limit`; the last output.
fn until_ok(args: &[&str], limit: std::time::Duration) -> pki_common::Out {
    let start = std::time::Instant::now();
    loop {
        let o = mutual(args);
        if o.code == 0 || start.elapsed() > limit {
            return o;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn root_rollover_publishes_then_activates_then_retires_and_refuses_unsafe_steps() {
    let ca = TestCa::new(&[]);
    let out = Path::new(ca.o()).to_path_buf();
    let root1 = ca.tmp.path().join("root1.pem");
    std::fs::copy(ca.root(), &root1).unwrap();
    ca.issue("early", &["--ttl", "20s"]).ok();
    let early_valid_at = mutual(&["cert", "list", "--dir", ca.d(), "--json"]).ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&early_valid_at.stdout).unwrap();
    let at = rows[0]["not_before"].as_str().unwrap().to_string();

    // Nothing to activate or retire yet.
    mutual(&["ca", "rotate-root", "--dir", ca.d(), "--activate"])
        .fails_with("no root rollover to activate (phase none)");
    mutual(&["ca", "retire-root", "--dir", ca.d()])
        .fails_with("the old root can be retired only after `mutual ca rotate-root --activate`");

    // Step 1: the bundle with both roots, version 2; nothing issued from the new root yet.
    let r = mutual(&[
        "ca",
        "rotate-root",
        "--dir",
        ca.d(),
        "--min-overlap",
        "3s",
        "--json",
    ])
    .ok();
    let r: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (r["new_root"].as_str(), r["bundle_version"].as_u64()),
        (Some("root-2"), Some(2))
    );
    let root2 = ca.dir.join("roots/root-2.pem");
    let bundle = std::fs::read_to_string(ca.dir.join("trust-bundle.pem")).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    mutual(&["ca", "rotate-root", "--dir", ca.d(), "--min-overlap", "3s"])
        .fails_with("a root rollover is under way (phase published)");
    // Issuing from the new root before the overlap is refused (the first try comes within
    // the 3 s: rotate-root just returned).
    let early = mutual(&["ca", "rotate-root", "--dir", ca.d(), "--activate"]);
    if early.code != 0 {
        assert_eq!(early.code, 2, "{}", early.text());
        assert!(
            early
                .stderr
                .contains("refused: the trust bundle with root-2 (version 2) was published")
                && early.stderr.contains("--min-overlap is 3 s"),
            "{}",
            early.text()
        );
        assert_eq!(
            issuer_cn(&{
                ca.issue("still-old", &["--ttl", "20s"]).ok();
                out.join("still-old.pem")
            }),
            "Test CA Intermediate"
        );
        // Step 2, once the overlap has passed.
        until_ok(
            &["ca", "rotate-root", "--dir", ca.d(), "--activate"],
            std::time::Duration::from_secs(30),
        )
        .ok();
    }
    ca.issue("during", &[]).ok();
    let during = out.join("during.pem");
    let chain = std::fs::read_to_string(&during).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        3,
        "leaf, int-2, int-2 by the old root"
    );
    // Parties with the old root only, the new root only, or both, all verify it.
    webpki_verify(&during, &root1, &[]).ok();
    webpki_verify(&during, &root2, &[]).ok();
    let both = ca.dir.join("trust-bundle.pem");
    let o = openssl(&[
        "verify",
        "-CAfile",
        s(&both),
        "-untrusted",
        s(&during),
        s(&during),
    ]);
    assert_eq!(o.code, 0, "{}", o.text());
    // A certificate from before the rollover verifies for a party that keeps only the new root,
    // through the old root cross-signed by the new one.
    let old_by_new = ca.dir.join("roots/root-1-by-root-2.pem");
    webpki_verify(
        &out.join("early.pem"),
        &root2,
        &["--intermediates", s(&old_by_new), "--at", &at],
    )
    .ok();

    // Step 3 is refused while an old-root certificate is valid, then done once it expired.
    mutual(&["ca", "retire-root", "--dir", ca.d()])
        .fails_with("int-1 (under the old root) signed certificates valid until");
    let done = until_ok(
        &["ca", "retire-root", "--dir", ca.d(), "--json"],
        std::time::Duration::from_secs(60),
    )
    .ok();
    let done: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(done["bundle_version"], 3);
    assert_eq!(done["dropped_issuers"], serde_json::json!(["int-1"]));
    assert_eq!(
        std::fs::read(ca.root()).unwrap(),
        std::fs::read(&root2).unwrap(),
        "root.pem is the new root"
    );
    let bundle = std::fs::read_to_string(ca.dir.join("trust-bundle.pem")).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 1);
    ca.issue("after", &[]).ok();
    let after = out.join("after.pem");
    assert_eq!(
        std::fs::read_to_string(&after)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2,
        "no cross certificate after the retirement"
    );
    webpki_verify(&after, &root2, &[]).ok();
    webpki_verify(&during, &root2, &[]).ok();
    let o = webpki_verify(&after, &root1, &[]);
    assert_eq!(o.code, 1, "{}", o.text());
    assert!(
        o.stdout.contains("invalid: unknown_ca") || o.text().contains("unknown_ca"),
        "{}",
        o.text()
    );
}

#[test]
fn a_broken_issuers_toml_keeps_a_running_ca_issuing_from_the_set_it_has() {
    let ca = CaServe::with_new_ca("Steady CA", &[], &[]);
    let work = tempfile::tempdir().unwrap();
    mutual(&["ca", "rotate-intermediate", "--dir", s(ca.d())]).ok();
    let enroll = |name: &str| -> PathBuf {
        let out = work.path().join(name);
        let t = ca.token(&[&format!("dns:{name}.test")], "1h", "client");
        ca.enroll(&t, &out).ok();
        out.join("cert.pem")
    };
    assert_eq!(issuer_cn(&enroll("a")), "Steady CA Intermediate 2");
    // A half-edited manifest naming a default that does not exist.
    let manifest = ca.d().join("issuers.toml");
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        good.replace("default = \"int-2\"", "default = \"int-9\""),
    )
    .unwrap();
    assert_eq!(issuer_cn(&enroll("b")), "Steady CA Intermediate 2");
    // The CLI says what is wrong with it.
    mutual(&["ca", "issuers", "--dir", s(ca.d())])
        .fails_with("the default issuer int-9 is not listed");
    // Fixed (back to int-1 as default): the running CA follows.
    std::fs::write(
        &manifest,
        good.replace("default = \"int-2\"", "default = \"int-1\"")
            .replace("state = \"retiring\"", "state = \"active\""),
    )
    .unwrap();
    assert_eq!(issuer_cn(&enroll("c")), "Steady CA Intermediate");
}

/// `ca serve` checks client certificates against the CA's trust bundle as it is now: after
/// `ca retire-root` (root.pem becomes the new root, chains stop carrying the old root's
/// signature) a certificate under the new root renews over mTLS with no restart.
#[test]
fn a_running_ca_trusts_the_new_root_after_retire_root_without_a_restart() {
    let ca = CaServe::with_new_ca("Roll CA", &[], &["--server-cert-ttl", "9s"]);
    let d = s(ca.d()).to_string();
    mutual(&["ca", "rotate-root", "--dir", &d, "--min-overlap", "1s"]).ok();
    until_ok(
        &["ca", "rotate-root", "--dir", &d, "--activate"],
        std::time::Duration::from_secs(30),
    )
    .ok();
    // Refused while the server's own first certificate (from int-1, under the old root) is
    // valid; it is replaced from the new intermediate at two-thirds of its 9 s.
    until_ok(
        &["ca", "retire-root", "--dir", &d],
        std::time::Duration::from_secs(60),
    )
    .ok();
    let work = tempfile::tempdir().unwrap();
    let out = s(work.path()).to_string();
    mutual(&[
        "cert", "issue", "late", "--client", "--dir", &d, "--out", &out,
    ])
    .ok();
    let cert = work.path().join("late.pem");
    let chain = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf and int-2 only: no path to the old root"
    );
    let before = serial_of_file(&cert);
    let url = ca.url();
    let root = s(&ca.root()).to_string();
    let o = renew_at(&url, &cert, &work.path().join("late.key"), &["--ca", &root]);
    assert_eq!(o.code, 0, "{}\nCA log:\n{}", o.text(), ca.log_text());
    assert_ne!(serial_of_file(&cert), before, "renewed");
    assert!(
        ca.log_text()
            .contains("trust bundle changed: client certificates now checked against it"),
        "{}",
        ca.log_text()
    );
}

fn serial_of_file(pem: &Path) -> String {
    openssl(&["x509", "-in", s(pem), "-noout", "-serial"])
        .stdout
        .trim()
        .to_string()
}
