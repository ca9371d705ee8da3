//! The certificate inventory: every certificate the CA issued, its status and who asked for it,
//! plus the counters a CA must never reuse (CRL numbers).
//!
//! Why a crate of its own: the CA logic (mutual-pki) must not care which database holds the
//! inventory. Today that is an embedded SQLite file next to the CA keys; when a CA outgrows one
//! machine, a PostgreSQL backend is added as another implementation of [`Inventory`] and another
//! variant of [`Store`], without touching the callers.
//!
//! Concurrency: several `mutual cert issue` processes may write at once. SQLite runs in WAL mode
//! with a busy timeout, serial numbers carry a UNIQUE constraint (a collision is reported as
//! [`StoreError::DuplicateSerial`], never silently recorded), and counters are incremented with
//! one atomic `UPDATE ... RETURNING`.
#![forbid(unsafe_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

/// Everything that can go wrong with the inventory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the inventory database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("the inventory database {path} does not exist (run `mutual ca init` first?)")]
    Missing { path: PathBuf },
    #[error("cannot migrate the inventory database {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("serial {serial} is already in the inventory")]
    DuplicateSerial { serial: String },
    #[error("no certificate with serial {serial} in the inventory")]
    NotFound { serial: String },
    #[error("inventory database error during {op}: {source}")]
    Db {
        op: &'static str,
        source: sqlx::Error,
    },
    #[error("inventory row for serial {serial} is corrupt: {detail}")]
    Corrupt { serial: String, detail: String },
    /// A one-time token was presented a second time (nothing was recorded).
    #[error("token {jti} was already used")]
    TokenUsed { jti: String },
}

fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

/// A certificate's lifecycle state as shown to users. `Expired` is derived from `not_after` at
/// query time; only `Valid` and `Revoked` are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Valid,
    Revoked,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "valid" => Ok(Status::Valid),
            "revoked" => Ok(Status::Revoked),
            "expired" => Ok(Status::Expired),
            other => Err(format!(
                "unknown status {other:?} (expected valid, revoked or expired)"
            )),
        }
    }
}

/// A certificate about to be recorded.
#[derive(Clone, Debug)]
pub struct NewCert {
    /// Lowercase hex, no colons.
    pub serial: String,
    pub name: String,
    pub subject: String,
    /// `dns:x`, `ip:1.2.3.4`, `uri:...`
    pub sans: Vec<String>,
    /// `server`, `client` or `both`.
    pub usage: String,
    pub not_before: i64,
    pub not_after: i64,
    pub requested_by: Option<String>,
    /// Lowercase hex SHA-256 of the certificate's DER.
    pub sha256: String,
}

/// A certificate as recorded in the inventory.
#[derive(Clone, Debug, Serialize)]
pub struct CertRecord {
    pub serial: String,
    pub name: String,
    pub subject: String,
    pub sans: Vec<String>,
    pub usage: String,
    pub not_before: i64,
    pub not_after: i64,
    /// Status as of the query (revoked wins over expired).
    pub status: Status,
    pub revoked_at: Option<i64>,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
    pub sha256: String,
    pub created_at: i64,
    /// Who revoked it through the online CA (`api-revoke:<identity>`), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

/// Which rows `list` returns.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    /// Only certificates that are still valid and whose notAfter is within this window.
    pub expiring_within: Option<Duration>,
}

/// What `revoke` did.
#[derive(Clone, Debug)]
pub enum RevokeOutcome {
    Revoked(CertRecord),
    /// It was revoked before; nothing changed (the original time and reason are kept).
    AlreadyRevoked(CertRecord),
}

/// One entry of a CRL.
#[derive(Clone, Debug)]
pub struct RevokedEntry {
    pub serial: String,
    pub revoked_at: i64,
    pub reason: Option<String>,
}

