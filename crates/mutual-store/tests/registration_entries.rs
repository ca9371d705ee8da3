//! Registration entries of `mutual agent` (migration 0011) on PostgreSQL as on SQLite: create,
//! the per-node list, a repeated id refused, delete once; and `ca migrate`'s copy carries them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mutual_store::testing::PgTestDb;
use mutual_store::{
    copy_sqlite_to_postgres, EntryStore, OpenOptions, PgStore, RegistrationEntry, SqliteStore,
    Store, StoreUrl,
};

fn entry(id: &str, node: &str) -> RegistrationEntry {
    RegistrationEntry {
        id: id.into(),
        spiffe_id: format!("spiffe://td/{id}"),
        selectors: vec![
            "unix:uid:1000".into(),
            format!("unix:sha256:{}", "ab".repeat(32)),
        ],
        node: node.into(),
        ttl_secs: 3600,
        created_at: 5,
        created_by: "cli:op".into(),
    }
}

async fn exercise(s: &Store) {
    let (n1, n2) = ("spiffe://td/node/n1", "spiffe://td/node/n2");
    s.entry_create(&entry("web", n1)).await.unwrap();
    s.entry_create(&entry("db", n1)).await.unwrap();
    s.entry_create(&entry("api", n2)).await.unwrap();
    assert!(s.entry_create(&entry("web", n2)).await.is_err());
    let mine = s.entry_list(Some(n1)).await.unwrap();
    assert_eq!(mine, vec![entry("db", n1), entry("web", n1)]);
    assert_eq!(s.entry_list(None).await.unwrap().len(), 3);
    assert!(s.entry_delete("web").await.unwrap());
    assert!(!s.entry_delete("web").await.unwrap());
    assert_eq!(s.entry_get("web").await.unwrap(), None);
    assert_eq!(s.entry_get("api").await.unwrap(), Some(entry("api", n2)));
}

#[tokio::test]
async fn on_sqlite_and_postgres() {
    let d = tempfile::tempdir().unwrap();
    let pg = PgTestDb::create().await;
    let mut urls = vec![StoreUrl::Sqlite(d.path().join("i.db"))];
    urls.extend(pg.as_ref().map(|p| p.url.parse().unwrap()));
    for url in &urls {
        let o = OpenOptions {
            create: true,
            ..Default::default()
        };
        let s = Store::open(url, &o).await.unwrap();
        exercise(&s).await;
        s.close().await;
    }
    if let Some(pg) = pg {
        pg.drop_db().await;
    }
}

#[tokio::test]
async fn ca_migrate_copies_the_entries() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("i.db");
    {
        let s = SqliteStore::open(&path, true).await.unwrap();
        s.entry_create(&entry("web", "spiffe://td/node/n1"))
            .await
            .unwrap();
        s.close().await;
    }
    let src = SqliteStore::open_read_only(&path).await.unwrap();
    let dst = PgStore::open(&pg.url, None, 4).await.unwrap();
    copy_sqlite_to_postgres(&src, &dst).await.unwrap();
    assert_eq!(
        dst.entry_list(None).await.unwrap(),
        vec![entry("web", "spiffe://td/node/n1")]
    );
    src.close().await;
    dst.close().await;
    pg.drop_db().await;
}
