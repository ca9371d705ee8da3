//! ACME server state (crates/mutual-acme) in the inventory database, for both backends.
//!
//! Why here and not in the ACME crate: every state a CA replica needs lives in the store
//! (DESIGN.md "The CA as it grows"), and the two concrete pools are private to this crate.
//! Replica safety comes from the statements themselves: a nonce is spent by one `DELETE` whose
//! row count says whether this request was the one that spent it, and an order or
//! authorization moves from one status to the next with `UPDATE ... WHERE status = $expected`,
//! so of two replicas racing on the same object exactly one wins.
use std::future::Future;

use sqlx::Row;

use crate::backend::db;
use crate::{inserted_or_found, PgStore, SqliteStore, Store, StoreError};

/// An ACME account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeAccount {
    pub id: String,
    /// RFC 7638 thumbprint (base64url) of the account key.
    pub thumbprint: String,
    /// The account's public key, JWK JSON.
    pub jwk: String,
    pub status: String,
    /// JSON array of contact URLs.
    pub contact: String,
    pub created_at: i64,
}

/// An order or an authorization: a JSON document and its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeObject {
    pub id: String,
    pub account_id: String,
    pub status: String,
    pub body: String,
}

/// Which kind of [`AcmeObject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeKind {
    Order,
    Authz,
}

impl AcmeKind {
    fn table(self) -> &'static str {
        match self {
            AcmeKind::Order => "acme_orders",
            AcmeKind::Authz => "acme_authzs",
        }
    }
}

