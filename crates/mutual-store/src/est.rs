//! EST requests held for manual approval (crates/mutual-est, `mutual cert pending|approve|reject`),
//! for both backends, like the ACME state beside it: every state a replica needs is in the
//! store, and a decision is one conditional `UPDATE` so two operators (or replicas) cannot both
//! decide one request.
use crate::backend::db;
use crate::{inserted_or_found, PgStore, SqliteStore, Store, StoreError};

/// One held request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EstRequest {
    pub id: String,
    pub label: String,
    pub requested_by: String,
    /// JSON array of SANs (CLI form).
    pub names: String,
    /// `pending`, `approved`, `rejected` or `issued`.
    pub status: String,
    pub serial: Option<String>,
    #[serde(skip)]
    pub certificate: Option<String>,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
}

/// One move of a held request from status `from` to `to`: an operator's decision
/// ([`EstMove::decide`]) or the certificate issued for an approved request
/// ([`EstMove::issued`]). Fields left `None` keep what the row has.
#[derive(Clone, Copy, Debug)]
pub struct EstMove<'a> {
    pub id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// Who decided; recorded as `decided_by`, with `now` as `decided_at`.
    pub by: Option<&'a str>,
    pub serial: Option<&'a str>,
    /// PEM.
    pub certificate: Option<&'a str>,
    /// When `by` decided (unused without `by`).
    pub now: i64,
}

impl<'a> EstMove<'a> {
    /// `pending` to `to` (`approved` or `rejected`), decided by `by` at `now`.
    pub fn decide(id: &'a str, to: &'a str, by: &'a str, now: i64) -> Self {
        EstMove {
            id,
            from: "pending",
            to,
            by: Some(by),
            serial: None,
            certificate: None,
            now,
        }
    }

    /// `approved` to `issued`, with the certificate's serial and PEM (the decision's who and
    /// when stay).
    pub fn issued(id: &'a str, serial: &'a str, certificate: &'a str) -> Self {
        EstMove {
            id,
            from: "approved",
            to: "issued",
            by: None,
            serial: Some(serial),
            certificate: Some(certificate),
            now: 0,
        }
    }
}

store_trait! {
    /// The store operations manual approval needs.
    pub trait EstStore {
        /// Records a pending request unless one with this id exists; returns the stored one.
        fn est_request_put(&self, r: &EstRequest) -> EstRequest;
        fn est_request_get(&self, id: &str) -> Option<EstRequest>;
        /// Requests with this status (all when `None`), oldest first.
        fn est_request_list(&self, status: Option<&str>) -> Vec<EstRequest>;
        /// Moves a request as `m` says; false when it was not in `m.from` (decided already,
        /// or unknown).
        fn est_request_move(&self, m: &EstMove<'_>) -> bool;
    }
}

const COLUMNS: &str = "id, label, requested_by, names, status, serial, certificate, created_at, \
                       decided_at, decided_by";

row_reader! {
    fn from_row(row) -> EstRequest {
        let e = || db("read EST request");
        Ok(EstRequest {
            id: row.try_get("id").map_err(e())?,
            label: row.try_get("label").map_err(e())?,
            requested_by: row.try_get("requested_by").map_err(e())?,
            names: row.try_get("names").map_err(e())?,
            status: row.try_get("status").map_err(e())?,
            serial: row.try_get("serial").map_err(e())?,
            certificate: row.try_get("certificate").map_err(e())?,
            created_at: row.try_get("created_at").map_err(e())?,
            decided_at: row.try_get("decided_at").map_err(e())?,
            decided_by: row.try_get("decided_by").map_err(e())?,
        })
    }
}

macro_rules! impl_est {
    ($store:ty) => {
        impl EstStore for $store {
            async fn est_request_put(&self, r: &EstRequest) -> Result<EstRequest, StoreError> {
                let sql = "INSERT INTO est_requests \
                           (id, label, requested_by, names, status, created_at) \
                           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";
                let (id, label, by, names) = (&r.id, &r.label, &r.requested_by, &r.names);
                let op = "store EST request";
                run!(execute(&self.pool), op, sql, id, label, by, names, &r.status, r.created_at)?;
                let stored = self.est_request_get(&r.id).await?;
                inserted_or_found(stored, &r.id, "EST request")
            }

            async fn est_request_get(&self, id: &str) -> Result<Option<EstRequest>, StoreError> {
                let sql = format!("SELECT {COLUMNS} FROM est_requests WHERE id = $1");
                let sql = sqlx::AssertSqlSafe(sql);
                let row = run!(fetch_optional(&self.pool), "read EST request", sql, id)?;
                row.as_ref().map(from_row).transpose()
            }

            async fn est_request_list(
                &self,
                status: Option<&str>,
            ) -> Result<Vec<EstRequest>, StoreError> {
                let sql = format!(
                    "SELECT {COLUMNS} FROM est_requests WHERE ($1 IS NULL OR status = $1) \
                     ORDER BY created_at, id"
                );
                let sql = sqlx::AssertSqlSafe(sql);
                let rows = run!(fetch_all(&self.pool), "list EST requests", sql, status)?;
                rows.iter().map(from_row).collect()
            }

            async fn est_request_move(&self, m: &EstMove<'_>) -> Result<bool, StoreError> {
                let sql = "UPDATE est_requests SET status = $3, \
                           decided_at = COALESCE($4, decided_at), \
                           decided_by = COALESCE($5, decided_by), \
                           serial = COALESCE($6, serial), certificate = COALESCE($7, certificate) \
                           WHERE id = $1 AND status = $2";
                let (id, from, to, by) = (m.id, m.from, m.to, m.by);
                let (at, serial, cert) = (by.map(|_| m.now), m.serial, m.certificate);
                let op = "update EST request";
                let res = run!(execute(&self.pool), op, sql, id, from, to, at, by, serial, cert)?;
                Ok(res.rows_affected() == 1)
            }
        }
    };
}

impl_est!(SqliteStore);
impl_est!(PgStore);
