//! `mutual cert list --identity | --dns | --ip | --san`: lookup by name through the inventory's
//! `certificate_sans` index, with the real binary, on SQLite and on PostgreSQL (its own database
//! on 127.0.0.1:5432; without a server and without `$MUTUAL_REQUIRE_POSTGRES` the PostgreSQL half
//! prints "skipped"). Inputs are normalised as issuance records them (DNS case, IPv6 spelling),
//! the match is exact, and bad input is exit 2 with the reason. `--json` keeps its shape. Also
//! `--key-type` and `cert inspect --serial` (the certificate the inventory keeps, migration 0010).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use mutual_store::testing::PgTestDb;
use pki_common::*;

fn list(ca: &TestCa, args: &[&str]) -> Vec<String> {
    let mut a = vec!["cert", "list", "--dir", ca.d(), "--json"];
    a.extend_from_slice(args);
    let o = mutual(&a).ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&o.stdout).unwrap();
    let mut names: Vec<String> = rows
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn lookups(ca: &TestCa) {
    ca.issue(
        "web",
        &[
            "--server",
            "--san",
            "uri:spiffe://example.org/ns/prod/sa/web",
            "--san",
            "dns:web.internal",
            "--san",
            "ip:fd00::10",
        ],
    )
    .ok();
    ca.issue(
        "web2",
        &["--san", "uri:spiffe://example.org/ns/prod/sa/web"],
    )
    .ok();
    ca.issue(
        "api",
        &[
            "--server",
            "--san",
            "dns:api.internal",
            "--san",
            "ip:10.1.2.3",
        ],
    )
    .ok();
    let web = "spiffe://example.org/ns/prod/sa/web";
    assert_eq!(list(ca, &["--identity", web]), ["web", "web2"]);
    assert_eq!(list(ca, &["--dns", "WEB.Internal"]), ["web"]);
    assert_eq!(list(ca, &["--ip", "fd00:0:0:0:0:0:0:10"]), ["web"]);
    assert_eq!(list(ca, &["--ip", "10.1.2.3"]), ["api"]);
    assert_eq!(list(ca, &["--san", "dns:api.internal"]), ["api"]);
    assert_eq!(list(ca, &["--san", &format!("uri:{web}")]), ["web", "web2"]);
    // Exact: a prefix of the path, another name or the SPIFFE ID's parent find nothing.
    assert!(list(ca, &["--identity", "spiffe://example.org/ns/prod"]).is_empty());
    assert!(list(ca, &["--dns", "internal"]).is_empty());
    // With the status filter: revoke web2, then only web is valid for that identity.
    let serial = ca.serial("web2");
    mutual(&["cert", "revoke", &serial, "--dir", ca.d()]).ok();
    assert_eq!(list(ca, &["--identity", web, "--status", "valid"]), ["web"]);
    assert_eq!(
        list(ca, &["--identity", web, "--status", "revoked"]),
        ["web2"]
    );
    // The table form filters too.
    let t = mutual(&["cert", "list", "--dir", ca.d(), "--dns", "api.internal"]).ok();
    assert!(
        t.stdout.contains("api") && !t.stdout.contains("web"),
        "{}",
        t.stdout
    );
    let none = mutual(&["cert", "list", "--dir", ca.d(), "--dns", "nothing.internal"]).ok();
    assert_eq!(none.stdout.trim(), "no certificates");
    let none = mutual(&[
        "cert",
        "list",
        "--dir",
        ca.d(),
        "--json",
        "--dns",
        "x.internal",
    ])
    .ok();
    assert_eq!(none.stdout, "[]\n");
}

