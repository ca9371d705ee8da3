//! One store test suite, two backends: every test below runs against SQLite (a temporary file)
//! and PostgreSQL (a database of its own on 127.0.0.1:5432, dropped at the end), so that both
//! implementations keep the same semantics. Without a PostgreSQL server and without
//! `$MUTUAL_REQUIRE_POSTGRES`, the PostgreSQL variants print "skipped: ..." and pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

#[macro_use]
mod backends;
use backends::*;

use mutual_store::testing::PgTestDb;
use mutual_store::{
    copy_sqlite_to_postgres, Cursor, GroupCommit, GroupItem, Inventory, ListFilter, NewCert,
    OpenOptions, PgStore, RevokeOutcome, SanMatch, SqliteStore, Status, Store, StoreError,
    StoreUrl, StoredCrl, TableCounts,
};

fn cert(serial: &str, not_after: i64) -> NewCert {
    NewCert {
        serial: serial.into(),
        name: "web".into(),
        subject: "CN=web".into(),
        sans: vec!["dns:web.internal".into()],
        usage: "server".into(),
        not_before: 0,
        not_after,
        requested_by: Some("test".into()),
        sha256: "00".into(),
        issuer: "int-1".into(),
        der: None,
        key_type: None,
    }
}

both!(insert_list_revoke_counter, |s, db| {
    s.insert(&cert("aa", 1000)).await.unwrap();
    s.insert(&cert("bb", 100)).await.unwrap();
    assert!(matches!(
        s.insert(&cert("aa", 5)).await,
        Err(StoreError::DuplicateSerial { .. })
    ));
    let all = s.list(&ListFilter::default(), 500).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].status, Status::Expired);
    assert_eq!(all[1].status, Status::Valid);
    assert_eq!(all[1].sans, vec!["dns:web.internal".to_string()]);
    let f = ListFilter {
        expiring_within: Some(Duration::from_secs(600)),
        ..Default::default()
    };
    assert_eq!(s.list(&f, 500).await.unwrap().len(), 1);
    assert!(matches!(
        s.revoke("aa", "superseded", 600).await.unwrap(),
        RevokeOutcome::Revoked(_)
    ));
    assert!(matches!(
        s.revoke("aa", "key-compromise", 700).await.unwrap(),
        RevokeOutcome::AlreadyRevoked(_)
    ));
    assert!(matches!(
        s.revoke("cc", "superseded", 600).await,
        Err(StoreError::NotFound { .. })
    ));
    let r = s.revoked().await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(s.get("aa", 600).await.unwrap().unwrap().revoked_by, None);
    s.revoke_as("bb", "superseded", 600, Some("api-revoke:x"))
        .await
        .unwrap();
    let bb = s.get("bb", 600).await.unwrap().unwrap();
    assert_eq!(bb.revoked_by.as_deref(), Some("api-revoke:x"));
    assert_eq!(bb.requested_by.as_deref(), Some("test"));
    let r = s.revoked().await.unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].reason.as_deref(), Some("superseded"));
    assert_eq!(r[0].revoked_at, 600);
    let revoked_only = ListFilter {
        status: Some(Status::Revoked),
        ..Default::default()
    };
    assert_eq!(s.list(&revoked_only, 600).await.unwrap().len(), 2);
    assert_eq!(s.next_counter("crl").await.unwrap(), 1);
    assert_eq!(s.next_counter("crl").await.unwrap(), 2);
    assert_eq!(s.count().await.unwrap(), 2);
    s.delete("bb").await.unwrap();
    assert_eq!(s.count().await.unwrap(), 1);
    s.ping().await.unwrap();
});

both!(token_use_is_atomic_with_issuance, |s, db| {
    assert!(!s.token_used("j1").await.unwrap());
    s.insert_with_token(&cert("aa", 1000), "j1", 5)
        .await
        .unwrap();
    assert!(s.token_used("j1").await.unwrap());
    // Replay: refused, and the second certificate is not recorded.
    assert!(matches!(
        s.insert_with_token(&cert("bb", 1000), "j1", 6).await,
        Err(StoreError::TokenUsed { .. })
    ));
    assert_eq!(s.count().await.unwrap(), 1);
    // A duplicate serial rolls the token use back: the token stays unspent.
    assert!(matches!(
        s.insert_with_token(&cert("aa", 1000), "j2", 7).await,
        Err(StoreError::DuplicateSerial { .. })
    ));
    assert!(!s.token_used("j2").await.unwrap());
    assert_eq!(s.count().await.unwrap(), 1);
});

// 50 concurrent spends of one token, spread over two pools (two "replicas"): exactly one
// certificate, 49 TokenUsed, whatever the interleaving.
both!(concurrent_token_spend_exactly_once, |s, db| {
    let other = db.open().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let st = if i % 2 == 0 { s.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move {
            st.insert_with_token(&cert(&format!("{i:032x}"), 1000), "shared-jti", 5)
                .await
        }));
    }
    let (mut ok, mut used) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::TokenUsed { jti }) => {
                assert_eq!(jti, "shared-jti");
                used += 1
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ok, used), (1, 49));
    assert_eq!(s.count().await.unwrap(), 1);
    assert_eq!(s.table_counts().await.unwrap().tokens, 1);
    other.close().await;
});