/// The store operations the ACME server needs.
pub trait AcmeStore {
    /// Records a nonce handed out, valid until `expires`.
    fn nonce_put(
        &self,
        nonce: &str,
        expires: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Spends `nonce`: true exactly once per nonce issued and still unexpired, across replicas.
    /// Also drops expired nonces now and then.
    fn nonce_take(
        &self,
        nonce: &str,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Inserts the account unless one with the same key exists; returns the stored one (the
    /// new row or the existing account of that key) and whether it was created.
    fn account_create(
        &self,
        a: &AcmeAccount,
    ) -> impl Future<Output = Result<(AcmeAccount, bool), StoreError>> + Send;
    fn account_by_thumbprint(
        &self,
        thumbprint: &str,
    ) -> impl Future<Output = Result<Option<AcmeAccount>, StoreError>> + Send;
    fn account_get(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<AcmeAccount>, StoreError>> + Send;
    /// Sets status and contact of an account.
    fn account_update(
        &self,
        id: &str,
        status: &str,
        contact: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn object_insert(
        &self,
        kind: AcmeKind,
        o: &AcmeObject,
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn object_get(
        &self,
        kind: AcmeKind,
        id: &str,
    ) -> impl Future<Output = Result<Option<AcmeObject>, StoreError>> + Send;
    /// Replaces status and body if the stored status is still `expected`; returns whether it
    /// did (false: another request moved the object first).
    fn object_transition(
        &self,
        kind: AcmeKind,
        id: &str,
        expected: &str,
        status: &str,
        body: &str,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Key rollover: replaces the account's key if it is still `old_thumbprint`; returns
    /// whether it did. A key another account holds fails on the UNIQUE thumbprint.
    fn account_rekey(
        &self,
        id: &str,
        old_thumbprint: &str,
        new_thumbprint: &str,
        new_jwk: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The ids of an account's orders that are not `invalid`, oldest first.
    fn orders_of(
        &self,
        account_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// How many orders `account_id` created since `since`, and when the oldest of them was
    /// created (for Retry-After).
    fn orders_since(
        &self,
        account_id: &str,
        since: i64,
    ) -> impl Future<Output = Result<(i64, Option<i64>), StoreError>> + Send;
    /// Stores a new External Account Binding key.
    fn eab_create(
        &self,
        kid: &str,
        hmac_key: &str,
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The HMAC key of `kid` and the account it already bound, if any.
    fn eab_get(
        &self,
        kid: &str,
    ) -> impl Future<Output = Result<Option<(String, Option<String>)>, StoreError>> + Send;
    /// Binds `kid` to `account_id` if it bound none yet; true exactly once per key.
    fn eab_bind(
        &self,
        kid: &str,
        account_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Removes expired nonces and orders/authorizations not touched since `before` that can
    /// no longer be used (pending, ready or invalid); returns how many rows went.
    fn acme_sweep(
        &self,
        now: i64,
        before: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The columns of `acme_accounts`, in the order `account_create` binds them; what
/// `account_from_row` reads.
const ACCOUNT_COLUMNS: &str = "id, thumbprint, jwk, status, contact, created_at";

fn account_from_row<R>(row: &R) -> Result<AcmeAccount, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AcmeAccount {
        id: row.try_get("id").map_err(db("read ACME account"))?,
        thumbprint: row.try_get("thumbprint").map_err(db("read ACME account"))?,
        jwk: row.try_get("jwk").map_err(db("read ACME account"))?,
        status: row.try_get("status").map_err(db("read ACME account"))?,
        contact: row.try_get("contact").map_err(db("read ACME account"))?,
        created_at: row.try_get("created_at").map_err(db("read ACME account"))?,
    })
}

macro_rules! impl_acme {
    ($store:ty) => {
        impl AcmeStore for $store {
            async fn nonce_put(&self, nonce: &str, expires: i64) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO acme_nonces (nonce, expires) VALUES ($1, $2)")
                    .bind(nonce)
                    .bind(expires)
                    .execute(&self.pool)
                    .await
                    .map_err(db("store ACME nonce"))?;
                Ok(())
            }

            async fn nonce_take(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
                let res = sqlx::query("DELETE FROM acme_nonces WHERE nonce = $1 AND expires > $2")
                    .bind(nonce)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(db("spend ACME nonce"))?;
                // Housekeeping on a fraction of requests: nonces nobody used expire here.
                if nonce.as_bytes().first().is_some_and(|b| b % 16 == 0) {
                    let _ = sqlx::query("DELETE FROM acme_nonces WHERE expires <= $1")
                        .bind(now)
                        .execute(&self.pool)
                        .await;
                }
                Ok(res.rows_affected() == 1)
            }

            async fn account_create(
                &self,
                a: &AcmeAccount,
            ) -> Result<(AcmeAccount, bool), StoreError> {
                let sql = format!(
                    "INSERT INTO acme_accounts ({ACCOUNT_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (thumbprint) DO NOTHING"
                );
                let res = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&a.id)
                    .bind(&a.thumbprint)
                    .bind(&a.jwk)
                    .bind(&a.status)
                    .bind(&a.contact)
                    .bind(a.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err(db("create ACME account"))?;
                if res.rows_affected() == 1 {
                    return Ok((a.clone(), true));
                }
                let existing = self.account_by_thumbprint(&a.thumbprint).await?;
                Ok((inserted_or_found(existing, &a.id, "ACME account")?, false))
            }

            async fn account_by_thumbprint(
                &self,
                thumbprint: &str,
            ) -> Result<Option<AcmeAccount>, StoreError> {
                let sql =
                    format!("SELECT {ACCOUNT_COLUMNS} FROM acme_accounts WHERE thumbprint = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(thumbprint)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db("read ACME account"))?;
                row.as_ref().map(account_from_row).transpose()
            }

            async fn account_get(&self, id: &str) -> Result<Option<AcmeAccount>, StoreError> {
                let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM acme_accounts WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db("read ACME account"))?;
                row.as_ref().map(account_from_row).transpose()
            }

            async fn account_update(
                &self,
                id: &str,
                status: &str,
                contact: &str,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE acme_accounts SET status = $2, contact = $3 WHERE id = $1")
                    .bind(id)
                    .bind(status)
                    .bind(contact)
                    .execute(&self.pool)
                    .await
                    .map_err(db("update ACME account"))?;
                Ok(())
            }

            async fn object_insert(
                &self,
                kind: AcmeKind,
                o: &AcmeObject,
                now: i64,
            ) -> Result<(), StoreError> {
                // The table name is one of two constants, never input.
                let sql = format!(
                    "INSERT INTO {} (id, account_id, status, body, updated_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $5)",
                    kind.table()
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&o.id)
                    .bind(&o.account_id)
                    .bind(&o.status)
                    .bind(&o.body)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(db("insert ACME object"))?;
                Ok(())
            }

            async fn object_get(
                &self,
                kind: AcmeKind,
                id: &str,
            ) -> Result<Option<AcmeObject>, StoreError> {
                // The table name is one of two constants, never input.
                let sql = format!(
                    "SELECT id, account_id, status, body FROM {} WHERE id = $1",
                    kind.table()
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db("read ACME object"))?;
                match row {
                    None => Ok(None),
                    Some(r) => Ok(Some(AcmeObject {
                        id: r.try_get("id").map_err(db("read ACME object"))?,
                        account_id: r.try_get("account_id").map_err(db("read ACME object"))?,
                        status: r.try_get("status").map_err(db("read ACME object"))?,
                        body: r.try_get("body").map_err(db("read ACME object"))?,
                    })),
                }
            }

            async fn object_transition(
                &self,
                kind: AcmeKind,
                id: &str,
                expected: &str,
                status: &str,
                body: &str,
                now: i64,
            ) -> Result<bool, StoreError> {
                // The table name is one of two constants, never input.
                let sql = format!(
                    "UPDATE {} SET status = $3, body = $4, updated_at = $5 \
                     WHERE id = $1 AND status = $2",
                    kind.table()
                );
                let res = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(expected)
                    .bind(status)
                    .bind(body)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(db("update ACME object"))?;
                Ok(res.rows_affected() == 1)
            }

            async fn account_rekey(
                &self,
                id: &str,
                old_thumbprint: &str,
                new_thumbprint: &str,
                new_jwk: &str,
            ) -> Result<bool, StoreError> {
                let res = sqlx::query(
                    "UPDATE acme_accounts SET thumbprint = $3, jwk = $4 \
                     WHERE id = $1 AND thumbprint = $2",
                )
                .bind(id)
                .bind(old_thumbprint)
                .bind(new_thumbprint)
                .bind(new_jwk)
                .execute(&self.pool)
                .await
                .map_err(db("change ACME account key"))?;
                Ok(res.rows_affected() == 1)
            }

            async fn orders_of(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id FROM acme_orders WHERE account_id = $1 AND status <> 'invalid' \
                     ORDER BY updated_at, id",
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db("list ACME orders"))?;
                rows.iter()
                    .map(|r| r.try_get("id").map_err(db("list ACME orders")))
                    .collect()
            }

            async fn orders_since(
                &self,
                account_id: &str,
                since: i64,
            ) -> Result<(i64, Option<i64>), StoreError> {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM acme_orders \
                     WHERE account_id = $1 AND created_at >= $2",
                )
                .bind(account_id)
                .bind(since)
                .fetch_one(&self.pool)
                .await
                .map_err(db("count ACME orders"))?;
                Ok((
                    row.try_get("n").map_err(db("count ACME orders"))?,
                    row.try_get("oldest").map_err(db("count ACME orders"))?,
                ))
            }

            async fn eab_create(
                &self,
                kid: &str,
                hmac_key: &str,
                now: i64,
            ) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO acme_eab (kid, hmac_key, created_at) VALUES ($1, $2, $3)")
                    .bind(kid)
                    .bind(hmac_key)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(db("create ACME EAB key"))?;
                Ok(())
            }

            async fn eab_get(
                &self,
                kid: &str,
            ) -> Result<Option<(String, Option<String>)>, StoreError> {
                let row = sqlx::query("SELECT hmac_key, account_id FROM acme_eab WHERE kid = $1")
                    .bind(kid)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db("read ACME EAB key"))?;
                match row {
                    None => Ok(None),
                    Some(r) => Ok(Some((
                        r.try_get("hmac_key").map_err(db("read ACME EAB key"))?,
                        r.try_get("account_id").map_err(db("read ACME EAB key"))?,
                    ))),
                }
            }

            async fn eab_bind(
                &self,
                kid: &str,
                account_id: &str,
                now: i64,
            ) -> Result<bool, StoreError> {
                let res = sqlx::query(
                    "UPDATE acme_eab SET account_id = $2, bound_at = $3 \
                     WHERE kid = $1 AND account_id IS NULL",
                )
                .bind(kid)
                .bind(account_id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db("bind ACME EAB key"))?;
                Ok(res.rows_affected() == 1)
            }

            async fn acme_sweep(&self, now: i64, before: i64) -> Result<u64, StoreError> {
                let mut n = sqlx::query("DELETE FROM acme_nonces WHERE expires <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(db("sweep ACME nonces"))?
                    .rows_affected();
                // Authorizations first: they name their order only inside the JSON body.
                for table in ["acme_authzs", "acme_orders"] {
                    // The table name is one of two constants, never input.
                    let sql = format!(
                        "DELETE FROM {table} WHERE updated_at < $1 \
                         AND status IN ('pending', 'ready', 'invalid', 'deactivated')"
                    );
                    n += sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(before)
                        .execute(&self.pool)
                        .await
                        .map_err(db("sweep ACME orders"))?
                        .rows_affected();
                }
                Ok(n)
            }
        }
    };
}

impl_acme!(SqliteStore);
impl_acme!(PgStore);

impl AcmeStore for Store {
    async fn nonce_put(&self, nonce: &str, expires: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.nonce_put(nonce, expires).await)
    }
    async fn nonce_take(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
        dispatch!(self, s => s.nonce_take(nonce, now).await)
    }
    async fn account_create(&self, a: &AcmeAccount) -> Result<(AcmeAccount, bool), StoreError> {
        dispatch!(self, s => s.account_create(a).await)
    }
    async fn account_by_thumbprint(&self, t: &str) -> Result<Option<AcmeAccount>, StoreError> {
        dispatch!(self, s => s.account_by_thumbprint(t).await)
    }
    async fn account_get(&self, id: &str) -> Result<Option<AcmeAccount>, StoreError> {
        dispatch!(self, s => s.account_get(id).await)
    }
    async fn account_update(
        &self,
        id: &str,
        status: &str,
        contact: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.account_update(id, status, contact).await)
    }
    async fn object_insert(&self, k: AcmeKind, o: &AcmeObject, now: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.object_insert(k, o, now).await)
    }
    async fn object_get(&self, k: AcmeKind, id: &str) -> Result<Option<AcmeObject>, StoreError> {
        dispatch!(self, s => s.object_get(k, id).await)
    }
    async fn object_transition(
        &self,
        k: AcmeKind,
        id: &str,
        expected: &str,
        status: &str,
        body: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.object_transition(k, id, expected, status, body, now).await)
    }
    async fn account_rekey(
        &self,
        id: &str,
        old: &str,
        new: &str,
        jwk: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.account_rekey(id, old, new, jwk).await)
    }
    async fn orders_of(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.orders_of(account_id).await)
    }
    async fn orders_since(
        &self,
        account_id: &str,
        since: i64,
    ) -> Result<(i64, Option<i64>), StoreError> {
        dispatch!(self, s => s.orders_since(account_id, since).await)
    }
    async fn eab_create(&self, kid: &str, key: &str, now: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.eab_create(kid, key, now).await)
    }
    async fn eab_get(&self, kid: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        dispatch!(self, s => s.eab_get(kid).await)
    }
    async fn eab_bind(&self, kid: &str, account_id: &str, now: i64) -> Result<bool, StoreError> {
        dispatch!(self, s => s.eab_bind(kid, account_id, now).await)
    }
    async fn acme_sweep(&self, now: i64, before: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.acme_sweep(now, before).await)
    }
}

