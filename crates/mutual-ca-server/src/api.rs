//! The HTTP API of the online CA (docs/ca-server.md, docs/openapi.yaml): routing, body limits,
//! rate limiting, and the sign / renew / revoke / roots / crl handlers.
//!
//! Every handler returns either a success body or a [`Problem`]; one log line per request says
//! who asked (peer address and certificate identity), what, and the outcome, never the token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use mutual_pki::ca::{Ca, Csr, CurrentCrl, IssueOptions, IssueRequest, KeySource};
use mutual_pki::{PkiError, RevocationReason, RevokeOutcome, San, StoreError, Usage};
use mutual_policy::{Identity, Rule};
use mutual_store::Inventory;
use mutual_tls::VerifiedPeer;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::ratelimit::RateLimiter;
pub use crate::reply::MAX_BODY;
use crate::reply::{
    created, json, method_not_allowed, name_for, ok, pki_problem, read_json, respond, Outcome, Resp,
};
use crate::token::{parse_usage, Provisioner};

/// What the TLS layer learned about the peer of one connection, read once after its
/// handshake and shared by every request on it.
#[derive(Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The verified client (chain, leaf first, and identity); `None`: no client certificate,
    /// or one whose names do not parse (refused as `no_client_cert` where one is needed).
    pub verified: Option<VerifiedPeer>,
}

/// Everything the handlers share.
pub struct State {
    pub ca: Ca,
    pub provisioner: Provisioner,
    pub admins: Vec<Rule>,
    pub limiter: RateLimiter,
    pub crl_next_update: Duration,
    pub metrics: Metrics,
    /// The CRLs served at /v1/crl (the default issuer's) and /v1/crl/ID: the stored current
    /// one of each issuer, as last checked.
    crls: std::sync::Mutex<std::collections::HashMap<String, Arc<CurrentCrl>>>,
    /// One check or publication at a time (a burst of revocations signs in turn).
    crl_lock: tokio::sync::Mutex<()>,
    /// The ACME front door (`ca serve --acme`), mounted at `/acme/`.
    pub acme: Option<Arc<mutual_acme::Acme>>,
    /// The OCSP responder (`ca serve --ocsp`), mounted at `/ocsp` (crate::ocsp).
    pub ocsp: Option<Arc<crate::ocsp::Ocsp>>,
    /// `--renew-grace`: how long after expiry a certificate may still renew (zero: not at all).
    pub renew_grace: Duration,
    /// The EST front door (`ca serve --est`), mounted at `/.well-known/est/`.
    pub est: Option<Arc<mutual_est::Est>>,
    /// The JWT-SVID keys (`/v1/agent/jwt`, `/v1/jwks`; crate::jwt).
    pub jwt: Option<Arc<crate::jwt::JwtKeys>>,
    /// `--jwt-svid-ttl`.
    pub jwt_svid_ttl: Duration,
}

impl State {
    pub fn new(
        ca: Ca,
        provisioner: Provisioner,
        admins: Vec<Rule>,
        limiter: RateLimiter,
        crl_next_update: Duration,
    ) -> State {
        let metrics = Metrics::new()
            .with_store_errors(ca.store().errors().clone())
            .with_group_commit(ca.group_commit().clone())
            .with_ca_certs(ca.root_pem(), &ca.intermediate_pem());
        State {
            ca,
            provisioner,
            admins,
            limiter,
            crl_next_update,
            metrics,
            crls: std::sync::Mutex::default(),
            crl_lock: tokio::sync::Mutex::new(()),
            acme: None,
            ocsp: None,
            renew_grace: Duration::ZERO,
            est: None,
            jwt: None,
            jwt_svid_ttl: crate::DEFAULT_JWT_SVID_TTL,
        }
    }

    /// Serves JWT-SVIDs with these keys, each valid `ttl` (at most its entry's TTL).
    pub fn with_jwt(mut self, jwt: Option<Arc<crate::jwt::JwtKeys>>, ttl: Duration) -> State {
        self.jwt = jwt;
        self.jwt_svid_ttl = ttl;
        self
    }

    /// Mounts the OCSP responder at `/ocsp`.
    pub fn with_ocsp(mut self, ocsp: Option<crate::ocsp::Ocsp>) -> State {
        self.ocsp = ocsp.map(Arc::new);
        self
    }

    /// Mounts the ACME server at `/acme/`.
    pub fn with_acme(mut self, acme: Option<Arc<mutual_acme::Acme>>) -> State {
        if let Some(a) = &acme {
            a.on_issue(Box::new(self.metrics.issued_by("acme")));
        }
        self.acme = acme;
        self
    }

