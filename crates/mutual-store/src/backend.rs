//! The two backends: SQLite (one file, one host) and PostgreSQL (shared by replicas).
//!
//! Why one macro for both rather than sqlx's `Any` or generic code over `Database`: each backend
//! keeps its own concrete pool and types (no `Any` placeholder trap), yet the SQL, the error
//! mapping and the semantics are written once. Every statement uses `$N` placeholders, which
//! PostgreSQL takes natively and sqlx's SQLite driver maps to the same argument numbers; the SQL
//! itself sticks to what both databases share (`ON CONFLICT ... DO NOTHING/UPDATE`, `RETURNING`,
//! row-value comparisons).
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Database, QueryBuilder, Row};

use std::sync::Arc;

use crate::{
    CertRecord, CrlState, Cursor, Inventory, ListFilter, NewCert, Page, RevokeOutcome,
    RevokedEntry, SanMatch, Status, StoreError, StoreErrorCounts, StoreUrl, StoredCrl, TableCounts,
};

/// Fills `certificate_sans` from the `sans` JSON of every certificate (PostgreSQL): the backfill
/// of migrations/postgres/0004_sans.sql, also run by `ca migrate` after copying the rows.
pub const PG_SANS_FROM_CERTIFICATES: &str = "INSERT INTO certificate_sans (serial, kind, value) \
     SELECT c.serial, lower(split_part(j.s, ':', 1)), substr(j.s, strpos(j.s, ':') + 1) \
     FROM certificates AS c, json_array_elements_text(c.sans::json) AS j(s) \
     WHERE strpos(j.s, ':') > 1 ON CONFLICT DO NOTHING";

pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub(crate) const COLUMNS: &str =
    "serial, name, subject, sans, usage, not_before, not_after, status, \
     revoked_at, reason, requested_by, sha256, created_at, revoked_by, issuer, key_type";

/// `PRAGMA wal_autocheckpoint` of the inventory's connections (see [`SqliteStore::open`]).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 4000;
/// `PRAGMA cache_size` of the inventory's connections: negative, so KiB rather than pages.
const SQLITE_CACHE_KIB: i32 = -32 * 1024;

/// The embedded SQLite inventory (`inventory.db` in the CA directory by default).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
    pub(crate) errors: Arc<StoreErrorCounts>,
}

/// The PostgreSQL inventory several CA replicas share.
#[derive(Clone, Debug)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    /// Password-free, for messages.
    url: String,
    pub(crate) errors: Arc<StoreErrorCounts>,
}

impl SqliteStore {
    /// Opens the database, in WAL mode with a generous busy timeout so that concurrent issuers
    /// wait for each other instead of failing, and applies pending migrations.
    pub async fn open(path: &Path, create: bool) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::new()
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // The commit that grows the WAL past this many pages copies them into the database
            // and fsyncs it before it returns (SQLite's default is 1,000 pages, about 700
            // issued certificates with their indexes): a 16 MiB WAL checkpoints a quarter as
            // often, and the hot index pages written many times over are copied once per
            // checkpoint. Durability is the same (every commit still fsyncs the WAL).
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            // Each issuance inserts into indexes keyed by random values (serial, SHA-256, SAN
            // values): with SQLite's default 2 MiB page cache most of those inserts read their
            // leaf page back from the kernel (`pread`, 8% of the issuing process's CPU in a
            // `perf` profile). Up to 32 MiB per connection (two connections), taken as used.
            .pragma("cache_size", SQLITE_CACHE_KIB.to_string());
        let store = Self::connect(path, create, opts, 2).await?;
        SQLITE_MIGRATOR
            .run(&store.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(store)
    }