// 100 concurrent CRL number increments over two pools: all distinct, exactly 1..=100.
both!(concurrent_counter_increments_distinct, |s, db| {
    let other = db.open().await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let st = if i % 2 == 0 { s.clone() } else { other.clone() };
        tasks.push(tokio::spawn(
            async move { st.next_counter("crl_number").await },
        ));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (1..=100).collect::<Vec<i64>>());
    other.close().await;
});

both!(stored_crl_only_moves_forward, |s, db| {
    assert_eq!(s.current_crl().await.unwrap(), None);
    let crl = |n: i64| StoredCrl {
        number: n,
        der: vec![0x30, n as u8, 0xff],
        this_update: 100 + n,
        next_update: 200 + n,
    };
    assert!(s.store_crl(&crl(2)).await.unwrap());
    // An older CRL (a slower replica) never replaces a newer one, nor does the same number.
    assert!(!s.store_crl(&crl(1)).await.unwrap());
    assert!(!s.store_crl(&crl(2)).await.unwrap());
    assert_eq!(s.current_crl().await.unwrap(), Some(crl(2)));
    // Every handle (replica) reads the same stored CRL.
    let other = db.open().await;
    assert!(other.store_crl(&crl(3)).await.unwrap());
    assert_eq!(s.current_crl().await.unwrap(), Some(crl(3)));
    other.close().await;
});

both!(list_pages_cover_list_in_order, |s, db| {
    // 25 rows, some sharing a not_after so the cursor's serial tie-break matters.
    for i in 0..25i64 {
        s.insert(&cert(&format!("{:02x}", 99 - i), 1000 + (i / 3) * 10))
            .await
            .unwrap();
    }
    s.revoke("63", "superseded", 10).await.unwrap();
    for filter in [
        ListFilter::default(),
        ListFilter {
            expiring_within: Some(Duration::from_secs(1045)),
            ..Default::default()
        },
        ListFilter {
            status: Some(Status::Valid),
            ..Default::default()
        },
    ] {
        let all = s.list(&filter, 5).await.unwrap();
        let mut paged = Vec::new();
        let mut after: Option<Cursor> = None;
        let mut pages = 0;
        loop {
            let p = s.list_page(&filter, 5, after.as_ref(), 10).await.unwrap();
            assert!(p.rows.len() <= 10);
            paged.extend(p.rows);
            pages += 1;
            assert!(pages < 10, "paging does not end");
            match p.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        let a: Vec<_> = all.iter().map(|r| r.serial.clone()).collect();
        let b: Vec<_> = paged.iter().map(|r| r.serial.clone()).collect();
        assert_eq!(a, b, "filter {filter:?}");
        assert!(!a.is_empty());
    }
    assert_eq!(s.list(&ListFilter::default(), 5).await.unwrap().len(), 25);
});

both!(ensure_empty_refuses_an_inventory, |s, db| {
    s.ensure_empty().await.unwrap();
    s.next_counter("crl_number").await.unwrap();
    assert!(matches!(
        s.ensure_empty().await,
        Err(StoreError::NotEmpty { counters: 1, .. })
    ));
});

/// Runs raw SQL statements on the test database (to age a schema or corrupt a row).
async fn exec_raw(db: &TestDb, sqls: &[&str]) {
    use sqlx::Connection;
    // Each statement on the connection `$c`, then closed: one body for both backends.
    macro_rules! run_on {
        ($c:expr) => {{
            let mut c = $c.await.unwrap();
            for q in sqls {
                let q = sqlx::AssertSqlSafe(q.to_string());
                sqlx::raw_sql(q).execute(&mut c).await.unwrap();
            }
            c.close().await.unwrap();
        }};
    }
    match &db.url {
        StoreUrl::Sqlite(p) => {
            let url = format!("sqlite://{}", p.display());
            run_on!(sqlx::SqliteConnection::connect(&url))
        }
        StoreUrl::Postgres(u) => run_on!(sqlx::PgConnection::connect(u)),
    }
}

fn with_sans(serial: &str, not_after: i64, sans: &[&str]) -> NewCert {
    NewCert {
        sans: sans.iter().map(|s| s.to_string()).collect(),
        ..cert(serial, not_after)
    }
}

fn by_san(stored: &str) -> ListFilter {
    ListFilter {
        san: Some(SanMatch::from_stored(stored).unwrap()),
        ..Default::default()
    }
}

async fn serials(s: &Store, f: &ListFilter, now: i64) -> Vec<String> {
    s.list(f, now)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.serial)
        .collect()
}

