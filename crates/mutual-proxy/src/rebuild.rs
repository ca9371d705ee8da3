//! The weak link from a revocation fetcher (CRLs from distribution points, cdp.rs; peer OCSP,
//! ocsp_peer.rs) back to the listener it serves, and the one way both rebuild that listener when
//! what they fetched changes a verdict: new session tickets, so no session from before resumes,
//! and its established connections re-checked. Weak, so a removed listener is not kept alive.

use std::sync::{Mutex, Weak};

use crate::metrics::Metrics;
use crate::reload::Reload;

/// The listener a fetcher rebuilds, once it is known.
#[derive(Default)]
pub(crate) struct RebuildTarget(Mutex<Option<Weak<dyn Reload>>>);

impl RebuildTarget {
    pub(crate) fn set(&self, t: Weak<dyn Reload>) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(t);
        }
    }

    /// Reloads the listener, if it is still there, counting the reload in `metrics`; a failure
    /// is logged as "reload after WHY failed".
    pub(crate) fn rebuild(&self, metrics: &Metrics, listener: &str, why: &str) {
        let target = self.0.lock().ok().and_then(|g| g.clone());
        if let Some(t) = target.and_then(|w| w.upgrade()) {
            match t.reload() {
                Ok(()) => metrics.reload(true),
                Err(e) => {
                    metrics.reload(false);
                    tracing::warn!(%listener, "reload after {why} failed: {e}");
                }
            }
        }
    }
}
