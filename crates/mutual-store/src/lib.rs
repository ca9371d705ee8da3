//! The certificate inventory: every certificate the CA issued, its status and who asked for it,
//! plus the counters a CA must never reuse (CRL numbers), the one-time tokens already spent and
//! the current CRL.
//!
//! Why a crate of its own: the CA logic (mutual-pki) must not care which database holds the
//! inventory. Two backends implement [`Inventory`] behind the [`Store`] enum: an embedded SQLite
//! file next to the CA keys (the zero-setup default), and PostgreSQL, which several `mutual ca
//! serve` replicas share. Each has its own concrete pool and its own migrations
//! (`migrations/sqlite`, `migrations/postgres`), one schema; sqlx's `Any` driver is not used (its
//! query builder emits `?` placeholders on PostgreSQL).
//!
//! Concurrency, the same on both: serial numbers carry a UNIQUE constraint (a collision is
//! [`StoreError::DuplicateSerial`], never silently recorded), a token is spent with a conditional
//! `INSERT ... ON CONFLICT DO NOTHING` in the issuance transaction (exactly once however many
//! processes race), counters are incremented with one atomic `UPDATE ... RETURNING`, and the
//! stored CRL is only ever replaced by one with a higher number. SQLite runs in WAL mode with a
//! busy timeout so that concurrent `mutual cert issue` processes wait for each other.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// `$e` with `$s` bound to the backend store behind a [`Store`]: the one way every trait of this
/// crate forwards a call to SQLite or PostgreSQL.
macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

/// `$sql` with the values bound as `$1`, `$2`, ... in order, run by `$how` (`execute`,
/// `fetch_one`, `fetch_optional` or `fetch_all`) on `$on` (a pool or a transaction's
/// connection); a failure is a [`StoreError::Db`] named `$op`. The one bind-and-run chain of
/// this crate, for both backends.
macro_rules! run {
    ($how:ident($on:expr), $op:expr, $sql:expr $(, $v:expr)* $(,)?) => {
        sqlx::query($sql)
            $(.bind($v))*
            .$how($on)
            .await
            .map_err($crate::backend::db($op))
    };
}

