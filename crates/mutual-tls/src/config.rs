//! What every rustls configuration of mutual shares: the crypto provider (versions, suites,
//! key-exchange groups) and the served or presented credentials. The configurations themselves
//! are built in [`crate::server`] and [`crate::client`], the only places in mutual that do
//! (DESIGN.md "Defaults").

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{load, TlsError};

/// aws-lc-rs with AES-128-GCM first (FIELD-NOTES: faster here, no SHA-NI) and, unless TLS 1.2
/// is allowed, only TLS 1.3 suites. The proxy's listeners choose in this order unless the
/// client puts ChaCha20 first ([`crate::ServerMaterial::config_for`]); `ca serve` follows the
/// client's order; clients offer it. Key exchange keeps the provider's defaults, which with the
/// `prefer-post-quantum` feature are X25519MLKEM768 first, then X25519, P-256, P-384.
pub fn provider(allow_tls12: bool) -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    // aws-lc-rs's TLS 1.3 suites with HKDF on a keyed HMAC (see `crate::hkdf`).
    let mut suites = crate::hkdf::tls13_suites().to_vec();
    if allow_tls12 {
        suites.extend([
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]);
    }
    CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::aws_lc_rs::default_provider()
    }
}

pub(crate) static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
pub(crate) static TLS13_AND_12: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// TLS 1.3 only, or TLS 1.3 and 1.2.
pub fn versions(allow_tls12: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if allow_tls12 {
        TLS13_AND_12
    } else {
        TLS13_ONLY
    }
}

/// A certificate chain and its key, checked to belong together, with the leaf's facts for
/// metrics and logs.
pub(crate) struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    /// A file key's DER; `None` for a key in a PKCS#11 token, which signs through `certified`.
    pub key: Option<PrivateKeyDer<'static>>,
    pub certified: Arc<CertifiedKey>,
    pub not_before: i64,
    pub not_after: i64,
    pub serial: String,
}

pub(crate) fn load_credentials(
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<Credentials, TlsError> {
    let (certified, key) = load::certified_key_any(provider, cert, key)?;
    let chain = certified.cert.clone();
    let leaf = chain.first().ok_or_else(|| TlsError::BadFile {
        path: cert.to_path_buf(),
        detail: "no certificate found".into(),
    })?;
    let (_, parsed) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| TlsError::BadFile {
        path: cert.to_path_buf(),
        detail: format!("the certificate does not parse: {e}"),
    })?;
    let not_before = parsed.validity().not_before.timestamp();
    let not_after = parsed.validity().not_after.timestamp();
    let serial = mutual_policy::serial_hex(parsed.raw_serial());
    Ok(Credentials {
        chain,
        key,
        not_before,
        certified: Arc::new(certified),
        not_after,
        serial,
    })
}
