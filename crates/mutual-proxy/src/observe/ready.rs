//! Readiness for `GET /readyz` on the metrics address: 200 when every listener is bound and has
//! usable material (and, with `--crl-from-cdp` and `--revocation-unknown deny`, a current CRL for
//! every distribution point it knows), else 503 with a short JSON body naming what is not ready.
//! Load balancers and Kubernetes send traffic only to a ready proxy; `/healthz` stays "the
//! process is alive".
//!
//! Each part of the process owns named conditions and sets them; the endpoint reports them all.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The named readiness conditions of one process.
#[derive(Debug, Default)]
pub struct Readiness {
    /// condition -> what is wrong (absent: ready).
    problems: Mutex<BTreeMap<String, String>>,
    /// condition -> Unix seconds after which it is not ready (certificate notAfter).
    deadlines: Mutex<BTreeMap<String, (i64, String)>>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Readiness {
    /// Marks `what` not ready (`Some(reason)`) or ready (`None`).
    pub fn set(&self, what: &str, problem: Option<String>) {
        if let Ok(mut p) = self.problems.lock() {
            match problem {
                Some(why) => {
                    p.insert(what.to_string(), why);
                }
                None => {
                    p.remove(what);
                }
            }
        }
    }

    /// `what` stops being ready at `at` (Unix seconds), saying `why`.
    pub fn set_deadline(&self, what: &str, at: i64, why: &str) {
        if let Ok(mut d) = self.deadlines.lock() {
            d.insert(what.to_string(), (at, why.to_string()));
        }
    }

    /// Drops `what`'s deadline (a listener that a reload removed no longer serves that certificate).
    pub fn forget_deadline(&self, what: &str) {
        if let Ok(mut d) = self.deadlines.lock() {
            d.remove(what);
        }
    }

    /// Every condition that is not ready now, with its reason.
    pub fn not_ready(&self) -> BTreeMap<String, String> {
        let mut out = self.problems.lock().map(|p| p.clone()).unwrap_or_default();
        // A key in a PKCS#11 token that can no longer sign (token removed or reset): new full
        // handshakes fail until it is back (resumed sessions need no signature).
        for k in mutual_tls::load::token_key_status() {
            if let Some(e) = k.last_error.filter(|_| !k.up) {
                out.insert(format!("pkcs11 key {}", k.uri), e);
            }
        }
        let t = now();
        if let Ok(d) = self.deadlines.lock() {
            for (k, (at, why)) in d.iter() {
                if t >= *at {
                    out.entry(k.clone()).or_insert_with(|| why.clone());
                }
            }
        }
        out
    }

    /// The `/readyz` answer: (ready, JSON body).
    pub fn report(&self) -> (bool, String) {
        let nr = self.not_ready();
        let ready = nr.is_empty();
        let body = serde_json::json!({ "ready": ready, "not_ready": nr });
        (ready, format!("{body}\n"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn conditions_and_deadlines() {
        let r = Readiness::default();
        assert!(r.report().0);
        r.set("listener serve", Some("not bound yet".into()));
        let (ok, body) = r.report();
        assert!(!ok);
        assert!(body.contains("not bound yet"), "{body}");
        r.set("listener serve", None);
        assert!(r.report().0);
        r.set_deadline("cert serve", now() - 1, "certificate expired");
        assert_eq!(
            r.not_ready().get("cert serve").map(String::as_str),
            Some("certificate expired")
        );
    }
}
