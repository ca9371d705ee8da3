//! The issuance transaction and the online CA past one process (issues 12 and 15): two
//! `mutual ca serve` replicas on one inventory (SQLite, and PostgreSQL when one is reachable)
//! serve the same stored CRL with `ETag`/`Last-Modified` and 304s; a revocation through one
//! replica is in its `/v1/crl` at once and in the other's within `--crl-refresh`; a revocation
//! with `mutual cert revoke` (no replica involved) reaches both; `/metrics` counts issuances by
//! method and result and token failures by reason. Real curl, openssl and the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mutual_store::testing::PgTestDb;
use mutual_test::eventually;
use pki_common::*;

/// One `mutual ca serve` on the CA of `ca`.
struct Replica {
    port: u16,
    _srv: CaServe,
}

impl Replica {
    fn start(ca: &TestCa, name: &str) -> Replica {
        let log = ca.tmp.path().join(format!("{name}.log"));
        let extra = ["--crl-refresh", "1s", "--rate-limit", "off"];
        let srv = CaServe::start_new(&ca.dir, log, &extra);
        Replica {
            port: srv.port,
            _srv: srv,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

fn curl(ca: &TestCa, url: &str, args: &[&str]) -> Answer {
    curl_in(ca.tmp.path(), ca.root(), url, args)
}

fn post(ca: &TestCa, url: &str, body: &serde_json::Value, args: &[&str]) -> Answer {
    let a = json_post_args(ca.tmp.path(), body, args);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    curl(ca, url, &a)
}

/// A key and a CSR for `name` made by openssl: (key path, CSR PEM).
fn csr(ca: &TestCa, name: &str) -> (PathBuf, String) {
    let key = ca.tmp.path().join(format!("{name}.key"));
    let csr = ca.tmp.path().join(format!("{name}.csr"));
    let pem = openssl_csr(&key, &csr, "/CN=ignored", &format!("DNS:{name}"));
    (key, pem)
}

/// Enrolls `name` through replica `r`: (chain path, key path, serial).
fn enroll(ca: &TestCa, r: &Replica, name: &str) -> (PathBuf, PathBuf, String) {
    let (key, csr) = csr(ca, name);
    let a = post(
        ca,
        &r.url("/v1/sign"),
        &serde_json::json!({"csr": csr, "token": ca.token(name)}),
        &[],
    );
    assert_eq!(a.status, 201, "{}", a.text());
    let chain = ca.tmp.path().join(format!("{name}.pem"));
    std::fs::write(&chain, a.json()["certificate_chain"].as_str().unwrap()).unwrap();
    let serial = a.json()["serial"].as_str().unwrap().to_string();
    (chain, key, serial)
}

/// The serials listed by the DER CRL in `a`'s body, lowercase openssl text.
fn crl_text(a: &Answer) -> String {
    let o = mutual_test::output_with_stdin(
        Command::new("openssl").args(["crl", "-inform", "DER", "-noout", "-text"]),
        &a.body,
    );
    assert!(o.status.success(), "{}", mutual_test::output_text(&o));
    String::from_utf8_lossy(&o.stdout).to_ascii_lowercase()
}

/// Waits until replica `r` serves a CRL listing `serial`; returns that answer.
fn wait_crl_lists(ca: &TestCa, r: &Replica, serial: &str, within: Duration) -> Answer {
    eventually(within, || {
        let a = curl(ca, &r.url("/v1/crl"), &[]);
        (a.status == 200 && crl_text(&a).contains(serial)).then_some(a)
    })
    .unwrap_or_else(|| panic!("replica on port {} never listed {serial}", r.port))
}

/// The whole scenario on the CA in `ca` (whatever its store).
fn two_replicas(ca: &TestCa) {
    let a = Replica::start(ca, "a");
    let b = Replica::start(ca, "b");

    // Both serve the stored CRL: the same one, same ETag, with Last-Modified; a client that
    // has it gets 304 by ETag or by date.
    let ca_ = curl(ca, &a.url("/v1/crl"), &[]);
    let cb = curl(ca, &b.url("/v1/crl"), &[]);
    assert_eq!(ca_.status, 200);
    assert_eq!(
        ca_.header("content-type").as_deref(),
        Some("application/pkix-crl")
    );
    let etag = ca_.header("etag").expect("an ETag");
    assert_eq!(cb.header("etag").as_deref(), Some(etag.as_str()));
    assert_eq!(ca_.body, cb.body);
    let lm = ca_.header("last-modified").expect("a Last-Modified");
    assert!(lm.ends_with(" GMT"), "{lm}");
    let inm = format!("if-none-match: {etag}");
    assert_eq!(curl(ca, &b.url("/v1/crl"), &["-H", &inm]).status, 304);
    let ims = format!("if-modified-since: {lm}");
    assert_eq!(curl(ca, &a.url("/v1/crl"), &["-H", &ims]).status, 304);
    let old = "if-none-match: \"crl-0\"";
    assert_eq!(curl(ca, &a.url("/v1/crl"), &["-H", old]).status, 200);

    // A revocation through replica A: in A's CRL at once, in B's within --crl-refresh.
    let (chain, key, serial) = enroll(ca, &a, "one.internal");
    let r = post(
        ca,
        &a.url("/v1/revoke"),
        &serde_json::json!({"serial": serial, "reason": "keyCompromise"}),
        &["--cert", s(&chain), "--key", s(&key)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let now_a = curl(ca, &a.url("/v1/crl"), &[]);
    assert!(
        crl_text(&now_a).contains(&serial),
        "replica A's CRL right after the revocation: {}",
        crl_text(&now_a)
    );
    assert_ne!(now_a.header("etag").as_deref(), Some(etag.as_str()));
    let on_b = wait_crl_lists(ca, &b, &serial, Duration::from_secs(20));
    assert_eq!(on_b.header("etag"), now_a.header("etag"));

    // A revocation with the CLI, no replica involved: both pick it up from the store.
    let (_, _, serial2) = enroll(ca, &b, "two.internal");
    mutual(&["cert", "revoke", &serial2, "--dir", ca.d()]).ok();
    let la = wait_crl_lists(ca, &a, &serial2, Duration::from_secs(20));
    let lb = wait_crl_lists(ca, &b, &serial2, Duration::from_secs(20));
    assert!(crl_text(&la).contains(&serial));
    // One CRL for both (signed once, stored, served by each), eventually the same number.
    let same = eventually(Duration::from_secs(20), || {
        let ea = curl(ca, &a.url("/v1/crl"), &[]).header("etag");
        let eb = curl(ca, &b.url("/v1/crl"), &[]).header("etag");
        (ea.is_some() && ea == eb).then_some(())
    });
    assert!(
        same.is_some(),
        "{:?} {:?}",
        la.header("etag"),
        lb.header("etag")
    );
}

#[test]
fn two_replicas_on_sqlite_serve_one_stored_crl() {
    let ca = TestCa::new(&[]);
    two_replicas(&ca);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_postgres_serve_one_stored_crl() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let url = pg.url.clone();
    tokio::task::spawn_blocking(move || {
        let ca = TestCa::new(&["--store", &url]);
        two_replicas(&ca);
    })
    .await
    .unwrap();
    pg.drop_db().await;
}

/// The value of the sample `name{labels}` in a Prometheus text exposition (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_count_issuances_and_token_failures() {
    let ca = TestCa::new(&[]);
    let r = Replica::start(&ca, "m");
    enroll(&ca, &r, "m.internal");
    // A token that is not one, and a token spent twice.
    let (_, csr1) = csr(&ca, "bad.internal");
    let bad = post(
        &ca,
        &r.url("/v1/sign"),
        &serde_json::json!({"csr": csr1, "token": "not.a.token"}),
        &[],
    );
    assert_eq!(bad.status, 401, "{}", bad.text());
    assert_eq!(bad.json()["reason"], "token_invalid");
    let t = ca.token("twice.internal");
    let (_, csr2) = csr(&ca, "twice.internal");
    let body = serde_json::json!({"csr": csr2, "token": t});
    assert_eq!(post(&ca, &r.url("/v1/sign"), &body, &[]).status, 201);
    let replay = post(&ca, &r.url("/v1/sign"), &body, &[]);
    assert_eq!(replay.json()["reason"], "token_used", "{}", replay.text());

    let m = curl(&ca, &r.url("/metrics"), &[]);
    assert_eq!(m.status, 200);
    let text = m.text();
    let v = |series: &str| sample(&text, series);
    assert_eq!(
        v(r#"mutual_ca_issued_total{method="sign",result="ok"}"#),
        2.0,
        "{text}"
    );
    assert_eq!(
        v(r#"mutual_ca_issued_total{method="sign",result="token_invalid"}"#),
        1.0
    );
    assert_eq!(
        v(r#"mutual_ca_issued_total{method="sign",result="token_used"}"#),
        1.0
    );
    assert_eq!(
        v(r#"mutual_ca_issued_total{method="server",result="ok"}"#),
        1.0
    );
    assert_eq!(
        v(r#"mutual_ca_token_failures_total{reason="token_invalid"}"#),
        1.0
    );
    assert_eq!(
        v(r#"mutual_ca_token_failures_total{reason="token_used"}"#),
        1.0
    );
    assert_eq!(
        v(r#"mutual_ca_request_duration_seconds_count{endpoint="/v1/sign"}"#),
        4.0
    );
    // No token, serial or identity in any label.
    assert!(!text.contains(&t) && !text.contains("twice.internal"));
}

/// Issuances by `mutual cert issue` and `--batch` happen in their own process; the CA server
/// counts them from the inventory (`requested_by` cli:/batch:) into
/// `mutual_ca_inventory_issued_certificates{method}`, beside its own `mutual_ca_issued_total`.
#[test]
fn metrics_count_cli_and_batch_issuances_from_the_inventory() {
    let ca = TestCa::new(&[]);
    ca.issue("one", &["--server", "--san", "dns:one.internal"])
        .ok();
    ca.issue("two", &["--client", "--san", "dns:two.internal"])
        .ok();
    let csv = ca.tmp.path().join("rows.csv");
    std::fs::write(
        &csv,
        "name,san,usage\nb1,dns:b1.internal,server\nb2,dns:b2.internal,server\nb3,dns:b3.internal,client\n",
    )
    .unwrap();
    let batch_out = ca.tmp.path().join("batch");
    mutual(&[
        "cert",
        "issue",
        "--batch",
        s(&csv),
        "--dir",
        ca.d(),
        "--out",
        s(&batch_out),
    ])
    .ok();
    let r = Replica::start(&ca, "m");
    let m = curl(&ca, &r.url("/metrics"), &[]);
    assert_eq!(m.status, 200);
    let text = m.text();
    let v = |series: &str| sample(&text, series);
    assert_eq!(
        v(r#"mutual_ca_inventory_issued_certificates{method="cli"}"#),
        2.0,
        "{text}"
    );
    assert_eq!(
        v(r#"mutual_ca_inventory_issued_certificates{method="batch"}"#),
        3.0,
        "{text}"
    );
}

/// `cert issue` through the library transaction: the files and the row, or neither.
#[test]
fn cert_issue_writes_files_and_row_or_neither() {
    let ca = TestCa::new(&[]);
    ca.issue("web", &["--server", "--san", "dns:web.internal"])
        .ok();
    let out = Path::new(ca.o());
    assert!(out.join("web.pem").exists() && out.join("web.key").exists());
    assert_eq!(ca.inventory().len(), 1);
    // A refused request (a name outside the server rules) leaves no file and no row.
    ca.issue("bad", &["--server"]).fails_with("SAN");
    assert!(!out.join("bad.pem").exists() && !out.join("bad.key").exists());
    assert_eq!(ca.inventory().len(), 1);
}
