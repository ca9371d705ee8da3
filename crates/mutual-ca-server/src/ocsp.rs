//! The OCSP front door (RFC 6960, RFC 5019's HTTP profile): `GET /ocsp/BASE64` and `POST /ocsp`
//! (`application/ocsp-request`), on the CA's HTTPS listener with `--ocsp` and on a plain-HTTP
//! listener with `--ocsp-listen` (nginx and most OCSP clients speak only http://). docs/ocsp.md.
//!
//! Each request reads the certificate's status from the store (one indexed query by serial),
//! so a revocation made anywhere (another replica, `mutual cert revoke`) is answered at once.
//! Signing is what is saved: a response without a nonce is signed once per (CertID, status)
//! and reused by this replica until half of its validity has passed. The cache is in memory,
//! one per replica, keyed by the CertID and checked against the status just read, so replicas
//! never need to agree on it: a status change makes the next request sign anew everywhere.
//! A request with a nonce is signed for itself (and echoes it).
//!
//! Responses are signed by a delegated responder certificate per intermediate (active and
//! retiring), issued by that intermediate, that this replica asks the CA for at start (through
//! `Ca::issue`, requested_by `ca-serve-ocsp`), for a new intermediate when a request first
//! names it (after `ca rotate-intermediate`), and replaces at two-thirds of its life; a
//! replacement empties the cache.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use mutual_pki::ca::ocsp::{
    parse_request, IssuerId, OcspFailure, OcspQuery, OcspStatus, Responder, MAX_REQUEST,
};
use mutual_pki::ca::Ca;
use mutual_pki::PkiError;

use crate::metrics::Metrics;

/// What the OCSP front door needs of the server it is mounted in (the CA, its metrics and the
/// responder), so that this module does not reach into `api::State` (no file loop).
pub trait Host: Send + Sync + 'static {
    fn ca(&self) -> &Ca;
    fn metrics(&self) -> &Metrics;
    fn ocsp(&self) -> Option<&Arc<Ocsp>>;
}

/// At most this many cached responses per replica; past it the cache starts over (a bound on
/// memory, not an eviction policy: a full cache is a sign of 100,000 live certificates, whose
/// responses are re-signed at about 30 µs each).
const MAX_CACHED: usize = 100_000;
/// thisUpdate is set this far back, so a relying party whose clock is a little behind does
/// not see a response from the future.
const BACKDATE: i64 = 60;

/// `--ocsp*` settings.
#[derive(Clone, Debug)]
pub struct OcspConfig {
    /// nextUpdate - thisUpdate of each response.
    pub validity: Duration,
    /// Lifetime of the delegated responder certificate (replaced at two-thirds).
    pub responder_ttl: Duration,
    /// `--ocsp-listen`: also serve /ocsp over plain HTTP here.
    pub listen: Option<SocketAddr>,
}

impl Default for OcspConfig {
    fn default() -> Self {
        OcspConfig {
            validity: Duration::from_secs(3600),
            responder_ttl: Duration::from_secs(86_400),
            listen: None,
        }
    }
}

/// One intermediate and the responder that answers for its certificates.
struct ForIssuer {
    id: String,
    issuer: IssuerId,
    responder: Arc<Responder>,
}

struct Cached {
    status: OcspStatus,
    der: Bytes,
    this_update: i64,
    next_update: i64,
}

/// The responder of one replica.
pub struct Ocsp {
    pub config: OcspConfig,
    responders: ArcSwap<Vec<ForIssuer>>,
    /// One issuance of responder certificates at a time.
    syncing: tokio::sync::Mutex<()>,
    cache: Mutex<HashMap<Vec<u8>, Arc<Cached>>>,
}

impl std::fmt::Debug for Ocsp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ocsp")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// An HTTP date (RFC 9110 IMF-fixdate) for Last-Modified and Expires.
fn http_date(unix: i64) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

impl Ocsp {
    /// Issues the first responder certificates, one per intermediate.
    pub async fn new(ca: &Ca, config: OcspConfig) -> Result<Ocsp, PkiError> {
        let o = Ocsp {
            responders: ArcSwap::from_pointee(Vec::new()),
            syncing: tokio::sync::Mutex::new(()),
            cache: Mutex::new(HashMap::new()),
            config,
        };
        o.sync(ca, false).await?;
        Ok(o)
    }

    /// When the first responder certificate should be replaced (two-thirds of its life).
    pub fn renew_at(&self) -> i64 {
        self.responders
            .load()
            .iter()
            .map(|f| {
                let r = &f.responder;
                r.not_before + (r.not_after - r.not_before) * 2 / 3
            })
            .min()
            .unwrap_or(0)
    }

    /// Replaces the responder certificates past two-thirds of their life (and follows the
    /// CA's intermediates); a replacement forgets every cached response.
    pub async fn renew(&self, ca: &Ca) -> Result<(), PkiError> {
        self.sync(ca, false).await
    }

