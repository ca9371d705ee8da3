//! EST requests held for manual approval (migration 0007) on PostgreSQL as on SQLite: the
//! `ON CONFLICT` insert, the optional status filter and the conditional decision, one body run
//! on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod backends;
use backends::*;

use mutual_store::{EstMove, EstRequest, EstStore, Store};

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
    // A repeated poll finds the stored request, whatever it says now.
    let again = EstRequest {
        requested_by: "other".into(),
        ..r.clone()
    };
    assert_eq!(s.est_request_put(&again).await.unwrap(), r);
    assert_eq!(
        s.est_request_list(Some("pending")).await.unwrap(),
        vec![r.clone()]
    );
    assert!(s
        .est_request_move(&EstMove::decide("abc", "rejected", "op", 7))
        .await
        .unwrap());
    assert!(!s
        .est_request_move(&EstMove::decide("abc", "approved", "op2", 8))
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

    // Approved, then issued: the decision's who and when stay, the certificate is added.
    let r2 = EstRequest {
        id: "def".into(),
        created_at: 6,
        ..r.clone()
    };
    assert_eq!(s.est_request_put(&r2).await.unwrap(), r2);
    assert!(s
        .est_request_move(&EstMove::decide("def", "approved", "alice", 9))
        .await
        .unwrap());
    assert!(!s
        .est_request_move(&EstMove::decide("def", "rejected", "bob", 10))
        .await
        .unwrap());
    assert!(s
        .est_request_move(&EstMove::issued("def", "01", "PEM"))
        .await
        .unwrap());
    let got = s.est_request_get("def").await.unwrap().unwrap();
    assert_eq!(got.status, "issued");
    assert_eq!(got.decided_by.as_deref(), Some("alice"));
    assert_eq!(got.decided_at, Some(9));
    assert_eq!(got.serial.as_deref(), Some("01"));
    assert_eq!(got.certificate.as_deref(), Some("PEM"));
    assert_eq!(s.est_request_list(None).await.unwrap().len(), 2);
}

both!(est_requests, |s, db| {
    exercise(&s).await;
});
