//! `mutual connect`: accept plaintext from a local, unmodified client and originate mutual TLS to
//! the remote, presenting our certificate and verifying the server's name or exact SPIFFE ID.
//! A failed handshake is logged and audited with its reason and the local connection is closed:
//! the client sees a closed connection, the operator sees why. Each connection has one
//! [`crate::conn::record::ConnRecord`]: every way out of [`Connect::handle`] writes its line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mutual_tls::{ClientMaterial, ClientSettings, Reason, TlsFacts, VerifiedPeer, Wanted};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::accept::{ConnGuard, Limits};
use crate::audit::Outcome;
use crate::backend::Backend;
use crate::conn::record::Recorder;
use crate::io::{Activity, CopyEnd, Metered};
use crate::metrics::ListenerMetrics;
use crate::reload::Reload;
use crate::shutdown::Shutdown;
use crate::{ProxyError, Shared};

#[derive(Clone, Debug)]
pub struct ConnectConfig {
    pub name: String,
    pub tls: ClientSettings,
    /// `host:port` of the mTLS server.
    pub remote: String,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub limits: Limits,
    /// Close a connection after this long, however busy (None: no limit).
    pub max_connection_lifetime: Option<Duration>,
    /// How strictly the server's chain is checked (`--profile`).
    pub profile: mutual_tls::Profile,
    /// Check the server's certificate with OCSP (`--ocsp`; None: off).
    pub ocsp: Option<crate::ocsp_peer::OcspPeerSettings>,
}

impl ConnectConfig {
    /// The client-side TLS material these settings give (the files, the profile).
    pub fn material(&self) -> Result<mutual_tls::ClientMaterial, mutual_tls::TlsError> {
        self.material_with(None)
    }

    /// [`ConnectConfig::material`] checking the server's certificate against these OCSP
    /// answers too.
    pub fn material_with(
        &self,
        ocsp_peer: Option<Arc<mutual_tls::ocsp_peer::OcspPeerRevocation>>,
    ) -> Result<mutual_tls::ClientMaterial, mutual_tls::TlsError> {
        let options = mutual_tls::TlsOptions {
            profile: self.profile,
            ocsp_peer,
            ..Default::default()
        };
        mutual_tls::build_client_config_with(&self.tls, remote_host(&self.remote), &options)
    }
}

