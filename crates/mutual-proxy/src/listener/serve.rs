//! `mutual serve`: terminate mutual TLS and forward to an unmodified backend. Per connection
//! ([`Serve::handle`]): handshake under a timeout (client certificate required and verified by
//! mutual-tls; in TCP mode the policy decides inside it), one [`VerifiedPeer`], the decision of
//! [`crate::authz`], registration for live re-authorization, and only then is the backend
//! dialled. Nothing reaches the backend from a peer that is not both authenticated and allowed.
//! Each connection has one [`crate::conn::record::ConnRecord`] that counts, logs and audits it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mutual_policy::Policy;
use mutual_tls::{PeerError, Reason, ServerSettings, TlsFacts, VerifiedPeer, Wanted};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::accept::{ConnGuard, Limits};
use crate::audit::Outcome;
use crate::backend::Backend;
use crate::conn::record::Recorder;
use crate::io::{Activity, CopyEnd, Metered};
use crate::material::{Material, Mode};
use crate::metrics::ListenerMetrics;
use crate::reload::Reload;
use crate::shutdown::Shutdown;
use crate::{ProxyError, Shared};

/// Everything one serve listener needs, as given on the command line (or, later, a config file).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The `listener` label in metrics and audit lines.
    pub name: String,
    pub tls: ServerSettings,
    /// Revocation policy and other TLS options beyond the settings.
    pub tls_options: mutual_tls::TlsOptions,
    /// Rules from flags (`--allow-*`); merged with the policy file's rules at each (re)load.
    pub policy_flags: Policy,
    pub policy_file: Option<PathBuf>,
    pub backend: Backend,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long dialling the backend may take.
    pub connect_timeout: Duration,
    pub limits: Limits,
    /// `tcp` (byte pipe) or `http` (HTTP/1.1 + HTTP/2, per-request policy): see [`crate::http`].
    pub mode: Mode,
    /// HTTP mode only: identity headers for the backend.
    pub http: crate::http::HttpOptions,
    /// Send a PROXY protocol header to the backend before any client byte.
    pub proxy_protocol: Option<crate::proxy_protocol::ProxyProtocol>,
    /// Close an allowed connection after this long, however busy (None: no limit).
    pub max_connection_lifetime: Option<Duration>,
    /// Fetch CRLs from the client certificates' distribution points (None: off).
    pub crl_from_cdp: Option<crate::cdp::CdpSettings>,
    /// Check client certificates with OCSP, asking the responders in their AIA (None: off).
    pub ocsp_from_aia: Option<crate::ocsp_peer::OcspPeerSettings>,
    /// End an established connection when its peer's certificate expires (a timer at the
    /// leaf's notAfter). Off: expiry after the handshake never ends a connection, a reload
    /// included (`--end-on-peer-expiry`, config key `end_on_peer_expiry`).
    pub end_on_peer_expiry: bool,
}

/// A serve listener: configuration, current material, metrics, audit.
pub struct Serve {
    cfg: ServeConfig,
    current: Arc<ArcSwap<Material>>,
    lm: ListenerMetrics,
    shared: Shared,
    /// Counts, logs and audits each connection.
    rec: Arc<Recorder>,
    /// What the leaf must yield beyond the identity (names for HTTP headers, algorithms for
    /// the PROXY header).
    wanted: Wanted,
    /// Established connections, re-checked on every reload (live re-authorization).
    conns: Arc<crate::live::Registry>,
    /// The peers of this listener's connections, one shared copy per chain (issue 20).
    peers: mutual_tls::PeerCache,
    /// HTTP mode: what serving requests needs (backend pool, options, current policy).
    http: Option<Arc<crate::http::Site>>,
    /// The CRL fetcher when `crl_from_cdp` is on (started by `run`).
    cdp: Option<Arc<crate::cdp::CdpFetcher>>,
    /// The peers' OCSP fetcher when `--ocsp-from-aia` is on (started by `run`).
    ocsp_peer: Option<Arc<crate::ocsp_peer::OcspPeerFetcher>>,
    /// The OCSP staple fetcher when `--ocsp-staple` is on (started by `run`).
    stapler: Option<Arc<crate::staple::Stapler>>,
}

/// Loads the policy: flags plus the file, if any.
pub fn load_policy(flags: &Policy, file: Option<&std::path::Path>) -> Result<Policy, ProxyError> {
    let mut p = flags.clone();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ProxyError::PolicyFile {
            path: path.to_path_buf(),
            source,
        })?;
        p = p.merged(Policy::from_toml(&text)?);
    }
    Ok(p)
}

