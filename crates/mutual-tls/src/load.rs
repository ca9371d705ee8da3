//! Reading PEM/DER files into rustls types, with errors that name the file and say what is
//! wrong with it: a misconfigured path is the most common mTLS outage, so the message matters.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::TlsError;

fn bad(path: &Path, detail: impl Into<String>) -> TlsError {
    TlsError::BadFile {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_err(path: &Path, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(source) => TlsError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => bad(
            path,
            format!("not valid PEM: {}", crate::classify::describe_pem(&other)),
        ),
    }
}

/// All certificates in a PEM file (or one DER certificate), in file order.
pub fn certs_from_bytes(
    path: &Path,
    data: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if data.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(data.to_vec())]);
    }
    let certs = CertificateDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(bad(
            path,
            "no certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks)",
        ));
    }
    Ok(certs)
}

/// All certificates in a file; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if crate::memory::is_memory(path) {
        return crate::memory::certs(path);
    }
    certs_from_bytes(path, &read(path)?)
}

/// The private key in a PEM file (PKCS#8, SEC1 or PKCS#1). Never echoes key material.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    if crate::memory::is_memory(path) {
        return crate::memory::key(path);
    }
    let data = read(path)?;
    if data.first() == Some(&0x30) {
        return PrivateKeyDer::try_from(data)
            .map_err(|e| bad(path, format!("not a private key: {e}")));
    }
    match PrivateKeyDer::from_pem_slice(&data) {
        Ok(k) => Ok(k),
        Err(pem::Error::NoItemsFound) => {
            let text = String::from_utf8_lossy(&data);
            if text.contains("ENCRYPTED PRIVATE KEY") {
                Err(bad(
                    path,
                    "the private key is encrypted; give an unencrypted key file",
                ))
            } else {
                Err(bad(
                    path,
                    "no private key found (expected a PEM \"PRIVATE KEY\" block)",
                ))
            }
        }
        Err(e) => Err(pem_err(path, e)),
    }
}

/// A certificate chain and its private key, checked to belong together: the key usable by
/// `provider` and matching the leaf. Also returns the key's DER (rustls' builders take it).
pub fn certified_key(
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<(CertifiedKey, PrivateKeyDer<'static>), TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signing = provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| bad(key, format!("unsupported private key: {e}")))?;
    Ok((
        matched(CertifiedKey::new(chain, signing), cert, key)?,
        key_der,
    ))
}

/// Whether a `--key` value is a PKCS#11 URI (`pkcs11:token=...;object=...`) rather than a file.
pub fn is_pkcs11(key: &Path) -> bool {
    mutual_hsm::is_pkcs11(key)
}

/// Like [`certified_key`], for a key that is a file or a key in a PKCS#11 token (`key` a
/// `pkcs11:` URI; the module from its `module-path` or `$MUTUAL_PKCS11_MODULE`, the PIN from
/// its `pin-source` or `$MUTUAL_PKCS11_PIN`; docs/keys.md). The DER comes back only for a file
/// key: a token key never leaves the token, and rustls signs through it handshake by handshake.
pub fn certified_key_any(
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<(CertifiedKey, Option<PrivateKeyDer<'static>>), TlsError> {
    if !is_pkcs11(key) {
        let (ck, der) = certified_key(provider, cert, key)?;
        return Ok((ck, Some(der)));
    }
    let chain = load_certs(cert)?;
    let token_key = token_key(key)?;
    let signing = Arc::new(mutual_hsm::TlsSigningKey(token_key));
    Ok((matched(CertifiedKey::new(chain, signing), cert, key)?, None))
}

/// The token key a `pkcs11:` URI names, opened (module loaded once, token logged in once).
pub fn token_key(key: &Path) -> Result<Arc<mutual_hsm::TokenKey>, TlsError> {
    let uri = key.to_str().unwrap_or_default();
    Ok(mutual_hsm::KeyRef::new(uri, None, None)?.open()?)
}

/// Where a private key lives, for `cert inspect --key` and the probe: a file or a PKCS#11
/// token, with the public key (SPKI DER) to match against a certificate.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyLocation {
    /// `file` or `pkcs11`.
    pub storage: &'static str,
    /// The file, or the token key's URI (no PIN in it).
    pub location: String,
    /// The token, the module and how the token protects the key (pkcs11 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<mutual_hsm::KeyInfo>,
    #[serde(skip)]
    pub spki: Vec<u8>,
}

impl KeyLocation {
    /// Whether this key is the one `cert` (DER) certifies.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        x509_parser::parse_x509_certificate(cert.as_ref())
            .is_ok_and(|(_, x)| x.public_key().raw == self.spki.as_slice())
    }
}