// Lookup by SAN through the certificate_sans index: exact kind and value, every kind, combined
// with the status filter and paging; rows written with the certificate (insert and
// insert_with_token), none left by a refused insert, removed with the certificate.
both!(lookup_by_san, |s, db| {
    let web = "uri:spiffe://example.org/ns/prod/sa/web";
    s.insert(&with_sans(
        "aa",
        1000,
        &[web, "dns:web.internal", "ip:10.0.0.1"],
    ))
    .await
    .unwrap();
    s.insert(&with_sans(
        "bb",
        2000,
        &[web, "dns:web.internal", "dns:web.internal"],
    ))
    .await
    .unwrap();
    s.insert_with_token(
        &with_sans(
            "cc",
            3000,
            &[
                "uri:spiffe://example.org/ns/prod/sa/api",
                "email:ops@example.org",
            ],
        ),
        "j1",
        5,
    )
    .await
    .unwrap();
    assert_eq!(serials(&s, &by_san(web), 500).await, ["aa", "bb"]);
    assert_eq!(
        serials(&s, &by_san("dns:web.internal"), 500).await,
        ["aa", "bb"]
    );
    assert_eq!(serials(&s, &by_san("ip:10.0.0.1"), 500).await, ["aa"]);
    assert_eq!(
        serials(&s, &by_san("email:ops@example.org"), 500).await,
        ["cc"]
    );
    // Exact match only: no prefix, no other kind, no other trust domain.
    for miss in [
        "uri:spiffe://example.org/ns/prod",
        "dns:10.0.0.1",
        "uri:spiffe://example.com/ns/prod/sa/web",
        "dns:web",
    ] {
        assert!(serials(&s, &by_san(miss), 500).await.is_empty(), "{miss}");
    }
    // With the status filter and across pages.
    s.revoke("aa", "superseded", 600).await.unwrap();
    let valid_web = ListFilter {
        status: Some(Status::Valid),
        ..by_san(web)
    };
    assert_eq!(serials(&s, &valid_web, 700).await, ["bb"]);
    let p1 = s.list_page(&by_san(web), 700, None, 1).await.unwrap();
    assert_eq!(p1.rows[0].serial, "aa");
    let p2 = s
        .list_page(&by_san(web), 700, p1.next.as_ref(), 1)
        .await
        .unwrap();
    assert_eq!(p2.rows[0].serial, "bb");
    // A refused insert (duplicate serial, token already used) indexes nothing.
    assert!(matches!(
        s.insert(&with_sans("aa", 1000, &["dns:other.internal"]))
            .await,
        Err(StoreError::DuplicateSerial { .. })
    ));
    assert!(matches!(
        s.insert_with_token(&with_sans("dd", 1000, &["dns:other.internal"]), "j1", 6)
            .await,
        Err(StoreError::TokenUsed { .. })
    ));
    assert!(serials(&s, &by_san("dns:other.internal"), 500)
        .await
        .is_empty());
    // Deleting a certificate removes its index rows.
    s.delete("bb").await.unwrap();
    assert_eq!(serials(&s, &by_san("dns:web.internal"), 500).await, ["aa"]);
});

// Rows recorded before migration 0004 are indexed by it (backfill from the sans JSON): the
// table and its migration record are dropped, and the next open re-runs it.
both!(sans_migration_backfills_existing_rows, |s, db| {
    s.insert(&with_sans(
        "aa",
        1000,
        &["uri:spiffe://td/a", "dns:a.internal"],
    ))
    .await
    .unwrap();
    s.insert(&with_sans("bb", 1000, &["dns:a.internal", "ip:::1"]))
        .await
        .unwrap();
    s.close().await;
    exec_raw(
        &db,
        &[
            "DROP TABLE certificate_sans",
            "DELETE FROM _sqlx_migrations WHERE version = 4",
        ],
    )
    .await;
    let s = db.open().await;
    assert_eq!(serials(&s, &by_san("uri:spiffe://td/a"), 5).await, ["aa"]);
    assert_eq!(
        serials(&s, &by_san("dns:a.internal"), 5).await,
        ["aa", "bb"]
    );
    assert_eq!(serials(&s, &by_san("ip:::1"), 5).await, ["bb"]);
    s.close().await;
});

// Failed store calls are counted by operation and kind; answers that are refusals are not.
both!(failed_calls_are_counted, |s, db| {
    s.insert(&cert("aa", 1000)).await.unwrap();
    assert!(matches!(
        s.revoke("zz", "superseded", 5).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.insert(&cert("aa", 1000)).await,
        Err(StoreError::DuplicateSerial { .. })
    ));
    assert!(s.errors().snapshot().is_empty());
    exec_raw(
        &db,
        &["UPDATE certificates SET sans = 'not json' WHERE serial = 'aa'"],
    )
    .await;
    assert!(matches!(
        s.get("aa", 5).await,
        Err(StoreError::Corrupt { .. })
    ));
    let other = s.clone();
    s.close().await;
    let e = other.ping().await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert_eq!(
        other.errors().snapshot(),
        [("get", "error", 1), ("ping", "unavailable", 1)]
    );
});