/// A store trait of async methods, each returning `Result<T, StoreError>` as a `Send` future,
/// and its implementation for [`Store`], which forwards every method to the backend: the
/// signatures are written once, here, instead of once in the trait and again in the forwarding.
/// Led by `counted`, every forwarded call is also timed and its failures counted under the
/// method's name ([`counted!`]).
macro_rules! store_trait {
    (counted $($trait:tt)*) => {
        store_trait!(@with counted $($trait)*);
    };
    (
        $(#[$tm:meta])*
        pub trait $($trait:tt)*
    ) => {
        store_trait!(@with dispatch_op $(#[$tm])* pub trait $($trait)*);
    };
    (
        @with $forward:ident
        $(#[$tm:meta])*
        pub trait $name:ident {
            $(
                $(#[$m:meta])*
                fn $f:ident(&self $(, $a:ident: $t:ty)* $(,)?) -> $out:ty;
            )*
        }
    ) => {
        $(#[$tm])*
        pub trait $name {
            $(
                $(#[$m])*
                fn $f(&self $(, $a: $t)*)
                    -> impl std::future::Future<Output = Result<$out, StoreError>> + Send;
            )*
        }

        impl $name for Store {
            $(
                $(#[$m])*
                async fn $f(&self $(, $a: $t)*) -> Result<$out, StoreError> {
                    $forward!(self, stringify!($f), s => s.$f($($a),*).await)
                }
            )*
        }
    };
}

/// [`dispatch!`] for a call named `$op`, not counted ([`store_trait!`] without `counted`).
macro_rules! dispatch_op {
    ($self:ident, $op:expr, $s:ident => $e:expr) => {
        dispatch!($self, $s => $e)
    };
}

/// [`dispatch!`], counting a failure in the store's [`StoreErrorCounts`] under `op` and timing
/// the call.
macro_rules! counted {
    ($self:ident, $op:expr, $s:ident => $e:expr) => {{
        let started = std::time::Instant::now();
        let r = dispatch!($self, $s => $e);
        $self.note($op, started, r)
    }};
}

/// A function reading one row of either backend into a value: `fn name(row, args) -> T { body }`
/// becomes `fn name<R>(row: &R, args) -> Result<T, StoreError>` for every row type whose
/// columns decode to the types this crate stores (text, integers, bytes, each maybe NULL).
macro_rules! row_reader {
    (
        $(#[$m:meta])*
        $vis:vis fn $name:ident($row:ident $(, $arg:ident: $ty:ty)*) -> $out:ty $body:block
    ) => {
        $(#[$m])*
        $vis fn $name<R>($row: &R $(, $arg: $ty)*) -> Result<$out, StoreError>
        where
            R: sqlx::Row,
            for<'c> &'c str: sqlx::ColumnIndex<R>,
            String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            Vec<u8>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        $body
    };
}

mod acme;
mod backend;
mod copy;
mod entries;
mod est;
mod group;
mod issuers;
mod location;
#[doc(hidden)]
pub mod testing;

pub use acme::{AcmeAccount, AcmeKind, AcmeObject, AcmeStore, EabKey};
pub use backend::PG_SANS_FROM_CERTIFICATES;
pub use backend::{PgStore, SqliteStore};
pub use copy::{copy_sqlite_to_postgres, CopyReport, TableCounts};
pub use entries::{EntryStore, RegistrationEntry};
pub use est::{EstMove, EstRequest, EstStore};
#[doc(hidden)]
pub use group::CommitGate;
pub use group::{GroupCommit, GroupItem, GroupStats};
pub use issuers::FIRST_ISSUER;
pub use location::{StoreUrl, StoreUrlError};

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
    /// The transaction recording a group of concurrent issuances failed (see [`GroupCommit`]):
    /// every issuance of the group failed with it and none of its rows was recorded.
    #[error("the transaction recording {rows} certificates failed (none was recorded): {detail}")]
    GroupCommit {
        rows: usize,
        detail: String,
        /// Whether the database could not be reached ([`StoreError::is_unavailable`]).
        unavailable: bool,
    },
    /// The PostgreSQL server cannot be reached or refused the login. `url` has no password.
    #[error("cannot connect to the inventory database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot migrate the inventory database {url}: {source}")]
    MigrateDb {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Url(#[from] StoreUrlError),
    /// `ca init` or `ca migrate --to` onto a database that already holds an inventory.
    #[error(
        "the inventory database {url} is not empty ({certificates} certificates, {tokens} spent \
         tokens, {counters} counters): refusing to mix two CAs in one database"
    )]
    NotEmpty {
        url: String,
        certificates: i64,
        tokens: i64,
        counters: i64,
    },
    /// `ca migrate` copied rows but the counts on both sides differ (the copy was rolled back).
    #[error("copy verification failed for {table}: {source_rows} rows in the source, {target_rows} in the target (nothing was committed)")]
    CopyMismatch {
        table: &'static str,
        source_rows: i64,
        target_rows: i64,
    },
}

impl StoreError {
    /// Whether the database could not be reached (connection refused or broken, no pooled
    /// connection within the acquire timeout, the server shutting down or refusing connections),
    /// as opposed to a query or data error: the request may succeed on a replica, or here later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Connect { .. } => true,
            StoreError::GroupCommit { unavailable, .. } => *unavailable,
            StoreError::Db { source, .. } | StoreError::Open { source, .. } => {
                sqlx_unavailable(source)
            }
            _ => false,
        }
    }
}

impl StoreError {
    /// `Some("unavailable")` or `Some("error")` for a failed store call, `None` for an answer
    /// that is not a failure (see [`StoreErrorCounts`]).
    pub fn failure_kind(&self) -> Option<&'static str> {
        if self.is_unavailable() {
            return Some("unavailable");
        }
        match self {
            StoreError::Open { .. }
            | StoreError::Migrate { .. }
            | StoreError::Db { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Connect { .. }
            | StoreError::GroupCommit { .. }
            | StoreError::MigrateDb { .. } => Some("error"),
            _ => None,
        }
    }
}

fn sqlx_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // The connection broke during the handshake: with TLS compiled in, a server (or a cut
        // network path) that closes right after accepting TCP answers the SSLRequest with EOF,
        // "unexpected response from SSLRequest: 0x00". A connection failure, not a query error.
        sqlx::Error::Protocol(m) => m.contains("SSLRequest") || m.contains("unexpected EOF"),
        // Class 08 connection exceptions; 57P01-57P03 admin/crash shutdown, cannot connect now;
        // 55000 for a database that does not accept connections at the moment.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "55000"),
        _ => false,
    }
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
    /// The id of the intermediate that signed it (`int-1` for the one `ca init` made).
    pub issuer: String,
    /// The certificate itself (DER), kept since migration 0010 for its page and PEM download.
    pub der: Option<Vec<u8>>,
    /// The key type in the `--key-type` words plus the RSA size (`ecdsa-p256`, `rsa-2048`...).
    pub key_type: Option<String>,
}

/// The `key_type` filter value that selects rows recorded before migration 0010, whose key
/// type is not known (`key_type IS NULL`).
pub const KEY_TYPE_UNKNOWN: &str = "unknown";

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
    /// The id of the intermediate that signed it (`int-1` for the one `ca init` made).
    pub issuer: String,
    /// `ecdsa-p256`, `rsa-3072`, ...; `None` for rows recorded before migration 0010.
    pub key_type: Option<String>,
}

/// Which rows `list` returns.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    /// Only certificates that are still valid and whose notAfter is within this window.
    pub expiring_within: Option<Duration>,
    /// Only certificates carrying this subject alternative name (an index lookup in
    /// `certificate_sans`, not a scan).
    pub san: Option<SanMatch>,
    /// Only the certificate issued under this NAME (exact; the `certificates_name` index).
    pub name: Option<String>,
    /// Only the certificate with this SHA-256 fingerprint (lowercase hex, no colons).
    pub sha256: Option<String>,
    /// Only certificates whose `requested_by` starts with this (`token:`, `acme:`, `renew:..`):
    /// a range on the `certificates_requested_by` index (migration 0009), not a scan.
    pub requested_by: Option<String>,
    /// Only certificates signed by this intermediate (`int-1`, `int-2`, ...).
    pub issuer: Option<String>,
    /// Only certificates with this key type (`ecdsa-p256`, `rsa-2048`, ...), or
    /// [`KEY_TYPE_UNKNOWN`] for rows recorded before migration 0010 (the
    /// `certificates_key_type_not_after` index).
    pub key_type: Option<String>,
}

/// One subject alternative name to look certificates up by, in the stored form split at its
/// first ':': `kind` `dns`, `ip`, `uri` or `email`, `value` exactly as issuance records it
/// (callers normalise first: mutual-pki's `San` parser lowercases DNS names, writes IPs in
/// canonical form and checks SPIFFE IDs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SanMatch {
    pub kind: String,
    pub value: String,
}

impl SanMatch {
    /// Splits a stored SAN (`dns:web.internal`, `uri:spiffe://td/x`) at its first ':'; the kind
    /// is lowercased. `None` without a ':' or with an empty kind or value.
    pub fn from_stored(s: &str) -> Option<SanMatch> {
        let (kind, value) = s.split_once(':')?;
        if kind.is_empty() || value.is_empty() {
            return None;
        }
        Some(SanMatch {
            kind: kind.to_ascii_lowercase(),
            value: value.to_string(),
        })
    }
}

/// Store calls that failed, by operation and kind, since the store was opened (shared by every
/// clone of a [`Store`]): what the online CA exports as `mutual_ca_store_errors_total`.
///
/// `kind` is `unavailable` (the database could not be reached: [`StoreError::is_unavailable`])
/// or `error` (it answered with an error, or a row was corrupt). Refusals that are answers, not
/// failures (a token already used, a duplicate serial, an unknown serial), are not counted.
///
/// It also carries the one timing hook: the CA server sets it to observe every call's latency
/// (`mutual_ca_store_duration_seconds{op}`), so the store stays free of any metrics library.
#[derive(Default)]
pub struct StoreErrorCounts {
    counts: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    on_duration: std::sync::OnceLock<DurationHook>,
}

/// Called with (op, seconds) after every store call, failed or not.
pub type DurationHook = Box<dyn Fn(&'static str, f64) + Send + Sync>;

impl std::fmt::Debug for StoreErrorCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreErrorCounts")
            .field("counts", &self.snapshot())
            .field("timed", &self.on_duration.get().is_some())
            .finish()
    }
}

impl StoreErrorCounts {
    /// Sets the latency hook; the first one set stays (one CA server per store). Returns
    /// whether this one was taken.
    pub fn on_duration(&self, hook: DurationHook) -> bool {
        self.on_duration.set(hook).is_ok()
    }

    fn timed(&self, op: &'static str, started: std::time::Instant) {
        if let Some(h) = self.on_duration.get() {
            h(op, started.elapsed().as_secs_f64());
        }
    }

    fn record(&self, op: &'static str, e: &StoreError) {
        let Some(kind) = e.failure_kind() else {
            return;
        };
        // A poisoned lock only means another thread panicked mid-increment: the map is intact.
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((op, kind)).or_insert(0) += 1;
    }

    /// (op, kind, count) for every pair seen, in a stable order.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(&(op, kind), &n)| (op, kind, n)).collect()
    }
}

