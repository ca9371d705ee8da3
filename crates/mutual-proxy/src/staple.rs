//! OCSP stapling for a serve listener's own certificate (`--ocsp-staple`, docs/ocsp.md): asks
//! the responder named in the certificate's AIA (or `--ocsp-staple-url`) for its status, checks
//! the answer (mutual_tls::ocsp::check_response), publishes it in the listener's
//! `Stapling` cell and rebuilds the listener (the same reload a new CRL triggers), so new
//! handshakes carry it. Refreshed at half of the response's validity, and within a minute of
//! the certificate changing (a renewal); a failure keeps the current staple while it is valid
//! and retries with a growing delay. A listener with no staple simply staples nothing.
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use mutual_tls::ocsp::{check_response, Stapling};

use crate::reload::Reload;
use crate::shutdown::Shutdown;

/// Largest response read (a response with a chain is a few KiB).
const MAX_RESPONSE: usize = 64 * 1024;
/// Time limit of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate file is looked at for a new certificate, at most.
const CERT_CHECK: Duration = Duration::from_secs(30);

/// The staple fetcher of one serve listener.
pub struct Stapler {
    listener: String,
    cert: PathBuf,
    stapling: Stapling,
    target: Mutex<Option<Weak<dyn Reload>>>,
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Stapler {
    pub fn new(listener: &str, cert: PathBuf, stapling: Stapling) -> Arc<Stapler> {
        Arc::new(Stapler {
            listener: listener.to_string(),
            cert,
            stapling,
            target: Mutex::new(None),
        })
    }

    /// The listener to rebuild when the staple changes.
    pub fn set_reload_target(&self, t: Weak<dyn Reload>) {
        if let Ok(mut g) = self.target.lock() {
            *g = Some(t);
        }
    }

    /// Fetches now, then whenever due, until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut failures: u32 = 0;
        loop {
            let wait = match self.refresh().await {
                Ok(Some(staple_half)) => {
                    failures = 0;
                    staple_half
                }
                Ok(None) => CERT_CHECK,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_secs(5u64 << failures.min(6));
                    tracing::warn!(listener = %self.listener, error = %e,
                        retry_in_s = backoff.as_secs(), "OCSP staple not refreshed");
                    backoff
                }
            };
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(wait.min(CERT_CHECK)) => {}
            }
        }
    }

    /// `Ok(Some(wait))`: stapled (or still current), next refresh in `wait`; `Ok(None)`:
    /// nothing due yet.
    async fn refresh(&self) -> Result<Option<Duration>, String> {
        let chain = mutual_tls::load::load_certs(&self.cert).map_err(|e| e.to_string())?;
        let (leaf, issuer) = match chain.as_slice() {
            [leaf, issuer, ..] => (leaf.as_ref(), issuer.as_ref()),
            _ => {
                return Err(format!(
                    "{} holds no issuer after the leaf: stapling needs the chain file",
                    self.cert.display()
                ))
            }
        };
        let now = unix_now();
        let serial = mutual_tls::ocsp::serial_of(leaf)
            .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        if let Some(cur) = self.stapling.current.load_full() {
            let half = cur.this_update + (cur.next_update - cur.this_update) / 2;
            if cur.serial == serial && now < half {
                return Ok(Some(Duration::from_secs(
                    u64::try_from(half - now).unwrap_or(0),
                )));
            }
        }
        let url = match &self.stapling.url {
            Some(u) => u.clone(),
            None => mutual_tls::ocsp::aia_ocsp_url(leaf).ok_or_else(|| {
                format!(
                    "{} names no OCSP responder (AIA): issue it with --ocsp-url or give \
                     --ocsp-staple-url",
                    self.cert.display()
                )
            })?,
        };
        let req = mutual_tls::ocsp::request(leaf, issuer)?;
        let der = match tokio::time::timeout(FETCH_TIMEOUT, post(&url, req)).await {
            Ok(r) => r.map_err(|e| format!("{url}: {e}"))?,
            Err(_) => return Err(format!("{url}: no answer within {FETCH_TIMEOUT:?}")),
        };
        let staple = check_response(&der, leaf, issuer, now).map_err(|e| format!("{url}: {e}"))?;
        let half = staple.this_update + (staple.next_update - staple.this_update) / 2;
        tracing::info!(listener = %self.listener, serial = %staple.serial,
            next_update = staple.next_update, "OCSP staple refreshed");
        self.stapling.current.store(Some(Arc::new(staple)));
        let target = self.target.lock().ok().and_then(|g| g.clone());
        if let Some(t) = target.and_then(|w| w.upgrade()) {
            t.reload()
                .map_err(|e| format!("reload with the new staple: {e}"))?;
        }
        Ok(Some(Duration::from_secs(
            u64::try_from(half - now).unwrap_or(0).max(1),
        )))
    }
}

/// POSTs an OCSP request over plain HTTP (RFC 6960 appendix A, RFC 5019); the response body
/// (at most 64 KiB). Shared with the peer-status fetcher (`ocsp_peer.rs`); the caller bounds
/// the time.
pub(crate) async fn post(url: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// OCSP responders are supported".into());
    }
    let host = uri.host().ok_or("no host in the URL")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/ocsp-request")
        .header(hyper::header::USER_AGENT, "mutual-ocsp")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    let out = match resp {
        Ok(r) if r.status() == hyper::StatusCode::OK => Limited::new(r.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .map_err(|e| format!("body: {e}")),
        Ok(r) => Err(format!("HTTP status {}", r.status())),
        Err(e) => Err(e),
    };
    driver.abort();
    out
}
