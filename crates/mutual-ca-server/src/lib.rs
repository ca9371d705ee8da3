//! The online CA: `mutual ca serve` runs the certificate authority over HTTPS so that services
//! enroll with a one-time token (`POST /v1/sign`), renew over mTLS with the certificate they
//! hold (`/v1/renew`), revoke (`/v1/revoke`) and fetch trust material (`/v1/roots`, `/v1/crl`).
//!
//! Why its own crate (DESIGN.md): the online CA is a network service with its own attack
//! surface (tokens, rate limits, body limits), while mutual-pki stays a library that never
//! speaks TLS. It sits beside mutual-proxy in the dependency graph: it uses mutual-pki (issuing),
//! mutual-store (tokens spent), mutual-policy (admin identities), and rustls + hyper directly
//! (axum has no TLS of its own; FIELD-NOTES.md).
//!
//! Shape: one TCP listener; each connection does a TLS handshake (client certificate optional,
//! verified against our root when sent), then HTTP/1.1 via hyper with the peer chain handed to
//! the handlers. The intermediate key is unlocked once at start. The server's own certificate is
//! issued by the CA at start and replaced at two-thirds of its life. A shutdown signal stops
//! accepting, lets in-flight requests finish (bounded by a drain timeout), then closes the
//! inventory cleanly, so every certificate a client got a 201 for is on disk.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
mod es256;
pub mod jwt;
pub mod metrics;
pub mod ocsp;
pub mod own_cert;
pub mod problem;
pub mod ratelimit;
mod reply;
pub mod roots;
pub mod tls;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use mutual_pki::ca::Ca;
use mutual_pki::{PkiError, San};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use ratelimit::RateSpec;
pub use token::{Claims, Provisioner, TokenError};

/// Why the server could not start (or stopped on its own).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("--admin: {0}")]
    Admin(#[from] mutual_policy::PolicyError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] mutual_store::StoreError),
    /// `--ui-listen` on an address other people can reach: it has no client certificates.
    #[error("--ui-listen {0}: the console without client certificates listens on loopback only (127.0.0.1, ::1)")]
    UiNotLoopback(SocketAddr),
}

/// What `mutual ca serve` takes (besides the unlocked CA and provisioner key).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// SANs of the server's own certificate.
    pub sans: Vec<San>,
    /// `--admin` patterns: identities that may revoke any certificate.
    pub admins: Vec<String>,
    pub rate: RateSpec,
    pub tls12: bool,
    /// Lifetime of the server's own certificate (renewed at two-thirds).
    pub server_cert_ttl: Duration,
    /// nextUpdate of the CRLs served at /v1/crl.
    pub crl_next_update: Duration,
    /// How often a replica checks the store for a newer CRL or revocations its CRL lacks
    /// (docs/ha.md): a revocation made elsewhere is served within this interval.
    pub crl_refresh: Duration,
    /// How long a shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    pub handshake_timeout: Duration,
    /// `--acme`: serve ACME (RFC 8555) at `/acme/` (crates/mutual-acme).
    pub acme: Option<mutual_acme::AcmeConfig>,
    /// `--ocsp`: answer OCSP at `/ocsp` (crate::ocsp, docs/ocsp.md).
    pub ocsp: Option<ocsp::OcspConfig>,
    /// `--ui-listen`: also serve the console (only) over plain HTTP on this loopback address,
    /// without client certificates (crates/mutual-console, docs/console.md).
    pub ui_listen: Option<SocketAddr>,
    /// `--est`: serve EST (RFC 7030) at `/.well-known/est/` (crates/mutual-est).
    pub est: Option<mutual_est::EstConfig>,
    /// `--renew-grace`: how long after expiry a certificate may still renew (`/v1/renew`, EST
    /// simplereenroll); zero (the default): not at all.
    pub renew_grace: Duration,
    /// `--server-key pkcs11:...`: the server's own TLS key, in a token (own_cert.rs); `None`:
    /// a new in-memory key with each certificate.
    pub server_key: Option<std::sync::Arc<mutual_hsm::TokenKey>>,
    /// The JWT-SVID signing key (crate::jwt; loaded with the CA password beside the
    /// provisioner key); `None`: `/v1/agent/jwt` and `/v1/jwks` answer `key_unavailable`.
    pub jwt: Option<Arc<jwt::JwtKeys>>,
    /// `--jwt-svid-ttl`: the lifetime of a JWT-SVID (at most its entry's TTL).
    pub jwt_svid_ttl: Duration,
}

/// The default lifetime of a JWT-SVID: short, since a bearer token cannot be revoked.
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(300);

impl ServeOptions {
    pub fn new(listen: SocketAddr, sans: Vec<San>) -> ServeOptions {
        ServeOptions {
            listen,
            sans,
            admins: Vec::new(),
            rate: RateSpec {
                per_sec: Some(10.0),
                burst: 20.0,
            },
            tls12: false,
            server_cert_ttl: Duration::from_secs(86_400),
            crl_next_update: Duration::from_secs(86_400),
            crl_refresh: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            acme: None,
            ocsp: None,
            ui_listen: None,
            est: None,
            renew_grace: Duration::ZERO,
            server_key: None,
            jwt: None,
            jwt_svid_ttl: DEFAULT_JWT_SVID_TTL,
        }
    }
}

