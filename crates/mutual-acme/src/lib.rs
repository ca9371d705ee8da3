//! An ACME server (RFC 8555) for `mutual ca serve --acme`: certbot, lego, cert-manager, Caddy
//! and Traefik get certificates from our CA without a new client.
//!
//! Why a crate of its own: ACME is a front door with its own authentication (JWS-signed
//! requests from account keys) and its own state machines, but, like every front door
//! (DESIGN.md "The CA as it grows"), it issues through `mutual_pki::ca::Ca::issue` with the
//! requester's CSR and builds no certificate itself; the inventory records the ACME account as
//! the requester. All state (nonces, accounts, orders, authorizations) lives in the store
//! (`mutual_store::AcmeStore`), so any replica answers any request and a nonce is accepted once
//! across replicas.
//!
//! Shape: [`Acme::handle`] takes every request under `/acme/` from the CA server's router.
//! Order: parse the JWS, find the key (`jwk` or the `kid` account), verify the signature,
//! check `url`, spend the nonce, then run the endpoint. Validation of a challenge runs in a
//! task of its own; clients poll the authorization.
#![forbid(unsafe_code)]

pub mod ari;
pub mod dns;
pub mod eab;
pub mod jws;
pub mod problem;
pub mod validate;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes};
use hyper::{Method, Request, Response, StatusCode};
use mutual_pki::ca::{Ca, Csr, IssueOptions, IssueRequest, KeySource};
use mutual_pki::{PkiError, RevocationReason, RevokeOutcome, San, Usage};
use mutual_store::{AcmeAccount, AcmeKind, AcmeObject, AcmeStore, Inventory, Store};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::jws::{b64, key_authorization, unb64, Jwk, Jws, KeyRef};
pub use crate::problem::AcmeError;
pub use crate::validate::ValidationConfig;

/// Request bodies larger than this are refused.
const MAX_BODY: usize = 64 * 1024;
const NONCE_LIFETIME: i64 = 3600;
/// Orders and authorizations must be completed within this time.
const ORDER_LIFETIME: i64 = 7 * 86_400;

/// Which identifiers may be certified and how.
#[derive(Clone, Debug)]
pub struct AcmePolicy {
    /// DNS names allowed: equal to, or a subdomain of, one of these (lowercase, no leading dot).
    pub dns_suffixes: Vec<String>,
    /// IP ranges allowed: (network, prefix length).
    pub ip_ranges: Vec<(IpAddr, u8)>,
    pub usage: Usage,
    pub ttl: Duration,
}

impl AcmePolicy {
    /// Checks one identifier; the refusal is `rejectedIdentifier` or `unsupportedIdentifier`.
    pub fn allows(&self, kind: &str, value: &str) -> Result<San, AcmeError> {
        match kind {
            "dns" => {
                let v = value.to_ascii_lowercase();
                // A wildcard `*.NAME` is allowed when NAME is; it is validated by dns-01 on NAME.
                let base = v.strip_prefix("*.").unwrap_or(&v);
                if base.contains('*') {
                    return Err(AcmeError::new(
                        "rejectedIdentifier",
                        format!("{value}: a wildcard is only allowed as the whole first label"),
                    ));
                }
                let ok = self
                    .dns_suffixes
                    .iter()
                    .any(|s| base == s || base.ends_with(&format!(".{s}")));
                if !ok {
                    return Err(AcmeError::new(
                        "rejectedIdentifier",
                        format!("{value} is outside the names this CA issues for by ACME"),
                    ));
                }
                format!("dns:{v}").parse().map_err(|_| {
                    AcmeError::new(
                        "rejectedIdentifier",
                        format!("{value} is not a valid DNS name"),
                    )
                })
            }
            "ip" => {
                let ip: IpAddr = value
                    .parse()
                    .map_err(|_| AcmeError::malformed(format!("{value} is not an IP address")))?;
                if !self
                    .ip_ranges
                    .iter()
                    .any(|(net, len)| in_range(ip, *net, *len))
                {
                    return Err(AcmeError::new(
                        "rejectedIdentifier",
                        format!("{value} is outside the addresses this CA issues for by ACME"),
                    ));
                }
                // The CA's SAN rules (no unspecified, broadcast or multicast address: 0.0.0.0
                // would even be validated against the CA's own host).
                format!("ip:{ip}")
                    .parse()
                    .map_err(|e: mutual_pki::PkiError| {
                        AcmeError::new("rejectedIdentifier", format!("{value}: {e}"))
                    })
            }
            other => Err(AcmeError::new(
                "unsupportedIdentifier",
                format!("identifier type {other:?} is not supported (dns, ip)"),
            )),
        }
    }
}

fn in_range(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Parses `ADDR/LEN` (a bare address is a single host).
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = a
        .parse()
        .map_err(|_| format!("{s:?}: not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if l.is_empty() {
        max
    } else {
        l.parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: bad prefix length"))?
    };
    Ok((ip, len))
}

/// Everything `ca serve --acme` configures.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    pub policy: AcmePolicy,
    pub validation: ValidationConfig,
    /// `--acme-require-eab`: a new account needs an External Account Binding made by
    /// `mutual acme eab create` (`externalAccountRequired` otherwise).
    pub require_eab: bool,
    /// Orders one account may create per hour, across replicas (0: no limit); beyond it
    /// newOrder is `rateLimited` with a Retry-After.
    pub orders_per_hour: u32,
}