/// Replicas starting together on a fresh database: every one opens (the migrator's advisory
/// lock makes them migrate once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_migrate_together() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let url: StoreUrl = pg.url.parse().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            Store::open(
                &url,
                &OpenOptions {
                    max_connections: 2,
                    ..Default::default()
                },
            )
            .await
        }));
    }
    let mut stores = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => stores.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    for s in &stores {
        s.close().await;
    }
    pg.drop_db().await;
    assert!(errors.is_empty(), "{errors:?}");
}

/// A wrong password or an unreachable server is a `Connect` error naming the password-free URL.
#[tokio::test]
async fn postgres_connect_error_names_url_without_password() {
    // Port 1 on loopback: nothing listens there.
    let url: StoreUrl = "postgres://mutual@127.0.0.1:1/ca".parse().unwrap();
    let e = Store::open(
        &url,
        &OpenOptions {
            password: Some("s3cret-pw".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, StoreError::Connect { .. }), "{text}");
    assert!(text.contains("postgres://mutual@127.0.0.1:1/ca"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

/// `ca migrate`'s copy: every table, counts verified, the SQLite file byte for byte unchanged,
/// and a second copy into the now non-empty database refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_sqlite_into_postgres() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.db");
    {
        let s = Store::open_sqlite(&path, true).await.unwrap();
        // More than one batch of 1,000.
        for i in 0..2345 {
            s.insert(&cert(&format!("{i:032x}"), 1000 + i))
                .await
                .unwrap();
        }
        for i in 0..120 {
            s.revoke_as(
                &format!("{i:032x}"),
                "key-compromise",
                50,
                Some("api-revoke:x"),
            )
            .await
            .unwrap();
        }
        for i in 3000..3003 {
            let c = NewCert {
                der: Some(vec![0x30, 3, 2, 1, i as u8]),
                key_type: Some("ed25519".into()),
                ..with_sans(&format!("{i:032x}"), 9999, &["uri:spiffe://td/copied"])
            };
            s.insert_with_token(&c, &format!("jti{i}"), 7)
                .await
                .unwrap();
        }
        for _ in 0..7 {
            s.next_counter("crl_number").await.unwrap();
        }
        s.store_crl(&StoredCrl {
            number: 7,
            der: vec![1, 2, 3],
            this_update: 1,
            next_update: 2,
        })
        .await
        .unwrap();
        s.close().await;
    }
    let before = std::fs::read(&path).unwrap();
    let src = SqliteStore::open_read_only(&path).await.unwrap();
    let dst = PgStore::open(&pg.url, None, 4).await.unwrap();
    let report = copy_sqlite_to_postgres(&src, &dst).await.unwrap();
    let want = TableCounts {
        certificates: 2348,
        revoked: 120,
        tokens: 3,
        counters: 1,
        crls: 1,
    };
    assert_eq!(report.source, want);
    assert_eq!(report.target, want);
    let d = Store::Postgres(dst.clone());
    assert_eq!(d.table_counts().await.unwrap(), want);
    let rec = d.get(&format!("{:032x}", 5), 0).await.unwrap().unwrap();
    assert_eq!(rec.status, Status::Revoked);
    assert_eq!(rec.revoked_by.as_deref(), Some("api-revoke:x"));
    assert!(d.token_used("jti3001").await.unwrap());
    // The certificate's DER and key type are copied (NULL stays NULL).
    let copied = format!("{:032x}", 3001);
    assert_eq!(
        d.certificate_der(&copied).await.unwrap(),
        Some(vec![0x30, 3, 2, 1, 3001u32 as u8])
    );
    assert_eq!(
        d.get(&copied, 0)
            .await
            .unwrap()
            .unwrap()
            .key_type
            .as_deref(),
        Some("ed25519")
    );
    assert_eq!(
        d.certificate_der(&format!("{:032x}", 5)).await.unwrap(),
        None
    );
    let unknown = ListFilter {
        key_type: Some("unknown".into()),
        ..Default::default()
    };
    assert_eq!(serials(&d, &unknown, 0).await.len(), 2345);
    // The SAN index is rebuilt in the target: lookup by identity works there.
    assert_eq!(
        serials(&d, &by_san("uri:spiffe://td/copied"), 0)
            .await
            .len(),
        3
    );
    assert_eq!(
        serials(&d, &by_san("dns:web.internal"), 0).await.len(),
        2345
    );
    // The CRL number continues after the copied one.
    assert_eq!(d.next_counter("crl_number").await.unwrap(), 8);
    assert_eq!(d.current_crl().await.unwrap().unwrap().der, vec![1, 2, 3]);
    // Refused when the target is not empty; nothing changes.
    assert!(matches!(
        copy_sqlite_to_postgres(&src, &dst).await,
        Err(StoreError::NotEmpty { .. })
    ));
    src.close().await;
    dst.close().await;
    pg.drop_db().await;
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the SQLite file changed"
    );
}

/// TLS to PostgreSQL is asked for in the URL (libpq's words, read by sqlx). Against the local
/// server's own TLS (Debian's default: `ssl = on` with the snakeoil certificate for `localhost`):
/// `sslmode=require` connects encrypted (pg_stat_ssl says so for every pooled connection);
/// `verify-full` with that certificate as `sslrootcert` connects to `localhost`, and is refused
/// for another root (unknown issuer) or another name (127.0.0.1 is not in the certificate), with
/// the password-free URL in the message. A server without TLS refuses `require` outright.
#[tokio::test]
async fn postgres_tls_from_the_url() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let open = |url: String| async move {
        Store::open(&url.parse().unwrap(), &OpenOptions::default()).await
    };
    let ssl = pg.admin_text("SHOW ssl").await.unwrap();
    if ssl != "on" {
        let url = format!("{}?sslmode=require", pg.url);
        let e = open(url.clone()).await.unwrap_err();
        pg.drop_db().await;
        assert!(matches!(e, StoreError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains("server does not support TLS"), "{e}");
        eprintln!("skipped the TLS handshakes: the local PostgreSQL has ssl = {ssl}");
        return;
    }
    let cert_file = pg.admin_text("SHOW ssl_cert_file").await.unwrap();
    let encrypted = || async {
        pg.admin_text(&format!(
            "SELECT count(*)::text || '/' || count(*) FILTER (WHERE s.ssl)::text \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{}'",
            pg.name
        ))
        .await
        .unwrap()
    };
    let mut failures = Vec::new();
    // require: encrypted, the certificate not checked.
    let s = open(format!("{}?sslmode=require", pg.url)).await.unwrap();
    s.ping().await.unwrap();
    let seen = encrypted().await;
    s.close().await;
    if seen.split('/').next() != seen.split('/').nth(1) || seen.starts_with("0/") {
        failures.push(format!("sslmode=require: {seen} connections encrypted"));
    }
    // verify-full against localhost with the server's certificate as the root.
    let local = pg.url.replace("127.0.0.1", "localhost");
    match open(format!(
        "{local}?sslmode=verify-full&sslrootcert={cert_file}"
    ))
    .await
    {
        Ok(s) => {
            s.ping().await.unwrap();
            s.close().await;
        }
        Err(e) => failures.push(format!("verify-full on localhost: {e}")),
    }
    // Another root: refused (the server is not trusted), no fallback to plain text.
    let wrong_root = "/etc/ssl/certs/ca-certificates.crt";
    let bad = [
        (
            format!("{local}?sslmode=verify-full&sslrootcert={wrong_root}"),
            "UnknownIssuer",
        ),
        // Another name: the certificate says localhost, not 127.0.0.1.
        (
            format!("{}?sslmode=verify-full&sslrootcert={cert_file}", pg.url),
            "certificate not valid for name",
        ),
    ];
    for (url, why) in bad {
        if why == "UnknownIssuer" && !std::path::Path::new(wrong_root).exists() {
            continue;
        }
        match open(url.clone()).await {
            Ok(s) => {
                s.close().await;
                failures.push(format!("{url} connected"));
            }
            Err(e) => {
                let msg = e.to_string();
                if !matches!(e, StoreError::Connect { .. })
                    || !msg.contains(&url)
                    || !msg.contains(why)
                {
                    failures.push(format!("{url}: expected Connect with {why}, got {msg}"));
                }
            }
        }
    }
    pg.drop_db().await;
    assert!(failures.is_empty(), "{failures:#?}");
}

// The console's lookups (crates/mutual-console): by NAME, by SHA-256 and by a prefix of
// requested_by, alone, with the status filter and across keyset pages; '%' and '_' in a prefix
// mean themselves.
both!(lookup_by_name_fingerprint_requester, |s, _db| {
    for (serial, name, sha, by) in [
        ("01", "web", "aa11", "token:1"),
        ("02", "web", "bb22", "acme:acct1"),
        ("03", "db", "cc33", "acme:acct2"),
        ("04", "api", "dd44", "a%_x"),
    ] {
        s.insert(&NewCert {
            name: name.into(),
            sha256: sha.into(),
            requested_by: Some(by.into()),
            ..cert(serial, 1000 + i64::from(serial.parse::<u8>().unwrap()))
        })
        .await
        .unwrap();
    }
    let f = |name: Option<&str>, sha: Option<&str>, by: Option<&str>| ListFilter {
        name: name.map(Into::into),
        sha256: sha.map(Into::into),
        requested_by: by.map(Into::into),
        ..Default::default()
    };
    assert_eq!(
        serials(&s, &f(Some("web"), None, None), 500).await,
        ["01", "02"]
    );
    assert_eq!(serials(&s, &f(None, Some("cc33"), None), 500).await, ["03"]);
    assert_eq!(
        serials(&s, &f(None, None, Some("acme:")), 500).await,
        ["02", "03"]
    );
    assert_eq!(serials(&s, &f(None, None, Some("a%")), 500).await, ["04"]);
    assert!(serials(&s, &f(None, None, Some("%")), 500).await.is_empty());
    assert_eq!(
        serials(&s, &f(Some("web"), None, Some("acme:")), 500).await,
        ["02"]
    );
    s.revoke("02", "superseded", 10).await.unwrap();
    let valid_acme = ListFilter {
        status: Some(Status::Valid),
        ..f(None, None, Some("acme:"))
    };
    assert_eq!(serials(&s, &valid_acme, 500).await, ["03"]);
    let p1 = s
        .list_page(&f(None, None, Some("acme:")), 500, None, 1)
        .await
        .unwrap();
    assert_eq!(p1.rows[0].serial, "02");
    let p2 = s
        .list_page(&f(None, None, Some("acme:")), 500, p1.next.as_ref(), 1)
        .await
        .unwrap();
    assert_eq!(p2.rows[0].serial, "03");
});

// The certificate's DER and key type (migration 0010): written with the row by insert and
// insert_with_token, read back by certificate_der and in every record, filtered on ("unknown":
// the rows without one), and nothing for an unknown serial.
both!(certificate_der_and_key_type, |s, _db| {
    let der = vec![0x30, 0x82, 1, 2, 3, 0, 255];
    s.insert(&NewCert {
        der: Some(der.clone()),
        key_type: Some("rsa-2048".into()),
        ..cert("aa", 1000)
    })
    .await
    .unwrap();
    s.insert_with_token(
        &NewCert {
            der: Some(vec![1]),
            key_type: Some("ecdsa-p256".into()),
            ..cert("bb", 2000)
        },
        "jti-b",
        5,
    )
    .await
    .unwrap();
    s.insert(&cert("cc", 3000)).await.unwrap();
    assert_eq!(s.certificate_der("aa").await.unwrap(), Some(der));
    assert_eq!(s.certificate_der("bb").await.unwrap(), Some(vec![1]));
    assert_eq!(s.certificate_der("cc").await.unwrap(), None);
    assert_eq!(s.certificate_der("zz").await.unwrap(), None);
    let kt = |k: &str| ListFilter {
        key_type: Some(k.into()),
        ..Default::default()
    };
    assert_eq!(serials(&s, &kt("rsa-2048"), 0).await, ["aa"]);
    assert_eq!(serials(&s, &kt("ecdsa-p256"), 0).await, ["bb"]);
    assert_eq!(serials(&s, &kt("unknown"), 0).await, ["cc"]);
    assert!(serials(&s, &kt("rsa-4096"), 0).await.is_empty());
    let rows = s.list(&ListFilter::default(), 0).await.unwrap();
    let types: Vec<Option<&str>> = rows.iter().map(|r| r.key_type.as_deref()).collect();
    assert_eq!(types, [Some("rsa-2048"), Some("ecdsa-p256"), None]);
    // A refused insert (token already used) records no certificate.
    assert!(matches!(
        s.insert_with_token(
            &NewCert {
                der: Some(vec![2]),
                ..cert("dd", 4000)
            },
            "jti-b",
            6
        )
        .await,
        Err(StoreError::TokenUsed { .. })
    ));
    assert_eq!(s.certificate_der("dd").await.unwrap(), None);
});

/// A database migrated to 0009 (before the inventory kept certificates) with rows in it, as an
/// operator's CA has it, then opened by this version: 0010 runs, the old rows read back with no
/// key type and no DER, keep working (filter "unknown", revoke), and new rows get both.
async fn upgrade_from_0009(b: Backend) {
    let Some(db) = TestDb::new(b).await else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(match b {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    });
    let old = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
    // Two rows as the 0009-era insert wrote them (the row, then its SAN index rows).
    let insert_old = "INSERT INTO certificates (serial, name, subject, sans, usage, not_before, \
                      not_after, status, requested_by, sha256, created_at, issuer) VALUES \
                      ('0a', 'old1', 'CN=old1', '[\"dns:old.internal\"]', 'server', 0, 5000, \
                      'valid', 'cli:root', 'ab', 1, 'int-1'), \
                      ('0b', 'old2', 'CN=old2', '[]', 'client', 0, 6000, 'valid', NULL, 'cd', 1, \
                      'int-1'); \
                      INSERT INTO certificate_sans (serial, kind, value) \
                      VALUES ('0a', 'dns', 'old.internal')";
    match &db.url {
        StoreUrl::Sqlite(p) => {
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(p)
                        .create_if_missing(true),
                )
                .await
                .unwrap();
            old.run_to(9, &pool).await.unwrap();
            sqlx::raw_sql(insert_old).execute(&pool).await.unwrap();
            pool.close().await;
        }
        StoreUrl::Postgres(u) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .connect(u)
                .await
                .unwrap();
            old.run_to(9, &pool).await.unwrap();
            sqlx::raw_sql(insert_old).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    let s = db.open().await;
    let r = s.get("0a", 10).await.unwrap().unwrap();
    assert_eq!((r.name.as_str(), r.key_type), ("old1", None));
    assert_eq!(s.certificate_der("0a").await.unwrap(), None);
    s.insert(&NewCert {
        der: Some(vec![0x30, 0]),
        key_type: Some("ed25519".into()),
        ..cert("0c", 7000)
    })
    .await
    .unwrap();
    let unknown = ListFilter {
        key_type: Some("unknown".into()),
        ..Default::default()
    };
    assert_eq!(serials(&s, &unknown, 10).await, ["0a", "0b"]);
    assert!(matches!(
        s.revoke("0b", "superseded", 20).await.unwrap(),
        RevokeOutcome::Revoked(_)
    ));
    let ed = ListFilter {
        key_type: Some("ed25519".into()),
        ..Default::default()
    };
    assert_eq!(serials(&s, &ed, 10).await, ["0c"]);
    assert_eq!(serials(&s, &by_san("dns:old.internal"), 10).await, ["0a"]);
    s.close().await;
    if let Some(pg) = &db.pg {
        pg.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_0009_sqlite() {
    upgrade_from_0009(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_0009_postgres() {
    upgrade_from_0009(Backend::Postgres).await;
}
// insert_many: one transaction per chunk. All rows and their SAN index rows land together; a
// chunk with a serial already present (or twice in the chunk) records nothing at all.
both!(insert_many_is_all_or_nothing, |s, db| {
    let chunk: Vec<NewCert> = (0..50)
        .map(|i| with_sans(&format!("b{i:02x}"), 1000, &[&format!("dns:d{i}.example")]))
        .collect();
    s.insert_many(&chunk).await.unwrap();
    assert_eq!(s.list(&ListFilter::default(), 500).await.unwrap().len(), 50);
    assert_eq!(serials(&s, &by_san("dns:d7.example"), 500).await, ["b07"]);
    // "b05" is already recorded: the new rows before and after it are rolled back with it.
    let clash = vec![cert("c1", 1000), cert("b05", 1000), cert("c2", 1000)];
    assert!(matches!(
        s.insert_many(&clash).await,
        Err(StoreError::DuplicateSerial { serial }) if serial == "b05"
    ));
    let twice = vec![cert("d1", 1000), cert("d1", 1000)];
    assert!(matches!(
        s.insert_many(&twice).await,
        Err(StoreError::DuplicateSerial { .. })
    ));
    for gone in ["c1", "c2", "d1"] {
        assert!(
            s.get(gone, 500).await.unwrap().is_none(),
            "{gone} was recorded"
        );
    }
    assert_eq!(s.list(&ListFilter::default(), 500).await.unwrap().len(), 50);
    s.insert_many(&[]).await.unwrap();
});

// ------------------------------------------------------------------ group commit (issue 20)

fn item(serial: &str, token: Option<&str>) -> GroupItem {
    GroupItem {
        cert: cert(serial, 1000),
        token: token.map(|j| (j.to_string(), 5)),
    }
}

/// Spawns one `record` per item; the handles, in the items' order.
fn spawn_records(
    gc: &GroupCommit,
    items: Vec<GroupItem>,
) -> Vec<tokio::task::JoinHandle<Result<(), StoreError>>> {
    items
        .into_iter()
        .map(|it| {
            let gc = gc.clone();
            tokio::spawn(async move { gc.record(it).await })
        })
        .collect()
}

/// Polls `gc.queued()` until it is `n` (each spawned record queued), with a deadline.
async fn until_queued(gc: &GroupCommit, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while gc.queued() != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} queued, expected {n}",
            gc.queued()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// 300 concurrent issuances through one group committer: all land, fewer transactions than
// rows. In the same groups, a token spent twice fails only its second spender, and a serial
// already recorded fails only that issuance (its group is written again without it).
both!(group_commit_concurrent_rows_and_refusals, |s, db| {
    s.insert(&cert("dup", 1000)).await.unwrap();
    let gc = GroupCommit::start(s.clone());
    let mut items: Vec<GroupItem> = (0..300).map(|i| item(&format!("{i:032x}"), None)).collect();
    for i in 0..5 {
        items.push(item(&format!("tok{i}"), Some("shared-jti")));
    }
    items.push(item("dup", None));
    let (mut ok, mut used, mut dup) = (0, 0, 0);
    for (i, t) in spawn_records(&gc, items).into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::TokenUsed { jti }) if (300..305).contains(&i) => {
                assert_eq!(jti, "shared-jti");
                used += 1
            }
            Err(StoreError::DuplicateSerial { serial }) if i == 305 => {
                assert_eq!(serial, "dup");
                dup += 1
            }
            Err(e) => panic!("item {i}: unexpected error: {e}"),
        }
    }
    assert_eq!((ok, used, dup), (301, 4, 1));
    // The rows are durable and visible to another connection (a second "replica").
    let other = db.open().await;
    assert_eq!(other.count().await.unwrap(), 302);
    assert_eq!(other.table_counts().await.unwrap().tokens, 1);
    other.close().await;
    let st = gc.stats();
    assert_eq!(st.rows, 301, "{st:?}");
    assert!(st.groups >= 1 && st.groups <= 301, "{st:?}");
    assert_eq!(st.failed_groups, 0, "{st:?}");
});

// Rows written together by the group commit (multi-row statements, in chunks) are the rows
// one insert writes: every field, the DER, and each SAN in the index, found by `--san`.
both!(group_commit_rows_match_single_inserts, |s, _db| {
    let gc = GroupCommit::start(s.clone());
    // 300 rows, 2 SANs each: several chunks of certificates and of SAN rows per group.
    let items: Vec<GroupItem> = (0..300)
        .map(|i| GroupItem {
            cert: NewCert {
                der: Some(vec![i as u8; 40]),
                key_type: Some("ecdsa-p256".into()),
                ..with_sans(
                    &format!("g{i:03}"),
                    1000 + i,
                    &[
                        &format!("dns:h{i}.internal"),
                        &format!("uri:spiffe://td/w/{i}"),
                    ],
                )
            },
            token: None,
        })
        .collect();
    for t in spawn_records(&gc, items) {
        t.await.unwrap().unwrap();
    }
    for i in [0i64, 1, 127, 128, 255, 299] {
        let serial = format!("g{i:03}");
        let r = s.get(&serial, 0).await.unwrap().unwrap();
        assert_eq!(r.not_after, 1000 + i);
        assert_eq!(
            r.sans,
            [
                format!("dns:h{i}.internal"),
                format!("uri:spiffe://td/w/{i}")
            ]
        );
        assert_eq!(r.key_type.as_deref(), Some("ecdsa-p256"));
        assert_eq!(
            s.certificate_der(&serial).await.unwrap(),
            Some(vec![i as u8; 40])
        );
        for san in &r.sans {
            let found = s.list(&by_san(san), 0).await.unwrap();
            assert_eq!(found.len(), 1, "{san}");
            assert_eq!(found[0].serial, serial);
        }
    }
    assert_eq!(s.count().await.unwrap(), 300);
});

// Nothing is answered before the commit: with the commit held, every waiter is pending and
// another connection sees none of the rows. A commit that fails fails exactly that group's
// waiters (none of its rows exists); the group queued behind it commits.
both!(group_commit_answers_only_after_commit, |s, db| {
    let gc = GroupCommit::start(s.clone());
    let gate = gc.gate();
    const N: usize = 40;
    let items = (0..N).map(|i| item(&format!("{i:032x}"), None)).collect();
    let tasks = spawn_records(&gc, items);
    let first = gate.arrival(1).await;
    until_queued(&gc, N - first).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "answered before commit"
    );
    let other = db.open().await;
    assert_eq!(
        other.count().await.unwrap(),
        0,
        "uncommitted rows are visible"
    );

    gate.fail_next();
    gate.pass(1);
    // The second group (everything queued meanwhile) reaches the gate: the first is over.
    assert_eq!(gate.arrival(2).await, N - first);
    assert_eq!(other.count().await.unwrap(), 0);
    gate.pass(1);
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => {
                assert!(
                    matches!(e, StoreError::GroupCommit { rows, .. } if rows == first),
                    "{e}"
                );
                assert!(e.to_string().contains("none was recorded"), "{e}");
                assert!(
                    e.to_string().contains("commit refused by the test gate"),
                    "{e}"
                );
                failed += 1;
            }
        }
    }
    assert_eq!((ok, failed), (N - first, first));
    assert_eq!(other.count().await.unwrap(), (N - first) as i64);
    let st = gc.stats();
    assert_eq!((st.groups, st.failed_groups), (1, 1), "{st:?}");
    assert_eq!(st.rows, (N - first) as u64);
    other.close().await;
});