    /// Makes the responders follow the CA's intermediates: one for each (a new one after
    /// `ca rotate-intermediate`, none for an intermediate no longer listed), every one
    /// re-issued when `renew_all` or when past two-thirds of its life.
    async fn sync(&self, ca: &Ca, renew_all: bool) -> Result<(), PkiError> {
        let _one = self.syncing.lock().await;
        let issuers = ca.ocsp_issuers()?;
        let current = self.responders.load_full();
        let now = unix_now();
        let mut next = Vec::with_capacity(issuers.len());
        let mut changed = issuers.len() != current.len();
        for (id, issuer) in issuers {
            let keep = current.iter().find(|f| f.id == id).filter(|f| {
                let r = &f.responder;
                !renew_all && now < r.not_before + (r.not_after - r.not_before) * 2 / 3
            });
            let responder = match keep {
                Some(f) => f.responder.clone(),
                None => {
                    let r = ca
                        .ocsp_responder_for(&id, self.config.responder_ttl)
                        .await?;
                    tracing::info!(issuer = %id, serial = %r.serial,
                        "OCSP responder certificate issued");
                    changed = true;
                    Arc::new(r)
                }
            };
            next.push(ForIssuer {
                id,
                issuer,
                responder,
            });
        }
        if changed {
            self.responders.store(Arc::new(next));
            self.lock_cache().clear();
        }
        Ok(())
    }

    /// The responder for the intermediate every certificate of `q` names, if one does (a
    /// response has one signer, so a request mixing intermediates is not answered).
    fn responder_for(&self, q: &OcspQuery) -> Option<Arc<Responder>> {
        let all = self.responders.load();
        let f = all.iter().find(|f| f.issuer.matches(&q.certs[0]))?;
        q.certs
            .iter()
            .all(|a| f.issuer.matches(a))
            .then(|| f.responder.clone())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Cached>>> {
        // A panic while holding the lock leaves only a cache behind: keep using it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The response to one parsed request, and the label for logs and metrics.
    async fn answer(
        &self,
        ca: &Ca,
        q: &OcspQuery,
    ) -> Result<(Bytes, Option<(i64, i64)>, &'static str, bool), OcspFailure> {
        let responder = match self.responder_for(q) {
            Some(r) => r,
            None => {
                // Perhaps an intermediate made since (issuers.toml is re-read by the CA).
                if let Err(e) = self.sync(ca, false).await {
                    tracing::warn!(error = %e, "OCSP responder for a new intermediate failed");
                }
                // Still none: not one of our intermediates (or a hash we do not compute): we
                // cannot say anything authoritative about it (RFC 6960 §2.3).
                self.responder_for(q).ok_or(OcspFailure::Unauthorized)?
            }
        };
        let mut answers = Vec::with_capacity(q.certs.len());
        for a in &q.certs {
            let st = ca.ocsp_status(&a.serial).await.map_err(|e| {
                tracing::warn!(error = %e, "OCSP status lookup failed");
                OcspFailure::TryLater
            })?;
            answers.push((a.cert_id.clone(), st));
        }
        let label = match answers.as_slice() {
            [(_, st)] => st.as_str(),
            _ => "multiple",
        };
        let now = unix_now();
        let key = q.cache_key();
        if let (Some(k), [(_, st)]) = (&key, answers.as_slice()) {
            if let Some(c) = self.lock_cache().get(k) {
                let half = (c.next_update - c.this_update) / 2;
                if c.status == *st && now < c.this_update + half {
                    return Ok((
                        c.der.clone(),
                        Some((c.this_update, c.next_update)),
                        label,
                        true,
                    ));
                }
            }
        }
        // Never before a revocation it reports (a response older than the event it tells).
        let revoked_at = answers
            .iter()
            .filter_map(|(_, st)| match st {
                OcspStatus::Revoked { at, .. } => Some(*at),
                _ => None,
            })
            .max()
            .unwrap_or(i64::MIN);
        let this_update = (now - BACKDATE).max(revoked_at).min(now);
        let validity = i64::try_from(self.config.validity.as_secs()).unwrap_or(i64::MAX);
        let next_update = this_update
            .saturating_add(validity)
            .min(responder.not_after);
        let der: Bytes = responder
            .sign(&answers, this_update, next_update, q.nonce.as_ref())
            .map_err(|e| {
                tracing::error!(error = %e, "OCSP signing failed");
                OcspFailure::InternalError
            })?
            .into();
        if let (Some(k), [(_, st)]) = (key, answers.as_slice()) {
            let mut cache = self.lock_cache();
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(
                k,
                Arc::new(Cached {
                    status: *st,
                    der: der.clone(),
                    this_update,
                    next_update,
                }),
            );
        }
        let window = q.nonce.is_none().then_some((this_update, next_update));
        Ok((der, window, label, false))
    }
}

type Resp = Response<Full<Bytes>>;

fn ocsp_response(der: Bytes, window: Option<(i64, i64)>) -> Resp {
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/ocsp-response");
    match window {
        // RFC 5019 §6.2: let HTTP caches keep it until nextUpdate.
        Some((this_update, next_update)) => {
            let max_age = (next_update - unix_now()).max(0);
            let etag = hex::encode(
                &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref()[..16],
            );
            b = b
                .header(
                    "cache-control",
                    format!("max-age={max_age}, public, no-transform, must-revalidate"),
                )
                .header("last-modified", http_date(this_update))
                .header("expires", http_date(next_update))
                .header("etag", format!("\"{etag}\""));
        }
        None => b = b.header("cache-control", "no-store"),
    }
    b.body(Full::new(der))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn plain(status: StatusCode, msg: &str) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(format!("{msg}\n"))))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Whether `path` is the OCSP front door's.
pub fn is_ocsp_path(path: &str) -> bool {
    path == "/ocsp" || path.starts_with("/ocsp/")
}

/// The DER request of a GET: `/ocsp/` + base64 (RFC 6960 appendix A.1), URL-encoded or not.
fn get_request(path: &str) -> Option<Vec<u8>> {
    let b64 = path.strip_prefix("/ocsp/")?;
    let decoded = percent_decode(b64)?;
    let t = decoded.trim();
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .ok()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Serves one OCSP request (either listener). Malformed input gets an HTTP 200 with the
/// `malformedRequest` OCSP status (RFC 6960 §2.3), never a 500.
pub async fn handle(
    ca: &Ca,
    metrics: &Metrics,
    ocsp: &Ocsp,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let der = match method {
        Method::GET => get_request(&path).ok_or("the GET path is not /ocsp/ + base64 DER"),
        Method::POST if path == "/ocsp" || path == "/ocsp/" => {
            match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
                Ok(b) => Ok(b.to_bytes().to_vec()),
                Err(_) => Err("the request body is larger than 8 KiB or was cut off"),
            }
        }
        Method::POST => Err("POST goes to /ocsp"),
        _ => {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "OCSP takes GET /ocsp/BASE64 or POST /ocsp",
            )
        }
    };
    let (resp, label, cached, detail) = match der
        .map_err(str::to_string)
        .and_then(|d| parse_request(&d).map_err(|e| e.to_string()))
    {
        Err(detail) => (
            ocsp_response(OcspFailure::MalformedRequest.to_der().into(), None),
            OcspFailure::MalformedRequest.as_str(),
            false,
            Some(detail),
        ),
        Ok(q) => match ocsp.answer(ca, &q).await {
            Ok((der, window, label, cached)) => (
                ocsp_response(der, if method == Method::GET { window } else { None }),
                label,
                cached,
                None,
            ),
            Err(f) => (
                ocsp_response(f.to_der().into(), None),
                f.as_str(),
                false,
                None,
            ),
        },
    };
    metrics.ocsp(label, cached);
    metrics.request("/ocsp", started.elapsed().as_secs_f64());
    tracing::info!(peer_addr = %peer, method = %method, path = "/ocsp", result = label, cached,
        detail = detail.as_deref().unwrap_or("-"),
        duration_ms = started.elapsed().as_millis() as u64, "ocsp request");
    resp
}