/// `cert list --key-type` and the `key_type` field, read from each certificate's key at
/// issuance; `cert inspect --serial` reads the certificate the inventory kept. Runs after
/// [`lookups`], whose certificates are ECDSA P-256 (the default).
fn key_types(ca: &TestCa) {
    for (name, kt) in [
        ("ec", "ecdsa-p256"),
        ("ec384", "ecdsa-p384"),
        ("rsa", "rsa-3072"),
        ("ed", "ed25519"),
    ] {
        ca.issue(
            name,
            &["--san", &format!("dns:{name}.internal"), "--key-type", kt],
        )
        .ok();
    }
    for (filter, want) in [
        ("rsa-3072", vec!["rsa"]),
        ("ECDSA-P256", vec!["api", "ec", "web", "web2"]),
        ("ecdsa-p384", vec!["ec384"]),
        ("ed25519", vec!["ed"]),
        ("rsa-2048", vec![]),
        ("unknown", vec![]),
    ] {
        assert_eq!(list(ca, &["--key-type", filter]), want, "{filter}");
    }
    for r in ca.inventory() {
        let want = match r["name"].as_str().unwrap() {
            "rsa" => "rsa-3072",
            "ec384" => "ecdsa-p384",
            "ed" => "ed25519",
            _ => "ecdsa-p256",
        };
        assert_eq!(r["key_type"], want, "{r}");
    }
    // The stored certificate is the issued leaf: openssl writes the same PEM from the file.
    let serial = ca.serial("rsa");
    let pem = mutual(&[
        "cert",
        "inspect",
        "--serial",
        &serial,
        "--pem",
        "--dir",
        ca.d(),
    ])
    .ok()
    .stdout;
    let issued = ca.out.join("rsa.pem");
    assert_eq!(pem, openssl_ok(&["x509", "-in", s(&issued)]));
    // --pem prints the stored certificate; beside a FILE it would be ignored: refused.
    mutual(&["cert", "inspect", s(&issued), "--pem"])
        .fails_with("the argument '[FILE]' cannot be used with '--pem'");
    let o = mutual(&[
        "cert",
        "inspect",
        "--serial",
        &serial,
        "--json",
        "--dir",
        ca.d(),
    ])
    .ok();
    let info: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(info[0]["key_type"], "RSA");
    assert_eq!(info[0]["key_bits"], 3072);
    assert_eq!(info[0]["sans"], serde_json::json!(["dns:rsa.internal"]));
    mutual(&["cert", "inspect", "--serial", "abcd", "--dir", ca.d()])
        .fails_with("no certificate with serial abcd");
}