/// What the ACME server calls after each issuance attempt, with `ok` or the CA's result label
/// (the online CA counts it in `mutual_ca_issued_total{method="acme"}`).
pub type IssueHook = Box<dyn Fn(&'static str) + Send + Sync>;

/// The ACME server: stateless apart from the store.
pub struct Acme {
    store: Store,
    cfg: AcmeConfig,
    on_issue: std::sync::OnceLock<IssueHook>,
}

type Resp = Response<Full<Bytes>>;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn random_id() -> String {
    let b: [u8; 16] = rand::random();
    b64(&b)
}

/// The stored body of an order.
#[derive(serde::Serialize, Deserialize, Clone, Debug)]
struct OrderBody {
    identifiers: Vec<Identifier>,
    authzs: Vec<String>,
    expires: i64,
    #[serde(default)]
    serial: Option<String>,
    #[serde(default)]
    chain_pem: Option<String>,
    #[serde(default)]
    error: Option<Value>,
    /// The certID this order replaces (RFC 9773 §5), as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaces: Option<String>,
}

#[derive(serde::Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(serde::Serialize, Deserialize, Clone, Debug)]
struct AuthzBody {
    order: String,
    /// For a wildcard order identifier `*.NAME`: NAME, with `wildcard` set (RFC 8555 §7.1.4).
    identifier: Identifier,
    expires: i64,
    challenges: Vec<Challenge>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    wildcard: bool,
}

#[derive(serde::Serialize, Deserialize, Clone, Debug)]
struct Challenge {
    #[serde(rename = "type")]
    kind: String,
    token: String,
    status: String,
    #[serde(default)]
    validated: Option<i64>,
    #[serde(default)]
    error: Option<Value>,
}

/// An authenticated request.
struct Signed {
    jws: Jws,
    /// The account (`kid` requests; `jwk` requests of a known key for newAccount).
    account: Option<AcmeAccount>,
    jwk: Jwk,
}

impl Acme {
    pub fn new(store: Store, cfg: AcmeConfig) -> Arc<Acme> {
        let acme = Arc::new(Acme {
            store,
            cfg,
            on_issue: std::sync::OnceLock::new(),
        });
        // Expired nonces and abandoned orders are swept hourly by every replica (the DELETEs are
        // idempotent, so replicas need not agree on who does it).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&acme);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tick.tick().await;
                    let Some(a) = weak.upgrade() else { return };
                    let t = now();
                    match a.store.acme_sweep(t, t - ORDER_LIFETIME - 86_400).await {
                        Ok(n) => tracing::debug!(rows = n, "ACME sweep"),
                        Err(e) => tracing::warn!(error = %e, "ACME sweep failed"),
                    }
                }
            });
        }
        acme
    }

    /// Sets what is called after each issuance attempt (once; later calls are ignored).
    pub fn on_issue(&self, hook: IssueHook) {
        let _ = self.on_issue.set(hook);
    }

    fn issued(&self, result: &'static str) {
        if let Some(hook) = self.on_issue.get() {
            hook(result);
        }
    }

    /// Serves one request under `/acme/`. `ca` issues and revokes.
    pub async fn handle<B>(self: &Arc<Self>, ca: &Ca, req: Request<B>) -> Resp
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_string();
        let base = format!("https://{host}/acme");
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let r = self.route(ca, &base, &path, &method, req).await;
        let mut resp = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(path = %path, error_type = e.kind, detail = %e.detail, "ACME request refused");
                let body = serde_json::to_vec(&e.to_json()).unwrap_or_default();
                let mut b = Response::builder()
                    .status(e.status)
                    .header("content-type", "application/problem+json");
                if let Some(l) = &e.location {
                    b = b.header("location", l.as_str());
                }
                if let Some(s) = e.retry_after {
                    b = b.header("retry-after", s.to_string());
                }
                b.body(Full::new(Bytes::from(body)))
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
            }
        };
        let h = resp.headers_mut();
        if let Ok(v) = format!("<{base}/directory>;rel=\"index\"").parse() {
            h.append("link", v);
        }
        if let Ok(v) = "no-store".parse() {
            h.insert("cache-control", v);
        }
        // RFC 8555 §6.5: a fresh nonce on every response (newNonce's and errors' too).
        match self.new_nonce().await {
            Ok(n) => {
                if let Ok(v) = n.parse() {
                    h.insert("replay-nonce", v);
                }
            }
            Err(e) => tracing::error!(error = %e.detail, "cannot store an ACME nonce"),
        }
        resp
    }

    async fn new_nonce(&self) -> Result<String, AcmeError> {
        let n = random_id();
        self.store.nonce_put(&n, now() + NONCE_LIFETIME).await?;
        Ok(n)
    }

    async fn route<B>(
        self: &Arc<Self>,
        ca: &Ca,
        base: &str,
        path: &str,
        method: &Method,
        req: Request<B>,
    ) -> Result<Resp, AcmeError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let rest = path.strip_prefix("/acme/").unwrap_or("");
        let parts: Vec<&str> = rest.split('/').collect();
        match (method, parts.as_slice()) {
            (&Method::GET, ["directory"]) => Ok(json_resp(StatusCode::OK, &self.directory(base))),
            (&Method::HEAD, ["new-nonce"]) => Ok(empty(StatusCode::OK)),
            (&Method::GET, ["new-nonce"]) => Ok(empty(StatusCode::NO_CONTENT)),
            (&Method::GET, ["renewal-info", id]) => self.renewal_info(ca, id).await,
            (&Method::POST, _) => {
                let ct = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if ct != "application/jose+json" {
                    let mut e =
                        AcmeError::malformed("the content type must be application/jose+json");
                    e.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
                    return Err(e);
                }
                let body = Limited::new(req.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| AcmeError::malformed(format!("cannot read the body: {e}")))?
                    .to_bytes();
                let url = format!("{base}/{rest}");
                let needs_jwk = matches!(parts.as_slice(), ["new-account"]);
                let signed = self.authenticate(base, &url, &body, needs_jwk).await?;
                match parts.as_slice() {
                    ["new-account"] => self.new_account(base, signed).await,
                    ["new-order"] => self.new_order(ca, base, signed).await,
                    ["acct", id] => self.account(base, signed, id).await,
                    ["acct", id, "orders"] => self.orders(base, signed, id).await,
                    ["key-change"] => self.key_change(base, signed).await,
                    ["order", id] => self.order(base, signed, id).await,
                    ["order", id, "finalize"] => self.finalize(ca, base, signed, id).await,
                    ["authz", id] => self.authz(base, signed, id).await,
                    ["chall", id, kind] => self.challenge(base, signed, id, kind).await,
                    ["cert", id] => self.certificate(signed, id).await,
                    ["revoke-cert"] => self.revoke(ca, signed).await,
                    _ => Err(AcmeError::malformed(format!("no ACME resource at {path}"))),
                }
            }
            (_, ["directory"] | ["new-nonce"]) => Err(method_not_allowed()),
            _ => Err(AcmeError::malformed(format!(
                "{method} {path}: ACME resources are fetched with POST-as-GET"
            ))
            .with_status(StatusCode::METHOD_NOT_ALLOWED)),
        }
    }

    fn directory(&self, base: &str) -> Value {
        json!({
            "newNonce": format!("{base}/new-nonce"),
            "newAccount": format!("{base}/new-account"),
            "newOrder": format!("{base}/new-order"),
            "revokeCert": format!("{base}/revoke-cert"),
            "keyChange": format!("{base}/key-change"),
            "renewalInfo": format!("{base}/renewal-info"),
            "meta": {
                "externalAccountRequired": self.cfg.require_eab,
            }
        })
    }

    /// JWS checks, in this order: shape, key (`jwk` or the `kid` account), signature, `url`,
    /// nonce (spent last, so a request refused earlier does not burn it).
    async fn authenticate(
        &self,
        base: &str,
        url: &str,
        body: &[u8],
        needs_jwk: bool,
    ) -> Result<Signed, AcmeError> {
        let jws = Jws::parse(body)?;
        let (jwk, account) = match &jws.protected.key {
            KeyRef::Jwk(j) => {
                if !needs_jwk && !url.ends_with("/revoke-cert") {
                    return Err(AcmeError::malformed(
                        "this request must name its account with kid, not jwk",
                    ));
                }
                (j.clone(), None)
            }
            KeyRef::Kid(kid) => {
                if needs_jwk {
                    return Err(AcmeError::malformed(
                        "newAccount must carry the account key as jwk",
                    ));
                }
                let id = kid.strip_prefix(&format!("{base}/acct/")).ok_or_else(|| {
                    AcmeError::new(
                        "accountDoesNotExist",
                        format!("{kid} is not an account URL of this server"),
                    )
                })?;
                let acct = self.store.account_get(id).await?.ok_or_else(|| {
                    AcmeError::new("accountDoesNotExist", format!("no account {kid}"))
                })?;
                let v: Value = serde_json::from_str(&acct.jwk).map_err(AcmeError::internal)?;
                (Jwk::from_json(&v)?, Some(acct))
            }
        };
        jws.verify(&jwk)?;
        if jws.protected.url != url {
            return Err(AcmeError::unauthorized(format!(
                "the JWS url {:?} is not the request URL {url:?}",
                jws.protected.url
            )));
        }
        let Some(nonce) = &jws.protected.nonce else {
            return Err(AcmeError::new("badNonce", "the JWS has no nonce"));
        };
        if !self.store.nonce_take(nonce, now()).await? {
            return Err(AcmeError::new(
                "badNonce",
                "the nonce is unknown, expired or already used; retry with the Replay-Nonce of this response",
            ));
        }
        if let Some(a) = &account {
            if a.status != "valid" {
                return Err(AcmeError::unauthorized(format!(
                    "the account is {}",
                    a.status
                )));
            }
        }
        Ok(Signed { jws, account, jwk })
    }

    fn account_of(s: &Signed) -> Result<&AcmeAccount, AcmeError> {
        s.account
            .as_ref()
            .ok_or_else(|| AcmeError::malformed("this request must name its account with kid"))
    }

    async fn new_account(&self, base: &str, s: Signed) -> Result<Resp, AcmeError> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct NewAccount {
            #[serde(default)]
            contact: Vec<String>,
            #[serde(default)]
            only_return_existing: bool,
            #[serde(default)]
            external_account_binding: Option<Value>,
        }
        let p: NewAccount = if s.jws.is_post_as_get() {
            NewAccount::default()
        } else {
            s.jws.json()?
        };
        let thumb = s.jwk.thumbprint();
        if let Some(existing) = self.store.account_by_thumbprint(&thumb).await? {
            return Ok(account_resp(base, StatusCode::OK, &existing));
        }
        if p.only_return_existing {
            return Err(AcmeError::new(
                "accountDoesNotExist",
                "no account exists with this key",
            ));
        }
        check_contacts(&p.contact)?;
        let id = random_id();
        match (&p.external_account_binding, self.cfg.require_eab) {
            (None, false) => {}
            (None, true) => {
                return Err(AcmeError::new(
                    "externalAccountRequired",
                    "this CA requires an externalAccountBinding (ask its operator for a key id \
                     and HMAC key from `mutual acme eab create`)",
                ))
            }
            (Some(v), _) => self.bind_eab(base, v, &s.jwk, &id).await?,
        }
        let a = AcmeAccount {
            id,
            thumbprint: thumb,
            jwk: s.jwk.to_json().to_string(),
            status: "valid".into(),
            contact: serde_json::to_string(&p.contact).map_err(AcmeError::internal)?,
            created_at: now(),
        };
        let (stored, created) = self.store.account_create(&a).await?;
        tracing::info!(account = %stored.id, created, "ACME account");
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(account_resp(base, status, &stored))
    }

    /// Verifies an External Account Binding and spends its key on account `id`.
    async fn bind_eab(&self, base: &str, v: &Value, jwk: &Jwk, id: &str) -> Result<(), AcmeError> {
        let b = eab::Binding::parse(v, &format!("{base}/new-account"))?;
        let (key, bound) = self
            .store
            .eab_get(&b.kid)
            .await?
            .ok_or_else(|| AcmeError::unauthorized("externalAccountBinding: unknown key id"))?;
        b.verify(&key, jwk)?;
        let used = || {
            AcmeError::unauthorized("externalAccountBinding: this key id already bound an account")
        };
        if bound.is_some() || !self.store.eab_bind(&b.kid, id, now()).await? {
            return Err(used());
        }
        tracing::info!(account = %id, eab_kid = %b.kid, "ACME external account bound");
        Ok(())
    }

    /// The account's orders list (RFC 8555 §7.1.2.1): POST-as-GET of `acct/<id>/orders`.
    async fn orders(&self, base: &str, s: Signed, id: &str) -> Result<Resp, AcmeError> {
        let a = Self::account_of(&s)?;
        if a.id != id {
            return Err(AcmeError::unauthorized(
                "the kid does not match the account URL",
            ));
        }
        let ids = self.store.orders_of(id).await?;
        let urls: Vec<String> = ids.iter().map(|o| format!("{base}/order/{o}")).collect();
        Ok(json_resp(StatusCode::OK, &json!({ "orders": urls })))
    }

    /// keyChange (RFC 8555 §7.3.5): the outer JWS is signed by the account's current key
    /// (`kid`), its payload is an inner JWS signed by the new key (`jwk`, same `url`, no nonce)
    /// whose payload names the account and its old key.
    async fn key_change(&self, base: &str, s: Signed) -> Result<Resp, AcmeError> {
        let acct = Self::account_of(&s)?.clone();
        let inner = Jws::parse(&s.jws.payload)?;
        let KeyRef::Jwk(new_key) = &inner.protected.key else {
            return Err(AcmeError::malformed(
                "keyChange: the inner JWS must carry the new key as jwk",
            ));
        };
        inner.verify(new_key)?;
        if inner.protected.url != s.jws.protected.url {
            return Err(AcmeError::malformed(
                "keyChange: the inner and outer url differ",
            ));
        }
        if inner.protected.nonce.is_some() {
            return Err(AcmeError::malformed(
                "keyChange: the inner JWS must not carry a nonce",
            ));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct KeyChange {
            account: String,
            old_key: Value,
        }
        let kc: KeyChange = inner.json()?;
        if kc.account != format!("{base}/acct/{}", acct.id) {
            return Err(AcmeError::unauthorized(
                "keyChange: the inner payload names another account",
            ));
        }
        if Jwk::from_json(&kc.old_key)?.thumbprint() != acct.thumbprint {
            return Err(AcmeError::unauthorized(
                "keyChange: oldKey is not the account's current key",
            ));
        }
        let new_thumb = new_key.thumbprint();
        if let Some(other) = self.store.account_by_thumbprint(&new_thumb).await? {
            let mut e = AcmeError::malformed("keyChange: another account already uses the new key")
                .with_status(StatusCode::CONFLICT);
            e.location = Some(format!("{base}/acct/{}", other.id));
            return Err(e);
        }
        let jwk = new_key.to_json().to_string();
        if !self
            .store
            .account_rekey(&acct.id, &acct.thumbprint, &new_thumb, &jwk)
            .await?
        {
            return Err(AcmeError::unauthorized(
                "keyChange: the account's key changed meanwhile",
            ));
        }
        tracing::info!(account = %acct.id, "ACME account key changed");
        let a = AcmeAccount {
            thumbprint: new_thumb,
            jwk,
            ..acct
        };
        Ok(account_resp(base, StatusCode::OK, &a))
    }

    async fn account(&self, base: &str, s: Signed, id: &str) -> Result<Resp, AcmeError> {
        let a = Self::account_of(&s)?;
        if a.id != id {
            return Err(AcmeError::unauthorized(
                "the kid does not match the account URL",
            ));
        }
        if s.jws.is_post_as_get() {
            return Ok(account_resp(base, StatusCode::OK, a));
        }
        #[derive(Deserialize)]
        struct Update {
            status: Option<String>,
            contact: Option<Vec<String>>,
        }
        let u: Update = s.jws.json()?;
        let mut a = a.clone();
        if let Some(c) = u.contact {
            check_contacts(&c)?;
            a.contact = serde_json::to_string(&c).map_err(AcmeError::internal)?;
        }
        match u.status.as_deref() {
            None => {}
            Some("deactivated") => a.status = "deactivated".into(),
            Some(other) => {
                return Err(AcmeError::malformed(format!(
                    "an account can only be set to deactivated, not {other:?}"
                )))
            }
        }
        self.store
            .account_update(&a.id, &a.status, &a.contact)
            .await?;
        Ok(account_resp(base, StatusCode::OK, &a))
    }

    async fn new_order(&self, ca: &Ca, base: &str, s: Signed) -> Result<Resp, AcmeError> {
        let acct = Self::account_of(&s)?.clone();
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct NewOrder {
            identifiers: Vec<Identifier>,
            #[serde(default)]
            replaces: Option<String>,
            #[serde(default)]
            not_before: Option<Value>,
            #[serde(default)]
            not_after: Option<Value>,
        }
        let p: NewOrder = s.jws.json()?;
        // RFC 8555 §7.4: a server that cannot fulfil the order as asked must say so, not issue
        // something else; the lifetime here is the CA's (--acme-ttl), as Let's Encrypt's is.
        if p.not_before.is_some() || p.not_after.is_some() {
            return Err(AcmeError::malformed(format!(
                "notBefore and notAfter are not supported: certificates from this CA last {} \
                 from issuance (--acme-ttl)",
                mutual_tls::human::duration(self.cfg.policy.ttl.as_secs())
            )));
        }
        if let Some(r) = &p.replaces {
            self.check_replaces(&acct, r).await?;
        }
        self.check_rate(&acct).await?;
        if p.identifiers.is_empty() || p.identifiers.len() > 100 {
            return Err(AcmeError::malformed("an order names 1 to 100 identifiers"));
        }
        let mut idents: Vec<Identifier> = Vec::new();
        for i in &p.identifiers {
            let san = self.cfg.policy.allows(&i.kind, &i.value)?;
            // The CA's own rules (name constraints, no wildcard on a public suffix) refuse now
            // what finalize would refuse after the client had proved control of the name.
            ca.config()
                .check_sans(std::slice::from_ref(&san))
                .map_err(|e| AcmeError::new("rejectedIdentifier", format!("{}: {e}", i.value)))?;
            let i = Identifier {
                kind: i.kind.clone(),
                value: i.value.to_ascii_lowercase(),
            };
            if !idents.contains(&i) {
                idents.push(i);
            }
        }
        let t = now();
        let expires = t + ORDER_LIFETIME;
        let order_id = random_id();
        let mut authzs = Vec::new();
        for i in &idents {
            let base = i.value.strip_prefix("*.").filter(|_| i.kind == "dns");
            let kinds = match (i.kind.as_str(), base) {
                // A wildcard is proven on its base name's DNS only.
                (_, Some(_)) => vec!["dns-01"],
                ("dns", None) => vec!["http-01", "tls-alpn-01", "dns-01"],
                _ => vec!["http-01"],
            };
            let body = AuthzBody {
                order: order_id.clone(),
                identifier: Identifier {
                    kind: i.kind.clone(),
                    value: base.unwrap_or(&i.value).to_string(),
                },
                wildcard: base.is_some(),
                expires,
                challenges: kinds
                    .into_iter()
                    .map(|k| Challenge {
                        kind: k.into(),
                        token: b64(&rand::random::<[u8; 32]>()),
                        status: "pending".into(),
                        validated: None,
                        error: None,
                    })
                    .collect(),
            };
            let id = random_id();
            self.store
                .object_insert(
                    AcmeKind::Authz,
                    &AcmeObject {
                        id: id.clone(),
                        account_id: acct.id.clone(),
                        status: "pending".into(),
                        body: to_string(&body)?,
                    },
                    t,
                )
                .await?;
            authzs.push(id);
        }
        let body = OrderBody {
            identifiers: idents,
            authzs,
            expires,
            serial: None,
            chain_pem: None,
            error: None,
            replaces: p.replaces,
        };
        let o = AcmeObject {
            id: order_id.clone(),
            account_id: acct.id.clone(),
            status: "pending".into(),
            body: to_string(&body)?,
        };
        self.store.object_insert(AcmeKind::Order, &o, t).await?;
        tracing::info!(account = %acct.id, order = %order_id, "ACME order created");
        let mut r = json_resp(StatusCode::CREATED, &order_json(base, &o, &body));
        set_location(&mut r, &format!("{base}/order/{order_id}"));
        Ok(r)
    }

    /// The per-account order limit: counted in the store, so it holds across replicas.
    async fn check_rate(&self, acct: &AcmeAccount) -> Result<(), AcmeError> {
        let limit = self.cfg.orders_per_hour;
        if limit == 0 {
            return Ok(());
        }
        let t = now();
        let (n, oldest) = self.store.orders_since(&acct.id, t - 3600).await?;
        if n < i64::from(limit) {
            return Ok(());
        }
        let mut e = AcmeError::new(
            "rateLimited",
            format!("this account created {n} orders in the last hour; the limit is {limit}"),
        );
        e.retry_after = Some(oldest.map_or(3600, |o| o + 3600 - t).max(1));
        Err(e)
    }

    /// `replaces` (RFC 9773 §5) must name a certificate of this CA ordered by this account, and
    /// one no valid order of the account has replaced already (`alreadyReplaced`).
    async fn check_replaces(&self, acct: &AcmeAccount, certid: &str) -> Result<(), AcmeError> {
        let cid = ari::CertId::parse(certid)?;
        let rec = self.store.get(&cid.serial, now()).await?.ok_or_else(|| {
            AcmeError::malformed(format!(
                "replaces: no certificate of this CA has certID {certid}"
            ))
        })?;
        if rec.requested_by.as_deref() != Some(&format!("acme:{}", acct.id)) {
            return Err(AcmeError::unauthorized(
                "replaces names a certificate this account did not order",
            ));
        }
        for o in self.store.orders_of(&acct.id).await? {
            let Some(o) = self.store.object_get(AcmeKind::Order, &o).await? else {
                continue;
            };
            if o.status != "valid" {
                continue;
            }
            let body: OrderBody = from_str(&o.body)?;
            if body.replaces.as_deref() == Some(certid) {
                return Err(AcmeError::new(
                    "alreadyReplaced",
                    format!("order {} already replaced this certificate", o.id),
                ));
            }
        }
        Ok(())
    }

    /// An object of this account (another account's is `unauthorized`, an unknown id
    /// `malformed` with 404, as boulder answers).
    async fn owned(&self, kind: AcmeKind, s: &Signed, id: &str) -> Result<AcmeObject, AcmeError> {
        let acct = Self::account_of(s)?;
        let o = self.store.object_get(kind, id).await?.ok_or_else(|| {
            AcmeError::malformed(format!("no such {kind:?}")).with_status(StatusCode::NOT_FOUND)
        })?;
        if o.account_id != acct.id {
            return Err(AcmeError::unauthorized(format!(
                "this {kind:?} belongs to another account"
            )));
        }
        Ok(o)
    }

    /// The caller's order, settled first: a validation records its authorization and then the
    /// order (`run_validation`), so a client that saw its last authorization turn valid may ask
    /// for the order, or finalize it, before the second write (or after a crash between the two).
    /// A pending order is brought up to date from its authorizations before it is read.
    async fn owned_order(&self, s: &Signed, id: &str) -> Result<AcmeObject, AcmeError> {
        let o = self.owned(AcmeKind::Order, s, id).await?;
        if o.status != "pending" {
            return Ok(o);
        }
        self.update_order(id).await?;
        self.owned(AcmeKind::Order, s, id).await
    }

    async fn order(&self, base: &str, s: Signed, id: &str) -> Result<Resp, AcmeError> {
        let o = self.owned_order(&s, id).await?;
        let body: OrderBody = from_str(&o.body)?;
        let mut r = json_resp(StatusCode::OK, &order_json(base, &o, &body));
        set_location(&mut r, &format!("{base}/order/{id}"));
        Ok(r)
    }

    async fn authz(&self, base: &str, s: Signed, id: &str) -> Result<Resp, AcmeError> {
        let a = self.owned(AcmeKind::Authz, &s, id).await?;
        if !s.jws.is_post_as_get() {
            #[derive(Deserialize)]
            struct Deactivate {
                status: String,
            }
            let d: Deactivate = s.jws.json()?;
            if d.status != "deactivated" {
                return Err(AcmeError::malformed(
                    "an authorization can only be deactivated",
                ));
            }
            let body: AuthzBody = from_str(&a.body)?;
            for from in ["pending", "valid"] {
                if self
                    .store
                    .object_transition(AcmeKind::Authz, id, from, "deactivated", &a.body, now())
                    .await?
                {
                    break;
                }
            }
            self.update_order(&body.order).await?;
        }
        let a = self.owned(AcmeKind::Authz, &s, id).await?;
        let body: AuthzBody = from_str(&a.body)?;
        Ok(json_resp(StatusCode::OK, &authz_json(base, &a, &body)))
    }

    async fn challenge(
        self: &Arc<Self>,
        base: &str,
        s: Signed,
        id: &str,
        kind: &str,
    ) -> Result<Resp, AcmeError> {
        let a = self.owned(AcmeKind::Authz, &s, id).await?;
        let mut body: AuthzBody = from_str(&a.body)?;
        let Some(idx) = body.challenges.iter().position(|c| c.kind == kind) else {
            return Err(AcmeError::malformed(format!("no {kind} challenge here"))
                .with_status(StatusCode::NOT_FOUND));
        };
        // POST {} starts the validation; POST-as-GET only reads.
        if !s.jws.is_post_as_get()
            && a.status == "pending"
            && body.challenges[idx].status == "pending"
        {
            if body.expires < now() {
                return Err(AcmeError::malformed("the authorization has expired"));
            }
            body.challenges[idx].status = "processing".into();
            let text = to_string(&body)?;
            if self
                .store
                .object_transition(AcmeKind::Authz, id, "pending", "pending", &text, now())
                .await?
            {
                let this = self.clone();
                let (id, kind) = (id.to_string(), kind.to_string());
                let keyauth = key_authorization(&body.challenges[idx].token, &s.jwk);
                let b = body.clone();
                tokio::spawn(async move { this.run_validation(&id, &kind, b, keyauth).await });
            }
        }
        let chall = challenge_json(base, id, &body.challenges[idx]);
        let mut r = json_resp(StatusCode::OK, &chall);
        if let Ok(v) = format!("<{base}/authz/{id}>;rel=\"up\"").parse() {
            r.headers_mut().append("link", v);
        }
        Ok(r)
    }

    async fn run_validation(&self, id: &str, kind: &str, mut body: AuthzBody, keyauth: String) {
        let target = validate::Target {
            kind: body.identifier.kind.clone(),
            value: body.identifier.value.clone(),
        };
        let Some(c) = body.challenges.iter_mut().find(|c| c.kind == kind) else {
            return;
        };
        let result = self
            .cfg
            .validation
            .validate(kind, &target, &c.token, &keyauth)
            .await;
        let status = match &result {
            Ok(()) => {
                c.status = "valid".into();
                c.validated = Some(now());
                "valid"
            }
            Err(e) => {
                c.status = "invalid".into();
                c.error = Some(e.to_json());
                "invalid"
            }
        };
        tracing::info!(authz = %id, challenge = kind, identifier = %target.value, status, error = ?result.as_ref().err().map(|e| &e.detail), "ACME validation");
        let text = match to_string(&body) {
            Ok(t) => t,
            Err(_) => return,
        };
        let r = self
            .store
            .object_transition(AcmeKind::Authz, id, "pending", status, &text, now())
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot record an ACME validation");
            return;
        }
        if let Err(e) = self.update_order(&body.order).await {
            tracing::error!(error = %e.detail, "cannot update an ACME order");
        }
    }

    /// pending -> ready when every authorization is valid; pending -> invalid when one is not.
    async fn update_order(&self, order_id: &str) -> Result<(), AcmeError> {
        let Some(o) = self.store.object_get(AcmeKind::Order, order_id).await? else {
            return Ok(());
        };
        if o.status != "pending" {
            return Ok(());
        }
        let body: OrderBody = from_str(&o.body)?;
        // `None`: some authorization is still pending, the order stays as it is.
        let mut next = Some("ready");
        for a in &body.authzs {
            match self.store.object_get(AcmeKind::Authz, a).await? {
                Some(a) if a.status == "valid" => {}
                Some(a) if a.status == "pending" => next = None,
                _ => {
                    next = Some("invalid");
                    break;
                }
            }
        }
        if let Some(status) = next {
            self.store
                .object_transition(AcmeKind::Order, order_id, "pending", status, &o.body, now())
                .await?;
        }
        Ok(())
    }

    async fn finalize(&self, ca: &Ca, base: &str, s: Signed, id: &str) -> Result<Resp, AcmeError> {
        let acct = Self::account_of(&s)?.clone();
        let o = self.owned_order(&s, id).await?;
        let mut body: OrderBody = from_str(&o.body)?;
        if o.status != "ready" {
            return Err(AcmeError::new(
                "orderNotReady",
                format!("the order is {}, not ready", o.status),
            ));
        }
        #[derive(Deserialize)]
        struct Finalize {
            csr: String,
        }
        let f: Finalize = s.jws.json()?;
        let der = unb64(&f.csr, "csr")?;
        let bad_csr = |d: String| AcmeError::new("badCSR", d);
        let csr = Csr::parse(&der).map_err(|e| bad_csr(e.to_string()))?;
        csr.check().map_err(|e| bad_csr(e.to_string()))?;
        let mut wanted: Vec<San> = Vec::new();
        for i in &body.identifiers {
            wanted.push(self.cfg.policy.allows(&i.kind, &i.value)?);
        }
        let asked = csr.sans().map_err(|e| bad_csr(e.to_string()))?;
        let same = asked.len() == wanted.len() && asked.iter().all(|a| wanted.contains(a));
        if !same {
            let asked: Vec<String> = asked.iter().map(ToString::to_string).collect();
            let wanted: Vec<String> = wanted.iter().map(ToString::to_string).collect();
            return Err(bad_csr(format!(
                "the CSR names {asked:?}, the order {wanted:?}: they must be the same"
            )));
        }
        if !self
            .store
            .object_transition(AcmeKind::Order, id, "ready", "processing", &o.body, now())
            .await?
        {
            return Err(AcmeError::new(
                "orderNotReady",
                "the order is already being finalized",
            ));
        }
        // The CN: the first identifier as its SAN is written (lowercase, an IP in its canonical
        // form), so that it repeats the SAN verbatim (CABF BR 7.1.4.3; the CA refuses a CN
        // naming a SAN in another form).
        let name = wanted.first().map(San::value).unwrap_or_default();
        let req = IssueRequest {
            profile: IssueOptions {
                name: name.chars().take(64).collect(),
                sans: wanted,
                usage: self.cfg.policy.usage,
                // --acme-ttl was checked at start; the intermediate's end has come nearer.
                ttl: ca.ttl_within_intermediate(self.cfg.policy.ttl),
                requested_by: Some(format!("acme:{}", acct.id)),
                ..Default::default()
            },
            key: KeySource::Csr(csr),
            token: None,
            output: None,
        };
        let (status, err) = match ca.issue(req).await {
            Ok(issued) => {
                self.issued("ok");
                tracing::info!(account = %acct.id, order = %id, serial = %issued.serial_hex, "ACME certificate issued");
                body.serial = Some(issued.serial_hex);
                body.chain_pem = Some(issued.chain_pem);
                ("valid", None)
            }
            Err(e) => {
                let (label, err) = match &e {
                    PkiError::InvalidSan { .. } => (
                        "name_not_allowed",
                        AcmeError::new("rejectedIdentifier", e.to_string()),
                    ),
                    PkiError::MalformedCsr { .. }
                    | PkiError::CsrBadSignature
                    | PkiError::WeakKey { .. }
                    | PkiError::UnsupportedKey { .. } => ("bad_request", bad_csr(e.to_string())),
                    PkiError::NotPermitted { .. } | PkiError::OutsideTrustDomain { .. } => (
                        "name_not_allowed",
                        AcmeError::new("rejectedIdentifier", e.to_string()),
                    ),
                    _ => ("internal", AcmeError::internal(&e)),
                };
                self.issued(label);
                body.error = Some(err.to_json());
                ("invalid", Some(err))
            }
        };
        let text = to_string(&body)?;
        self.store
            .object_transition(AcmeKind::Order, id, "processing", status, &text, now())
            .await?;
        if let Some(e) = err {
            return Err(e);
        }
        let o = AcmeObject {
            status: status.into(),
            body: text,
            ..o
        };
        let mut r = json_resp(StatusCode::OK, &order_json(base, &o, &body));
        set_location(&mut r, &format!("{base}/order/{id}"));
        Ok(r)
    }

    /// renewalInfo (RFC 9773 §4): an unauthenticated GET of `renewal-info/<certID>` answers the
    /// suggested renewal window of one of our certificates: two-thirds to five-sixths of its
    /// life, or a window in the past when it is revoked or was signed by an intermediate the CA
    /// no longer uses (the certID's key identifier is not the current intermediate's).
    async fn renewal_info(&self, ca: &Ca, id: &str) -> Result<Resp, AcmeError> {
        let cid = ari::CertId::parse(id)?;
        let t = now();
        let rec = ca.store().get(&cid.serial, t).await?.ok_or_else(|| {
            AcmeError::malformed("no certificate of this CA has this certID")
                .with_status(StatusCode::NOT_FOUND)
        })?;
        let why = if rec.status == mutual_store::Status::Revoked {
            ari::Why::Revoked
        } else if intermediate_ski(ca).is_some_and(|k| k != cid.aki) {
            ari::Why::Rotated
        } else {
            ari::Why::Schedule
        };
        let (start, end, retry) = ari::window(rec.not_before, rec.not_after, why, t);
        tracing::debug!(serial = %cid.serial, why = ?why, "ACME renewalInfo");
        let mut r = json_resp(
            StatusCode::OK,
            &json!({ "suggestedWindow": { "start": rfc3339(start), "end": rfc3339(end) } }),
        );
        if let Ok(v) = retry.to_string().parse() {
            r.headers_mut().insert("retry-after", v);
        }
        Ok(r)
    }

    async fn certificate(&self, s: Signed, id: &str) -> Result<Resp, AcmeError> {
        let o = self.owned(AcmeKind::Order, &s, id).await?;
        let body: OrderBody = from_str(&o.body)?;
        let pem = body.chain_pem.ok_or_else(|| {
            AcmeError::malformed("the order has no certificate yet")
                .with_status(StatusCode::NOT_FOUND)
        })?;
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/pem-certificate-chain")
            .body(Full::new(Bytes::from(pem)))
            .map_err(AcmeError::internal)
    }

    /// revokeCert (RFC 8555 §7.6): by the account that ordered the certificate (`kid`), or by
    /// the certificate's own key (`jwk`).
    async fn revoke(&self, ca: &Ca, s: Signed) -> Result<Resp, AcmeError> {
        #[derive(Deserialize)]
        struct Revoke {
            certificate: String,
            #[serde(default)]
            reason: Option<u8>,
        }
        let p: Revoke = s.jws.json()?;
        let der = unb64(&p.certificate, "certificate")?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| AcmeError::malformed("the certificate does not parse"))?;
        let serial = hex::encode(cert.raw_serial());
        let serial = serial.trim_start_matches("00").to_string();
        let sha = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der));
        let rec = ca
            .store()
            .get(&serial, now())
            .await?
            .filter(|r| r.sha256 == sha)
            .ok_or_else(|| {
                AcmeError::malformed("this certificate was not issued by this CA")
                    .with_status(StatusCode::NOT_FOUND)
            })?;
        let by = match &s.account {
            Some(a) => {
                if rec.requested_by.as_deref() != Some(&format!("acme:{}", a.id)) {
                    return Err(AcmeError::unauthorized(
                        "this account did not order this certificate",
                    ));
                }
                format!("acme:{}", a.id)
            }
            None => {
                let spki = cert.public_key();
                let raw = match spki.parsed() {
                    Ok(x509_parser::public_key::PublicKey::RSA(r)) => {
                        let mut v: Vec<u8> =
                            r.modulus.iter().copied().skip_while(|b| *b == 0).collect();
                        v.push(b'|');
                        v.extend(r.exponent.iter().copied().skip_while(|b| *b == 0));
                        v
                    }
                    _ => spki.subject_public_key.data.to_vec(),
                };
                if s.jwk.raw()? != raw {
                    return Err(AcmeError::unauthorized(
                        "the JWS key is not the certificate's key",
                    ));
                }
                "acme:certificate-key".to_string()
            }
        };
        let reason = match p.reason.unwrap_or(0) {
            0 => RevocationReason::Unspecified,
            1 => RevocationReason::KeyCompromise,
            3 => RevocationReason::AffiliationChanged,
            4 => RevocationReason::Superseded,
            5 => RevocationReason::CessationOfOperation,
            9 => RevocationReason::PrivilegeWithdrawn,
            r => {
                return Err(AcmeError::new(
                    "badRevocationReason",
                    format!("reason code {r} is not accepted (0, 1, 3, 4, 5, 9)"),
                ))
            }
        };
        match ca
            .store()
            .revoke_as(&serial, reason.as_str(), now(), Some(&by))
            .await?
        {
            RevokeOutcome::Revoked(_) => {
                tracing::info!(serial = %serial, by = %by, "ACME revocation");
                Ok(empty(StatusCode::OK))
            }
            RevokeOutcome::AlreadyRevoked(_) => Err(AcmeError::new(
                "alreadyRevoked",
                "the certificate is already revoked",
            )),
        }
    }
}

