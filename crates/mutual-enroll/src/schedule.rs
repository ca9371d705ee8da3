//! The renewal loop a long-running process spawns: wait until two-thirds of the certificate's
//! lifetime (± 5 % jitter, so a fleet enrolled together does not renew together), renew, and
//! when the CA cannot be reached retry with exponential backoff (1 s doubling to 1 min, ± 20 %
//! jitter, never faster than 1 s, never sleeping past the certificate's expiry) while the old
//! certificate keeps serving. It does not give up while the certificate is valid; once the
//! certificate is near its end (past 90 % of its life or under 5 minutes left) every failed
//! attempt is logged as an error, and an observer (the proxy's metrics) hears of each one.
//!
//! The loop only writes files; whoever uses them (the proxy's watcher) picks them up.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::files::{self, CertSummary};
use crate::renew::{renew_once, RenewOptions, Renewed};
use crate::EnrollError;

/// When to renew and how to retry.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Fraction of the lifetime after which to renew.
    pub at_fraction: f64,
    /// Jitter, as a fraction of the lifetime, either way.
    pub jitter: f64,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            at_fraction: 2.0 / 3.0,
            jitter: 0.05,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl Schedule {
    /// The unix time (seconds, fractional) at which to renew `c`, with the jitter drawn from `r`
    /// in [-1, 1]. The lifetime counts from `issued` (when we got the certificate: the file's
    /// modification time) rather than from notBefore, which CAs backdate (mutual by 5 min, for
    /// clock skew): for a 60 s certificate, two-thirds of notBefore..notAfter would already be
    /// past when it arrives. `issued` is clamped into the validity period.
    pub fn renew_at(&self, c: &CertSummary, issued: Option<f64>, r: f64) -> f64 {
        let nb = c.not_before as f64;
        let na = c.not_after as f64;
        let start = issued.map_or(nb, |t| t.clamp(nb, na.max(nb)));
        let life = (na - start).max(0.0);
        start + life * self.at_fraction + life * self.jitter * r.clamp(-1.0, 1.0)
    }

    /// The delay before the next attempt after `failures` failed ones, with the jitter `r` in
    /// [-1, 1] (± 20 %), capped so that the attempt still happens before `not_after`, and never
    /// below `min_backoff`: close to expiry a short cap once made ten attempts 100 ms apart.
    pub fn backoff(&self, failures: u32, now: f64, not_after: i64, r: f64) -> Duration {
        let exp = self
            .min_backoff
            .saturating_mul(1u32 << failures.min(16))
            .min(self.max_backoff);
        let jittered = exp.mul_f64(1.0 + 0.2 * r.clamp(-1.0, 1.0));
        let left = (not_after as f64 - now - 1.0).max(0.0);
        jittered
            .min(Duration::from_secs_f64(left))
            .min(self.max_backoff)
            .max(self.min_backoff)
    }

    /// Whether a certificate valid `nb..na` is near its end at `now`: past 90 % of its life or
    /// under 5 minutes left. Failures then are logged as errors.
    pub fn near_expiry(nb: i64, na: i64, now: f64) -> bool {
        let left = na as f64 - now;
        let life = (na - nb).max(1) as f64;
        left < 300.0 || left < life * 0.1
    }
}

fn now() -> f64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9
}

/// Hears of each renewal attempt's outcome (the proxy counts them in its metrics).
pub trait RenewalObserver: Send + Sync {
    /// An attempt failed; `near_expiry` as [`Schedule::near_expiry`].
    fn failed(&self, near_expiry: bool);
    /// The certificate was renewed; the new one ends at `not_after` (Unix seconds).
    fn renewed(&self, not_after: i64);
    /// The certificate was renewed (with what changed): `renew --daemon --exec` runs its hook.
    fn renewed_with(&self, _r: &Renewed) {}
    /// The trust bundle was checked against the CA's: its version (`mutual_trust_bundle_version`).
    fn trust_bundle(&self, _version: u64) {}
}

/// How often the renewal task checks the CA's trust bundle between renewals (it also checks
/// before each renewal).
pub const TRUST_REFRESH: Duration = Duration::from_secs(300);

/// Renews the certificate in `opts` for as long as it runs. Log lines carry serials and dates,
/// never the key.
pub struct Renewer {
    pub opts: RenewOptions,
    pub schedule: Schedule,
    observer: Option<Arc<dyn RenewalObserver>>,
}

impl Renewer {
    pub fn new(opts: RenewOptions) -> Renewer {
        Renewer {
            opts,
            schedule: Schedule::default(),
            observer: None,
        }
    }