/// Serves /ocsp over plain HTTP on `listener` until `stop` turns true (`--ocsp-listen`).
pub async fn serve_plain<H: Host>(
    listener: tokio::net::TcpListener,
    state: Arc<H>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        let (tcp, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "OCSP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let mut stop = stop.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let resp = match state.ocsp() {
                        Some(o) if is_ocsp_path(req.uri().path()) => {
                            handle(state.ca(), state.metrics(), o, addr, req).await
                        }
                        _ => plain(StatusCode::NOT_FOUND, "this listener serves only /ocsp"),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

/// Replaces the responder certificate at two-thirds of its life; a failure retries every
/// minute (the current one keeps signing meanwhile).
pub async fn renew_responder<H: Host>(state: Arc<H>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(ocsp) = state.ocsp().cloned() else {
        return;
    };
    loop {
        let wait = u64::try_from(ocsp.renew_at() - unix_now()).unwrap_or(0);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = ocsp.renew(state.ca()).await {
            tracing::error!(error = %e, "OCSP responder renewal failed; retrying in 60 s");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_paths() {
        assert_eq!(
            get_request("/ocsp/MAMCAQA%3D"),
            Some(vec![0x30, 3, 2, 1, 0])
        );
        assert_eq!(get_request("/ocsp/MAMCAQA="), Some(vec![0x30, 3, 2, 1, 0]));
        assert_eq!(get_request("/ocsp/%zz"), None);
        assert_eq!(get_request("/ocsp"), None);
        assert!(is_ocsp_path("/ocsp") && is_ocsp_path("/ocsp/x") && !is_ocsp_path("/ocspx"));
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
