//! The trust bundle the CA publishes (`GET /v1/roots`): the roots relying parties should trust,
//! with a version that only grows, so that `serve`, `connect` and `renew --daemon` can tell a
//! new bundle from the one they hold (docs/lifecycle.md).
//!
//! A CA as `ca init` left it publishes `root.pem` as version 1. A root rollover writes
//! `trust-bundle.pem` (old and new roots) and `trust.toml` (the version) in the CA directory;
//! every replica reads them at each request, as it reads `issuers.toml`.
use std::path::Path;

use super::{io, ROOT_CERT};
use crate::PkiError;

/// The roots currently published, PEM (absent: `root.pem` alone).
pub const TRUST_BUNDLE: &str = "trust-bundle.pem";
/// The published bundle's version and, during a root rollover, its phase.
pub const TRUST_STATE: &str = "trust.toml";

/// `trust.toml`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TrustState {
    /// Grows by one with every change of the bundle.
    pub version: u64,
    /// Unix seconds when this version was first published.
    #[serde(default)]
    pub published_at: i64,
    /// Where a root rollover stands: `published` (the bundle holds both roots; issuing still
    /// from the old one), `active` (issuing from the new one, chains carry the cross-signed
    /// new root), `retired` (the bundle holds the new root only). Absent: no rollover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The new root's id (`roots/ID.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_root: Option<String>,
    /// The new root's key when it is in a PKCS#11 token (`rotate-root --key-storage pkcs11`);
    /// absent: `roots/ID.key`, encrypted with the CA password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_root_key: Option<mutual_hsm::KeyRef>,
    /// How long the bundle with both roots must have been published before issuing from the
    /// new root (seconds).
    #[serde(default)]
    pub min_overlap_secs: u64,
}

/// The CA's `trust.toml`; the default (version 1, no rollover) when there is none.
pub fn read_state(dir: &Path) -> Result<TrustState, PkiError> {
    let p = dir.join(TRUST_STATE);
    match std::fs::read_to_string(&p) {
        Ok(t) => toml::from_str(&t).map_err(|e| PkiError::Config {
            path: p.clone(),
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustState {
            version: 1,
            ..Default::default()
        }),
        Err(e) => Err(io(&p)(e)),
    }
}

/// Writes `trust.toml` atomically (the commit point of each rollover step).
pub(super) fn write_state(dir: &Path, s: &TrustState) -> Result<(), PkiError> {
    let text = toml::to_string(s).map_err(|e| PkiError::Config {
        path: dir.join(TRUST_STATE),
        detail: e.to_string(),
    })?;
    crate::keys::write_atomic(&dir.join(TRUST_STATE), text.as_bytes(), 0o644, true)
}

/// What `/v1/roots` serves.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrustBundle {
    pub version: u64,
    /// Every root, PEM, concatenated.
    pub pem: String,
    /// SHA-256 of each root's DER, lowercase hex, in the order of `pem`.
    pub sha256: Vec<String>,
}

/// The bundle published from the CA in `dir`.
pub fn trust_bundle(dir: &Path) -> Result<TrustBundle, PkiError> {
    let state_path = dir.join(TRUST_STATE);
    let (version, bundle_path) = match std::fs::read_to_string(&state_path) {
        Ok(t) => {
            let s: TrustState = toml::from_str(&t).map_err(|e| PkiError::Config {
                path: state_path.clone(),
                detail: e.to_string(),
            })?;
            (s.version.max(1), dir.join(TRUST_BUNDLE))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (1, dir.join(ROOT_CERT)),
        Err(e) => return Err(io(&state_path)(e)),
    };
    let pem = std::fs::read_to_string(&bundle_path).map_err(io(&bundle_path))?;
    let mut sha256 = Vec::new();
    for p in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let p = p.map_err(|e| PkiError::Config {
            path: bundle_path.clone(),
            detail: format!("not PEM: {e}"),
        })?;
        if p.label == "CERTIFICATE" {
            sha256.push(super::sha256_hex(&p.contents));
        }
    }
    if sha256.is_empty() {
        return Err(PkiError::Config {
            path: bundle_path,
            detail: "no CERTIFICATE in the trust bundle".into(),
        });
    }
    Ok(TrustBundle {
        version,
        pem,
        sha256,
    })
}
