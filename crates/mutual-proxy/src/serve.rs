//! `mutual serve`: terminate mutual TLS and forward to an unmodified backend. Per connection:
//! handshake under a timeout (client certificate required and verified by mutual-tls), identity
//! from the leaf, policy decision, and only then is the backend dialled. Nothing reaches the
//! backend from a peer that is not both authenticated and allowed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mutual_policy::{Identity, Policy};
use mutual_tls::{Reason, ServerSettings};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::accept::{ConnGuard, Limits};
use crate::audit::{rfc3339_ms, AuditIdentity, AuditRecord, Outcome, TlsInfo};
use crate::backend::Backend;
use crate::io::{Activity, CopyEnd, Metered};
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
    /// `tcp` (byte pipe) or `http` (HTTP/1.1 + HTTP/2, per-request policy): see http.rs.
    pub mode: crate::http::Mode,
    /// HTTP mode only: identity headers for the backend.
    pub http: crate::http::HttpOptions,
    /// Send a PROXY protocol header to the backend before any client byte (H6c).
    pub proxy_protocol: Option<crate::proxy_protocol::ProxyProtocol>,
    /// Close an allowed connection after this long, however busy (H6c; None: no limit).
    pub max_connection_lifetime: Option<Duration>,
    /// Fetch CRLs from the client certificates' distribution points (H6c; None: off).
    pub crl_from_cdp: Option<crate::cdp::CdpSettings>,
    /// End an established connection when its peer's certificate expires (a timer at the
    /// leaf's notAfter). Off: expiry after the handshake never ends a connection, a reload
    /// included (`--end-on-peer-expiry`, config key `end_on_peer_expiry`).
    pub end_on_peer_expiry: bool,
}

/// The material a handshake uses; replaced as a whole on reload.
pub struct Material {
    pub server: mutual_tls::ServerMaterial,
    pub policy: Arc<Policy>,
}

/// A serve listener: configuration, current material, metrics, audit.
pub struct Serve {
    cfg: ServeConfig,
    current: ArcSwap<Material>,
    lm: ListenerMetrics,
    shared: Shared,
    /// Established connections, re-checked on every reload (live re-authorization).
    conns: Arc<crate::live::Registry>,
    /// HTTP mode: the backend connection pool.
    forwarder: Option<crate::http::forward::Forwarder>,
    /// The CRL fetcher when `crl_from_cdp` is on (started by `run`).
    cdp: Option<Arc<crate::cdp::CdpFetcher>>,
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
    if cfg.mode == crate::http::Mode::Tcp && policy.has_http_rules() {
        // Such a rule would grant the whole connection in TCP mode: refuse rather than widen it.
        return Err(ProxyError::HttpRulesInTcpMode);
    }
    let policy = Arc::new(policy);
    let server = if cfg.mode == crate::http::Mode::Http {
        let mut tls = cfg.tls.clone();
        tls.alpn = crate::http::alpn();
        mutual_tls::build_server_config_with(&tls, &cfg.tls_options)?
    } else {
        // TCP mode decides once per connection: decide inside the handshake so a denied peer
        // gets an `access_denied` alert (HTTP mode answers 403 per request instead).
        let mut options = cfg.tls_options.clone();
        options.authorize = Some(policy_check(Arc::clone(&policy)));
        mutual_tls::build_server_config_with(&cfg.tls, &options)?
    };
    Ok(Material { server, policy })
}

tokio::task_local! {
    /// The leaf a handshake's policy check refused, so the audit line can name who it was.
    static DENIED_LEAF: std::cell::RefCell<Option<Vec<u8>>>;
}

/// The connection-level policy decision the verifier asks during a TCP-mode handshake.
fn policy_check(policy: Arc<Policy>) -> mutual_tls::PeerCheck {
    mutual_tls::PeerCheck(Arc::new(move |der: &[u8]| {
        // A leaf whose names do not parse is refused after the handshake as `malformed`.
        let Ok(id) = Identity::from_der(der) else {
            return true;
        };
        let allowed = policy.authorize(&id, None).allowed;
        if !allowed {
            let _ = DENIED_LEAF.try_with(|slot| *slot.borrow_mut() = Some(der.to_vec()));
        }
        allowed
    }))
}

