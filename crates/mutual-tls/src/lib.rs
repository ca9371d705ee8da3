//! rustls configurations for mutual TLS, built one way for every part of mutual: the proxy's
//! server side (client certificate required, chain + validity + clientAuth + CRLs), the client
//! side (server name or exact SPIFFE ID), path validation for `cert verify`, and the mapping of
//! every failure onto the one reason vocabulary (`Reason`).
//!
//! Layout: `load` reads files (the one loader of certificates, keys and CRLs); `verify` is the
//! single path-validation routine ([`Trust::check`]) that `verifiers` plugs into rustls and
//! `verify_chain` exposes to the CLI and the conformance run; `server` and `client` build every
//! rustls config of the project (proxy, `connect`, CA server, enroll, the CRL fetcher, the probe)
//! on what `config` shares (provider, versions, credentials); `verifiers` holds every rustls
//! verifier (one signature-checking "accept any certificate" verifier among them); `classify`
//! names failures; `peer` reads what a finished handshake established.
#![forbid(unsafe_code)]

mod cache;
pub mod cdp;
pub mod classify;
pub mod client;
mod config;
pub mod hello;
mod hkdf;
pub mod lint;
pub mod load;
pub mod memory;
pub mod ocsp;
pub mod ocsp_peer;
pub mod peer;
pub mod reason;
pub mod server;
pub mod ticketer;
pub mod tickets;
pub mod verifiers;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

pub use classify::{describe, describe_io};
// Re-exported so the probe and the binary format durations and serials, and read a
// certificate's facts, as every other command.
pub use config::{provider, versions};
pub use hello::HelloFacts;
pub use lint::Profile;
pub use mutual_policy::facts::{rsa_bits, RsaSizeProblem};
pub use mutual_policy::{human, serial_hex, CertFacts};
pub use peer::{Leaf, LeafFacts, PeerCache, PeerError, TlsFacts, VerifiedPeer, Wanted};
pub use reason::Reason;
pub use verify::{
    verify_chain, ChainEntry, PeerName, Purpose, RevocationPolicy, Trust, VerifyOutcome,
    VerifyRequest,
};

/// Errors loading TLS material. Each names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    BadFile { path: PathBuf, detail: String },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// A name to check the peer against (a server name, an expected SPIFFE ID) that is not
    /// one: `what` kind of name, and why.
    #[error("invalid {what} {name:?}: {why}")]
    InvalidName {
        what: &'static str,
        name: String,
        why: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A `--key pkcs11:...` that could not be opened (module, token, PIN, object).
    #[error(transparent)]
    Hsm(#[from] mutual_hsm::HsmError),
    /// A certificate key too weak to accept (raised during verification; `weak_key`).
    #[error("the certificate {subject:?} has a weak key: {detail}")]
    WeakKey { subject: String, detail: String },
    /// The certificate does not carry the expected URI SAN / SPIFFE ID (`name_mismatch`).
    #[error("the certificate is not valid for {expected:?}; its URI SANs are [{}]", presented.join(", "))]
    UriMismatch {
        expected: String,
        presented: Vec<String>,
    },
    /// A leaf whose SPIFFE ID has no path: the trust domain's own ID, which names signing
    /// certificates; X509-SVID 5.2 has validators refuse it (`name_mismatch`).
    #[error(
        "the certificate's SPIFFE ID {uri:?} names the trust domain itself, which only a CA certificate carries; a workload's SPIFFE ID has a path (X509-SVID 3.1, 5.2)"
    )]
    SpiffeIdWithoutPath { uri: String },
    /// A URI SAN outside the trust domain that an issuing CA in the path is bound to
    /// (`name_mismatch`, like a name-constraint violation): what a leaked intermediate minting
    /// identities of another trust domain looks like.
    /// The strict profile refused a certificate or CRL of the built path (`malformed`): the
    /// first error-severity lint finding, with its rule and section.
    #[error("strict profile: {finding}")]
    ProfileViolation { finding: Box<lint::Finding> },
    #[error(
        "the certificate names {uri:?}, but its issuer {issuer:?} may only issue SPIFFE IDs in spiffe://{trust_domain}"
    )]
    OutsideTrustDomain {
        uri: String,
        trust_domain: String,
        issuer: String,
    },
}

impl TlsError {
    /// The reason label for this error when it ends a handshake or a verification.
    pub fn reason(&self) -> Reason {
        match self {
            TlsError::WeakKey { .. } => Reason::WeakKey,
            TlsError::UriMismatch { .. }
            | TlsError::OutsideTrustDomain { .. }
            | TlsError::SpiffeIdWithoutPath { .. } => Reason::NameMismatch,
            TlsError::Rustls(e) => classify_rustls_error(e),
            TlsError::BadFile { .. } | TlsError::ProfileViolation { .. } => Reason::Malformed,
            _ => Reason::Other,
        }
    }
}

