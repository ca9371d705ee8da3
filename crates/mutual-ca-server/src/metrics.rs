//! The online CA's Prometheus metrics (`GET /metrics` on the CA's own listener, OpenMetrics
//! text), named after the proxy's (DESIGN.md): `mutual_ca_issued_total{method,result}`,
//! `mutual_ca_token_failures_total{reason}`, `mutual_ca_request_duration_seconds{endpoint}`,
//! `mutual_ca_store_errors_total{op,kind}` and `mutual_ca_store_duration_seconds{op}`; the
//! issuance group commit (`mutual_ca_commit_groups_total{result}`, `mutual_ca_commit_rows_total`); the CRL
//! being served (`mutual_ca_crl_number`, `mutual_ca_crl_this_update_timestamp_seconds`,
//! `mutual_ca_crl_next_update_timestamp_seconds`) and the CA's own certificates
//! (`mutual_ca_cert_expiry_timestamp_seconds{role}` and `mutual_ca_cert_not_before_timestamp_seconds{role}`,
//! role root, intermediate or server: the alert rules in deploy/prometheus/ page on a fraction of
//! the lifetime, which needs both ends); `mutual_pkcs11_key_up{key}` for keys in tokens, named
//! as `mutual serve` names it. Labels are the API's reason words, fixed endpoint
//! names and the store's operation names, never an identity, a serial or a token, so the series
//! stay few and hold no secret.
//!
//! Issuances by `mutual cert issue` (and `--batch`) happen in another process (the CLI writes
//! the inventory directly), so this server cannot count them as they happen; it counts them in
//! the store instead, once a minute: `mutual_ca_inventory_issued_certificates{method="cli"|"batch"}`
//! (rows whose `requested_by` says so; `increase()` over it is their issuance rate).
//!
//! Store errors are counted by the store itself (every failed call of every caller: a request,
//! the background CRL refresh, `/health`), and read here at scrape time, so no call site can
//! forget to count.
use std::sync::Arc;

