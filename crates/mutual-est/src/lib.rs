//! EST (RFC 7030) for devices, mounted by `mutual ca serve --est` at `/.well-known/est/` and
//! `/.well-known/est/LABEL/` (docs/est.md): `cacerts`, `csrattrs`, `simpleenroll`,
//! `simplereenroll`, `serverkeygen` (the CA generates the key: [`KeySource::Generate`], answered
//! once, kept nowhere).
//!
//! Why its own crate: EST authenticates its own way (a factory certificate from a manufacturer
//! CA trusted for enrollment only, or a one-time token as HTTP Basic password, or the device's
//! current certificate) and speaks its own formats (base64 PKCS#10 in, PKCS#7 certs-only out),
//! and then asks the CA like every other front door: [`mutual_pki::ca::Ca::issue`] with
//! [`KeySource::Csr`] and `requested_by = est:<who>`. The wire formats are pure functions in
//! [`wire`] and [`identity`] so that they can be fuzzed apart from the network.
//!
//! State: none in memory. Spent tokens and the inventory (which says whether a device's
//! certificate is revoked) are in the store, so any replica answers any device.
#![forbid(unsafe_code)]

pub mod error;
pub mod identity;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes};
use hyper::{Method, Request, Response, StatusCode};
use mutual_pki::ca::{Ca, Csr, IssueOptions, IssueRequest, Issued, KeySource, Renewal};
use mutual_pki::{San, Usage};
use mutual_store::Inventory;
use rustls_pki_types::{CertificateDer, UnixTime};
use zeroize::Zeroizing;

pub use error::EstError;
pub use identity::{DeviceFacts, IdentityTemplate};
use wire::Op;

/// Request bodies (a base64 CSR) larger than this are refused.
pub const MAX_BODY: usize = 64 * 1024;

/// What one label (or the default, unlabelled path) issues.
#[derive(Clone, Debug)]
pub struct EstProfile {
    /// The name a factory certificate maps to; `None`: this label takes no factory
    /// certificates (tokens and re-enrollment only).
    pub identity: Option<IdentityTemplate>,
    pub ttl: Duration,
    pub usage: Usage,
}

/// `ca serve --est*` flags.
#[derive(Clone, Debug)]
pub struct EstConfig {
    /// `--est-bootstrap-ca`: manufacturer roots whose certificates may enroll (and do nothing
    /// else: the native API refuses them as `unknown_ca`, they are not in the inventory).
    pub bootstrap_roots: Vec<CertificateDer<'static>>,
    /// The unlabelled path's profile.
    pub default: EstProfile,
    /// `/.well-known/est/LABEL/...` profiles (`--est-label LABEL=TEMPLATE`).
    pub labels: BTreeMap<String, EstProfile>,
    /// `--renew-grace`: how long after expiry `simplereenroll` still accepts a certificate.
    pub renew_grace: Duration,
    /// `--est-approval manual`: hold each request for `mutual cert approve|reject`; the device
    /// gets `202` with this many seconds in `Retry-After` and polls with the same CSR.
    /// `None`: issue at once.
    pub manual_approval: Option<u64>,
    /// `--est-deny-serial FILE`: factory certificates whose subject serialNumber is listed (one
    /// per line, `#` comments) enroll no more (`device_denied`); re-read when the file changes.
    pub deny_serials: Option<std::path::PathBuf>,
}

/// What a token grants (the online CA verifies the token; EST only reads the grant).
#[derive(Clone, Debug)]
pub struct TokenGrant {
    /// The token's id: spent in the issuance transaction.
    pub jti: String,
    pub sans: Vec<San>,
    pub usage: Usage,
    pub ttl: Duration,
}

/// Verifies a one-time token (signature, audience, expiry) without spending it; the online
/// CA implements it over its provisioner key, so EST never sees the key.
pub trait TokenCheck: Send + Sync {
    fn check(&self, token: &str, now: i64) -> Result<TokenGrant, EstError>;
}