    /// Opens an existing database read-only and without migrating it: `ca migrate` copies from
    /// it and must leave the file exactly as it was.
    pub async fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::new().read_only(true);
        Self::connect(path, false, opts, 1).await
    }

    /// A pool of `max_connections` to the file `path` with `opts` and a 30 s busy timeout; a
    /// missing file is an error unless `create`.
    async fn connect(
        path: &Path,
        create: bool,
        opts: SqliteConnectOptions,
        max_connections: u32,
    ) -> Result<SqliteStore, StoreError> {
        if !create && !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        let opts = opts.filename(path).busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
            errors: Arc::default(),
        })
    }

    pub fn url(&self) -> StoreUrl {
        StoreUrl::Sqlite(self.path.clone())
    }

    pub async fn close(&self) {
        self.pool.close().await
    }

    /// Whether `table` exists (an old database opened read-only may predate a migration).
    pub(crate) async fn has_table(&self, table: &str) -> Result<bool, StoreError> {
        let sql = "SELECT 1 AS one FROM sqlite_master WHERE type = 'table' AND name = $1";
        let row = run!(fetch_optional(&self.pool), "inspect schema", sql, table)?;
        Ok(row.is_some())
    }

    /// Whether `table` has `column` (an old database opened read-only may predate a migration).
    pub(crate) async fn has_column(&self, table: &str, column: &str) -> Result<bool, StoreError> {
        let sql = "SELECT 1 AS one FROM pragma_table_info($1) WHERE name = $2";
        let row = run!(
            fetch_optional(&self.pool),
            "inspect schema",
            sql,
            table,
            column
        )?;
        Ok(row.is_some())
    }
}

impl PgStore {
    /// Connects to `url` (no password in it: `password`, else libpq's environment and pgpass
    /// file) and applies pending migrations under the migrator's `pg_advisory_lock`.
    pub async fn open(
        url: &str,
        password: Option<&str>,
        max_connections: u32,
    ) -> Result<PgStore, StoreError> {
        let connect_err = |source| StoreError::Connect {
            url: url.to_string(),
            source,
        };
        let mut opts = PgConnectOptions::from_str(url).map_err(connect_err)?;
        if let Some(p) = password {
            opts = opts.password(p);
        }
        let pool = PgPoolOptions::new()
            .max_connections(if max_connections == 0 {
                8
            } else {
                max_connections
            })
            // Fail a request rather than hang it when the database is gone: the caller answers
            // 503 and retries; the pool reconnects by itself when the database returns.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(connect_err)?;
        PG_MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::MigrateDb {
                url: url.to_string(),
                source,
            })?;
        Ok(PgStore {
            pool,
            url: url.to_string(),
            errors: Arc::default(),
        })
    }

    pub fn url(&self) -> StoreUrl {
        StoreUrl::Postgres(self.url.clone())
    }

    pub async fn close(&self) {
        self.pool.close().await
    }
}

pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

row_reader! {
    /// A row of `SELECT {COLUMNS}` as a record, on either backend.
    fn record_from_row(row, now: i64) -> CertRecord {
        let serial: String = row.try_get("serial").map_err(db("read row"))?;
        let sans_json: String = row.try_get("sans").map_err(db("read row"))?;
        let sans: Vec<String> = serde_json::from_str(&sans_json).map_err(|e| StoreError::Corrupt {
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
            issuer: row.try_get("issuer").map_err(db("read row"))?,
            key_type: row.try_get("key_type").map_err(db("read row"))?,
            serial,
        })
    }
}

row_reader! {
    /// A row of `serial, revoked_at, reason` (a CRL's entry), on either backend.
    pub(crate) fn revoked_from_row(r) -> RevokedEntry {
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
    }
}

row_reader! {
    /// A row of `number, der, this_update, next_update` (a stored CRL), on either backend.
    pub(crate) fn crl_from_row(r) -> StoredCrl {
        Ok(StoredCrl {
            number: r.try_get("number").map_err(db("read CRL"))?,
            der: r.try_get("der").map_err(db("read CRL"))?,
            this_update: r.try_get("this_update").map_err(db("read CRL"))?,
            next_update: r.try_get("next_update").map_err(db("read CRL"))?,
        })
    }
}

row_reader! {
    /// A row of `revoked, number, next_update` (a CRL's state), on either backend.
    pub(crate) fn crl_state_from_row(r) -> CrlState {
        Ok(CrlState {
            revoked: r.try_get("revoked").map_err(db("read CRL state"))?,
            number: r.try_get("number").map_err(db("read CRL state"))?,
            next_update: r.try_get("next_update").map_err(db("read CRL state"))?,
        })
    }
}

