//! The two backends the store tests run on: a throwaway SQLite file and a throwaway PostgreSQL
//! database (skipped, passing, without a server unless `$MUTUAL_REQUIRE_POSTGRES`), and `both!`,
//! which declares one test body as `NAME::sqlite` and `NAME::postgres`. One copy for every file
//! under tests/.
#![allow(dead_code, unused_macros, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;

use mutual_store::testing::PgTestDb;
use mutual_store::{OpenOptions, Store, StoreUrl};

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One backend's throwaway database; `url` opens it again (a second "replica").
pub struct TestDb {
    pub url: StoreUrl,
    _dir: tempfile::TempDir,
    pub pg: Option<PgTestDb>,
}

impl TestDb {
    pub async fn new(b: Backend) -> Option<TestDb> {
        let dir = tempfile::tempdir().unwrap();
        match b {
            Backend::Sqlite => Some(TestDb {
                url: StoreUrl::Sqlite(dir.path().join("inv.db")),
                _dir: dir,
                pg: None,
            }),
            Backend::Postgres => {
                let pg = PgTestDb::create().await?;
                Some(TestDb {
                    url: pg.url.parse().unwrap(),
                    _dir: dir,
                    pg: Some(pg),
                })
            }
        }
    }

    pub async fn open(&self) -> Store {
        Store::open(
            &self.url,
            &OpenOptions {
                create: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }
}

/// Runs `body` on a fresh store of backend `b` (and the TestDb, to open more handles), then
/// drops the database even when the body panicked.
pub async fn run<F, Fut>(b: Backend, body: F)
where
    F: FnOnce(Store, std::sync::Arc<TestDb>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = TestDb::new(b).await else {
        return;
    };
    let db = std::sync::Arc::new(db);
    let store = db.open().await;
    let res = tokio::spawn(body(store.clone(), db.clone())).await;
    store.close().await;
    if let Some(pg) = &db.pg {
        pg.drop_db().await;
    }
    if let Err(e) = res {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Declares `NAME::sqlite` and `NAME::postgres` from one body.
macro_rules! both {
    ($name:ident, |$s:ident, $db:ident| $body:block) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run(Backend::Sqlite, |$s, $db| async move {
                    let _ = &$db;
                    $body
                })
                .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run(Backend::Postgres, |$s, $db| async move {
                    let _ = &$db;
                    $body
                })
                .await
            }
        }
    };
}