/// The host part of `host:port` / `[v6]:port`, for the default server name.
pub fn remote_host(remote: &str) -> &str {
    let host = remote.rsplit_once(':').map_or(remote, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Refuses a listen address that plaintext clients could reach from the network.
pub fn check_loopback(addr: SocketAddr, allow_remote_clients: bool) -> Result<(), ProxyError> {
    if addr.ip().is_loopback() || allow_remote_clients {
        Ok(())
    } else {
        Err(ProxyError::NonLoopbackListen { addr })
    }
}

pub struct Connect {
    cfg: ConnectConfig,
    remote: Backend,
    current: ArcSwap<ClientMaterial>,
    lm: ListenerMetrics,
    shared: Shared,
    /// Counts, logs and audits each connection.
    rec: Arc<Recorder>,
    /// Set at the drain timeout: every open connection ends and writes its audit line.
    force: tokio::sync::watch::Sender<bool>,
    /// The server certificate's OCSP fetcher when `--ocsp` is on (started by `run`).
    ocsp: Option<Arc<crate::ocsp_peer::OcspPeerFetcher>>,
}

impl Connect {
    pub fn new(cfg: ConnectConfig, shared: &Shared) -> Result<Arc<Connect>, ProxyError> {
        let remote = Backend::remote(&cfg.remote)?;
        let ocsp = cfg.ocsp.clone().map(|settings| {
            crate::ocsp_peer::OcspPeerFetcher::new(settings, &cfg.name, Arc::clone(&shared.metrics))
        });
        let m = cfg.material_with(ocsp.as_ref().map(|f| f.revocation()))?;
        shared
            .metrics
            .set_cert_validity(&cfg.name, "client", m.cert_not_before, m.cert_not_after);
        let lm = shared.metrics.listener(&cfg.name);
        // /readyz: not ready until accepting; a client certificate past notAfter is not
        // ready either (0 = no certificate presented).
        let ready = &shared.metrics.ready;
        ready.set(
            &format!("listener {}", cfg.name),
            Some("not accepting connections yet".into()),
        );
        if m.cert_not_after != 0 {
            ready.set_deadline(
                &format!("certificate {}", cfg.name),
                m.cert_not_after,
                "the client certificate has expired",
            );
        }
        let rec = Recorder::connect(lm.clone(), Arc::clone(&shared.audit), cfg.remote.clone());
        let connect = Arc::new(Connect {
            cfg,
            remote,
            current: ArcSwap::from_pointee(m),
            rec,
            lm,
            shared: shared.clone(),
            force: tokio::sync::watch::channel(false).0,
            ocsp,
        });
        if let Some(f) = &connect.ocsp {
            let weak: std::sync::Weak<Connect> = Arc::downgrade(&connect);
            f.set_reload_target(weak);
        }
        Ok(connect)
    }

    pub fn cert_serial(&self) -> String {
        self.current.load().cert_serial.clone()
    }

    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: Shutdown) -> usize {
        if let Ok(a) = listener.local_addr() {
            tracing::info!(
                listener = %self.cfg.name,
                remote = %self.cfg.remote,
                serial = %self.cert_serial(),
                "accepting plaintext on {a}, originating mTLS"
            );
        }
        if let Some(f) = &self.ocsp {
            tokio::spawn(Arc::clone(f).run(shutdown.clone()));
        }
        self.shared
            .metrics
            .ready
            .set(&format!("listener {}", self.cfg.name), None);
        let me = Arc::clone(&self);
        crate::accept::run(
            listener,
            &self.cfg.limits,
            &self.lm,
            shutdown,
            move |tcp, peer, g| Arc::clone(&me).handle(tcp, peer, g),
            || {
                self.force.send_replace(true);
                self.force.receiver_count()
            },
        )
        .await
    }

    /// One local connection, from the accepted socket to its audit line.
    async fn handle(self: Arc<Self>, mut local: TcpStream, peer: SocketAddr, _guard: ConnGuard) {
        let mut rec = self.rec.start(peer);
        let mat = self.current.load_full();
        let tcp = match self.remote.dial_tcp(self.cfg.connect_timeout).await {
            Ok(t) => t,
            Err(e) => {
                let d = format!("{}: {e}", self.cfg.remote);
                return rec.end(Outcome::Failed, Reason::BackendUnavailable, &d);
            }
        };
        let landed = self.ocsp.as_ref().map(|f| f.landed());
        let mut hs = self.handshake(&mat, tcp).await;
        // With --ocsp a server certificate seen for the first time has no answer yet: the
        // fetcher asks at once, so wait for it (within the handshake timeout) and try again
        // once, instead of failing the local client for what is only our own cold cache.
        if let (Some(f), Some(seen), Err((Reason::RevocationUnknown, _))) =
            (&self.ocsp, landed, &hs)
        {
            if f.landed_after(seen, self.cfg.handshake_timeout).await {
                hs = match self.remote.dial_tcp(self.cfg.connect_timeout).await {
                    Ok(tcp) => self.handshake(&mat, tcp).await,
                    Err(e) => Err((
                        Reason::BackendUnavailable,
                        format!("{}: {e}", self.cfg.remote),
                    )),
                };
            }
        }
        let mut tls = match hs {
            Err((reason, detail)) => return rec.end(Outcome::Failed, reason, &detail),
            Ok(s) => s,
        };
        rec.handshake_done();
        let (_, state) = tls.get_ref();
        match VerifiedPeer::of(state, Wanted::default(), None) {
            Ok(p) => rec.peer(&Arc::new(p)),
            // The server's names do not parse: the line still says what was negotiated.
            Err(_) => rec.tls(TlsFacts::of(state)),
        }
        // A resumed session skips the server verifier (rustls reuses the chain it stored with
        // the ticket), so check that chain again now: the server's certificate may have expired
        // or been revoked since, and `serve` holds its clients to the same rule.
        if state.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            let chain = state.peer_certificates().unwrap_or_default();
            if let Err((reason, detail)) = mat.recheck_peer(chain) {
                drop(mat);
                let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
                return rec.end(Outcome::Failed, reason, &detail);
            }
        }
        drop(mat);
        let act = Arc::new(Activity::default());
        let mut lc = Metered::new(&mut local, self.lm.bytes_in.clone(), Arc::clone(&act));
        let mut rc = Metered::new(tls, self.lm.bytes_out.clone(), Arc::clone(&act)).lenient_eof();
        let (tin, tout, rerr) = (lc.total(), rc.total(), rc.read_error());
        let mut force = self.force.subscribe();
        let pumped = tokio::select! {
            end = crate::lifetime::pump_until(
                &mut lc,
                &mut rc,
                &act,
                crate::lifetime::Limits {
                    idle: self.cfg.idle_timeout,
                    lifetime: self.cfg.max_connection_lifetime,
                    peer_expiry: None,
                },
                None,
            ) => Some(end),
            _ = force.wait_for(|f| *f) => None,
        };
        let copy_end = match pumped {
            Some(crate::lifetime::Ended::Pump(end)) => end,
            Some(crate::lifetime::Ended::Lifetime) => {
                tracing::info!(listener = %self.cfg.name, %peer, "max connection lifetime reached: closed");
                CopyEnd::Closed
            }
            // Neither is asked for here (no peer expiry, no registry entry).
            Some(crate::lifetime::Ended::PeerExpired | crate::lifetime::Ended::Terminated(_)) => {
                CopyEnd::Closed
            }
            None => {
                tracing::info!(listener = %self.cfg.name, %peer, "drain timeout: closed");
                let _ = tokio::time::timeout(Duration::from_secs(1), rc.shutdown()).await;
                CopyEnd::Closed
            }
        };
        let (bytes_in, bytes_out) = (
            tin.load(std::sync::atomic::Ordering::Relaxed),
            tout.load(std::sync::atomic::Ordering::Relaxed),
        );
        rec.bytes(bytes_in, bytes_out);
        // With TLS 1.3 the server checks our certificate after our side of the handshake is
        // done: its rejection arrives as an alert on the first read. Report that as the outcome.
        let remote_failure = rerr.lock().ok().and_then(|g| *g);
        match (remote_failure, bytes_out) {
            (Some(reason), 0) => {
                let d = match &copy_end {
                    CopyEnd::Error(e) => mutual_tls::describe_io(e),
                    _ => String::new(),
                };
                rec.end(Outcome::Failed, reason, &d)
            }
            _ => {
                if let CopyEnd::Error(e) = &copy_end {
                    tracing::debug!(listener = %self.cfg.name, %peer, "connection ended: {e}");
                }
                rec.end(Outcome::Allowed, Reason::Ok, "")
            }
        }
    }
}

