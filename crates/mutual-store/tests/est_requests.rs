//! EST requests held for manual approval (migration 0007) on PostgreSQL as on SQLite: the
//! `ON CONFLICT` insert, the optional status filter and the conditional decision.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mutual_store::testing::PgTestDb;
use mutual_store::{EstRequest, EstStore, OpenOptions, Store, StoreUrl};

async fn exercise(s: &Store) {
    let r = EstRequest {
        id: "abc".into(),
        label: "line2".into(),
        requested_by: "est:bootstrap:SN1".into(),
        names: "[\"uri:spiffe://x/y\"]".into(),
        status: "pending".into(),
        serial: None,
        certificate: None,
        created_at: 5,
        decided_at: None,
        decided_by: None,
    };
    assert_eq!(s.est_request_put(&r).await.unwrap(), r);
    assert_eq!(s.est_request_put(&r).await.unwrap(), r);
    assert_eq!(
        s.est_request_list(Some("pending")).await.unwrap(),
        vec![r.clone()]
    );
    assert!(s
        .est_request_move("abc", "pending", "rejected", Some("op"), None, None, 7)
        .await
        .unwrap());
    assert!(!s
        .est_request_move("abc", "pending", "approved", Some("op2"), None, None, 8)
        .await
        .unwrap());
    assert!(s
        .est_request_list(Some("pending"))
        .await
        .unwrap()
        .is_empty());
    let all = s.est_request_list(None).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (
            all[0].status.as_str(),
            all[0].decided_by.as_deref(),
            all[0].decided_at
        ),
        ("rejected", Some("op"), Some(7))
    );
}

fn opts() -> OpenOptions {
    OpenOptions {
        create: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn sqlite() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&StoreUrl::Sqlite(d.path().join("i.db")), &opts())
        .await
        .unwrap();
    exercise(&s).await;
    s.close().await;
}

#[tokio::test]
async fn postgres() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let s = Store::open(&pg.url.parse().unwrap(), &opts())
        .await
        .unwrap();
    exercise(&s).await;
    s.close().await;
    pg.drop_db().await;
}
