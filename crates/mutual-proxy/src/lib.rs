//! The mTLS proxy: `serve` terminates mutual TLS in front of an unmodified backend and `connect`
//! originates it for an unmodified client. Every connection is verified, authorized, audited and
//! counted; certificates, CA bundles, CRLs and policies reload without dropping connections.
//!
//! The pieces are separate so that later listener kinds (HTTP mode, many listeners from one config
//! file, PROXY protocol) reuse them: [`Shared`] (one metrics registry and one audit log per
//! process), [`serve::Serve`] and [`connect::Connect`] (one per listener, each bound to an already
//! open `TcpListener`), [`reload`] (file watching + SIGHUP), [`shutdown`] (drain).
#![forbid(unsafe_code)]

pub mod accept;
pub mod audit;
pub mod backend;
pub mod cdp;
pub mod config;
pub mod connect;
pub mod http;
pub mod io;
pub mod lifetime;
pub mod live;
pub mod metrics;
pub mod proxy_protocol;
pub mod ready;
pub mod refuse;
pub mod reload;
pub mod serve;
pub mod shutdown;
pub mod supervise;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use audit::Audit;
pub use backend::Backend;
pub use metrics::Metrics;
pub use mutual_tls::Reason;

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
    Config(#[from] config::ConfigError),
    #[error("listener {listener:?} (line {line}): {source}")]
    InListener {
        listener: String,
        line: usize,
        source: Box<ProxyError>,
    },
    #[error("listener {listener:?}: {keys} not supported by this build of mutual")]
    Unsupported { listener: String, keys: String },
    #[error(transparent)]
    Cdp(#[from] cdp::CdpError),
}

/// What every listener of one process shares: one metrics registry, one audit log.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub audit: Arc<Audit>,
}

/// Binds a TCP listener (so callers, tests and the demo can bind port 0 first and learn the port).
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, ProxyError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind {
            addr: addr.to_string(),
            source,
        })
}
