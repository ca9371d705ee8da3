//! Every rustls verifier object in mutual, for both directions:
//! - [`MutualClientVerifier`] / [`MutualServerVerifier`]: the proxy's, `mutual connect`'s and
//!   (in its key-holder mode) the CA server's, holding a [`Trust`] and delegating to
//!   [`Trust::check`], so handshakes and `mutual cert verify` cannot disagree;
//! - [`SignatureOnly`]: accepts any server certificate but still checks the handshake signature
//!   (enroll's first contact, the probe's recording handshakes);
//! - [`ChallengeKeyOnly`]: ACME tls-alpn-01, accepting like `SignatureOnly` but checking the
//!   signature against the key x509-parser reads.
//!
//! All of them check handshake signatures the same way, with one set of algorithms
//! (`handshake_signatures!`).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::X509Certificate;

use crate::verify::{PeerName, Purpose, RevocationPolicy, Trust};
use crate::TlsError;

/// The algorithms a verifier checks handshake signatures with.
trait SignatureAlgorithms {
    fn signature_algorithms(&self) -> &WebPkiSupportedAlgorithms;
}

/// The three handshake-signature methods of a rustls verifier trait, checked with the
/// verifier's [`SignatureAlgorithms`]: written once for every verifier here.
macro_rules! handshake_signatures {
    () => {
        handshake_signatures!(verify_tls12_signature, verify_tls13_signature);

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            SignatureAlgorithms::signature_algorithms(self).supported_schemes()
        }
    };
    // Each method has the name of the rustls function that checks its TLS version's signature.
    ($($method:ident),+) => {
        $(
            fn $method(
                &self,
                message: &[u8],
                cert: &CertificateDer<'_>,
                dss: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                let algorithms = SignatureAlgorithms::signature_algorithms(self);
                rustls::crypto::$method(message, cert, dss, algorithms)
            }
        )+
    };
}

/// Server side: a client certificate is required and must chain to our roots for clientAuth
/// (and pass the CRLs, when given).
///
/// In the CA server's mode ([`MutualClientVerifier::key_holder`]) a client certificate is
/// optional, any EKU is accepted and an expired one is let through for the request layer to
/// refuse by name:
/// - lenient about expiry because renewal and revocation must answer an expired client
///   certificate with the contract's `403 expired`, which needs a completed handshake. An
///   expired certificate is accepted only after the full path validation (signature chain to
///   the root, constraints) passes again at a moment inside its validity (one second before its
///   notAfter); every other failure (unknown CA, bad signature) still fails the handshake;
/// - no EKU requirement because the certificate only proves possession of a key the CA
///   certified, so that its holder may renew or revoke it, and a server-only certificate (EKU
///   serverAuth) must be renewable too: the chain is validated with [`Purpose::Any`]. The
///   request layer still requires the exact certificate in the inventory, not revoked and not
///   expired.
#[derive(Debug)]
pub struct MutualClientVerifier {
    trust: Arc<Trust>,
    hints: Vec<DistinguishedName>,
    authorize: Option<crate::PeerCheck>,
    key_holder: bool,
}

impl MutualClientVerifier {
    pub fn new(trust: Arc<Trust>) -> MutualClientVerifier {
        let hints = trust.root_subjects();
        MutualClientVerifier {
            trust,
            hints,
            authorize: None,
            key_holder: false,
        }
    }

    /// The CA server's verifier over `roots` (at least one): see the type's doc.
    pub fn key_holder(
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<MutualClientVerifier, TlsError> {
        let trust = Trust::new(roots, Vec::new(), RevocationPolicy::default())?;
        Ok(MutualClientVerifier {
            key_holder: true,
            ..MutualClientVerifier::new(Arc::new(trust))
        })
    }

    /// Also asks `check` about every verified leaf; a "no" fails the handshake with
    /// `access_denied` (rustls' alert for `ApplicationVerificationFailure`).
    pub fn with_authorize(mut self, check: Option<crate::PeerCheck>) -> MutualClientVerifier {
        self.authorize = check;
        self
    }

    fn check<'a>(
        &self,
        end_entity: &'a CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Option<X509Certificate<'a>>, rustls::Error> {
        let purpose = if self.key_holder {
            Purpose::Any
        } else {
            Purpose::Client
        };
        self.trust
            .check_parsed(end_entity, intermediates, now, &purpose, None, None)
            .map(|v| v.leaf)
    }
}

/// notAfter of a certificate, Unix seconds.
fn not_after(der: &[u8]) -> Option<i64> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| c.validity().not_after.timestamp())
}