    /// Mounts the EST server at `/.well-known/est/` and sets the renewal grace (one rule for
    /// `/v1/renew` and EST's simplereenroll).
    pub fn with_est(mut self, est: Option<Arc<mutual_est::Est>>, renew_grace: Duration) -> State {
        if let Some(e) = &est {
            e.on_issue(Box::new(self.metrics.issued_by("est")));
        }
        self.est = est;
        self.renew_grace = renew_grace;
        self
    }

    /// Brings the served CRL up to date with the store (see [`Ca::refresh_crl`]): adopts a
    /// newer stored CRL (another replica's), or signs and stores one when the inventory has
    /// revocations the stored one lacks (`mutual cert revoke`) or half of its validity passed.
    /// Runs at start and every `--crl-refresh`, for every issuer (a retiring intermediate
    /// keeps a current CRL too).
    pub async fn refresh_crl(&self) -> Result<Arc<CurrentCrl>, PkiError> {
        let set = self.ca.issuers();
        for i in set.all() {
            if i.id != set.default_issuer().id {
                if let Err(e) = self.refresh_crl_for(&i.id).await {
                    tracing::warn!(issuer = %i.id, error = %e, "CRL refresh failed");
                }
            }
        }
        self.refresh_crl_for(&set.default_issuer().id).await
    }

    /// Sets `mutual_ca_inventory_issued_certificates{method}` from the store: the rows whose
    /// `requested_by` is `cli:...` or `batch:...`. A store error leaves the last value (the
    /// store counts the failure itself).
    pub async fn count_offline_issuances(&self) {
        for (method, prefix) in [("cli", "cli:"), ("batch", "batch:")] {
            let filter = mutual_store::ListFilter {
                requested_by: Some(prefix.into()),
                ..Default::default()
            };
            match self.ca.store().count_matching(&filter, 0).await {
                Ok(n) => self.metrics.offline_issued(method, n),
                Err(e) => tracing::debug!(method, error = %e, "counting offline issuances failed"),
            }
        }
    }

