//! Migration 0008 (several issuing intermediates): rows recorded before it were all signed by
//! the first intermediate and read back as `int-1`; per-issuer revocation lists and CRL rows
//! keep the issuers apart, on SQLite (the PostgreSQL schema is the same SQL, run by store.rs's
//! PostgreSQL cases through `Store::open`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mutual_store::{Inventory, ListFilter, NewCert, Store, StoredCrl};

fn cert(serial: &str, issuer: &str) -> NewCert {
    NewCert {
        serial: serial.into(),
        name: serial.into(),
        subject: format!("CN={serial}"),
        sans: vec![],
        usage: "client".into(),
        not_before: 0,
        not_after: 2_000_000_000,
        requested_by: None,
        sha256: "00".into(),
        issuer: issuer.into(),
        der: None,
        key_type: None,
    }
}

#[tokio::test]
async fn rows_from_before_0008_are_backfilled_as_int_1() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("inventory.db");
    // The store as the previous release left it: migrations 0001-0005 only, one row.
    let old = tmp.path().join("old-migrations");
    std::fs::create_dir(&old).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.as_str() < "0008" {
            std::fs::copy(e.path(), old.join(&name)).unwrap();
        }
    }
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO certificates (serial, name, subject, sans, usage, not_before, \
             not_after, status, sha256, created_at) \
             VALUES ('aa', 'old', 'CN=old', '[]', 'client', 0, 2000000000, 'revoked', '00', 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("UPDATE certificates SET revoked_at = 5 WHERE serial = 'aa'")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    // Opening it applies 0008: the old row is int-1's.
    let s = Store::open_sqlite(&db, false).await.unwrap();
    let old = s.get("aa", 0).await.unwrap().unwrap();
    assert_eq!(old.issuer, "int-1");
    s.insert(&cert("bb", "int-2")).await.unwrap();
    s.revoke("bb", "superseded", 6).await.unwrap();
    let rows = s.list(&ListFilter::default(), 0).await.unwrap();
    let mut got: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.serial.clone(), r.issuer.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("aa".into(), "int-1".into()), ("bb".into(), "int-2".into())]
    );

    // Each issuer's CRL lists its own revocations and is stored apart.
    let serials = |v: Vec<mutual_store::RevokedEntry>| -> Vec<String> {
        v.into_iter().map(|e| e.serial).collect()
    };
    assert_eq!(
        serials(s.revoked_for_issuer("int-1").await.unwrap()),
        ["aa"]
    );
    assert_eq!(
        serials(s.revoked_for_issuer("int-2").await.unwrap()),
        ["bb"]
    );
    let crl = |n: i64| StoredCrl {
        number: n,
        der: vec![n as u8],
        this_update: 1,
        next_update: 2,
    };
    assert!(s.store_issuer_crl("int-2", &crl(3)).await.unwrap());
    assert!(
        !s.store_issuer_crl("int-2", &crl(2)).await.unwrap(),
        "never back"
    );
    assert!(s.store_issuer_crl("int-1", &crl(1)).await.unwrap());
    assert_eq!(s.issuer_crl("int-2").await.unwrap().unwrap().number, 3);
    // int-1's CRL is the one current_crl always held.
    assert_eq!(s.current_crl().await.unwrap().unwrap().number, 1);
    let st = s.crl_state_for("int-2").await.unwrap();
    assert_eq!((st.revoked, st.number), (1, Some(3)));
    assert_eq!(
        s.issuer_last_expiry("int-2").await.unwrap(),
        Some(2_000_000_000)
    );
    assert_eq!(s.issuer_last_expiry("int-9").await.unwrap(), None);
    s.close().await;
}