/// The client of one request, as the TLS layer saw it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Client<'a> {
    /// The chain the client presented (leaf first), already path-validated by the listener
    /// against the CA's root or a bootstrap root; empty: no client certificate.
    pub chain: &'a [CertificateDer<'static>],
}

/// Called after each issuance attempt with `ok` or the refusal label (the online CA counts it
/// in `mutual_ca_issued_total{method="est"}`).
pub type IssueHook = Box<dyn Fn(&'static str) + Send + Sync>;

/// The EST front door.
pub struct Est {
    cfg: EstConfig,
    /// The deny list as last read: (file modification time, serials).
    denied: std::sync::Mutex<Option<(std::time::SystemTime, std::collections::HashSet<String>)>>,
    /// Path validation against the manufacturer roots only.
    bootstrap: Option<mutual_tls::Trust>,
    on_issue: std::sync::OnceLock<IssueHook>,
}

type Resp = Response<Full<Bytes>>;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The outcome of one request for the CA's log line.
pub struct Outcome {
    pub resp: Resp,
    /// `ok` or the refusal label.
    pub reason: &'static str,
    pub serial: Option<String>,
    pub detail: Option<String>,
    /// Whether the request asked for a certificate (counted as an issuance).
    pub issuance: bool,
}

impl Est {
    pub fn new(cfg: EstConfig) -> Result<Arc<Est>, String> {
        let bootstrap = if cfg.bootstrap_roots.is_empty() {
            None
        } else {
            Some(
                mutual_tls::Trust::new(
                    cfg.bootstrap_roots.clone(),
                    Vec::new(),
                    mutual_tls::RevocationPolicy::default(),
                )
                .map_err(|e| format!("--est-bootstrap-ca: {e}"))?,
            )
        };
        if let Some(p) = &cfg.deny_serials {
            read_deny_list(p).map_err(|e| format!("--est-deny-serial: {e}"))?;
        }
        Ok(Arc::new(Est {
            cfg,
            denied: std::sync::Mutex::new(None),
            bootstrap,
            on_issue: std::sync::OnceLock::new(),
        }))
    }

    /// The manufacturer roots, which the listener must also accept client certificates from.
    pub fn bootstrap_roots(&self) -> &[CertificateDer<'static>] {
        &self.cfg.bootstrap_roots
    }

    /// Sets what is called after each issuance attempt (once).
    pub fn on_issue(&self, hook: IssueHook) {
        let _ = self.on_issue.set(hook);
    }

    fn profile(&self, label: Option<&str>) -> Result<&EstProfile, EstError> {
        match label {
            None => Ok(&self.cfg.default),
            Some(l) => self.cfg.labels.get(l).ok_or_else(|| {
                EstError::new("not_found", format!("no EST label {l:?} on this CA"))
            }),
        }
    }

    /// `Err(device_denied)` when the factory certificate's serial is on the deny list. The file
    /// is read again when its modification time changes; an unreadable file refuses every
    /// factory enrollment (fail closed) until it is fixed.
    fn check_denied(&self, facts: &DeviceFacts) -> Result<(), EstError> {
        let Some(path) = &self.cfg.deny_serials else {
            return Ok(());
        };
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| {
                EstError::internal(format!("--est-deny-serial {}: {e}", path.display()))
            })?;
        let mut cache = self
            .denied
            .lock()
            .map_err(|_| EstError::internal("deny list lock poisoned"))?;
        if cache.as_ref().is_none_or(|(t, _)| *t != mtime) {
            let set = read_deny_list(path).map_err(EstError::internal)?;
            *cache = Some((mtime, set));
        }
        let listed = match (&facts.serial, cache.as_ref()) {
            (Some(s), Some((_, set))) => set.contains(s),
            _ => false,
        };
        if listed {
            return Err(EstError::new(
                "device_denied",
                format!(
                    "factory certificate serial {} is on this CA's deny list (--est-deny-serial)",
                    facts.serial.as_deref().unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    /// Serves one request under `/.well-known/est/`.
    pub async fn handle<B>(
        &self,
        ca: &Ca,
        client: Client<'_>,
        tokens: &dyn TokenCheck,
        req: Request<B>,
    ) -> Outcome
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().to_string();
        let Some((label, op)) = wire::parse_path(&path) else {
            return refused(EstError::new(
                "not_found",
                format!("no such EST endpoint: {path}"),
            ));
        };
        let profile = match self.profile(label) {
            Ok(p) => p,
            Err(e) => return refused(e),
        };
        let method = req.method().clone();
        let result = match (op, &method) {
            (Op::CaCerts, &Method::GET) => cacerts(ca),
            (Op::CsrAttrs, &Method::GET) => csrattrs(),
            (Op::SimpleEnroll, &Method::POST) => {
                let r = self
                    .enroll(ca, client, tokens, label, profile, req, false)
                    .await;
                return self.issued(r);
            }
            (Op::SimpleReenroll, &Method::POST) => {
                let r = self.reenroll(ca, client, label, profile, req).await;
                return self.issued(r);
            }
            (Op::ServerKeygen, &Method::POST) => {
                let r = self
                    .enroll(ca, client, tokens, label, profile, req, true)
                    .await;
                return self.issued(r);
            }
            _ => Err(EstError::new(
                "method_not_allowed",
                format!("{} does not take {method}", op.as_str()),
            )),
        };
        match result {
            Ok(resp) => Outcome {
                resp,
                reason: "ok",
                serial: None,
                detail: None,
                issuance: false,
            },
            Err(e) => refused(e),
        }
    }

    fn issued(&self, r: Result<Delivered, EstError>) -> Outcome {
        let mut out = match r {
            Ok(d) => {
                let (serial, der, key) = match d {
                    Delivered::New(i) => (i.serial_hex, i.leaf_der, i.key_der.map(Zeroizing::new)),
                    Delivered::Again { serial, der } => (serial, der, None),
                };
                let resp = match key {
                    Some(key) => keygen_response(&key, &der),
                    None => certs_response(std::slice::from_ref(&der)),
                };
                match resp {
                    Ok(resp) => Outcome {
                        resp,
                        reason: "ok",
                        serial: Some(serial),
                        detail: None,
                        issuance: true,
                    },
                    Err(e) => refused(e),
                }
            }
            Err(e) => refused(e),
        };
        out.issuance = true;
        if let Some(h) = self.on_issue.get() {
            h(out.reason);
        }
        out
    }

    /// `simpleenroll`: a factory certificate (mapped to one name) or a token (its names).
    /// `serverkeygen` (`keygen`): the same, but the CA generates the key (RFC 7030 §4.4: the
    /// CSR's public key and signature are ignored, only its names count).
    #[allow(clippy::too_many_arguments)]
    async fn enroll<B>(
        &self,
        ca: &Ca,
        client: Client<'_>,
        tokens: &dyn TokenCheck,
        label: Option<&str>,
        profile: &EstProfile,
        req: Request<B>,
        keygen: bool,
    ) -> Result<Delivered, EstError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let auth = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|h| wire::basic_password(h.as_bytes()));
        // Who is asking, decided before the body is read: an anonymous peer gets no work done.
        let who = if let Some(leaf) = client.chain.first() {
            match self.bootstrap_facts(leaf, &client.chain[1..])? {
                Some(facts) => {
                    self.check_denied(&facts)?;
                    Who::Factory(facts)
                }
                None if auth.is_some() => Who::Token(self.grant(ca, tokens, auth).await?),
                None => {
                    return Err(EstError::new(
                        "unknown_ca",
                        "the client certificate is not from a manufacturer this CA trusts for \
                         enrollment (--est-bootstrap-ca); an enrolled device uses simplereenroll",
                    ))
                }
            }
        } else if auth.is_some() {
            Who::Token(self.grant(ca, tokens, auth).await?)
        } else {
            return Err(EstError::new(
                "no_client_cert",
                "simpleenroll needs a factory certificate (TLS client certificate) or a \
                 one-time token as the HTTP Basic password",
            ));
        };
        let (csr, id) = read_csr(req).await?;
        let requested = csr_names(&csr)?;
        let (key, id) = if keygen {
            // A held serverkeygen request is not the simpleenroll of the same CSR.
            let id = sha256_hex(format!("serverkeygen:{id}").as_bytes())[..16].to_string();
            (KeySource::Generate(ca.config().defaults.key_type), id)
        } else {
            (KeySource::Csr(csr), id)
        };
        match who {
            Who::Factory(facts) => {
                let Some(template) = &profile.identity else {
                    return Err(EstError::new(
                        "forbidden",
                        "this EST label takes no factory certificates (no --est-identity)",
                    ));
                };
                let name = template.render(&facts)?;
                if let Some(extra) = requested.iter().find(|r| **r != name) {
                    return Err(EstError::new(
                        "name_not_allowed",
                        format!("the CSR asks for {extra}; this device may have {name} only"),
                    ));
                }
                let who = facts
                    .serial
                    .clone()
                    .or(facts.cn.clone())
                    .unwrap_or_else(|| "-".into());
                let o = IssueOptions {
                    name: short_name(&name),
                    sans: vec![name],
                    usage: profile.usage,
                    ttl: profile.ttl,
                    requested_by: Some(format!("est:bootstrap:{who}")),
                    ..Default::default()
                };
                self.deliver(ca, label, &id, o, key, None).await
            }
            Who::Token(grant) => {
                if let Some(extra) = requested.iter().find(|r| !grant.sans.contains(r)) {
                    return Err(EstError::new(
                        "name_not_allowed",
                        format!("the CSR asks for {extra}, which the token does not give"),
                    ));
                }
                let sans = grant.sans.clone();
                let o = IssueOptions {
                    name: sans
                        .first()
                        .map(short_name)
                        .unwrap_or_else(|| "device".into()),
                    sans,
                    usage: grant.usage,
                    ttl: grant.ttl,
                    requested_by: Some(format!("est:token:{}", grant.jti)),
                    ..Default::default()
                };
                self.deliver(ca, label, &id, o, key, Some(grant.jti)).await
            }
        }
    }

    /// The grant of the token in the Basic password: verified, not yet spent (the issuance
    /// transaction spends it; this look-up is the cheap early refusal of a replay).
    async fn grant(
        &self,
        ca: &Ca,
        tokens: &dyn TokenCheck,
        auth: Option<String>,
    ) -> Result<TokenGrant, EstError> {
        let token = auth.unwrap_or_default();
        let grant = tokens.check(token.trim(), now())?;
        match ca.store().token_used(&grant.jti).await {
            Ok(true) => Err(EstError::new("token_used", "this token was already used")),
            Ok(false) => Ok(grant),
            Err(e) => Err(EstError::store(&e)),
        }
    }

    /// `Some(facts)`: `leaf` chains to a manufacturer root (valid now, clientAuth if it has an
    /// EKU); `None`: it does not (it may be one of ours). A factory certificate that chains
    /// but fails (expired, ...) is refused with the handshake vocabulary's word.
    fn bootstrap_facts(
        &self,
        leaf: &CertificateDer<'static>,
        intermediates: &[CertificateDer<'static>],
    ) -> Result<Option<DeviceFacts>, EstError> {
        let Some(trust) = &self.bootstrap else {
            return Ok(None);
        };
        match trust.check(
            leaf,
            intermediates,
            UnixTime::now(),
            &mutual_tls::Purpose::Client,
            None,
            None,
        ) {
            Ok(_) => DeviceFacts::of(leaf).map(Some),
            Err(e) => {
                let reason = mutual_tls::classify_rustls_error(&e);
                if reason == mutual_tls::Reason::UnknownCa {
                    return Ok(None);
                }
                Err(EstError::new(
                    reason.label(),
                    format!("the factory certificate is not acceptable: {e}"),
                ))
            }
        }
    }

    /// `simplereenroll`: the device's current certificate (ours, in the inventory, not revoked,
    /// not expired beyond `--renew-grace`) over mTLS; same names, new key from the CSR.
    async fn reenroll<B>(
        &self,
        ca: &Ca,
        client: Client<'_>,
        label: Option<&str>,
        profile: &EstProfile,
        req: Request<B>,
    ) -> Result<Delivered, EstError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(leaf) = client.chain.first() else {
            return Err(EstError::new(
                "no_client_cert",
                "simplereenroll needs the device's current certificate (mTLS)",
            ));
        };
        let (serial, sha256, not_after) = cert_facts(leaf)?;
        let t = now();
        let record = match ca.store().get(&serial, t).await {
            Ok(Some(r)) if r.sha256 == sha256 => r,
            Ok(_) => {
                return Err(EstError::new(
                    "unknown_ca",
                    format!(
                        "certificate {serial} is not in this CA's inventory; enroll with \
                         simpleenroll"
                    ),
                ))
            }
            Err(e) => return Err(EstError::store(&e)),
        };
        let renewal = mutual_pki::ca::renewable(&record, not_after, t, self.cfg.renew_grace)
            .map_err(|e| EstError::new(e.reason(), e.to_string()))?;
        let (csr, id) = read_csr(req).await?;
        let requested = csr_names(&csr)?;
        let sans =
            San::recorded(&record.sans).map_err(|why| EstError::new("name_not_allowed", why))?;
        if let Some(extra) = requested.iter().find(|r| !sans.contains(r)) {
            return Err(EstError::new(
                "name_not_allowed",
                format!("the CSR asks for {extra}, which certificate {serial} does not carry"),
            ));
        }
        let usage = match record.usage.as_str() {
            "server" => Usage::Server,
            "both" => Usage::Both,
            _ => Usage::Client,
        };
        let by = match renewal {
            Renewal::Valid => format!("est:reenroll:{serial}"),
            Renewal::InGrace { ago } => {
                tracing::info!(serial = %serial, expired_s_ago = ago,
                    "EST re-enrollment of an expired certificate within --renew-grace");
                format!("est:reenroll-grace:{serial}")
            }
        };
        let o = IssueOptions {
            name: record.name.clone(),
            sans,
            usage,
            ttl: profile.ttl,
            requested_by: Some(by),
            ..Default::default()
        };
        self.deliver(ca, label, &id, o, KeySource::Csr(csr), None)
            .await
    }

    /// Issues now, or with manual approval: holds the request (202 + Retry-After) until an
    /// operator approves it, then issues it when the device polls, and answers a later poll
    /// with the same certificate.
    async fn deliver(
        &self,
        ca: &Ca,
        label: Option<&str>,
        id: &str,
        o: IssueOptions,
        key: KeySource,
        token: Option<String>,
    ) -> Result<Delivered, EstError> {
        use mutual_store::{EstMove, EstRequest, EstStore};
        let Some(retry_after) = self.cfg.manual_approval else {
            return issue(ca, o, key, token).await.map(Delivered::New);
        };
        let keygen = matches!(key, KeySource::Generate(_));
        let by = o.requested_by.clone().unwrap_or_default();
        let names: Vec<String> = o.sans.iter().map(ToString::to_string).collect();
        let r = EstRequest {
            id: id.to_string(),
            label: label.unwrap_or_default().to_string(),
            requested_by: by.clone(),
            names: serde_json::to_string(&names).unwrap_or_default(),
            status: "pending".into(),
            serial: None,
            certificate: None,
            created_at: now(),
            decided_at: None,
            decided_by: None,
        };
        let stored = ca
            .store()
            .est_request_put(&r)
            .await
            .map_err(|e| EstError::store(&e))?;
        if stored.requested_by != by || stored.label != r.label {
            return Err(EstError::new(
                "forbidden",
                format!("request {id} was made by someone else"),
            ));
        }
        match stored.status.as_str() {
            "pending" => Err(EstError {
                retry_after: Some(retry_after),
                ..EstError::new(
                    "pending",
                    format!("request {id} waits for approval (mutual cert approve {id}); send the same CSR again after Retry-After"),
                )
            }),
            "rejected" => Err(EstError::new(
                "rejected",
                format!(
                    "request {id} was rejected by {}",
                    stored.decided_by.as_deref().unwrap_or("the operator")
                ),
            )),
            "issued" if keygen => Err(EstError::new(
                "key_not_kept",
                format!(
                    "request {id} was answered already with a key the CA generated and did not \
                     keep; send a new request (a CSR for another key)"
                ),
            )),
            "issued" => {
                let pem = stored.certificate.unwrap_or_default();
                let der = rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
                    .next()
                    .and_then(Result::ok)
                    .map(|c: CertificateDer<'static>| c.to_vec())
                    .ok_or_else(|| EstError::internal(format!("request {id}: no stored certificate")))?;
                Ok(Delivered::Again {
                    serial: stored.serial.unwrap_or_default(),
                    der,
                })
            }
            _ => {
                // Approved: issue now, then record it on the request (one poll wins).
                let issued = issue(ca, o, key, token).await?;
                let pem = mutual_pki::pem_encode("CERTIFICATE", &issued.leaf_der)
                    .map_err(EstError::internal)?;
                ca.store()
                    .est_request_move(&EstMove::issued(id, &issued.serial_hex, &pem))
                    .await
                    .map_err(|e| EstError::store(&e))?;
                Ok(Delivered::New(issued))
            }
        }
    }
}

/// The serials of a deny-list file: one per line, blank lines and `#` comments skipped.
fn read_deny_list(path: &std::path::Path) -> Result<std::collections::HashSet<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// What an enrollment hands back: a new certificate, or (a repeated poll after manual
/// approval) the one issued for this request before.
enum Delivered {
    New(Issued),
    Again { serial: String, der: Vec<u8> },
}

enum Who {
    Factory(DeviceFacts),
    Token(TokenGrant),
}

fn refused(e: EstError) -> Outcome {
    Outcome {
        reason: e.reason,
        detail: Some(e.detail.clone()),
        resp: e.into_response(),
        serial: None,
        issuance: false,
    }
}

async fn issue(
    ca: &Ca,
    profile: IssueOptions,
    key: KeySource,
    token: Option<String>,
) -> Result<Issued, EstError> {
    let mut profile = profile;
    // Never past the intermediate (the CA refuses that; a device asks for no lifetime).
    profile.ttl = ca.ttl_within_intermediate(profile.ttl);
    ca.issue(IssueRequest {
        profile,
        key,
        token,
        output: None,
    })
    .await
    .map_err(EstError::from_pki)
}

/// The CN of a device certificate: the name's last path segment (a CN is at most 64 chars).
fn short_name(san: &San) -> String {
    let v = match san {
        San::Uri(u) => u
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or(u)
            .to_string(),
        other => other.value(),
    };
    v.chars().take(64).collect()
}

fn csr_names(csr: &Csr) -> Result<Vec<San>, EstError> {
    match csr.sans() {
        Ok(s) => Ok(s.to_vec()),
        Err(e @ mutual_pki::PkiError::InvalidSan { .. }) => {
            Err(EstError::new("name_not_allowed", e.to_string()))
        }
        Err(e) => Err(EstError::from_pki(e)),
    }
}

/// Serial (lowercase hex), SHA-256 and notAfter of a certificate.
fn cert_facts(der: &[u8]) -> Result<(String, String, i64), EstError> {
    let (_, c) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| EstError::new("malformed", "the client certificate does not parse"))?;
    let serial = mutual_pki::serial_hex(c.raw_serial());
    let sha = sha256_hex(der);
    Ok((serial, sha, c.validity().not_after.timestamp()))
}

/// Reads a `application/pkcs10` body (base64 DER, at most [`MAX_BODY`]) into a CSR.
async fn read_csr<B>(req: Request<B>) -> Result<(Csr, String), EstError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let ct = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if ct.as_deref() != Some("application/pkcs10") {
        return Err(EstError::new(
            "unsupported_media_type",
            "send the CSR with Content-Type: application/pkcs10 (base64 DER)",
        ));
    }
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            EstError::new(
                "body_too_large",
                format!("request bodies are limited to {MAX_BODY} bytes"),
            )
        })?
        .to_bytes();
    let csr = wire::parse_enroll_body(&body)?;
    // The id a held request is found by when the device polls with the same CSR.
    let der = wire::decode_base64_body(&body)?;
    let id = sha256_hex(&der)[..16].to_string();
    Ok((csr, id))
}

