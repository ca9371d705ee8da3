//! `mutual agent` (docs/agent.md): the SPIFFE Workload API on a Unix socket, for every workload
//! of one node. The agent proves the node's identity to the online CA with the node certificate
//! (mTLS), learns the registration entries assigned to the node, attests each caller by its
//! socket credentials ([`attest`]), matches the entries' selectors ([`selector`]), and hands the
//! caller SVIDs whose keys it generated in memory ([`svids`], [`workload`]). Envoy's SDS is
//! served on the same socket from the same state ([`sds`]). The CA decides what a node may get;
//! the agent decides which local process gets it.
#![forbid(unsafe_code)]

pub mod attest;
pub mod authority;
pub mod ca;
pub mod client;
pub mod jwt;
pub mod sds;
pub mod selector;
pub mod svids;
pub mod workload;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mutual_enroll::{CaUrls, EnrollError};

/// The generated Workload API types and service (proto/workload.proto, which has no package),
/// and Envoy's SDS types under [`proto::envoy`] and [`proto::google`] (proto/envoy/...), in
/// modules that mirror their packages, as the generated code's cross-package paths expect.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]
pub mod proto {
    tonic::include_proto!("_");

    pub mod envoy {
        pub mod config {
            pub mod core {
                pub mod v3 {
                    tonic::include_proto!("envoy.config.core.v3");
                }
            }
        }
        pub mod extensions {
            pub mod transport_sockets {
                pub mod tls {
                    pub mod v3 {
                        tonic::include_proto!("envoy.extensions.transport_sockets.tls.v3");
                    }
                }
            }
        }
        pub mod service {
            pub mod discovery {
                pub mod v3 {
                    tonic::include_proto!("envoy.service.discovery.v3");
                }
            }
            pub mod secret {
                pub mod v3 {
                    tonic::include_proto!("envoy.service.secret.v3");
                }
            }
        }
    }
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

/// The CA's endpoints for agents (crates/mutual-ca-server/src/agent.rs).
pub const ENTRIES: &str = "/v1/agent/entries";
pub const SVID: &str = "/v1/agent/svid";

/// Mode of the socket: every local user may connect, since who gets what is decided by
/// attestation, not by who can open the socket (SPIRE's agent socket is world-writable too).
pub const SOCKET_MODE: u32 = 0o666;

/// How often the agent asks the CA for the node's entries by default (`--entries-poll`): an
/// entry created or deleted at the CA reaches open streams within this. SPIRE's agent syncs with
/// its server every 5 s too; one small authenticated GET per node every 5 s is cheap for the
/// CA (a thousand nodes: 200 requests a second of a few hundred bytes each).
pub const ENTRIES_POLL: Duration = Duration::from_secs(5);

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
    /// How often the node's entries are asked of the CA ([`ENTRIES_POLL`] by default).
    pub entries_poll: Duration,
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

/// Serves the Workload API and SDS until `shutdown` completes; removes the socket on the way out.
pub async fn run(
    o: AgentOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let node = node_id(&o.cert)?;
    let trust_domain = format!("spiffe://{}", node.trust_domain());
    let ca = ca::CaClient {
        urls: o.ca_url.clone(),
        cert: o.cert.clone(),
        key: o.key.clone(),
        ca: o.ca.clone(),
    };
    let jwt = jwt::Jwt::new(ca.clone());
    let svids = svids::Svids::new(ca)?;
    svids.poll_entries(o.entries_poll);
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
        entries_poll_secs = o.entries_poll.as_secs_f64(), "serving the SPIFFE Workload API and Envoy SDS");
    let service = Arc::new(workload::Workload {
        svids: Arc::clone(&svids),
        trust_domain,
        jwt,
    });
    let sds = sds::Sds {
        workload: Arc::clone(&service),
    };
    let served = tonic::transport::Server::builder()
        .add_service(proto::spiffe_workload_api_server::SpiffeWorkloadApiServer::from_arc(service))
        .add_service(sds::SecretDiscoveryServiceServer::new(sds))
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
