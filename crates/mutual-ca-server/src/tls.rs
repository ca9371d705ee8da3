//! The CA server's own TLS: a server certificate the CA issues to itself at start and replaces
//! at two-thirds of its life (a `ResolvesServerCert` over `ArcSwap`, so rotation never drops a
//! connection), and client-certificate verification that is optional at the TLS layer.
//!
//! Why a lenient verifier for expiry: renewal and revocation must answer an expired client
//! certificate with the contract's `403 expired`, which needs a completed handshake. The wrapper
//! accepts an expired certificate only after re-running the full path validation (signature
//! chain to our root, constraints) at a moment inside its validity; the request layer then sees
//! the real notAfter and refuses. Every other failure (unknown CA, bad signature) still fails
//! the handshake.
//!
//! Why no EKU requirement: the client certificate here only proves possession of a key this CA
//! certified, so that its holder may renew or revoke it. A server-only certificate (EKU
//! serverAuth) must be renewable too, so the chain is validated by mutual-tls's
//! [`Trust::check`] with [`Purpose::Any`] instead of rustls' clientAuth-only verifier. The
//! request layer still requires the exact certificate (serial and SHA-256) in the inventory,
//! not revoked and not expired.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mutual_tls::verify::{Purpose, RevocationPolicy, Trust};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

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
/// through for the request layer to refuse by name (see the module doc).
#[derive(Debug)]
pub struct ClientVerifier {
    trust: Trust,
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl ClientVerifier {
    pub fn new(
        root_pem: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<ClientVerifier, ServerError> {
        let roots = CertificateDer::pem_slice_iter(root_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Tls(format!("root certificate: {e}")))?;
        if roots.is_empty() {
            return Err(ServerError::Tls("no root certificate".into()));
        }
        let trust = Trust::new(roots, Vec::new(), RevocationPolicy::default())
            .map_err(|e| ServerError::Tls(format!("root certificate: {e}")))?;
        let hints = trust.root_subjects();
        Ok(ClientVerifier {
            trust,
            hints,
            provider,
        })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.trust
            .check(end_entity, intermediates, now, &Purpose::Any, None, None)
            .map(|_| ClientCertVerified::assertion())
    }
}

/// notAfter of a certificate, Unix seconds.
fn not_after(der: &[u8]) -> Option<i64> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| c.validity().not_after.timestamp())
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.check(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                // Validate the whole path again one second before the leaf expired. Anything
                // else wrong with it (or an intermediate already expired then) still fails.
                let at = not_after(end_entity)
                    .and_then(|t| u64::try_from(t.saturating_sub(1)).ok())
                    .ok_or(rustls::Error::InvalidCertificate(
                        CertificateError::BadEncoding,
                    ))?;
                self.check(
                    end_entity,
                    intermediates,
                    UnixTime::since_unix_epoch(Duration::from_secs(at)),
                )
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The listener's rustls config: TLS 1.3 (1.2 too with `tls12`), HTTP/1.1 over ALPN.
pub fn server_config(
    resolver: Arc<RotatingCert>,
    verifier: Arc<ClientVerifier>,
    provider: Arc<CryptoProvider>,
    tls12: bool,
) -> Result<rustls::ServerConfig, ServerError> {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
