//! Migrations 0009 and 0010: the inventory page's fingerprint search, requester-prefix, issuer and
//! key-type filters are index
//! searches, not scans (docs/console.md, "Scale"), checked with the database's own plan of the
//! real query (`Store::explain_list`: `EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on
//! PostgreSQL), and the prefix range returns exactly the rows a prefix compare would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
use backends::*;

use mutual_store::{Inventory, ListFilter, NewCert, Store};

fn cert(i: usize, requested_by: &str) -> NewCert {
    NewCert {
        serial: format!("{i:04x}"),
        name: format!("c{i}"),
        subject: format!("CN=c{i}"),
        sans: vec![],
        usage: "client".into(),
        not_before: 0,
        not_after: 2_000_000_000 + i as i64,
        requested_by: Some(requested_by.into()),
        sha256: format!("{i:064x}"),
        issuer: if i.is_multiple_of(2) {
            "int-1"
        } else {
            "int-2"
        }
        .into(),
        der: None,
        key_type: KEY_TYPES[i % 3].map(str::to_string),
    }
}

/// Key types by row (`None`: a row from before migration 0010, "unknown").
const KEY_TYPES: [Option<&str>; 3] = [Some("ecdsa-p256"), Some("rsa-3072"), None];

/// Rows whose requesters sit around the prefixes' edges: '%' and '_' must mean themselves, and
/// a string that shares all but the last character must not match.
const REQUESTERS: [&str; 8] = [
    "token:a",
    "token:b",
    "tokem:z",
    "token;",
    "acme:acct7",
    "acme:acct70",
    "acme:acct8",
    "a%b_c:x",
];

async fn fill(s: &Store) {
    for (i, r) in REQUESTERS.iter().enumerate() {
        s.insert(&cert(i, r)).await.unwrap();
    }
}

fn filter_by(requester: Option<&str>, sha: Option<String>) -> ListFilter {
    ListFilter {
        requested_by: requester.map(str::to_string),
        sha256: sha,
        ..Default::default()
    }
}

async fn check(s: &Store, uses: &(dyn Fn(&str, &str) -> bool + Sync)) {
    fill(s).await;
    // The rows: exactly the prefix's.
    for (prefix, want) in [
        ("token:", vec!["token:a", "token:b"]),
        ("acme:acct7", vec!["acme:acct7", "acme:acct70"]),
        ("a%b_", vec!["a%b_c:x"]),
        ("a%", vec!["a%b_c:x"]),
        ("nobody:", vec![]),
    ] {
        let rows = s.list(&filter_by(Some(prefix), None), 0).await.unwrap();
        let mut got: Vec<String> = rows.into_iter().filter_map(|r| r.requested_by).collect();
        got.sort();
        assert_eq!(got, want, "prefix {prefix:?}");
    }
    let one = s
        .list(&filter_by(None, Some(format!("{:064x}", 3))), 0)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].name, "c3");
    let f = ListFilter {
        issuer: Some("int-2".into()),
        ..Default::default()
    };
    assert_eq!(s.list(&f, 0).await.unwrap().len(), 4);
    // The key-type filter, "unknown" meaning the rows without one, and keyset paging on it.
    for (kt, want) in [
        ("ecdsa-p256", vec!["0000", "0003", "0006"]),
        ("rsa-3072", vec!["0001", "0004", "0007"]),
        ("unknown", vec!["0002", "0005"]),
        ("ed25519", vec![]),
    ] {
        let f = ListFilter {
            key_type: Some(kt.into()),
            ..Default::default()
        };
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let p = s.list_page(&f, 0, after.as_ref(), 2).await.unwrap();
            got.extend(p.rows.iter().map(|r| r.serial.clone()));
            assert!(p
                .rows
                .iter()
                .all(|r| r.key_type.as_deref() == (kt != "unknown").then_some(kt)));
            match p.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert_eq!(got, want, "key type {kt}");
    }

    // The plans: index searches on the new indexes.
    let plan = s
        .explain_list(&filter_by(None, Some("ab".repeat(32))), 0, Some(50))
        .await
        .unwrap()
        .join("\n");
    assert!(uses(&plan, "certificates_sha256"), "fingerprint:\n{plan}");
    let plan = s
        .explain_list(&filter_by(Some("acme:acct7"), None), 0, Some(50))
        .await
        .unwrap()
        .join("\n");
    assert!(
        uses(&plan, "certificates_requested_by"),
        "requester:\n{plan}"
    );
    for kt in ["rsa-3072", "unknown"] {
        let f = ListFilter {
            key_type: Some(kt.into()),
            ..Default::default()
        };
        let plan = s.explain_list(&f, 0, Some(50)).await.unwrap().join("\n");
        assert!(
            uses(&plan, "certificates_key_type_not_after"),
            "key type {kt}:\n{plan}"
        );
    }
}

#[tokio::test]
async fn sqlite_searches_fingerprints_and_requesters_by_index() {
    run(Backend::Sqlite, |s, _| async move {
        // SQLite says "SEARCH certificates USING INDEX NAME (...)"; a scan would be "SCAN".
        check(&s, &|plan, index| {
            plan.lines()
                .any(|l| l.contains("SEARCH") && l.contains(&format!("INDEX {index} ")))
        })
        .await;
    })
    .await
}

#[tokio::test]
async fn postgres_searches_fingerprints_and_requesters_by_index() {
    run(Backend::Postgres, |s, _| async move {
        // PostgreSQL: "Index Scan using NAME" or "Bitmap Index Scan on NAME" with an Index Cond.
        check(&s, &|plan, index| {
            plan.contains(&format!("using {index}")) || plan.contains(&format!("on {index}"))
        })
        .await;
    })
    .await
}
