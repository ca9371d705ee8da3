//! The mTLS proxy: `serve` terminates mutual TLS in front of an unmodified backend and `connect`
//! originates it for an unmodified client. Every connection is verified, authorized, audited and
//! counted; certificates, CA bundles, CRLs and policies reload without dropping connections.
//!
//! Layout: [`listener`] holds the listener kinds (`serve` in TCP mode, its HTTP mode, `connect`);
//! [`conn`] the plumbing every connection shares (accept loop, byte pumps, backend dialling, the
//! PROXY header, polite refusal, lifetime, live re-authorization, and the [`conn::record`] that
//! counts, logs and audits each connection); [`authz`] the one place a peer is authorized;
//! [`material`] what a handshake uses; [`observe`] what is observed (audit log, metrics,
//! readiness); [`config`] (the file, its supervisor and reloads) and [`shutdown`] run many
//! listeners from one process.
//! ARCHITECTURE.md ("How a connection flows") names the function of each step.
#![forbid(unsafe_code)]

pub mod authz;
pub mod cdp;
pub mod config;
pub mod conn;
mod error;
pub mod listener;
pub mod material;
pub mod observe;
pub mod ocsp_peer;
mod rebuild;
pub mod shutdown;
pub mod staple;

// The paths the binary, the config loader and the tests use.
pub use config::{reload, supervise};
pub use conn::{accept, backend, io, lifetime, live, proxy_protocol, refuse};
pub use listener::{connect, http, serve};
pub use observe::{audit, metrics, ready};

use std::sync::Arc;

pub use audit::Audit;
pub use backend::Backend;
pub use error::ProxyError;
pub use metrics::Metrics;
pub use mutual_tls::Reason;

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