    fn cached_crl(&self, id: &str) -> Option<Arc<CurrentCrl>> {
        self.crls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn cache_crl(&self, c: Arc<CurrentCrl>) {
        // The CRL metrics describe the one served at /v1/crl: the default issuer's.
        if c.issuer == self.ca.issuers().default_issuer().id {
            self.metrics
                .crl_served(c.number, c.this_update, c.next_update);
        }
        self.crls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(c.issuer.clone(), c);
    }

    /// [`State::refresh_crl`] for the issuer `id`.
    pub async fn refresh_crl_for(&self, id: &str) -> Result<Arc<CurrentCrl>, PkiError> {
        let _g = self.crl_lock.lock().await;
        let cached = self.cached_crl(id);
        // --crl-next-update was checked at start; an intermediate's end comes nearer (and a
        // retiring one publishes to its last day).
        let next_update = self.ca.within_issuer(id, self.crl_next_update);
        match self
            .ca
            .refresh_crl_for(id, cached.as_deref(), next_update)
            .await?
        {
            Some(c) => {
                let c = Arc::new(c);
                if cached.as_ref().is_none_or(|old| old.number != c.number) {
                    tracing::info!(
                        issuer = %c.issuer,
                        crl_number = c.number,
                        entries = c.entries,
                        "serving a new CRL"
                    );
                }
                self.cache_crl(c.clone());
                Ok(c)
            }
            None => match cached {
                Some(c) => Ok(c),
                None => Err(PkiError::Generate {
                    detail: "no CRL to serve".into(),
                }),
            },
        }
    }

    /// Signs and stores a CRL of issuer `id` now (after a revocation through this replica, so
    /// that its next CRL lists it at once) and serves it.
    pub async fn publish_crl_for(&self, id: &str) -> Result<Arc<CurrentCrl>, PkiError> {
        let _g = self.crl_lock.lock().await;
        let next_update = self.ca.within_issuer(id, self.crl_next_update);
        let c = Arc::new(self.ca.publish_crl_for(id, next_update).await?);
        self.cache_crl(c.clone());
        Ok(c)
    }

    /// The CRL of issuer `id` (`None`: the default) to serve now: checked against the store
    /// first (one cheap query; a revocation made anywhere, even with `mutual cert revoke`, is
    /// listed at once), or, when the store does not answer, the last one served (relying
    /// parties keep a CRL rather than none).
    async fn served_crl(&self, id: Option<&str>) -> Result<Arc<CurrentCrl>, PkiError> {
        let id = match id {
            Some(i) => i.to_string(),
            None => self.ca.issuers().default_issuer().id.clone(),
        };
        match self.refresh_crl_for(&id).await {
            Ok(c) => Ok(c),
            Err(e @ PkiError::UnknownIssuer { .. }) => Err(e),
            Err(e) => match self.cached_crl(&id) {
                Some(c) => {
                    tracing::warn!(error = %e, "CRL check failed; serving the last CRL");
                    Ok(c)
                }
                None => Err(e),
            },
        }
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `/health`: 200 while the store answers a trivial query and every PKCS#11 token key the CA
/// signs with can sign, else 503 with the reason, so a load balancer takes a replica whose
/// database or token is gone out of rotation; it turns 200 again by itself once the pool
/// reconnects or the token is back (a key whose last signature failed is tried again here).
async fn health(state: &State) -> Outcome {
    let ping =
        tokio::time::timeout(std::time::Duration::from_secs(3), state.ca.store().ping()).await;
    let detail = match ping {
        Ok(Ok(())) => return key_health().await,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the store did not answer within 3 s".to_string(),
    };
    Outcome {
        resp: json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({
                "status": "unavailable",
                "store": "unreachable",
                "reason": "store_unavailable",
                "detail": detail,
            }),
        ),
        reason: "store_unavailable",
        serial: None,
        detail: Some(detail),
    }
}

/// The token keys' part of `/health` (the store answered): 503 `key_unavailable` naming each
/// key whose last signature failed, as `mutual serve`'s `/readyz` does.
async fn key_health() -> Outcome {
    let down: std::collections::BTreeMap<String, String> =
        tokio::task::spawn_blocking(mutual_hsm::recheck_keys)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|k| !k.up)
            .map(|k| (k.uri, k.last_error.unwrap_or_default()))
            .collect();
    if down.is_empty() {
        return ok(json(
            StatusCode::OK,
            &serde_json::json!({"status": "ok", "store": "ok"}),
        ));
    }
    let detail = down
        .iter()
        .map(|(k, e)| format!("pkcs11 key {k}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    Outcome {
        resp: json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({
                "status": "unavailable",
                "store": "ok",
                "reason": "key_unavailable",
                "detail": detail,
                "pkcs11_keys_down": down,
            }),
        ),
        reason: "key_unavailable",
        serial: None,
        detail: Some(detail),
    }
}

/// Serves one request: rate limit, route, handle, log.
pub async fn handle(state: &State, peer: &Peer, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let identity = peer.verified.as_ref().map(|v| &v.id);
    let who = identity
        .map(Identity::principal)
        .unwrap_or_else(|| "-".into());
    if let (Some(est), true) = (&state.est, path.starts_with(mutual_est::wire::PREFIX)) {
        return est_request(state, est, peer, req, started).await;
    }
    if let (Some(acme), true) = (&state.acme, path.starts_with("/acme/")) {
        // ACME authenticates with JWS, not the TLS client certificate; it logs its refusals.
        let resp = acme.handle(&state.ca, req).await;
        state
            .metrics
            .request("/acme", started.elapsed().as_secs_f64());
        tracing::info!(peer_addr = %peer.addr, method = %method, path = %path,
            status = resp.status().as_u16(), duration_ms = started.elapsed().as_millis() as u64, "acme request");
        return resp;
    }
    if let (Some(o), true) = (&state.ocsp, crate::ocsp::is_ocsp_path(&path)) {
        // OCSP answers anyone (the response is signed); it logs and counts its own requests.
        return crate::ocsp::handle(&state.ca, &state.metrics, o, peer.addr, req).await;
    }
    if mutual_console::is_console_path(&path) {
        // The console authenticates a person (admin certificate), checks CSRF and audits its
        // actions itself (crates/mutual-console); it shares the per-IP rate limit.
        let resp = match state.limiter.check(peer.addr.ip(), Instant::now()) {
            Ok(()) => {
                mutual_console::handle(state, mutual_console::Viewer::Mtls(identity), req).await
            }
            Err(_) => {
                Problem::new("rate_limited", "too many requests; retry shortly").into_response()
            }
        };
        console_log(state, peer.addr, &who, &method, &path, &resp, started);
        return resp;
    }
    let out = route(state, peer, identity, req, &method, &path).await;
    let endpoint = endpoint(&path);
    state
        .metrics
        .request(endpoint, started.elapsed().as_secs_f64());
    if method == Method::POST {
        match endpoint {
            "/v1/sign" => {
                state.metrics.issued("sign", out.reason);
                if out.reason.starts_with("token_") {
                    state.metrics.token_failure(out.reason);
                }
            }
            "/v1/renew" => state.metrics.issued("renew", out.reason),
            crate::agent::SVID => state.metrics.issued("agent", out.reason),
            crate::agent::JWT => state.metrics.issued("agent_jwt", out.reason),
            _ => {}
        }
    }
    request_log(peer, &who, &method, &path, &out, started, "request");
    out.resp
}

/// A request on the `--ui-listen` loopback listener: the console, nothing else.
pub async fn handle_loopback(state: &State, addr: SocketAddr, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = if !mutual_console::is_console_path(&path) {
        Problem::new(
            "not_found",
            "this listener serves the console only, at /ui/",
        )
        .into_response()
    } else if state.limiter.check(addr.ip(), Instant::now()).is_err() {
        Problem::new("rate_limited", "too many requests; retry shortly").into_response()
    } else {
        mutual_console::handle(state, mutual_console::loopback_viewer(addr), req).await
    };
    console_log(state, addr, "-", &method, &path, &resp, started);
    resp
}

/// The request line of a console request (the console writes its own audit lines for actions).
pub(crate) fn console_log(
    state: &State,
    addr: SocketAddr,
    who: &str,
    method: &Method,
    path: &str,
    resp: &Resp,
    started: Instant,
) {
    state
        .metrics
        .request("/ui", started.elapsed().as_secs_f64());
    let reason = resp
        .headers()
        .get("x-mutual-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("ok");
    tracing::info!(peer_addr = %addr, identity = %who, method = %method, path = %path,
        status = resp.status().as_u16(), reason, duration_ms = started.elapsed().as_millis() as u64,
        "console request");
}

/// The agent endpoints' view of the CA server (crate::agent).
impl crate::agent::Host for State {
    type Peer = Peer;
    fn ca(&self) -> &Ca {
        &self.ca
    }
    async fn peer_identity(
        &self,
        peer: &Peer,
        identity: Option<&Identity>,
    ) -> Result<Identity, Problem> {
        Ok(authenticated(self, peer, identity, Duration::ZERO)
            .await?
            .identity)
    }
    fn jwt(&self) -> Option<&crate::jwt::JwtKeys> {
        self.jwt.as_deref()
    }
    fn jwt_svid_ttl(&self) -> Duration {
        self.jwt_svid_ttl
    }
}

/// The OCSP front door's view of the CA server.
impl crate::ocsp::Host for State {
    fn ca(&self) -> &Ca {
        &self.ca
    }
    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }
    fn ocsp(&self) -> Option<&Arc<crate::ocsp::Ocsp>> {
        self.ocsp.as_ref()
    }
}

/// The console's view of the CA server (crates/mutual-console): the CA, the admin patterns,
/// CRL publication after a revocation, and token minting with the provisioner key.
impl mutual_console::Authority for State {
    fn ca(&self) -> &Ca {
        &self.ca
    }

