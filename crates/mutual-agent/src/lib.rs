//! `mutual agent` (docs/agent.md): the SPIFFE Workload API on a Unix socket, for every workload
//! of one node. The agent proves the node's identity to the online CA with the node certificate
//! (mTLS), learns the registration entries assigned to the node, attests each caller by its
//! socket credentials ([`attest`]), matches the entries' selectors ([`selector`]), and hands the
//! caller SVIDs whose keys it generated in memory ([`svids`], [`workload`]). The CA decides what
//! a node may get; the agent decides which local process gets it.
#![forbid(unsafe_code)]

pub mod attest;
pub mod authority;
pub mod ca;
pub mod client;
pub mod selector;
pub mod svids;
pub mod workload;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mutual_enroll::{CaUrls, EnrollError};

/// The generated Workload API types and service (proto/workload.proto, which has no package).
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]
pub mod proto {
    tonic::include_proto!("_");
}

/// The CA's endpoints for agents (crates/mutual-ca-server/src/agent.rs).
pub const ENTRIES: &str = "/v1/agent/entries";
pub const SVID: &str = "/v1/agent/svid";

/// Mode of the socket: every local user may connect, since who gets what is decided by
/// attestation, not by who can open the socket (SPIRE's agent socket is world-writable too).
pub const SOCKET_MODE: u32 = 0o666;

/// What `mutual agent` runs with.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub ca_url: CaUrls,
    pub socket: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Renew the node certificate as `mutual renew --daemon` would.
    pub renew_node: bool,
}

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The node certificate, key or roots (a configuration error).
    #[error(transparent)]
    Node(#[from] EnrollError),
    #[error("the node certificate {path} carries no SPIFFE ID; an agent's node identity is spiffe://TRUST-DOMAIN/...")]
    NoNodeId { path: String },
    #[error("socket {path}: {detail}")]
    Socket { path: String, detail: String },
    #[error("the system's random source failed")]
    Random,
    #[error("the Workload API server failed: {0}")]
    Serve(String),
}

/// A fresh registration entry id: 64 random bits in hex.
pub fn new_entry_id() -> Result<String, AgentError> {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| AgentError::Random)?;
    Ok(hex::encode(b))
}

/// The node's SPIFFE ID, from its certificate.
pub fn node_id(cert: &Path) -> Result<mutual_policy::SpiffeId, AgentError> {
    // The key is checked with the certificate by the first call to the CA.
    let chain = mutual_enroll::files::load_roots(cert)?;
    let no_id = || AgentError::NoNodeId {
        path: cert.display().to_string(),
    };
    let leaf = chain.first().ok_or_else(no_id)?;
    let id = mutual_policy::Identity::from_der(leaf.as_ref()).map_err(|_| no_id())?;
    let spiffe = id.spiffe.ok_or_else(no_id)?;
    mutual_policy::SpiffeId::parse(&spiffe).map_err(|_| no_id())
}

/// Binds the socket: a stale socket from an earlier run (an agent killed with SIGKILL leaves
/// one) is replaced; a socket someone still listens on, or any other file there, is left alone
/// and refused.
fn bind(path: &Path) -> Result<tokio::net::UnixListener, AgentError> {
    let err = |detail: String| AgentError::Socket {
        path: path.display().to_string(),
        detail,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // Only a refused connection proves nobody listens: any other failure (no search
            // permission, say) leaves the file alone.
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(err(
                        "another process is listening on it; not replacing it".into()
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)
                        .map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
                }
                Err(e) => return Err(err(format!("cannot tell whether it is in use: {e}"))),
            }
        }
        Ok(_) => return Err(err("exists and is not a socket; not replacing it".into())),
        Err(_) => {}
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create its directory: {e}")))?;
    }
    let l = tokio::net::UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| err(format!("cannot set its mode: {e}")))?;
    Ok(l)
}

/// Serves the Workload API until `shutdown` completes; removes the socket on the way out.
pub async fn run(
    o: AgentOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let node = node_id(&o.cert)?;
    let trust_domain = format!("spiffe://{}", node.trust_domain());
    let svids = svids::Svids::new(ca::CaClient {
        urls: o.ca_url.clone(),
        cert: o.cert.clone(),
        key: o.key.clone(),
        ca: o.ca.clone(),
    })?;
    let renewer = o.renew_node.then(|| {
        tokio::spawn(
            mutual_enroll::Renewer::new(mutual_enroll::RenewOptions {
                ca_url: o.ca_url.clone(),
                cert: o.cert.clone(),
                key: o.key.clone(),
                ca: o.ca.clone(),
                new_key: None,
            })
            .run(),
        )
    });
    let listener = bind(&o.socket)?;
    tracing::info!(socket = %o.socket.display(), node = %node, ca_url = %o.ca_url.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        "serving the SPIFFE Workload API");
    let service = workload::Workload {
        svids: Arc::clone(&svids),
        trust_domain,
    };
    let served = tonic::transport::Server::builder()
        .add_service(proto::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                |conn| conn.map(authority::FixedIo::new),
            ),
            shutdown,
        )
        .await;
    if let Some(r) = renewer {
        r.abort();
    }
    let _ = std::fs::remove_file(&o.socket);
    served.map_err(|e| AgentError::Serve(e.to_string()))
}
