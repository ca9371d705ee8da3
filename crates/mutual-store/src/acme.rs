//! ACME server state (crates/mutual-acme) in the inventory database, for both backends.
//!
//! Why here and not in the ACME crate: every state a CA replica needs lives in the store
//! (DESIGN.md "The CA as it grows"), and the two concrete pools are private to this crate.
//! Replica safety comes from the statements themselves: a nonce is spent by one `DELETE` whose
//! row count says whether this request was the one that spent it, and an order or
//! authorization moves from one status to the next with `UPDATE ... WHERE status = $expected`,
//! so of two replicas racing on the same object exactly one wins.
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

/// An External Account Binding key as `mutual acme eab list` shows it: never the HMAC key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EabKey {
    pub kid: String,
    /// The operator's note on whom the key is for (`eab create --label`).
    pub label: Option<String>,
    pub created_at: i64,
    /// The account it bound, once used (a key binds one account).
    pub account_id: Option<String>,
    pub bound_at: Option<i64>,
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

store_trait! {
    /// The store operations the ACME server needs.
    pub trait AcmeStore {
        /// Records a nonce handed out, valid until `expires`.
        fn nonce_put(&self, nonce: &str, expires: i64) -> ();
        /// Spends `nonce`: true exactly once per nonce issued and still unexpired, across replicas.
        /// Also drops expired nonces now and then.
        fn nonce_take(&self, nonce: &str, now: i64) -> bool;
        /// Inserts the account unless one with the same key exists; returns the stored one (the
        /// new row or the existing account of that key) and whether it was created.
        fn account_create(&self, a: &AcmeAccount) -> (AcmeAccount, bool);
        fn account_by_thumbprint(&self, thumbprint: &str) -> Option<AcmeAccount>;
        fn account_get(&self, id: &str) -> Option<AcmeAccount>;
        /// Sets status and contact of an account.
        fn account_update(&self, id: &str, status: &str, contact: &str) -> ();
        fn object_insert(&self, kind: AcmeKind, o: &AcmeObject, now: i64) -> ();
        fn object_get(&self, kind: AcmeKind, id: &str) -> Option<AcmeObject>;
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
        ) -> bool;
        /// Key rollover: replaces the account's key if it is still `old_thumbprint`; returns
        /// whether it did. A key another account holds fails on the UNIQUE thumbprint.
        fn account_rekey(
            &self,
            id: &str,
            old_thumbprint: &str,
            new_thumbprint: &str,
            new_jwk: &str,
        ) -> bool;
        /// The ids of an account's orders that are not `invalid`, oldest first.
        fn orders_of(&self, account_id: &str) -> Vec<String>;
        /// How many orders `account_id` created since `since`, and when the oldest of them was
        /// created (for Retry-After).
        fn orders_since(&self, account_id: &str, since: i64) -> (i64, Option<i64>);
        /// Stores a new External Account Binding key.
        fn eab_create(&self, kid: &str, hmac_key: &str, label: Option<&str>, now: i64) -> ();
        /// The HMAC key of `kid` and the account it already bound, if any.
        fn eab_get(&self, kid: &str) -> Option<(String, Option<String>)>;
        /// Binds `kid` to `account_id` if it bound none yet; true exactly once per key.
        fn eab_bind(&self, kid: &str, account_id: &str, now: i64) -> bool;
        /// Every EAB key, oldest first, without its HMAC key.
        fn eab_list(&self) -> Vec<EabKey>;
        /// Removes `kid`; false when there was no such key.
        fn eab_delete(&self, kid: &str) -> bool;
        /// Removes expired nonces and orders/authorizations not touched since `before` that can
        /// no longer be used (pending, ready or invalid); returns how many rows went.
        fn acme_sweep(&self, now: i64, before: i64) -> u64;
    }
}

/// The columns of `acme_accounts`, in the order `account_create` binds them; what
/// `account_from_row` reads.
const ACCOUNT_COLUMNS: &str = "id, thumbprint, jwk, status, contact, created_at";

row_reader! {
    fn account_from_row(row) -> AcmeAccount {
        Ok(AcmeAccount {
            id: row.try_get("id").map_err(db("read ACME account"))?,
            thumbprint: row.try_get("thumbprint").map_err(db("read ACME account"))?,
            jwk: row.try_get("jwk").map_err(db("read ACME account"))?,
            status: row.try_get("status").map_err(db("read ACME account"))?,
            contact: row.try_get("contact").map_err(db("read ACME account"))?,
            created_at: row.try_get("created_at").map_err(db("read ACME account"))?,
        })
    }
}

row_reader! {
    fn object_from_row(row) -> AcmeObject {
        let e = || db("read ACME object");
        Ok(AcmeObject {
            id: row.try_get("id").map_err(e())?,
            account_id: row.try_get("account_id").map_err(e())?,
            status: row.try_get("status").map_err(e())?,
            body: row.try_get("body").map_err(e())?,
        })
    }
}