    fn is_admin(&self, id: &Identity) -> bool {
        self.admins.iter().any(|r| r.matches_identity(id))
    }

    fn publish_crl<'a>(
        &'a self,
        issuer: &'a str,
    ) -> mutual_console::BoxFuture<'a, Result<(), String>> {
        // The inherent `publish_crl_for` (a bare `State::publish_crl` here would name this trait
        // method itself and recurse until the worker's stack overflows).
        Box::pin(async move {
            self.publish_crl_for(issuer)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn mint_token(
        &self,
        req: &mutual_console::TokenRequest,
    ) -> Result<mutual_console::MintedToken, String> {
        let expires = i64::try_from(req.expires.as_secs()).map_err(|e| e.to_string())?;
        let claims = crate::token::Claims::new(
            &req.sans,
            req.cert_ttl.as_secs(),
            req.usage,
            unix_now(),
            expires,
        )
        .map_err(|e| e.to_string())?;
        let token = self.provisioner.sign(&claims).map_err(|e| e.to_string())?;
        Ok(mutual_console::MintedToken {
            token,
            jti: claims.jti,
            expires_at: claims.exp,
        })
    }
}

/// The EST front door: rate limited like the native API, authenticated by EST itself (a
/// factory certificate, a token as HTTP Basic password, or the current certificate), logged in
/// the same line format.
async fn est_request(
    state: &State,
    est: &mutual_est::Est,
    peer: &Peer,
    req: Request<Incoming>,
    started: Instant,
) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let who = peer
        .verified
        .as_ref()
        .map(|v| v.id.principal())
        .unwrap_or_else(|| "-".into());
    let out = if let Err(p) = rate_limit(state, peer.addr.ip()) {
        let detail = p.detail.clone();
        mutual_est::Outcome {
            resp: p.into_response(),
            reason: "rate_limited",
            serial: None,
            detail: Some(detail),
            issuance: false,
        }
    } else {
        let chain: &[CertificateDer<'static>] =
            peer.verified.as_ref().map(|v| &v.chain[..]).unwrap_or(&[]);
        let client = mutual_est::Client { chain };
        est.handle(&state.ca, client, &EstTokens(&state.provisioner), req)
            .await
    };
    state
        .metrics
        .request("/.well-known/est", started.elapsed().as_secs_f64());
    if out.reason.starts_with("token_") {
        state.metrics.token_failure(out.reason);
    }
    let out = Outcome {
        resp: out.resp,
        reason: out.reason,
        serial: out.serial,
        detail: out.detail,
    };
    request_log(peer, &who, &method, &path, &out, started, "est request");
    out.resp
}

/// The per-IP rate limit of the native API and EST: `rate_limited` with
/// the seconds to wait in `Retry-After`.
fn rate_limit(state: &State, ip: std::net::IpAddr) -> Result<(), Problem> {
    state.limiter.check(ip, Instant::now()).map_err(|wait| {
        let mut p = Problem::new(
            "rate_limited",
            format!("too many requests from {ip}; retry after the Retry-After delay"),
        );
        p.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        p
    })
}

/// The one log line of a native API or EST request (`what`: "request", "est request").
fn request_log(
    peer: &Peer,
    who: &str,
    method: &Method,
    path: &str,
    out: &Outcome,
    started: Instant,
    what: &str,
) {
    tracing::info!(
        peer_addr = %peer.addr,
        identity = %who,
        method = %method,
        path = %path,
        status = out.resp.status().as_u16(),
        reason = out.reason,
        serial = out.serial.as_deref().unwrap_or("-"),
        detail = out.detail.as_deref().unwrap_or("-"),
        duration_ms = started.elapsed().as_millis() as u64,
        "{what}"
    );
}

/// EST's view of the provisioner: verifies a token (never spends it: issuance does).
struct EstTokens<'a>(&'a Provisioner);

impl mutual_est::TokenCheck for EstTokens<'_> {
    fn check(&self, token: &str, now: i64) -> Result<mutual_est::TokenGrant, mutual_est::EstError> {
        let refuse = |e: crate::TokenError| mutual_est::EstError::new(e.reason(), e.to_string());
        let claims = self.0.verify(token, now).map_err(refuse)?;
        Ok(mutual_est::TokenGrant {
            sans: claims.parsed_sans().map_err(refuse)?,
            usage: claims.parsed_usage().map_err(refuse)?,
            ttl: Duration::from_secs(claims.ttl),
            jti: claims.jti,
        })
    }
}

