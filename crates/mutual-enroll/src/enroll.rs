//! First enrollment, as step-ca's `bootstrap --fingerprint` does it: fetch the CA's roots over a
//! connection that trusts nothing yet, keep the root whose SHA-256 matches the pin (or stop, before
//! the token has been sent anywhere), then send the CSR and the token over a second connection
//! that trusts only that root and checks the CA's name. The key is generated here and never
//! leaves the machine.

use std::path::{Path, PathBuf};

use base64::Engine;
use hyper::Method;
use mutual_pki::KeyType;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::client::{self, CaUrl};
use crate::endpoints::CaUrls;
use crate::files::{self, CertSummary, Staged};
use crate::{EnrollError, Fingerprint};

/// What `enroll` needs. `token` is a secret: it is only ever sent to the pinned CA.
pub struct EnrollOptions {
    /// One or more replicas of the CA, tried in turn (see [`crate::endpoints`]).
    pub ca_url: CaUrls,
    pub token: String,
    pub root: Fingerprint,
    pub key_type: KeyType,
    /// Where the certificate chain (leaf + intermediate) goes.
    pub cert: PathBuf,
    /// Where the private key goes (0600).
    pub key: PathBuf,
    /// Where the pinned root goes; `None` leaves it unwritten.
    pub root_out: Option<PathBuf>,
}

impl EnrollOptions {
    /// The `mutual enroll --out DIR` layout: DIR/key.pem, DIR/cert.pem, DIR/root.pem.
    pub fn into_dir(
        ca_url: CaUrls,
        token: String,
        root: Fingerprint,
        key_type: KeyType,
        dir: &Path,
    ) -> EnrollOptions {
        EnrollOptions {
            ca_url,
            token,
            root,
            key_type,
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            root_out: Some(dir.join("root.pem")),
        }
    }
}

impl std::fmt::Debug for EnrollOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollOptions")
            .field("ca_url", &self.ca_url.to_string())
            .field("token", &"<redacted>")
            .field("root", &self.root.to_string())
            .field("key_type", &self.key_type)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("root_out", &self.root_out)
            .finish()
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub cert: CertSummary,
    pub root: Fingerprint,
    /// The CA replica that issued it.
    pub ca_url: String,
}

/// Fetches the CA's roots and returns the one matching `pin`, without sending anything secret.
pub async fn fetch_pinned_root(
    url: &CaUrl,
    pin: &Fingerprint,
) -> Result<CertificateDer<'static>, EnrollError> {
    let resp = client::get(url, client::first_contact_config()?, "/v1/roots").await?;
    let roots =
        mutual_tls::load::certs_from_bytes(Path::new("/v1/roots"), &resp.body).map_err(|e| {
            EnrollError::BadResponse {
                status: 200,
                detail: format!("the roots do not parse: {e}"),
            }
        })?;
    if let Some(r) = roots.iter().find(|r| pin.matches(r.as_ref())) {
        return Ok(r.clone());
    }
    Err(EnrollError::RootMismatch {
        url: url.to_string(),
        expected: pin.to_string(),
        presented: roots
            .iter()
            .map(|r| Fingerprint::of(r.as_ref()).to_string())
            .collect(),
    })
}

/// The SANs and subject a token grants, read from its (unverified) claims so the CSR can ask for
/// them. The CA checks the token; if the claims cannot be read the CSR asks for nothing and the
/// CA fills in the token's SANs.
fn token_claims(token: &str) -> (Vec<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Claims {
        #[serde(default)]
        sans: Vec<String>,
        #[serde(default)]
        sub: Option<String>,
    }
    let Some(payload) = token.split('.').nth(1) else {
        return (Vec::new(), None);
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return (Vec::new(), None);
    };
    match serde_json::from_slice::<Claims>(&bytes) {
        Ok(c) => (c.sans, c.sub),
        Err(_) => (Vec::new(), None),
    }
}

fn to_rcgen(san: &mutual_pki::San) -> Option<rcgen::SanType> {
    Some(match san {
        mutual_pki::San::Dns(d) => rcgen::SanType::DnsName(d.clone().try_into().ok()?),
        mutual_pki::San::Ip(ip) => rcgen::SanType::IpAddress(*ip),
        mutual_pki::San::Uri(u) => rcgen::SanType::URI(u.clone().try_into().ok()?),
        mutual_pki::San::Email(e) => rcgen::SanType::Rfc822Name(e.clone().try_into().ok()?),
    })
}

