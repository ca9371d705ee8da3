//! HTTP mode of `mutual serve` (`--http`): after the handshake, [`VerifiedPeer`] and re-check
//! of [`crate::serve`], the connection speaks HTTP/1.1 or HTTP/2 (ALPN `h2`, `http/1.1`) instead of being a
//! byte pipe, so that each request can be authorized on method and path, answered with a
//! readable 403, counted and audited, and forwarded with the verified identity in headers the
//! backend can trust (any client-sent copy of them is removed first). docs/http.md is the user
//! view.

pub mod forward;
pub mod headers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mutual_tls::{Reason, VerifiedPeer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::audit::Outcome;
use crate::backend::Backend;
use crate::conn::record::{ConnRecord, Recorder};
use crate::material::Material;
use crate::shutdown::Shutdown;

pub use crate::material::Mode;
pub use headers::{ForwardClientCert, XfccDetails};

/// HTTP-mode settings of a serve listener.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// Which identity headers the backend receives (`--forward-client-cert`).
    pub forward_client_cert: ForwardClientCert,
    /// Optional `Cert=`/`Chain=` XFCC elements (`--forward-client-cert-details`).
    pub details: XfccDetails,
}

/// ALPN protocols offered in HTTP mode, preferred first (TCP mode offers none).
pub fn alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// Response bodies sent to the client.
type RespBody = BoxBody<Bytes, hyper::Error>;

/// Set on every forwarded request (and stripped from what the client sent).
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Extended with the client's address on every forwarded request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What every connection of one HTTP-mode serve listener shares (built once per listener).
pub(crate) struct Site {
    /// The material in force now: each request is decided with its policy (a reload applies
    /// to the next request of an open connection).
    current: Arc<ArcSwap<Material>>,
    rec: Arc<Recorder>,
    /// The backend connection pool.
    forwarder: forward::Forwarder,
    backend: Backend,
    opts: HttpOptions,
    idle_timeout: Duration,
    max_connection_lifetime: Option<Duration>,
    end_on_peer_expiry: bool,
}

impl Site {
    pub(crate) fn new(
        cfg: &crate::serve::ServeConfig,
        current: Arc<ArcSwap<Material>>,
        rec: Arc<Recorder>,
    ) -> Arc<Site> {
        Arc::new(Site {
            current,
            rec,
            forwarder: forward::Forwarder::new(&cfg.backend, cfg.connect_timeout),
            backend: cfg.backend.clone(),
            opts: cfg.http.clone(),
            idle_timeout: cfg.idle_timeout,
            max_connection_lifetime: cfg.max_connection_lifetime,
            end_on_peer_expiry: cfg.end_on_peer_expiry,
        })
    }

    fn name(&self) -> &str {
        &self.rec.lm.name
    }
}

/// What every request of one connection shares.
struct ConnCtx {
    site: Arc<Site>,
    peer: SocketAddr,
    vp: Arc<VerifiedPeer>,
    principal: String,
    /// Identity headers for the backend; `Err` (with why) when the certificate's names cannot
    /// be written as header values: then nothing is forwarded (fail closed).
    headers: Result<headers::IdentityHeaders, String>,
    peer_ip: HeaderValue,
}

