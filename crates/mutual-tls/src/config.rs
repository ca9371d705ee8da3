//! Building the rustls server and client configurations: one place decides versions, suites,
//! key-exchange groups, tickets and verifiers, so every listener and every client of mutual
//! gets the same secure defaults (DESIGN.md "Defaults").

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::verifiers::{MutualClientVerifier, MutualServerVerifier};
use crate::verify::Trust;
use crate::{load, TlsOptions};
use crate::{ClientMaterial, ClientSettings, ServerMaterial, ServerSettings, TlsError};

/// How many TLS 1.2 sessions the server remembers (resumption by session ID).
const SESSION_CACHE_SIZE: usize = 4096;

/// aws-lc-rs with AES-128-GCM first (FIELD-NOTES: faster here, no SHA-NI) and, unless TLS 1.2
/// is allowed, only TLS 1.3 suites. Key exchange keeps the provider's defaults, which with the
/// `prefer-post-quantum` feature are X25519MLKEM768 first, then X25519, P-256, P-384.
pub fn provider(allow_tls12: bool) -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let mut suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    if allow_tls12 {
        suites.extend([
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]);
    }
    CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::aws_lc_rs::default_provider()
    }
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS13_AND_12: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(allow_tls12: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if allow_tls12 {
        TLS13_AND_12
    } else {
        TLS13_ONLY
    }
}

/// A certificate chain and its key, checked to belong together.
struct Credentials {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    not_after: i64,
    serial: String,
}

fn load_credentials(
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<Credentials, TlsError> {
    let chain = load::load_certs(cert)?;
    let key_der = load::load_key(key)?;
    let signing = provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| TlsError::BadFile {
            path: key.to_path_buf(),
            detail: format!("unsupported private key: {e}"),
        })?;
    let ck = CertifiedKey::new(chain.clone(), signing);
    match ck.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(TlsError::BadFile {
                path: cert.to_path_buf(),
                detail: format!("the certificate cannot be used with its key: {e}"),
            })
        }
    }
    let leaf = chain.first().ok_or_else(|| TlsError::BadFile {
        path: cert.to_path_buf(),
        detail: "no certificate found".into(),
    })?;
    let (_, parsed) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| TlsError::BadFile {
        path: cert.to_path_buf(),
        detail: format!("the certificate does not parse: {e}"),
    })?;
    let not_after = parsed.validity().not_after.timestamp();
    let serial = mutual_policy::serial_hex(parsed.raw_serial());
    Ok(Credentials {
        chain,
        key: key_der,
        not_after,
        serial,
    })
}

/// See [`crate::build_server_config`].
pub(crate) fn server(s: &ServerSettings, o: &TlsOptions) -> Result<ServerMaterial, TlsError> {
    let provider = Arc::new(provider(s.allow_tls12));
    let creds = load_credentials(&provider, &s.cert, &s.key)?;
    let mut trust = Trust::from_files(&s.ca, &s.crls, o.revocation)?;
    if let Some(cdp) = &o.cdp {
        trust = trust.with_cdp(Arc::clone(cdp));
    }
    let trust = Arc::new(trust);
    let verifier =
        Arc::new(MutualClientVerifier::new(trust.clone()).with_authorize(o.authorize.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(s.allow_tls12))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.chain, creds.key)?;
    // Fresh ticket keys and session cache on every build: resumption skips the client
    // certificate verifier, so a reload (new CRL, new CA) must invalidate old sessions.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    config.send_tls13_tickets = 2;
    config.alpn_protocols = s.alpn.clone();
    Ok(ServerMaterial {
        config: Arc::new(config),
        cert_not_after: creds.not_after,
        cert_serial: creds.serial,
        trust,
    })
}

/// See [`crate::build_client_config`].
pub(crate) fn client(
    s: &ClientSettings,
    remote_host: &str,
    o: &TlsOptions,
) -> Result<ClientMaterial, TlsError> {
    let provider = Arc::new(provider(s.allow_tls12));
    let trust = Arc::new(Trust::from_files(&s.ca, &o.client_crls, o.revocation)?);
    let expect = match &s.expect_spiffe {
        Some(id) => {
            mutual_policy::SpiffeId::parse(id)
                .map_err(|e| TlsError::InvalidName(format!("{id} ({e})")))?;
            Some(id.clone())
        }
        None => None,
    };
    let name_text = s.server_name.as_deref().unwrap_or(remote_host);
    let name_text = name_text
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name_text);
    let server_name = ServerName::try_from(name_text.to_string())
        .map_err(|_| TlsError::InvalidName(name_text.to_string()))?;
    let verifier = Arc::new(MutualServerVerifier::new(
        Arc::clone(&trust),
        expect.clone(),
    ));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(s.allow_tls12))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let no_cert = s.cert.as_os_str().is_empty() && s.key.as_os_str().is_empty();
    let (mut config, not_after, serial) = if no_cert {
        (builder.with_no_client_auth(), 0, String::new())
    } else {
        let creds = load_credentials(&provider, &s.cert, &s.key)?;
        (
            builder.with_client_auth_cert(creds.chain, creds.key)?,
            creds.not_after,
            creds.serial,
        )
    };
    config.alpn_protocols = s.alpn.clone();
    Ok(ClientMaterial {
        config: Arc::new(config),
        server_name,
        cert_not_after: not_after,
        cert_serial: serial,
        trust,
        expect_spiffe: expect,
    })
}