fn build(cfg: &ServeConfig) -> Result<Material, ProxyError> {
    let policy = load_policy(&cfg.policy_flags, cfg.policy_file.as_deref())?;
    if policy.is_empty() {
        return Err(ProxyError::NoPolicy);
    }
    if cfg.mode == Mode::Tcp && policy.has_http_rules() {
        // Such a rule would grant the whole connection in TCP mode: refuse rather than widen it.
        return Err(ProxyError::HttpRulesInTcpMode);
    }
    let policy = Arc::new(policy);
    let mut tls = cfg.tls.clone();
    if cfg.mode == Mode::Http {
        tls.alpn = crate::http::alpn();
    }
    // TCP mode decides once per connection: decide inside the handshake so a denied peer gets
    // an `access_denied` alert (HTTP mode answers 403 per request instead). Both modes read
    // the peer's identity there, from the verifier's own parse of the leaf.
    let mut options = cfg.tls_options.clone();
    options.authorize = Some(crate::authz::handshake_check(
        Arc::clone(&policy),
        cfg.mode,
        wanted(cfg),
    ));
    let server = mutual_tls::build_server_config_with(&tls, &options)?;
    Ok(Material {
        server,
        policy,
        mode: cfg.mode,
    })
}

/// What a listener reads from each peer's leaf: the chain (live re-authorization), the
/// names for HTTP mode's identity headers, the algorithms for the PROXY header.
fn wanted(cfg: &ServeConfig) -> Wanted {
    Wanted {
        chain: true,
        names: cfg.mode == Mode::Http,
        algorithms: cfg.proxy_protocol.is_some(),
    }
}

/// Closes an established TLS connection we refuse: close_notify, FIN, then a bounded drain so
/// the peer reads what we sent instead of a RST.
async fn refuse_tls<S>(tls: &mut tokio_rustls::server::TlsStream<crate::refuse::HandshakeIo<S>>)
where
    S: tokio::io::AsyncRead + crate::refuse::SendMore,
{
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
    crate::refuse::linger(tls.get_mut().0.get_mut()).await;
}

/// Loads and checks a listener's files and policy without starting it (`mutual config check`,
/// and a config reload before it changes anything).
pub fn check(cfg: &ServeConfig) -> Result<(), ProxyError> {
    build(cfg).map(drop)
}

impl Serve {
    /// Loads and checks everything; an error here means "do not start" (exit 2).
    pub fn new(cfg: ServeConfig, shared: &Shared) -> Result<Arc<Serve>, ProxyError> {
        Self::with_registry(cfg, shared, None)
    }