impl SignatureAlgorithms for MutualClientVerifier {
    fn signature_algorithms(&self) -> &WebPkiSupportedAlgorithms {
        self.trust.algorithms()
    }
}

impl ClientCertVerifier for MutualClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.key_holder
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
        let leaf = match self.check(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) if self.key_holder => {
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
                )?
            }
            other => other?,
        };
        if let Some(check) = &self.authorize {
            let leaf = crate::Leaf {
                der: end_entity.as_ref(),
                cert: leaf.as_ref(),
            };
            if !(check.0)(&leaf) {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Client side: the server certificate must chain to our roots for serverAuth and carry either
/// the name we connect to (DNS/IP) or exactly the expected SPIFFE ID.
#[derive(Debug)]
pub struct MutualServerVerifier {
    trust: Arc<Trust>,
    /// When set, replaces the name check on the connection's server name.
    expect_uri: Option<String>,
}

impl MutualServerVerifier {
    pub fn new(trust: Arc<Trust>, expect_uri: Option<String>) -> MutualServerVerifier {
        MutualServerVerifier { trust, expect_uri }
    }
}

impl SignatureAlgorithms for MutualServerVerifier {
    fn signature_algorithms(&self) -> &WebPkiSupportedAlgorithms {
        self.trust.algorithms()
    }
}

impl ServerCertVerifier for MutualServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = match &self.expect_uri {
            Some(u) => PeerName::Uri(u.clone()),
            None => PeerName::Server(server_name.to_owned()),
        };
        self.trust
            .check(
                end_entity,
                intermediates,
                now,
                &Purpose::Server,
                Some(&name),
                None,
            )
            .map(|_| ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Told the certificates a [`SignatureOnly`] verifier accepted: the leaf, then the rest.
pub type ChainSink = dyn Fn(&CertificateDer<'_>, &[CertificateDer<'_>]) + Send + Sync;

/// Accepts whatever certificate the server presents, still checking that the server holds its
/// key (handshake signatures are verified). For the two places that judge the certificate
/// later, outside the handshake: enroll's first contact (only `GET /v1/roots` is sent, and what
/// comes back is trusted only if it matches the pinned fingerprint) and the probe (which shows
/// the chain even when it is invalid, then judges it).
pub struct SignatureOnly {
    provider: Arc<CryptoProvider>,
    sink: Option<Arc<ChainSink>>,
}

impl SignatureOnly {
    /// Signatures checked with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> SignatureOnly {
        SignatureOnly {
            provider,
            sink: None,
        }
    }

    /// Also hands every presented chain to `sink`.
    pub fn recording(mut self, sink: Arc<ChainSink>) -> SignatureOnly {
        self.sink = Some(sink);
        self
    }
}

impl std::fmt::Debug for SignatureOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureOnly")
            .field("recording", &self.sink.is_some())
            .finish()
    }
}

impl SignatureAlgorithms for SignatureOnly {
    fn signature_algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

impl ServerCertVerifier for SignatureOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(sink) = &self.sink {
            sink(end_entity, intermediates);
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// The ACME CA's view of a tls-alpn-01 responder (RFC 8737). The challenge certificate carries
/// the critical acmeIdentifier extension, which webpki does not know: it refuses to read such a
/// certificate at all, even just to check a handshake signature (`UnsupportedCriticalExtension`,
/// found by lego). So this verifier accepts any certificate (the validator judges what it proves)
/// and checks the TLS 1.3 handshake signature against the certificate's public key as
/// x509-parser reads it, so the responder must hold the key of the certificate it showed.
/// TLS 1.3 only (every current ACME client's responder speaks it).
#[derive(Debug)]
pub struct ChallengeKeyOnly {
    /// Accepts the certificate, as for the probe; only the signature check differs.
    any: SignatureOnly,
}

impl ChallengeKeyOnly {
    pub fn new(provider: Arc<CryptoProvider>) -> ChallengeKeyOnly {
        ChallengeKeyOnly {
            any: SignatureOnly::new(provider),
        }
    }
}

impl ServerCertVerifier for ChallengeKeyOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.any
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable with the TLS 1.3-only config of `client::tls_alpn_01`; refuse if not.
        Err(rustls::Error::General(
            "tls-alpn-01 validation speaks TLS 1.3 only".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        use x509_parser::prelude::FromDer;
        let (_, parsed) = X509Certificate::from_der(cert.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from(parsed.public_key().raw);
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &spki,
            dss,
            self.any.signature_algorithms(),
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.any.supported_verify_schemes()
    }
}
