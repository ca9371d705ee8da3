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
