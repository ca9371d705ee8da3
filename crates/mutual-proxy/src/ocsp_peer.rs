//! OCSP about the peer's certificate (`serve --ocsp-from-aia`, `connect --ocsp`; docs/ocsp.md
//! "Checking peers"): the I/O around [`mutual_tls::ocsp_peer`], modelled on the CRL fetcher
//! (`cdp.rs`).
//!
//! A handshake whose verified leaf names an OCSP responder (AIA) and has no current answer is
//! reported here (without blocking: rustls' verifier is synchronous) and decided by
//! `--revocation-unknown` (deny by default: `revocation_unknown`). The fetcher POSTs one
//! request per leaf (RFC 6960 / RFC 5019, no nonce, http:// only, 10 s limit, at most 64 KiB,
//! at most [`MAX_PARALLEL`] at once, one in flight per leaf), checks the answer
//! ([`mutual_tls::ocsp_peer::verify_response`]: CertID, signer, freshness) and publishes it to
//! the handshakes. A good or unknown answer is asked again at 2/3 of its remaining validity, so
//! a revocation reaches the listener well before the old answer's nextUpdate; a revoked one is
//! final. A newly revoked peer rebuilds the listener (its reload: fresh session tickets, and
//! its established connections are re-checked and ended). A failure is retried with backoff
//! (2 s doubling to 5 min); a good answer past its nextUpdate stops counting. Entries are
//! dropped when the leaf expires, and there are at most [`MAX_ENTRIES`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use mutual_tls::ocsp_peer::{
    leaf_key, verify_response, OcspPeerRevocation, OcspSighting, PeerAnswer, PeerStatus,
};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

use crate::metrics::Metrics;
use crate::rebuild::RebuildTarget;
use crate::reload::Reload;
use crate::shutdown::Shutdown;

/// At most this many leaves are followed; a new one beyond it replaces the one expiring first.
pub const MAX_ENTRIES: usize = 5_000;
/// At most this many requests to responders at once.
pub const MAX_PARALLEL: usize = 16;

/// How the fetcher behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspPeerSettings {
    /// `--revocation-unknown deny` (true, default) or `allow`.
    pub deny_unknown: bool,
    /// Time limit of one request.
    pub fetch_timeout: Duration,
}