impl Connect {
    /// Originates TLS on `tcp` within the handshake timeout; a failure as its reason and detail.
    async fn handshake(
        &self,
        mat: &ClientMaterial,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, (Reason, String)> {
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&mat.config));
        match tokio::time::timeout(
            self.cfg.handshake_timeout,
            connector.connect(mat.server_name.clone(), tcp),
        )
        .await
        {
            Err(_) => Err((Reason::HandshakeTimeout, String::new())),
            Ok(Err(e)) => Err((
                mutual_tls::classify_io_error(&e),
                mutual_tls::describe_io(&e),
            )),
            Ok(Ok(s)) => Ok(s),
        }
    }
}

impl Reload for Connect {
    fn reload(&self) -> Result<(), ProxyError> {
        let m = self
            .cfg
            .material_with(self.ocsp.as_ref().map(|f| f.revocation()))?;
        self.shared.metrics.set_cert_validity(
            &self.cfg.name,
            "client",
            m.cert_not_before,
            m.cert_not_after,
        );
        if m.cert_not_after != 0 {
            self.shared.metrics.ready.set_deadline(
                &format!("certificate {}", self.cfg.name),
                m.cert_not_after,
                "the client certificate has expired",
            );
        }
        let serial = m.cert_serial.clone();
        self.current.store(Arc::new(m));
        tracing::info!(listener = %self.cfg.name, serial = %serial, "new TLS client configuration in use");
        Ok(())
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        let t = &self.cfg.tls;
        vec![t.cert.clone(), t.key.clone(), t.ca.clone()]
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_host_strips_port_and_brackets() {
        assert_eq!(remote_host("example.org:8443"), "example.org");
        assert_eq!(remote_host("[::1]:8443"), "::1");
        assert_eq!(remote_host("10.0.0.1:1"), "10.0.0.1");
    }

    #[test]
    fn non_loopback_needs_the_flag() {
        let lo: SocketAddr = "127.0.0.1:7000".parse().unwrap_or_else(|_| unreachable!());
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap_or_else(|_| unreachable!());
        assert!(check_loopback(lo, false).is_ok());
        assert!(check_loopback(any, false).is_err());
        assert!(check_loopback(any, true).is_ok());
    }
}