impl AcmeError {
    fn with_status(mut self, s: StatusCode) -> AcmeError {
        self.status = s;
        self
    }
}

fn check_contacts(contacts: &[String]) -> Result<(), AcmeError> {
    for c in contacts {
        if !c.starts_with("mailto:") {
            return Err(AcmeError::new(
                "unsupportedContact",
                format!("{c:?}: only mailto: contacts are supported"),
            ));
        }
    }
    Ok(())
}

/// The subject key identifier of the CA's current intermediate (the AKI of what it issues now).
fn intermediate_ski(ca: &Ca) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca.intermediate_pem().as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn method_not_allowed() -> AcmeError {
    AcmeError::malformed("method not allowed").with_status(StatusCode::METHOD_NOT_ALLOWED)
}

fn to_string<T: serde::Serialize>(v: &T) -> Result<String, AcmeError> {
    serde_json::to_string(v).map_err(AcmeError::internal)
}

fn from_str<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, AcmeError> {
    serde_json::from_str(s).map_err(AcmeError::internal)
}

fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn json_resp(status: StatusCode, v: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(v).unwrap_or_default(),
        )))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn set_location(r: &mut Resp, url: &str) {
    if let Ok(v) = url.parse() {
        r.headers_mut().insert("location", v);
    }
}

