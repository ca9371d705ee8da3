//! The device side of EST (RFC 7030, docs/est.md): `mutual enroll --est` gets a first
//! certificate with a factory (bootstrap) certificate or a one-time token, `mutual renew --est`
//! re-enrolls with the current certificate and a new key, `--daemon` does it at two-thirds of
//! each lifetime. The server is `ca serve --est` (crates/mutual-est, whose wire functions this
//! uses for the base64 and PKCS#7 framing), or any RFC 7030 server.
//!
//! Trust: the CA's root comes from a file (`--ca`) or is pinned by fingerprint and taken from the
//! `cacerts` answer before anything is sent with a client certificate or token.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hyper::Method;
use mutual_pki::KeyType;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::client::{self, Body, CaUrl};
use crate::files::{self, CertSummary, Staged};
use crate::{EnrollError, Fingerprint};

/// Where the CA's root comes from.
#[derive(Clone, Debug)]
pub enum EstTrust {
    /// A PEM file holding the root.
    File(PathBuf),
    /// The root in `cacerts` whose SHA-256 is this (first contact).
    Pin(Fingerprint),
}

/// How the device authenticates `simpleenroll`.
pub enum EstAuth {
    /// A factory certificate chain and its key (files).
    Bootstrap { cert: PathBuf, key: PathBuf },
    /// A one-time token, sent as the HTTP Basic password.
    Token(String),
}

impl std::fmt::Debug for EstAuth {
    // By hand: the token must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EstAuth::Bootstrap { cert, key } => f
                .debug_struct("Bootstrap")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            EstAuth::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// `mutual enroll --est`.
#[derive(Debug)]
pub struct EstEnrollOptions {
    pub url: CaUrl,
    pub label: Option<String>,
    pub trust: EstTrust,
    pub auth: EstAuth,
    pub key_type: KeyType,
    /// DIR/key.pem, DIR/cert.pem (leaf + CA certificates), DIR/root.pem.
    pub out: PathBuf,
    /// While the CA holds the request for manual approval (202), poll with the same CSR at its
    /// Retry-After for up to this long; zero: report `pending` at once.
    pub wait: Duration,
    /// `serverkeygen` instead of `simpleenroll`: the CA generates the key and sends it back
    /// (it saw the key; docs/est.md). The CSR sent is only a carrier for the request.
    pub server_keygen: bool,
}

/// `mutual renew --est`.
#[derive(Clone, Debug)]
pub struct EstRenewOptions {
    pub url: CaUrl,
    pub label: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The root (PEM) to trust.
    pub ca: PathBuf,
    pub key_type: KeyType,
}

fn path(label: Option<&str>, op: &str) -> String {
    match label {
        Some(l) => format!("/.well-known/est/{l}/{op}"),
        None => format!("/.well-known/est/{op}"),
    }
}

fn bad(detail: impl Into<String>) -> EnrollError {
    EnrollError::BadCertificate {
        detail: detail.into(),
    }
}

/// The certificates of a base64 certs-only answer.
fn certs_of(resp: client::Response) -> Result<Vec<CertificateDer<'static>>, EnrollError> {
    let resp = client::ok(resp)?;
    let compact: Vec<u8> = resp
        .body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| EnrollError::BadResponse {
            status: resp.status,
            detail: format!("the answer is not base64: {e}"),
        })?;
    let certs = mutual_est::wire::parse_certs_only(&der).map_err(|e| EnrollError::BadResponse {
        status: resp.status,
        detail: e,
    })?;
    Ok(certs.into_iter().map(CertificateDer::from).collect())
}

fn sha256(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

fn is_self_issued(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
        .unwrap_or(false)
}

/// `cacerts` over `tls`: the CA's certificates.
async fn cacerts(
    url: &CaUrl,
    tls: Arc<rustls::ClientConfig>,
    label: Option<&str>,
) -> Result<Vec<CertificateDer<'static>>, EnrollError> {
    let resp = client::request_with(
        url,
        tls,
        Method::GET,
        &path(label, "cacerts"),
        None,
        "application/pkcs7-mime",
        None,
    )
    .await?;
    certs_of(resp)
}

/// A new key and the base64 DER of a CSR for it (no names: the CA decides them).
fn key_and_csr(kt: KeyType) -> Result<(PrivateKeyDer<'static>, String, String), EnrollError> {
    let (kp, der, pem) = crate::enroll::new_key(kt)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&kp)
        .map_err(|e| bad(format!("cannot build the CSR: {e}")))?;
    Ok((der, pem, mutual_est::wire::encode_base64_body(csr.der())))
}