    /// Reports every attempt's outcome to `o` too.
    pub fn with_observer(mut self, o: Arc<dyn RenewalObserver>) -> Renewer {
        self.observer = Some(o);
        self
    }

    /// Runs until renewal can no longer succeed (the certificate expired, or the CA says it is
    /// revoked or not its own), and returns why. Cancel by dropping or aborting the task.
    pub async fn run(self) -> EnrollError {
        let mut planned: Option<(String, f64)> = None;
        let mut trust_checked: Option<f64> = None;
        loop {
            if trust_checked.is_none_or(|t| now() - t >= TRUST_REFRESH.as_secs_f64()) {
                self.refresh_trust().await;
                trust_checked = Some(now());
            }
            let summary = match files::load_current(&self.opts.cert, &self.opts.key) {
                Ok(c) => c.summary,
                Err(e) => {
                    // Someone is replacing the files, or they are gone: look again shortly.
                    tracing::warn!(cert = %self.opts.cert.display(), "cannot read the certificate to renew: {e}");
                    tokio::time::sleep(self.schedule.max_backoff).await;
                    continue;
                }
            };
            // One jitter draw per certificate, so re-reading the files does not move the target.
            let at = match &planned {
                Some((serial, at)) if *serial == summary.serial => *at,
                _ => {
                    let r = rand::rng().random_range(-1.0..=1.0);
                    let issued = std::fs::metadata(&self.opts.cert)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs_f64());
                    let at = self.schedule.renew_at(&summary, issued, r);
                    tracing::info!(
                        serial = %summary.serial,
                        not_after = %mutual_tls::verify::rfc3339(summary.not_after),
                        renew_at = %mutual_tls::verify::rfc3339(at as i64),
                        "renewal scheduled"
                    );
                    planned = Some((summary.serial.clone(), at));
                    at
                }
            };
            let wait = at - now();
            if wait > 0.0 {
                // Wake at least every 5 minutes to notice files replaced by someone else.
                tokio::time::sleep(Duration::from_secs_f64(wait.min(300.0))).await;
                continue;
            }
            // A new root must be trusted before a certificate from it arrives.
            self.refresh_trust().await;
            trust_checked = Some(now());
            match self.renew_with_retries(&summary).await {
                Ok(r) => {
                    log_renewed(&r);
                    if let Some(o) = &self.observer {
                        o.renewed(r.new.not_after);
                        o.renewed_with(&r);
                    }
                }
                Err(e) => return e,
            }
        }
    }

    /// Brings the trust file (`--ca`) up to date with the CA's bundle; a failure is logged and
    /// the current file kept (the next check tries again).
    async fn refresh_trust(&self) {
        match crate::trust::refresh_trust(&self.opts.ca_url, &self.opts.ca).await {
            Ok(t) => {
                if t.changed {
                    tracing::info!(
                        version = t.version,
                        roots = t.roots,
                        file = %self.opts.ca.display(),
                        "trust bundle updated"
                    );
                }
                if let Some(o) = &self.observer {
                    o.trust_bundle(t.version);
                }
            }
            Err(e) => tracing::warn!(
                file = %self.opts.ca.display(),
                "cannot refresh the trust bundle, keeping the current one: {e}"
            ),
        }
    }

    /// Tries until it works, or until it cannot work any more.
    async fn renew_with_retries(&self, cur: &CertSummary) -> Result<Renewed, EnrollError> {
        let mut failures = 0u32;
        loop {
            match renew_once(&self.opts).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_fatal_for_renewal() => {
                    if let Some(o) = &self.observer {
                        o.failed(true);
                    }
                    tracing::error!(serial = %cur.serial, "renewal impossible: {e}");
                    return Err(e);
                }
                Err(e) => {
                    let t = now();
                    let near = Schedule::near_expiry(cur.not_before, cur.not_after, t);
                    if let Some(o) = &self.observer {
                        o.failed(near);
                    }
                    if t >= cur.not_after as f64 {
                        return Err(EnrollError::Expired {
                            path: self.opts.cert.clone(),
                            not_after: mutual_tls::verify::rfc3339(cur.not_after),
                        });
                    }
                    let r = rand::rng().random_range(-1.0..=1.0);
                    let mut delay = self.schedule.backoff(failures, t, cur.not_after, r);
                    if let EnrollError::Refused {
                        retry_after: Some(s),
                        ..
                    } = &e
                    {
                        let left = (cur.not_after as f64 - t - 1.0).max(0.1);
                        delay =
                            delay.max(Duration::from_secs(*s).min(Duration::from_secs_f64(left)));
                    }
                    failures = failures.saturating_add(1);
                    let left_s = (cur.not_after as f64 - t).max(0.0) as u64;
                    if near {
                        tracing::error!(
                            serial = %cur.serial,
                            attempt = failures,
                            retry_in_ms = delay.as_millis() as u64,
                            expires_in_s = left_s,
                            not_after = %mutual_tls::verify::rfc3339(cur.not_after),
                            "renewal failed, keeping the current certificate: {e} (it expires \
                             in {left_s} s; peers will refuse it then unless a renewal succeeds)"
                        );
                    } else {
                        tracing::warn!(
                            serial = %cur.serial,
                            attempt = failures,
                            retry_in_ms = delay.as_millis() as u64,
                            expires_in_s = left_s,
                            transient = e.is_transient(),
                            "renewal failed, keeping the current certificate: {e}"
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// The one log line per renewal (serial and dates; never the key).
pub fn log_renewed(r: &Renewed) {
    tracing::info!(
        serial = %r.new.serial,
        not_after = %mutual_tls::verify::rfc3339(r.new.not_after),
        previous_serial = %r.old.serial,
        new_key = r.rekeyed,
        ca_url = %r.ca_url,
        "certificate renewed"
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cert(nb: i64, na: i64) -> CertSummary {
        CertSummary {
            serial: "01".into(),
            not_before: nb,
            not_after: na,
            sans: vec![],
        }
    }

    #[test]
    fn renews_at_two_thirds_within_jitter() {
        let s = Schedule::default();
        let c = cert(1000, 1000 + 90_000);
        assert_eq!(s.renew_at(&c, None, 0.0), 1000.0 + 60_000.0);
        assert_eq!(s.renew_at(&c, None, 1.0), 1000.0 + 60_000.0 + 4_500.0);
        assert_eq!(s.renew_at(&c, None, -1.0), 1000.0 + 60_000.0 - 4_500.0);
        assert_eq!(s.renew_at(&c, None, 7.0), s.renew_at(&c, None, 1.0));
    }

    #[test]
    fn backdated_not_before_does_not_count() {
        let s = Schedule::default();
        // A 60 s certificate backdated by 5 min, received at 1300.
        let c = cert(1000, 1360);
        assert_eq!(s.renew_at(&c, Some(1300.0), 0.0), 1340.0);
        assert_eq!(s.renew_at(&c, Some(1300.0), 1.0), 1343.0);
        // A modification time outside the validity is clamped into it.
        assert_eq!(s.renew_at(&c, Some(10.0), 0.0), 1240.0);
        assert_eq!(s.renew_at(&c, Some(9999.0), 0.0), 1360.0);
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_stops_before_expiry() {
        let s = Schedule::default();
        let far = 1_000_000;
        let got: Vec<u64> = (0..9)
            .map(|f| s.backoff(f, 0.0, far, 0.0).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Jitter: ± 20 %, within [1 s, 1 min].
        assert_eq!(s.backoff(3, 0.0, far, 1.0), Duration::from_millis(9600));
        assert_eq!(s.backoff(3, 0.0, far, -1.0), Duration::from_millis(6400));
        assert_eq!(s.backoff(0, 0.0, far, -1.0), Duration::from_secs(1));
        assert_eq!(s.backoff(9, 0.0, far, 1.0), Duration::from_secs(60));
        // 10 s before expiry: never sleep past the last useful moment.
        assert_eq!(s.backoff(8, 0.0, 10, 0.0), Duration::from_secs(9));
        // At or past expiry, still never faster than 1 s (the issue saw ten tries 100 ms apart).
        for f in 0..20 {
            assert!(s.backoff(f, 0.0, 0, -1.0) >= Duration::from_secs(1));
            assert!(s.backoff(f, 9.5, 10, -1.0) >= Duration::from_secs(1));
        }
    }

    #[test]
    fn near_expiry_is_the_last_tenth_or_five_minutes() {
        // A 24 h certificate: the last 2.4 h.
        assert!(!Schedule::near_expiry(0, 86_400, 70_000.0));
        assert!(Schedule::near_expiry(0, 86_400, 78_000.0));
        // A 1 h certificate: the last 6 min (10 %), and any certificate's last 5 min.
        assert!(!Schedule::near_expiry(0, 3600, 3000.0));
        assert!(Schedule::near_expiry(0, 3600, 3300.0));
        assert!(Schedule::near_expiry(0, 1_000_000, 999_800.0));
    }
}
