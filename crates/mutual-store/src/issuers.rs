//! Per-issuer queries (`mutual ca rotate-intermediate`): a CA may have several intermediates
//! signing at once, each with its own CRL listing only its own certificates. Kept apart from the
//! [`crate::Inventory`] trait so the single-issuer API stays as it was: these are inherent
//! methods of [`Store`], written once for both backends.
//!
//! The first intermediate (`int-1`, made by `ca init`) keeps its CRL in `current_crl`, so a
//! store from before migration 0008 and replicas not yet upgraded serve the same CRL; every
//! later issuer's is a row of `issuer_crls`.
use sqlx::Row;

use crate::backend::{crl_from_row, crl_state_from_row, db, revoked_from_row};
use crate::{CrlState, RevokedEntry, Store, StoreError, StoredCrl};

/// The id of the intermediate `ca init` made (and of every row recorded before migration 0008).
pub const FIRST_ISSUER: &str = "int-1";

macro_rules! on_pool {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Store::Sqlite(s) => {
                let $p = &s.pool;
                $e
            }
            Store::Postgres(s) => {
                let $p = &s.pool;
                $e
            }
        }
    };
}

impl Store {
    /// Every revoked certificate signed by `issuer` (for its CRL).
    pub async fn revoked_for_issuer(&self, issuer: &str) -> Result<Vec<RevokedEntry>, StoreError> {
        let started = std::time::Instant::now();
        let sql = "SELECT serial, revoked_at, reason FROM certificates \
                   WHERE status = 'revoked' AND issuer = $1 ORDER BY revoked_at ASC, serial ASC";
        let r: Result<Vec<RevokedEntry>, StoreError> = on_pool!(self, p => {
            let rows = run!(fetch_all(p), "list revoked certificates", sql, issuer)?;
            rows.iter().map(revoked_from_row).collect()
        });
        self.note("revoked_for_issuer", started, r)
    }

    /// [`crate::Inventory::crl_state`] for one issuer: its revoked count and its stored CRL.
    pub async fn crl_state_for(&self, issuer: &str) -> Result<CrlState, StoreError> {
        let started = std::time::Instant::now();
        let sql = if issuer == FIRST_ISSUER {
            "SELECT (SELECT COUNT(*) FROM certificates WHERE status = 'revoked' AND issuer = $1) \
             AS revoked, (SELECT number FROM current_crl WHERE id = 1) AS number, \
             (SELECT next_update FROM current_crl WHERE id = 1) AS next_update"
        } else {
            "SELECT (SELECT COUNT(*) FROM certificates WHERE status = 'revoked' AND issuer = $1) \
             AS revoked, (SELECT number FROM issuer_crls WHERE issuer = $1) AS number, \
             (SELECT next_update FROM issuer_crls WHERE issuer = $1) AS next_update"
        };
        let r: Result<CrlState, StoreError> = on_pool!(self, p => {
            let row = run!(fetch_one(p), "read CRL state", sql, issuer)?;
            crl_state_from_row(&row)
        });
        self.note("crl_state_for", started, r)
    }

    /// Stores `crl` as `issuer`'s current CRL if its number is higher than the stored one's.
    pub async fn store_issuer_crl(
        &self,
        issuer: &str,
        crl: &StoredCrl,
    ) -> Result<bool, StoreError> {
        let started = std::time::Instant::now();
        if issuer == FIRST_ISSUER {
            return crate::Inventory::store_crl(self, crl).await;
        }
        let sql = "INSERT INTO issuer_crls (issuer, number, der, this_update, next_update) \
                   VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (issuer) DO UPDATE SET number = excluded.number, \
                   der = excluded.der, this_update = excluded.this_update, \
                   next_update = excluded.next_update \
                   WHERE issuer_crls.number < excluded.number";
        let r: Result<bool, StoreError> = on_pool!(self, p => {
            let (number, der, this, next) = (crl.number, &crl.der, crl.this_update, crl.next_update);
            let res = run!(execute(p), "store CRL", sql, issuer, number, der, this, next)?;
            Ok(res.rows_affected() > 0)
        });
        self.note("store_issuer_crl", started, r)
    }

    /// The CRL stored for `issuer`, if any.
    pub async fn issuer_crl(&self, issuer: &str) -> Result<Option<StoredCrl>, StoreError> {
        let started = std::time::Instant::now();
        if issuer == FIRST_ISSUER {
            return crate::Inventory::current_crl(self).await;
        }
        let sql = "SELECT number, der, this_update, next_update FROM issuer_crls WHERE issuer = $1";
        let r: Result<Option<StoredCrl>, StoreError> = on_pool!(self, p => {
            let row = run!(fetch_optional(p), "read CRL", sql, issuer)?;
            row.as_ref().map(crl_from_row).transpose()
        });
        self.note("issuer_crl", started, r)
    }

    /// The latest notAfter of any certificate `issuer` signed (revoked ones included: they stay
    /// on its CRL until they expire); `None` when it signed none.
    pub async fn issuer_last_expiry(&self, issuer: &str) -> Result<Option<i64>, StoreError> {
        let started = std::time::Instant::now();
        let sql = "SELECT MAX(not_after) AS last FROM certificates WHERE issuer = $1";
        let r: Result<Option<i64>, StoreError> = on_pool!(self, p => {
            let row = run!(fetch_one(p), "read issuer expiry", sql, issuer)?;
            row.try_get("last").map_err(db("read issuer expiry"))
        });
        self.note("issuer_last_expiry", started, r)
    }
}
