//! `mutual ca migrate --to postgres://...`: copies an SQLite inventory into PostgreSQL.
//!
//! Why it is careful: the inventory is the CA's memory (what was issued, what is revoked, which
//! CRL numbers and tokens are used). The copy runs in one PostgreSQL transaction, reads the
//! source read-only in pages (a million rows never sit in memory), and commits only when the row
//! counts of every table match on both sides. The target must be empty, so that two CAs are never
//! mixed; the SQLite file is never written.
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder, Row};

use crate::backend::{db, table_counts_on, PgStore, SqliteStore};
use crate::{Inventory, StoreError};

/// Rows per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableCounts {
    pub certificates: i64,
    /// Of `certificates`, how many are revoked.
    pub revoked: i64,
    /// Spent one-time tokens.
    pub tokens: i64,
    /// Counters (the CRL number).
    pub counters: i64,
    /// 0 or 1: the stored current CRL.
    pub crls: i64,
}

/// What a copy did: the counts read from the source and found in the target before commit.
#[derive(Clone, Debug, Serialize)]
pub struct CopyReport {
    pub source: TableCounts,
    pub target: TableCounts,
}

/// Rows per INSERT: 17 columns x 1,000 stays far below PostgreSQL's 65,535 bind parameters.
const BATCH: i64 = 1000;

/// One certificate row as read from the source.
#[derive(sqlx::FromRow)]
struct CertRow {
    id: i64,
    serial: String,
    name: String,
    subject: String,
    sans: String,
    usage: String,
    not_before: i64,
    not_after: i64,
    status: String,
    revoked_at: Option<i64>,
    reason: Option<String>,
    requested_by: Option<String>,
    sha256: String,
    created_at: i64,
    revoked_by: Option<String>,
    issuer: String,
    der: Option<Vec<u8>>,
    key_type: Option<String>,
}