/// Server side (the proxy's listener): what to present, whom to trust.
#[derive(Clone, Debug, Default)]
pub struct ServerSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM bundle of trusted roots for client certificates.
    pub ca: PathBuf,
    /// CRL files (PEM or DER); when non-empty, revocation is checked (see `revocation`).
    pub crls: Vec<PathBuf>,
    /// Allow TLS 1.2 too (default: TLS 1.3 only).
    pub allow_tls12: bool,
    /// ALPN protocols to offer, in order (empty: none).
    pub alpn: Vec<Vec<u8>>,
}

/// Settings beyond the original contract, kept apart so existing struct literals of
/// `ServerSettings`/`ClientSettings` keep compiling.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// How CRLs apply. Default: the whole chain, unknown status denied, expired CRL denied;
    /// so with CRLs, every issuer in the chain (root too) needs a current CRL.
    pub revocation: RevocationPolicy,
    /// Client side only: CRLs for the server's chain (default none: no revocation check).
    pub client_crls: Vec<PathBuf>,
    /// Server side: CRLs fetched from the client certificates' distribution points
    /// (`--crl-from-cdp`), with the `revocation_unknown` rule; see [`cdp`].
    pub cdp: Option<Arc<cdp::CdpRevocation>>,
    /// Both sides: OCSP answers about the peer's leaf, fetched from the responder in its AIA
    /// (`serve --ocsp-from-aia`, `connect --ocsp`), with the `revocation_unknown` rule; see
    /// [`ocsp_peer`].
    pub ocsp_peer: Option<Arc<ocsp_peer::OcspPeerRevocation>>,
    /// Server side: decides, from the verified leaf, whether the peer is allowed at all.
    /// Asked inside the handshake, after the chain checks pass, so that a refusal travels to
    /// the client as an `access_denied` alert instead of a close after a completed handshake.
    pub authorize: Option<PeerCheck>,
    /// Verification profile of the peer's chain (both sides): compatible (default) or strict,
    /// which adds the `lint` module's error rules on the built path ([`Trust::with_profile`]).
    pub profile: Profile,
    /// Server side: staple this OCSP response for the listener's own certificate
    /// (`--ocsp-staple`), when it is about the certificate being loaded ([`ocsp::Stapling`]).
    pub ocsp_staple: Option<ocsp::Stapling>,
}

/// Decides from a verified leaf (the verifier's own parse of it) whether the peer is allowed
/// (true allows).
pub type PeerCheckFn = dyn Fn(&Leaf<'_>) -> bool + Send + Sync;

/// A connection-level authorization hook for [`TlsOptions::authorize`].
#[derive(Clone)]
pub struct PeerCheck(pub Arc<PeerCheckFn>);

impl std::fmt::Debug for PeerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerCheck")
    }
}

/// A loaded, validated server configuration and facts about it for metrics/logs.
#[derive(Clone)]
pub struct ServerMaterial {
    /// The configuration when nothing is known of the ClientHello: [`ServerMaterial::config_for`]
    /// of a new client that does not put ChaCha20 first (two tickets, the suite in our order).
    pub config: Arc<rustls::ServerConfig>,
    /// One configuration per kind of ClientHello, indexed `[prefers ChaCha20][offers a
    /// session]` ([`HelloFacts`]): the same verifier, certificate, ticketer and session cache
    /// (the same `Arc`s); they differ in the tickets sent after the handshake (one to a resuming
    /// client, which replaces the one it spent, as OpenSSL does; two to a new one) and in whose
    /// order picks the suite (ours, AES-128-GCM-SHA256 first, unless the client puts ChaCha20
    /// first).
    pub(crate) configs: [[Arc<rustls::ServerConfig>; 2]; 2],
    /// notBefore of the served leaf, Unix seconds (with notAfter: the lifetime, which the
    /// expiry alerts take a fraction of).
    pub cert_not_before: i64,
    /// notAfter of the served leaf, Unix seconds.
    pub cert_not_after: i64,
    /// Serial of the served leaf, lowercase hex.
    pub cert_serial: String,
    /// The roots and CRLs the config verifies clients with (to re-check a resumed session's
    /// stored client chain against the current CRLs: see [`ServerMaterial::recheck_peer`]).
    pub trust: Arc<Trust>,
}

impl ServerMaterial {
    /// The configuration for a client whose ClientHello says `hello`.
    pub fn config_for(&self, hello: HelloFacts) -> &Arc<rustls::ServerConfig> {
        &self.configs[usize::from(hello.prefers_chacha)][usize::from(hello.offers_session)]
    }

