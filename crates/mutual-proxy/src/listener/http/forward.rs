//! The backend side of HTTP mode: one keep-alive connection pool per listener, dialling the same
//! `Backend` (TCP `host:port` or `unix:/path`) that TCP mode uses, under `--connect-timeout`.
//! Requests from every client connection share the pool, so a busy listener does not pay a
//! backend TCP handshake per request.
//!
//! The pool is ours rather than hyper-util's legacy `Client`: that client costs, per request, a
//! pool key built from the URI, two URI copies, a connect future raced against the checkout,
//! and a spawned task that waits for the connection to be ready again before handing it back.
//! Here a connection is a hyper HTTP/1.1 `SendRequest` on a stack: a request takes the most
//! recently used one (or dials), and hands it back when its response body has been read to the
//! end (a body the client abandoned closes that connection instead, since its rest was never
//! read). What the legacy client did that a proxy needs is kept: a request that a reused
//! connection could not even start (the backend closed it while idle) is sent again on another
//! one, and connections idle for [`POOL_IDLE`] are closed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;

use crate::backend::Backend;

/// Request bodies forwarded to the backend.
pub type ReqBody = BoxBody<Bytes, hyper::Error>;

/// Connections idle longer than this are closed (backends commonly close at 60 s or more; a
/// shorter timeout here avoids sending a request on a socket the backend is closing).
const POOL_IDLE: Duration = Duration::from_secs(30);

/// How often idle connections are looked at: one closes between [`POOL_IDLE`] and
/// `POOL_IDLE + SWEEP` after its last response.
const SWEEP: Duration = Duration::from_secs(5);

/// Why a request could not be forwarded (for the operator's log line; the client gets a 502).
#[derive(Debug)]
pub enum ForwardError {
    /// The backend could not be dialled (refused, timed out, no such socket).
    Connect(std::io::Error),
    /// The HTTP exchange with the backend failed.
    Http(hyper::Error),
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::Connect(_) => f.write_str("cannot connect to the backend"),
            ForwardError::Http(_) => f.write_str("the HTTP exchange with the backend failed"),
        }
    }
}

impl std::error::Error for ForwardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ForwardError::Connect(e) => Some(e),
            ForwardError::Http(e) => Some(e),
        }
    }
}

/// An idle connection and the sweep in which it became idle.
struct Idle {
    tx: SendRequest<ReqBody>,
    sweep: u64,
}

/// The idle connections (most recently used last) and the sweep counter.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// Incremented every [`SWEEP`]; a connection idle for more sweeps than fit in
    /// [`POOL_IDLE`] is closed. Read without a clock per request.
    sweeps: AtomicU64,
    /// Whether the sweeping task runs (started with the first connection, inside the runtime).
    sweeping: AtomicBool,
}

impl Pool {
    fn put(&self, tx: SendRequest<ReqBody>) {
        let sweep = self.sweeps.load(Ordering::Relaxed);
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle { tx, sweep });
        }
    }

    fn pop(&self) -> Option<SendRequest<ReqBody>> {
        self.idle.lock().ok()?.pop().map(|i| i.tx)
    }

    /// Closes the connections idle too long and those the backend closed; ends (returns
    /// `false`) when the listener is gone.
    fn sweep(weak: &Weak<Pool>) -> bool {
        let Some(pool) = weak.upgrade() else {
            return false;
        };
        let now = pool.sweeps.fetch_add(1, Ordering::Relaxed) + 1;
        let keep = POOL_IDLE.as_secs() / SWEEP.as_secs();
        if let Ok(mut idle) = pool.idle.lock() {
            idle.retain(|i| now.saturating_sub(i.sweep) <= keep && !i.tx.is_closed());
        }
        true
    }

    fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if !Pool::sweep(&weak) {
                    return;
                }
            }
        });
    }
}

/// A backend connection lent to one request: given back to the pool with [`Lease::release`]
/// once its response has been read in full; dropped otherwise, which closes it.
pub struct Lease {
    tx: SendRequest<ReqBody>,
    pool: Arc<Pool>,
}