/// Serves HTTP on a verified, re-checked connection until the client closes it, it is idle for
/// `--idle-timeout`, or shutdown (then in-flight requests finish; HTTP/2 gets a GOAWAY).
/// `known` says whether any rule names this identity at all: counted once as the connection's
/// handshake outcome (`rec`); each request is then authorized and recorded on its own.
pub(crate) async fn serve_connection<S>(
    site: Arc<Site>,
    tls: S,
    rec: ConnRecord,
    vp: Arc<VerifiedPeer>,
    known: bool,
    mut shutdown: Shutdown,
    mut ended: Option<crate::live::Ended>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = rec.peer_addr();
    let principal = vp.id.principal();
    let lm = site.rec.lm.clone();
    let name = site.name().to_string();
    if known {
        rec.count(Outcome::Allowed, Reason::Ok);
        tracing::debug!(listener = %name, %peer, identity = %principal, "HTTP connection");
    } else {
        // Still served: every request gets a 403 that says why, which helps more than a reset.
        rec.count(Outcome::Denied, Reason::PolicyDenied);
        tracing::info!(listener = %name, %peer, identity = %principal, result = "denied",
            reason = "policy_denied", "no rule names this identity; its HTTP requests get 403");
    }
    rec.hand_over();
    let opts = &site.opts;
    let refs: Vec<&[u8]> = vp.chain.iter().map(|c| c.as_ref()).collect();
    let hdrs = match &vp.names {
        None => Err("the client certificate's names were not read".to_string()),
        Some(names) => headers::IdentityHeaders::build(
            opts.forward_client_cert,
            opts.details,
            &vp.id,
            names,
            &refs,
        )
        .map_err(|_| {
            "a name in the client certificate cannot be written as an HTTP header value".to_string()
        }),
    };
    // An IP address always forms a valid header value; the fallback is never used.
    let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let expiry = site.end_on_peer_expiry.then_some(vp.id.not_after);
    let ctx = Arc::new(ConnCtx {
        site: Arc::clone(&site),
        peer,
        vp,
        principal,
        headers: hdrs,
        peer_ip,
    });
    // Plaintext bytes into mutual_bytes_total (in = read from the client, out = written to
    // it), and activity for the idle timeout.
    let activity = Arc::new(crate::io::Activity::default());
    let io = crate::io::Metered::new(tls, lm.bytes_in.clone(), Arc::clone(&activity))
        .count_writes(lm.bytes_out.clone());
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle = site.idle_timeout;
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When we asked the connection to close: it gets one more idle period to finish.
    let mut closing: Option<Instant> = None;
    // --max-connection-lifetime: past it, the connection is asked to close like on shutdown
    // (in-flight requests finish; HTTP/2 gets a GOAWAY).
    let lifetime = site.max_connection_lifetime;
    let expired = async move {
        match lifetime {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    loop {
        tokio::select! {
            _ = &mut expired, if closing.is_none() => {
                tracing::info!(listener = %name, %peer, "max connection lifetime reached: closing");
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = %name, %peer, "HTTP connection ended: {e}");
                }
                break;
            }
            _ = shutdown.wait_drain(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            _ = crate::live::peer_expiry(expiry) => {
                tracing::info!(listener = %name, %peer, result = "denied", reason = "expired",
                    "closing an HTTP connection: the peer's certificate expired (--end-on-peer-expiry)");
                break;
            }
            // Live re-authorization: a reload (policy, CRL, config) no longer allows this peer.
            // Counted by the registry; the connection ends now, in-flight requests with it.
            t = crate::live::wait_opt(ended.as_mut()) => {
                if let crate::live::Termination::Unauthorized { reason, detail } = &t {
                    tracing::info!(listener = %name, %peer, result = "denied",
                        reason = reason.label(), "closing an HTTP connection: {detail}");
                }
                break;
            }
            _ = tick.tick() => {
                match closing {
                    Some(t) if t.elapsed() >= idle && activity.idle_for() >= idle => {
                        tracing::debug!(listener = %name, %peer, "closing a stalled HTTP connection");
                        break;
                    }
                    None if activity.idle_for() >= idle => {
                        tracing::debug!(listener = %name, %peer, "idle timeout");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                    _ => {}
                }
            }
        }
    }
}

/// One request's bookkeeping: its [`ConnRecord`] is ended when the response is complete (or
/// abandoned), so bytes and duration cover the whole exchange.
struct Pending {
    ctx: Arc<ConnCtx>,
    /// Taken when the request is answered here (`problem`); otherwise dropped with `Pending`.
    rec: Option<ConnRecord>,
    method: String,
    path: String,
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
}

impl Drop for Pending {
    /// The record of a request whose response was streamed or abandoned: dropping it writes
    /// its line (`failed`/`other` with status 0 when no response was sent at all).
    fn drop(&mut self) {
        if let Some(rec) = &mut self.rec {
            rec.bytes(self.bytes_in.load(Ordering::Relaxed), self.bytes_out);
        }
    }
}

impl Pending {
    /// Answers the request itself with an RFC 9457 problem document; counted and audited.
    fn problem(self, status: StatusCode, outcome: Outcome, reason: Reason) -> Response<RespBody> {
        self.problem_detail(status, outcome, reason, reason.explanation())
    }

    /// `problem` with a detail sentence that fits this request better than the reason's
    /// generic explanation.
    fn problem_detail(
        mut self,
        status: StatusCode,
        outcome: Outcome,
        reason: Reason,
        detail: &str,
    ) -> Response<RespBody> {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or(""),
            "status": status.as_u16(),
            "reason": reason.label(),
            "detail": detail,
            "identity": self.ctx.principal,
            "method": self.method,
            "path": self.path,
        });
        let mut text = body.to_string();
        text.push('\n');
        if let Some(mut rec) = self.rec.take() {
            rec.status(status.as_u16());
            rec.bytes(self.bytes_in.load(Ordering::Relaxed), text.len() as u64);
            rec.end(outcome, reason, detail);
        }
        let mut r = Response::new(
            Full::new(Bytes::from(text))
                .map_err(|never| match never {})
                .boxed(),
        );
        *r.status_mut() = status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r
    }
}

