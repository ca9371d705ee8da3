//! rustls configurations for mutual TLS, built one way for every part of mutual: the proxy's
//! server side (client certificate required, chain + validity + clientAuth + CRLs), the client
//! side (server name or exact SPIFFE ID), path validation for `cert verify`, and the mapping of
//! every failure onto the one reason vocabulary (`Reason`).
//!
//! INTERFACE STUB: the signatures below are the contract other crates build against; bodies are
//! being written. Keep the signatures; add fields/functions freely.
#![forbid(unsafe_code)]

pub mod reason;

use std::path::PathBuf;
use std::sync::Arc;

pub use reason::Reason;

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
    #[error("invalid name {0:?}")]
    InvalidName(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Server side (the proxy's listener): what to present, whom to trust.
#[derive(Clone, Debug, Default)]
pub struct ServerSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM bundle of trusted roots for client certificates.
    pub ca: PathBuf,
    /// CRL files (PEM or DER); when non-empty, revocation is checked for the whole chain.
    pub crls: Vec<PathBuf>,
    /// Allow TLS 1.2 too (default: TLS 1.3 only).
    pub allow_tls12: bool,
    /// ALPN protocols to offer, in order (empty: none).
    pub alpn: Vec<Vec<u8>>,
}

/// A loaded, validated server configuration and facts about it for metrics/logs.
#[derive(Clone)]
pub struct ServerMaterial {
    pub config: Arc<rustls::ServerConfig>,
    /// notAfter of the served leaf, Unix seconds.
    pub cert_not_after: i64,
    /// Serial of the served leaf, lowercase hex.
    pub cert_serial: String,
}

/// Loads and validates everything in `s` and builds a config that requires and verifies a
/// client certificate. A bad file is an error; nothing half-loaded is returned.
pub fn build_server_config(s: &ServerSettings) -> Result<ServerMaterial, TlsError> {
    let _ = s;
    unimplemented!("mutual-tls: build_server_config is being written")
}

/// Client side (`mutual connect`, the probe): what to present, how to check the server.
#[derive(Clone, Debug, Default)]
pub struct ClientSettings {
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
    pub cert_not_after: i64,
    pub cert_serial: String,
}

/// `remote_host` is the host part of the remote address, used when no server name is set.
pub fn build_client_config(s: &ClientSettings, remote_host: &str) -> Result<ClientMaterial, TlsError> {
    let _ = (s, remote_host);
    unimplemented!("mutual-tls: build_client_config is being written")
}

/// The reason label for a failed TLS accept/connect (tokio-rustls wraps rustls::Error in io::Error).
pub fn classify_io_error(e: &std::io::Error) -> Reason {
    let _ = e;
    unimplemented!("mutual-tls: classify_io_error is being written")
}

/// The reason label for a rustls error.
pub fn classify_rustls_error(e: &rustls::Error) -> Reason {
    let _ = e;
    unimplemented!("mutual-tls: classify_rustls_error is being written")
}