/// The operations the CA needs from an inventory backend.
///
/// Methods return `Send` futures so callers can use them from multi-threaded runtimes (the
/// online CA). `now` is passed in rather than read here so that every backend agrees with the
/// caller's clock and tests can pin it.
pub trait Inventory {
    /// Records a newly issued certificate. A serial already present is `DuplicateSerial`.
    fn insert(&self, cert: &NewCert) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records a newly issued certificate and spends the one-time token `jti` that paid for it,
    /// in one transaction: either both are recorded or neither. A token already spent is
    /// `TokenUsed`, a serial already present `DuplicateSerial`.
    fn insert_with_token(
        &self,
        cert: &NewCert,
        jti: &str,
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Whether the one-time token `jti` was already spent.
    fn token_used(&self, jti: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Removes a row whose certificate could not be delivered (its files were not written).
    fn delete(&self, serial: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get(
        &self,
        serial: &str,
        now: i64,
    ) -> impl Future<Output = Result<Option<CertRecord>, StoreError>> + Send;
    fn list(
        &self,
        filter: &ListFilter,
        now: i64,
    ) -> impl Future<Output = Result<Vec<CertRecord>, StoreError>> + Send;
    fn revoke(
        &self,
        serial: &str,
        reason: &str,
        now: i64,
    ) -> impl Future<Output = Result<RevokeOutcome, StoreError>> + Send;
    /// [`Inventory::revoke`], also recording who revoked it (`revoked_by`).
    fn revoke_as(
        &self,
        serial: &str,
        reason: &str,
        now: i64,
        revoked_by: Option<&str>,
    ) -> impl Future<Output = Result<RevokeOutcome, StoreError>> + Send;
    /// Every revoked certificate (for the CRL).
    fn revoked(&self) -> impl Future<Output = Result<Vec<RevokedEntry>, StoreError>> + Send;
    /// Atomically increments and returns the named counter (the first value is 1).
    fn next_counter(&self, name: &str) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Number of rows (all statuses).
    fn count(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;
}

/// The inventory backend in use. A PostgreSQL variant goes here when it exists.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Store {
    Sqlite(SqliteStore),
}

impl Store {
    /// Opens (and with `create`, creates) the SQLite inventory at `path`.
    pub async fn open_sqlite(path: &Path, create: bool) -> Result<Store, StoreError> {
        Ok(Store::Sqlite(SqliteStore::open(path, create).await?))
    }

    /// Closes the pool cleanly (checkpoints the WAL).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.pool.close().await,
        }
    }
}

impl Inventory for Store {
    async fn insert(&self, cert: &NewCert) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.insert(cert).await,
        }
    }
    async fn insert_with_token(
        &self,
        cert: &NewCert,
        jti: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.insert_with_token(cert, jti, now).await,
        }
    }
    async fn token_used(&self, jti: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.token_used(jti).await,
        }
    }
    async fn delete(&self, serial: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.delete(serial).await,
        }
    }
    async fn get(&self, serial: &str, now: i64) -> Result<Option<CertRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.get(serial, now).await,
        }
    }
    async fn list(&self, filter: &ListFilter, now: i64) -> Result<Vec<CertRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list(filter, now).await,
        }
    }
    async fn revoke(
        &self,
        serial: &str,
        reason: &str,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        match self {
            Store::Sqlite(s) => s.revoke(serial, reason, now).await,
        }
    }
    async fn revoke_as(
        &self,
        serial: &str,
        reason: &str,
        now: i64,
        revoked_by: Option<&str>,
    ) -> Result<RevokeOutcome, StoreError> {
        match self {
            Store::Sqlite(s) => s.revoke_as(serial, reason, now, revoked_by).await,
        }
    }
    async fn revoked(&self) -> Result<Vec<RevokedEntry>, StoreError> {
        match self {
            Store::Sqlite(s) => s.revoked().await,
        }
    }
    async fn next_counter(&self, name: &str) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => s.next_counter(name).await,
        }
    }
    async fn count(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => s.count().await,
        }
    }
}

/// The embedded SQLite inventory (`inventory.db` in the CA directory).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const COLUMNS: &str = "serial, name, subject, sans, usage, not_before, not_after, status, \
                       revoked_at, reason, requested_by, sha256, created_at, revoked_by";

impl SqliteStore {
    /// Opens the database, in WAL mode with a generous busy timeout so that concurrent issuers
    /// wait for each other instead of failing, and applies pending migrations.
    pub async fn open(path: &Path, create: bool) -> Result<SqliteStore, StoreError> {
        if !create && !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(SqliteStore { pool })
    }

