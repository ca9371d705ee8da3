//! The CA server's own TLS certificate: issued by the CA to itself at start and at two-thirds
//! of its life, through the same issuance transaction as every other certificate (so it has
//! its inventory row, requested_by `ca-serve`), then turned into a rustls `CertifiedKey`.
//! The key is new each time, in memory, unless `ca serve --server-key pkcs11:...` names a token
//! key: then every certificate is issued for that key from a request the token signed, and TLS
//! handshakes are signed in the token.
use std::sync::Arc;
use std::time::Duration;

use mutual_hsm::{TlsSigningKey, TokenKey};
use mutual_pki::ca::{token_csr, Ca, IssueOptions, IssueRequest, KeySource};
use mutual_pki::{KeyType, San, Usage};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::ServerError;

/// Who the server certificate's inventory row says asked for it.
pub const SERVER_CERT_REQUESTER: &str = "ca-serve";

/// A freshly issued (and recorded) server certificate.
pub struct ServerCert {
    pub key: Arc<CertifiedKey>,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Issues the server's own certificate (usage server, recorded in the inventory with
/// requested_by `ca-serve`), for a new in-memory key or for `token_key`.
pub async fn issue_server_cert(
    ca: &Ca,
    sans: &[San],
    ttl: Duration,
    provider: &CryptoProvider,
    token_key: Option<&Arc<TokenKey>>,
) -> Result<ServerCert, ServerError> {
    let o = IssueOptions {
        name: "mutual-ca-server".into(),
        sans: sans.to_vec(),
        usage: Usage::Server,
        // In the intermediate's last --server-cert-ttl, shorter (and renewed sooner) rather
        // than not at all.
        ttl: ca.ttl_within_intermediate(ttl),
        requested_by: Some(SERVER_CERT_REQUESTER.into()),
        ..Default::default()
    };
    let mut req = IssueRequest::generate(o, KeyType::EcdsaP256);
    if let Some(k) = token_key {
        req.key = KeySource::Csr(token_csr(k, "mutual-ca-server")?);
    }
    let issued = ca.issue(req).await?;
    let chain = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("own chain: {e}")))?;
    if let Some(k) = token_key {
        return Ok(ServerCert {
            key: Arc::new(CertifiedKey::new(
                chain,
                Arc::new(TlsSigningKey(Arc::clone(k))),
            )),
            serial: issued.serial_hex,
            not_before: issued.not_before,
            not_after: issued.not_after,
        });
    }
    let key_der = issued
        .key_der
        .clone()
        .ok_or_else(|| ServerError::Tls("the issued server certificate has no key".into()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| ServerError::Tls(format!("own key: {e}")))?;
    Ok(ServerCert {
        key: Arc::new(CertifiedKey::new(chain, signing)),
        serial: issued.serial_hex,
        not_before: issued.not_before,
        not_after: issued.not_after,
    })
}