#[test]
fn lookup_by_name_on_sqlite() {
    let ca = TestCa::new(&[]);
    lookups(&ca);
    key_types(&ca);
    // A row from before the inventory kept certificates: key type unknown, nothing to inspect.
    let web = ca.serial("web");
    forget_certificate(&ca.dir, &web);
    assert_eq!(list(&ca, &["--key-type", "unknown"]), ["web"]);
    let row = ca
        .inventory()
        .into_iter()
        .find(|r| r["name"] == "web")
        .unwrap();
    assert!(row["key_type"].is_null(), "{row}");
    mutual(&["cert", "inspect", "--serial", &web, "--dir", ca.d()])
        .fails_with("the inventory has no copy of certificate");
    mutual(&["cert", "list", "--dir", ca.d(), "--key-type", "dsa"])
        .fails_with("unknown key type \"dsa\"");
    mutual(&["cert", "inspect", "--dir", ca.d()]).fails_with("--serial");
    // A dNSName holding an address (or a '_') is no longer issued; one an older version
    // issued (made here by rewriting the SAN index, as its row would read) is still found.
    ca.issue("legacy", &["--san", "dns:legacy.example"]).ok();
    let serial = ca.serial("legacy");
    let sql = "UPDATE certificate_sans SET value='10.0.0.1' WHERE serial=? AND kind='dns'";
    update_inventory_row(&ca.dir, sql, &[&serial]);
    for flag in [&["--dns", "10.0.0.1"][..], &["--san", "dns:10.0.0.1"][..]] {
        assert_eq!(list(&ca, flag), ["legacy"], "{flag:?}");
    }
    assert!(list(&ca, &["--dns", "a_b.legacy.example"]).is_empty());
    // Likewise an ip:0.0.0.0 (or a multicast address) an older version issued.
    ca.issue("anyaddr", &["--san", "ip:10.9.9.9"]).ok();
    let serial = ca.serial("anyaddr");
    let sql = "UPDATE certificate_sans SET value='0.0.0.0' WHERE serial=? AND kind='ip'";
    update_inventory_row(&ca.dir, sql, &[&serial]);
    for flag in [&["--ip", "0.0.0.0"][..], &["--san", "ip:0.0.0.0"][..]] {
        assert_eq!(list(&ca, flag), ["anyaddr"], "{flag:?}");
    }
    assert!(list(&ca, &["--ip", "239.1.2.3"]).is_empty());
    mutual(&["cert", "list", "--dir", ca.d(), "--dns", "a b"]).fails_with("invalid SAN");
    // A FILE with --serial (clap's group) or with --dir: one of them would go unused.
    let pem = std::path::Path::new(ca.o()).join("web.pem");
    mutual(&["cert", "inspect", s(&pem), "--serial", &web])
        .fails_with("the argument '[FILE]' cannot be used with '--serial <SERIAL>'");
    mutual(&["cert", "inspect", s(&pem), "--dir", ca.d()])
        .fails_with("--dir is where --serial is looked up; a FILE is inspected as it is");
    // Bad input: exit 2 with the reason, nothing read.
    mutual(&[
        "cert",
        "list",
        "--dir",
        ca.d(),
        "--identity",
        "web.internal",
    ])
    .fails_with("is not a SPIFFE ID");
    mutual(&["cert", "list", "--dir", ca.d(), "--ip", "10.0.0"])
        .fails_with("not an IPv4 or IPv6 address");
    mutual(&["cert", "list", "--dir", ca.d(), "--san", "web.internal"]).fails_with("TYPE:VALUE");
    mutual(&[
        "cert",
        "list",
        "--dir",
        ca.d(),
        "--dns",
        "a.internal",
        "--ip",
        "10.0.0.1",
    ])
    .fails_with("cannot be used with");
}

#[tokio::test]
async fn lookup_by_name_on_postgres() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let url = pg.url.clone();
    let r = tokio::task::spawn_blocking(move || {
        let ca = TestCa::new(&["--store", &url]);
        lookups(&ca);
        key_types(&ca);
    })
    .await;
    pg.drop_db().await;
    if let Err(e) = r {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The streamed `--json` array has the documented shape: every key of docs/json.md's inventory
/// row, RFC 3339 instants with `_unix` companions, and `revoked_by` only when set.
#[test]
fn list_json_shape() {
    let ca = TestCa::new(&[]);
    ca.issue("one", &["--san", "dns:one.internal"]).ok();
    ca.issue("two", &[]).ok();
    let out = mutual(&["cert", "list", "--dir", ca.d(), "--json"])
        .ok()
        .stdout;
    assert!(out.starts_with("[\n  {\n    \"created_at\": \""), "{out}");
    assert!(out.ends_with("\n  }\n]\n"), "{out}");
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 2);
    let keys: Vec<&str> = rows[0].keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "created_at",
            "created_at_unix",
            "issuer",
            "key_type",
            "name",
            "not_after",
            "not_after_unix",
            "not_before",
            "not_before_unix",
            "reason",
            "requested_by",
            "revoked_at",
            "revoked_at_unix",
            "sans",
            "serial",
            "sha256",
            "status",
            "subject",
            "usage"
        ]
    );
    let one = rows.iter().find(|r| r["name"] == "one").unwrap();
    assert_eq!(one["sans"], serde_json::json!(["dns:one.internal"]));
    assert_eq!(one["status"], "valid");
    assert!(one["not_after"].as_str().unwrap().ends_with('Z'));
    assert!(one["not_after_unix"].is_i64());
    assert!(one["revoked_at"].is_null());
}