/// Closes an established TLS connection we refuse: close_notify, FIN, then a bounded drain so
/// the peer reads what we sent instead of a RST.
async fn refuse_tls<S>(tls: &mut tokio_rustls::server::TlsStream<crate::refuse::HandshakeIo<S>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
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
        let m = Arc::new(build(&cfg)?);
        shared
            .metrics
            .set_cert_expiry(&cfg.name, "server", m.server.cert_not_after);
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
        let forwarder = (cfg.mode == crate::http::Mode::Http)
            .then(|| crate::http::forward::Forwarder::new(&cfg.backend, cfg.connect_timeout));
        let ready = &shared.metrics.ready;
        ready.set(
            &format!("listener {}", cfg.name),
            Some("not accepting connections yet".into()),
        );
        ready.set_deadline(
            &format!("certificate {}", cfg.name),
            m.server.cert_not_after,
            "the served certificate has expired",
        );
        let serve = Arc::new(Serve {
            cfg,
            current: ArcSwap::new(m),
            lm,
            shared: shared.clone(),
            conns,
            forwarder,
            cdp,
        });
        if let Some(f) = &serve.cdp {
            let weak: std::sync::Weak<Serve> = Arc::downgrade(&serve);
            f.set_reload_target(weak);
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

    /// The policy in force now (HTTP mode asks per request).
    pub(crate) fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.current.load().policy)
    }

    pub(crate) fn listener_metrics(&self) -> &ListenerMetrics {
        &self.lm
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub(crate) fn forwarder(&self) -> Option<&crate::http::forward::Forwarder> {
        self.forwarder.as_ref()
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

    async fn handle(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        _guard: ConnGuard,
        shutdown: Shutdown,
    ) {
        let mut conn = Conn {
            serve: &self,
            peer,
            ts: OffsetDateTime::now_utc(),
            start: Instant::now(),
        };
        let local = tcp.local_addr().ok();
        let mat = self.current.load_full();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&mat.server.config));
        let io = crate::refuse::HandshakeIo::new(tcp);
        let timeout = self.cfg.handshake_timeout;
        let (hs, denied_leaf) = DENIED_LEAF
            .scope(std::cell::RefCell::new(None), async move {
                let hs = tokio::time::timeout(timeout, acceptor.accept(io).into_fallible()).await;
                (hs, DENIED_LEAF.with(|slot| slot.borrow_mut().take()))
            })
            .await;
        let mut tls = match hs {
            Err(_) => {
                return conn.end(
                    Outcome::Failed,
                    Reason::HandshakeTimeout,
                    None,
                    None,
                    "",
                    0,
                    0,
                )
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
                let negotiated = io.negotiated().map(TlsInfo::from_negotiated);
                // Let the alert rustls wrote reach the client before the socket closes.
                crate::refuse::linger(io.get_mut()).await;
                let id = denied_leaf
                    .filter(|_| reason == Reason::PolicyDenied)
                    .and_then(|der| Identity::from_der(&der).ok());
                if let Some(id) = id {
                    self.lm
                        .observe_peer(&id.principal(), &id.serial, id.not_after);
                    return conn.end(
                        Outcome::Denied,
                        Reason::PolicyDenied,
                        Some(&id),
                        negotiated,
                        "",
                        0,
                        0,
                    );
                }
                return conn.end(Outcome::Failed, reason, None, None, &detail, 0, 0);
            }
            Ok(Ok(s)) => s,
        };
        tls.get_mut().0.handshake_done();
        self.lm
            .handshake_duration
            .observe(conn.start.elapsed().as_secs_f64());
        let (_, state) = tls.get_ref();
        let info = TlsInfo::from_state(state);
        let leaf = state
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        let Some(leaf) = leaf else {
            refuse_tls(&mut tls).await;
            return conn.end(
                Outcome::Failed,
                Reason::NoClientCert,
                None,
                Some(info),
                "",
                0,
                0,
            );
        };
        let id = match Identity::from_der(&leaf) {
            Ok(id) => id,
            Err(e) => {
                refuse_tls(&mut tls).await;
                let detail = e.to_string();
                return conn.end(
                    Outcome::Failed,
                    Reason::Malformed,
                    None,
                    Some(info),
                    &detail,
                    0,
                    0,
                );
            }
        };
        self.lm
            .observe_peer(&id.principal(), &id.serial, id.not_after);
        // A resumed session skips the certificate verifier (rustls reuses the stored chain), so
        // check the chain again: time may have passed (expiry) since the ticket was issued.
        if info.resumed {
            let chain = state.peer_certificates().unwrap_or_default();
            if let Err((reason, detail)) = mat.server.recheck_peer(chain) {
                refuse_tls(&mut tls).await;
                return conn.end(
                    Outcome::Failed,
                    reason,
                    Some(&id),
                    Some(info),
                    &detail,
                    0,
                    0,
                );
            }
        }
        let decision = mat.policy.authorize(&id, None);
        // Registered before the backend is dialled so a reload from here on re-checks it.
        let chain: Vec<_> = state
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect();
        let registration = decision
            .allowed
            .then(|| self.conns.register(id.clone(), chain, &mat));
        drop(mat);
        if self.cfg.mode == crate::http::Mode::Http {
            // Each request is authorized (methods, paths) and audited by the HTTP layer.
            let chain = state
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|c| c.as_ref().to_vec())
                .collect();
            let serve = Arc::clone(&self);
            return crate::http::serve_connection(
                serve,
                tls,
                crate::http::Verified {
                    chain,
                    peer,
                    id,
                    info,
                    known: decision.allowed,
                },
                shutdown,
                registration.as_ref().map(|r| r.ended.clone()),
            )
            .await;
        }
        if !decision.allowed {
            // Close politely (close_notify) but quickly; a stalled peer must not hold the task.
            refuse_tls(&mut tls).await;
            return conn.end(
                Outcome::Denied,
                Reason::PolicyDenied,
                Some(&id),
                Some(info),
                "",
                0,
                0,
            );
        }
        let proxy_header = self
            .cfg
            .proxy_protocol
            .and_then(|_| proxy_v2_header(peer, local, &id, state));
        let backend = match self.cfg.backend.dial(self.cfg.connect_timeout).await {
            Ok(mut b) => {
                match send_proxy_header(&mut b, proxy_header, self.cfg.connect_timeout).await {
                    Ok(()) => b,
                    Err(e) => {
                        refuse_tls(&mut tls).await;
                        let detail = format!("{}: PROXY header: {e}", self.cfg.backend);
                        return conn.end(
                            Outcome::Failed,
                            Reason::BackendUnavailable,
                            Some(&id),
                            Some(info),
                            &detail,
                            0,
                            0,
                        );
                    }
                }
            }
            Err(e) => {
                refuse_tls(&mut tls).await;
                let detail = format!("{}: {e}", self.cfg.backend);
                return conn.end(
                    Outcome::Failed,
                    Reason::BackendUnavailable,
                    Some(&id),
                    Some(info),
                    &detail,
                    0,
                    0,
                );
            }
        };
        self.lm.outcome(Outcome::Allowed, Reason::Ok);
        tracing::debug!(listener = %self.cfg.name, %peer, identity = %id.principal(), "allowed");
        let act = Arc::new(Activity::default());
        let mut client =
            Metered::new(tls, self.lm.bytes_in.clone(), Arc::clone(&act)).lenient_eof();
        let mut back = Metered::new(backend, self.lm.bytes_out.clone(), Arc::clone(&act));
        let (tin, tout) = (client.total(), back.total());
        let mut ended = registration.as_ref().map(|r| r.ended.clone());
        let expiry = self.cfg.end_on_peer_expiry.then_some(id.not_after);
        let (end, terminated) = tokio::select! {
            end = crate::lifetime::pump_limited(
                &mut client,
                &mut back,
                &act,
                self.cfg.idle_timeout,
                self.cfg.max_connection_lifetime,
            ) => match end {
                crate::lifetime::Ended::Pump(end) => (end, None),
                crate::lifetime::Ended::Lifetime => {
                    tracing::info!(listener = %self.cfg.name, %peer, "max connection lifetime reached: closed");
                    (CopyEnd::Closed, None)
                }
            },
            t = crate::live::wait_opt(ended.as_mut()) => (CopyEnd::Closed, Some(t)),
            _ = crate::live::peer_expiry(expiry) => (
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
            tracing::info!(listener = %self.cfg.name, %peer, identity = %id.principal(),
                reason = "expired", "closing an established connection: {detail}");
        }
        if terminated.is_some() {
            // Close politely (close_notify) but quickly; the backend side just closes.
            let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
        }
        drop(registration);
        match &end {
            CopyEnd::Closed => {}
            CopyEnd::Idle => tracing::debug!(listener = %self.cfg.name, %peer, "idle timeout"),
            CopyEnd::Error(e) => {
                tracing::debug!(listener = %self.cfg.name, %peer, "connection ended: {e}")
            }
        }
        let bytes_in = tin.load(std::sync::atomic::Ordering::Relaxed);
        let bytes_out = tout.load(std::sync::atomic::Ordering::Relaxed);
        let (outcome, reason) = match &terminated {
            Some(crate::live::Termination::Unauthorized { reason, .. }) => {
                (Outcome::Denied, *reason)
            }
            _ => (Outcome::Allowed, Reason::Ok),
        };
        conn.record(outcome, reason, Some(&id), Some(info), bytes_in, bytes_out);
    }
}