/// The endpoint label of a path: one of the API's, or `other` (so that a scan of random paths
/// cannot grow the metrics without bound).
fn endpoint(path: &str) -> &'static str {
    match path {
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/v1/roots" => "/v1/roots",
        "/v1/crl" => "/v1/crl",
        p if p.starts_with("/v1/crl/") => "/v1/crl/{issuer}",
        "/v1/sign" => "/v1/sign",
        "/v1/renew" => "/v1/renew",
        "/v1/revoke" => "/v1/revoke",
        crate::agent::ENTRIES => crate::agent::ENTRIES,
        crate::agent::SVID => crate::agent::SVID,
        crate::agent::JWT => crate::agent::JWT,
        crate::agent::JWKS => crate::agent::JWKS,
        _ => "other",
    }
}

async fn route(
    state: &State,
    peer: &Peer,
    identity: Option<&Identity>,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
) -> Outcome {
    // /health stays cheap and unthrottled so that liveness checks work during a flood.
    if path == "/health" {
        return if method == Method::GET {
            health(state).await
        } else {
            method_not_allowed()
        };
    }
    // /metrics too: a scraper polling every few seconds must not eat a client's budget.
    if path == "/metrics" {
        return if method == Method::GET {
            ok(respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                state.metrics.encode(),
            ))
        } else {
            method_not_allowed()
        };
    }
    if let Err(p) = rate_limit(state, peer.addr.ip()) {
        return p.into();
    }
    match (path, method) {
        ("/v1/roots", &Method::GET) => match crate::roots::roots(state.ca.dir(), req.uri().query())
        {
            Ok(r) => ok(r),
            Err(p) => p.into(),
        },
        ("/v1/crl", &Method::GET) => crl(state, None, req.headers()).await,
        (p, &Method::GET) if p.starts_with("/v1/crl/") => {
            crl(state, p.strip_prefix("/v1/crl/"), req.headers()).await
        }
        ("/v1/sign", &Method::POST) => match read_json::<SignBody>(req).await {
            Ok(b) => sign(state, b).await,
            Err(p) => p.into(),
        },
        ("/v1/renew", &Method::POST) => {
            // Authenticate before reading the body: an anonymous peer gets no work done.
            match authenticated(state, peer, identity, state.renew_grace).await {
                Err(p) => p.into(),
                Ok(me) => match read_json::<RenewBody>(req).await {
                    Ok(b) => renew(state, &me, b).await,
                    Err(p) => p.into(),
                },
            }
        }
        ("/v1/revoke", &Method::POST) => {
            match authenticated(state, peer, identity, Duration::ZERO).await {
                Err(p) => p.into(),
                Ok(me) => match read_json::<RevokeBody>(req).await {
                    Ok(b) => revoke(state, &me, b).await,
                    Err(p) => p.into(),
                },
            }
        }
        (crate::agent::JWKS, &Method::GET) => crate::agent::jwks(state),
        (p, _) if crate::agent::is_agent_path(p) => {
            crate::agent::route(state, peer, identity, req, method, p).await
        }
        (
            "/v1/roots" | "/v1/crl" | "/v1/sign" | "/v1/renew" | "/v1/revoke" | crate::agent::JWKS,
            _,
        ) => method_not_allowed(),
        _ => Problem::new("not_found", format!("no such endpoint: {path}")).into(),
    }
}

