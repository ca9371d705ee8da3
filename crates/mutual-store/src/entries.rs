//! Registration entries of the SPIFFE Workload API (`mutual agent entry ...`, docs/agent.md), for
//! both backends like the EST requests beside it: the CA signs an agent's SVID request only when
//! an entry assigns that SPIFFE ID to the agent's node, so every replica must see the same
//! entries. Selectors are kept as written (`unix:uid:1000`); mutual-agent parses and matches them.
use crate::{PgStore, SqliteStore, Store, StoreError};

fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

/// One registration entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RegistrationEntry {
    pub id: String,
    pub spiffe_id: String,
    /// Every one must match the caller (sorted, no duplicates).
    pub selectors: Vec<String>,
    /// The SPIFFE ID of the node (agent) the entry is assigned to.
    pub node: String,
    /// Lifetime of each SVID, seconds.
    pub ttl_secs: i64,
    pub created_at: i64,
    pub created_by: String,
}

store_trait! {
    /// The store operations registration entries need.
    pub trait EntryStore {
        fn entry_create(&self, e: &RegistrationEntry) -> ();
        fn entry_get(&self, id: &str) -> Option<RegistrationEntry>;
        /// The entries of `node` (all when `None`), ordered by SPIFFE ID then id.
        fn entry_list(&self, node: Option<&str>) -> Vec<RegistrationEntry>;
        /// False when there was no such entry.
        fn entry_delete(&self, id: &str) -> bool;
    }
}

const COLUMNS: &str = "id, spiffe_id, selectors, node, ttl_secs, created_at, created_by";

row_reader! {
    fn from_row(row) -> RegistrationEntry {
        let e = || db("read registration entry");
        let id: String = row.try_get("id").map_err(e())?;
        let selectors: String = row.try_get("selectors").map_err(e())?;
        let selectors = serde_json::from_str(&selectors).map_err(|err| StoreError::Corrupt {
            serial: id.clone(),
            detail: format!("registration entry selectors are not a JSON array: {err}"),
        })?;
        Ok(RegistrationEntry {
            spiffe_id: row.try_get("spiffe_id").map_err(e())?,
            selectors,
            node: row.try_get("node").map_err(e())?,
            ttl_secs: row.try_get("ttl_secs").map_err(e())?,
            created_at: row.try_get("created_at").map_err(e())?,
            created_by: row.try_get("created_by").map_err(e())?,
            id,
        })
    }
}

/// The selectors' stored form, a JSON array (a list of strings always encodes).
fn selectors_json(e: &RegistrationEntry) -> String {
    serde_json::to_string(&e.selectors).unwrap_or_else(|_| "[]".into())
}

/// The one INSERT of an entry, for either backend (creation and `ca migrate`'s copy).
macro_rules! insert {
    ($e:expr) => {
        sqlx::query(
            "INSERT INTO registration_entries \
             (id, spiffe_id, selectors, node, ttl_secs, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&$e.id)
        .bind(&$e.spiffe_id)
        .bind(selectors_json($e))
        .bind(&$e.node)
        .bind($e.ttl_secs)
        .bind($e.created_at)
        .bind(&$e.created_by)
    };
}

macro_rules! impl_entries {
    ($store:ty) => {
        impl EntryStore for $store {
            async fn entry_create(&self, e: &RegistrationEntry) -> Result<(), StoreError> {
                insert!(e)
                    .execute(&self.pool)
                    .await
                    .map_err(db("store registration entry"))?;
                Ok(())
            }

            async fn entry_get(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
                let sql = format!("SELECT {COLUMNS} FROM registration_entries WHERE id = $1");
                let sql = sqlx::AssertSqlSafe(sql);
                let row = run!(fetch_optional(&self.pool), "read registration entry", sql, id)?;
                row.as_ref().map(from_row).transpose()
            }

            async fn entry_list(
                &self,
                node: Option<&str>,
            ) -> Result<Vec<RegistrationEntry>, StoreError> {
                let sql = format!(
                    "SELECT {COLUMNS} FROM registration_entries WHERE ($1 IS NULL OR node = $1) \
                     ORDER BY spiffe_id, id"
                );
                let sql = sqlx::AssertSqlSafe(sql);
                let rows = run!(fetch_all(&self.pool), "list registration entries", sql, node)?;
                rows.iter().map(from_row).collect()
            }

            async fn entry_delete(&self, id: &str) -> Result<bool, StoreError> {
                let sql = "DELETE FROM registration_entries WHERE id = $1";
                let res = run!(execute(&self.pool), "delete registration entry", sql, id)?;
                Ok(res.rows_affected() == 1)
            }
        }
    };
}

impl_entries!(SqliteStore);
impl_entries!(PgStore);

/// Copies the entries for `ca migrate` (none before migration 0011).
pub(crate) async fn copy_to_postgres(
    src: &SqliteStore,
    tx: &mut sqlx::PgConnection,
) -> Result<(), StoreError> {
    if !src.has_table("registration_entries").await? {
        return Ok(());
    }
    let entries = src.entry_list(None).await?;
    for e in &entries {
        insert!(e)
            .execute(&mut *tx)
            .await
            .map_err(db("copy registration entries"))?;
    }
    let (copied,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM registration_entries")
        .fetch_one(&mut *tx)
        .await
        .map_err(db("count registration entries"))?;
    if copied != entries.len() as i64 {
        return Err(StoreError::CopyMismatch {
            table: "registration_entries",
            source_rows: entries.len() as i64,
            target_rows: copied,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn entries_are_listed_by_node_and_deleted_once() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open_sqlite(&d.path().join("i.db"), true)
            .await
            .unwrap();
        let e = |id: &str, node: &str| RegistrationEntry {
            id: id.into(),
            spiffe_id: format!("spiffe://td/{id}"),
            selectors: vec!["unix:uid:1000".into(), "unix:sha256:ab".into()],
            node: node.into(),
            ttl_secs: 3600,
            created_at: 5,
            created_by: "cli:root".into(),
        };
        s.entry_create(&e("b", "spiffe://td/node/n1"))
            .await
            .unwrap();
        s.entry_create(&e("a", "spiffe://td/node/n2"))
            .await
            .unwrap();
        // The id is the key: the same id twice is refused, nothing is overwritten.
        assert!(s
            .entry_create(&e("b", "spiffe://td/node/n2"))
            .await
            .is_err());
        let n1 = s.entry_list(Some("spiffe://td/node/n1")).await.unwrap();
        assert_eq!(n1, vec![e("b", "spiffe://td/node/n1")]);
        let all = s.entry_list(None).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            s.entry_get("a").await.unwrap(),
            Some(e("a", "spiffe://td/node/n2"))
        );
        assert!(s.entry_delete("a").await.unwrap());
        assert!(!s.entry_delete("a").await.unwrap());
        assert_eq!(s.entry_get("a").await.unwrap(), None);
    }
}
