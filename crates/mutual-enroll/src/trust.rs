//! Trust-bundle refresh: fetch the CA's current roots (`GET /v1/roots?format=json`, over TLS
//! authenticated by the roots this party trusts now), and when they changed, write the trust
//! file atomically; the proxy's file watcher then reloads it (docs/lifecycle.md). This is how a
//! root rollover reaches every `serve`, `connect` and `renew --daemon` before the CA issues from
//! the new root.
//!
//! Roots in the file that the CA never served (an operator's extra roots) are kept: a sidecar
//! `FILE.mutual-trust.json` records which roots came from the CA, so a root the CA drops (`ca
//! retire-root`) is removed and the others stay.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;

use crate::client;
use crate::endpoints::CaUrls;
use crate::files::{self, CERT_MODE};
use crate::EnrollError;

/// What the CA's `/v1/roots?format=json` says.
#[derive(Debug, serde::Deserialize)]
struct Bundle {
    version: u64,
    roots_pem: String,
}

/// The sidecar: the roots that came from the CA, and the bundle version they were.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Managed {
    version: u64,
    sha256: BTreeSet<String>,
}

/// What one refresh found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustRefresh {
    /// The CA's bundle version.
    pub version: u64,
    /// Whether the trust file was rewritten.
    pub changed: bool,
    /// Roots in the trust file now.
    pub roots: usize,
}

fn sidecar(ca: &Path) -> PathBuf {
    let mut name = ca.file_name().unwrap_or_default().to_os_string();
    name.push(".mutual-trust.json");
    ca.with_file_name(name)
}

fn sha256(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

fn bad(status: u16, detail: String) -> EnrollError {
    EnrollError::BadResponse { status, detail }
}

/// Fetches the CA's bundle and brings the trust file `ca` up to date with it.
pub async fn refresh_trust(urls: &CaUrls, ca: &Path) -> Result<TrustRefresh, EnrollError> {
    let local = files::load_roots(ca)?;
    let tls = client::pinned_config(&local, None)?;
    let tls = &tls;
    let (bundle, _) = urls
        .failover("roots", |url| async move {
            let resp = client::get(&url, tls.clone(), "/v1/roots?format=json").await?;
            serde_json::from_slice::<Bundle>(&resp.body).map_err(|e| {
                bad(
                    resp.status,
                    format!("/v1/roots: not the expected JSON: {e}"),
                )
            })
        })
        .await?;
    let served: Vec<CertificateDer<'static>> =
        rustls_pki_types::pem::PemObject::pem_slice_iter(bundle.roots_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(200, format!("/v1/roots: the bundle does not parse: {e}")))?;
    if served.is_empty() {
        return Err(bad(200, "/v1/roots: an empty trust bundle".into()));
    }
    let served_fp: BTreeSet<String> = served.iter().map(|c| sha256(c)).collect();
    let local_fp: Vec<String> = local.iter().map(|c| sha256(c)).collect();
    let side = sidecar(ca);
    let managed: Managed = std::fs::read(&side)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        // First refresh: what the file shares with the CA's bundle came from the CA.
        .unwrap_or_else(|| Managed {
            version: 0,
            sha256: local_fp
                .iter()
                .filter(|f| served_fp.contains(*f))
                .cloned()
                .collect(),
        });
    // The operator's own roots, then the CA's bundle.
    let mut next: Vec<CertificateDer<'static>> = local
        .iter()
        .zip(&local_fp)
        .filter(|(_, f)| !managed.sha256.contains(*f) && !served_fp.contains(*f))
        .map(|(c, _)| c.clone())
        .collect();
    next.extend(served.iter().cloned());
    let next_fp: BTreeSet<String> = next.iter().map(|c| sha256(c)).collect();
    let changed = next_fp != local_fp.iter().cloned().collect::<BTreeSet<_>>();
    if changed {
        mutual_pki::keys::write_atomic(ca, files::chain_pem(&next)?.as_bytes(), CERT_MODE, true)?;
    }
    if changed || managed.version != bundle.version || managed.sha256 != served_fp {
        let m = Managed {
            version: bundle.version,
            sha256: served_fp,
        };
        let text = serde_json::to_vec_pretty(&m).unwrap_or_default();
        mutual_pki::keys::write_atomic(&side, &text, CERT_MODE, true)?;
    }
    Ok(TrustRefresh {
        version: bundle.version,
        changed,
        roots: next.len(),
    })
}
