//! Several CA replicas behind one list of URLs (`--ca-url A --ca-url B`, or `A,B`): a request
//! that cannot reach one replica goes to the next, after a short backoff, and the replica that
//! answered is remembered so the next request starts there.
//!
//! Only a failure to get an answer moves on: connection refused or reset, a timeout, a TLS
//! handshake that fails, or a 5xx answer (503 `store_unavailable` from a replica whose database
//! is gone, a load balancer's 502). An answer for a reason (4xx: `token_used`, a bad CSR, a
//! revoked certificate) is the CA's verdict and is final: another replica would say the same.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::client::CaUrl;
use crate::EnrollError;

/// The wait before trying the next replica after the first failure; it doubles with every
/// further failure within one request, up to [`MAX_STEP`], ± 20 % jitter.
pub const FIRST_STEP: Duration = Duration::from_millis(200);
/// The longest wait between two replicas within one request.
pub const MAX_STEP: Duration = Duration::from_secs(5);

/// One or more CA base URLs, in the order given. Clones share the memory of which replica
/// answered last.
#[derive(Clone, Debug)]
pub struct CaUrls {
    urls: Arc<[CaUrl]>,
    /// Index of the replica that answered last: the next request starts there.
    preferred: Arc<AtomicUsize>,
}

impl CaUrls {
    /// Parses every input, each of which may hold several comma-separated URLs. Empty entries
    /// are skipped; at least one URL is needed; a URL given twice counts once.
    pub fn parse<S: AsRef<str>>(inputs: &[S]) -> Result<CaUrls, EnrollError> {
        let mut urls: Vec<CaUrl> = Vec::new();
        for part in inputs
            .iter()
            .flat_map(|i| i.as_ref().split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let u = CaUrl::parse(part)?;
            if !urls.iter().any(|x| x.as_str() == u.as_str()) {
                urls.push(u);
            }
        }
        if urls.is_empty() {
            return Err(EnrollError::BadUrl {
                url: String::new(),
                detail: "no CA URL given (expected https://HOST[:PORT], several comma-separated)"
                    .into(),
            });
        }
        Ok(CaUrls::from_vec(urls))
    }

    fn from_vec(urls: Vec<CaUrl>) -> CaUrls {
        CaUrls {
            urls: urls.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The URLs in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &CaUrl> {
        self.urls.iter()
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The order of the next request: the replica that answered last, then the others in the
    /// order given (wrapping around).
    pub fn order(&self) -> Vec<&CaUrl> {
        let n = self.urls.len();
        let start = self.preferred.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(|i| &self.urls[(start + i) % n]).collect()
    }

    fn remember(&self, url: &CaUrl) {
        if let Some(i) = self.urls.iter().position(|u| u.as_str() == url.as_str()) {
            self.preferred.store(i, Ordering::Relaxed);
        }
    }

    /// Runs `op` against one replica after another (see [`CaUrls::order`]) until one gives an
    /// answer that is not a reason to move on ([`EnrollError::tries_next_replica`]), waiting
    /// [`FIRST_STEP`] (doubling, at most [`MAX_STEP`], ± 20 %) between two tries. Returns that
    /// answer and the URL that gave it; when every replica failed, the last failure. Each
    /// failure is logged with the URL (`ca_url`); a success after a failure too.
    pub async fn failover<T, F, Fut>(
        &self,
        what: &str,
        mut op: F,
    ) -> Result<(T, CaUrl), EnrollError>
    where
        F: FnMut(CaUrl) -> Fut,
        Fut: Future<Output = Result<T, EnrollError>>,
    {
        let order: Vec<CaUrl> = self.order().into_iter().cloned().collect();
        let mut last: Option<EnrollError> = None;
        for (i, url) in order.iter().enumerate() {
            if i > 0 {
                let r: f64 = rand::rng().random_range(-1.0..=1.0);
                tokio::time::sleep(step(i as u32 - 1, r)).await;
            }
            match op(url.clone()).await {
                Err(e) if e.tries_next_replica() => {
                    if i + 1 < order.len() {
                        tracing::warn!(
                            ca_url = %url,
                            next = %order[i + 1],
                            "{what}: the CA replica failed, trying the next: {e}"
                        );
                    }
                    last = Some(e);
                }
                r => {
                    // A verdict (success or refusal for a reason) came from this replica.
                    self.remember(url);
                    if i > 0 {
                        tracing::info!(ca_url = %url, attempt = i + 1, "{what}: answered by the CA replica {url}");
                    }
                    return r.map(|v| (v, url.clone()));
                }
            }
        }
        Err(last.unwrap_or_else(|| EnrollError::BadUrl {
            url: String::new(),
            detail: "no CA URL".into(),
        }))
    }
}

/// The wait before the `n`-th further try (0-based) with jitter `r` in [-1, 1].
pub fn step(n: u32, r: f64) -> Duration {
    FIRST_STEP
        .saturating_mul(1u32 << n.min(16))
        .min(MAX_STEP)
        .mul_f64(1.0 + 0.2 * r.clamp(-1.0, 1.0))
}

impl From<CaUrl> for CaUrls {
    fn from(u: CaUrl) -> CaUrls {
        CaUrls::from_vec(vec![u])
    }
}

impl std::fmt::Display for CaUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, u) in self.urls.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(u.as_str())?;
        }
        Ok(())
    }
}

