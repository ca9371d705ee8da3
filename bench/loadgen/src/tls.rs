//! The load generator's TLS client: TLS 1.3 only, a client certificate always, a choice of key
//! exchange group so that every contender can be measured with the same one.
//!
//! `--no-verify-server` skips the client's own checks of the server (chain and signature): on a
//! 2-core machine the client's verification would otherwise cost as much CPU as the server's
//! handshake and the load generator, not the proxy, would be what is measured. The server side,
//! which is what we compare, still does all its work: it verifies our chain and signature.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::crypto::aws_lc_rs;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Client options shared by every mode that talks TLS.
#[derive(clap::Args, Debug, Clone)]
pub struct TlsArgs {
    /// Client certificate chain (leaf first, then intermediates), PEM.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client private key, PEM (PKCS#8, SEC1 or PKCS#1).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Roots to verify the server with, PEM.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Name to send in SNI and to verify the server's certificate for.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Key exchange: x25519 (what every contender supports; the default for comparisons),
    /// mlkem (X25519MLKEM768 only) or auto (rustls's default preference, post-quantum first).
    #[arg(long, default_value = "x25519", value_parser = ["x25519", "mlkem", "auto"])]
    pub kx: String,
    /// Do not verify the server (see the module doc: keeps the client's CPU off the critical path).
    #[arg(long)]
    pub no_verify_server: bool,
    /// Give up on one connection (TCP connect + handshake + first exchange) after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub conn_timeout: f64,
}

/// A ready connector plus what it needs to dial.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
    pub timeout: Duration,
}

impl Client {
    /// A client that makes every handshake a full one (see `with_own_session_cache`).
    pub fn new(args: &TlsArgs) -> anyhow::Result<Self> {
        let mut provider = aws_lc_rs::default_provider();
        provider.kx_groups = match args.kx.as_str() {
            "x25519" => vec![aws_lc_rs::kx_group::X25519],
            "mlkem" => vec![aws_lc_rs::kx_group::X25519MLKEM768],
            _ => provider.kx_groups,
        };
        let schemes = provider
            .signature_verification_algorithms
            .supported_schemes();
        let (Some(cert), Some(key), Some(ca)) = (&args.cert, &args.key, &args.ca) else {
            anyhow::bail!("--cert, --key and --ca are required (unless --plain)");
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading {}", cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", cert.display()))?;
        let key_der = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading key {}", key.display()))?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(c.with_context(|| format!("parsing {}", ca.display()))?)?;
        }
        let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)?;
        if args.no_verify_server {
            cfg.dangerous()
                .set_certificate_verifier(Arc::new(AcceptAnyServer(schemes)));
        }
        cfg.resumption = Resumption::disabled();
        // Writes the handshake secrets to $SSLKEYLOGFILE when it is set (a no-op otherwise), as
        // curl and browsers do: lets a packet capture of the bench be decrypted and compared with
        // another client's (docs/PERFORMANCE.md, "Two clients").
        cfg.key_log = Arc::new(rustls::KeyLogFile::new());
        let config = Arc::new(cfg);
        Ok(Client {
            connector: TlsConnector::from(config.clone()),
            config,
            name: ServerName::try_from(args.server_name.clone())?,
            timeout: Duration::from_secs_f64(args.conn_timeout),
        })
    }

    /// The same client with a session cache of its own, like a separate client process that
    /// reconnects. One cache shared by many concurrent connections holds only a few tickets per
    /// server name (rustls keeps 8), so some connections would find none and do a full handshake.
    pub fn with_own_session_cache(&self) -> Self {
        let mut cfg = (*self.config).clone();
        cfg.resumption = Resumption::store(Arc::new(ClientSessionMemoryCache::new(32)));
        self.with_config(cfg)
    }

    /// The rustls configuration this client connects with (for in-memory handshakes).
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    /// The same client speaking HTTP/2: offers ALPN `h2` (by default no ALPN, which every
    /// server answers with HTTP/1.1 or raw bytes) and the request modes then use h2.
    pub fn h2(&self) -> Self {
        let mut cfg = (*self.config).clone();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        self.with_config(cfg)
    }

    /// The same server name and timeout with another configuration.
    fn with_config(&self, cfg: ClientConfig) -> Self {
        let config = Arc::new(cfg);
        Client {
            connector: TlsConnector::from(config.clone()),
            config,
            name: self.name.clone(),
            timeout: self.timeout,
        }
    }

    /// Whether this client speaks HTTP/2 ([`Client::h2`]).
    pub fn is_h2(&self) -> bool {
        self.config.alpn_protocols.iter().any(|p| p == b"h2")
    }

    /// TCP connect and TLS handshake. The handshake being complete on our side does not mean the
    /// server accepted our certificate (TLS 1.3 sends it last): callers exchange data to know.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// Accepts any server (see the module doc). Only ever installed by `--no-verify-server`.
#[derive(Debug)]
struct AcceptAnyServer(Vec<SignatureScheme>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

/// Names of what was negotiated, for the JSON output (a run against the wrong group or suite
/// would not be comparable).
pub fn negotiated(conn: &rustls::ClientConnection) -> (String, String) {
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let group = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_default();
    (suite, group)
}