    /// Re-validates a client chain (as from `peer_certificates()`) with this material's trust,
    /// now. Resumed sessions skip the verifier inside rustls; calling this after every
    /// handshake closes that gap. Errors come back as a reason and a sentence.
    pub fn recheck_peer(
        &self,
        chain: &[rustls_pki_types::CertificateDer<'_>],
    ) -> Result<(), (Reason, String)> {
        self.recheck_peer_at(chain, rustls_pki_types::UnixTime::now())
    }

    /// [`ServerMaterial::recheck_peer`] as of `time` (live re-authorization of an established
    /// connection checks trust and revocation as of before its peer's expiry: expiry alone does
    /// not end a connection, see docs/proxy.md).
    pub fn recheck_peer_at(
        &self,
        chain: &[rustls_pki_types::CertificateDer<'_>],
        time: rustls_pki_types::UnixTime,
    ) -> Result<(), (Reason, String)> {
        recheck_chain(
            &self.trust,
            chain,
            time,
            &Purpose::Client,
            None,
            (Reason::NoClientCert, "the client sent no certificate"),
        )
    }
}

/// Re-validates a peer's chain (leaf first) after a handshake, for both directions; `none` is
/// the verdict when the peer presented nothing.
fn recheck_chain(
    trust: &Trust,
    chain: &[rustls_pki_types::CertificateDer<'_>],
    time: rustls_pki_types::UnixTime,
    purpose: &Purpose,
    name: Option<&PeerName>,
    none: (Reason, &str),
) -> Result<(), (Reason, String)> {
    let Some((leaf, rest)) = chain.split_first() else {
        return Err((none.0, none.1.to_string()));
    };
    trust
        .recheck(leaf, rest, time, purpose, name)
        .map_err(|e| (classify_rustls_error(&e), describe(&e)))
}

/// Loads and validates everything in `s` and builds a config that requires and verifies a
/// client certificate. A bad file is an error; nothing half-loaded is returned. Each call makes
/// a new ticketer and session cache, so swapping in a rebuilt config ends old resumptions.
pub fn build_server_config(s: &ServerSettings) -> Result<ServerMaterial, TlsError> {
    server::mutual(s, &TlsOptions::default())
}

/// [`build_server_config`] with extra options (revocation policy).
pub fn build_server_config_with(
    s: &ServerSettings,
    o: &TlsOptions,
) -> Result<ServerMaterial, TlsError> {
    server::mutual(s, o)
}

/// Client side (`mutual connect`, the probe): what to present, how to check the server.
#[derive(Clone, Debug, Default)]
pub struct ClientSettings {
    /// Client certificate chain; leave both `cert` and `key` empty to present none.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM bundle of trusted roots for the server certificate.
    pub ca: PathBuf,
    /// Name to verify (and send as SNI); defaults to the remote host.
    pub server_name: Option<String>,
    /// When set, the server must present exactly this SPIFFE ID (URI SAN) instead of a DNS name.
    pub expect_spiffe: Option<String>,
    pub allow_tls12: bool,
    pub alpn: Vec<Vec<u8>>,
}

#[derive(Clone)]
pub struct ClientMaterial {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
    /// 0 when no client certificate is presented.
    pub cert_not_before: i64,
    /// 0 when no client certificate is presented.
    pub cert_not_after: i64,
    /// Empty when no client certificate is presented.
    pub cert_serial: String,
    /// The roots (and CRLs) the server's chain is verified with, and the SPIFFE ID it must
    /// carry: to re-check a resumed session's stored server chain ([`ClientMaterial::recheck_peer`]).
    pub trust: Arc<Trust>,
    pub expect_spiffe: Option<String>,
}

impl ClientMaterial {
    /// Re-validates the server's chain (as from `peer_certificates()`) with this material's
    /// trust, now, for the name this config connects to. rustls does not re-run the server
    /// verifier on a resumed session, so without this a client keeps trusting a server whose
    /// certificate expired (or was revoked) after the ticket was issued.
    pub fn recheck_peer(
        &self,
        chain: &[rustls_pki_types::CertificateDer<'_>],
    ) -> Result<(), (Reason, String)> {
        let name = match &self.expect_spiffe {
            Some(u) => PeerName::Uri(u.clone()),
            None => PeerName::Server(self.server_name.clone()),
        };
        recheck_chain(
            &self.trust,
            chain,
            rustls_pki_types::UnixTime::now(),
            &Purpose::Server,
            Some(&name),
            (Reason::Other, "the server sent no certificate"),
        )
    }
}

/// `remote_host` is the host part of the remote address, used when no server name is set
/// (an IPv6 literal may be bracketed). SNI is sent when the name is a DNS name.
pub fn build_client_config(
    s: &ClientSettings,
    remote_host: &str,
) -> Result<ClientMaterial, TlsError> {
    client::mutual(s, remote_host, &TlsOptions::default())
}

/// [`build_client_config`] with extra options (CRLs for the server's chain).
pub fn build_client_config_with(
    s: &ClientSettings,
    remote_host: &str,
    o: &TlsOptions,
) -> Result<ClientMaterial, TlsError> {
    client::mutual(s, remote_host, o)
}

/// The reason label for a failed TLS accept/connect (tokio-rustls wraps rustls::Error in io::Error).
pub fn classify_io_error(e: &std::io::Error) -> Reason {
    classify::classify_io_error(e)
}

/// The reason label for a rustls error.
pub fn classify_rustls_error(e: &rustls::Error) -> Reason {
    classify::classify_rustls_error(e)
}

#[cfg(test)]
mod tests;