/// What `revoke` did.
#[derive(Clone, Debug)]
pub enum RevokeOutcome {
    Revoked(CertRecord),
    /// It was revoked before; nothing changed (the original time and reason are kept).
    AlreadyRevoked(CertRecord),
}

/// Where the next page of [`Inventory::list_page`] starts: after this row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub not_after: i64,
    pub serial: String,
}

/// One page of certificates and where the next one starts (`None`: this was the last).
#[derive(Clone, Debug)]
pub struct Page {
    pub rows: Vec<CertRecord>,
    pub next: Option<Cursor>,
}

/// A signed CRL as stored for every replica to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCrl {
    pub number: i64,
    pub der: Vec<u8>,
    /// Unix seconds.
    pub this_update: i64,
    /// Unix seconds.
    pub next_update: i64,
}

/// What a replica compares with the CRL it serves, in one cheap query: how many certificates
/// are revoked now, and which CRL is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrlState {
    /// Revoked certificates in the inventory (a stored CRL with fewer entries is out of date).
    pub revoked: i64,
    /// The stored CRL's number, if one is stored.
    pub number: Option<i64>,
    /// The stored CRL's nextUpdate (Unix seconds).
    pub next_update: Option<i64>,
}

/// One entry of a CRL.
#[derive(Clone, Debug)]
pub struct RevokedEntry {
    pub serial: String,
    pub revoked_at: i64,
    pub reason: Option<String>,
}

