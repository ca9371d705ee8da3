//! The client side of mutual's online CA (`mutual ca serve`): enroll with a one-time token
//! (key generated here, root pinned by fingerprint), renew over mTLS, and a renewal scheduler
//! that a long-running process (the proxy, `mutual renew --daemon`) spawns on its runtime.
//!
//! The HTTP API is the contract in docs/enrollment.md. This crate never logs or returns a
//! private key or a token in an error; certificates are written atomically (temporary file in the
//! same directory, fsync, rename), keys with mode 0600.
#![forbid(unsafe_code)]

pub mod client;
pub mod endpoints;
pub mod enroll;
pub mod est;
pub mod files;
pub mod fingerprint;
pub mod hook;
pub mod renew;
pub mod schedule;
pub mod trust;

use std::path::PathBuf;

pub use client::CaUrl;
pub use endpoints::CaUrls;
pub use enroll::{enroll, EnrollOptions, Enrolled};
pub use files::CertSummary;
pub use fingerprint::Fingerprint;
pub use renew::{renew_once, RenewOptions, Renewed};
pub use schedule::{RenewalObserver, Renewer, Schedule};
pub use trust::{refresh_trust, TrustRefresh};

/// Everything that can go wrong talking to the CA or handling the files. Each variant carries
/// what a person needs to act; none carries a key or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    #[error("invalid CA URL {url:?}: {detail}")]
    BadUrl { url: String, detail: String },
    #[error(
        "invalid root fingerprint {input:?}: expected the SHA-256 of the root certificate's DER as 64 hex digits (colons optional)"
    )]
    BadFingerprint { input: String },
    #[error(
        "the CA at {url} does not serve a root with SHA-256 fingerprint {expected} (it serves [{}]); refusing to send the token",
        presented.join(", ")
    )]
    RootMismatch {
        url: String,
        expected: String,
        presented: Vec<String>,
    },
    #[error("cannot reach the CA at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// A TLS-level refusal by either side (a broken connection is `Unreachable`).
    #[error("TLS handshake with the CA at {url} failed ({reason}): {detail}")]
    Handshake {
        url: String,
        reason: &'static str,
        detail: String,
    },
    #[error("the CA at {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("the CA refused the request: {reason} (HTTP {status}): {detail}")]
    Refused {
        status: u16,
        reason: String,
        detail: String,
        /// Seconds from `Retry-After`, when the CA sent one (rate limiting).
        retry_after: Option<u64>,
    },
    #[error("unexpected answer from the CA (HTTP {status}): {detail}")]
    BadResponse { status: u16, detail: String },
    #[error("the certificate the CA returned is unusable: {detail}")]
    BadCertificate { detail: String },
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("{0}")]
    Pki(#[from] mutual_pki::PkiError),
    #[error("{0}")]
    Tls(#[from] mutual_tls::TlsError),
    #[error("the certificate {path} expired at {not_after} before it could be renewed; enroll again with a new token")]
    Expired { path: PathBuf, not_after: String },
}

impl EnrollError {
    /// Whether trying again later may succeed: the CA is down, slow, overloaded or answered with a
    /// server error. A refusal for a reason (token used, revoked, name not allowed) is not.
    pub fn is_transient(&self) -> bool {
        match self {
            EnrollError::Unreachable { .. }
            | EnrollError::Timeout { .. }
            | EnrollError::BadResponse { .. } => true,
            EnrollError::Refused { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The one-word reason a script branches on (`enroll --json`, `renew --json`): the CA's own
    /// refusal label (`token_used`, `name_not_allowed`, `revoked`...), the TLS reason of a
    /// failed handshake (`unknown_ca`, `name_mismatch`...), or what went wrong on the way.
    pub fn label(&self) -> &str {
        match self {
            EnrollError::Refused { reason, .. } => reason,
            EnrollError::Handshake { reason, .. } => reason,
            EnrollError::RootMismatch { .. } => "root_mismatch",
            EnrollError::Unreachable { .. } => "unreachable",
            EnrollError::Timeout { .. } => "timeout",
            EnrollError::BadResponse { .. } => "bad_response",
            EnrollError::BadCertificate { .. } => "malformed",
            EnrollError::Expired { .. } => "expired",
            EnrollError::BadUrl { .. } | EnrollError::BadFingerprint { .. } => "usage",
            EnrollError::File { .. } => "io",
            EnrollError::Pki(_) | EnrollError::Tls(_) => "other",
        }
    }

    /// Whether renewing can never succeed with the current certificate, so a daemon should stop
    /// trying: the CA says it is revoked, expired or not its own.
    pub fn is_fatal_for_renewal(&self) -> bool {
        match self {
            EnrollError::Refused { reason, .. } => {
                matches!(reason.as_str(), "revoked" | "expired" | "unknown_ca")
            }
            EnrollError::Expired { .. } => true,
            _ => false,
        }
    }
}