fn account_resp(base: &str, status: StatusCode, a: &AcmeAccount) -> Resp {
    let contact: Value = serde_json::from_str(&a.contact).unwrap_or(json!([]));
    let mut r = json_resp(
        status,
        &json!({
            "status": a.status,
            "contact": contact,
            "orders": format!("{base}/acct/{}/orders", a.id),
        }),
    );
    set_location(&mut r, &format!("{base}/acct/{}", a.id));
    r
}

fn order_json(base: &str, o: &AcmeObject, b: &OrderBody) -> Value {
    let mut v = json!({
        "status": o.status,
        "expires": rfc3339(b.expires),
        "identifiers": b.identifiers,
        "authorizations": b.authzs.iter().map(|a| format!("{base}/authz/{a}")).collect::<Vec<_>>(),
        "finalize": format!("{base}/order/{}/finalize", o.id),
    });
    if o.status == "valid" {
        v["certificate"] = json!(format!("{base}/cert/{}", o.id));
    }
    if let Some(e) = &b.error {
        v["error"] = e.clone();
    }
    if let Some(r) = &b.replaces {
        v["replaces"] = json!(r);
    }
    v
}

fn challenge_json(base: &str, authz: &str, c: &Challenge) -> Value {
    let mut v = json!({
        "type": c.kind,
        "url": format!("{base}/chall/{authz}/{}", c.kind),
        "token": c.token,
        "status": c.status,
    });
    if let Some(t) = c.validated {
        v["validated"] = json!(rfc3339(t));
    }
    if let Some(e) = &c.error {
        v["error"] = e.clone();
    }
    v
}

