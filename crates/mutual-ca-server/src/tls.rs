//! The CA server's own TLS: a server certificate the CA issues to itself at start and replaces
//! at two-thirds of its life (a `ResolvesServerCert` over `ArcSwap`, so rotation never drops a
//! connection), and client-certificate verification that is optional at the TLS layer
//! ([`MutualClientVerifier::key_holder`]: any EKU, an expired certificate let through for the
//! request layer to refuse as `403 expired`; its doc says why). The rustls config itself is built by
//! mutual-tls ([`mutual_tls::server::ca_server`]).

use std::sync::Arc;

use arc_swap::ArcSwap;
use mutual_tls::verifiers::MutualClientVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::ServerError;

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

/// Optional client certificates checked against our root, whatever their EKU, expired ones let
/// through for the request layer to refuse by name (see [`MutualClientVerifier::key_holder`]).
pub type ClientVerifier = MutualClientVerifier;

/// The [`ClientVerifier`] for the CA whose root certificate is `root_pem`, also accepting
/// certificates from `bootstrap` (EST's manufacturer roots, for enrollment only).
pub fn client_verifier(
    root_pem: &str,
    bootstrap: &[CertificateDer<'static>],
) -> Result<ClientVerifier, ServerError> {
    let mut roots = CertificateDer::pem_slice_iter(root_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("root certificate: {e}")))?;
    if roots.is_empty() {
        return Err(ServerError::Tls("no root certificate".into()));
    }
    roots.extend_from_slice(bootstrap);
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