    fn row_to_record(row: &sqlx::sqlite::SqliteRow, now: i64) -> Result<CertRecord, StoreError> {
        let serial: String = row.try_get("serial").map_err(db("read row"))?;
        let sans_json: String = row.try_get("sans").map_err(db("read row"))?;
        let sans: Vec<String> =
            serde_json::from_str(&sans_json).map_err(|e| StoreError::Corrupt {
                serial: serial.clone(),
                detail: format!("sans is not a JSON array of strings: {e}"),
            })?;
        let stored: String = row.try_get("status").map_err(db("read row"))?;
        let not_after: i64 = row.try_get("not_after").map_err(db("read row"))?;
        let status = if stored == "revoked" {
            Status::Revoked
        } else if not_after <= now {
            Status::Expired
        } else {
            Status::Valid
        };
        Ok(CertRecord {
            name: row.try_get("name").map_err(db("read row"))?,
            subject: row.try_get("subject").map_err(db("read row"))?,
            sans,
            usage: row.try_get("usage").map_err(db("read row"))?,
            not_before: row.try_get("not_before").map_err(db("read row"))?,
            not_after,
            status,
            revoked_at: row.try_get("revoked_at").map_err(db("read row"))?,
            reason: row.try_get("reason").map_err(db("read row"))?,
            requested_by: row.try_get("requested_by").map_err(db("read row"))?,
            sha256: row.try_get("sha256").map_err(db("read row"))?,
            created_at: row.try_get("created_at").map_err(db("read row"))?,
            revoked_by: row.try_get("revoked_by").map_err(db("read row"))?,
            serial,
        })
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The certificate INSERT, on the pool or inside a transaction.
async fn insert_cert<'e, E>(exec: E, c: &NewCert) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let sans = serde_json::to_string(&c.sans).map_err(|e| StoreError::Corrupt {
        serial: c.serial.clone(),
        detail: e.to_string(),
    })?;
    let res = sqlx::query(
        "INSERT INTO certificates (serial, name, subject, sans, usage, not_before, not_after, \
         status, requested_by, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'valid', ?, ?, ?)",
    )
    .bind(&c.serial)
    .bind(&c.name)
    .bind(&c.subject)
    .bind(sans)
    .bind(&c.usage)
    .bind(c.not_before)
    .bind(c.not_after)
    .bind(&c.requested_by)
    .bind(&c.sha256)
    .bind(unix_now())
    .execute(exec)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::DuplicateSerial {
                serial: c.serial.clone(),
            })
        }
        Err(e) => Err(StoreError::Db {
            op: "insert certificate",
            source: e,
        }),
    }
}

impl Inventory for SqliteStore {
    async fn insert(&self, c: &NewCert) -> Result<(), StoreError> {
        insert_cert(&self.pool, c).await
    }