// The database connection cut while a group waits for its commit: every waiter of that group
// and of the group behind it fails as "unavailable", no row exists, and once the database is
// back the next issuance lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_postgres_connection_cut() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let (relay, url) = mutual_test::CutRelay::in_front_of(&pg.url, "127.0.0.1:5432");
    let o = OpenOptions {
        create: true,
        ..Default::default()
    };
    let s = Store::open(&url.parse().unwrap(), &o).await.unwrap();
    let gc = GroupCommit::start(s.clone());
    let gate = gc.gate();
    const N: usize = 30;
    let items = (0..N).map(|i| item(&format!("{i:032x}"), None)).collect();
    let tasks = spawn_records(&gc, items);
    let first = gate.arrival(1).await;
    until_queued(&gc, N - first).await;
    relay.cut();
    gate.pass(2);
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
    }
    let direct = Store::open(&pg.url.parse().unwrap(), &o).await.unwrap();
    assert_eq!(direct.count().await.unwrap(), 0);
    relay.restore();
    gate.pass(1);
    gc.record(item("after", None)).await.unwrap();
    assert_eq!(direct.count().await.unwrap(), 1);
    // The writer takes whatever is queued when it is free: when all N were queued before it woke,
    // the first group holds them all and there is no second group to fail.
    let groups_cut = if first == N { 1 } else { 2 };
    assert_eq!(
        gc.stats().failed_groups,
        groups_cut,
        "first group: {first} rows"
    );
    direct.close().await;
    s.close().await;
    pg.drop_db().await;
}
