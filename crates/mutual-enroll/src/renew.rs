//! One renewal over mTLS: present the current certificate to `/v1/renew`, check what comes back
//! (our key, chains to the CA root we trust), write it. The old files stay in place until the
//! new ones are complete.

use std::path::PathBuf;

use hyper::Method;
use mutual_pki::KeyType;

use crate::client;
use crate::endpoints::CaUrls;
use crate::files::{self, CertSummary, Staged};
use crate::EnrollError;

/// What `renew_once` needs.
#[derive(Clone, Debug)]
pub struct RenewOptions {
    /// One or more replicas of the CA, tried in turn (see [`crate::endpoints`]).
    pub ca_url: CaUrls,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA root(s) to trust for the CA's own server certificate.
    pub ca: PathBuf,
    /// Generate a new key of this type and send a CSR for it; `None` keeps the current key.
    pub new_key: Option<KeyType>,
}

/// The certificate before and after.
#[derive(Clone, Debug)]
pub struct Renewed {
    pub old: CertSummary,
    pub new: CertSummary,
    pub rekeyed: bool,
    /// The CA replica that renewed it.
    pub ca_url: String,
}

/// Renews once.
pub async fn renew_once(o: &RenewOptions) -> Result<Renewed, EnrollError> {
    let cur = files::load_current(&o.cert, &o.key)?;
    // An expired certificate is still sent: the CA decides (`ca serve --renew-grace` renews it
    // shortly after expiry; without a grace it answers `403 expired`).
    let roots = files::load_roots(&o.ca)?;
    let tls = client::pinned_config(&roots, Some((cur.chain.clone(), cur.key.clone_key())))?;
    let (body, key) = match o.new_key {
        Some(kt) => {
            let (kp, der, pem) = crate::enroll::new_key(kt)?;
            let csr = crate::enroll::build_csr(&kp, &[], None)?;
            (serde_json::json!({ "csr": csr }), Some((der, pem)))
        }
        None => (serde_json::json!({}), None),
    };
    let body = serde_json::to_vec(&body).map_err(|e| EnrollError::BadCertificate {
        detail: format!("cannot encode the request: {e}"),
    })?;
    let (body, tls) = (&body, &tls);
    let (issued, served_by) = o
        .ca_url
        .failover("renew", |url| async move {
            let resp = client::request(
                &url,
                tls.clone(),
                Method::POST,
                "/v1/renew",
                Some(body.clone()),
            )
            .await?;
            client::issued(resp)
        })
        .await?;
    let key_der = key.as_ref().map_or(&cur.key, |(d, _)| d);
    let (chain, summary) = files::check_issued(&issued.certificate_chain, key_der, &roots)?;

    // Key first, then the certificate: both are complete on disk before either is renamed.
    let mut staged = Staged::default();
    if let Some((_, pem)) = &key {
        staged.key(&o.key, pem)?;
    }
    staged.certs(&o.cert, &chain)?;
    staged.commit()?;
    Ok(Renewed {
        old: cur.summary,
        new: summary,
        rekeyed: key.is_some(),
        ca_url: served_by.to_string(),
    })
}