/// The least string greater than every string that starts with `prefix`, in code point order
/// (which is UTF-8 byte order): the prefix with its last character incremented, after dropping
/// trailing `char::MAX`es. `None`: no upper bound (every string from `prefix` on qualifies).
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The `list`/`list_page` query. Only constant fragments are pushed; every value is bound.
fn list_query<DB>(
    head: &'static str,
    f: &ListFilter,
    now: i64,
    after: Option<&Cursor>,
    limit: Option<u32>,
) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut qb = filtered::<DB>(head, COLUMNS, f, now);
    if let Some(c) = after {
        qb.push(" AND (not_after, serial) > (")
            .push_bind(c.not_after)
            .push(", ")
            .push_bind(c.serial.clone())
            .push(")");
    }
    qb.push(" ORDER BY not_after ASC, serial ASC");
    if let Some(l) = limit {
        qb.push(" LIMIT ").push_bind(i64::from(l));
    }
    qb
}

/// `SELECT <select> FROM certificates WHERE` the filter: the one reading of a [`ListFilter`],
/// shared by the listing and by [`Inventory::count_matching`].
fn filtered<DB>(
    head: &'static str,
    select: &'static str,
    f: &ListFilter,
    now: i64,
) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut qb = QueryBuilder::<DB>::new(head);
    qb.push("SELECT ")
        .push(select)
        .push(" FROM certificates WHERE 1=1");
    match f.status {
        Some(Status::Valid) => {
            qb.push(" AND status = 'valid' AND not_after > ")
                .push_bind(now);
        }
        Some(Status::Revoked) => {
            qb.push(" AND status = 'revoked'");
        }
        Some(Status::Expired) => {
            qb.push(" AND status = 'valid' AND not_after <= ")
                .push_bind(now);
        }
        None => {}
    }
    if let Some(w) = f.expiring_within {
        let window = i64::try_from(w.as_secs()).unwrap_or(i64::MAX);
        qb.push(" AND status = 'valid' AND not_after > ")
            .push_bind(now)
            .push(" AND not_after <= ")
            .push_bind(now.saturating_add(window));
    }
    if let Some(SanMatch { kind, value }) = &f.san {
        // The (kind, value) index finds the few serials; the serial index finds their rows.
        qb.push(" AND serial IN (SELECT serial FROM certificate_sans WHERE kind = ")
            .push_bind(kind.clone())
            .push(" AND value = ")
            .push_bind(value.clone())
            .push(")");
    }
    if let Some(n) = &f.name {
        qb.push(" AND name = ").push_bind(n.clone());
    }
    if let Some(h) = &f.sha256 {
        qb.push(" AND sha256 = ").push_bind(h.clone());
    }
    if let Some(r) = f.requested_by.as_deref().filter(|r| !r.is_empty()) {
        // A prefix as a range (`>= prefix AND < the next string after every one that starts
        // with it`), so that the requested_by index answers it (migration 0009) and '%' and '_'
        // mean themselves. The compare must be bytewise: SQLite's default BINARY collation is;
        // on PostgreSQL the column's collation may be a locale's, so the compare (and the
        // index) say COLLATE "C".
        let col = if DB::NAME == "PostgreSQL" {
            "requested_by COLLATE \"C\""
        } else {
            "requested_by"
        };
        qb.push(" AND ")
            .push(col)
            .push(" >= ")
            .push_bind(r.to_string());
        if let Some(end) = prefix_end(r) {
            qb.push(" AND ").push(col).push(" < ").push_bind(end);
        }
    }
    if let Some(i) = &f.issuer {
        qb.push(" AND issuer = ").push_bind(i.clone());
    }
    match f.key_type.as_deref() {
        Some(crate::KEY_TYPE_UNKNOWN) => {
            qb.push(" AND key_type IS NULL");
        }
        Some(k) => {
            qb.push(" AND key_type = ").push_bind(k.to_string());
        }
        None => {}
    }
    qb
}

