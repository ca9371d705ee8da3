//! A token key as rustls' `SigningKey`: TLS handshakes signed by the token (ECDSA P-256/P-384,
//! RSA-PSS for TLS 1.3 and RSA PKCS#1 for TLS 1.2 peers).
use std::sync::Arc;

use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::SubjectPublicKeyInfoDer;

use crate::key::{KeyKind, SigKind, TokenKey};

/// rustls' view of a [`TokenKey`].
#[derive(Debug, Clone)]
pub struct TlsSigningKey(pub Arc<TokenKey>);

#[derive(Debug)]
struct TokenSigner {
    key: Arc<TokenKey>,
    scheme: SignatureScheme,
    how: SigKind,
}

impl SigningKey for TlsSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let prefs: &[(SignatureScheme, SigKind)] = match self.0.kind() {
            KeyKind::EcdsaP256 => &[(SignatureScheme::ECDSA_NISTP256_SHA256, SigKind::Ecdsa)],
            KeyKind::EcdsaP384 => &[(SignatureScheme::ECDSA_NISTP384_SHA384, SigKind::Ecdsa)],
            KeyKind::Rsa(_) => &[
                (SignatureScheme::RSA_PSS_SHA256, SigKind::RsaPssSha256),
                (SignatureScheme::RSA_PKCS1_SHA256, SigKind::RsaPkcs1Sha256),
            ],
        };
        prefs
            .iter()
            .find(|(s, _)| offered.contains(s))
            .map(|(scheme, how)| {
                Box::new(TokenSigner {
                    key: Arc::clone(&self.0),
                    scheme: *scheme,
                    how: *how,
                }) as Box<dyn Signer>
            })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.0.spki()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.0.kind() {
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => SignatureAlgorithm::ECDSA,
            KeyKind::Rsa(_) => SignatureAlgorithm::RSA,
        }
    }
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key
            .sign(message, self.how)
            .map_err(|e| rustls::Error::General(format!("PKCS#11 signature failed: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
