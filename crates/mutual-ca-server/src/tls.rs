//! The CA server's own TLS: a server certificate the CA issues to itself at start and replaces
//! at two-thirds of its life (a `ResolvesServerCert` over `ArcSwap`, so rotation never drops a
//! connection), and client-certificate verification that is optional at the TLS layer
//! ([`MutualClientVerifier::key_holder`]: any EKU, an expired certificate let through for the
//! request layer to refuse as `403 expired`; its doc says why). The rustls config itself is built by
//! mutual-tls ([`mutual_tls::server::ca_server`]).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mutual_pki::ca::{Ca, IssueOptions};
use mutual_pki::{KeyType, San, Usage};
use mutual_tls::verifiers::MutualClientVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::ServerError;

/// Who the server certificate's inventory row says asked for it.
pub const SERVER_CERT_REQUESTER: &str = "ca-serve";

/// The server certificate currently presented, swapped in place on rotation.
#[derive(Debug)]
pub struct RotatingCert {
    current: ArcSwap<CertifiedKey>,
}

impl RotatingCert {
    pub fn new(first: Arc<CertifiedKey>) -> RotatingCert {
        RotatingCert {
            current: ArcSwap::new(first),
        }
    }

    pub fn replace(&self, next: Arc<CertifiedKey>) {
        self.current.store(next);
    }
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A freshly issued (and recorded) server certificate.
pub struct ServerCert {
    pub key: Arc<CertifiedKey>,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Issues the server's own certificate (usage server, recorded in the inventory with
/// requested_by `ca-serve`).
pub async fn issue_server_cert(
    ca: &Ca,
    sans: &[San],
    ttl: Duration,
    provider: &CryptoProvider,
) -> Result<ServerCert, ServerError> {
    let o = IssueOptions {
        name: "mutual-ca-server".into(),
        sans: sans.to_vec(),
        usage: Usage::Server,
        ttl,
        key_type: KeyType::EcdsaP256,
        requested_by: Some(SERVER_CERT_REQUESTER.into()),
        crl_urls: Vec::new(),
        ..Default::default()
    };
    let p = ca.prepare_issue(&o)?;
    let chain = CertificateDer::pem_slice_iter(p.issued.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("own chain: {e}")))?;
    let key_der = p
        .key_der
        .clone()
        .ok_or_else(|| ServerError::Tls("the issued server certificate has no key".into()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| ServerError::Tls(format!("own key: {e}")))?;
    let certified = Arc::new(CertifiedKey::new(chain, signing));
    ca.record(&p).await?;
    Ok(ServerCert {
        key: certified,
        serial: p.issued.serial_hex.clone(),
        not_before: p.issued.not_before,
        not_after: p.issued.not_after,
    })
}

/// Optional client certificates checked against our root, whatever their EKU, expired ones let
/// through for the request layer to refuse by name (see [`MutualClientVerifier::key_holder`]).
pub type ClientVerifier = MutualClientVerifier;

/// The [`ClientVerifier`] for the CA whose root certificate is `root_pem`.
pub fn client_verifier(root_pem: &str) -> Result<ClientVerifier, ServerError> {
    let roots = CertificateDer::pem_slice_iter(root_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("root certificate: {e}")))?;
    if roots.is_empty() {
        return Err(ServerError::Tls("no root certificate".into()));
    }
    MutualClientVerifier::key_holder(roots)
        .map_err(|e| ServerError::Tls(format!("root certificate: {e}")))
}

/// The listener's rustls config: TLS 1.3 (1.2 too with `tls12`), HTTP/1.1 over ALPN.
pub fn server_config(
    resolver: Arc<RotatingCert>,
    verifier: Arc<ClientVerifier>,
    provider: Arc<CryptoProvider>,
    tls12: bool,
) -> Result<rustls::ServerConfig, ServerError> {
    mutual_tls::server::ca_server(resolver, verifier, provider, tls12)
        .map_err(|e| ServerError::Tls(e.to_string()))
}