/// A PEM CSR for `key` asking for `sans` (CLI form, `dns:x`...) with `cn` as the subject. SANs
/// that do not parse are left out: the CA decides from the token anyway.
pub fn build_csr(
    key: &rcgen::KeyPair,
    sans: &[String],
    cn: Option<&str>,
) -> Result<String, EnrollError> {
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .filter_map(|s| s.parse::<mutual_pki::San>().ok())
        .filter_map(|s| to_rcgen(&s))
        .collect();
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(cn) = cn.filter(|c| !c.is_empty()) {
        dn.push(rcgen::DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(key)
        .map_err(|e| EnrollError::BadCertificate {
            detail: format!("cannot build the CSR: {e}"),
        })?;
    csr.pem().map_err(|e| EnrollError::BadCertificate {
        detail: format!("cannot encode the CSR: {e}"),
    })
}

/// A fresh key, as PKCS#8 DER (for TLS) and PEM (for the file).
pub(crate) fn new_key(
    kt: KeyType,
) -> Result<(rcgen::KeyPair, PrivateKeyDer<'static>, String), EnrollError> {
    let kp = mutual_pki::keys::generate(kt)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(kp.serialized_der().to_vec()));
    let pem = mutual_pki::keys::pkcs8_pem(&kp)?;
    Ok((kp, der, pem.to_string()))
}

/// Enrolls: pin check, key, CSR, `/v1/sign`, checks the answer, writes key, chain and root.
/// With several replicas, the pin check and the request go to one replica after another until
/// one answers (the token is sent only to a replica that presented the pinned root).
pub async fn enroll(o: &EnrollOptions) -> Result<Enrolled, EnrollError> {
    let (kp, key_der, key_pem) = new_key(o.key_type)?;
    let (sans, sub) = token_claims(&o.token);
    let csr = build_csr(&kp, &sans, sub.as_deref())?;
    let body =
        serde_json::to_vec(&serde_json::json!({ "csr": csr, "token": o.token })).map_err(|e| {
            EnrollError::BadCertificate {
                detail: format!("cannot encode the request: {e}"),
            }
        })?;
    let body = &body;
    let ((root, issued), served_by) = o
        .ca_url
        .failover("enroll", |url| async move {
            let root = fetch_pinned_root(&url, &o.root).await?;
            let resp = client::request(
                &url,
                client::pinned_config(std::slice::from_ref(&root), None)?,
                Method::POST,
                "/v1/sign",
                Some(body.clone()),
            )
            .await?;
            Ok((root, client::issued(resp)?))
        })
        .await?;
    let roots = vec![root.clone()];
    let (chain, summary) = files::check_issued(&issued.certificate_chain, &key_der, &roots)?;

    for p in [Some(&o.cert), Some(&o.key), o.root_out.as_ref()]
        .into_iter()
        .flatten()
    {
        files::ensure_dir(&files::parent(p))?;
    }
    let mut staged = Staged::default();
    staged.key(&o.key, &key_pem)?;
    staged.certs(&o.cert, &chain)?;
    if let Some(r) = &o.root_out {
        staged.certs(r, std::slice::from_ref(&root))?;
    }
    staged.commit()?;
    Ok(Enrolled {
        cert: summary,
        root: o.root,
        ca_url: served_by.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn claims_are_read_without_trusting_them() {
        let t = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"ES256"}"#),
            b64(
                r#"{"sub":"web","sans":["dns:web.internal","ip:10.0.0.1","uri:spiffe://ex.org/web"]}"#
            )
        );
        let (sans, sub) = token_claims(&t);
        assert_eq!(sans.len(), 3);
        assert_eq!(sub.as_deref(), Some("web"));
        assert_eq!(token_claims("garbage"), (Vec::new(), None));
        assert_eq!(token_claims("a.%%%.c"), (Vec::new(), None));
    }

    #[test]
    fn csr_carries_the_sans() {
        let kp = mutual_pki::keys::generate(KeyType::EcdsaP256).unwrap();
        let pem = build_csr(
            &kp,
            &[
                "dns:web.internal".into(),
                "ip:10.0.0.1".into(),
                "bogus".into(),
            ],
            Some("web"),
        )
        .unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|d: rustls::pki_types::CertificateSigningRequestDer<'static>| d)
            .unwrap();
        let params = rcgen::CertificateSigningRequestParams::from_der(&der).unwrap();
        assert_eq!(params.params.subject_alt_names.len(), 2);
    }
}