async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Response<RespBody> {
    let (mut parts, body) = req.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let mut rec = ctx.site.rec.start(ctx.peer);
    rec.peer(&ctx.vp);
    rec.request(method.clone(), path.clone());
    let pending = Pending {
        ctx: Arc::clone(&ctx),
        rec: Some(rec),
        method,
        path,
        bytes_in: Arc::new(AtomicU64::new(0)),
        bytes_out: 0,
    };
    // First, before anything can look at them: what the client claims is never forwarded.
    headers::strip_identity_headers(&mut parts.headers);
    // The policy in force now (a reload applies to the next request of an open connection).
    let allowed = crate::authz::request(
        &ctx.site.current.load().policy,
        &ctx.vp.id,
        &pending.method,
        &pending.path,
    );
    if !allowed {
        return pending.problem(StatusCode::FORBIDDEN, Outcome::Denied, Reason::PolicyDenied);
    }
    if parts.method == Method::CONNECT {
        // Tunnels would bypass per-request policy; HTTP mode does not open them.
        return pending.problem_detail(
            StatusCode::METHOD_NOT_ALLOWED,
            Outcome::Failed,
            Reason::Malformed,
            "CONNECT is not allowed: HTTP mode forwards requests one by one and does not open tunnels (use TCP mode for tunnelled traffic)",
        );
    }
    let ids = match &ctx.headers {
        Ok(h) => h,
        Err(why) => {
            tracing::warn!(listener = %ctx.site.name(), peer = %ctx.peer, "{why}");
            return pending.problem(StatusCode::BAD_REQUEST, Outcome::Failed, Reason::Malformed);
        }
    };
    let forwarder = &ctx.site.forwarder;
    let Some(uri) = forwarder.uri(&parts.uri) else {
        return pending.problem(StatusCode::BAD_REQUEST, Outcome::Failed, Reason::Malformed);
    };
    headers::strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(HOST) {
        // HTTP/2 carries the host in :authority; an HTTP/1.1 backend expects Host.
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, v);
        }
    }
    append_forwarded_for(&mut parts.headers, &ctx.peer_ip);
    parts
        .headers
        .insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    ids.apply(&mut parts.headers);
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let body = Tallied {
        inner: body,
        tally: CountIn(Arc::clone(&pending.bytes_in)),
    }
    .boxed();
    match forwarder.send(Request::from_parts(parts, body)).await {
        Ok((resp, lease)) => {
            let (mut rp, rb) = resp.into_parts();
            headers::strip_hop_by_hop(&mut rp.headers);
            let mut pending = pending;
            let status = rp.status.as_u16();
            if let Some(rec) = &mut pending.rec {
                rec.status(status);
                rec.count(Outcome::Allowed, Reason::Ok);
            }
            tracing::debug!(listener = %ctx.site.name(), peer = %ctx.peer,
                identity = %ctx.principal, method = %pending.method, path = %pending.path,
                status, "forwarded");
            let body = Tallied {
                inner: rb,
                tally: Relay {
                    pending,
                    lease: Some(lease),
                },
            };
            Response::from_parts(rp, body.boxed())
        }
        Err(e) => {
            tracing::warn!(listener = %ctx.site.name(), peer = %ctx.peer,
                backend = %ctx.site.backend, "backend request failed: {}", error_chain(&e));
            pending.problem(
                StatusCode::BAD_GATEWAY,
                Outcome::Failed,
                Reason::BackendUnavailable,
            )
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `X-Forwarded-For`: the values the client sent (if any), then the client's address.
fn append_forwarded_for(h: &mut hyper::HeaderMap, ip: &HeaderValue) {
    let name = X_FORWARDED_FOR;
    let prior: Vec<String> = h
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let value = if prior.is_empty() {
        ip.clone()
    } else {
        let joined = format!("{}, {}", prior.join(", "), ip.to_str().unwrap_or_default());
        HeaderValue::from_str(&joined).unwrap_or_else(|_| ip.clone())
    };
    h.insert(name, value);
}

/// What a [`Tallied`] body reports to: each frame that passes and how the body ended.
trait Tally: Unpin {
    /// A frame passed carrying `n` bytes of data (0 for trailers); `at_end`: the body has
    /// nothing left to read.
    fn frame(&mut self, n: u64, at_end: bool);
    /// The body ended (`true`) or failed (`false`).
    fn ended(&mut self, _ok: bool) {}
    /// The body is dropped; `at_end`: nothing was left to read (sent in full, or empty).
    fn dropped(&mut self, _at_end: bool) {}
}

/// A body passing through the proxy that tells its [`Tally`] what went by: the request body
/// on its way to the backend ([`CountIn`]) and the backend's response on its way to the
/// client ([`Relay`]).
struct Tallied<B: Body<Data = Bytes> + Unpin, T: Tally> {
    inner: B,
    tally: T,
}

impl<B: Body<Data = Bytes> + Unpin, T: Tally> Body for Tallied<B, T> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                let n = f.data_ref().map_or(0, |d| d.len() as u64);
                this.tally.frame(n, this.inner.is_end_stream());
            }
            Poll::Ready(None) => this.tally.ended(true),
            Poll::Ready(Some(Err(_))) => this.tally.ended(false),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body<Data = Bytes> + Unpin, T: Tally> Drop for Tallied<B, T> {
    fn drop(&mut self) {
        self.tally.dropped(self.inner.is_end_stream());
    }
}

/// The request body's bytes, counted into the audit line's `bytes_in`.
struct CountIn(Arc<AtomicU64>);

impl Tally for CountIn {
    fn frame(&mut self, n: u64, _at_end: bool) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The backend's response on its way to the client: counts its bytes into the request's
/// [`Pending`] (whose drop, when the body is sent in full or abandoned by the client, writes
/// the audit line) and gives the backend connection back to the pool once the body has been
/// read to its end. A body abandoned before its end takes its connection with it (closed: the
/// rest of that response was never read).
struct Relay {
    pending: Pending,
    lease: Option<forward::Lease>,
}

impl Relay {
    fn release(&mut self) {
        if let Some(l) = self.lease.take() {
            l.release();
        }
    }
}

impl Tally for Relay {
    fn frame(&mut self, n: u64, at_end: bool) {
        self.pending.bytes_out += n;
        if at_end {
            self.release();
        }
    }

    fn ended(&mut self, ok: bool) {
        if ok {
            self.release();
        } else {
            self.lease = None;
        }
    }

    /// A body with nothing left to read (sent in full, or empty and never polled) gives its
    /// connection back; any other closes it.
    fn dropped(&mut self, at_end: bool) {
        if at_end {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn forwarded_for_appends_to_what_the_client_sent() {
        let ip = HeaderValue::from_static("127.0.0.1");
        let mut h = hyper::HeaderMap::new();
        append_forwarded_for(&mut h, &ip);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        let mut h = hyper::HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.2, 10.0.0.3"),
        );
        append_forwarded_for(&mut h, &ip);
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
        );
    }
}
