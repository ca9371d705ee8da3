//! Every rustls `ServerConfig` of mutual: the proxy's listeners ([`crate::build_server_config`])
//! and the CA server's ([`ca_server`]), both through [`build`].

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;

use crate::config::{load_credentials, provider, versions};
use crate::verifiers::MutualClientVerifier;
use crate::verify::Trust;
use crate::{ServerMaterial, ServerSettings, TlsError, TlsOptions};

/// How many TLS 1.2 sessions the proxy's listener remembers (resumption by session ID).
const SESSION_CACHE_SIZE: usize = 4096;

/// What a server presents.
pub enum ServerCert {
    /// One chain and its key, fixed for the config's life.
    Single(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    /// One chain, its key and a stapled OCSP response (DER).
    Stapled(
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        Vec<u8>,
    ),
    /// Chosen per handshake (a certificate rotated in place).
    Resolver(Arc<dyn ResolvesServerCert>),
}

/// The one `ServerConfig` builder: `provider`'s suites, TLS 1.3 (and 1.2 with `allow_tls12`),
/// client certificates judged by `verifier`, ALPN `alpn`; tickets and session cache are
/// rustls' defaults unless the caller replaces them.
pub fn build(
    provider: Arc<CryptoProvider>,
    allow_tls12: bool,
    verifier: Arc<dyn ClientCertVerifier>,
    cert: ServerCert,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(allow_tls12))?
        .with_client_cert_verifier(verifier);
    let mut config = match cert {
        ServerCert::Single(chain, key) => builder.with_single_cert(chain, key)?,
        ServerCert::Stapled(chain, key, ocsp) => {
            builder.with_single_cert_with_ocsp(chain, key, ocsp)?
        }
        ServerCert::Resolver(r) => builder.with_cert_resolver(r),
    };
    config.alpn_protocols = alpn;
    Ok(config)
}

/// The CA server's listener: the rotating own certificate, a key-holder verifier
/// ([`MutualClientVerifier::key_holder`]: optional client certificates), HTTP/1.1 over ALPN.
pub fn ca_server(
    resolver: Arc<dyn ResolvesServerCert>,
    verifier: Arc<dyn ClientCertVerifier>,
    provider: Arc<CryptoProvider>,
    allow_tls12: bool,
) -> Result<ServerConfig, rustls::Error> {
    // The suite in the client's order (rustls's default): devices enroll with the CA, and one
    // without AES hardware puts ChaCha20 first. The CA's listener has no look at the ClientHello
    // before its configuration is chosen, which is what lets the proxy's listeners choose
    // ([`ServerMaterial::config_for`]).
    build(
        provider,
        allow_tls12,
        verifier,
        ServerCert::Resolver(resolver),
        vec![b"http/1.1".to_vec()],
    )
}

/// The proxy's listener (see [`crate::build_server_config`]): a required client certificate
/// verified by [`MutualClientVerifier`], fresh tickets and session cache.
pub(crate) fn mutual(s: &ServerSettings, o: &TlsOptions) -> Result<ServerMaterial, TlsError> {
    let provider = Arc::new(provider(s.allow_tls12));
    let creds = load_credentials(&provider, &s.cert, &s.key)?;
    let (not_before, not_after, serial) = (creds.not_before, creds.not_after, creds.serial.clone());
    let mut trust = Trust::from_files(&s.ca, &s.crls, o.revocation)?.with_profile(o.profile);
    if let Some(cdp) = &o.cdp {
        trust = trust.with_cdp(Arc::clone(cdp));
    }
    if let Some(ocsp) = &o.ocsp_peer {
        trust = trust.with_ocsp_peer(Arc::clone(ocsp));
    }
    let trust = Arc::new(trust);
    let verifier =
        Arc::new(MutualClientVerifier::new(trust.clone()).with_authorize(o.authorize.clone()));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let staple = o
        .ocsp_staple
        .as_ref()
        .and_then(|st| st.for_serial(&serial, now));
    let cert = match staple {
        Some(der) => creds.server_cert_stapled(der),
        None => creds.server_cert(),
    };
    let mut config = build(provider, s.allow_tls12, verifier, cert, s.alpn.clone())?;
    // Fresh ticket keys and session cache on every build: resumption skips the client
    // certificate verifier, so a reload (new CRL, new CA) must invalidate old sessions.
    config.ticketer = crate::ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    // One configuration per kind of ClientHello (`HelloFacts`), the same `Arc`s inside each:
    // - the suite is ours to pick, in the provider's order (AES-128-GCM-SHA256 first, as Go's
    //   and BoringSSL's servers do): OpenSSL, curl, Python and rustls clients list
    //   AES-256-GCM-SHA384 first, and following them put the SHA-384 key schedule (no SHA-512
    //   instructions on x86) on every handshake; a client that lists ChaCha20 first (no AES
    //   hardware) keeps its own order and gets it;
    // - a client that resumes a session gets one ticket (it replaces the one it spends, as
    //   OpenSSL does), a new client two.
    let variant = |chacha: bool, resuming: bool| {
        let mut c = config.clone();
        c.ignore_client_order = !chacha;
        c.send_tls13_tickets = if resuming { 1 } else { 2 };
        Arc::new(c)
    };
    let configs = [
        [variant(false, false), variant(false, true)],
        [variant(true, false), variant(true, true)],
    ];
    Ok(ServerMaterial {
        config: Arc::clone(&configs[0][0]),
        configs,
        cert_not_before: not_before,
        cert_not_after: not_after,
        cert_serial: serial,
        trust,
    })
}

impl crate::config::Credentials {
    /// What a server presents: the chain and key, or for a token key a fixed resolver over it.
    pub(crate) fn server_cert(self) -> ServerCert {
        match self.key {
            Some(k) => ServerCert::Single(self.chain, k),
            None => ServerCert::Resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                self.certified,
            ))),
        }
    }

    /// What a server presents with a stapled OCSP response (DER) for its certificate.
    pub(crate) fn server_cert_stapled(self, ocsp: Vec<u8>) -> ServerCert {
        match self.key {
            Some(k) => ServerCert::Stapled(self.chain, k, ocsp),
            None => {
                let mut certified = (*self.certified).clone();
                certified.ocsp = Some(ocsp);
                ServerCert::Resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)))
            }
        }
    }
}
