//! Reading the current certificate and key, checking what the CA sent back, and writing the new
//! files so that nobody ever reads a half-written one.
//!
//! Every file goes to a temporary name in its own directory (mode set before any byte is
//! written: 0600 for keys), is fsynced, then renamed over the real name. When a renewal changes
//! the key, the key and certificate are both staged first and then renamed key-then-cert,
//! back to back; the proxy's reload debounces the two events into one and rejects a pair that
//! does not match, so the window cannot publish a mismatched pair (docs/enrollment.md). Without
//! a new key only the certificate file changes and the pair always matches.

use std::path::{Path, PathBuf};

use mutual_pki::keys::StagedFile;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::EnrollError;

/// Mode for certificate files (public).
pub const CERT_MODE: u32 = 0o644;
/// Mode for private key files.
pub const KEY_MODE: u32 = 0o600;

/// What a certificate says about itself, for scheduling and log lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Lowercase hex, no colons (the inventory's form).
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// `dns:x`, `ip:x`, `uri:x`, in certificate order.
    pub sans: Vec<String>,
}

impl CertSummary {
    pub fn of(der: &[u8]) -> Result<CertSummary, String> {
        let (_, c) = X509Certificate::from_der(der).map_err(|e| format!("does not parse: {e}"))?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = c.subject_alternative_name() {
            for n in &ext.value.general_names {
                match n {
                    GeneralName::DNSName(d) => sans.push(format!("dns:{d}")),
                    GeneralName::URI(u) => sans.push(format!("uri:{u}")),
                    GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            sans.push(format!("ip:{ip}"));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(CertSummary {
            serial: mutual_pki::serial_hex(c.raw_serial()),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            sans,
        })
    }

    /// Seconds the certificate is valid for in total.
    pub fn lifetime(&self) -> i64 {
        (self.not_after - self.not_before).max(0)
    }
}

/// The certificate chain and key currently on disk, checked to belong together.
pub struct Current {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub summary: CertSummary,
}

/// Loads `cert` and `key` and checks that the key is the certificate's.
pub fn load_current(cert: &Path, key: &Path) -> Result<Current, EnrollError> {
    let chain = mutual_tls::load::load_certs(cert)?;
    let key_der = mutual_tls::load::load_key(key)?;
    check_pair(&chain, &key_der).map_err(|detail| match detail {
        PairError::Mismatch => EnrollError::Tls(mutual_tls::TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        PairError::Other(detail) => EnrollError::File {
            path: cert.to_path_buf(),
            detail,
        },
    })?;
    let leaf = chain.first().ok_or_else(|| EnrollError::File {
        path: cert.to_path_buf(),
        detail: "no certificate found".into(),
    })?;
    let summary = CertSummary::of(leaf.as_ref()).map_err(|detail| EnrollError::File {
        path: cert.to_path_buf(),
        detail: format!("the certificate {detail}"),
    })?;
    Ok(Current {
        chain,
        key: key_der,
        summary,
    })
}

pub(crate) enum PairError {
    Mismatch,
    Other(String),
}

/// Whether `key` is the private key of the first certificate in `chain`.
pub(crate) fn check_pair(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), PairError> {
    let provider = mutual_tls::provider(false);
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| PairError::Other(format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(chain.to_vec(), signing);
    match ck.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(PairError::Mismatch),
        Err(e) => Err(PairError::Other(format!(
            "the certificate cannot be used with its key: {e}"
        ))),
    }
}

/// Checks a chain the CA returned: it parses, its leaf belongs to `key`, and it chains to one of
/// `roots` now. Returns the certificates and the leaf's summary.
pub fn check_issued(
    chain_pem: &str,
    key: &PrivateKeyDer<'static>,
    roots: &[CertificateDer<'static>],
) -> Result<(Vec<CertificateDer<'static>>, CertSummary), EnrollError> {
    let bad = |detail: String| EnrollError::BadCertificate { detail };
    let chain = mutual_tls::load::certs_from_bytes(Path::new("answer"), chain_pem.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    match check_pair(&chain, key) {
        Ok(()) => {}
        Err(PairError::Mismatch) => {
            return Err(bad(
                "the certificate is not for the key this client holds".into()
            ))
        }
        Err(PairError::Other(d)) => return Err(bad(d)),
    }
    let leaf = chain[0].clone();
    let out = mutual_tls::verify_chain(&mutual_tls::VerifyRequest {
        leaf: leaf.clone(),
        intermediates: chain[1..].to_vec(),
        roots: roots.to_vec(),
        purpose: mutual_tls::Purpose::Any,
        ..Default::default()
    });
    if !out.valid {
        return Err(bad(format!(
            "it does not chain to the pinned root ({}): {}",
            out.reason.label(),
            out.detail
        )));
    }
    let summary = CertSummary::of(leaf.as_ref()).map_err(bad)?;
    Ok((chain, summary))
}

/// Files staged for one atomic-per-file publication, committed in the order given.
#[derive(Default)]
pub struct Staged(Vec<StagedFile>);

impl Staged {
    pub fn add(&mut self, target: &Path, data: &[u8], mode: u32) -> Result<(), EnrollError> {
        self.0.push(StagedFile::write(target, data, mode)?);
        Ok(())
    }

    /// A private key (PEM), readable by its owner only.
    pub fn key(&mut self, target: &Path, pem: &str) -> Result<(), EnrollError> {
        self.add(target, pem.as_bytes(), KEY_MODE)
    }

    /// Certificates (a chain, or roots) as PEM, readable by all.
    pub fn certs(
        &mut self,
        target: &Path,
        certs: &[CertificateDer<'static>],
    ) -> Result<(), EnrollError> {
        self.add(target, chain_pem(certs)?.as_bytes(), CERT_MODE)
    }

    /// Renames every staged file over its target, in order.
    pub fn commit(self) -> Result<(), EnrollError> {
        for f in self.0 {
            f.commit(true)?;
        }
        Ok(())
    }
}

/// PEM for a chain.
pub fn chain_pem(chain: &[CertificateDer<'static>]) -> Result<String, EnrollError> {
    let mut out = String::new();
    for c in chain {
        out.push_str(&mutual_pki::pem_encode("CERTIFICATE", c.as_ref())?);
    }
    Ok(out)
}

/// Creates `dir` (0700 when new: it will hold a key).
pub fn ensure_dir(dir: &Path) -> Result<(), EnrollError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| EnrollError::File {
            path: dir.to_path_buf(),
            detail: format!("cannot create the directory: {e}"),
        })
}

/// The parent directory of a file path (`.` for a bare name).
pub fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Roots from a PEM file.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, EnrollError> {
    Ok(mutual_tls::load::load_certs(path)?)
}