use mutual_store::{GroupCommit, StoreErrorCounts};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuedLabels {
    method: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OcspLabels {
    /// good, revoked, unknown, multiple, or the OCSP error status (malformedRequest, ...).
    result: &'static str,
    /// Whether a pre-signed response was served.
    cached: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    /// `root`, `intermediate` or `server` (the CA server's own TLS certificate).
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreErrorLabels {
    /// The store operation (`insert_with_token`, `ping`, `crl_state`, ...).
    op: &'static str,
    /// `unavailable` (the database could not be reached) or `error` (it answered with one).
    kind: &'static str,
}

/// `mutual_ca_store_errors_total{op,kind}`, from the store's own counts at scrape time.
#[derive(Debug)]
struct StoreErrors(Arc<StoreErrorCounts>);

impl Collector for StoreErrors {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<StoreErrorLabels, Counter>::default();
        for (op, kind, n) in self.0.snapshot() {
            family
                .get_or_create(&StoreErrorLabels { op, kind })
                .inc_by(n);
        }
        let metric = encoder.encode_descriptor(
            "mutual_ca_store_errors",
            "Failed inventory (store) calls by operation and kind (unavailable: the database \
             could not be reached; error: it answered with an error)",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    /// `ok` (committed) or `failed` (every issuance of the group failed).
    result: &'static str,
}

/// `mutual_ca_commit_groups_total{result}` and `mutual_ca_commit_rows_total`: the issuance
/// group commit's transactions and the rows they recorded (rows / groups = the mean group
/// size), read from the committer at scrape time.
#[derive(Debug)]
struct GroupCommits(GroupCommit);

impl Collector for GroupCommits {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = self.0.stats();
        let groups = Family::<ResultLabel, Counter>::default();
        groups
            .get_or_create(&ResultLabel { result: "ok" })
            .inc_by(st.groups);
        groups
            .get_or_create(&ResultLabel { result: "failed" })
            .inc_by(st.failed_groups);
        let metric = encoder.encode_descriptor(
            "mutual_ca_commit_groups",
            "Inventory transactions that recorded a group of concurrent issuances",
            None,
            groups.metric_type(),
        )?;
        groups.encode(metric)?;
        let rows = Counter::<u64>::default();
        rows.inc_by(st.rows);
        let metric = encoder.encode_descriptor(
            "mutual_ca_commit_rows",
            "Issuance rows recorded by committed groups (divided by the committed groups: the \
             mean group size)",
            None,
            rows.metric_type(),
        )?;
        rows.encode(metric)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    /// The key's PKCS#11 URI (never a PIN: the PIN is not part of it).
    key: String,
}

/// `mutual_pkcs11_key_up{key}`, as `mutual serve` exports it: 1 while a token key the CA uses
/// (an intermediate, the provisioner key, `--server-key`) signs, 0 after its last signature
/// failed. Read at scrape time from mutual-hsm's registry, a down key tried once more first, so
/// a token that came back shows up without waiting for a request.
#[derive(Debug)]
struct TokenKeys;

impl Collector for TokenKeys {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let keys = mutual_hsm::recheck_keys();
        if keys.is_empty() {
            return Ok(());
        }
        let family = Family::<KeyLabel, Gauge>::default();
        for k in keys {
            family
                .get_or_create(&KeyLabel { key: k.uri })
                .set(i64::from(k.up));
        }
        let metric = encoder.encode_descriptor(
            "mutual_pkcs11_key_up",
            "Whether a CA key in a PKCS#11 token signs (1) or its last signature failed (0)",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: a signature with a cached key takes about a millisecond, a PostgreSQL
    // round trip a few, a request stuck on a lost database seconds.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The CA server's metrics, one per server.
pub struct Metrics {
    registry: Registry,
    issued: Family<IssuedLabels, Counter>,
    token_failures: Family<ReasonLabel, Counter>,
    durations: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    ocsp: Family<OcspLabels, Counter>,
    store_durations: Family<OpLabel, Histogram, fn() -> Histogram>,
    crl_number: Gauge,
    crl_this_update: Gauge,
    crl_next_update: Gauge,
    cert_expiry: Family<RoleLabel, Gauge>,
    cert_not_before: Family<RoleLabel, Gauge>,
    offline_issued: Family<MethodLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let issued = Family::<IssuedLabels, Counter>::default();
        let token_failures = Family::<ReasonLabel, Counter>::default();
        let durations = Family::<EndpointLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        // Counters get their `_total` suffix from the OpenMetrics encoder.
        registry.register(
            "mutual_ca_issued",
            "Certificate issuance attempts by method (sign, renew, acme, server) and result (ok or the refusal reason)",
            issued.clone(),
        );
        registry.register(
            "mutual_ca_token_failures",
            "Enrollment tokens refused, by reason (token_invalid, token_expired, token_used)",
            token_failures.clone(),
        );
        registry.register(
            "mutual_ca_request_duration_seconds",
            "Time to answer an API request, by endpoint",
            durations.clone(),
        );
        let ocsp = Family::<OcspLabels, Counter>::default();
        registry.register(
            "mutual_ca_ocsp_responses",
            "OCSP responses by result (good, revoked, unknown, multiple or the OCSP error status) and whether a pre-signed one was served",
            ocsp.clone(),
        );
        let store_durations = Family::<OpLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register(
            "mutual_ca_store_duration_seconds",
            "Time of inventory (store) calls, failed or not, by operation",
            store_durations.clone(),
        );
        let (crl_number, crl_this_update, crl_next_update) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "mutual_ca_crl_number",
            "cRLNumber of the CRL served at /v1/crl",
            crl_number.clone(),
        );
        registry.register(
            "mutual_ca_crl_this_update_timestamp_seconds",
            "thisUpdate (Unix seconds) of the CRL served at /v1/crl: its age is time() minus this",
            crl_this_update.clone(),
        );
        registry.register(
            "mutual_ca_crl_next_update_timestamp_seconds",
            "nextUpdate (Unix seconds) of the CRL served at /v1/crl",
            crl_next_update.clone(),
        );
        let cert_expiry = Family::<RoleLabel, Gauge>::default();
        let cert_not_before = Family::<RoleLabel, Gauge>::default();
        registry.register(
            "mutual_ca_cert_expiry_timestamp_seconds",
            "notAfter (Unix seconds) of the CA's own certificates, by role (root, intermediate, server)",
            cert_expiry.clone(),
        );
        registry.register(
            "mutual_ca_cert_not_before_timestamp_seconds",
            "notBefore (Unix seconds) of the CA's own certificates, by role (root, intermediate, server)",
            cert_not_before.clone(),
        );
        let offline_issued = Family::<MethodLabel, Gauge>::default();
        registry.register(
            "mutual_ca_inventory_issued_certificates",
            "Certificates in the inventory issued outside this server, by method (cli: mutual cert issue, batch: cert issue --batch), counted from the store every minute",
            offline_issued.clone(),
        );
        registry.register_collector(Box::new(TokenKeys));
        Metrics {
            registry,
            issued,
            token_failures,
            durations,
            ocsp,
            store_durations,
            crl_number,
            crl_this_update,
            crl_next_update,
            cert_expiry,
            cert_not_before,
            offline_issued,
        }
    }

    /// The inventory's count of certificates issued outside the server by `method`.
    pub fn offline_issued(&self, method: &'static str, count: i64) {
        self.offline_issued
            .get_or_create(&MethodLabel { method })
            .set(count);
    }

    /// The root's and the intermediate's validity, from the CA's PEM files (a file that does not
    /// parse leaves its series out rather than exporting a wrong date: the CA opened it, so it
    /// parses).
    pub fn with_ca_certs(self, root_pem: &str, intermediate_pem: &str) -> Metrics {
        for (role, pem) in [("root", root_pem), ("intermediate", intermediate_pem)] {
            if let Some((nb, na)) = pem_validity(pem) {
                self.cert_validity(role, nb, na);
            }
        }
        self
    }

    /// Sets the validity gauges of one of the CA's own certificates.
    pub fn cert_validity(&self, role: &'static str, not_before: i64, not_after: i64) {
        self.cert_not_before
            .get_or_create(&RoleLabel { role })
            .set(not_before);
        self.cert_expiry
            .get_or_create(&RoleLabel { role })
            .set(not_after);
    }

    /// The CRL now served at /v1/crl.
    pub fn crl_served(&self, number: i64, this_update: i64, next_update: i64) {
        self.crl_number.set(number);
        self.crl_this_update.set(this_update);
        self.crl_next_update.set(next_update);
    }

    /// Exports the store's failed-call counts as `mutual_ca_store_errors_total{op,kind}` and
    /// observes every store call's latency as `mutual_ca_store_duration_seconds{op}` (through
    /// the store's timing hook; the first server on a store takes it).
    pub fn with_store_errors(mut self, counts: Arc<StoreErrorCounts>) -> Metrics {
        let family = self.store_durations.clone();
        counts.on_duration(Box::new(move |op, seconds| {
            family.get_or_create(&OpLabel { op }).observe(seconds);
        }));
        self.registry
            .register_collector(Box::new(StoreErrors(counts)));
        self
    }

    /// Exports the issuance group commit's counts (`mutual_ca_commit_groups_total{result}`,
    /// `mutual_ca_commit_rows_total`).
    pub fn with_group_commit(mut self, gc: GroupCommit) -> Metrics {
        self.registry.register_collector(Box::new(GroupCommits(gc)));
        self
    }

    /// One issuance attempt: `method` sign, renew, server or acme; `result` `ok` or the reason label.
    pub fn issued(&self, method: &'static str, result: &'static str) {
        self.issued
            .get_or_create(&IssuedLabels { method, result })
            .inc();
    }

    /// [`Metrics::issued`] for one `method`, as a closure another crate can call (the ACME
    /// server counts its issuances through it).
    pub fn issued_by(&self, method: &'static str) -> impl Fn(&'static str) + Send + Sync + 'static {
        let issued = self.issued.clone();
        move |result| {
            issued.get_or_create(&IssuedLabels { method, result }).inc();
        }
    }

    pub fn token_failure(&self, reason: &'static str) {
        self.token_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn request(&self, endpoint: &'static str, seconds: f64) {
        self.durations
            .get_or_create(&EndpointLabel { endpoint })
            .observe(seconds);
    }

    /// One OCSP response.
    pub fn ocsp(&self, result: &'static str, cached: bool) {
        let cached = if cached { "true" } else { "false" };
        self.ocsp
            .get_or_create(&OcspLabels { result, cached })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

/// (notBefore, notAfter) in Unix seconds of the first certificate in `pem`.
fn pem_validity(pem: &str) -> Option<(i64, i64)> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let c = p.parse_x509().ok()?;
    Some((
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names() {
        let m = Metrics::new();
        m.issued("sign", "ok");
        m.token_failure("token_used");
        m.request("/v1/sign", 0.002);
        let text = m.encode();
        assert!(
            text.contains(r#"mutual_ca_issued_total{method="sign",result="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"mutual_ca_token_failures_total{reason="token_used"} 1"#));
        assert!(text.contains(r#"mutual_ca_request_duration_seconds_count{endpoint="/v1/sign"} 1"#));
    }

    #[test]
    fn crl_and_own_certificates() {
        let m = Metrics::new();
        m.crl_served(7, 1_800_000_000, 1_800_086_400);
        m.cert_validity("server", 1_799_999_000, 1_800_086_400);
        let text = m.encode();
        for line in [
            "mutual_ca_crl_number 7",
            "mutual_ca_crl_this_update_timestamp_seconds 1800000000",
            "mutual_ca_crl_next_update_timestamp_seconds 1800086400",
            r#"mutual_ca_cert_expiry_timestamp_seconds{role="server"} 1800086400"#,
            r#"mutual_ca_cert_not_before_timestamp_seconds{role="server"} 1799999000"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn validity_from_pem() {
        let pem = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_validity(pem), None);
        let m = Metrics::new().with_ca_certs(pem, pem);
        assert!(!m.encode().contains("role=\"root\""));
    }

    /// The store's counts appear as a counter family, read at each scrape.
    #[tokio::test]
    async fn store_errors_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = mutual_store::Store::open_sqlite(&dir.path().join("i.db"), true)
            .await
            .unwrap();
        let m = Metrics::new().with_store_errors(store.errors().clone());
        assert!(m.encode().contains("# TYPE mutual_ca_store_errors counter"));
        store.close().await;
        use mutual_store::Inventory;
        assert!(store.ping().await.is_err());
        assert!(store.ping().await.is_err());
        let text = m.encode();
        assert!(
            text.contains(r#"mutual_ca_store_errors_total{op="ping",kind="unavailable"} 2"#),
            "{text}"
        );
        // Failed calls are timed too: a slow outage shows in the latency as well.
        assert!(
            text.contains(r#"mutual_ca_store_duration_seconds_count{op="ping"} 2"#),
            "{text}"
        );
    }
}