    /// Like [`Serve::new`], taking over the open connections of a previous generation of the
    /// same listener (a changed config block): they are re-checked against the new material.
    pub fn with_registry(
        mut cfg: ServeConfig,
        shared: &Shared,
        conns: Option<Arc<crate::live::Registry>>,
    ) -> Result<Arc<Serve>, ProxyError> {
        let cdp = match &cfg.crl_from_cdp {
            Some(settings) => {
                let roots = mutual_tls::load::load_certs(&cfg.tls.ca)?;
                let f = crate::cdp::CdpFetcher::new(
                    settings.clone(),
                    &cfg.name,
                    Arc::clone(&shared.metrics),
                    &roots,
                )?;
                f.load_cache();
                let mut known = mutual_tls::load::load_certs(&cfg.tls.cert)?;
                known.extend(roots);
                f.seed(&known);
                cfg.tls_options.cdp = Some(f.revocation());
                Some(f)
            }
            None => None,
        };
        let ocsp_peer = cfg.ocsp_from_aia.clone().map(|settings| {
            let f = crate::ocsp_peer::OcspPeerFetcher::new(
                settings,
                &cfg.name,
                Arc::clone(&shared.metrics),
            );
            cfg.tls_options.ocsp_peer = Some(f.revocation());
            f
        });
        let stapler = cfg
            .tls_options
            .ocsp_staple
            .clone()
            .map(|st| crate::staple::Stapler::new(&cfg.name, cfg.tls.cert.clone(), st));
        let m = Arc::new(build(&cfg)?);
        shared.metrics.set_cert_validity(
            &cfg.name,
            "server",
            m.server.cert_not_before,
            m.server.cert_not_after,
        );
        let lm = shared.metrics.listener(&cfg.name);
        let conns = match conns {
            Some(c) => {
                c.publish(Arc::clone(&m));
                c
            }
            None => {
                let c = crate::live::Registry::new(lm.clone());
                c.set_latest(Arc::clone(&m));
                c
            }
        };
        let current = Arc::new(ArcSwap::new(m));
        let rec = Recorder::serve(lm.clone(), Arc::clone(&shared.audit));
        let http = (cfg.mode == Mode::Http)
            .then(|| crate::http::Site::new(&cfg, Arc::clone(&current), Arc::clone(&rec)));
        let wanted = wanted(&cfg);
        let not_after = current.load().server.cert_not_after;
        let ready = &shared.metrics.ready;
        ready.set(
            &format!("listener {}", cfg.name),
            Some("not accepting connections yet".into()),
        );
        ready.set_deadline(
            &format!("certificate {}", cfg.name),
            not_after,
            "the served certificate has expired",
        );
        let serve = Arc::new(Serve {
            cfg,
            current,
            lm,
            shared: shared.clone(),
            rec,
            wanted,
            conns,
            peers: mutual_tls::PeerCache::default(),
            http,
            cdp,
            ocsp_peer,
            stapler,
        });
        if let Some(f) = &serve.cdp {
            let weak: std::sync::Weak<Serve> = Arc::downgrade(&serve);
            f.set_reload_target(weak);
        }
        if let Some(f) = &serve.ocsp_peer {
            let weak: std::sync::Weak<Serve> = Arc::downgrade(&serve);
            f.set_reload_target(weak);
        }
        if let Some(st) = &serve.stapler {
            let weak: std::sync::Weak<Serve> = Arc::downgrade(&serve);
            st.set_reload_target(weak);
        }
        Ok(serve)
    }

    /// The open connections (to hand to the next generation, or to drain).
    pub fn registry(&self) -> &Arc<crate::live::Registry> {
        &self.conns
    }

    /// Serial (hex) of the certificate currently presented.
    pub fn cert_serial(&self) -> String {
        self.current.load().server.cert_serial.clone()
    }

    pub fn config(&self) -> &ServeConfig {
        &self.cfg
    }