store_trait! {
    counted
    /// The operations the CA needs from an inventory backend.
    ///
    /// Methods return `Send` futures so callers can use them from multi-threaded runtimes (the
    /// online CA). `now` is passed in rather than read here so that every backend agrees with the
    /// caller's clock and tests can pin it.
    pub trait Inventory {
        /// Records a newly issued certificate. A serial already present is `DuplicateSerial`.
        fn insert(&self, cert: &NewCert) -> ();
        /// Records many newly issued certificates in one transaction: all of them or none. A serial
        /// already present (or given twice) is `DuplicateSerial` and records nothing.
        fn insert_many(&self, certs: &[NewCert]) -> ();
        /// Records a newly issued certificate and spends the one-time token `jti` that paid for it,
        /// in one transaction: either both are recorded or neither. A token already spent is
        /// `TokenUsed`, a serial already present `DuplicateSerial`.
        fn insert_with_token(
            &self,
            cert: &NewCert,
            jti: &str,
            now: i64,
        ) -> ();
        /// Whether the one-time token `jti` was already spent.
        fn token_used(&self, jti: &str) -> bool;
        /// Removes a row whose certificate could not be delivered (its files were not written).
        fn delete(&self, serial: &str) -> ();
        fn get(
            &self,
            serial: &str,
            now: i64,
        ) -> Option<CertRecord>;
        /// The certificate's DER as recorded at issuance; `None` for an unknown serial or a row
        /// recorded before migration 0010 (which kept only the fingerprint).
        fn certificate_der(
            &self,
            serial: &str,
        ) -> Option<Vec<u8>>;
        fn list(
            &self,
            filter: &ListFilter,
            now: i64,
        ) -> Vec<CertRecord>;
        fn revoke(
            &self,
            serial: &str,
            reason: &str,
            now: i64,
        ) -> RevokeOutcome;
        /// [`Inventory::revoke`], also recording who revoked it (`revoked_by`).
        fn revoke_as(
            &self,
            serial: &str,
            reason: &str,
            now: i64,
            revoked_by: Option<&str>,
        ) -> RevokeOutcome;
        /// Every revoked certificate (for the CRL).
        fn revoked(&self) -> Vec<RevokedEntry>;
        /// Atomically increments and returns the named counter (the first value is 1).
        fn next_counter(&self, name: &str) -> i64;
        /// Number of rows (all statuses).
        fn count(&self) -> i64;
        /// Number of rows a [`ListFilter`] selects (the same reading as [`Inventory::list`]).
        fn count_matching(
            &self,
            filter: &ListFilter,
            now: i64,
        ) -> i64;
        /// One page of [`Inventory::list`]: at most `limit` rows in (not_after, serial) order,
        /// starting after `after` (keyset paging: each page is an index range scan, so a million rows
        /// are never held in memory or re-scanned from the start).
        fn list_page(
            &self,
            filter: &ListFilter,
            now: i64,
            after: Option<&Cursor>,
            limit: u32,
        ) -> Page;
        /// Stores `crl` as the current CRL if its number is higher than the stored one's (a replica
        /// that signed an older CRL never overwrites a newer one). Returns whether it was stored.
        fn store_crl(&self, crl: &StoredCrl) -> bool;
        /// The CRL stored by [`Inventory::store_crl`], if any.
        fn current_crl(&self) -> Option<StoredCrl>;
        /// The revoked count and the stored CRL's number and nextUpdate ([`CrlState`]).
        fn crl_state(&self) -> CrlState;
        /// Whether the database answers (a trivial query; for health checks).
        fn ping(&self) -> ();
        /// Row counts of every table (for `ca migrate`'s verification and emptiness checks).
        fn table_counts(&self) -> TableCounts;
    }
}