fn sha256_hex(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

fn base64_response(status: StatusCode, content_type: &str, der: &[u8]) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-transfer-encoding", "base64")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(wire::encode_base64_body(der))))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

const CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";

/// The `multipart/mixed` boundary of `serverkeygen` answers (never inside base64 text).
pub const KEYGEN_BOUNDARY: &str = "mutual-est-part";

/// `serverkeygen` (RFC 7030 §4.4.2): the PKCS#8 private key, then the certs-only PKCS#7, each
/// base64. Not cached anywhere: the key exists only in this answer.
fn keygen_response(key_pkcs8: &[u8], leaf: &[u8]) -> Result<Resp, EstError> {
    let p7 = wire::certs_only(&[leaf.to_vec()]).map_err(EstError::internal)?;
    let body = Zeroizing::new(wire::keygen_body(KEYGEN_BOUNDARY, key_pkcs8, &p7));
    Response::builder()
        .status(StatusCode::OK)
        .header(
            "content-type",
            format!("multipart/mixed; boundary={KEYGEN_BOUNDARY}"),
        )
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .map_err(EstError::internal)
}

fn certs_response(certs: &[Vec<u8>]) -> Result<Resp, EstError> {
    let p7 = wire::certs_only(certs).map_err(EstError::internal)?;
    Ok(base64_response(StatusCode::OK, CERTS_ONLY, &p7))
}

/// `cacerts`: the root and the issuing intermediate, so a device can build and pin the chain.
fn cacerts(ca: &Ca) -> Result<Resp, EstError> {
    let mut certs = Vec::new();
    for pem in [ca.root_pem(), &ca.intermediate_pem()] {
        for c in rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
            let c: CertificateDer<'static> = c.map_err(EstError::internal)?;
            certs.push(c.to_vec());
        }
    }
    certs_response(&certs)
}