/// The PROXY v2 header for an allowed connection (None when the local address is unknown).
fn proxy_v2_header(
    peer: SocketAddr,
    local: Option<SocketAddr>,
    id: &Identity,
    state: &rustls::ServerConnection,
) -> Option<Vec<u8>> {
    use crate::proxy_protocol::{iana_cipher, Header, SslInfo};
    let info = TlsInfo::from_state(state);
    let leaf = state.peer_certificates().and_then(|c| c.first())?;
    let (sig_alg, key_alg) = mutual_tls::peer::cert_algorithms(leaf.as_ref());
    Some(
        Header {
            source: peer,
            destination: local?,
            ssl: SslInfo {
                version: info.version,
                cn: id.cn.clone().unwrap_or_default(),
                cipher: iana_cipher(&info.cipher),
                sig_alg,
                key_alg,
            },
            spiffe: id.spiffe.clone(),
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

/// One connection's bookkeeping for its audit line.
struct Conn<'a> {
    serve: &'a Serve,
    peer: SocketAddr,
    ts: OffsetDateTime,
    start: Instant,
}

impl Conn<'_> {
    /// A connection that ends before proxying: counted and audited at once, logged.
    #[allow(clippy::too_many_arguments)]
    fn end(
        &mut self,
        outcome: Outcome,
        reason: Reason,
        id: Option<&Identity>,
        tls: Option<TlsInfo>,
        detail: &str,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.serve.lm.outcome(outcome, reason);
        let who = id.map(Identity::principal).unwrap_or_default();
        tracing::info!(
            listener = %self.serve.cfg.name,
            peer = %self.peer,
            identity = %who,
            result = outcome.label(),
            reason = reason.label(),
            "{}{}{}",
            reason.explanation(),
            if detail.is_empty() { "" } else { " " },
            detail
        );
        self.record(outcome, reason, id, tls, bytes_in, bytes_out);
    }

    fn record(
        &self,
        outcome: Outcome,
        reason: Reason,
        id: Option<&Identity>,
        tls: Option<TlsInfo>,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.serve.shared.audit.log(&AuditRecord {
            ts: rfc3339_ms(self.ts),
            listener: self.serve.cfg.name.clone(),
            peer_addr: self.peer.to_string(),
            result: outcome,
            reason: reason.label(),
            identity: id.map(AuditIdentity::from),
            tls,
            bytes_in,
            bytes_out,
            duration_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            http: None,
        });
    }
}

impl Reload for Serve {
    fn reload(&self) -> Result<(), ProxyError> {
        let m = Arc::new(build(&self.cfg)?);
        let serial = m.server.cert_serial.clone();
        self.shared
            .metrics
            .set_cert_expiry(&self.cfg.name, "server", m.server.cert_not_after);
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
