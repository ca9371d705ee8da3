//! The CA on PostgreSQL through the real binary: `ca init --store postgres://...`, then issue,
//! list, revoke and CRL against the recorded store; `ca migrate --to` from an SQLite CA with
//! rows and revocations. Each test gets its own database on 127.0.0.1:5432 (dropped at the end);
//! without a server and without `$MUTUAL_REQUIRE_POSTGRES` the tests print "skipped" and pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use mutual_store::testing::PgTestDb;
use mutual_store::{Inventory, OpenOptions, Store, StoreUrl};
use pki_common::*;

async fn pg_store(url: &str) -> Store {
    Store::open(&url.parse::<StoreUrl>().unwrap(), &OpenOptions::default())
        .await
        .unwrap()
}

fn revoked_serials_in_crl(crl: &std::path::Path) -> String {
    openssl(&["crl", "-in", s(crl), "-noout", "-text"])
        .ok()
        .stdout
        .to_ascii_lowercase()
}

fn crl_number(crl: &std::path::Path) -> String {
    openssl(&["crl", "-in", s(crl), "-noout", "-crlnumber"])
        .ok()
        .stdout
        .trim()
        .to_string()
}

#[tokio::test]
async fn init_issue_list_revoke_crl_on_postgres() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let ca = TestCa::new(&["--store", &pg.url]);
    let tmp = ca.tmp.path();
    let cfg = std::fs::read_to_string(ca.dir.join("mutual-ca.toml")).unwrap();
    assert!(
        cfg.contains(&format!("store = \"{}\"", pg.url)),
        "mutual-ca.toml: {cfg}"
    );
    assert!(
        !ca.dir.join("inventory.db").exists(),
        "no SQLite file with a PostgreSQL store"
    );

    for name in ["web", "api"] {
        mutual(&[
            "cert",
            "issue",
            name,
            "--dir",
            ca.d(),
            "--out",
            ca.o(),
            "--san",
            &format!("dns:{name}.internal"),
        ])
        .ok();
    }
    let list = mutual(&["cert", "list", "--dir", ca.d(), "--json"]).ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows.len(), 2, "{}", list.stdout);
    let web = rows.iter().find(|r| r["name"] == "web").unwrap();
    let serial = web["serial"].as_str().unwrap().to_string();

    mutual(&[
        "cert",
        "revoke",
        &serial,
        "--dir",
        ca.d(),
        "--reason",
        "key-compromise",
    ])
    .ok();
    let crl = tmp.join("crl.pem");
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl)]).ok();
    let text = revoked_serials_in_crl(&crl);
    assert!(text.contains(&serial), "CRL lacks {serial}: {text}");

    // The rows are in PostgreSQL, not in some file.
    let st = pg_store(&pg.url).await;
    let counts = st.table_counts().await.unwrap();
    assert_eq!((counts.certificates, counts.revoked), (2, 1));
    assert_eq!(counts.counters, 1, "the CRL number lives in the database");
    st.close().await;

    // A second CA onto the same (now non-empty) database is refused before any file is written.
    let dir2 = tmp.join("ca2");
    mutual(&["ca", "init", "--dir", s(&dir2), "--store", &pg.url]).fails_with("is not empty");
    assert!(
        !dir2.join("mutual-ca.toml").exists() && !dir2.join("root.pem").exists(),
        "a refused init wrote files"
    );
    pg.drop_db().await;
}

#[test]
fn init_refuses_a_password_in_the_store_url() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let o = mutual(&[
        "ca",
        "init",
        "--dir",
        s(&dir),
        "--store",
        "postgres://mutual:s3cret-db-pw@127.0.0.1:5432/ca",
    ])
    .fails_with("must not contain a password");
    assert!(!o.stderr.contains("s3cret-db-pw"), "{}", o.stderr);
    assert!(!dir.exists(), "nothing may be created");
}