    /// Accepts on `listener` until `shutdown`, then drains. Returns connections left open.
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: Shutdown) -> usize {
        if let Ok(a) = listener.local_addr() {
            tracing::info!(
                listener = %self.cfg.name,
                backend = %self.cfg.backend,
                serial = %self.cert_serial(),
                "serving mTLS on {a}"
            );
        }
        if let Some(f) = &self.cdp {
            tokio::spawn(Arc::clone(f).run(shutdown.clone()));
        }
        if let Some(f) = &self.ocsp_peer {
            tokio::spawn(Arc::clone(f).run(shutdown.clone()));
        }
        if let Some(st) = &self.stapler {
            tokio::spawn(Arc::clone(st).run(shutdown.clone()));
        }
        self.shared
            .metrics
            .ready
            .set(&format!("listener {}", self.cfg.name), None);
        let me = Arc::clone(&self);
        let sd = shutdown.clone();
        crate::accept::run(
            listener,
            &self.cfg.limits,
            &self.lm,
            shutdown,
            move |tcp, peer, g| Arc::clone(&me).handle(tcp, peer, g, sd.clone()),
            || self.conns.drain_all(),
        )
        .await
    }

    /// One connection, from the accepted socket to its audit line. This future is the
    /// connection's tokio task, which lives as long as the connection: it holds only two boxed
    /// phases in turn. The handshake phase ([`Serve::establish`]: handshake, checks, backend
    /// dial), whose future is several KiB (rustls' connection inline, timers, the dial), is
    /// freed once it returns; an established TCP-mode connection then holds just what the copy
    /// needs ([`Established`], one allocation) and the copy's own small future (issue 20,
    /// memory per idle connection).
    async fn handle(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        _guard: ConnGuard,
        shutdown: Shutdown,
    ) {
        let next = Box::pin(self.establish(tcp, peer, shutdown)).await;
        match next {
            Next::Done => {}
            Next::Http(serving, _registration) => serving.await,
            Next::Tcp(est) => self.proxy(est).await,
        }
    }

    /// The handshake phase of [`Serve::handle`]: a connection that goes no further is ended
    /// (audited) here; an HTTP-mode one is handed back ready to serve, a TCP-mode one with its
    /// backend dialled.
    async fn establish(&self, tcp: TcpStream, peer: SocketAddr, shutdown: Shutdown) -> Next {
        let mut rec = self.rec.start(peer);
        // Only the PROXY header needs the local address: no getsockname otherwise (issue 20).
        let local = self.cfg.proxy_protocol.and_then(|_| tcp.local_addr().ok());
        let mat = self.current.load_full();
        let mut io = crate::refuse::HandshakeIo::new(tcp);
        let accept = async {
            // The ClientHello first: a client resuming a session gets one ticket, not two, and
            // one that puts ChaCha20 first gets it (mutual_tls::HelloFacts).
            if let Err(e) = io.read_client_hello().await {
                return Err((e, io));
            }
            let config = mat.server.config_for(io.hello());
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
            acceptor.accept(io).into_fallible().await
        };
        let (hs, checked) = crate::authz::with_handshake_check(tokio::time::timeout(
            self.cfg.handshake_timeout,
            accept,
        ))
        .await;
        let mut tls = match hs {
            Err(_) => {
                rec.end(Outcome::Failed, Reason::HandshakeTimeout, "");
                return Next::Done;
            }
            Ok(Err((e, mut io))) => {
                let mut reason = mutual_tls::classify_io_error(&e);
                let mut detail = mutual_tls::describe_io(&e);
                if io.first_byte() == Some(crate::refuse::CONTENT_ALERT) {
                    // Nothing we chose (cipher, version, certificate) can have caused it.
                    reason = Reason::Malformed;
                    detail =
                        format!("the client sent a TLS alert before any ClientHello ({detail})");
                }
                let negotiated = io
                    .negotiated()
                    .map(|n| TlsFacts::from_codes(n.version, n.cipher, n.group));
                // Let the alert rustls wrote reach the client before the socket closes.
                crate::refuse::linger(io.get_mut()).await;
                let denied = checked.filter(|c| !c.allowed && reason == Reason::PolicyDenied);
                if let Some(c) = denied {
                    rec.identity(c.facts.id);
                    rec.seen();
                    if let Some(n) = negotiated {
                        rec.tls(n);
                    }
                    rec.end(Outcome::Denied, Reason::PolicyDenied, "");
                    return Next::Done;
                }
                rec.end(Outcome::Failed, reason, &detail);
                return Next::Done;
            }
            Ok(Ok(s)) => s,
        };
        tls.get_mut().0.handshake_done();
        rec.handshake_done();
        let (_, state) = tls.get_ref();
        let known = checked.filter(|c| c.allowed).map(|c| c.facts);
        // One shared `VerifiedPeer` per chain: a resumed session (no verifier ran) of a known
        // chain is not parsed again, and a client's connections share its chain and identity.
        let vp = match self.peers.peer_of(state, self.wanted, known) {
            Ok(p) => p,
            Err(e) => {
                rec.tls(TlsFacts::of(state));
                refuse_tls(&mut tls).await;
                match e {
                    PeerError::NoCertificate => rec.end(Outcome::Failed, Reason::NoClientCert, ""),
                    PeerError::Malformed(e) => {
                        rec.end(Outcome::Failed, Reason::Malformed, &e.to_string())
                    }
                }
                return Next::Done;
            }
        };
        rec.peer(&vp);
        rec.seen();
        // A resumed session skips the certificate verifier (rustls reuses the stored chain), so
        // check the chain again: time may have passed (expiry) since the ticket was issued.
        if vp.tls.resumed {
            if let Err((reason, detail)) = mat.server.recheck_peer(&vp.chain) {
                refuse_tls(&mut tls).await;
                rec.end(Outcome::Failed, reason, &detail);
                return Next::Done;
            }
        }
        let allowed = crate::authz::connection(&mat.policy, mat.mode, &vp.id);
        // Registered before the backend is dialled so a reload from here on re-checks it.
        let registration = allowed.then(|| self.conns.register(&vp, &mat));
        drop(mat);
        if let Some(site) = &self.http {
            // Each request is authorized (methods, paths) and audited by the HTTP layer. Boxed:
            // hyper's connection future is several KiB, and inline it would size the task of
            // every connection, TCP mode's idle ones included (issue 20, memory per connection).
            // Handed back unstarted, so the handshake phase is freed before it runs.
            let ended = registration.as_ref().map(|r| r.ended.clone());
            let serving = crate::http::serve_connection(
                Arc::clone(site),
                tls,
                rec,
                vp,
                allowed,
                shutdown,
                ended,
            );
            return Next::Http(Box::pin(serving), registration);
        }
        if !allowed {
            // Close politely (close_notify) but quickly; a stalled peer must not hold the task.
            refuse_tls(&mut tls).await;
            rec.end(Outcome::Denied, Reason::PolicyDenied, "");
            return Next::Done;
        }
        let proxy_header = self
            .cfg
            .proxy_protocol
            .and_then(|_| proxy_v2_header(peer, local, &vp));
        let backend = match self.cfg.backend.dial(self.cfg.connect_timeout).await {
            Ok(mut b) => {
                match send_proxy_header(&mut b, proxy_header, self.cfg.connect_timeout).await {
                    Ok(()) => b,
                    Err(e) => {
                        refuse_tls(&mut tls).await;
                        let detail = format!("{}: PROXY header: {e}", self.cfg.backend);
                        rec.end(Outcome::Failed, Reason::BackendUnavailable, &detail);
                        return Next::Done;
                    }
                }
            }
            Err(e) => {
                refuse_tls(&mut tls).await;
                let detail = format!("{}: {e}", self.cfg.backend);
                rec.end(Outcome::Failed, Reason::BackendUnavailable, &detail);
                return Next::Done;
            }
        };
        rec.count(Outcome::Allowed, Reason::Ok);
        tracing::debug!(listener = %self.cfg.name, %peer, identity = %vp.id.principal(), "allowed");
        let act = Arc::new(Activity::default());
        let client = Metered::new(tls, self.lm.bytes_in.clone(), Arc::clone(&act)).lenient_eof();
        let back = Metered::new(backend, self.lm.bytes_out.clone(), Arc::clone(&act));
        Next::Tcp(Box::new(Established {
            client,
            back,
            act,
            rec,
            registration,
            vp,
        }))
    }

    /// The copy phase of an allowed TCP-mode connection, until a side closes, a limit
    /// ([`crate::lifetime::pump_until`]: idle timeout, max lifetime, peer expiry, one timer) or
    /// live re-authorization ends it; then its audit line. `est` stays boxed: this future holds
    /// the pointer, not the connection's state.
    async fn proxy(&self, mut est: Box<Established>) {
        let peer = est.rec.peer_addr();
        let limits = crate::lifetime::Limits {
            idle: self.cfg.idle_timeout,
            lifetime: self.cfg.max_connection_lifetime,
            peer_expiry: self.cfg.end_on_peer_expiry.then_some(est.vp.id.not_after),
        };
        let e = &mut *est;
        let ended = e.registration.as_mut().map(|r| &mut r.ended);
        let pumped =
            crate::lifetime::pump_until(&mut e.client, &mut e.back, &e.act, limits, ended).await;
        let (end, terminated) = match pumped {
            crate::lifetime::Ended::Pump(end) => (end, None),
            crate::lifetime::Ended::Lifetime => {
                tracing::info!(listener = %self.cfg.name, %peer, "max connection lifetime reached: closed");
                (CopyEnd::Closed, None)
            }
            crate::lifetime::Ended::Terminated(t) => (CopyEnd::Closed, Some(t)),
            crate::lifetime::Ended::PeerExpired => (
                CopyEnd::Closed,
                Some(crate::live::Termination::Unauthorized {
                    reason: Reason::Expired,
                    detail: "the peer's certificate expired (--end-on-peer-expiry)".into(),
                }),
            ),
        };
        if let Some(crate::live::Termination::Unauthorized {
            reason: Reason::Expired,
            detail,
        }) = &terminated
        {
            tracing::info!(listener = %self.cfg.name, %peer, identity = %est.vp.id.principal(),
                reason = "expired", "closing an established connection: {detail}");
        }
        if terminated.is_some() {
            // Close politely (close_notify) but quickly; the backend side just closes.
            let _ = tokio::time::timeout(Duration::from_secs(1), est.client.shutdown()).await;
        }
        let Established {
            client,
            back,
            mut rec,
            registration,
            ..
        } = *est;
        drop(registration);
        match &end {
            CopyEnd::Closed => {}
            CopyEnd::Idle => tracing::debug!(listener = %self.cfg.name, %peer, "idle timeout"),
            CopyEnd::Error(e) => {
                tracing::debug!(listener = %self.cfg.name, %peer, "connection ended: {e}")
            }
        }
        rec.bytes(client.total_now(), back.total_now());
        match &terminated {
            Some(crate::live::Termination::Unauthorized { reason, .. }) => {
                rec.close(Outcome::Denied, *reason)
            }
            _ => rec.close(Outcome::Allowed, Reason::Ok),
        }
    }
}

