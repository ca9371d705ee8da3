//! What the CA refuses, and that a refusal or a failure leaves no trace: name rules (SAN syntax,
//! SPIFFE trust domain, permitted DNS), lifetimes, unwritable output, and concurrent issuers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::collections::HashSet;

use pki_common::*;

fn out_is_empty(ca: &TestCa) {
    let left: Vec<_> = std::fs::read_dir(&ca.out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn name_rules_are_enforced_and_refusals_change_nothing() {
    let ca = TestCa::new(&[
        "--permitted-dns",
        ".internal.example",
        "--trust-domain",
        "example.org",
    ]);
    // Allowed: inside the constraints; openssl agrees (name constraints are in the intermediate).
    ca.issue(
        "web",
        &[
            "--server",
            "--san",
            "dns:web.internal.example",
            "--san",
            "uri:spiffe://example.org/ns/prod/web",
        ],
    )
    .ok();
    assert!(ca
        .openssl_verify(&ca.out.join("web.pem"), "sslserver")
        .stdout
        .contains(": OK"));
    let int_text = openssl(&["x509", "-in", &ca.intermediate(), "-noout", "-text"])
        .ok()
        .stdout;
    assert!(
        int_text.contains("Permitted:") && int_text.contains("DNS:.internal.example"),
        "{int_text}"
    );
    std::fs::remove_file(ca.out.join("web.pem")).unwrap();
    std::fs::remove_file(ca.out.join("web.key")).unwrap();
    let inv = ca.inventory();
    let before = ca.snapshot();

    let cases: &[(&[&str], &str)] = &[
        (&["--san", "dirname:CN=bob"], "unknown SAN type \"dirname\""),
        (&["--san", "web.internal.example"], "expected TYPE:VALUE"),
        (&["--san", "ip:10.0.0.300"], "not an IPv4 or IPv6 address"),
        (
            &["--server", "--san", "dns:web.other.example"],
            "is not permitted by this CA's name constraints",
        ),
        (
            &["--server", "--san", "dns:internal.example"],
            "is not permitted",
        ),
        (
            &["--san", "uri:spiffe://other.org/web"],
            "outside this CA's trust domain",
        ),
        (
            &["--san", "uri:https://web.internal.example/"],
            "outside this CA's trust domain",
        ),
        (
            &["--san", "uri:spiffe://Example.org/web"],
            "invalid SPIFFE ID",
        ),
        (
            &["--san", "uri:spiffe://example.org/a/../b"],
            "invalid SPIFFE ID",
        ),
        (&["--san", "uri:spiffe://example.org/a?x=1"], "query"),
        // The trust domain's own ID belongs to the intermediate (X509-SVID 3.1).
        (
            &["--san", "uri:spiffe://example.org"],
            "names the trust domain itself, which only a CA certificate carries",
        ),
        (
            &[
                "--san",
                "uri:spiffe://example.org/a",
                "--san",
                "uri:spiffe://example.org/b",
            ],
            "only one SPIFFE ID",
        ),
        (&["--server"], "needs at least one dns: or ip: SAN"),
        // Names no server, and is outside the trust domain: the name rule speaks first (it is
        // checked before the password).
        (
            &["--both", "--san", "uri:https://example.org/x"],
            "outside this CA's trust domain",
        ),
        (
            &["--ttl", "3650d"],
            "--ttl 10 y: a certificate cannot outlive the intermediate",
        ),
        // With --issuer the selected intermediate decides, at issuance.
        (
            &["--ttl", "3650d", "--issuer", "int-1"],
            "after the intermediate expires",
        ),
        (&["--ttl", "24"], "missing unit"),
        (&["--key-type", "dsa"], "unknown key type"),
        (&["--server", "--client"], "cannot be used with"),
    ];
    for (args, needle) in cases {
        ca.issue("bad", args).fails_with(needle);
        out_is_empty(&ca);
    }
    // A lifetime the intermediate cannot cover, or a name the CA may not issue, is refused
    // before the password is asked for.
    for (flag, value, why) in [
        (
            "--ttl",
            "3650d",
            "--ttl 10 y: a certificate cannot outlive the intermediate",
        ),
        (
            "--san",
            "dns:web.other.example",
            "is not permitted by this CA's name constraints",
        ),
        (
            "--san",
            "uri:spiffe://other.org/web",
            "outside this CA's trust domain",
        ),
    ] {
        mutual_pw(
            None,
            &[
                "cert",
                "issue",
                "--dir",
                ca.d(),
                "bad",
                "--out",
                ca.o(),
                flag,
                value,
            ],
        )
        .fails_with(why);
    }
    // A hostname-like NAME outside the constraints is refused too (OpenSSL checks such CNs).
    ca.issue("db.other.example", &[])
        .fails_with("not permitted");
    assert_eq!(ca.inventory(), inv);
    assert_eq!(ca.snapshot(), before);
}

#[test]
fn unwritable_output_leaves_no_key_and_no_row() {
    let ca = TestCa::new(&[]);
    // --out under a regular file (cannot be a directory).
    let file = ca.tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let sub = file.join("sub");
    mutual(&["cert", "issue", "x", "--dir", ca.d(), "--out", s(&sub)])
        .fails_with("not a directory");
    // (A missing --out is created: tests/issue_features.rs.)
    // The final rename fails (x.pem is a directory) after the key was staged: the key must not
    // be left behind, nor the inventory row.
    std::fs::create_dir(ca.out.join("x.pem")).unwrap();
    ca.issue("x", &[]).fails_with("already exists");
    ca.issue("x", &["--force"]).fails_with("x.pem");
    let left: Vec<String> = std::fs::read_dir(&ca.out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["x.pem".to_string()], "left behind: {left:?}");
    assert!(ca.inventory().is_empty());
    // Existing outputs are not overwritten without --force.
    std::fs::remove_dir(ca.out.join("x.pem")).unwrap();
    ca.issue("y", &[]).ok();
    let key = std::fs::read(ca.out.join("y.key")).unwrap();
    ca.issue("y", &[]).fails_with("already exists");
    assert_eq!(std::fs::read(ca.out.join("y.key")).unwrap(), key);
    assert_eq!(ca.inventory().len(), 1);
    ca.issue("y", &["--force"]).ok();
    assert_ne!(std::fs::read(ca.out.join("y.key")).unwrap(), key);
    assert_eq!(ca.inventory().len(), 2);
}

#[test]
fn parallel_issuers_never_reuse_a_serial() {
    let ca = TestCa::new(&[]);
    let children: Vec<_> = (0..8)
        .map(|i| {
            let name = format!("p{i}");
            mutual_cmd(
                Some(PW),
                &[
                    "cert",
                    "issue",
                    &name,
                    "--dir",
                    ca.d(),
                    "--out",
                    ca.o(),
                    "--json",
                ],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut serials = HashSet::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        serials.insert(v["serial"].as_str().unwrap().to_string());
    }
    assert_eq!(serials.len(), 8);
    let inv = ca.inventory();
    assert_eq!(inv.len(), 8);
    let listed: HashSet<String> = inv
        .iter()
        .map(|r| r["serial"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, serials);
    for i in 0..8 {
        let cert = ca.out.join(format!("p{i}.pem"));
        assert!(ca
            .openssl_verify(&cert, "sslclient")
            .stdout
            .contains(": OK"));
    }
    // The database is intact.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("command -v sqlite3")
        .output()
        .unwrap();
    if o.status.success() {
        let check = std::process::Command::new("sqlite3")
            .arg(ca.dir.join("inventory.db"))
            .arg("PRAGMA integrity_check;")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok");
    }
}
