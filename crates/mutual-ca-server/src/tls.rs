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

/// The listener's acceptor, rebuilt when the CA's trust bundle changes (`ca rotate-root`
/// publishes both roots, `ca retire-root` makes `root.pem` the new one): a running `ca serve`
/// then accepts client certificates under the new root without a restart, as it follows
/// `issuers.toml`. The bundle is re-read at each connection (a small, page-cached file, like
/// `issuers.toml` per request); a bundle that does not load keeps the acceptor it has.
pub struct TrustingAcceptor {
    dir: std::path::PathBuf,
    bootstrap: Vec<CertificateDer<'static>>,
    resolver: Arc<RotatingCert>,
    provider: Arc<CryptoProvider>,
    tls12: bool,
    /// The bundle text the current acceptor trusts, and the acceptor.
    current: ArcSwap<(String, tokio_rustls::TlsAcceptor)>,
    /// A bundle text that failed to load, so it is not retried (and logged) per connection.
    bad: std::sync::Mutex<Option<String>>,
}

impl TrustingAcceptor {
    /// The acceptor for the CA in `dir` trusting its current bundle (and EST's `bootstrap`).
    pub fn new(
        dir: &std::path::Path,
        bootstrap: &[CertificateDer<'static>],
        resolver: Arc<RotatingCert>,
        provider: Arc<CryptoProvider>,
        tls12: bool,
    ) -> Result<TrustingAcceptor, ServerError> {
        let pem = mutual_pki::ca::trust_bundle(dir)?.pem;
        let acc = Self::build(&pem, bootstrap, &resolver, &provider, tls12)?;
        Ok(TrustingAcceptor {
            dir: dir.to_path_buf(),
            bootstrap: bootstrap.to_vec(),
            resolver,
            provider,
            tls12,
            current: ArcSwap::from_pointee((pem, acc)),
            bad: std::sync::Mutex::new(None),
        })
    }

    fn build(
        pem: &str,
        bootstrap: &[CertificateDer<'static>],
        resolver: &Arc<RotatingCert>,
        provider: &Arc<CryptoProvider>,
        tls12: bool,
    ) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
        let verifier = Arc::new(client_verifier(pem, bootstrap)?);
        let cfg = server_config(resolver.clone(), verifier, provider.clone(), tls12)?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    }

    /// The acceptor for the next connection: the current one, or a new one when the trust
    /// bundle changed since.
    pub fn current(&self) -> tokio_rustls::TlsAcceptor {
        let cur = self.current.load();
        let pem = match mutual_pki::ca::trust_bundle(&self.dir) {
            Ok(b) if b.pem != cur.0 => b.pem,
            Ok(_) => return cur.1.clone(),
            Err(e) => {
                tracing::debug!(error = %e, "trust bundle not readable; keeping the current roots");
                return cur.1.clone();
            }
        };
        let mut bad = self.bad.lock().unwrap_or_else(|p| p.into_inner());
        if bad.as_deref() == Some(pem.as_str()) {
            return cur.1.clone();
        }
        match Self::build(
            &pem,
            &self.bootstrap,
            &self.resolver,
            &self.provider,
            self.tls12,
        ) {
            Ok(acc) => {
                tracing::info!("trust bundle changed: client certificates now checked against it");
                self.current.store(Arc::new((pem, acc.clone())));
                *bad = None;
                acc
            }
            Err(e) => {
                tracing::warn!(error = %e, "new trust bundle refused; keeping the current roots");
                *bad = Some(pem);
                cur.1.clone()
            }
        }
    }
}
