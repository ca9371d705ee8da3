//! Prometheus metrics with the exact names of DESIGN.md's observability contract, and the small
//! plain-HTTP endpoint that serves them (`/metrics`, `/healthz`, `/readyz`). One [`Metrics`] per process;
//! every listener gets a [`ListenerMetrics`] view labelled with its name.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use mutual_tls::Reason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::audit::Outcome;
use crate::shutdown::Shutdown;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    listener: String,
    result: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    listener: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    listener: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabel {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    listener: String,
    identity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerReasonLabels {
    listener: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerResultLabels {
    listener: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRequestLabels {
    listener: String,
    result: String,
    identity: String,
}

type HistogramFamily = Family<ListenerLabel, Histogram, fn() -> Histogram>;

fn handshake_histogram() -> Histogram {
    // 0.5 ms .. ~8 s: a local mTLS handshake takes about 1 ms, a slow client several seconds.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// How many distinct peer identities the per-identity expiry gauge tracks; beyond this, new
/// identities are not added (bounded memory and bounded series, whatever clients present).
pub const MAX_TRACKED_IDENTITIES: usize = 1000;

/// A certificate counts towards its identity's "soonest expiry" while it has been seen within
/// this window: a renewed client stops presenting its old certificate, which then drops out.
pub const PEER_WINDOW: Duration = Duration::from_secs(3600);

/// Per-certificate bookkeeping for the peer expiry gauge: serial -> (notAfter, last seen).
type PeerCerts = HashMap<String, (i64, std::time::Instant)>;

/// One tracked identity: its certificates and its series of the gauge (kept here so a known
/// peer costs no label allocation or family lookup per connection, issue 20).
struct PeerEntry {
    certs: PeerCerts,
    gauge: Gauge,
}

/// Tracked identities by listener, then identity (looked up by `&str`, no allocation for a
/// known peer); `count` is the number of identities over all listeners.
#[derive(Default)]
struct Peers {
    by_listener: HashMap<String, HashMap<String, PeerEntry>>,
    count: usize,
}

/// The process-wide registry and metric families, registered domain by domain (as linkerd
/// does): each part of the proxy owns its families and registers them itself; names and labels
/// are those of docs/proxy.md.
pub struct Metrics {
    registry: Registry,
    conn: ConnFamilies,
    certs: CertFamilies,
    reloads: Family<ResultLabel, Counter>,
    cdp: CdpFamilies,
    ocsp_peer: OcspPeerFamilies,
    renewal: RenewalFamilies,
    peers: Mutex<Peers>,
    /// Identities that have their own `mutual_http_requests_total` series (bounded).
    http_identities: Mutex<std::collections::HashSet<(String, String)>>,
    /// `/readyz` conditions.
    pub ready: crate::ready::Readiness,
    /// `mutual_pkcs11_key_up{key}`: 1 while a token key signs, 0 after a failed signature.
    pkcs11_up: Family<KeyLabel, Gauge>,
}

/// A group of metric families: the struct and its `register`, from one table of
/// `field: Type = constructor => "name", "help";` rows (Prometheus name and HELP text beside
/// the field that feeds it).
macro_rules! families {
    ($(#[$doc:meta])* struct $name:ident {
        $($field:ident: $ty:ty = $init:expr => $metric:literal, $help:literal;)*
    }) => {
        $(#[$doc])*
        struct $name {
            $($field: $ty,)*
        }

        impl $name {
            fn register(registry: &mut Registry) -> Self {
                let f = $name { $($field: $init,)* };
                $(registry.register($metric, $help, f.$field.clone());)*
                f
            }
        }
    };
}

// Counters get their `_total` suffix from the OpenMetrics encoder.
families! {
    /// Connections and requests of the listeners (serve, connect, HTTP mode, live
    /// re-authorization).
    struct ConnFamilies {
        handshakes: Family<HandshakeLabels, Counter> = Family::default() =>
            "mutual_handshakes",
            "Connections by outcome: result (allowed|denied|failed) and reason label";
        active: Family<ListenerLabel, Gauge> = Family::default() =>
            "mutual_connections_active",
            "Connections currently open (handshaking or proxying)";
        bytes: Family<BytesLabels, Counter> = Family::default() =>
            "mutual_bytes",
            "Bytes proxied; direction in = from the accepted client, out = towards it";
        handshake_duration: HistogramFamily = Family::new_with_constructor(handshake_histogram) =>
            "mutual_handshake_duration_seconds",
            "Time from accept to a finished TLS handshake";
        rejected: Family<ListenerLabel, Counter> = Family::default() =>
            "mutual_connections_rejected",
            "Connections closed at once because --max-connections was reached";
        authz_terminated: Family<ListenerReasonLabels, Counter> = Family::default() =>
            "mutual_authz_terminated",
            "Established connections closed because a reload (policy, CRL, config) no longer allows their peer, by reason";
        http_requests: Family<HttpRequestLabels, Counter> = Family::default() =>
            "mutual_http_requests",
            "HTTP-mode requests by result (allowed|denied|failed) and client identity (identities beyond the tracking limit count as `other`)";
    }
}

families! {
    /// This process's own certificates and its peers' (expiry gauges).
    struct CertFamilies {
        cert_expiry: Family<ExpiryLabels, Gauge> = Family::default() =>
            "mutual_cert_expiry_timestamp_seconds",
            "notAfter (Unix seconds) of this process's own certificate, by listener and role (server|client)";
        cert_not_before: Family<ExpiryLabels, Gauge> = Family::default() =>
            "mutual_cert_not_before_timestamp_seconds",
            "notBefore (Unix seconds) of this process's own certificate, by listener and role: with the notAfter, its lifetime";
        peer_expiry: Family<PeerLabels, Gauge> = Family::default() =>
            "mutual_peer_cert_expiry_timestamp_seconds",
            "Soonest notAfter (Unix seconds) among the verified certificates each peer identity presented in the last hour";
    }
}

/// Reloads (file watcher, SIGHUP, config file): both results show from the start.
fn register_reloads(registry: &mut Registry) -> Family<ResultLabel, Counter> {
    let reloads = Family::<ResultLabel, Counter>::default();
    registry.register(
        "mutual_config_reloads",
        "Reloads of certificates, keys, CA bundles, CRLs and policies, by result (success|failure)",
        reloads.clone(),
    );
    for result in ["success", "failure"] {
        let _ = reloads.get_or_create(&ResultLabel {
            result: result.into(),
        });
    }
    reloads
}

families! {
    /// CRLs fetched from distribution points (`cdp.rs`).
    struct CdpFamilies {
        crl_fetches: Family<ResultLabel, Counter> = Family::default() =>
            "mutual_crl_fetch",
            "CRL downloads from distribution points (--crl-from-cdp), by result (success|failure|invalid)";
        crl_next_update: Family<IssuerLabel, Gauge> = Family::default() =>
            "mutual_crl_next_update_timestamp_seconds",
            "nextUpdate (Unix seconds) of the current CRL from each issuer (--crl-from-cdp)";
    }
}

families! {
    /// OCSP answers about peers' certificates (`ocsp_peer.rs`).
    struct OcspPeerFamilies {
        fetches: Family<ListenerResultLabels, Counter> = Family::default() =>
            "mutual_ocsp_peer_fetch",
            "OCSP requests about peers' certificates (serve --ocsp-from-aia, connect --ocsp), by listener and result (good|revoked|unknown|failure|invalid)";
        answers: Family<ListenerLabel, Gauge> = Family::default() =>
            "mutual_ocsp_peer_answers",
            "Peer certificates with an OCSP answer kept for handshakes (bounded), by listener";
    }
}

families! {
    /// The `--ca-url` renewal task's health: failures climb while the CA cannot renew us.
    struct RenewalFamilies {
        renewal_failures: Family<ListenerLabel, Counter> = Family::default() =>
            "mutual_renewal_failures",
            "Failed attempts to renew this process's own certificate from the online CA (--ca-url)";
        renewal_last_success: Family<ListenerLabel, Gauge> = Family::default() =>
            "mutual_renewal_last_success_timestamp_seconds",
            "When (Unix seconds) this process's own certificate was last renewed (--ca-url)";
        trust_bundle_version: Family<ListenerLabel, Gauge> = Family::default() =>
            "mutual_trust_bundle_version",
            "Version of the CA's trust bundle (/v1/roots) this listener's --ca file was last checked against (--ca-url)";
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let conn = ConnFamilies::register(&mut registry);
        let certs = CertFamilies::register(&mut registry);
        let reloads = register_reloads(&mut registry);
        let cdp = CdpFamilies::register(&mut registry);
        let ocsp_peer = OcspPeerFamilies::register(&mut registry);
        let renewal = RenewalFamilies::register(&mut registry);
        let pkcs11_up = Family::<KeyLabel, Gauge>::default();
        registry.register(
            "mutual_pkcs11_key_up",
            "Whether the TLS key in a PKCS#11 token signs (1) or its last signature failed (0)",
            pkcs11_up.clone(),
        );
        Metrics {
            registry,
            conn,
            certs,
            reloads,
            cdp,
            ocsp_peer,
            renewal,
            peers: Mutex::new(Peers::default()),
            http_identities: Mutex::new(std::collections::HashSet::new()),
            ready: crate::ready::Readiness::default(),
            pkcs11_up,
        }
    }

    /// A renewal task starts for `listener`: its failure counter shows as 0 from then on.
    pub fn renewal_started(&self, listener: &str) {
        let _ = self.renewal.renewal_failures.get_or_create(&ListenerLabel {
            listener: listener.into(),
        });
    }

    /// Counts a failed renewal attempt (`mutual_renewal_failures_total{listener}`).
    pub fn renewal_failed(&self, listener: &str) {
        self.renewal
            .renewal_failures
            .get_or_create(&ListenerLabel {
                listener: listener.into(),
            })
            .inc();
    }

    /// Records a successful renewal at `at` (Unix seconds).
    pub fn renewal_succeeded(&self, listener: &str, at: i64) {
        self.renewal
            .renewal_last_success
            .get_or_create(&ListenerLabel {
                listener: listener.into(),
            })
            .set(at);
    }

    /// The trust bundle version `listener`'s --ca file matches (`mutual_trust_bundle_version`).
    pub fn trust_bundle_checked(&self, listener: &str, version: u64) {
        self.renewal
            .trust_bundle_version
            .get_or_create(&ListenerLabel {
                listener: listener.into(),
            })
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// A view for one listener; pre-creates its series so they show as 0 from the start.
    pub fn listener(self: &Arc<Self>, name: &str) -> ListenerMetrics {
        let l = ListenerLabel {
            listener: name.to_string(),
        };
        let mut handshakes = HashMap::new();
        for reason in Reason::ALL {
            let outcome = match reason {
                Reason::Ok => Outcome::Allowed,
                Reason::PolicyDenied => Outcome::Denied,
                _ => Outcome::Failed,
            };
            let c = self.conn.handshakes.get_or_create_owned(&HandshakeLabels {
                listener: name.to_string(),
                result: outcome.label().to_string(),
                reason: reason.label().to_string(),
            });
            handshakes.insert((outcome, reason), c);
        }
        for reason in [Reason::PolicyDenied, Reason::Revoked] {
            let _ = self
                .conn
                .authz_terminated
                .get_or_create(&ListenerReasonLabels {
                    listener: name.to_string(),
                    reason: reason.label().to_string(),
                });
        }
        ListenerMetrics {
            name: name.to_string(),
            metrics: Arc::clone(self),
            handshakes,
            active: self.conn.active.get_or_create_owned(&l),
            bytes_in: self.conn.bytes.get_or_create_owned(&BytesLabels {
                listener: name.to_string(),
                direction: "in".into(),
            }),
            bytes_out: self.conn.bytes.get_or_create_owned(&BytesLabels {
                listener: name.to_string(),
                direction: "out".into(),
            }),
            handshake_duration: self.conn.handshake_duration.get_or_create_owned(&l),
            rejected: self.conn.rejected.get_or_create_owned(&l),
        }
    }

    /// Sets `mutual_cert_expiry_timestamp_seconds{listener, role}` (one series per listener:
    /// under `mutual run` each has its own certificate).
    pub fn set_cert_expiry(&self, listener: &str, role: &str, not_after: i64) {
        self.certs
            .cert_expiry
            .get_or_create(&ExpiryLabels {
                listener: listener.into(),
                role: role.into(),
            })
            .set(not_after);
    }

    /// Sets both ends of a listener's own certificate: `mutual_cert_not_before_timestamp_seconds`
    /// and `mutual_cert_expiry_timestamp_seconds` (the alert rules page on a fraction of the
    /// lifetime, deploy/prometheus/).
    pub fn set_cert_validity(&self, listener: &str, role: &str, not_before: i64, not_after: i64) {
        self.certs
            .cert_not_before
            .get_or_create(&ExpiryLabels {
                listener: listener.into(),
                role: role.into(),
            })
            .set(not_before);
        self.set_cert_expiry(listener, role, not_after);
    }

    /// Drops a listener's `mutual_cert_expiry_timestamp_seconds{listener, role}` series: a
    /// listener a reload removed (or whose kind, hence role, changed) no longer presents that
    /// certificate, and a stale series would keep an expiry alert firing for nothing.
    pub fn forget_cert_expiry(&self, listener: &str, role: &str) {
        let labels = ExpiryLabels {
            listener: listener.into(),
            role: role.into(),
        };
        self.certs.cert_expiry.remove(&labels);
        self.certs.cert_not_before.remove(&labels);
    }

    /// Counts a reload attempt.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// Counts a CRL download by result: `success`, `failure` (network/HTTP), `invalid` (the
    /// CRL was refused: signature, issuer, dates).
    pub fn crl_fetch(&self, result: &str) {
        self.cdp
            .crl_fetches
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// Counts an OCSP request about a peer's certificate by result: `good`, `revoked`,
    /// `unknown` (the responder's verdicts), `failure` (network/HTTP), `invalid` (the response
    /// was refused: signer, CertID, dates).
    pub fn ocsp_peer_fetch(&self, listener: &str, result: &str) {
        self.ocsp_peer
            .fetches
            .get_or_create(&ListenerResultLabels {
                listener: listener.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Sets `mutual_ocsp_peer_answers{listener}`.
    pub fn set_ocsp_peer_answers(&self, listener: &str, n: usize) {
        self.ocsp_peer
            .answers
            .get_or_create(&ListenerLabel {
                listener: listener.into(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets `mutual_crl_next_update_timestamp_seconds{issuer}`.
    pub fn set_crl_next_update(&self, issuer: &str, next_update: i64) {
        self.cdp
            .crl_next_update
            .get_or_create(&IssuerLabel {
                issuer: issuer.into(),
            })
            .set(next_update);
    }

    /// Records a verified peer certificate for the per-identity expiry gauge.
    pub fn observe_peer(&self, listener: &str, identity: &str, serial: &str, not_after: i64) {
        let now = std::time::Instant::now();
        let Ok(mut peers) = self.peers.lock() else {
            return; // a panicked holder: skip the gauge rather than take the proxy down
        };
        let peers = &mut *peers;
        let known = peers
            .by_listener
            .get(listener)
            .is_some_and(|m| m.contains_key(identity));
        if !known && peers.count >= MAX_TRACKED_IDENTITIES {
            return;
        }
        if !known {
            let gauge = self
                .certs
                .peer_expiry
                .get_or_create(&PeerLabels {
                    listener: listener.to_string(),
                    identity: identity.to_string(),
                })
                .clone();
            peers
                .by_listener
                .entry(listener.to_string())
                .or_default()
                .insert(
                    identity.to_string(),
                    PeerEntry {
                        certs: PeerCerts::new(),
                        gauge,
                    },
                );
            peers.count += 1;
        }
        let Some(entry) = peers
            .by_listener
            .get_mut(listener)
            .and_then(|m| m.get_mut(identity))
        else {
            return;
        };
        let certs = &mut entry.certs;
        match certs.get_mut(serial) {
            Some(c) => *c = (not_after, now),
            None => {
                certs.insert(serial.to_string(), (not_after, now));
            }
        }
        certs.retain(|_, (_, seen)| now.duration_since(*seen) <= PEER_WINDOW);
        if certs.len() > 16 {
            // Bound the per-identity map too: keep the most recently seen.
            let mut v: Vec<_> = certs.iter().map(|(k, (_, s))| (*s, k.clone())).collect();
            v.sort();
            for (_, k) in v.iter().take(certs.len() - 16) {
                certs.remove(k);
            }
        }
        let soonest = certs.values().map(|(na, _)| *na).min().unwrap_or(not_after);
        entry.gauge.set(soonest);
    }

    /// Counts one HTTP-mode request in `mutual_http_requests_total`. At most
    /// [`MAX_TRACKED_IDENTITIES`] identities per process get their own series; the rest share
    /// `identity="other"`, so clients cannot grow the exposition without bound.
    pub fn http_request(&self, listener: &str, outcome: Outcome, identity: &str) {
        let key = (listener.to_string(), identity.to_string());
        let tracked = match self.http_identities.lock() {
            Ok(mut set) => {
                if set.contains(&key) {
                    true
                } else if set.len() < MAX_TRACKED_IDENTITIES {
                    set.insert(key.clone());
                    true
                } else {
                    false
                }
            }
            Err(_) => false, // a panicked holder: count under `other` rather than fail
        };
        self.conn
            .http_requests
            .get_or_create(&HttpRequestLabels {
                listener: key.0,
                result: outcome.label().to_string(),
                identity: if tracked { key.1 } else { "other".to_string() },
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        for k in mutual_tls::load::token_key_status() {
            self.pkcs11_up
                .get_or_create(&KeyLabel { key: k.uri })
                .set(i64::from(k.up));
        }
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }

    /// Serves `/metrics` and `/healthz` over plain HTTP on `listener` until `shutdown`.
    pub async fn serve_http(self: Arc<Self>, listener: TcpListener, mut shutdown: Shutdown) {
        loop {
            let (tcp, _) = tokio::select! {
                _ = shutdown.wait() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("metrics endpoint: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let me = Arc::clone(&me);
                    async move { Ok::<_, Infallible>(me.respond(req.uri().path())) }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(io, svc);
                if let Err(e) = conn.await {
                    tracing::debug!("metrics endpoint connection: {e}");
                }
            });
        }
    }

    fn respond(&self, path: &str) -> Response<Full<Bytes>> {
        let (status, ctype, body) = match path {
            "/metrics" => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.encode(),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            "/readyz" => {
                let (ready, body) = self.ready.report();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, "application/json", body)
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_string(),
            ),
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    }
}

/// One listener's metric handles (resolved once, so the per-connection path does no lookups).
#[derive(Clone)]
pub struct ListenerMetrics {
    pub name: String,
    metrics: Arc<Metrics>,
    handshakes: HashMap<(Outcome, Reason), Counter>,
    pub active: Gauge,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub handshake_duration: Histogram,
    pub rejected: Counter,
}

impl ListenerMetrics {
    /// Counts a connection's outcome in `mutual_handshakes_total`.
    pub fn outcome(&self, outcome: Outcome, reason: Reason) {
        match self.handshakes.get(&(outcome, reason)) {
            Some(c) => {
                c.inc();
            }
            None => {
                self.metrics
                    .conn
                    .handshakes
                    .get_or_create(&HandshakeLabels {
                        listener: self.name.clone(),
                        result: outcome.label().to_string(),
                        reason: reason.label().to_string(),
                    })
                    .inc();
            }
        }
    }

    pub fn observe_peer(&self, identity: &str, serial: &str, not_after: i64) {
        self.metrics
            .observe_peer(&self.name, identity, serial, not_after);
    }

    /// Counts an established connection closed by re-authorization.
    pub fn authz_terminated(&self, reason: Reason) {
        self.metrics
            .conn
            .authz_terminated
            .get_or_create(&ListenerReasonLabels {
                listener: self.name.clone(),
                reason: reason.label().to_string(),
            })
            .inc();
    }

    /// Counts one HTTP-mode request (see [`Metrics::http_request`]).
    pub fn http_request(&self, outcome: Outcome, identity: &str) {
        self.metrics.http_request(&self.name, outcome, identity);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_match_the_observability_contract() {
        let m = Arc::new(Metrics::new());
        let l = m.listener("web");
        l.outcome(Outcome::Denied, Reason::PolicyDenied);
        l.outcome(Outcome::Failed, Reason::Expired);
        l.outcome(Outcome::Failed, Reason::Expired);
        l.active.inc();
        l.bytes_in.inc_by(10);
        l.handshake_duration.observe(0.002);
        m.set_cert_validity("web", "server", 1_799_913_600, 1_800_000_000);
        m.reload(false);
        m.observe_peer("web", "spiffe://x/y", "01", 1_700_000_000);
        let text = m.encode();
        for needle in [
            "mutual_handshakes_total{listener=\"web\",result=\"denied\",reason=\"policy_denied\"} 1",
            "mutual_handshakes_total{listener=\"web\",result=\"failed\",reason=\"expired\"} 2",
            "mutual_handshakes_total{listener=\"web\",result=\"allowed\",reason=\"ok\"} 0",
            "mutual_connections_active{listener=\"web\"} 1",
            "mutual_bytes_total{listener=\"web\",direction=\"in\"} 10",
            "mutual_bytes_total{listener=\"web\",direction=\"out\"} 0",
            "mutual_handshake_duration_seconds_count{listener=\"web\"} 1",
            "mutual_cert_expiry_timestamp_seconds{listener=\"web\",role=\"server\"} 1800000000",
            "mutual_cert_not_before_timestamp_seconds{listener=\"web\",role=\"server\"} 1799913600",
            "mutual_config_reloads_total{result=\"failure\"} 1",
            "mutual_config_reloads_total{result=\"success\"} 0",
            "mutual_peer_cert_expiry_timestamp_seconds{listener=\"web\",identity=\"spiffe://x/y\"} 1700000000",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn a_forgotten_listener_has_no_expiry_series() {
        let m = Metrics::new();
        m.set_cert_expiry("a", "server", 1);
        m.set_cert_expiry("b", "client", 2);
        m.forget_cert_expiry("a", "server");
        let text = m.encode();
        assert!(!text.contains("listener=\"a\""), "{text}");
        assert!(
            text.contains("mutual_cert_expiry_timestamp_seconds{listener=\"b\",role=\"client\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn http_requests_are_counted_per_identity_with_a_bounded_set() {
        let m = Metrics::new();
        m.http_request("web", Outcome::Denied, "spiffe://x/a");
        m.http_request("web", Outcome::Denied, "spiffe://x/a");
        for i in 0..(MAX_TRACKED_IDENTITIES + 5) {
            m.http_request("web", Outcome::Allowed, &format!("id{i}"));
        }
        let text = m.encode();
        assert!(text.contains(
            "mutual_http_requests_total{listener=\"web\",result=\"denied\",identity=\"spiffe://x/a\"} 2"
        ));
        // One slot went to spiffe://x/a, so six of the new identities overflow.
        assert!(text.contains(
            "mutual_http_requests_total{listener=\"web\",result=\"allowed\",identity=\"other\"} 6"
        ));
    }

    #[test]
    fn peer_gauge_keeps_the_soonest_and_is_bounded() {
        let m = Metrics::new();
        m.observe_peer("l", "a", "01", 200);
        m.observe_peer("l", "a", "02", 100);
        m.observe_peer("l", "a", "03", 300);
        assert!(m.encode().contains(
            "mutual_peer_cert_expiry_timestamp_seconds{listener=\"l\",identity=\"a\"} 100"
        ));
        for i in 0..(MAX_TRACKED_IDENTITIES + 50) {
            m.observe_peer("l", &format!("id{i}"), "01", 1);
        }
        assert_eq!(m.peers.lock().unwrap().count, MAX_TRACKED_IDENTITIES);
        let tracked: usize = m
            .peers
            .lock()
            .unwrap()
            .by_listener
            .values()
            .map(HashMap::len)
            .sum();
        assert_eq!(tracked, MAX_TRACKED_IDENTITIES);
        let series = m
            .encode()
            .lines()
            .filter(|l| l.starts_with("mutual_peer_cert_expiry_timestamp_seconds{"))
            .count();
        assert_eq!(series, MAX_TRACKED_IDENTITIES);
    }
}