/// The row counts of every table, on a pool or inside a transaction.
macro_rules! table_counts_on {
    ($exec:expr) => {{
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM certificates) AS certificates, \
             (SELECT COUNT(*) FROM certificates WHERE status = 'revoked') AS revoked, \
             (SELECT COUNT(*) FROM tokens_used) AS tokens, \
             (SELECT COUNT(*) FROM ca_counters) AS counters, \
             (SELECT COUNT(*) FROM current_crl) AS crls",
        )
        .fetch_one($exec)
        .await
        .map_err(db("count rows"))?;
        Ok::<_, StoreError>(TableCounts {
            certificates: row.try_get("certificates").map_err(db("read count"))?,
            revoked: row.try_get("revoked").map_err(db("read count"))?,
            tokens: row.try_get("tokens").map_err(db("read count"))?,
            counters: row.try_get("counters").map_err(db("read count"))?,
            crls: row.try_get("crls").map_err(db("read count"))?,
        })
    }};
}
pub(crate) use table_counts_on;

/// The most certificate rows one statement of `insert_certs` writes (13 parameters each).
const CERT_CHUNK: usize = 256;
/// The most SAN index rows one statement writes (3 parameters each).
const SAN_CHUNK: usize = 512;

/// The largest power of two that is at most `n` and at most `cap` (a power of two).
pub(crate) fn pow2_chunk(n: usize, cap: usize) -> usize {
    debug_assert!(n > 0 && cap.is_power_of_two());
    (1usize << (usize::BITS - 1 - n.leading_zeros())).min(cap)
}