impl OcspPeerSettings {
    pub fn new(deny_unknown: bool) -> Self {
        OcspPeerSettings {
            deny_unknown,
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

struct Entry {
    sighting: OcspSighting,
    /// The leaf's notAfter (Unix seconds): past it, nothing to follow.
    not_after: i64,
    answer: Option<PeerAnswer>,
    next_try: Instant,
    failures: u32,
    in_flight: bool,
}

/// Fetches, checks and refreshes the OCSP answers about one listener's peers.
pub struct OcspPeerFetcher {
    settings: OcspPeerSettings,
    revocation: Arc<OcspPeerRevocation>,
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
    /// Leaves the fetcher follows (shared with the handshake-side callback, which reports
    /// each leaf once).
    known: Arc<Mutex<HashSet<Vec<u8>>>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<OcspSighting>>>,
    metrics: Arc<Metrics>,
    listener: String,
    target: RebuildTarget,
    /// Wakes the run loop (a request finished).
    wake: Notify,
    /// Counts finished requests (`connect` waits on it to retry a first handshake).
    landed: watch::Sender<u64>,
    parallel: Arc<Semaphore>,
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// First retry after 2 s, doubling, at most 5 minutes (as the CRL fetcher).
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(failures.min(9)).min(300))
}

/// When to ask again about a good or unknown answer: at 2/3 of what is left of it, not sooner
/// than 1 s from now.
fn refresh_in(next_update: i64, now: i64) -> Duration {
    Duration::from_secs(u64::try_from(((next_update - now) * 2 / 3).max(1)).unwrap_or(1))
}

impl OcspPeerFetcher {
    pub fn new(settings: OcspPeerSettings, listener: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel::<OcspSighting>();
        let known: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
        let k2 = Arc::clone(&known);
        let revocation = Arc::new(OcspPeerRevocation::new(
            settings.deny_unknown,
            Box::new(move |s: OcspSighting| {
                // Called from a handshake: report a leaf once, the fetcher then owns it.
                let fresh = k2
                    .lock()
                    .map(|mut k| k.insert(leaf_key(s.leaf.as_ref())))
                    .unwrap_or(false);
                if fresh {
                    let _ = tx.send(s);
                }
            }),
        ));
        metrics.set_ocsp_peer_answers(listener, 0);
        Arc::new(OcspPeerFetcher {
            settings,
            revocation,
            entries: Mutex::new(HashMap::new()),
            known,
            rx: Mutex::new(Some(rx)),
            metrics,
            listener: listener.to_string(),
            target: RebuildTarget::default(),
            wake: Notify::new(),
            landed: watch::channel(0).0,
            parallel: Arc::new(Semaphore::new(MAX_PARALLEL)),
        })
    }

    /// The answers for `TlsOptions::ocsp_peer`.
    pub fn revocation(&self) -> Arc<OcspPeerRevocation> {
        Arc::clone(&self.revocation)
    }

    /// The listener to rebuild when a peer is found revoked.
    pub fn set_reload_target(&self, t: Weak<dyn Reload>) {
        self.target.set(t);
    }

    /// How many requests have finished; [`OcspPeerFetcher::landed_after`] waits for more.
    pub fn landed(&self) -> u64 {
        *self.landed.borrow()
    }

    /// Waits (at most `limit`) until a request finishes after the `seen`-th.
    pub async fn landed_after(&self, seen: u64, limit: Duration) -> bool {
        let mut rx = self.landed.subscribe();
        let landed = tokio::time::timeout(limit, rx.wait_for(|n| *n > seen))
            .await
            .is_ok_and(|r| r.is_ok());
        landed
    }

    /// Runs until `shutdown`: takes new leaves, asks about those that are due.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut g| g.take()) else {
            return;
        };
        loop {
            self.expire();
            for key in self.due() {
                let me = Arc::clone(&self);
                tokio::spawn(async move { me.ask(key).await });
            }
            let wake = self.next_wake();
            tokio::select! {
                _ = shutdown.wait() => return,
                batch = crate::cdp::next_batch(&mut rx) => {
                    let Some(batch) = batch else { return };
                    batch.into_iter().for_each(|s| self.add(s));
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    fn add(&self, s: OcspSighting) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        let not_after = mutual_tls::ocsp::not_after_of(s.leaf.as_ref()).unwrap_or(i64::MAX);
        if e.len() >= MAX_ENTRIES {
            // Make room: the entry whose leaf expires first goes (a bound on memory; its next
            // handshake reports it again).
            if let Some(k) = e
                .iter()
                .min_by_key(|(_, v)| v.not_after)
                .map(|(k, _)| k.clone())
            {
                self.drop_entry(&mut e, &k);
            }
        }
        tracing::info!(listener = %self.listener, "new peer certificate naming the OCSP responder {}: asking", s.url);
        e.insert(
            leaf_key(s.leaf.as_ref()),
            Entry {
                sighting: s,
                not_after,
                answer: None,
                next_try: Instant::now(),
                failures: 0,
                in_flight: false,
            },
        );
    }

    fn drop_entry(&self, e: &mut HashMap<Vec<u8>, Entry>, key: &[u8]) {
        if let Some(v) = e.remove(key) {
            self.revocation.forget(v.sighting.leaf.as_ref());
        }
        if let Ok(mut k) = self.known.lock() {
            k.remove(key);
        }
    }

    /// Drops entries whose leaf has expired (nothing left to ask about).
    fn expire(&self) {
        let now = unix_now();
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        let gone: Vec<Vec<u8>> = e
            .iter()
            .filter(|(_, v)| v.not_after < now && !v.in_flight)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.drop_entry(&mut e, &k);
        }
        let answers = e.values().filter(|v| v.answer.is_some()).count();
        self.metrics.set_ocsp_peer_answers(&self.listener, answers);
    }

    /// The entries to ask about now, marked in flight.
    fn due(&self) -> Vec<Vec<u8>> {
        let Ok(mut e) = self.entries.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        e.iter_mut()
            .filter(|(_, v)| !v.in_flight && v.next_try <= now)
            .map(|(k, v)| {
                v.in_flight = true;
                k.clone()
            })
            .collect()
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.entries
            .lock()
            .ok()
            .and_then(|e| {
                e.values()
                    .filter(|v| !v.in_flight)
                    .map(|v| v.next_try)
                    .min()
            })
            .unwrap_or(far)
            .min(far)
    }

    /// One request about the entry `key`, its answer recorded and published.
    async fn ask(&self, key: Vec<u8>) {
        let sighting = match self.entries.lock() {
            Ok(e) => match e.get(&key) {
                Some(v) => v.sighting.clone(),
                None => return,
            },
            Err(_) => return,
        };
        let url = sighting.url.clone();
        let got = {
            let _permit = self.parallel.acquire().await;
            self.request(&sighting).await
        };
        let now = unix_now();
        let checked = got.and_then(|der| {
            verify_response(&der, sighting.leaf.as_ref(), sighting.issuer.as_ref(), now)
                .map_err(|e| ("invalid", e))
        });
        let mut revoked_now = false;
        if let Ok(mut e) = self.entries.lock() {
            if let Some(entry) = e.get_mut(&key) {
                entry.in_flight = false;
                match checked {
                    Ok(answer) => {
                        let (result, wait) = match answer.status {
                            PeerStatus::Good => ("good", refresh_in(answer.next_update, now)),
                            PeerStatus::Unknown => ("unknown", refresh_in(answer.next_update, now)),
                            // Final: nothing more to learn about this certificate.
                            PeerStatus::Revoked { .. } => ("revoked", Duration::from_secs(86_400)),
                        };
                        self.metrics.ocsp_peer_fetch(&self.listener, result);
                        let was_revoked = matches!(
                            entry.answer,
                            Some(PeerAnswer {
                                status: PeerStatus::Revoked { .. },
                                ..
                            })
                        );
                        revoked_now = result == "revoked" && !was_revoked;
                        let unknown_rule = match (result, self.settings.deny_unknown) {
                            ("unknown", true) => " (denied: revocation_unknown)",
                            ("unknown", false) => " (allowed: --revocation-unknown allow)",
                            _ => "",
                        };
                        tracing::info!(
                            listener = %self.listener,
                            next_update = %mutual_tls::verify::rfc3339(answer.next_update),
                            "OCSP answer from {url} about a peer certificate: {result}{unknown_rule}"
                        );
                        self.revocation
                            .publish(sighting.leaf.as_ref(), answer.clone());
                        entry.answer = Some(answer);
                        entry.failures = 0;
                        entry.next_try = Instant::now() + wait;
                    }
                    Err((result, why)) => {
                        self.metrics.ocsp_peer_fetch(&self.listener, result);
                        entry.failures += 1;
                        let wait = backoff(entry.failures);
                        entry.next_try = Instant::now() + wait;
                        let state = match &entry.answer {
                            Some(a) if now < a.next_update => format!(
                                "keeping the current answer until its nextUpdate {}",
                                mutual_tls::verify::rfc3339(a.next_update)
                            ),
                            _ if self.settings.deny_unknown => {
                                "no current answer: the peer is denied (revocation_unknown)".into()
                            }
                            _ => "no current answer: the peer is allowed (--revocation-unknown allow)"
                                .into(),
                        };
                        tracing::warn!(
                            listener = %self.listener,
                            retry_in = ?wait,
                            "OCSP request to {url} about a peer certificate failed ({result}): {why}; {state}"
                        );
                    }
                }
            }
        }
        self.landed.send_modify(|n| *n += 1);
        self.wake.notify_one();
        if revoked_now {
            self.rebuild();
        }
    }

    /// POSTs the request for `s` to its responder, within the time limit.
    async fn request(&self, s: &OcspSighting) -> Result<Vec<u8>, (&'static str, String)> {
        let req = mutual_tls::ocsp::request(s.leaf.as_ref(), s.issuer.as_ref())
            .map_err(|e| ("invalid", e))?;
        let limit = self.settings.fetch_timeout;
        match tokio::time::timeout(limit, crate::staple::post(&s.url, req)).await {
            Ok(r) => r.map_err(|e| ("failure", e)),
            Err(_) => Err(("failure", format!("no answer within {limit:?}"))),
        }
    }

    /// Rebuilds the listener: new ticket keys, and its established connections re-checked.
    fn rebuild(&self) {
        self.target
            .rebuild(&self.metrics, &self.listener, "a peer was found revoked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_two_thirds_of_what_is_left_and_backoff_grows() {
        assert_eq!(refresh_in(1300, 1000), Duration::from_secs(200));
        assert_eq!(refresh_in(1000, 1000), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(30), Duration::from_secs(300));
    }
}
