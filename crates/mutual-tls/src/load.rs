//! Reading PEM/DER files into rustls types, with errors that name the file and say what is
//! wrong with it: a misconfigured path is the most common mTLS outage, so the message matters.

use std::path::{Path, PathBuf};

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
    certs_from_bytes(path, &read(path)?)
}

/// The private key in a PEM file (PKCS#8, SEC1 or PKCS#1). Never echoes key material.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
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
