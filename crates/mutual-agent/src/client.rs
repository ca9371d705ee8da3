//! A Workload API client: what `serve`/`connect --workload-api` use to get their certificate,
//! key and trust bundle from an agent (this one or SPIRE's) instead of files, as ghostunnel's
//! `--use-workload-api` does. It opens FetchX509SVID on the Unix socket (with the
//! `workload.spiffe.io: true` header the spec demands), takes the first SVID of each message
//! (SPIRE's "default SVID"; or the one with the SPIFFE ID asked for) and its trust domain's
//! bundle, and hands every message it receives to the caller: the agent sends one per rotation.
//!
//! [`follow`] waits (bounded) for the first message, then keeps the stream open in a task; when
//! the agent goes away it keeps what it had, reconnects with backoff and logs each step.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tonic::transport::{Channel, Endpoint};

use crate::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use crate::proto::{X509svidRequest, X509svidResponse};

/// The metadata header every Workload API call carries.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// One X.509-SVID and the roots to verify peers with.
pub struct X509Material {
    pub spiffe_id: String,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The trust domain's roots.
    pub bundle: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for X509Material {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Material")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain", &self.chain.len())
            .field("bundle", &self.bundle.len())
            .finish_non_exhaustive()
    }
}

/// Why no material came.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach the Workload API at {uri}: {detail}")]
    Connect { uri: String, detail: String },
    #[error("the Workload API at {uri} refused FetchX509SVID: {detail}")]
    Status { uri: String, detail: String },
    #[error("the Workload API at {uri} closed the stream")]
    Closed { uri: String },
    #[error("the Workload API at {uri} sent no X.509-SVID within {waited:?}")]
    Timeout { uri: String, waited: Duration },
    #[error(
        "the Workload API at {uri} offers no X.509-SVID for {spiffe_id} (it offers: {offered})"
    )]
    NoSuchId {
        uri: String,
        spiffe_id: String,
        offered: String,
    },
    #[error("the Workload API at {uri} sent an unusable X.509-SVID: {detail}")]
    Malformed { uri: String, detail: String },
}

/// Where to ask and what to take.
#[derive(Clone, Debug)]
pub struct Source {
    /// `unix:///PATH`, for messages.
    pub uri: String,
    pub socket: PathBuf,
    /// Take this SVID; default the first.
    pub spiffe_id: Option<String>,
}

/// A channel to the socket (HTTP/2 over the Unix stream; the URI is a placeholder).
async fn channel(src: &Source) -> Result<Channel, ClientError> {
    let socket = src.socket.clone();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                let s = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| ClientError::Connect {
            uri: src.uri.clone(),
            detail: std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), ToString::to_string),
        })
}

/// Opens FetchX509SVID.
async fn open(src: &Source) -> Result<tonic::Streaming<X509svidResponse>, ClientError> {
    let mut client = SpiffeWorkloadApiClient::new(channel(src).await?);
    let mut req = tonic::Request::new(X509svidRequest {});
    req.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    client
        .fetch_x509svid(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| status(src, &s))
}

fn status(src: &Source, s: &tonic::Status) -> ClientError {
    ClientError::Status {
        uri: src.uri.clone(),
        detail: format!("{:?}: {}", s.code(), s.message()),
    }
}

/// Concatenated DER certificates, split.
fn split_der(src: &Source, mut b: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (rest, _) =
            x509_parser::parse_x509_certificate(b).map_err(|e| ClientError::Malformed {
                uri: src.uri.clone(),
                detail: format!("a certificate does not parse: {e}"),
            })?;
        let len = b.len() - rest.len();
        out.push(CertificateDer::from(b[..len].to_vec()));
        b = rest;
    }
    Ok(out)
}

/// The SVID `src` wants from one message.
fn pick(src: &Source, msg: X509svidResponse) -> Result<X509Material, ClientError> {
    let offered = || {
        msg.svids
            .iter()
            .map(|s| s.spiffe_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let svid = match &src.spiffe_id {
        Some(id) => msg.svids.iter().find(|s| &s.spiffe_id == id),
        None => msg.svids.first(),
    }
    .ok_or_else(|| ClientError::NoSuchId {
        uri: src.uri.clone(),
        spiffe_id: src
            .spiffe_id
            .clone()
            .unwrap_or_else(|| "any SPIFFE ID".into()),
        offered: offered(),
    })?;
    let chain = split_der(src, &svid.x509_svid)?;
    let bundle = split_der(src, &svid.bundle)?;
    if chain.is_empty() || bundle.is_empty() || svid.x509_svid_key.is_empty() {
        return Err(ClientError::Malformed {
            uri: src.uri.clone(),
            detail: "the certificate, the key or the bundle is empty".into(),
        });
    }
    Ok(X509Material {
        spiffe_id: svid.spiffe_id.clone(),
        chain,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.x509_svid_key.clone())),
        bundle,
    })
}

/// The next usable message of a stream.
async fn next(
    src: &Source,
    stream: &mut tonic::Streaming<X509svidResponse>,
) -> Result<X509Material, ClientError> {
    match stream.message().await {
        Ok(Some(msg)) => pick(src, msg),
        Ok(None) => Err(ClientError::Closed {
            uri: src.uri.clone(),
        }),
        Err(s) => Err(status(src, &s)),
    }
}

/// Connects, waits up to `first_within` for the first SVID and hands it to `update`; then, in a
/// task, hands over every later one. When the stream ends or fails, the last material stays
/// (`update` is not called), and the task reconnects with backoff (0.5 s doubling to 10 s).
pub async fn follow(
    src: Source,
    first_within: Duration,
    mut update: impl FnMut(X509Material) + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, ClientError> {
    let first = async {
        let mut stream = open(&src).await?;
        let m = next(&src, &mut stream).await?;
        Ok::<_, ClientError>((stream, m))
    };
    let (mut stream, m) = tokio::time::timeout(first_within, first)
        .await
        .map_err(|_| ClientError::Timeout {
            uri: src.uri.clone(),
            waited: first_within,
        })??;
    tracing::info!(workload_api = %src.uri, spiffe_id = %m.spiffe_id, "X.509-SVID received from the Workload API");
    let mut last = (m.chain.clone(), m.bundle.clone());
    update(m);
    Ok(tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            match next(&src, &mut stream).await {
                // Every message carries every SVID of the workload: one whose rotation was
                // another SVID's leaves this one as it was, and nothing is reloaded.
                Ok(m) if m.chain == last.0 && m.bundle == last.1 => continue,
                Ok(m) => {
                    tracing::info!(workload_api = %src.uri, spiffe_id = %m.spiffe_id, "X.509-SVID received from the Workload API");
                    last = (m.chain.clone(), m.bundle.clone());
                    update(m);
                    backoff = Duration::from_millis(500);
                    continue;
                }
                Err(e) => tracing::warn!(
                    "{e}; keeping the current certificate, reconnecting in {backoff:?}"
                ),
            }
            loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                match open(&src).await {
                    Ok(s) => {
                        tracing::info!(workload_api = %src.uri, "reconnected to the Workload API");
                        stream = s;
                        break;
                    }
                    Err(e) => tracing::warn!("{e}; retrying in {backoff:?}"),
                }
            }
        }
    }))
}