fn csrattrs() -> Result<Resp, EstError> {
    let der = wire::csr_attrs().map_err(EstError::internal)?;
    Ok(base64_response(
        StatusCode::OK,
        "application/csrattrs",
        &der,
    ))
}

/// Runs every request parser on `input` (for the fuzzer): path, Basic credentials, base64
/// framing + PKCS#10, PKCS#7 and CSR attributes, the identity template.
#[doc(hidden)]
pub fn parse_for_fuzzing(input: &[u8]) {
    if let Ok(s) = std::str::from_utf8(input) {
        let _ = wire::parse_path(s);
        if let Ok(t) = IdentityTemplate::parse(s) {
            let _ = t.render(&DeviceFacts {
                serial: Some(s.into()),
                cn: None,
            });
        }
    }
    let _ = wire::basic_password(input);
    if let Ok(csr) = wire::parse_enroll_body(input) {
        let _ = csr.sans();
        let _ = csr.check();
    }
    let _ = mutual_pki::ca::Csr::parse(input).map(|c| c.sans().map(<[San]>::len));
    let _ = wire::parse_certs_only(input);
    let _ = wire::parse_csr_attrs(input);
    let _ = wire::parse_keygen_body("multipart/mixed; boundary=mutual-est-part", input);
    let _ = DeviceFacts::of(input);
}