/// The default SANs of the server's certificate: localhost, 127.0.0.1, ::1 and the host name.
pub fn default_sans() -> Vec<San> {
    let mut sans: Vec<San> = ["dns:localhost", "ip:127.0.0.1", "ip:::1"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_ascii_lowercase();
        if let Ok(san) = format!("dns:{h}").parse::<San>() {
            if h != "localhost" && !sans.contains(&san) {
                sans.push(san);
            }
        }
    }
    sans
}

/// A bound listener with everything set up; [`Server::run`] serves until `shutdown` resolves.
pub struct Server {
    listener: TcpListener,
    ui_listener: Option<TcpListener>,
    state: Arc<api::State>,
    tls: Arc<tls::TrustingAcceptor>,
    resolver: Arc<tls::RotatingCert>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    opts: ServeOptions,
    cert_serial: String,
    cert_not_before: i64,
    cert_not_after: i64,
    ocsp_listener: Option<TcpListener>,
}

impl Server {
    /// Issues the server's certificate, binds the listener, builds the first CRL.
    pub async fn bind(
        ca: Ca,
        provisioner: Provisioner,
        opts: ServeOptions,
    ) -> Result<Server, ServerError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let admins = api::admin_rules(&opts.admins)?;
        let cert = own_cert::issue_server_cert(
            &ca,
            &opts.sans,
            opts.server_cert_ttl,
            &provider,
            opts.server_key.as_ref(),
        )
        .await?;
        let resolver = Arc::new(tls::RotatingCert::new(cert.key));
        let est = match opts.est.clone() {
            Some(c) => Some(mutual_est::Est::new(c).map_err(ServerError::Tls)?),
            None => None,
        };
        // EST's manufacturer roots are accepted at the TLS layer too; only EST's simpleenroll
        // honours them (the native API looks a client up in the inventory).
        let bootstrap = est.as_ref().map(|e| e.bootstrap_roots()).unwrap_or(&[]);
        let tls = Arc::new(tls::TrustingAcceptor::new(
            ca.dir(),
            bootstrap,
            resolver.clone(),
            provider.clone(),
            opts.tls12,
        )?);
        let listener =
            TcpListener::bind(opts.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: opts.listen,
                    source,
                })?;
        let ui_listener = match opts.ui_listen {
            None => None,
            Some(a) if !a.ip().is_loopback() => return Err(ServerError::UiNotLoopback(a)),
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            ),
        };
        let ocsp_listener = match opts.ocsp.as_ref().and_then(|o| o.listen) {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            ),
            None => None,
        };
        let ocsp = match &opts.ocsp {
            Some(c) => Some(ocsp::Ocsp::new(&ca, c.clone()).await?),
            None => None,
        };
        let acme = opts
            .acme
            .clone()
            .map(|c| mutual_acme::Acme::new(ca.store().clone(), c));
        let state = Arc::new(
            api::State::new(
                ca,
                provisioner,
                admins,
                ratelimit::RateLimiter::new(opts.rate),
                opts.crl_next_update,
            )
            .with_acme(acme)
            .with_ocsp(ocsp)
            .with_est(est, opts.renew_grace)
            .with_jwt(opts.jwt.clone(), opts.jwt_svid_ttl),
        );
        state.metrics.issued("server", "ok");
        state
            .metrics
            .cert_validity("server", cert.not_before, cert.not_after);
        state.refresh_crl().await?;
        Ok(Server {
            listener,
            ui_listener,
            state,
            tls,
            resolver,
            provider,
            opts,
            cert_serial: cert.serial,
            cert_not_before: cert.not_before,
            cert_not_after: cert.not_after,
            ocsp_listener,
        })
    }

    /// The plain-HTTP OCSP listener's address (`--ocsp-listen`).
    pub fn ocsp_local_addr(&self) -> Option<SocketAddr> {
        self.ocsp_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The `--ui-listen` address, once bound.
    pub fn ui_local_addr(&self) -> Option<SocketAddr> {
        self.ui_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serial of the server certificate issued at start.
    pub fn cert_serial(&self) -> &str {
        &self.cert_serial
    }

    /// Serves until `shutdown` resolves, then drains and closes the inventory.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            listener,
            ui_listener,
            state,
            tls,
            resolver,
            provider,
            opts,
            cert_serial,
            cert_not_before,
            cert_not_after,
            ocsp_listener,
        } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let rotation = tokio::spawn(rotate(
            state.clone(),
            resolver,
            provider,
            opts.clone(),
            (cert_serial, cert_not_before, cert_not_after),
            stop_rx.clone(),
        ));
        let crl_refresh = tokio::spawn(refresh_crl(
            state.clone(),
            opts.crl_refresh,
            stop_rx.clone(),
        ));
        let offline_count = tokio::spawn(count_offline_issuances(state.clone(), stop_rx.clone()));
        let ocsp_tasks = [
            ocsp_listener
                .map(|l| tokio::spawn(ocsp::serve_plain(l, state.clone(), stop_rx.clone()))),
            Some(tokio::spawn(ocsp::renew_responder(
                state.clone(),
                stop_rx.clone(),
            ))),
        ];
        let ui = ui_listener.map(|l| tokio::spawn(ui_loopback(l, state.clone(), stop_rx.clone())));
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while conns.try_join_next().is_some() {}
            let (tcp, addr) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            conns.spawn(connection(
                tcp,
                addr,
                tls.current(),
                state.clone(),
                opts.handshake_timeout,
                stop_rx.clone(),
            ));
        }
        drop(listener);
        tracing::info!(open = conns.len(), "shutting down: draining connections");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(opts.drain_timeout, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = conns.len(),
                "drain timeout: closing the remaining connections"
            );
            conns.shutdown().await;
        }
        rotation.abort();
        crl_refresh.abort();
        offline_count.abort();
        for t in ocsp_tasks.into_iter().flatten() {
            t.abort();
        }
        if let Some(ui) = ui {
            ui.abort();
        }
        state.ca.store().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// One connection: TLS handshake (bounded), then HTTP/1.1 until the peer leaves or a shutdown
