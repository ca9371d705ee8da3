//! `--crl-from-cdp`: fetch CRLs from the CRL distribution points (CDPs) that certificates name,
//! check them, cache them on disk and keep them fresh, so revocation works without copying CRL
//! files around. The TLS side (which CRLs a handshake uses, and the `revocation_unknown` rule)
//! is [`mutual_tls::cdp`]; this module is the I/O around it.
//!
//! Design. A certificate's CDP says where *its issuer's* CRL is published. So the URLs come from
//! (1) the listener's own chain and its CA bundle at start (a proxy's certificate usually comes
//! from the same CA as its clients, so its CDP is the one clients will name) and (2) the
//! verified chains clients present: a URL seen for the first time is fetched at once, and until
//! a CRL for it is current, `--revocation-unknown` decides (deny by default: that handshake
//! fails with `revocation_unknown`). Each download must parse, be issued and signed by the
//! verified issuer of the certificate that named it, have thisUpdate not in the future and a
//! nextUpdate not yet past. It is written to `--crl-cache-dir` (so a restart has it at once,
//! re-checked), published to the handshakes, and the listener is rebuilt through its reload path
//! (fresh session tickets: a newly revoked client cannot resume). It is fetched again at 2/3 of
//! its thisUpdate..nextUpdate interval; a failure is retried with backoff (2 s doubling to
//! 5 min); a CRL past its nextUpdate stops counting. Downloads are limited in time and size.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use mutual_tls::cdp::{check_crl, crl_der, CdpRevocation, CheckedCrl, CurrentCrl, Sighting};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::rebuild::RebuildTarget;
use crate::reload::Reload;
use crate::shutdown::Shutdown;

/// How the fetcher behaves.
#[derive(Clone, Debug)]
pub struct CdpSettings {
    /// `--revocation-unknown deny` (true, default) or `allow`.
    pub deny_unknown: bool,
    /// Where fetched CRLs are kept across restarts.
    pub cache_dir: PathBuf,
    /// Refresh at least this often (a hidden test knob; None: only by the CRL's own dates).
    pub max_refresh: Option<Duration>,
    /// Time limit of one download.
    pub fetch_timeout: Duration,
    /// Size limit of one download.
    pub max_bytes: usize,
}