/// The [`Inventory`] implementation, written once for both concrete backends.
macro_rules! impl_inventory {
    ($store:ty, $db:ty) => {
        impl $store {
            /// The certificate row and its SAN index rows, inside the caller's transaction: the
            /// one-row case of [`Self::insert_certs`] (the same statements), with the duplicate
            /// serial named.
            pub(crate) async fn insert_cert(
                conn: &mut <$db as sqlx::Database>::Connection,
                c: &NewCert,
            ) -> Result<(), StoreError> {
                if Self::insert_certs(conn, &[c]).await? {
                    Ok(())
                } else {
                    Err(StoreError::DuplicateSerial {
                        serial: c.serial.clone(),
                    })
                }
            }
        }

        impl $store {
            /// The rows of `certs` and their SAN index rows in a few multi-row statements inside
            /// the caller's transaction (a group commit's rows: one statement per chunk instead of
            /// two per certificate). Chunks are powers of two, so a handful of statement texts
            /// serve every group size and stay prepared. `Ok(false)`: a serial is recorded
            /// already (which one is not known: the caller writes the rows one by one to find
            /// it); the transaction must then be rolled back.
            pub(crate) async fn insert_certs(
                conn: &mut <$db as sqlx::Database>::Connection,
                certs: &[&NewCert],
            ) -> Result<bool, StoreError> {
                let created_at = unix_now();
                let mut rest = certs;
                while !rest.is_empty() {
                    let (chunk, tail) = rest.split_at(pow2_chunk(rest.len(), CERT_CHUNK));
                    rest = tail;
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO certificates (serial, name, subject, sans, usage, not_before, \
                         not_after, status, requested_by, sha256, created_at, issuer, der, \
                         key_type) ",
                    );
                    let mut sans = Vec::with_capacity(chunk.len());
                    for c in chunk {
                        sans.push(serde_json::to_string(&c.sans).map_err(|e| {
                            StoreError::Corrupt {
                                serial: c.serial.clone(),
                                detail: e.to_string(),
                            }
                        })?);
                    }
                    qb.push_values(chunk.iter().zip(sans), |mut b, (c, sans)| {
                        b.push_bind(&c.serial)
                            .push_bind(&c.name)
                            .push_bind(&c.subject)
                            .push_bind(sans)
                            .push_bind(&c.usage)
                            .push_bind(c.not_before)
                            .push_bind(c.not_after)
                            .push("'valid'")
                            .push_bind(&c.requested_by)
                            .push_bind(&c.sha256)
                            .push_bind(created_at)
                            .push_bind(&c.issuer)
                            .push_bind(&c.der)
                            .push_bind(&c.key_type);
                    });
                    match qb.build().execute(&mut *conn).await {
                        Ok(_) => {}
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                            return Ok(false)
                        }
                        Err(e) => {
                            return Err(StoreError::Db {
                                op: "insert certificates",
                                source: e,
                            })
                        }
                    }
                }
                let index: Vec<(&str, SanMatch)> = certs
                    .iter()
                    .flat_map(|c| {
                        c.sans
                            .iter()
                            .filter_map(|s| SanMatch::from_stored(s))
                            .map(|m| (c.serial.as_str(), m))
                    })
                    .collect();
                let mut rest = index.as_slice();
                while !rest.is_empty() {
                    let (chunk, tail) = rest.split_at(pow2_chunk(rest.len(), SAN_CHUNK));
                    rest = tail;
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO certificate_sans (serial, kind, value) ",
                    );
                    qb.push_values(chunk, |mut b, (serial, m)| {
                        b.push_bind(*serial)
                            .push_bind(&m.kind)
                            .push_bind(&m.value);
                    });
                    qb.push(" ON CONFLICT DO NOTHING");
                    qb.build()
                        .execute(&mut *conn)
                        .await
                        .map_err(db("index certificate SANs"))?;
                }
                Ok(true)
            }
        }

        impl $store {
            /// Spends the one-time token `jti` for `serial` inside the caller's transaction;
            /// `false`: it was spent already (nothing written).
            pub(crate) async fn spend_token(
                conn: &mut <$db as sqlx::Database>::Connection,
                jti: &str,
                now: i64,
                serial: &str,
            ) -> Result<bool, StoreError> {
                let spent = sqlx::query(
                    "INSERT INTO tokens_used (jti, used_at, serial) VALUES ($1, $2, $3) \
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(jti)
                .bind(now)
                .bind(serial)
                .execute(&mut *conn)
                .await
                .map_err(db("record token use"))?;
                Ok(spent.rows_affected() == 1)
            }
        }

        impl Inventory for $store {
            async fn insert(&self, c: &NewCert) -> Result<(), StoreError> {
                // The row and its SAN index rows commit together or not at all.
                let mut tx = self.pool.begin().await.map_err(db("begin transaction"))?;
                Self::insert_cert(&mut tx, c).await?;
                tx.commit().await.map_err(db("commit certificate"))
            }

            async fn insert_many(&self, certs: &[NewCert]) -> Result<(), StoreError> {
                // One transaction for the whole chunk: a batch of thousands pays for one
                // commit (one fsync) per chunk, and a failure leaves none of the chunk behind.
                let mut tx = self.pool.begin().await.map_err(db("begin transaction"))?;
                for c in certs {
                    Self::insert_cert(&mut tx, c).await?;
                }
                tx.commit().await.map_err(db("commit certificates"))
            }

            async fn insert_with_token(
                &self,
                c: &NewCert,
                jti: &str,
                now: i64,
            ) -> Result<(), StoreError> {
                // A conditional insert decides a race: of N transactions spending one jti, the
                // first to insert wins, the others wait for it (row lock on the PRIMARY KEY) and
                // then insert nothing. A rollback (explicit or on drop) undoes the certificate
                // row with the token, so a failed issuance leaves the token unspent.
                let mut tx = self.pool.begin().await.map_err(db("begin transaction"))?;
                if !Self::spend_token(&mut tx, jti, now, &c.serial).await? {
                    return Err(StoreError::TokenUsed {
                        jti: jti.to_string(),
                    });
                }
                Self::insert_cert(&mut tx, c).await?;
                tx.commit().await.map_err(db("commit issuance"))
            }

            async fn token_used(&self, jti: &str) -> Result<bool, StoreError> {
                let sql = "SELECT 1 AS one FROM tokens_used WHERE jti = $1";
                let row = run!(fetch_optional(&self.pool), "look up token", sql, jti)?;
                Ok(row.is_some())
            }

            async fn delete(&self, serial: &str) -> Result<(), StoreError> {
                let sql = "DELETE FROM certificates WHERE serial = $1";
                run!(execute(&self.pool), "delete certificate", sql, serial)?;
                Ok(())
            }

            async fn get(&self, serial: &str, now: i64) -> Result<Option<CertRecord>, StoreError> {
                // Only compile-time constants are spliced in; every value is bound.
                let sql = format!("SELECT {COLUMNS} FROM certificates WHERE serial = $1");
                let sql = sqlx::AssertSqlSafe(sql);
                let row = run!(fetch_optional(&self.pool), "get certificate", sql, serial)?;
                row.map(|r| record_from_row(&r, now)).transpose()
            }

            async fn certificate_der(&self, serial: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let sql = "SELECT der FROM certificates WHERE serial = $1";
                let row = run!(fetch_optional(&self.pool), "get certificate DER", sql, serial)?;
                match row {
                    Some(r) => r.try_get("der").map_err(db("read certificate DER")),
                    None => Ok(None),
                }
            }

            async fn list(&self, f: &ListFilter, now: i64) -> Result<Vec<CertRecord>, StoreError> {
                let mut qb = list_query::<$db>("", f, now, None, None);
                let rows = qb
                    .build()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db("list certificates"))?;
                rows.iter().map(|r| record_from_row(r, now)).collect()
            }

            async fn list_page(
                &self,
                f: &ListFilter,
                now: i64,
                after: Option<&Cursor>,
                limit: u32,
            ) -> Result<Page, StoreError> {
                let limit = limit.max(1);
                let mut qb = list_query::<$db>("", f, now, after, Some(limit));
                let rows = qb
                    .build()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db("list certificates"))?;
                let rows = rows
                    .iter()
                    .map(|r| record_from_row(r, now))
                    .collect::<Result<Vec<_>, _>>()?;
                let next = if rows.len() == limit as usize {
                    rows.last().map(|r| Cursor {
                        not_after: r.not_after,
                        serial: r.serial.clone(),
                    })
                } else {
                    None
                };
                Ok(Page { rows, next })
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
                let sql = "UPDATE certificates SET status = 'revoked', revoked_at = $1, \
                           reason = $2, revoked_by = $3 WHERE serial = $4 AND status != 'revoked'";
                let op = "revoke certificate";
                let changed = run!(execute(&self.pool), op, sql, now, reason, revoked_by, serial)?
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
                    "SELECT serial, revoked_at, reason FROM certificates \
                     WHERE status = 'revoked' ORDER BY revoked_at ASC, serial ASC",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(db("list revoked certificates"))?;
                rows.iter().map(revoked_from_row).collect()
            }

            async fn next_counter(&self, name: &str) -> Result<i64, StoreError> {
                // One statement: the row lock (PostgreSQL) or the write lock (SQLite) makes
                // concurrent increments queue, so every caller gets a distinct, higher value.
                let row = sqlx::query(
                    "INSERT INTO ca_counters (name, value) VALUES ($1, 1) \
                     ON CONFLICT (name) DO UPDATE SET value = ca_counters.value + 1 \
                     RETURNING value",
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

            async fn count_matching(&self, f: &ListFilter, now: i64) -> Result<i64, StoreError> {
                let mut qb = filtered::<$db>("", "COUNT(*) AS n", f, now);
                let row = qb
                    .build()
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db("count certificates"))?;
                row.try_get("n").map_err(db("read count"))
            }

            async fn store_crl(&self, crl: &StoredCrl) -> Result<bool, StoreError> {
                let sql = "INSERT INTO current_crl (id, number, der, this_update, next_update) \
                           VALUES (1, $1, $2, $3, $4) \
                           ON CONFLICT (id) DO UPDATE SET number = excluded.number, \
                           der = excluded.der, this_update = excluded.this_update, \
                           next_update = excluded.next_update \
                           WHERE current_crl.number < excluded.number";
                let (number, der, this, next) = (crl.number, &crl.der, crl.this_update, crl.next_update);
                let res = run!(execute(&self.pool), "store CRL", sql, number, der, this, next)?;
                Ok(res.rows_affected() > 0)
            }

            async fn current_crl(&self) -> Result<Option<StoredCrl>, StoreError> {
                let row = sqlx::query(
                    "SELECT number, der, this_update, next_update FROM current_crl WHERE id = 1",
                )
                .fetch_optional(&self.pool)
                .await
                .map_err(db("read CRL"))?;
                row.as_ref().map(crl_from_row).transpose()
            }

            async fn crl_state(&self) -> Result<CrlState, StoreError> {
                let row = sqlx::query(
                    "SELECT (SELECT COUNT(*) FROM certificates WHERE status = 'revoked') AS revoked, \
                     (SELECT number FROM current_crl WHERE id = 1) AS number, \
                     (SELECT next_update FROM current_crl WHERE id = 1) AS next_update",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(db("read CRL state"))?;
                crl_state_from_row(&row)
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(db("ping"))?;
                Ok(())
            }

            async fn table_counts(&self) -> Result<TableCounts, StoreError> {
                table_counts_on!(&self.pool)
            }
        }
    };
}

