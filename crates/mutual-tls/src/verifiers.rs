//! The rustls verifier objects for both directions. They hold a [`Trust`] and delegate to
//! [`Trust::check`], so handshakes and `mutual cert verify` cannot disagree.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::verify::{PeerName, Purpose, Trust};

/// Server side: a client certificate is required and must chain to our roots for clientAuth
/// (and pass the CRLs, when given).
#[derive(Debug)]
pub struct MutualClientVerifier {
    trust: Arc<Trust>,
    hints: Vec<DistinguishedName>,
    authorize: Option<crate::PeerCheck>,
}

impl MutualClientVerifier {
    pub fn new(trust: Arc<Trust>) -> MutualClientVerifier {
        let hints = trust.root_subjects();
        MutualClientVerifier {
            trust,
            hints,
            authorize: None,
        }
    }

    /// Also asks `check` about every verified leaf; a "no" fails the handshake with
    /// `access_denied` (rustls' alert for `ApplicationVerificationFailure`).
    pub fn with_authorize(mut self, check: Option<crate::PeerCheck>) -> MutualClientVerifier {
        self.authorize = check;
        self
    }
}

impl ClientCertVerifier for MutualClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
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
        self.trust
            .check(end_entity, intermediates, now, &Purpose::Client, None, None)?;
        if let Some(check) = &self.authorize {
            if !(check.0)(end_entity.as_ref()) {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.algorithms().supported_schemes()
    }
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

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.algorithms().supported_schemes()
    }
}
