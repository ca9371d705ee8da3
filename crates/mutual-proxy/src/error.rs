//! The one error type of mutual-proxy: everything that can stop a listener from starting or
//! reloading.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop the proxy from starting or reloading. Each variant names the file,
/// address or flag concerned; none carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] mutual_tls::TlsError),
    #[error("policy: {0}")]
    Policy(#[from] mutual_policy::PolicyError),
    #[error("cannot read policy file {path}: {source}")]
    PolicyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no authorization rule: every client would be denied; give --allow-spiffe/--allow-dns/--allow-cn/--allow-ou, --policy FILE, or --allow-any to allow every authenticated client"
    )]
    NoPolicy,
    #[error("cannot open audit log {path}: {source}")]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid backend {spec:?}: {why}")]
    InvalidBackend { spec: String, why: String },
    /// `connect`'s `--remote` / `remote`: an mTLS server, HOST:PORT.
    #[error("invalid remote {spec:?}: {why}")]
    InvalidRemote { spec: String, why: String },
    #[error("cannot watch {path} for changes: {detail}")]
    Watch { path: PathBuf, detail: String },
    #[error("{addr} is not a loopback address: plaintext clients could connect from the network; pass --allow-remote-clients if that is intended")]
    NonLoopbackListen { addr: SocketAddr },
    #[error(
        "the policy has rules with `methods` or `paths`, which only HTTP mode can check; serve with --http (mode = \"http\"), or remove those keys"
    )]
    HttpRulesInTcpMode,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("listener {listener:?} (line {line}): {source}")]
    InListener {
        listener: String,
        line: usize,
        source: Box<ProxyError>,
    },
    #[error(transparent)]
    Cdp(#[from] crate::cdp::CdpError),
    /// Enrollment with the online CA failed (the binary's message, with its causes).
    #[error("{0}")]
    Enroll(String),
}