/// Parses `body` as each kind of request body the API takes and checks the fields a handler
/// reads first (a sign body's CSR SANs, a revoke body's serial). For the fuzzer: the request
/// bodies come from anyone who can reach the port.
#[doc(hidden)]
pub fn parse_bodies_for_fuzzing(body: &[u8]) {
    if let Ok(b) = serde_json::from_slice::<SignBody>(body) {
        let _ = mutual_pki::ca::csr_sans(b.csr.as_bytes());
    }
    if let Ok(b) = serde_json::from_slice::<RenewBody>(body) {
        if let Some(csr) = b.csr {
            let _ = mutual_pki::ca::csr_sans(csr.as_bytes());
        }
    }
    if let Ok(b) = serde_json::from_slice::<RevokeBody>(body) {
        let _ = mutual_pki::normalize_serial(&b.serial);
        if let Some(r) = b.reason {
            let _ = parse_reason(&r);
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    csr: String,
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    #[serde(default)]
    csr: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    serial: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn sign(state: &State, b: SignBody) -> Outcome {
    let now = unix_now();
    let claims = match state.provisioner.verify(b.token.trim(), now) {
        Ok(c) => c,
        Err(e) => return Problem::new(e.reason(), e.to_string()).into(),
    };
    // Cheap early refusal of a replay; the transaction below is what guarantees single use.
    match state.ca.store().token_used(&claims.jti).await {
        Ok(true) => return Problem::new("token_used", "this token was already used").into(),
        Ok(false) => {}
        Err(e) => return Problem::store(&e).into(),
    }
    let (allowed, usage) = match (claims.parsed_sans(), claims.parsed_usage()) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return Problem::new(e.reason(), e.to_string()).into(),
    };
    // The CSR is read once: its names are compared with the token's here, its key signed below.
    let csr = match Csr::parse(b.csr.as_bytes()) {
        Ok(c) => c,
        Err(e) => return pki_problem(e).into(),
    };
    let requested = match csr.sans() {
        Ok(r) => r.to_vec(),
        Err(e @ PkiError::InvalidSan { .. }) => {
            return Problem::new("name_not_allowed", e.to_string()).into()
        }
        Err(e) => return pki_problem(e).into(),
    };
    if let Some(extra) = requested.iter().find(|r| !allowed.contains(r)) {
        return Problem::new(
            "name_not_allowed",
            format!("the CSR asks for {extra}, which the token does not give"),
        )
        .into();
    }
    // Keep the token's order (its first SAN names the certificate).
    let sans: Vec<San> = if requested.is_empty() {
        allowed
    } else {
        allowed
            .into_iter()
            .filter(|s| requested.contains(s))
            .collect()
    };
    let o = IssueOptions {
        name: name_for(&sans),
        sans,
        usage,
        // The token was minted when the intermediate had that long left; it may not now.
        ttl: state
            .ca
            .ttl_within_intermediate(Duration::from_secs(claims.ttl)),
        requested_by: Some(format!("token:{}", claims.jti)),
        ..Default::default()
    };
    let req = IssueRequest {
        profile: o,
        key: KeySource::Csr(csr),
        token: Some(claims.jti),
        output: None,
    };
    match state.ca.issue(req).await {
        Ok(issued) => created(&issued),
        Err(e) => pki_problem(e).into(),
    }
}

/// The verified client certificate of this connection, checked against the inventory: ours,
/// not revoked, not expired. Used by every endpoint that acts on an identity.
pub(crate) struct Me {
    pub(crate) identity: Identity,
    leaf: CertificateDer<'static>,
    record: mutual_store::CertRecord,
    renewal: mutual_pki::ca::Renewal,
}

pub(crate) async fn authenticated(
    state: &State,
    peer: &Peer,
    identity: Option<&Identity>,
    grace: Duration,
) -> Result<Me, Problem> {
    let (Some(leaf), Some(identity)) = (
        peer.verified.as_ref().and_then(|v| v.chain.first()),
        identity,
    ) else {
        return Err(Problem::new(
            "no_client_cert",
            "this endpoint needs a client certificate issued by this CA (mTLS)",
        ));
    };
    let now = unix_now();
    let record = match state.ca.store().get(&identity.serial, now).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(Problem::new(
                "unknown_ca",
                format!(
                    "certificate {} is not in this CA's inventory",
                    identity.serial
                ),
            ))
        }
        Err(e) => return Err(Problem::store(&e)),
    };
    if record.sha256 != identity.sha256 {
        return Err(Problem::new(
            "unknown_ca",
            "the certificate does not match this CA's record of its serial",
        ));
    }
    // Revoked never, expired only within `grace` (renewal's `--renew-grace`; zero elsewhere):
    // the one rule in mutual-pki that EST's simplereenroll applies too.
    let renewal = mutual_pki::ca::renewable(&record, identity.not_after, now, grace)
        .map_err(|e| Problem::new(e.reason(), e.to_string()))?;
    Ok(Me {
        identity: identity.clone(),
        leaf: leaf.clone(),
        record,
        renewal,
    })
}