/// Copies every table of `src` into the empty `dst` in one transaction, verifying row counts
/// before committing. On any error (including a count mismatch) nothing is committed.
pub async fn copy_sqlite_to_postgres(
    src: &SqliteStore,
    dst: &PgStore,
) -> Result<CopyReport, StoreError> {
    let target_before = dst.table_counts().await?;
    if target_before != TableCounts::default() {
        return Err(StoreError::NotEmpty {
            url: dst.url().to_string(),
            certificates: target_before.certificates,
            tokens: target_before.tokens,
            counters: target_before.counters,
        });
    }
    let has_tokens = src.has_table("tokens_used").await?;
    let has_crl = src.has_table("current_crl").await?;
    let source = source_counts(src, has_tokens, has_crl).await?;

    let mut tx = dst.pool.begin().await.map_err(db("begin copy"))?;

    // Certificates, in id order, BATCH at a time.
    let revoked_by = if has_tokens {
        // tokens_used and revoked_by arrived in the same migration (0002).
        "revoked_by"
    } else {
        "NULL AS revoked_by"
    };
    // The signing intermediate arrived with migration 0008; older rows were all int-1's.
    let issuer = if src.has_column("certificates", "issuer").await? {
        "issuer"
    } else {
        "'int-1' AS issuer"
    };
    // The certificate's DER and key type arrived with migration 0010 (NULL before it).
    let der = if src.has_column("certificates", "der").await? {
        "der, key_type"
    } else {
        "NULL AS der, NULL AS key_type"
    };
    let select = format!(
        "SELECT id, serial, name, subject, sans, usage, not_before, not_after, status, \
         revoked_at, reason, requested_by, sha256, created_at, {revoked_by}, {issuer}, {der} \
         FROM certificates WHERE id > $1 ORDER BY id LIMIT $2"
    );
    let mut last_id = i64::MIN;
    loop {
        // `select` is built from constants only; every value is bound.
        let rows: Vec<CertRow> = sqlx::query_as(sqlx::AssertSqlSafe(select.clone()))
            .bind(last_id)
            .bind(BATCH)
            .fetch_all(&src.pool)
            .await
            .map_err(db("read source certificates"))?;
        let Some(last) = rows.last() else { break };
        last_id = last.id;
        let mut qb = QueryBuilder::<Postgres>::new(
            "INSERT INTO certificates (serial, name, subject, sans, usage, not_before, not_after, \
             status, revoked_at, reason, requested_by, sha256, created_at, revoked_by, issuer, \
             der, key_type) ",
        );
        qb.push_values(rows, |mut b, r| {
            b.push_bind(r.serial)
                .push_bind(r.name)
                .push_bind(r.subject)
                .push_bind(r.sans)
                .push_bind(r.usage)
                .push_bind(r.not_before)
                .push_bind(r.not_after)
                .push_bind(r.status)
                .push_bind(r.revoked_at)
                .push_bind(r.reason)
                .push_bind(r.requested_by)
                .push_bind(r.sha256)
                .push_bind(r.created_at)
                .push_bind(r.revoked_by)
                .push_bind(r.issuer)
                .push_bind(r.der)
                .push_bind(r.key_type);
        });
        qb.build()
            .execute(&mut *tx)
            .await
            .map_err(db("copy certificates"))?;
    }

    // The SAN index is derived from the copied rows (a source from before migration 0004 has
    // none), in the same transaction.
    sqlx::query(crate::backend::PG_SANS_FROM_CERTIFICATES)
        .execute(&mut *tx)
        .await
        .map_err(db("index copied SANs"))?;

    if has_tokens {
        let mut last = String::new();
        loop {
            let rows: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT jti, used_at, serial FROM tokens_used WHERE jti > $1 ORDER BY jti LIMIT $2",
            )
            .bind(&last)
            .bind(BATCH)
            .fetch_all(&src.pool)
            .await
            .map_err(db("read source tokens"))?;
            let Some(l) = rows.last() else { break };
            last = l.0.clone();
            let mut qb =
                QueryBuilder::<Postgres>::new("INSERT INTO tokens_used (jti, used_at, serial) ");
            qb.push_values(rows, |mut b, r| {
                b.push_bind(r.0).push_bind(r.1).push_bind(r.2);
            });
            qb.build()
                .execute(&mut *tx)
                .await
                .map_err(db("copy tokens"))?;
        }
    }

    let counters: Vec<(String, i64)> = sqlx::query_as("SELECT name, value FROM ca_counters")
        .fetch_all(&src.pool)
        .await
        .map_err(db("read source counters"))?;
    for (name, value) in counters {
        sqlx::query("INSERT INTO ca_counters (name, value) VALUES ($1, $2)")
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(db("copy counters"))?;
    }

    if has_crl {
        let crl: Option<(i64, Vec<u8>, i64, i64)> = sqlx::query_as(
            "SELECT number, der, this_update, next_update FROM current_crl WHERE id = 1",
        )
        .fetch_optional(&src.pool)
        .await
        .map_err(db("read source CRL"))?;
        if let Some((number, der, this_update, next_update)) = crl {
            sqlx::query(
                "INSERT INTO current_crl (id, number, der, this_update, next_update) \
                 VALUES (1, $1, $2, $3, $4)",
            )
            .bind(number)
            .bind(der)
            .bind(this_update)
            .bind(next_update)
            .execute(&mut *tx)
            .await
            .map_err(db("copy CRL"))?;
        }
    }

    // The ACME front door's accounts, orders and EAB keys (counts checked inside).
    crate::acme::copy_to_postgres(src, &mut tx).await?;
    // The Workload API's registration entries (counts checked inside).
    crate::entries::copy_to_postgres(src, &mut tx).await?;

    let target = table_counts_on!(&mut *tx)?;
    for (table, s, t) in [
        ("certificates", source.certificates, target.certificates),
        ("revoked certificates", source.revoked, target.revoked),
        ("tokens_used", source.tokens, target.tokens),
        ("ca_counters", source.counters, target.counters),
        ("current_crl", source.crls, target.crls),
    ] {
        if s != t {
            // Dropping `tx` rolls the whole copy back.
            return Err(StoreError::CopyMismatch {
                table,
                source_rows: s,
                target_rows: t,
            });
        }
    }
    tx.commit().await.map_err(db("commit copy"))?;
    Ok(CopyReport { source, target })
}

/// The source's counts, tolerating a database from before the tokens/CRL migrations.
async fn source_counts(
    src: &SqliteStore,
    has_tokens: bool,
    has_crl: bool,
) -> Result<TableCounts, StoreError> {
    let one = |sql: &'static str| async move {
        let row = sqlx::query(sql)
            .fetch_one(&src.pool)
            .await
            .map_err(db("count source rows"))?;
        row.try_get::<i64, _>("n").map_err(db("read count"))
    };
    Ok(TableCounts {
        certificates: one("SELECT COUNT(*) AS n FROM certificates").await?,
        revoked: one("SELECT COUNT(*) AS n FROM certificates WHERE status = 'revoked'").await?,
        tokens: if has_tokens {
            one("SELECT COUNT(*) AS n FROM tokens_used").await?
        } else {
            0
        },
        counters: one("SELECT COUNT(*) AS n FROM ca_counters").await?,
        crls: if has_crl {
            one("SELECT COUNT(*) AS n FROM current_crl").await?
        } else {
            0
        },
    })
}