impl_inventory!(SqliteStore, sqlx::Sqlite);
impl_inventory!(PgStore, sqlx::Postgres);

impl SqliteStore {
    /// The plan SQLite makes for the inventory page's query (`EXPLAIN QUERY PLAN`), one line
    /// per step: how tests (and an operator) check that a filter is an index search.
    pub async fn explain_list(
        &self,
        f: &ListFilter,
        now: i64,
        limit: Option<u32>,
    ) -> Result<Vec<String>, StoreError> {
        let mut qb = list_query::<sqlx::Sqlite>("EXPLAIN QUERY PLAN ", f, now, None, limit);
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db("explain list"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").map_err(db("explain list")))
            .collect()
    }
}

impl PgStore {
    /// The plan PostgreSQL makes for the inventory page's query (`EXPLAIN`), with sequential
    /// scans priced out (`enable_seqscan = off` on that one connection, then reset), so that a
    /// small test table still shows whether an index *can* answer the filter.
    pub async fn explain_list(
        &self,
        f: &ListFilter,
        now: i64,
        limit: Option<u32>,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db("explain list"))?;
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .map_err(db("explain list"))?;
        let mut qb = list_query::<sqlx::Postgres>("EXPLAIN ", f, now, None, limit);
        let rows = qb.build().fetch_all(&mut *conn).await;
        let reset = sqlx::query("RESET enable_seqscan")
            .execute(&mut *conn)
            .await;
        let rows = rows.map_err(db("explain list"))?;
        reset.map_err(db("explain list"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(db("explain list")))
            .collect()
    }
}

#[cfg(test)]
mod prefix_tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("token:").as_deref(), Some("token;"));
        assert_eq!(prefix_end("acme:acct7").as_deref(), Some("acme:acct8"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }
}

#[cfg(test)]
mod sqlite_settings_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every connection of the pool has the settings durability and speed rest on: WAL,
    /// synchronous=FULL (2), the checkpoint threshold and the page cache (issue 20).
    #[tokio::test]
    async fn every_connection_has_the_durability_and_cache_settings() {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("i.db"), true)
            .await
            .unwrap();
        let mut conns = Vec::new();
        for _ in 0..2 {
            conns.push(s.pool.acquire().await.unwrap());
        }
        for c in &mut conns {
            for (sql, want) in [
                ("PRAGMA journal_mode", "wal".to_string()),
                ("PRAGMA synchronous", "2".to_string()),
                (
                    "PRAGMA wal_autocheckpoint",
                    WAL_AUTOCHECKPOINT_PAGES.to_string(),
                ),
                ("PRAGMA cache_size", SQLITE_CACHE_KIB.to_string()),
            ] {
                let row = sqlx::query(sql).fetch_one(&mut **c).await.unwrap();
                let got = row
                    .try_get::<String, _>(0)
                    .or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()))
                    .unwrap();
                assert_eq!(got, want, "{sql}");
            }
        }
    }
}