/// Opens `key` (a file or a `pkcs11:` URI) far enough to say where it lives and what its
/// public half is. Nothing secret is returned.
pub fn key_location(key: &Path) -> Result<KeyLocation, TlsError> {
    if is_pkcs11(key) {
        let k = token_key(key)?;
        return Ok(KeyLocation {
            storage: "pkcs11",
            location: k.uri().to_string(),
            token: Some(k.info()),
            spki: k.spki().to_vec(),
        });
    }
    let der = load_key(key)?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| bad(key, format!("unsupported private key: {e}")))?;
    let spki = signing
        .public_key()
        .map(|p| p.as_ref().to_vec())
        .unwrap_or_default();
    Ok(KeyLocation {
        storage: "file",
        location: key.display().to_string(),
        token: None,
        spki,
    })
}

/// The health of every token key this process signs with (for `/readyz` and metrics); keys
/// whose last signature failed are tried once more first, so a token that came back is seen.
pub fn token_key_status() -> Vec<mutual_hsm::KeyStatus> {
    mutual_hsm::recheck_keys()
}

fn matched(ck: CertifiedKey, cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    match ck.keys_match() {
        // A key that cannot tell its public half cannot be checked here; rustls checks it
        // again when it signs.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        Err(e) => Err(bad(
            cert,
            format!("the certificate cannot be used with its key: {e}"),
        )),
    }
}

/// CRLs (PEM blocks or one DER CRL) from several files.
pub fn load_crls(
    paths: &[PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for path in paths {
        let data = read(path)?;
        let crls = if data.first() == Some(&0x30) {
            vec![CertificateRevocationListDer::from(data)]
        } else {
            CertificateRevocationListDer::pem_slice_iter(&data)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err(path, e))?
        };
        if crls.is_empty() {
            return Err(bad(
                path,
                "no CRL found (expected PEM \"BEGIN X509 CRL\" blocks)",
            ));
        }
        for crl in &crls {
            webpki::OwnedCertRevocationList::from_der(crl.as_ref()).map_err(|e| {
                bad(
                    path,
                    format!(
                        "the CRL does not parse: {}",
                        crate::classify::describe_webpki(&e)
                    ),
                )
            })?;
        }
        out.extend(crls);
    }
    Ok(out)
}

/// Whether DER bytes are a certificate webpki can parse (to tell "not a certificate" input
/// apart from a certificate that fails validation).
pub fn check_certificate_der(path: &Path, der: &CertificateDer<'_>) -> Result<(), TlsError> {
    webpki::EndEntityCert::try_from(der)
        .map(|_| ())
        .map_err(|e| {
            bad(
                path,
                format!(
                    "not a valid X.509 certificate: {}",
                    crate::classify::describe_webpki(&e)
                ),
            )
        })
}

/// Whether the bytes have the shape of a certificate at all: a DER SEQUENCE holding a SEQUENCE
/// (the signed part), a SEQUENCE (the algorithm) and a BIT STRING (the signature), lengths
/// consistent. `cert verify` tells "not a certificate" input (a usage error, exit 2) apart from
/// "a certificate that is invalid" (trailing data, v1, a duplicate or unknown critical
/// extension, a malformed SAN: a verdict, exit 1) with this, and leaves the rest to path
/// validation.
pub fn check_certificate_shape(path: &Path, der: &CertificateDer<'_>) -> Result<(), TlsError> {
    let not_cert = || {
        bad(
            path,
            "not a certificate: the content is not a DER X.509 structure (SEQUENCE of signed part, algorithm, signature)",
        )
    };
    let (tag, content, _) = der_tlv(der.as_ref()).ok_or_else(not_cert)?;
    if tag != 0x30 {
        return Err(not_cert());
    }
    let mut rest = content;
    for want in [0x30, 0x30, 0x03] {
        let (tag, _, after) = der_tlv(rest).ok_or_else(not_cert)?;
        if tag != want {
            return Err(not_cert());
        }
        rest = after;
    }
    Ok(())
}

/// One definite-length DER TLV: (tag, content, the bytes after it).
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else if (0x81..=0x84).contains(&first) {
        let n = usize::from(first - 0x80);
        let bytes = b.get(2..2 + n)?;
        (
            bytes
                .iter()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x)),
            2 + n,
        )
    } else {
        return None;
    };
    let end = header.checked_add(len)?;
    Some((tag, b.get(header..end)?, b.get(end..)?))
}