/// Sends a CSR to `op` and checks the answer: the leaf is for `key` and chains to `roots`
/// through the CA's `ca_certs`. Returns the chain to write (leaf, then the CA's certificates
/// other than the root).
#[allow(clippy::too_many_arguments)]
async fn post_csr(
    url: &CaUrl,
    tls: Arc<rustls::ClientConfig>,
    label: Option<&str>,
    op: &str,
    csr_b64: String,
    authorization: Option<String>,
    key: &PrivateKeyDer<'static>,
    roots: &[CertificateDer<'static>],
    ca_certs: &[CertificateDer<'static>],
) -> Result<Posted, EnrollError> {
    let keygen = op == "serverkeygen";
    let resp = client::request_with(
        url,
        tls,
        Method::POST,
        &path(label, op),
        Some(Body {
            content_type: "application/pkcs10",
            data: csr_b64.into_bytes(),
        }),
        if keygen {
            "multipart/mixed"
        } else {
            "application/pkcs7-mime"
        },
        authorization,
    )
    .await?;
    if resp.status == 202 {
        return Err(EnrollError::Refused {
            status: 202,
            reason: "pending".into(),
            detail: "the CA holds the request for manual approval; ask again later".into(),
            retry_after: resp.retry_after,
        });
    }
    let (issued, new_key) = if keygen {
        let (issued, k) = keygen_of(resp)?;
        (issued, Some(k))
    } else {
        (certs_of(resp)?, None)
    };
    let key = match &new_key {
        Some((der, _)) => der,
        None => key,
    };
    let Some(leaf) = issued.first() else {
        return Err(bad("the answer holds no certificate"));
    };
    let mut chain = vec![leaf.clone()];
    chain.extend(
        ca_certs
            .iter()
            .filter(|c| !is_self_issued(c.as_ref()))
            .cloned(),
    );
    let pem = files::chain_pem(&chain)?;
    let (chain, summary) = files::check_issued(&pem, key, roots)?;
    Ok(Posted {
        chain,
        summary,
        new_key,
    })
}

/// What an enrollment answer held.
struct Posted {
    chain: Vec<CertificateDer<'static>>,
    summary: CertSummary,
    /// `serverkeygen`: the key the CA generated (DER for the check, PEM for the file).
    new_key: Option<(PrivateKeyDer<'static>, String)>,
}

/// The certificates and the private key of a `serverkeygen` answer (multipart/mixed).
#[allow(clippy::type_complexity)]
fn keygen_of(
    resp: client::Response,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        (PrivateKeyDer<'static>, String),
    ),
    EnrollError,
> {
    let resp = client::ok(resp)?;
    let bad_resp = |detail: String| EnrollError::BadResponse {
        status: resp.status,
        detail,
    };
    let ct = resp.content_type.clone().unwrap_or_default();
    let (key, p7) = mutual_est::wire::parse_keygen_body(&ct, &resp.body).map_err(bad_resp)?;
    let certs = mutual_est::wire::parse_certs_only(&p7).map_err(bad_resp)?;
    let pem = mutual_pki::pem_encode("PRIVATE KEY", &key)?;
    let der = PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(key));
    Ok((
        certs.into_iter().map(CertificateDer::from).collect(),
        (der, pem),
    ))
}

/// What `enroll --est` wrote.
#[derive(Clone, Debug)]
pub struct EstEnrolled {
    pub cert: CertSummary,
    pub root_sha256: String,
}

/// Enrolls over EST: trust the root, `cacerts`, key + CSR, `simpleenroll`, write DIR/key.pem,
/// DIR/cert.pem and DIR/root.pem.
pub async fn est_enroll(o: &EstEnrollOptions) -> Result<EstEnrolled, EnrollError> {
    let label = o.label.as_deref();
    let roots = match &o.trust {
        EstTrust::File(p) => files::load_roots(p)?,
        EstTrust::Pin(pin) => {
            // First contact: any server certificate (its handshake signature checked), and
            // nothing secret sent; the root must be the pinned one.
            let certs = cacerts(&o.url, client::first_contact_config()?, label).await?;
            let want = pin.to_string().replace(':', "").to_ascii_lowercase();
            let root = certs
                .iter()
                .find(|c| sha256(c.as_ref()) == want)
                .cloned()
                .ok_or_else(|| EnrollError::RootMismatch {
                    url: o.url.to_string(),
                    expected: pin.to_string(),
                    presented: certs.iter().map(|c| sha256(c.as_ref())).collect(),
                })?;
            vec![root]
        }
    };
    let ca_certs = cacerts(&o.url, client::pinned_config(&roots, None)?, label).await?;
    let (client_auth, authorization) = match &o.auth {
        EstAuth::Bootstrap { cert, key } => {
            let chain = mutual_tls::load::load_certs(cert)?;
            let key = mutual_tls::load::load_key(key)?;
            (Some((chain, key)), None)
        }
        EstAuth::Token(t) => {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("device:{t}"));
            (None, Some(format!("Basic {basic}")))
        }
    };
    let tls = client::pinned_config(&roots, client_auth)?;
    let (key_der, key_pem, csr) = key_and_csr(o.key_type)?;
    let deadline = tokio::time::Instant::now() + o.wait;
    let op = if o.server_keygen {
        "serverkeygen"
    } else {
        "simpleenroll"
    };
    let posted = loop {
        let r = post_csr(
            &o.url,
            tls.clone(),
            label,
            op,
            csr.clone(),
            authorization.clone(),
            &key_der,
            &roots,
            &ca_certs,
        )
        .await;
        match r {
            Err(EnrollError::Refused {
                status: 202,
                retry_after,
                ..
            }) if tokio::time::Instant::now() < deadline => {
                // The same CSR again: that is how the CA finds the held request.
                let wait = Duration::from_secs(retry_after.unwrap_or(60).clamp(1, 3600));
                tracing::info!(
                    retry_after_s = wait.as_secs(),
                    "waiting for the CA's approval"
                );
                tokio::time::sleep(wait.min(deadline - tokio::time::Instant::now())).await;
            }
            other => break other?,
        }
    };
    let Posted {
        chain,
        summary,
        new_key,
    } = posted;
    let key_pem = new_key.map_or(key_pem, |(_, pem)| pem);
    files::ensure_dir(&o.out)?;
    let mut staged = Staged::default();
    staged.key(&o.out.join("key.pem"), &key_pem)?;
    staged.certs(&o.out.join("cert.pem"), &chain)?;
    staged.certs(&o.out.join("root.pem"), &roots)?;
    staged.commit()?;
    Ok(EstEnrolled {
        cert: summary,
        root_sha256: roots
            .first()
            .map(|r| sha256(r.as_ref()))
            .unwrap_or_default(),
    })
}

/// Re-enrolls over EST with the current certificate and a new key; replaces key and chain
/// atomically. An expired certificate is still sent: the CA may accept it within its
/// `--renew-grace`.
pub async fn est_renew(o: &EstRenewOptions) -> Result<crate::Renewed, EnrollError> {
    let cur = files::load_current(&o.cert, &o.key)?;
    let roots = files::load_roots(&o.ca)?;
    let label = o.label.as_deref();
    let ca_certs = cacerts(&o.url, client::pinned_config(&roots, None)?, label).await?;
    let tls = client::pinned_config(&roots, Some((cur.chain.clone(), cur.key.clone_key())))?;
    let (key_der, key_pem, csr) = key_and_csr(o.key_type)?;
    let Posted { chain, summary, .. } = post_csr(
        &o.url,
        tls,
        label,
        "simplereenroll",
        csr,
        None,
        &key_der,
        &roots,
        &ca_certs,
    )
    .await?;
    let mut staged = Staged::default();
    staged.key(&o.key, &key_pem)?;
    staged.certs(&o.cert, &chain)?;
    staged.commit()?;
    Ok(crate::Renewed {
        old: cur.summary,
        new: summary,
        rekeyed: true,
        ca_url: o.url.as_str().to_string(),
    })
}

/// Re-enrolls at two-thirds of each certificate's lifetime, retrying every `retry` (never
/// later than the expiry) while the CA cannot be reached; returns the error that makes
/// re-enrollment impossible (revoked, expired beyond the grace, not from this CA). Each
/// re-enrollment is told to `observer` (the `--exec` hook), as the native renewer does.
pub async fn est_renew_daemon(
    o: &EstRenewOptions,
    retry: Duration,
    observer: Option<&dyn crate::RenewalObserver>,
) -> EnrollError {
    loop {
        let cur = match files::load_current(&o.cert, &o.key) {
            Ok(c) => c.summary,
            Err(e) => return e,
        };
        // Two-thirds of the life from when we got it (the file's mtime), not from the
        // backdated notBefore: the same schedule as `renew --daemon` (schedule.rs).
        let issued = std::fs::metadata(&o.cert)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        let r: f64 = rand::random::<f64>() * 2.0 - 1.0;
        let at = crate::Schedule::default().renew_at(&cur, issued, r);
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
        if at > now {
            tokio::time::sleep(Duration::from_secs_f64(at - now)).await;
        }
        match est_renew(o).await {
            Ok(r) => {
                tracing::info!(
                    old_serial = %r.old.serial,
                    serial = %r.new.serial,
                    not_after = %mutual_tls::verify::rfc3339(r.new.not_after),
                    "re-enrolled over EST"
                );
                if let Some(obs) = observer {
                    obs.renewed_with(&r);
                }
            }
            Err(e) if e.is_fatal_for_renewal() => return e,
            Err(e) => {
                tracing::warn!(error = %e, "EST re-enrollment failed; retrying");
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// The files `enroll --est --out DIR` writes.
pub fn out_files(dir: &Path) -> [PathBuf; 3] {
    [
        dir.join("key.pem"),
        dir.join("cert.pem"),
        dir.join("root.pem"),
    ]
}