/// asks it to finish its current request and close.
async fn connection(
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<api::State>,
    handshake_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let stream = match tokio::time::timeout(handshake_timeout, tls.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(peer_addr = %addr, error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(peer_addr = %addr, "handshake timeout");
            return;
        }
    };
    // Read the client once: every request on this connection (renew, revoke, the admin
    // check, the log line) takes this one reading instead of parsing the leaf again.
    let wanted = mutual_tls::Wanted {
        chain: true,
        ..Default::default()
    };
    let verified = match mutual_tls::VerifiedPeer::of(stream.get_ref().1, wanted, None) {
        Ok(v) => Some(v),
        Err(mutual_tls::PeerError::NoCertificate) => None,
        Err(mutual_tls::PeerError::Malformed(e)) => {
            tracing::info!(peer_addr = %addr, error = %e, "client certificate names unreadable");
            None
        }
    };
    let peer = Arc::new(api::Peer { addr, verified });
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let peer = peer.clone();
        async move { Ok::<_, std::convert::Infallible>(api::handle(&state, &peer, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer_addr = %addr, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(peer_addr = %addr, error = %e, "connection ended with an error");
    }
}

/// The `--ui-listen` loopback listener: plain HTTP/1.1, the console only, no client
/// certificates (being on this machine is the credential; the console checks the Host header).
async fn ui_loopback(
    listener: TcpListener,
    state: Arc<api::State>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => None,
            r = listener.accept() => Some(r),
        };
        let (tcp, addr) = match accepted {
            None => break,
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "console accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(api::handle_loopback(&state, addr, req).await)
                }
            });
            let r = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
            if let Err(e) = r {
                tracing::debug!(peer_addr = %addr, error = %e, "console connection ended with an error");
            }
        });
    }
    conns.shutdown().await;
}

/// Every `every`, brings the served CRL up to date with the store (a newer CRL stored by
/// another replica, a revocation made with `mutual cert revoke`, half of its life gone). A
/// failure (the database away) keeps the current CRL and tries again next time.
async fn refresh_crl(
    state: Arc<api::State>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = state.refresh_crl().await {
            tracing::warn!(error = %e, "CRL refresh failed; serving the current CRL");
        }
    }
}

/// Issuances made outside this server (`mutual cert issue`, `--batch`: requested_by `cli:...`,
/// `batch:...`) counted in the store at start and every minute, for
/// `mutual_ca_inventory_issued_certificates{method}` (an index range each, migration 0009).
async fn count_offline_issuances(
    state: Arc<api::State>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        state.count_offline_issuances().await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Replaces the server certificate at two-thirds of its life; on failure retries every minute
/// (the old certificate stays in use meanwhile).
async fn rotate(
    state: Arc<api::State>,
    resolver: Arc<tls::RotatingCert>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    opts: ServeOptions,
    first: (String, i64, i64),
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (mut serial, mut not_before, mut not_after) = first;
    loop {
        // Two-thirds of the life from issuance (notBefore is backdated, so count back from
        // notAfter instead).
        let third = i64::try_from(opts.server_cert_ttl.as_secs() / 3).unwrap_or(i64::MAX);
        let renew_at = not_after.saturating_sub(third).max(not_before);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let wait = Duration::from_secs(u64::try_from(renew_at - now).unwrap_or(0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match own_cert::issue_server_cert(
            &state.ca,
            &opts.sans,
            opts.server_cert_ttl,
            &provider,
            opts.server_key.as_ref(),
        )
        .await
        {
            Ok(c) => {
                state.metrics.issued("server", "ok");
                state
                    .metrics
                    .cert_validity("server", c.not_before, c.not_after);
                tracing::info!(old_serial = %serial, serial = %c.serial, "server certificate rotated");
                resolver.replace(c.key);
                serial = c.serial;
                not_before = c.not_before;
                not_after = c.not_after;
            }
            Err(e) => {
                state.metrics.issued("server", "internal");
                tracing::error!(error = %e, "server certificate rotation failed; retrying in 60 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}