    async fn insert_with_token(&self, c: &NewCert, jti: &str, now: i64) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE semantics are not needed: the PRIMARY KEY on jti decides a race, and
        // a rollback (explicit or on drop) undoes the certificate row with it.
        let mut tx = self.pool.begin().await.map_err(db("begin transaction"))?;
        let spent = sqlx::query("INSERT INTO tokens_used (jti, used_at, serial) VALUES (?, ?, ?)")
            .bind(jti)
            .bind(now)
            .bind(&c.serial)
            .execute(&mut *tx)
            .await;
        match spent {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::TokenUsed {
                    jti: jti.to_string(),
                })
            }
            Err(e) => {
                return Err(StoreError::Db {
                    op: "record token use",
                    source: e,
                })
            }
        }
        insert_cert(&mut *tx, c).await?;
        tx.commit().await.map_err(db("commit issuance"))
    }

    async fn token_used(&self, jti: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS one FROM tokens_used WHERE jti = ?")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("look up token"))?;
        Ok(row.is_some())
    }

    async fn delete(&self, serial: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM certificates WHERE serial = ?")
            .bind(serial)
            .execute(&self.pool)
            .await
            .map_err(db("delete certificate"))?;
        Ok(())
    }

    async fn get(&self, serial: &str, now: i64) -> Result<Option<CertRecord>, StoreError> {
        // Only compile-time constants are spliced in; every value is bound.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM certificates WHERE serial = ?"
        )))
        .bind(serial)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("get certificate"))?;
        row.map(|r| Self::row_to_record(&r, now)).transpose()
    }

    async fn list(&self, f: &ListFilter, now: i64) -> Result<Vec<CertRecord>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM certificates WHERE 1=1");
        match f.status {
            Some(Status::Valid) => sql.push_str(" AND status = 'valid' AND not_after > ?1"),
            Some(Status::Revoked) => sql.push_str(" AND status = 'revoked'"),
            Some(Status::Expired) => sql.push_str(" AND status = 'valid' AND not_after <= ?1"),
            None => {}
        }
        if f.expiring_within.is_some() {
            sql.push_str(" AND status = 'valid' AND not_after > ?1 AND not_after <= ?2");
        }
        sql.push_str(" ORDER BY not_after ASC, serial ASC");
        let window = f
            .expiring_within
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        // `sql` is assembled from constant fragments only; every value is bound.
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(now.saturating_add(window))
            .fetch_all(&self.pool)
            .await
            .map_err(db("list certificates"))?;
        rows.iter().map(|r| Self::row_to_record(r, now)).collect()
    }

    async fn revoke(
        &self,
        serial: &str,
        reason: &str,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        self.revoke_as(serial, reason, now, None).await
    }

    async fn revoke_as(
        &self,
        serial: &str,
        reason: &str,
        now: i64,
        revoked_by: Option<&str>,
    ) -> Result<RevokeOutcome, StoreError> {
        // One conditional UPDATE: two concurrent revocations cannot both "win".
        let changed = sqlx::query(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?, reason = ?, \
             revoked_by = ? WHERE serial = ? AND status != 'revoked'",
        )
        .bind(now)
        .bind(reason)
        .bind(revoked_by)
        .bind(serial)
        .execute(&self.pool)
        .await
        .map_err(db("revoke certificate"))?
        .rows_affected();
        let rec = self
            .get(serial, now)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                serial: serial.to_string(),
            })?;
        Ok(if changed > 0 {
            RevokeOutcome::Revoked(rec)
        } else {
            RevokeOutcome::AlreadyRevoked(rec)
        })
    }

    async fn revoked(&self) -> Result<Vec<RevokedEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, reason FROM certificates WHERE status = 'revoked' \
             ORDER BY revoked_at ASC, serial ASC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("list revoked certificates"))?;
        rows.iter()
            .map(|r| {
                let serial: String = r.try_get("serial").map_err(db("read row"))?;
                let revoked_at: Option<i64> = r.try_get("revoked_at").map_err(db("read row"))?;
                Ok(RevokedEntry {
                    revoked_at: revoked_at.ok_or_else(|| StoreError::Corrupt {
                        serial: serial.clone(),
                        detail: "revoked without a revocation time".into(),
                    })?,
                    reason: r.try_get("reason").map_err(db("read row"))?,
                    serial,
                })
            })
            .collect()
    }

    async fn next_counter(&self, name: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO ca_counters (name, value) VALUES (?, 1) \
             ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
        )
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .map_err(db("increment counter"))?;
        row.try_get("value").map_err(db("read counter"))
    }

    async fn count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM certificates")
            .fetch_one(&self.pool)
            .await
            .map_err(db("count certificates"))?;
        row.try_get("n").map_err(db("read count"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

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
        }
    }

    #[tokio::test]
    async fn insert_list_revoke_counter() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_sqlite(&dir.path().join("inv.db"), true)
            .await
            .unwrap();
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
        assert_eq!(s.next_counter("crl").await.unwrap(), 1);
        assert_eq!(s.next_counter("crl").await.unwrap(), 2);
        assert_eq!(s.count().await.unwrap(), 2);
        s.delete("bb").await.unwrap();
        assert_eq!(s.count().await.unwrap(), 1);
        let missing = Store::open_sqlite(&dir.path().join("nope.db"), false).await;
        assert!(matches!(missing, Err(StoreError::Missing { .. })));
    }

    #[tokio::test]
    async fn token_use_is_atomic_with_issuance() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_sqlite(&dir.path().join("inv.db"), true)
            .await
            .unwrap();
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
    }
}
