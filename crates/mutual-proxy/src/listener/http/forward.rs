//! The backend side of HTTP mode: one keep-alive connection pool per listener (hyper-util's
//! client), dialling the same `Backend` (TCP `host:port` or `unix:/path`) that TCP mode uses,
//! under `--connect-timeout`. Requests from every client connection share the pool, so a busy
//! listener does not pay a backend TCP handshake per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::backend::{Backend, BackendStream};

/// Request bodies forwarded to the backend.
pub type ReqBody = BoxBody<Bytes, hyper::Error>;

/// Dials the configured backend whatever the request URI says (the URI only names the pool).
#[derive(Clone)]
pub struct BackendConnector {
    backend: Backend,
    timeout: Duration,
}

impl tower_service::Service<Uri> for BackendConnector {
    type Response = TokioIo<BackendStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (backend, timeout) = (self.backend.clone(), self.timeout);
        Box::pin(async move { backend.dial(timeout).await.map(TokioIo::new) })
    }
}

impl Connection for BackendStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Connections idle longer than this are closed (backends commonly close at 60 s or more; a
/// shorter timeout here avoids sending a request on a socket the backend is closing).
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The pool and how to address the backend.
pub struct Forwarder {
    client: Client<BackendConnector, ReqBody>,
    /// `http://host:port` (or `http://localhost` for a Unix socket): the pool key and the
    /// scheme/authority of the forwarded request line.
    base: String,
}

impl Forwarder {
    pub fn new(backend: &Backend, connect_timeout: Duration) -> Forwarder {
        let base = match backend {
            Backend::Tcp(a) => format!("http://{a}"),
            Backend::Unix(_) => "http://localhost".to_string(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(BackendConnector {
                backend: backend.clone(),
                timeout: connect_timeout,
            });
        Forwarder { client, base }
    }

    /// The backend URI for a request's path and query (`None` for targets that are not a path,
    /// such as `*` or an authority).
    pub fn uri(&self, path_and_query: &str) -> Option<Uri> {
        if !path_and_query.starts_with('/') {
            return None;
        }
        format!("{}{path_and_query}", self.base).parse().ok()
    }

    pub fn client(&self) -> &Client<BackendConnector, ReqBody> {
        &self.client
    }
}