/// kid, hmac_key, created_at, account_id, bound_at.
type EabRow = (String, String, i64, Option<String>, Option<i64>);

/// `ca migrate`: copies the ACME accounts, orders, authorizations and EAB keys of an SQLite
/// inventory into the PostgreSQL transaction of the copy (crates/mutual-store/src/copy.rs), and
/// checks each table's row count inside that transaction. Nonces are not copied: they live an
/// hour, and a client answered `badNonce` retries with a fresh one. A source from before the
/// ACME migrations has nothing to copy.
pub(crate) async fn copy_to_postgres(
    src: &SqliteStore,
    tx: &mut sqlx::PgConnection,
) -> Result<(), StoreError> {
    if !src.has_table("acme_accounts").await? {
        return Ok(());
    }
    // Migration 0006 added created_at and the EAB table; before it, updated_at stands in.
    let has_0006 = src.has_table("acme_eab").await?;
    let accounts: Vec<(String, String, String, String, String, i64)> = sqlx::query_as(
        "SELECT id, thumbprint, jwk, status, contact, created_at FROM acme_accounts ORDER BY id",
    )
    .fetch_all(&src.pool)
    .await
    .map_err(db("read source ACME accounts"))?;
    for a in &accounts {
        sqlx::query(
            "INSERT INTO acme_accounts (id, thumbprint, jwk, status, contact, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&a.0)
        .bind(&a.1)
        .bind(&a.2)
        .bind(&a.3)
        .bind(&a.4)
        .bind(a.5)
        .execute(&mut *tx)
        .await
        .map_err(db("copy ACME accounts"))?;
    }
    let mut counts = vec![("acme_accounts", accounts.len())];
    for table in ["acme_orders", "acme_authzs"] {
        let created = if has_0006 { "created_at" } else { "updated_at" };
        // Both names are constants, never input.
        let sql = format!(
            "SELECT id, account_id, status, body, updated_at, {created} FROM {table} ORDER BY id"
        );
        let rows: Vec<(String, String, String, String, i64, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&src.pool)
                .await
                .map_err(db("read source ACME orders"))?;
        let insert = format!(
            "INSERT INTO {table} (id, account_id, status, body, updated_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        );
        for r in &rows {
            sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
                .bind(&r.0)
                .bind(&r.1)
                .bind(&r.2)
                .bind(&r.3)
                .bind(r.4)
                .bind(r.5)
                .execute(&mut *tx)
                .await
                .map_err(db("copy ACME orders"))?;
        }
        counts.push((table, rows.len()));
    }
    if has_0006 {
        let keys: Vec<EabRow> = sqlx::query_as(
            "SELECT kid, hmac_key, created_at, account_id, bound_at FROM acme_eab ORDER BY kid",
        )
        .fetch_all(&src.pool)
        .await
        .map_err(db("read source ACME EAB keys"))?;
        for k in &keys {
            sqlx::query(
                "INSERT INTO acme_eab (kid, hmac_key, created_at, account_id, bound_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&k.0)
            .bind(&k.1)
            .bind(k.2)
            .bind(&k.3)
            .bind(k.4)
            .execute(&mut *tx)
            .await
            .map_err(db("copy ACME EAB keys"))?;
        }
        counts.push(("acme_eab", keys.len()));
    }
    for (table, n) in counts {
        // The table name is one of four constants, never input.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM {table}"
        )))
        .fetch_one(&mut *tx)
        .await
        .map_err(db("count copied ACME rows"))?;
        let t: i64 = row.try_get("n").map_err(db("count copied ACME rows"))?;
        let s = i64::try_from(n).unwrap_or(i64::MAX);
        if s != t {
            return Err(StoreError::CopyMismatch {
                table,
                source_rows: s,
                target_rows: t,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn nonce_is_spent_once_and_transitions_are_conditional() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open_sqlite(&d.path().join("i.db"), true)
            .await
            .unwrap();
        s.nonce_put("n1", 100).await.unwrap();
        s.nonce_put("n2", 10).await.unwrap();
        assert!(s.nonce_take("n1", 50).await.unwrap());
        assert!(!s.nonce_take("n1", 50).await.unwrap(), "replayed nonce");
        assert!(!s.nonce_take("n2", 50).await.unwrap(), "expired nonce");
        assert!(!s.nonce_take("never", 50).await.unwrap());
        let a = AcmeAccount {
            id: "a1".into(),
            thumbprint: "t".into(),
            jwk: "{}".into(),
            status: "valid".into(),
            contact: "[]".into(),
            created_at: 1,
        };
        assert!(s.account_create(&a).await.unwrap().1);
        let again = AcmeAccount {
            id: "a2".into(),
            ..a.clone()
        };
        let (got, created) = s.account_create(&again).await.unwrap();
        assert!(!created);
        assert_eq!(got.id, "a1");
        let o = AcmeObject {
            id: "o1".into(),
            account_id: "a1".into(),
            status: "pending".into(),
            body: "{}".into(),
        };
        s.object_insert(AcmeKind::Order, &o, 1).await.unwrap();
        assert!(s
            .object_transition(AcmeKind::Order, "o1", "pending", "ready", "{\"x\":1}", 2)
            .await
            .unwrap());
        assert!(!s
            .object_transition(AcmeKind::Order, "o1", "pending", "invalid", "{}", 3)
            .await
            .unwrap());
        let got = s.object_get(AcmeKind::Order, "o1").await.unwrap().unwrap();
        assert_eq!(
            (got.status.as_str(), got.body.as_str()),
            ("ready", "{\"x\":1}")
        );
        assert!(s.object_get(AcmeKind::Authz, "o1").await.unwrap().is_none());
        assert_eq!(s.orders_of("a1").await.unwrap(), vec!["o1".to_string()]);
        assert_eq!(s.orders_since("a1", 1).await.unwrap(), (1, Some(1)));
        assert_eq!(s.orders_since("a1", 2).await.unwrap(), (0, None));

        // Key rollover is conditional on the old key; a key another account holds fails.
        assert!(s.account_rekey("a1", "t", "t2", "{}").await.unwrap());
        assert!(!s.account_rekey("a1", "t", "t3", "{}").await.unwrap());
        let b = AcmeAccount {
            id: "b1".into(),
            thumbprint: "tb".into(),
            ..a.clone()
        };
        s.account_create(&b).await.unwrap();
        assert!(s.account_rekey("b1", "tb", "t2", "{}").await.is_err());

        // An EAB key binds one account, once.
        s.eab_create("k1", "secret", 1).await.unwrap();
        assert_eq!(
            s.eab_get("k1").await.unwrap(),
            Some(("secret".into(), None))
        );
        assert!(s.eab_bind("k1", "a1", 2).await.unwrap());
        assert!(!s.eab_bind("k1", "b1", 3).await.unwrap());
        assert_eq!(
            s.eab_get("k1").await.unwrap(),
            Some(("secret".into(), Some("a1".into())))
        );
        assert!(s.eab_get("nope").await.unwrap().is_none());

        // The sweep removes expired nonces and stale unfinished orders, not issued ones.
        s.nonce_put("old", 5).await.unwrap();
        let done = AcmeObject {
            id: "o2".into(),
            status: "valid".into(),
            ..o.clone()
        };
        s.object_insert(AcmeKind::Order, &done, 1).await.unwrap();
        assert_eq!(
            s.acme_sweep(50, 10).await.unwrap(),
            3,
            "nonces n2, old + order o1"
        );
        assert!(s.object_get(AcmeKind::Order, "o1").await.unwrap().is_none());
        assert!(s.object_get(AcmeKind::Order, "o2").await.unwrap().is_some());
    }
}
