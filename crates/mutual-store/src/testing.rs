//! Throwaway PostgreSQL databases for tests (this crate's and the binary's).
//!
//! Why here: every test that runs against PostgreSQL needs its own database so that tests can run
//! in parallel, and the same rule for "no server here": when nothing answers on 127.0.0.1:5432
//! and `$MUTUAL_REQUIRE_POSTGRES` is unset, the PostgreSQL variant says
//! "skipped: no PostgreSQL on 127.0.0.1:5432" and passes; with it set (CI), it fails.
//! Not for production use.
#![allow(clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{ConnectOptions, Connection};

/// Where the test server is: trust authentication on 127.0.0.1:5432.
const HOST: &str = "127.0.0.1:5432";

/// Users and maintenance databases to try, in order (Debian's `postgres`, CI's `root`/`test`).
const ADMIN: [(&str, &str); 3] = [
    ("postgres", "postgres"),
    ("root", "test"),
    ("root", "postgres"),
];

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A database created for one test; [`PgTestDb::drop_db`] removes it.
#[derive(Debug)]
pub struct PgTestDb {
    /// `postgres://USER@127.0.0.1:5432/NAME`, no password.
    pub url: String,
    pub name: String,
    admin_url: String,
}

/// Whether PostgreSQL is required (`$MUTUAL_REQUIRE_POSTGRES` set and not empty).
pub fn postgres_required() -> bool {
    std::env::var_os("MUTUAL_REQUIRE_POSTGRES").is_some_and(|v| !v.is_empty())
}

async fn admin_connection() -> Option<(sqlx::PgConnection, String, String)> {
    for (user, db) in ADMIN {
        let url = format!("postgres://{user}@{HOST}/{db}");
        let Ok(opts) = url.parse::<sqlx::postgres::PgConnectOptions>() else {
            continue;
        };
        if let Ok(Ok(c)) =
            tokio::time::timeout(std::time::Duration::from_secs(10), opts.connect()).await
        {
            return Some((c, url, user.to_string()));
        }
    }
    None
}

impl PgTestDb {
    /// Creates `mutual_t_<unique>`. `None` (after printing the skip line) when no server answers
    /// and PostgreSQL is not required; a panic when it is.
    pub async fn create() -> Option<PgTestDb> {
        let Some((mut conn, admin_url, user)) = admin_connection().await else {
            if postgres_required() {
                panic!(
                    "no PostgreSQL on {HOST} and MUTUAL_REQUIRE_POSTGRES is set \
                     (start one: pg_ctlcluster 15 main start)"
                );
            }
            eprintln!("skipped: no PostgreSQL on {HOST}");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "mutual_t_{}_{}_{}",
            std::process::id(),
            nanos,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        // `name` is made of digits, letters and underscores only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE for a test");
        let _ = conn.close().await;
        Some(PgTestDb {
            url: format!("postgres://{user}@{HOST}/{name}"),
            name,
            admin_url,
        })
    }

    /// Drops the database, ending any connection still open to it.
    pub async fn drop_db(&self) {
        let Ok(opts) = self.admin_url.parse::<sqlx::postgres::PgConnectOptions>() else {
            return;
        };
        if let Ok(mut conn) = opts.connect().await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
            let _ = conn.close().await;
        }
    }
}

impl PgTestDb {
    /// Runs one statement as the admin user (e.g. to refuse connections to this database and end
    /// the open ones, simulating a database outage without stopping the shared server).
    pub async fn admin_exec(&self, sql: &str) -> Result<(), sqlx::Error> {
        let opts: sqlx::postgres::PgConnectOptions = self.admin_url.parse()?;
        let mut conn = opts.connect().await?;
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(())
    }

    /// The first column of the first row of `sql` as text, run as the admin user (`SHOW ssl`,
    /// a count cast to text).
    pub async fn admin_text(&self, sql: &str) -> Result<String, sqlx::Error> {
        use sqlx::Row;
        let opts: sqlx::postgres::PgConnectOptions = self.admin_url.parse()?;
        let mut conn = opts.connect().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut conn)
            .await?;
        let v: String = row.try_get(0)?;
        let _ = conn.close().await;
        Ok(v)
    }
}