/// What the handshake phase of a connection hands on.
enum Next {
    /// Nothing more: the connection was refused or failed (and audited).
    Done,
    /// HTTP mode: serving requests (boxed, see [`Serve::establish`]), with the connection's
    /// live re-authorization entry when it was allowed.
    Http(
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        Option<crate::live::Registration>,
    ),
    /// TCP mode: allowed and the backend dialled.
    Tcp(Box<Established>),
}

/// What an established TCP-mode connection holds while bytes flow (in one allocation, so
/// the connection's task stays small): the two sides, counted, their shared activity clock,
/// the connection's record, its live re-authorization entry, and its peer.
struct Established {
    client: Metered<tokio_rustls::server::TlsStream<crate::refuse::HandshakeIo<TcpStream>>>,
    back: Metered<crate::backend::BackendStream>,
    act: Arc<Activity>,
    rec: crate::conn::record::ConnRecord,
    registration: Option<crate::live::Registration>,
    vp: Arc<VerifiedPeer>,
}

/// The PROXY v2 header for an allowed connection (None when the local address is unknown).
fn proxy_v2_header(
    peer: SocketAddr,
    local: Option<SocketAddr>,
    vp: &VerifiedPeer,
) -> Option<Vec<u8>> {
    use crate::proxy_protocol::{iana_cipher, Header, SslInfo};
    let (sig_alg, key_alg) = vp.algorithms.clone().unwrap_or_default();
    Some(
        Header {
            source: peer,
            destination: local?,
            ssl: SslInfo {
                version: vp.tls.version.clone(),
                cn: vp.id.cn.clone().unwrap_or_default(),
                cipher: iana_cipher(&vp.tls.cipher),
                sig_alg,
                key_alg,
            },
            spiffe: vp.id.spiffe.clone(),
        }
        .encode(),
    )
}

