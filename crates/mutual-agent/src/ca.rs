//! The agent's calls to the online CA (`/v1/agent/entries`, `/v1/agent/svid`, `/v1/agent/jwt`,
//! `/v1/jwks`, docs/agent.md),
//! over mTLS with the node certificate, through mutual-enroll's client (pinned roots, replica
//! failover, the CA's refusals with their reason labels). The node certificate and the roots are
//! read from disk for every call: the node's renewer rewrites them in place.

use std::path::PathBuf;
use std::sync::Arc;

use mutual_enroll::client::{self, Method};
use mutual_enroll::files;
use mutual_enroll::{CaUrls, EnrollError};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::selector::{self, Selector};

/// Where the CA is and who this node is.
#[derive(Clone, Debug)]
pub struct CaClient {
    pub urls: CaUrls,
    /// The node certificate (chain) and key, kept fresh by the node's renewer.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA root(s) (PEM): the CA's server certificate and every SVID chain to them, and
    /// they are the bundle workloads get.
    pub ca: PathBuf,
}

/// A registration entry as the CA sends it to the node it is assigned to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub spiffe_id: String,
    pub selectors: Vec<String>,
    pub ttl_secs: i64,
}

impl Entry {
    /// The selectors, parsed; `None` (and a warning) when one does not parse, so such an entry
    /// matches nobody.
    pub fn parsed_selectors(&self) -> Option<Vec<Selector>> {
        match selector::parse_all(&self.selectors) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(entry = %self.id, error = %e, "registration entry ignored");
                None
            }
        }
    }
}

/// The CA's JWT-SVID endpoint (node-authenticated) and its public JWK set.
pub const JWT: &str = "/v1/agent/jwt";
pub const JWKS: &str = "/v1/jwks";

/// A JWT-SVID as the CA issued it. The token is a bearer credential: never logged.
#[derive(Clone, Deserialize)]
pub struct JwtSvid {
    pub spiffe_id: String,
    pub token: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct EntryList {
    entries: Vec<Entry>,
}

/// One X.509-SVID and its key, which lives only in this process's memory.
pub struct Svid {
    pub entry_id: String,
    pub spiffe_id: String,
    /// Leaf first, then intermediates (never a root).
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER.
    pub key: Zeroizing<Vec<u8>>,
    pub serial: String,
    pub not_after: i64,
}

impl std::fmt::Debug for Svid {
    // By hand, so that the key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("entry_id", &self.entry_id)
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CaClient {
    /// The TLS configuration presenting the node certificate, and the roots it trusts.
    fn tls(
        &self,
    ) -> Result<(Arc<rustls::ClientConfig>, Vec<CertificateDer<'static>>), EnrollError> {
        let cur = files::load_current(&self.cert, &self.key)?;
        let roots = files::load_roots(&self.ca)?;
        let tls = client::pinned_config(&roots, Some((cur.chain, cur.key)))?;
        Ok((tls, roots))
    }

    /// The roots workloads get as their bundle.
    pub fn roots(&self) -> Result<Vec<CertificateDer<'static>>, EnrollError> {
        files::load_roots(&self.ca)
    }

    /// `method path` with `body`, through replica failover, as the node; the body of its 200
    /// answer (anything else is the CA's refusal).
    async fn call_ok(
        &self,
        what: &'static str,
        method: Method,
        path: &'static str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, EnrollError> {
        let (tls, _) = self.tls()?;
        let (tls, body, method) = (&tls, &body, &method);
        let (raw, _) = self
            .urls
            .failover(what, |url| async move {
                let resp =
                    client::request(&url, tls.clone(), method.clone(), path, body.clone()).await?;
                if resp.status != 200 {
                    return Err(client::refusal(resp));
                }
                Ok(resp.body.to_vec())
            })
            .await?;
        Ok(raw)
    }

    /// The entries the CA assigns to this node.
    pub async fn entries(&self) -> Result<Vec<Entry>, EnrollError> {
        let raw = self
            .call_ok("agent entries", Method::GET, crate::ENTRIES, None)
            .await?;
        serde_json::from_slice::<EntryList>(&raw)
            .map(|l| l.entries)
            .map_err(|e| EnrollError::BadResponse {
                status: 200,
                detail: format!("not the expected entry list: {e}"),
            })
    }

    /// A new key (in memory) and an SVID for it from the CA, for `entry`.
    pub async fn svid(&self, entry: &Entry) -> Result<Svid, EnrollError> {
        let (tls, roots) = self.tls()?;
        let kp = mutual_pki::keys::generate(mutual_pki::KeyType::EcdsaP256)?;
        let key = Zeroizing::new(kp.serialized_der().to_vec());
        let csr =
            mutual_enroll::enroll::build_csr(&kp, &[format!("uri:{}", entry.spiffe_id)], None)?;
        let body = serde_json::to_vec(&serde_json::json!({
            "spiffe_id": entry.spiffe_id,
            "entry_id": entry.id,
            "csr": csr,
        }))
        .map_err(|e| EnrollError::BadCertificate {
            detail: format!("cannot encode the request: {e}"),
        })?;
        let (body, tls) = (&body, &tls);
        let (issued, _) = self
            .urls
            .failover("agent svid", |url| async move {
                let resp = client::request(
                    &url,
                    tls.clone(),
                    Method::POST,
                    crate::SVID,
                    Some(body.clone()),
                )
                .await?;
                client::issued(resp)
            })
            .await?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
        let (mut chain, summary) =
            files::check_issued(&issued.certificate_chain, &key_der, &roots)?;
        chain.retain(|c| !roots.contains(c));
        Ok(Svid {
            entry_id: entry.id.clone(),
            spiffe_id: entry.spiffe_id.clone(),
            chain,
            key,
            serial: summary.serial,
            not_after: summary.not_after,
        })
    }

    /// A JWT-SVID for `entry` with `audience`, signed by the CA.
    pub async fn jwt(&self, entry: &Entry, audience: &[String]) -> Result<JwtSvid, EnrollError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "spiffe_id": entry.spiffe_id,
            "entry_id": entry.id,
            "audience": audience,
        }))
        .map_err(|e| EnrollError::BadCertificate {
            detail: format!("cannot encode the request: {e}"),
        })?;
        let raw = self
            .call_ok("agent jwt", Method::POST, JWT, Some(body))
            .await?;
        serde_json::from_slice(&raw).map_err(|e| EnrollError::BadResponse {
            status: 200,
            detail: format!("not the expected JWT-SVID: {e}"),
        })
    }

    /// The CA's JWT-SVID keys, as the JWK set (JSON) it serves.
    pub async fn jwks(&self) -> Result<Vec<u8>, EnrollError> {
        self.call_ok("jwks", Method::GET, JWKS, None).await
    }
}