macro_rules! impl_acme {
    ($store:ty) => {
        impl AcmeStore for $store {
            async fn nonce_put(&self, nonce: &str, expires: i64) -> Result<(), StoreError> {
                let sql = "INSERT INTO acme_nonces (nonce, expires) VALUES ($1, $2)";
                run!(execute(&self.pool), "store ACME nonce", sql, nonce, expires)?;
                Ok(())
            }

            async fn nonce_take(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
                let sql = "DELETE FROM acme_nonces WHERE nonce = $1 AND expires > $2";
                let res = run!(execute(&self.pool), "spend ACME nonce", sql, nonce, now)?;
                // Housekeeping on a fraction of requests: nonces nobody used expire here.
                if nonce.as_bytes().first().is_some_and(|b| b % 16 == 0) {
                    let sql = "DELETE FROM acme_nonces WHERE expires <= $1";
                    let _ = run!(execute(&self.pool), "sweep ACME nonces", sql, now);
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
                let (id, tp, jwk, status, contact) =
                    (&a.id, &a.thumbprint, &a.jwk, &a.status, &a.contact);
                let res = run!(
                    execute(&self.pool),
                    "create ACME account",
                    sqlx::AssertSqlSafe(sql),
                    id,
                    tp,
                    jwk,
                    status,
                    contact,
                    a.created_at
                )?;
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
                self.account_where("thumbprint", thumbprint).await
            }

            async fn account_get(&self, id: &str) -> Result<Option<AcmeAccount>, StoreError> {
                self.account_where("id", id).await
            }

            async fn account_update(
                &self,
                id: &str,
                status: &str,
                contact: &str,
            ) -> Result<(), StoreError> {
                let sql = "UPDATE acme_accounts SET status = $2, contact = $3 WHERE id = $1";
                run!(
                    execute(&self.pool),
                    "update ACME account",
                    sql,
                    id,
                    status,
                    contact
                )?;
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
                let (id, account, status, body) = (&o.id, &o.account_id, &o.status, &o.body);
                let sql = sqlx::AssertSqlSafe(sql);
                run!(
                    execute(&self.pool),
                    "insert ACME object",
                    sql,
                    id,
                    account,
                    status,
                    body,
                    now
                )?;
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
                let sql = sqlx::AssertSqlSafe(sql);
                let row = run!(fetch_optional(&self.pool), "read ACME object", sql, id)?;
                row.as_ref().map(object_from_row).transpose()
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
                let sql = sqlx::AssertSqlSafe(sql);
                let op = "update ACME object";
                let res = run!(
                    execute(&self.pool),
                    op,
                    sql,
                    id,
                    expected,
                    status,
                    body,
                    now
                )?;
                Ok(res.rows_affected() == 1)
            }

            async fn account_rekey(
                &self,
                id: &str,
                old_thumbprint: &str,
                new_thumbprint: &str,
                new_jwk: &str,
            ) -> Result<bool, StoreError> {
                let sql = "UPDATE acme_accounts SET thumbprint = $3, jwk = $4 \
                           WHERE id = $1 AND thumbprint = $2";
                let (old, new) = (old_thumbprint, new_thumbprint);
                let op = "change ACME account key";
                let res = run!(execute(&self.pool), op, sql, id, old, new, new_jwk)?;
                Ok(res.rows_affected() == 1)
            }

            async fn orders_of(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
                let sql = "SELECT id FROM acme_orders WHERE account_id = $1 \
                           AND status <> 'invalid' ORDER BY updated_at, id";
                let rows = run!(fetch_all(&self.pool), "list ACME orders", sql, account_id)?;
                rows.iter()
                    .map(|r| r.try_get("id").map_err(db("list ACME orders")))
                    .collect()
            }

            async fn orders_since(
                &self,
                account_id: &str,
                since: i64,
            ) -> Result<(i64, Option<i64>), StoreError> {
                let sql = "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM acme_orders \
                           WHERE account_id = $1 AND created_at >= $2";
                let op = "count ACME orders";
                let row = run!(fetch_one(&self.pool), op, sql, account_id, since)?;
                Ok((
                    row.try_get("n").map_err(db(op))?,
                    row.try_get("oldest").map_err(db(op))?,
                ))
            }

            async fn eab_create(
                &self,
                kid: &str,
                hmac_key: &str,
                label: Option<&str>,
                now: i64,
            ) -> Result<(), StoreError> {
                let sql = "INSERT INTO acme_eab (kid, hmac_key, created_at, label) \
                           VALUES ($1, $2, $3, $4)";
                run!(
                    execute(&self.pool),
                    "create ACME EAB key",
                    sql,
                    kid,
                    hmac_key,
                    now,
                    label
                )?;
                Ok(())
            }

            async fn eab_get(
                &self,
                kid: &str,
            ) -> Result<Option<(String, Option<String>)>, StoreError> {
                let sql = "SELECT hmac_key, account_id FROM acme_eab WHERE kid = $1";
                let op = "read ACME EAB key";
                let row = run!(fetch_optional(&self.pool), op, sql, kid)?;
                row.map(|r| {
                    Ok((
                        r.try_get("hmac_key").map_err(db(op))?,
                        r.try_get("account_id").map_err(db(op))?,
                    ))
                })
                .transpose()
            }

            async fn eab_bind(
                &self,
                kid: &str,
                account_id: &str,
                now: i64,
            ) -> Result<bool, StoreError> {
                let sql = "UPDATE acme_eab SET account_id = $2, bound_at = $3 \
                           WHERE kid = $1 AND account_id IS NULL";
                let res = run!(
                    execute(&self.pool),
                    "bind ACME EAB key",
                    sql,
                    kid,
                    account_id,
                    now
                )?;
                Ok(res.rows_affected() == 1)
            }

            async fn eab_list(&self) -> Result<Vec<EabKey>, StoreError> {
                let sql = "SELECT kid, label, created_at, account_id, bound_at FROM acme_eab \
                           ORDER BY created_at, kid";
                let op = "list ACME EAB keys";
                let rows = run!(fetch_all(&self.pool), op, sql)?;
                rows.iter()
                    .map(|r| {
                        Ok(EabKey {
                            kid: r.try_get("kid").map_err(db(op))?,
                            label: r.try_get("label").map_err(db(op))?,
                            created_at: r.try_get("created_at").map_err(db(op))?,
                            account_id: r.try_get("account_id").map_err(db(op))?,
                            bound_at: r.try_get("bound_at").map_err(db(op))?,
                        })
                    })
                    .collect()
            }

            async fn eab_delete(&self, kid: &str) -> Result<bool, StoreError> {
                let sql = "DELETE FROM acme_eab WHERE kid = $1";
                let res = run!(execute(&self.pool), "delete ACME EAB key", sql, kid)?;
                Ok(res.rows_affected() == 1)
            }

            async fn acme_sweep(&self, now: i64, before: i64) -> Result<u64, StoreError> {
                let sql = "DELETE FROM acme_nonces WHERE expires <= $1";
                let mut n =
                    run!(execute(&self.pool), "sweep ACME nonces", sql, now)?.rows_affected();
                // Authorizations first: they name their order only inside the JSON body.
                for table in ["acme_authzs", "acme_orders"] {
                    // The table name is one of two constants, never input.
                    let sql = sqlx::AssertSqlSafe(format!(
                        "DELETE FROM {table} WHERE updated_at < $1 \
                         AND status IN ('pending', 'ready', 'invalid', 'deactivated')"
                    ));
                    n += run!(execute(&self.pool), "sweep ACME orders", sql, before)?
                        .rows_affected();
                }
                Ok(n)
            }
        }

        impl $store {
            /// The account whose `column` (`id` or `thumbprint`, a constant) is `value`.
            async fn account_where(
                &self,
                column: &'static str,
                value: &str,
            ) -> Result<Option<AcmeAccount>, StoreError> {
                let sql =
                    format!("SELECT {ACCOUNT_COLUMNS} FROM acme_accounts WHERE {column} = $1");
                let sql = sqlx::AssertSqlSafe(sql);
                let row = run!(fetch_optional(&self.pool), "read ACME account", sql, value)?;
                row.as_ref().map(account_from_row).transpose()
            }
        }
    };
}

impl_acme!(SqliteStore);
impl_acme!(PgStore);

/// kid, hmac_key, created_at, account_id, bound_at.
type EabRow = (
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
);

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
        let sql = "INSERT INTO acme_accounts (id, thumbprint, jwk, status, contact, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        let (id, tp, jwk, status, contact, created) = a;
        let op = "copy ACME accounts";
        run!(
            execute(&mut *tx),
            op,
            sql,
            id,
            tp,
            jwk,
            status,
            contact,
            created
        )?;
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
            let sql = sqlx::AssertSqlSafe(insert.clone());
            let (id, account, status, body, updated, created) = r;
            let op = "copy ACME orders";
            run!(
                execute(&mut *tx),
                op,
                sql,
                id,
                account,
                status,
                body,
                updated,
                created
            )?;
        }
        counts.push((table, rows.len()));
    }
    if has_0006 {
        // Migration 0013 added the label; before it, none.
        let label = if src.has_column("acme_eab", "label").await? {
            "label"
        } else {
            "NULL"
        };
        // `label` is one of two constants, never input.
        let sql = format!(
            "SELECT kid, hmac_key, created_at, account_id, bound_at, {label} AS label \
             FROM acme_eab ORDER BY kid"
        );
        let keys: Vec<EabRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&src.pool)
            .await
            .map_err(db("read source ACME EAB keys"))?;
        for k in &keys {
            let sql = "INSERT INTO acme_eab (kid, hmac_key, created_at, account_id, bound_at, \
                       label) VALUES ($1, $2, $3, $4, $5, $6)";
            let (kid, key, created, account, bound, label) = k;
            run!(
                execute(&mut *tx),
                "copy ACME EAB keys",
                sql,
                kid,
                key,
                created,
                account,
                bound,
                label
            )?;
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
        s.eab_create("k1", "secret", Some("team a"), 1)
            .await
            .unwrap();
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
        let listed = s.eab_list().await.unwrap();
        assert_eq!(
            (listed[0].label.as_deref(), listed[0].account_id.as_deref()),
            (Some("team a"), Some("a1"))
        );

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
