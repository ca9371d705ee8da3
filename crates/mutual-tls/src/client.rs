//! Every rustls `ClientConfig` of mutual, all through [`build`]: `mutual connect`'s
//! ([`crate::build_client_config`]), enroll's first contact ([`first_contact`]) and pinned
//! requests ([`pinned`]), the proxy's CRL fetcher ([`cdp_https`]) and the probe's recording
//! handshakes (a [`ClientSpec`] with [`crate::verifiers::SignatureOnly`]).

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ResolvesClientCert, VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};

use crate::config::{load_credentials, provider, versions, TLS13_AND_12};
use crate::verifiers::{ChallengeKeyOnly, MutualServerVerifier, SignatureOnly};
use crate::verify::Trust;
use crate::{ClientMaterial, ClientSettings, TlsError, TlsOptions};

/// How the server's certificate is judged.
pub enum ServerCheck {
    /// By this verifier.
    Verifier(Arc<dyn ServerCertVerifier>),
    /// By rustls' WebPKI verifier over these roots (an empty store is allowed: nothing verifies).
    Roots(RootCertStore),
}

/// What the client presents when asked for a certificate.
pub enum ClientCert {
    None,
    /// This chain and its key.
    Single(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    /// Chosen when the server asks.
    Resolver(Arc<dyn ResolvesClientCert>),
}

/// A client configuration, described.
pub struct ClientSpec<'a> {
    pub provider: Arc<CryptoProvider>,
    pub versions: &'a [&'static SupportedProtocolVersion],
    pub server: ServerCheck,
    pub cert: ClientCert,
    /// ALPN protocols to offer, in order (empty: none).
    pub alpn: Vec<Vec<u8>>,
    /// Resume sessions, with a [`crate::tickets::TicketStore`] (false: every handshake is a full one).
    pub resumption: bool,
}

/// The one `ClientConfig` builder.
pub fn build(spec: ClientSpec<'_>) -> Result<ClientConfig, rustls::Error> {
    let builder =
        ClientConfig::builder_with_provider(spec.provider).with_protocol_versions(spec.versions)?;
    let builder = match spec.server {
        ServerCheck::Verifier(v) => builder.dangerous().with_custom_certificate_verifier(v),
        ServerCheck::Roots(roots) => builder.with_root_certificates(roots),
    };
    let mut config = match spec.cert {
        ClientCert::None => builder.with_no_client_auth(),
        ClientCert::Single(chain, key) => builder.with_client_auth_cert(chain, key)?,
        ClientCert::Resolver(r) => builder.with_client_cert_resolver(r),
    };
    config.alpn_protocols = spec.alpn;
    config.resumption = if spec.resumption {
        // Room for the tickets of many connections opened at once (`crate::tickets`).
        rustls::client::Resumption::store(Arc::new(crate::tickets::TicketStore::new()))
    } else {
        rustls::client::Resumption::disabled()
    };
    Ok(config)
}