fn authz_json(base: &str, a: &AcmeObject, b: &AuthzBody) -> Value {
    let mut v = json!({
        "status": a.status,
        "expires": rfc3339(b.expires),
        "identifier": b.identifier,
        "challenges": b.challenges.iter().map(|c| challenge_json(base, &a.id, c)).collect::<Vec<_>>(),
    });
    if b.wildcard {
        v["wildcard"] = json!(true);
    }
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn policy_suffixes_and_ranges() {
        let p = AcmePolicy {
            dns_suffixes: vec!["example.test".into()],
            ip_ranges: vec![parse_cidr("127.0.0.0/8").unwrap()],
            usage: Usage::Server,
            ttl: Duration::from_secs(3600),
        };
        for (kind, value) in [
            ("dns", "a.example.test"),
            ("dns", "example.test"),
            ("dns", "*.example.test"),
            ("dns", "*.a.example.test"),
            ("ip", "127.1.2.3"),
        ] {
            assert!(p.allows(kind, value).is_ok(), "{kind}:{value}");
        }
        for (kind, value, refusal) in [
            ("dns", "badexample.test", "rejectedIdentifier"),
            ("dns", "*.other.test", "rejectedIdentifier"),
            ("dns", "a.*.example.test", "rejectedIdentifier"),
            ("ip", "10.0.0.1", "rejectedIdentifier"),
            ("email", "a@b", "unsupportedIdentifier"),
        ] {
            let kind_of = p.allows(kind, value).unwrap_err().kind;
            assert_eq!(kind_of, refusal, "{kind}:{value}");
        }
        assert!(parse_cidr("10.0.0.0/33").is_err());
        // Inside the allowed ranges, but never a TLS peer: the CA's SAN rules refuse it.
        let any = AcmePolicy {
            ip_ranges: vec![parse_cidr("0.0.0.0/0").unwrap()],
            ..p
        };
        for value in ["0.0.0.0", "224.0.0.1", "255.255.255.255"] {
            let e = any.allows("ip", value).unwrap_err();
            assert_eq!(e.kind, "rejectedIdentifier", "{value}");
        }
        assert!(any.allows("ip", "10.0.0.1").is_ok());
    }
}