async fn renew(state: &State, me: &Me, b: RenewBody) -> Outcome {
    let r = &me.record;
    let sans = match San::recorded(&r.sans) {
        Ok(s) => s,
        Err(why) => return Problem::new("name_not_allowed", why).into(),
    };
    let usage = parse_usage(&r.usage).unwrap_or(Usage::Client);
    // The same lifetime as the presented certificate, never past the intermediate's expiry.
    // Issuance backdates notBefore by 5 minutes (less when the intermediate is younger than
    // that), so the lifetime asked for is notAfter - notBefore - 300 s; the inventory's
    // created_at (the issuance second, give or take one) tells when that rule does not hold.
    // Taking the backdate as part of the lifetime would make every renewal 5 minutes longer.
    let exact = r.not_after - r.not_before - 300;
    let from_record = r.not_after - r.created_at;
    let ttl = if exact > 0 && (from_record - exact).abs() <= 5 {
        exact
    } else {
        from_record
    };
    let o = IssueOptions {
        name: r.name.clone(),
        sans,
        usage,
        ttl: state
            .ca
            .ttl_within_intermediate(Duration::from_secs(u64::try_from(ttl.max(1)).unwrap_or(1))),
        requested_by: Some(match me.renewal {
            mutual_pki::ca::Renewal::Valid => format!("renew:{}", r.serial),
            mutual_pki::ca::Renewal::InGrace { ago } => {
                tracing::info!(serial = %r.serial, expired_s_ago = ago, "renewing an expired certificate within --renew-grace");
                format!("renew-grace:{}", r.serial)
            }
        }),
        ..Default::default()
    };
    let key = match &b.csr {
        Some(csr) => match Csr::parse(csr.as_bytes()) {
            Ok(c) => KeySource::Csr(c),
            Err(e) => return pki_problem(e).into(),
        },
        // The key of the certificate that just authenticated this connection: proven.
        None => match x509_parser::parse_x509_certificate(&me.leaf) {
            Ok((_, c)) => KeySource::ProvenKey(c.public_key().raw.to_vec()),
            Err(e) => return Problem::internal(e).into(),
        },
    };
    let req = IssueRequest {
        profile: o,
        key,
        token: None,
        output: None,
    };
    match state.ca.issue(req).await {
        Ok(issued) => created(&issued),
        Err(e) => pki_problem(e).into(),
    }
}

/// `keyCompromise` (RFC 5280 spelling, as the contract writes it) or `key-compromise`.
fn parse_reason(s: &str) -> Result<RevocationReason, PkiError> {
    let mut kebab = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            kebab.push('-');
        }
        kebab.push(c.to_ascii_lowercase());
    }
    // RFC 5280 spells two of them with an acronym: cACompromise, aACompromise.
    let kebab = kebab.replace("c-a-compromise", "ca-compromise");
    RevocationReason::for_revocation(&kebab)
}

async fn revoke(state: &State, me: &Me, b: RevokeBody) -> Outcome {
    let serial = match mutual_pki::normalize_serial(&b.serial) {
        Ok(s) => s,
        Err(e) => return pki_problem(e).into(),
    };
    let reason = match b.reason.as_deref().map(parse_reason).transpose() {
        Ok(r) => r.unwrap_or_default(),
        Err(e) => return pki_problem(e).into(),
    };
    let is_self = serial == me.record.serial;
    let is_admin = state
        .admins
        .iter()
        .any(|r| r.matches_identity(&me.identity));
    if !is_self && !is_admin {
        return Problem::new(
            "forbidden",
            "only an admin identity (--admin) may revoke another certificate",
        )
        .into();
    }
    let by = format!("api-revoke:{}", me.identity.principal());
    let outcome = state
        .ca
        .store()
        .revoke_as(&serial, reason.as_str(), unix_now(), Some(&by))
        .await;
    let issuer = match outcome {
        Ok(RevokeOutcome::Revoked(r) | RevokeOutcome::AlreadyRevoked(r)) => r.issuer,
        Err(StoreError::NotFound { serial }) => {
            return Problem::new("not_found", format!("no certificate with serial {serial}")).into()
        }
        Err(e) => return Problem::store(&e).into(),
    };
    // Publish at once: the next CRL of its issuer from this replica must list it (the others
    // pick the stored CRL up within --crl-refresh).
    if let Err(e) = state.publish_crl_for(&issuer).await {
        return Problem::internal(e).into();
    }
    Outcome {
        resp: json(
            StatusCode::OK,
            &serde_json::json!({"serial": serial, "revoked": true}),
        ),
        reason: "ok",
        serial: Some(serial),
        detail: None,
    }
}