/// Writes the PROXY header (if any) before the first proxied byte.
async fn send_proxy_header<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    header: Option<Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<()> {
    let Some(h) = header else { return Ok(()) };
    match tokio::time::timeout(timeout, w.write_all(&h)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out writing the header",
        )),
    }
}

impl Reload for Serve {
    fn reload(&self) -> Result<(), ProxyError> {
        let m = Arc::new(build(&self.cfg)?);
        let serial = m.server.cert_serial.clone();
        self.shared.metrics.set_cert_validity(
            &self.cfg.name,
            "server",
            m.server.cert_not_before,
            m.server.cert_not_after,
        );
        self.shared.metrics.ready.set_deadline(
            &format!("certificate {}", self.cfg.name),
            m.server.cert_not_after,
            "the served certificate has expired",
        );
        self.current.store(Arc::clone(&m));
        tracing::info!(listener = %self.cfg.name, serial = %serial, "new TLS configuration and policy in use");
        // Live re-authorization: established connections whose peer the new policy or CRLs no
        // longer allow are closed now.
        self.conns.publish(m);
        Ok(())
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        let t = &self.cfg.tls;
        let mut v = vec![t.cert.clone(), t.key.clone(), t.ca.clone()];
        v.extend(t.crls.iter().cloned());
        v.extend(self.cfg.policy_file.iter().cloned());
        v
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn returns (what it holds across its awaits).
    macro_rules! future_size {
        ($f:expr, $($arg:ident),+) => {{
            fn size<F, $($arg),+, Fut>(_: F) -> usize
            where
                F: FnOnce($($arg),+) -> Fut,
            {
                std::mem::size_of::<Fut>()
            }
            size($f)
        }};
    }

    /// What an idle established TCP-mode connection holds (issue 20): its task's future is the
    /// small outer one (the handshake phase is boxed and freed), plus one [`Established`].
    #[test]
    fn an_established_connection_holds_the_small_phases_only() {
        let task = future_size!(Serve::handle, A, B, C, D, E);
        let handshake = future_size!(Serve::establish, A, B, C, D);
        let copy = future_size!(Serve::proxy, A, B);
        let established = std::mem::size_of::<Established>();
        eprintln!(
            "task {task} B (copy phase {copy} B), handshake phase {handshake} B, \
             established {established} B"
        );
        assert!(
            task < handshake,
            "the handshake phase is inline in the task"
        );
        assert!(
            task < established,
            "the established state is inline in the task"
        );
    }
}