impl EnrollError {
    /// Whether another replica may answer where this one did not: no answer at all (refused,
    /// reset, timeout, a failed TLS handshake) or a server error (5xx, such as 503
    /// `store_unavailable`). A refusal for a reason (4xx) is final.
    pub fn tries_next_replica(&self) -> bool {
        match self {
            EnrollError::Unreachable { .. }
            | EnrollError::Timeout { .. }
            | EnrollError::Handshake { .. } => true,
            EnrollError::Refused { status, .. } | EnrollError::BadResponse { status, .. } => {
                *status >= 500
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn refused(status: u16, reason: &str) -> EnrollError {
        EnrollError::Refused {
            status,
            reason: reason.into(),
            detail: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn parses_repeated_and_comma_separated() {
        let u =
            CaUrls::parse(&["https://a:1, https://b:2", "https://c:3", "https://a:1/"]).unwrap();
        let v: Vec<&str> = u.iter().map(|x| x.as_str()).collect();
        assert_eq!(v, ["https://a:1", "https://b:2", "https://c:3"]);
        assert_eq!(u.to_string(), "https://a:1,https://b:2,https://c:3");
        assert!(matches!(
            CaUrls::parse(&["https://a:1,http://b"]),
            Err(EnrollError::BadUrl { url, .. }) if url == "http://b"
        ));
        assert!(CaUrls::parse::<&str>(&[]).is_err());
        assert!(CaUrls::parse(&[" , "]).is_err());
    }

    #[test]
    fn only_failures_to_answer_move_on() {
        let un = EnrollError::Unreachable {
            url: "u".into(),
            detail: "refused".into(),
        };
        assert!(un.tries_next_replica());
        assert!(EnrollError::Timeout {
            url: "u".into(),
            secs: 30
        }
        .tries_next_replica());
        assert!(refused(503, "store_unavailable").tries_next_replica());
        assert!(refused(500, "internal").tries_next_replica());
        assert!(!refused(401, "token_used").tries_next_replica());
        assert!(!refused(400, "bad_request").tries_next_replica());
        assert!(!refused(403, "revoked").tries_next_replica());
        assert!(!refused(429, "rate_limited").tries_next_replica());
    }

    #[test]
    fn steps_double_with_jitter() {
        assert_eq!(step(0, 0.0), Duration::from_millis(200));
        assert_eq!(step(1, 0.0), Duration::from_millis(400));
        assert_eq!(step(10, 0.0), MAX_STEP);
        assert_eq!(step(0, 1.0), Duration::from_millis(240));
        assert_eq!(step(0, -1.0), Duration::from_millis(160));
    }

    #[tokio::test]
    async fn fails_over_and_remembers_who_answered() {
        let urls = CaUrls::parse(&["https://a:1,https://b:2,https://c:3"]).unwrap();
        let calls = std::sync::Mutex::new(Vec::new());
        let r = urls
            .failover("test", |u| {
                calls.lock().unwrap().push(u.to_string());
                async move {
                    match u.as_str() {
                        "https://a:1" => Err(EnrollError::Unreachable {
                            url: u.to_string(),
                            detail: "refused".into(),
                        }),
                        "https://b:2" => Err(refused(503, "store_unavailable")),
                        _ => Ok(7),
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!((r.0, r.1.as_str()), (7, "https://c:3"));
        assert_eq!(
            *calls.lock().unwrap(),
            ["https://a:1", "https://b:2", "https://c:3"]
        );
        // The next request starts with the replica that answered.
        let order: Vec<&str> = urls.order().iter().map(|u| u.as_str()).collect();
        assert_eq!(order, ["https://c:3", "https://a:1", "https://b:2"]);

        // A verdict is final: token_used from the first replica is not retried elsewhere.
        calls.lock().unwrap().clear();
        let e = urls
            .failover("test", |u| {
                calls.lock().unwrap().push(u.to_string());
                async move { Err::<(), _>(refused(401, "token_used")) }
            })
            .await
            .unwrap_err();
        assert!(matches!(e, EnrollError::Refused { status: 401, .. }));
        assert_eq!(calls.lock().unwrap().len(), 1);

        // Every replica down: the last failure.
        let e = urls
            .failover("test", |u| async move {
                Err::<(), _>(EnrollError::Unreachable {
                    url: u.to_string(),
                    detail: "refused".into(),
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(e, EnrollError::Unreachable { url, .. } if url == "https://b:2"));
    }
}