/// rustls' WebPKI server verifier over `roots` (at least one), with `provider`'s algorithms.
pub fn webpki_verifier(
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, VerifierBuilderError> {
    WebPkiServerVerifier::builder_with_provider(roots, provider).build()
}

/// Enroll's first contact with a CA: any server certificate (the handshake signature still
/// checked, see [`SignatureOnly`]), no client certificate. Only for fetching the roots that are
/// then checked against the pinned fingerprint.
pub fn first_contact() -> Result<Arc<ClientConfig>, TlsError> {
    let p = Arc::new(provider(false));
    let config = build(ClientSpec {
        provider: Arc::clone(&p),
        versions: TLS13_AND_12,
        server: ServerCheck::Verifier(Arc::new(SignatureOnly::new(p))),
        cert: ClientCert::None,
        alpn: Vec::new(),
        resumption: true,
    })?;
    Ok(Arc::new(config))
}

/// The ACME CA's tls-alpn-01 validation (RFC 8737): TLS 1.3, ALPN `acme-tls/1` only, any
/// server certificate (the challenge certificate is self-signed by design; the caller checks
/// what it proves) with the handshake signature still checked against its key
/// ([`ChallengeKeyOnly`]), no client certificate, no resumption (every validation is a fresh
/// look at the name's server).
pub fn tls_alpn_01() -> Result<Arc<ClientConfig>, TlsError> {
    let p = Arc::new(provider(false));
    let config = build(ClientSpec {
        provider: Arc::clone(&p),
        versions: crate::config::versions(false),
        server: ServerCheck::Verifier(Arc::new(ChallengeKeyOnly::new(p))),
        cert: ClientCert::None,
        alpn: vec![b"acme-tls/1".to_vec()],
        resumption: false,
    })?;
    Ok(Arc::new(config))
}

/// Why [`pinned`] could not build a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinnedError {
    #[error("the CA root is not usable as a trust anchor: {0}")]
    BadRoot(rustls::Error),
    #[error("cannot build the verifier: {0}")]
    Verifier(VerifierBuilderError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Enroll's requests to a CA whose roots are known: trusts only `roots` and checks the CA's
/// name; with `client`, presents that chain and key (renewal over mTLS).
pub fn pinned(
    roots: &[CertificateDer<'static>],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, PinnedError> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).map_err(PinnedError::BadRoot)?;
    }
    let p = Arc::new(provider(false));
    let verifier =
        webpki_verifier(Arc::new(store), Arc::clone(&p)).map_err(PinnedError::Verifier)?;
    let config = build(ClientSpec {
        provider: p,
        versions: TLS13_AND_12,
        server: ServerCheck::Verifier(verifier),
        cert: match client {
            Some((chain, key)) => ClientCert::Single(chain, key),
            None => ClientCert::None,
        },
        alpn: Vec::new(),
        resumption: true,
    })
    .map_err(TlsError::from)?;
    Ok(Arc::new(config))
}

/// The proxy's CRL fetcher over https (`--crl-from-cdp`): WebPKI over `anchors` (the system
/// roots and the listener's CA bundle; unusable ones skipped), TLS 1.3 and 1.2.
pub fn cdp_https(anchors: impl IntoIterator<Item = CertificateDer<'static>>) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for c in anchors {
        let _ = store.add(c);
    }
    let config = build(ClientSpec {
        provider: Arc::new(provider(true)),
        versions: TLS13_AND_12,
        server: ServerCheck::Roots(store),
        cert: ClientCert::None,
        alpn: Vec::new(),
        resumption: true,
    });
    // Our own provider always supports these versions; should it not, fetch over http only.
    Arc::new(config.unwrap_or_else(|_| {
        ClientConfig::builder()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    }))
}

/// `mutual connect`'s side (see [`crate::build_client_config`]): the server verified by
/// [`MutualServerVerifier`] for its name or exact SPIFFE ID.
pub(crate) fn mutual(
    s: &ClientSettings,
    remote_host: &str,
    o: &TlsOptions,
) -> Result<ClientMaterial, TlsError> {
    let provider = Arc::new(provider(s.allow_tls12));
    let mut trust = Trust::from_files(&s.ca, &o.client_crls, o.revocation)?.with_profile(o.profile);
    if let Some(ocsp) = &o.ocsp_peer {
        trust = trust.with_ocsp_peer(Arc::clone(ocsp));
    }
    let trust = Arc::new(trust);
    let expect = match &s.expect_spiffe {
        Some(id) => {
            mutual_policy::SpiffeId::parse(id).map_err(|e| TlsError::InvalidName {
                what: "SPIFFE ID",
                name: id.clone(),
                why: match e {
                    mutual_policy::PolicyError::InvalidSpiffeId { why, .. } => why,
                    other => other.to_string(),
                },
            })?;
            Some(id.clone())
        }
        None => None,
    };
    let name_text = s.server_name.as_deref().unwrap_or(remote_host);
    let name_text = name_text
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name_text);
    let server_name =
        ServerName::try_from(name_text.to_string()).map_err(|_| TlsError::InvalidName {
            what: "server name",
            name: name_text.to_string(),
            why: "not a DNS name or an IP address".into(),
        })?;
    let verifier = Arc::new(MutualServerVerifier::new(
        Arc::clone(&trust),
        expect.clone(),
    ));
    let no_cert = s.cert.as_os_str().is_empty() && s.key.as_os_str().is_empty();
    let (cert, not_before, not_after, serial) = if no_cert {
        (ClientCert::None, 0, 0, String::new())
    } else {
        let creds = load_credentials(&provider, &s.cert, &s.key)?;
        let (not_before, not_after, serial) =
            (creds.not_before, creds.not_after, creds.serial.clone());
        (creds.client_cert(), not_before, not_after, serial)
    };
    let config = build(ClientSpec {
        provider,
        versions: versions(s.allow_tls12),
        server: ServerCheck::Verifier(verifier),
        cert,
        alpn: s.alpn.clone(),
        resumption: true,
    })?;
    Ok(ClientMaterial {
        config: Arc::new(config),
        server_name,
        cert_not_before: not_before,
        cert_not_after: not_after,
        cert_serial: serial,
        trust,
        expect_spiffe: expect,
    })
}

impl crate::config::Credentials {
    /// What a client presents: the chain and key, or for a token key a fixed resolver over it.
    pub(crate) fn client_cert(self) -> ClientCert {
        match self.key {
            Some(k) => ClientCert::Single(self.chain, k),
            None => ClientCert::Resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                self.certified,
            ))),
        }
    }
}