/// How to open a store.
#[derive(Clone, Default)]
pub struct OpenOptions {
    /// Create the SQLite file when it is missing (PostgreSQL databases are created by the
    /// operator; their schema is always migrated on open).
    pub create: bool,
    /// The PostgreSQL password (from `$MUTUAL_STORE_PASSWORD` or a password file). `None`
    /// leaves it to libpq's `PGPASSWORD`/`PGPASSFILE`/`~/.pgpass`, which sqlx reads.
    pub password: Option<String>,
    /// PostgreSQL pool size (0: the default, 8). SQLite always uses 2.
    pub max_connections: u32,
}

impl std::fmt::Debug for OpenOptions {
    // By hand, so that the password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("create", &self.create)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The row an `INSERT ... ON CONFLICT DO NOTHING` did not write because it was there already,
/// read back by its key: not finding it either means the store is corrupt.
pub(crate) fn inserted_or_found<T>(
    found: Option<T>,
    id: &str,
    what: &str,
) -> Result<T, StoreError> {
    found.ok_or_else(|| StoreError::Corrupt {
        serial: id.to_string(),
        detail: format!("{what} neither inserted nor found"),
    })
}

/// The inventory backend in use.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Failed calls so far, by operation and kind (shared by every clone of this store).
    pub fn errors(&self) -> &std::sync::Arc<StoreErrorCounts> {
        dispatch!(self, s => &s.errors)
    }

    /// Times and counts one call that started at `started` and returned `r`, under `op` (what
    /// `mutual_ca_store_duration_seconds` and `_errors_total` see): every [`Inventory`] method
    /// through [`counted!`], and the per-issuer calls.
    pub(crate) fn note<T>(
        &self,
        op: &'static str,
        started: std::time::Instant,
        r: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.errors().timed(op, started);
        if let Err(e) = &r {
            self.errors().record(op, e);
        }
        r
    }

    /// Opens (and with `create`, creates) the SQLite inventory at `path`.
    pub async fn open_sqlite(path: &std::path::Path, create: bool) -> Result<Store, StoreError> {
        Ok(Store::Sqlite(SqliteStore::open(path, create).await?))
    }

    /// Opens the store at `url`, applying pending migrations (under the migrator's advisory lock
    /// on PostgreSQL, so replicas starting together migrate once).
    pub async fn open(url: &StoreUrl, o: &OpenOptions) -> Result<Store, StoreError> {
        match url {
            StoreUrl::Sqlite(path) => Store::open_sqlite(path, o.create).await,
            StoreUrl::Postgres(u) => Ok(Store::Postgres(
                PgStore::open(u, o.password.as_deref(), o.max_connections).await?,
            )),
        }
    }

    /// Where this store lives (password-free).
    pub fn url(&self) -> StoreUrl {
        dispatch!(self, s => s.url())
    }

    /// Refuses a store that already holds an inventory (certificates, spent tokens or counters).
    pub async fn ensure_empty(&self) -> Result<(), StoreError> {
        let c = self.table_counts().await?;
        if c.certificates > 0 || c.tokens > 0 || c.counters > 0 {
            return Err(StoreError::NotEmpty {
                url: self.url().to_string(),
                certificates: c.certificates,
                tokens: c.tokens,
                counters: c.counters,
            });
        }
        Ok(())
    }

    /// The database's plan for the inventory page's query with `filter` (see
    /// [`SqliteStore::explain_list`], [`PgStore::explain_list`]).
    pub async fn explain_list(
        &self,
        filter: &ListFilter,
        now: i64,
        limit: Option<u32>,
    ) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.explain_list(filter, now, limit).await)
    }

    /// Closes the pool cleanly (checkpoints the SQLite WAL).
    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }
}