#[tokio::test]
async fn migrate_an_sqlite_ca_to_postgres() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let ca = TestCa::new(&[]);
    for name in ["a", "b", "c"] {
        ca.issue(name, &["--san", &format!("dns:{name}.internal")])
            .ok();
    }
    let before = ca.inventory();
    let revoked = before[0]["serial"].as_str().unwrap().to_string();
    mutual(&["cert", "revoke", &revoked, "--dir", ca.d()]).ok();
    let crl1 = ca.tmp.path().join("crl1.pem");
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl1)]).ok();
    let db_file = ca.dir.join("inventory.db");
    let db_bytes = std::fs::read(&db_file).unwrap();

    let o = mutual(&["ca", "migrate", "--dir", ca.d(), "--to", &pg.url, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["target"]["certificates"], 3);
    assert_eq!(v["target"]["revoked"], 1);
    assert_eq!(v["target"]["counters"], 1);
    assert_eq!(v["source"], v["target"]);
    let cfg = std::fs::read_to_string(ca.dir.join("mutual-ca.toml")).unwrap();
    assert!(cfg.contains(&format!("store = \"{}\"", pg.url)), "{cfg}");
    assert!(cfg.contains("name = \"Test CA\""), "other keys kept: {cfg}");

    // `cert list` now reads PostgreSQL and sees the same rows and statuses.
    let after = ca.inventory();
    let key = |rows: &[serde_json::Value]| {
        let mut v: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r["serial"].as_str().unwrap().to_string(),
                    r["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut want = key(&before);
    for (serial, status) in &mut want {
        if *serial == revoked {
            *status = "revoked".into();
        }
    }
    assert_eq!(key(&after), want);
    // Each certificate and its key type came along (migration 0010's columns).
    assert!(
        after.iter().all(|r| r["key_type"] == "ecdsa-p256"),
        "{after:?}"
    );
    let pem = mutual(&[
        "cert",
        "inspect",
        "--serial",
        &ca.serial("b"),
        "--pem",
        "--dir",
        ca.d(),
    ])
    .ok()
    .stdout;
    assert_eq!(pem, openssl_ok(&["x509", "-in", s(&ca.out.join("b.pem"))]));

    // New work goes to PostgreSQL; the SQLite file stays as it was.
    ca.issue("d", &["--san", "dns:d.internal"]).ok();
    let crl2 = ca.tmp.path().join("crl2.pem");
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl2)]).ok();
    assert!(revoked_serials_in_crl(&crl2).contains(&revoked));
    assert_ne!(crl_number(&crl1), crl_number(&crl2), "CRL number continues");
    assert_eq!(crl_number(&crl2), "crlNumber=0x02");
    let st = pg_store(&pg.url).await;
    assert_eq!(st.count().await.unwrap(), 4);
    st.close().await;
    assert!(
        std::fs::read(&db_file).unwrap() == db_bytes,
        "inventory.db was modified"
    );

    // Once on PostgreSQL, migrating again is refused.
    mutual(&["ca", "migrate", "--dir", ca.d(), "--to", &pg.url]).fails_with("already uses");
    pg.drop_db().await;
}

/// `/health` of `ca serve` says whether its store answers: 503 `store_unavailable` while the
/// database refuses connections, 200 again by itself when it accepts them.
#[tokio::test]
async fn health_reports_the_store_and_recovers() {
    use mutual_test::{free_port, wait_for_port, ChildGuard};
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    mutual(&["ca", "init", "--dir", s(&dir), "--store", &pg.url]).ok();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let child = ChildGuard(
        mutual_cmd(
            Some(PW),
            &["ca", "serve", "--listen", &listen, "--dir", s(&dir)],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap(),
    );
    assert!(wait_for_port(
        listen.parse().unwrap(),
        std::time::Duration::from_secs(30)
    ));
    let root = dir.join("root.pem");
    let health = || {
        let o = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "--cacert",
            ])
            .arg(&root)
            .arg(format!("https://localhost:{port}/health"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Bounded polls for the state we need, whatever the timing.
    let wait_for = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let h = health();
            if h.ends_with(want) {
                return h;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "health never became {want}: {h}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let h = wait_for("200");
    assert!(h.contains("\"store\":\"ok\""), "{h}");

    pg.admin_exec(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false",
        pg.name
    ))
    .await
    .unwrap();
    pg.admin_exec(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
        pg.name
    ))
    .await
    .unwrap();
    let h = wait_for("503");
    assert!(h.contains("\"reason\":\"store_unavailable\""), "{h}");

    pg.admin_exec(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        pg.name
    ))
    .await
    .unwrap();
    let h = wait_for("200");
    assert!(h.contains("\"store\":\"ok\""), "{h}");
    drop(child);
    pg.drop_db().await;
}