/// `/v1/crl`: the stored current CRL, with an `ETag` (its CRL number, the same on every
/// replica) and `Last-Modified` (its thisUpdate), answering 304 to a matching `If-None-Match`,
/// or without one to an `If-Modified-Since` not older than the CRL.
async fn crl(state: &State, issuer: Option<&str>, headers: &hyper::HeaderMap) -> Outcome {
    let c = match state.served_crl(issuer).await {
        Ok(c) => c,
        Err(e @ PkiError::UnknownIssuer { .. }) => {
            return Problem::new("not_found", e.to_string()).into()
        }
        Err(e) => return Problem::internal(e).into(),
    };
    // The first issuer keeps the ETag form it always had; the others name themselves, so an
    // ETag never matches another issuer's CRL of the same number.
    let etag = if c.issuer == mutual_pki::ca::issuers::FIRST_ISSUER {
        format!("\"crl-{}\"", c.number)
    } else {
        format!("\"crl-{}-{}\"", c.issuer, c.number)
    };
    let last_modified = http_date(c.this_update);
    let max_age = (c.next_update - unix_now()).max(0);
    let not_modified = match headers.get(hyper::header::IF_NONE_MATCH) {
        Some(v) => v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == "*" || t == etag)
        }),
        None => headers
            .get(hyper::header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .is_some_and(|since| since >= c.this_update),
    };
    let builder = Response::builder()
        .header("etag", &etag)
        .header("last-modified", &last_modified)
        .header("cache-control", format!("max-age={max_age}"));
    let resp = if not_modified {
        builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Full::new(Bytes::new()))
    } else {
        builder
            .status(StatusCode::OK)
            .header("content-type", "application/pkix-crl")
            .body(Full::new(Bytes::from(c.der.to_vec())))
    };
    ok(resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// The IMF-fixdate form of HTTP dates (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
const HTTP_DATE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

fn http_date(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(HTTP_DATE).ok())
        .unwrap_or_default()
}

fn parse_http_date(s: &str) -> Option<i64> {
    time::PrimitiveDateTime::parse(s.trim(), HTTP_DATE)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// Parses `--admin` patterns: `spiffe://...` globs, `dns:PATTERN` (or a bare DNS pattern).
pub fn admin_rules(patterns: &[String]) -> Result<Vec<Rule>, mutual_policy::PolicyError> {
    patterns
        .iter()
        .map(|p| {
            let mut r = Rule::default();
            if p.starts_with("spiffe://") {
                r.spiffe = vec![mutual_policy::SpiffePattern::parse(p)?];
            } else {
                let d = p.strip_prefix("dns:").unwrap_or(p);
                r.dns = vec![mutual_policy::DnsPattern::parse(d)?];
            }
            Ok(r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(
            parse_reason("keyCompromise").unwrap(),
            RevocationReason::KeyCompromise
        );
        assert_eq!(
            parse_reason("cACompromise").unwrap(),
            RevocationReason::CaCompromise
        );
        assert_eq!(
            parse_reason("key-compromise").unwrap(),
            RevocationReason::KeyCompromise
        );
        assert_eq!(
            parse_reason("cessationOfOperation").unwrap(),
            RevocationReason::CessationOfOperation
        );
        assert!(parse_reason("bogus").is_err());
        assert!(parse_reason("certificateHold").is_err());
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn admins() {
        let r = admin_rules(&[
            "spiffe://example.org/ops/*".into(),
            "dns:*.ops.example".into(),
        ])
        .unwrap();
        let id = Identity {
            spiffe: Some("spiffe://example.org/ops/alice".into()),
            ..Default::default()
        };
        assert!(r.iter().any(|r| r.matches_identity(&id)));
        let other = Identity {
            spiffe: Some("spiffe://example.org/dev/bob".into()),
            ..Default::default()
        };
        assert!(!r.iter().any(|r| r.matches_identity(&other)));
    }
}