impl Lease {
    pub fn release(self) {
        self.pool.put(self.tx);
    }
}

/// The pool and how to address the backend.
pub struct Forwarder {
    backend: Backend,
    timeout: Duration,
    pool: Arc<Pool>,
    /// `host:port` (or `localhost` for a Unix socket): the `Host` of a request that came
    /// without one (as hyper-util's client wrote it: no port for 80).
    host: HeaderValue,
}

impl Forwarder {
    pub fn new(backend: &Backend, connect_timeout: Duration) -> Forwarder {
        let host = match backend {
            Backend::Tcp(a) => a.strip_suffix(":80").unwrap_or(a).to_string(),
            Backend::Unix(_) => "localhost".to_string(),
        };
        Forwarder {
            backend: backend.clone(),
            timeout: connect_timeout,
            pool: Arc::default(),
            host: HeaderValue::from_str(&host)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
        }
    }

    /// The backend URI (origin form) for a request's path and query (`None` for targets that
    /// are not a path, such as `*` or an authority).
    pub fn uri(&self, uri: &Uri) -> Option<Uri> {
        match uri.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => {
                let mut parts = hyper::http::uri::Parts::default();
                parts.path_and_query = Some(pq.clone());
                Uri::from_parts(parts).ok()
            }
            // An origin-form target with an empty path (an HTTP/2 `:path` is never empty, and
            // HTTP/1.1 parses `GET ?a` as no path): `/`, as before.
            None => Some(Uri::from_static("/")),
            Some(_) => None,
        }
    }

    /// Sends `req` (origin-form URI, HTTP/1.1) to the backend on a pooled connection.
    pub async fn send(
        &self,
        mut req: Request<ReqBody>,
    ) -> Result<(Response<Incoming>, Lease), ForwardError> {
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, self.host.clone());
        }
        loop {
            let (mut tx, reused) = match self.checkout().await {
                Some(tx) => (tx, true),
                None => (self.dial().await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let lease = Lease {
                        tx,
                        pool: Arc::clone(&self.pool),
                    };
                    return Ok((resp, lease));
                }
                Err(mut e) => match e.take_message() {
                    // A kept-alive connection the backend closed before this request started:
                    // nothing was sent, so it goes out again on another connection (a new one
                    // at the latest, which ends the loop).
                    Some(r) if reused => req = r,
                    _ => return Err(ForwardError::Http(e.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection that can take a request now.
    async fn checkout(&self) -> Option<SendRequest<ReqBody>> {
        while let Some(mut tx) = self.pool.pop() {
            if tx.is_ready() {
                return Some(tx);
            }
            // Handed back as its response ended: ready as soon as its task has read the end;
            // or closed (the backend said `Connection: close`, or hung up).
            if !tx.is_closed() && tx.ready().await.is_ok() {
                return Some(tx);
            }
        }
        None
    }

    async fn dial(&self) -> Result<SendRequest<ReqBody>, ForwardError> {
        let io = self
            .backend
            .dial(self.timeout)
            .await
            .map_err(ForwardError::Connect)?;
        let (tx, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(ForwardError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("backend connection ended: {e}");
            }
        });
        self.pool.start_sweeping();
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn origin_form_targets_only() {
        let f = Forwarder::new(&Backend::Tcp("127.0.0.1:9".into()), Duration::from_secs(1));
        let u = |s: &str| f.uri(&s.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(u("/a/b?c=d").as_deref(), Some("/a/b?c=d"));
        assert_eq!(u("https://example/x?y").as_deref(), Some("/x?y"));
        assert_eq!(u("/").as_deref(), Some("/"));
        assert_eq!(u("*"), None);
        assert_eq!(f.host, "127.0.0.1:9");
        let f = Forwarder::new(&Backend::Tcp("b.example:80".into()), Duration::from_secs(1));
        assert_eq!(f.host, "b.example");
    }
}