impl CdpSettings {
    pub fn new(deny_unknown: bool, cache_dir: PathBuf) -> Self {
        CdpSettings {
            deny_unknown,
            cache_dir,
            max_refresh: None,
            fetch_timeout: Duration::from_secs(10),
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The default `--crl-cache-dir`: `$MUTUAL_HOME/crl-cache`, else `~/.mutual/crl-cache`
/// (None when neither variable is set). Shared by the CLI and the config file.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("MUTUAL_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".mutual")))
        .map(|d| d.join("crl-cache"))
}

/// Errors setting the fetcher up (the cache directory).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdpError {
    #[error("CRL cache directory {path}: {source}")]
    CacheDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

struct Entry {
    issuer: CertificateDer<'static>,
    current: Option<(Vec<u8>, CheckedCrl)>,
    next_try: Instant,
    failures: u32,
}

/// Fetches, checks, caches and refreshes the CRLs of one listener.
pub struct CdpFetcher {
    settings: CdpSettings,
    revocation: Arc<CdpRevocation>,
    entries: Mutex<HashMap<String, Entry>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Sighting>>>,
    metrics: Arc<Metrics>,
    listener: String,
    target: RebuildTarget,
    https: Arc<rustls::ClientConfig>,
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn url_key(url: &str) -> String {
    hex::encode(
        &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes()).as_ref()[..16],
    )
}

/// First retry after 2 s, doubling, at most 5 minutes.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(failures.min(9)).min(300))
}

/// When to fetch again: at 2/3 of thisUpdate..nextUpdate, not sooner than 1 s from now.
fn refresh_in(c: &CheckedCrl, now: i64, cap: Option<Duration>) -> Duration {
    let at = c.this_update + (c.next_update - c.this_update) * 2 / 3;
    let d = Duration::from_secs(u64::try_from((at - now).max(1)).unwrap_or(1));
    match cap {
        Some(cap) => d.min(cap),
        None => d,
    }
}

impl CdpFetcher {
    /// Builds the fetcher and the revocation source to give the listener's `TlsOptions`.
    /// `roots` are trusted (with the system's) for https:// distribution points.
    pub fn new(
        settings: CdpSettings,
        listener: &str,
        metrics: Arc<Metrics>,
        roots: &[CertificateDer<'static>],
    ) -> Result<Arc<CdpFetcher>, CdpError> {
        std::fs::create_dir_all(&settings.cache_dir).map_err(|source| CdpError::CacheDir {
            path: settings.cache_dir.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::unbounded_channel::<Sighting>();
        // Report each URL once: the fetcher then owns it (retries, refreshes).
        let reported: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
        let revocation = Arc::new(CdpRevocation::new(
            settings.deny_unknown,
            Box::new(move |s: Sighting| {
                let fresh = match reported.lock() {
                    Ok(mut r) => s.urls.iter().any(|u| r.insert(u.clone())),
                    Err(_) => false,
                };
                if fresh {
                    let _ = tx.send(s);
                }
            }),
        ));
        // System roots plus the listener's own: a CDP may be on a public or a private server.
        let https = mutual_tls::client::cdp_https(
            rustls_native_certs::load_native_certs()
                .certs
                .into_iter()
                .chain(roots.iter().cloned()),
        );
        Ok(Arc::new(CdpFetcher {
            settings,
            revocation,
            entries: Mutex::new(HashMap::new()),
            rx: Mutex::new(Some(rx)),
            metrics,
            listener: listener.to_string(),
            target: RebuildTarget::default(),
            https,
        }))
    }

    /// The revocation source for `TlsOptions::cdp`.
    pub fn revocation(&self) -> Arc<CdpRevocation> {
        Arc::clone(&self.revocation)
    }

    /// The listener to rebuild (new session tickets) when the CRLs change.
    pub fn set_reload_target(&self, t: Weak<dyn Reload>) {
        self.target.set(t);
    }

    /// Distribution points known before any client connects (own chain, CA bundle).
    pub fn seed(&self, certs: &[CertificateDer<'static>]) {
        for s in mutual_tls::cdp::sightings_in(certs) {
            self.add(s);
        }
        self.update_readiness();
    }

    /// Loads the on-disk cache: every CRL still valid and still signed by its recorded issuer
    /// is used at once; all of them are refreshed as usual.
    pub fn load_cache(&self) {
        let Ok(dir) = std::fs::read_dir(&self.settings.cache_dir) else {
            return;
        };
        let now = unix_now();
        let mut loaded = 0;
        for f in dir.flatten() {
            let p = f.path();
            if p.extension().and_then(|e| e.to_str()) != Some("url") {
                continue;
            }
            let Ok(url) = std::fs::read_to_string(&p) else {
                continue;
            };
            let url = url.trim().to_string();
            let (Ok(der), Ok(issuer)) = (
                std::fs::read(p.with_extension("crl")),
                std::fs::read(p.with_extension("issuer")),
            ) else {
                continue;
            };
            let current = match check_crl(&der, &issuer, now) {
                Ok(c) => {
                    loaded += 1;
                    Some((der, c))
                }
                Err(e) => {
                    tracing::info!(listener = %self.listener, %url, "cached CRL not used: {e}");
                    None
                }
            };
            let refresh = current
                .as_ref()
                .map(|(_, c)| refresh_in(c, now, self.settings.max_refresh))
                .unwrap_or_default();
            if let Ok(mut e) = self.entries.lock() {
                e.insert(
                    url,
                    Entry {
                        issuer: CertificateDer::from(issuer),
                        current,
                        next_try: Instant::now() + refresh,
                        failures: 0,
                    },
                );
            }
        }
        if loaded > 0 {
            tracing::info!(listener = %self.listener, "{loaded} CRL(s) loaded from the cache {}", self.settings.cache_dir.display());
        }
        self.publish(false);
    }

    /// Runs until `shutdown`: takes new URLs, fetches what is due, expires what is stale.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut g| g.take()) else {
            return;
        };
        loop {
            self.update_readiness();
            let wake = self.next_wake();
            tokio::select! {
                _ = shutdown.wait() => return,
                batch = next_batch(&mut rx) => {
                    let Some(batch) = batch else { return };
                    batch.into_iter().for_each(|s| self.add(s));
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let due: Vec<(String, CertificateDer<'static>)> = match self.entries.lock() {
                Ok(e) => {
                    let now = Instant::now();
                    e.iter()
                        .filter(|(_, v)| v.next_try <= now)
                        .map(|(k, v)| (k.clone(), v.issuer.clone()))
                        .collect()
                }
                Err(_) => return,
            };
            let mut changed = false;
            for (url, issuer) in due {
                changed |= self.refresh(&url, &issuer).await;
            }
            changed |= self.expire();
            if changed {
                self.publish(true);
            }
        }
    }

    fn add(&self, s: Sighting) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        for url in s.urls {
            e.entry(url.clone()).or_insert_with(|| {
                tracing::info!(listener = %self.listener, %url, "new CRL distribution point: fetching");
                Entry {
                    issuer: s.issuer.clone(),
                    current: None,
                    next_try: Instant::now(),
                    failures: 0,
                }
            });
        }
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut wake = self
            .entries
            .lock()
            .ok()
            .and_then(|e| e.values().map(|v| v.next_try).min())
            .unwrap_or(far)
            .min(far);
        // Also wake when a current CRL passes its nextUpdate.
        let now = unix_now();
        if let Ok(e) = self.entries.lock() {
            for v in e.values() {
                if let Some((_, c)) = &v.current {
                    let left = u64::try_from((c.next_update - now).max(0)).unwrap_or(0);
                    wake = wake.min(Instant::now() + Duration::from_secs(left));
                }
            }
        }
        wake
    }

    /// One download; true when the current set changed.
    async fn refresh(&self, url: &str, issuer: &CertificateDer<'static>) -> bool {
        let now = unix_now();
        let got = fetch(
            url,
            self.settings.fetch_timeout,
            self.settings.max_bytes,
            &self.https,
        )
        .await;
        let checked = got.map_err(|e| ("failure", e)).and_then(|body| {
            let der = crl_der(&body);
            check_crl(&der, issuer.as_ref(), now)
                .map(|c| (der, c))
                .map_err(|e| ("invalid", e.to_string()))
        });
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        let Some(entry) = entries.get_mut(url) else {
            return false;
        };
        match checked {
            Ok((der, c)) => {
                self.metrics.crl_fetch("success");
                self.metrics.set_crl_next_update(&c.issuer, c.next_update);
                tracing::info!(
                    listener = %self.listener,
                    %url,
                    issuer = %c.issuer,
                    revoked = c.revoked,
                    next_update = %mutual_tls::verify::rfc3339(c.next_update),
                    "CRL fetched and verified"
                );
                if let Err(e) = write_cache(&self.settings.cache_dir, url, &der, issuer.as_ref()) {
                    tracing::warn!(listener = %self.listener, %url, "cannot cache the CRL: {e}");
                }
                entry.next_try = Instant::now() + refresh_in(&c, now, self.settings.max_refresh);
                entry.failures = 0;
                let changed = entry.current.as_ref().map(|(d, _)| d) != Some(&der);
                entry.current = Some((der, c));
                changed
            }
            Err((result, e)) => {
                self.metrics.crl_fetch(result);
                entry.failures += 1;
                let mut wait = backoff(entry.failures);
                if let Some(cap) = self.settings.max_refresh {
                    wait = wait.min(cap);
                }
                entry.next_try = Instant::now() + wait;
                let state = match &entry.current {
                    Some((_, c)) => format!(
                        "keeping the current CRL until its nextUpdate {}",
                        mutual_tls::verify::rfc3339(c.next_update)
                    ),
                    None if self.settings.deny_unknown => {
                        "no current CRL: its certificates are denied (revocation_unknown)".into()
                    }
                    None => {
                        "no current CRL: its certificates are allowed (--revocation-unknown allow)"
                            .into()
                    }
                };
                tracing::warn!(
                    listener = %self.listener,
                    %url,
                    retry_in = ?wait,
                    "CRL fetch failed ({result}): {e}; {state}"
                );
                false
            }
        }
    }

    /// Drops CRLs past their nextUpdate; true when any was dropped.
    fn expire(&self) -> bool {
        let now = unix_now();
        let Ok(mut e) = self.entries.lock() else {
            return false;
        };
        let mut changed = false;
        for (url, v) in e.iter_mut() {
            if v.current
                .as_ref()
                .is_some_and(|(_, c)| c.next_update <= now)
            {
                tracing::warn!(listener = %self.listener, %url, "CRL passed its nextUpdate without a replacement: revocation status unknown");
                v.current = None;
                changed = true;
            }
        }
        changed
    }

    fn publish(&self, reload: bool) {
        let current: Vec<CurrentCrl> = match self.entries.lock() {
            Ok(e) => e
                .iter()
                .filter_map(|(url, v)| {
                    v.current.as_ref().map(|(der, c)| CurrentCrl {
                        url: url.clone(),
                        der: CertificateRevocationListDer::from(der.clone()),
                        next_update: c.next_update,
                    })
                })
                .collect(),
            Err(_) => return,
        };
        if let Err(e) = self.revocation.publish(&current) {
            tracing::warn!(listener = %self.listener, "CRLs not published: {e}");
            return;
        }
        self.update_readiness();
        if !reload {
            return;
        }
        // Rebuild the listener: new ticket keys, so no session from before this CRL resumes.
        self.target
            .rebuild(&self.metrics, &self.listener, "a CRL update");
    }

    fn update_readiness(&self) {
        let key = format!("crl {}", self.listener);
        if !self.settings.deny_unknown {
            self.metrics.ready.set(&key, None);
            return;
        }
        let missing: Vec<String> = self
            .entries
            .lock()
            .map(|e| {
                let mut m: Vec<String> = e
                    .iter()
                    .filter(|(_, v)| v.current.is_none())
                    .map(|(k, _)| k.clone())
                    .collect();
                m.sort();
                m
            })
            .unwrap_or_default();
        let problem =
            (!missing.is_empty()).then(|| format!("no current CRL from {}", missing.join(", ")));
        self.metrics.ready.set(&key, problem);
    }
}

/// The next sighting and every other already queued (None: the channel closed). Shared by the
/// CDP and OCSP fetchers' run loops.
pub(crate) async fn next_batch<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Option<Vec<T>> {
    let mut batch = vec![rx.recv().await?];
    while let Ok(s) = rx.try_recv() {
        batch.push(s);
    }
    Some(batch)
}

/// Writes `<key>.crl`, `<key>.issuer` and `<key>.url` (the URL last: it marks a complete entry),
/// each by rename so a crash never leaves half a file.
fn write_cache(dir: &Path, url: &str, der: &[u8], issuer: &[u8]) -> std::io::Result<()> {
    let key = url_key(url);
    for (ext, data) in [("crl", der), ("issuer", issuer), ("url", url.as_bytes())] {
        let path = dir.join(format!("{key}.{ext}"));
        let tmp = dir.join(format!(".{key}.{ext}.tmp"));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// GET `url` (http or https), 200 only, within `timeout` and `max` bytes.
pub async fn fetch(
    url: &str,
    timeout: Duration,
    max: usize,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(timeout, fetch_inner(url, max, tls)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no complete answer within {timeout:?}")),
    }
}

async fn fetch_inner(
    url: &str,
    max: usize,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("only http:// and https:// are supported".into()),
    };
    let host = uri.host().ok_or("no host in the URL")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::net::TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "mutual-crl-fetcher")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if https {
        let name = rustls_pki_types::ServerName::try_from(bare)
            .map_err(|e| format!("bad host name: {e}"))?;
        let s = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        get(s, req, max).await
    } else {
        get(tcp, req, max).await
    }
}

async fn get<S>(io: S, req: hyper::Request<Empty<Bytes>>, max: usize) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != hyper::StatusCode::OK {
        driver.abort();
        return Err(format!("HTTP status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), max)
        .collect()
        .await
        .map_err(|e| format!("body: {e} (limit {max} bytes)"))?
        .to_bytes();
    driver.abort();
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_two_thirds_and_backoff_grows() {
        let c = CheckedCrl {
            this_update: 1000,
            next_update: 4000,
            issuer: String::new(),
            revoked: 0,
        };
        assert_eq!(refresh_in(&c, 1000, None), Duration::from_secs(2000));
        assert_eq!(refresh_in(&c, 3500, None), Duration::from_secs(1));
        assert_eq!(
            refresh_in(&c, 1000, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(300));
    }
}
