//! Endpoint and file diagnostics: `mutual probe` answers "does this endpoint really enforce
//! mTLS, and why does my handshake fail?" for servers written by anyone, in the reason labels
//! the rest of mutual speaks, and `--pair` checks a certificate/key pair and its chain offline.
//!
//! The probe runs a few real handshakes (without a client certificate, with `--cert`, and one
//! per TLS version), records what the server revealed, and judges it afterwards; see
//! `handshake` for the recording and `judge` for the labels.
#![forbid(unsafe_code)]

pub mod certinfo;
pub mod handshake;
pub mod judge;
pub mod pair;
pub mod render;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mutual_tls::Reason;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, NamedGroup, ProtocolVersion, RootCertStore};
use serde::Serialize;

pub use certinfo::CertSummary;
pub use judge::{Finding, ServerVerification};
pub use pair::{check_pair, PairReport};

use handshake::{After, Attempt, Failure, Spec};

/// Errors that stop the probe before it can say anything about the endpoint: bad usage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("target {0:?} is not HOST:PORT (or https://HOST[:PORT])")]
    BadTarget(String),
    #[error(
        "the target carries credentials (USER@ or USER:PASSWORD@): the probe sends none; \
         give HOST:PORT"
    )]
    Credentials,
    #[error("invalid server name {0:?}")]
    BadServerName(String),
    /// A file given to the probe (certificate, key, roots) cannot be read or is not what it
    /// should be: mutual-tls's own error (it loads every file), so the same file fault reads
    /// the same here as in `serve` or `cert verify`.
    #[error(transparent)]
    File(#[from] mutual_tls::TlsError),
    #[error("no trust roots: {0}")]
    NoRoots(String),
    /// Making the throwaway certificate failed (a crypto library fault, never the endpoint).
    #[error("cannot make the throwaway client certificate: {0}")]
    Throwaway(String),
}

/// What to probe and with what.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// HOST:PORT (`[v6]:port` for IPv6 literals).
    pub target: String,
    pub server_name: Option<String>,
    /// Trust roots for the server certificate; the system store when `None`.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Bound for each connection (connect + handshake + the short watch after it).
    pub timeout: Duration,
    /// Offer ALPN http/1.1 and send one GET when the server picks it (catches nginx's HTTP-level
    /// rejection of clients without a certificate).
    pub http: bool,
    /// A server certificate that does not verify fails the probe too.
    pub strict: bool,
    /// Verification profile for the server's chain: strict adds the RFC 5280 / CA/B Forum
    /// rules of `mutual_tls::lint` to webpki's checks (a violation is `malformed`).
    pub profile: mutual_tls::Profile,
}

/// How the server treats a client without a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// The server refuses a client without a certificate.
    Required,
    /// The server asks for a certificate but lets a client without one in.
    Optional,
    /// The server never asks.
    None,
    /// The server refuses a client without a certificate but let in one from an unknown CA
    /// (a throwaway CA the probe made): it does not verify what it asks for.
    #[serde(rename = "not_enforced")]
    NotEnforced,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
            ClientAuth::None => "none",
            ClientAuth::NotEnforced => "not_enforced",
        }
    }
}

/// TLS versions: what the probe offered and what the server took.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Versions {
    pub offered: Vec<String>,
    pub supported: Vec<String>,
    pub refused: Vec<String>,
}

/// A connection-level failure that kept the probe from judging client authentication.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorReport {
    /// connection_refused | connect_timeout | connect_failed | timeout | reset | closed | not_tls
    /// | tls | dns | io
    pub kind: String,
    pub message: String,
}

/// The client certificate given with `--cert`, and what the probe learnt about it.
#[derive(Clone, Debug, Serialize)]
pub struct ClientCertReport {
    pub file: String,
    pub chain: Vec<CertSummary>,
    /// Whether it was actually sent (the server asked and a signature scheme was shared).
    pub sent: bool,
    /// Where `--key` lives: a file, or a PKCS#11 token with its URI and how it protects the key
    /// (sensitive, never extractable). No secret is in it.
    pub key: Option<mutual_tls::load::KeyLocation>,
    /// Problems found locally (validity, purpose, issuer vs advertised CAs).
    pub findings: Vec<Finding>,
}

/// The handshake with a certificate from a CA nobody trusts, made on the fly: a server that
/// enforces mTLS refuses it.
#[derive(Clone, Debug, Serialize)]
pub struct UntrustedCertReport {
    /// The server let it in (then `client_auth` is `not_enforced`); `null` when the attempt
    /// failed for another reason (timeout, reset before the certificate was judged).
    pub accepted: Option<bool>,
    pub alert: Option<String>,
    pub detail: String,
}

/// Everything the probe found. `--json` prints this; the text report renders it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub server_name: String,
    /// `null` when a connection error kept the probe from finding out.
    pub client_auth: Option<ClientAuth>,
    pub client_auth_detail: String,
    /// Whether the endpoint really enforces mTLS: it refused both a client without a certificate
    /// and one with a certificate from an unknown CA. `null` when the probe could not tell.
    pub enforced: Option<bool>,
    /// What the server did with a certificate from an unknown CA (tried when it refused a
    /// client without one).
    pub untrusted_cert: Option<UntrustedCertReport>,
    /// `null` without `--cert` (or when the server never asked for it).
    pub accepted: Option<bool>,
    pub accepted_detail: Option<String>,
    pub reason: Reason,
    pub explanation: String,
    pub hint: String,
    /// The alert behind `reason`, if the server sent one (snake_case, as in the RFCs).
    pub alert: Option<String>,
    /// The alert the server sent to the handshake without a client certificate, if any.
    pub anonymous_alert: Option<String>,
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
    pub group: Option<String>,
    pub post_quantum: bool,
    pub alpn: Option<String>,
    pub versions: Versions,
    pub server_chain: Vec<CertSummary>,
    /// Problems in how the server sends its chain (order, duplicates, a root included).
    pub server_chain_problems: Vec<String>,
    pub server_verification: ServerVerification,
    pub certificate_requested: Option<bool>,
    pub acceptable_cas: Vec<String>,
    pub client_cert: Option<ClientCertReport>,
    pub error: Option<ErrorReport>,
    /// Other things worth knowing about the server's TLS setup.
    pub notes: Vec<String>,
    pub pass: bool,
    pub verdict: String,
}

impl Report {
    /// 0 when the verdict passes, 1 otherwise (bad usage never reaches a report).
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.pass)
    }
}

/// The crypto provider the probe uses everywhere (aws-lc-rs, post-quantum hybrid preferred).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Splits HOST:PORT (`[::1]:443` too). An `https://HOST[:PORT][/PATH]` URL, as one pastes it
/// from curl or a browser, is taken as its host and port (443 when it names none). A target
/// that carries credentials (`user:password@`) is refused without repeating them: the probe
/// sends none, and an error line is no place for a password.
pub fn split_target(t: &str) -> Result<(String, u16), ProbeError> {
    let (authority, default_port) = match t.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.contains('@') {
                return Err(ProbeError::Credentials);
            }
            if !scheme.eq_ignore_ascii_case("https") {
                return Err(ProbeError::BadTarget(t.to_string()));
            }
            (authority, Some(443))
        }
        None if t.contains('@') => return Err(ProbeError::Credentials),
        None => (t, None),
    };
    let bad = || ProbeError::BadTarget(t.to_string());
    let (host, port) = match authority.strip_prefix('[') {
        // [v6] or [v6]:PORT
        Some(v6) => {
            let (host, rest) = v6.split_once(']').ok_or_else(bad)?;
            match rest.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if rest.is_empty() => (host, None),
                None => return Err(bad()),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match (port, default_port) {
        (Some(p), _) => p.parse::<u16>().map_err(|_| bad())?,
        (None, Some(d)) => d,
        (None, None) => return Err(bad()),
    };
    if host.is_empty() || port == 0 || host.contains(['/', ' ', '[', ']']) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// HOST:PORT as the report shows it, IPv6 literals in brackets.
fn target_string(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A file that parsed but is not what the probe needs (`BadFile`, as the loader says it).
pub(crate) fn bad_file(path: impl Into<PathBuf>, detail: impl Into<String>) -> ProbeError {
    ProbeError::File(mutual_tls::TlsError::BadFile {
        path: path.into(),
        detail: detail.into(),
    })
}

/// Reads every certificate in a file (PEM, or one DER certificate): mutual-tls's loader.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ProbeError> {
    Ok(mutual_tls::load::load_certs(path)?)
}

/// Reads a private key (PKCS#8, SEC1 or PKCS#1). The error never contains key material.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ProbeError> {
    Ok(mutual_tls::load::load_key(path)?)
}

/// Loads a certificate chain and its key into a `CertifiedKey`, refusing a key that does not match.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ProbeError> {
    Ok(mutual_tls::load::certified_key_any(provider, cert, key)?.0)
}

/// Trust roots from `--ca`, or the system store; with a line saying which.
pub fn load_roots(ca: Option<&Path>) -> Result<(Arc<RootCertStore>, String), ProbeError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(p) => {
            for c in load_certs(p)? {
                store.add(c).map_err(|e| {
                    bad_file(p.to_path_buf(), format!("not a usable trust anchor ({e})"))
                })?;
            }
            Ok((Arc::new(store), format!("--ca {}", p.display())))
        }
        None => {
            let res = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(res.certs);
            if added == 0 {
                return Err(ProbeError::NoRoots(
                    "the system store (rustls-native-certs) has no certificates; pass --ca".into(),
                ));
            }
            Ok((
                Arc::new(store),
                format!("system roots ({added} from the OS store, via rustls-native-certs)"),
            ))
        }
    }
}

pub fn version_name(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::TLSv1_3 => "TLS1.3".into(),
        ProtocolVersion::TLSv1_2 => "TLS1.2".into(),
        ProtocolVersion::TLSv1_1 => "TLS1.1".into(),
        ProtocolVersion::TLSv1_0 => "TLS1.0".into(),
        other => format!("{other:?}"),
    }
}

fn group_name(g: NamedGroup) -> String {
    format!("{g:?}")
}

fn is_post_quantum(g: NamedGroup) -> bool {
    format!("{g:?}").contains("MLKEM")
}

fn failure_report(f: &Failure, target: &str, timeout: Duration) -> (ErrorReport, Reason, String) {
    let e = |kind: &str, message: String| ErrorReport {
        kind: kind.into(),
        message,
    };
    match f {
        Failure::Refused => (
            e("connection_refused", format!("connection refused: nothing listens on {target}")),
            Reason::Other,
            "Check the host and port, and that the server is running.".into(),
        ),
        Failure::ConnectTimeout => (
            e("connect_timeout", format!("no TCP connection to {target} within {}s (filtered or unreachable)", timeout.as_secs_f32())),
            Reason::HandshakeTimeout,
            "Check the address, firewalls and routes between here and the server.".into(),
        ),
        Failure::Connect(m) => (
            e("connect_failed", format!("cannot connect to {target}: {m}")),
            Reason::Other,
            "Check the address and the network path to the server.".into(),
        ),
        Failure::Timeout => (
            e("timeout", format!("{target} accepted the connection but did not complete a TLS handshake within {}s", timeout.as_secs_f32())),
            Reason::HandshakeTimeout,
            "Check that this port speaks TLS and that nothing stalls in between.".into(),
        ),
        Failure::Reset => (
            e("reset", format!("{target} reset the connection during the TLS handshake")),
            Reason::Other,
            "The server (or something in between) dropped the handshake: check its error log; it may not speak TLS on this port or may refuse this client's address.".into(),
        ),
        Failure::Eof => (
            e("closed", format!("{target} closed the connection during the TLS handshake without an alert")),
            Reason::Other,
            "Check the server's error log; it may not speak TLS on this port.".into(),
        ),
        Failure::NotTls(first) => {
            let lower = first.to_ascii_lowercase();
            let http = first.starts_with("HTTP/")
                || lower.starts_with("<!doctype html")
                || lower.starts_with("<html");
            let what = if http {
                "plain HTTP"
            } else {
                "data that is not TLS"
            };
            (
                e(
                    "not_tls",
                    format!("{target} answered with {what}, not a TLS handshake (first bytes: {first:?})"),
                ),
                Reason::Malformed,
                if http {
                    "This port serves plain HTTP: probe the TLS port instead, or enable TLS on the server.".into()
                } else {
                    "This port does not speak TLS: check the port, or whether the service expects STARTTLS or a PROXY header first.".into()
                },
            )
        }
        Failure::Tls(err) => {
            let reason = judge::rustls_error_reason(err, false);
            let mut msg = format!("TLS handshake with {target} failed: {err}");
            if let rustls::Error::AlertReceived(a) = err {
                msg = format!("{target} refused the TLS handshake with alert {}", judge::alert_name(*a));
            }
            (e("tls", msg), reason, reason.hint().into())
        }
        Failure::Io(m) => (
            e("io", format!("I/O error talking to {target}: {m}")),
            Reason::Other,
            "Check the network path to the server.".into(),
        ),
    }
}

/// What an attempt says about the server's treatment of the client (with or without a cert).
struct Outcome {
    /// The server let the client in at the TLS (and, if checked, HTTP) level.
    admitted: bool,
    /// The server rejected the client after asking for a certificate.
    rejected: bool,
    alert: Option<AlertDescription>,
    /// The reason, when the server named it without an alert (mutual serve's HTTP 403).
    named: Option<Reason>,
    detail: String,
}

/// What a close without an alert right after the handshake means, for the report.
const CLOSED_AFTER_HANDSHAKE: &str = "the handshake completed, then the server closed the connection at once without an alert: it refused the client after the TLS handshake (an authorization policy, or a backend it could not reach)";

fn outcome(a: &Attempt) -> Option<Outcome> {
    let req = a.recorded.cert_requested;
    let o = |admitted, rejected, alert, detail: &str| {
        Some(Outcome {
            admitted,
            rejected,
            alert,
            named: None,
            detail: detail.to_string(),
        })
    };
    match (&a.failure, &a.after) {
        (Some(Failure::Tls(rustls::Error::AlertReceived(al))), _) if req => o(
            false,
            true,
            Some(*al),
            &format!(
                "the server refused the handshake with alert {}",
                judge::alert_name(*al)
            ),
        ),
        (Some(Failure::Eof | Failure::Reset), _) if req => o(
            false,
            true,
            None,
            "the server dropped the connection during the handshake, after asking for a certificate",
        ),
        (Some(_), _) => None,
        (None, After::Alert(al)) => o(
            false,
            true,
            Some(*al),
            &format!(
                "the handshake completed, then the server sent alert {} (TLS 1.3 servers judge the client's certificate after the handshake)",
                judge::alert_name(*al)
            ),
        ),
        (None, After::Reset) if req => o(
            false,
            true,
            None,
            "the handshake completed, then the server reset the connection at once (no alert)",
        ),
        // A server that closes before the client said anything has not accepted it, whatever
        // the TLS layer concluded (mutual serve denying by policy, before it sent alerts).
        (None, After::Closed) if req => o(false, true, None, CLOSED_AFTER_HANDSHAKE),
        (None, After::Http { status: 403, snippet }) if snippet == "policy_denied" => {
            Some(Outcome {
                admitted: false,
                rejected: true,
                alert: None,
                named: Some(Reason::PolicyDenied),
                detail: "the TLS handshake completed but the server answered HTTP 403 with reason policy_denied".into(),
            })
        }
        (None, After::Http { status, snippet })
            if *status == 495
                || *status == 496
                || (*status == 400 && !snippet.is_empty()) =>
        {
            o(
                false,
                true,
                None,
                &format!(
                    "the TLS handshake completed but the HTTP server answered {status}{}",
                    if snippet.is_empty() {
                        String::new()
                    } else {
                        format!(" \"{snippet}\"")
                    }
                ),
            )
        }
        (None, After::Http { status, .. }) => o(
            true,
            false,
            None,
            &format!("the connection stayed usable (HTTP {status})"),
        ),
        (None, After::Closed | After::Reset | After::ClosedAfterWrite) => o(
            true,
            false,
            None,
            "the handshake completed; the server then closed the connection without an alert",
        ),
        (None, _) => o(true, false, None, "the connection stayed usable"),
    }
}

/// Probes the endpoint. `Err` only for bad usage (unreadable files, bad target); every network
/// outcome, failures included, is a `Report`.
pub fn probe(opts: &ProbeOptions) -> Result<Report, ProbeError> {
    let provider = provider();
    let (host, port) = split_target(&opts.target)?;
    let target = target_string(&host, port);
    let name_str = opts.server_name.clone().unwrap_or_else(|| host.clone());
    let server_name = ServerName::try_from(name_str.clone())
        .map_err(|_| ProbeError::BadServerName(name_str.clone()))?;
    let (roots, trust) = load_roots(opts.ca.as_deref())?;
    let client = match (&opts.cert, &opts.key) {
        (Some(c), Some(k)) => Some((c.clone(), Arc::new(load_certified_key(c, k, &provider)?))),
        (None, None) => None,
        (Some(c), None) | (None, Some(c)) => {
            return Err(bad_file(c.clone(), "--cert and --key go together"))
        }
    };
    let client_chain: Vec<CertSummary> = client
        .as_ref()
        .map(|(_, ck)| {
            ck.cert
                .iter()
                .filter_map(|c| certinfo::summarize(c))
                .collect()
        })
        .unwrap_or_default();

    let all_versions: Vec<&'static rustls::SupportedProtocolVersion> =
        vec![&rustls::version::TLS13, &rustls::version::TLS12];
    let mut report = Report {
        target: target.clone(),
        server_name: name_str.clone(),
        client_auth: None,
        client_auth_detail: String::new(),
        enforced: None,
        untrusted_cert: None,
        accepted: None,
        accepted_detail: None,
        reason: Reason::Other,
        explanation: String::new(),
        hint: String::new(),
        alert: None,
        anonymous_alert: None,
        tls_version: None,
        cipher: None,
        group: None,
        post_quantum: false,
        alpn: None,
        versions: Versions {
            offered: vec!["TLS1.3".into(), "TLS1.2".into()],
            ..Versions::default()
        },
        server_chain: Vec::new(),
        server_chain_problems: Vec::new(),
        server_verification: judge::verify_server_chain(
            &[],
            &roots,
            &trust,
            &server_name,
            &provider,
        ),
        certificate_requested: None,
        acceptable_cas: Vec::new(),
        client_cert: None,
        error: None,
        notes: Vec::new(),
        pass: false,
        verdict: String::new(),
    };

    let addrs: Vec<SocketAddr> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            report.error = Some(ErrorReport {
                kind: "dns".into(),
                message: format!("cannot resolve {host}: {e}"),
            });
            report.hint = "Check the host name.".into();
            return Ok(finish(report, opts));
        }
    };

    let spec = |versions: &[&'static rustls::SupportedProtocolVersion],
                cert: Option<Arc<CertifiedKey>>,
                after: bool| {
        handshake::attempt(
            &addrs,
            &Spec {
                provider: &provider,
                versions,
                client_cert: cert,
                http: opts.http && after,
                after_check: after,
                server_name: &server_name,
                host_header: &name_str,
                timeout: opts.timeout,
            },
        )
    };

    // 1. Without a client certificate.
    let mut anon = spec(&all_versions, None, true);
    // A server whose ALPN list lacks http/1.1 may refuse the offer: retry without ALPN.
    if opts.http
        && matches!(
            anon.failure,
            Some(Failure::Tls(rustls::Error::AlertReceived(
                AlertDescription::NoApplicationProtocol
            )))
        )
    {
        let o = ProbeOptions {
            http: false,
            ..opts.clone()
        };
        return probe(&o);
    }
    let anon_outcome = outcome(&anon);
    if anon_outcome.is_none() {
        if let Some(f) = &anon.failure {
            let (err, reason, hint) = failure_report(f, &target, opts.timeout);
            if let Failure::Tls(rustls::Error::AlertReceived(a)) = f {
                report.alert = Some(judge::alert_name(*a));
            }
            report.reason = reason;
            report.hint = hint;
            report.error = Some(err);
            report.server_chain = summarize_chain(&anon.recorded.server_chain);
            if !anon.recorded.server_chain.is_empty() {
                report.server_verification = judge::verify_server_chain(
                    &anon.recorded.server_chain,
                    &roots,
                    &trust,
                    &server_name,
                    &provider,
                );
            }
            return Ok(finish(report, opts));
        }
    }
    let anon_outcome = anon_outcome.unwrap_or(Outcome {
        admitted: false,
        rejected: false,
        alert: None,
        named: None,
        detail: String::new(),
    });
    report.certificate_requested = Some(anon.recorded.cert_requested);
    let (cas, repaired) = judge::decode_cas(&anon.recorded.acceptable_cas);
    report.acceptable_cas = cas;
    if repaired {
        report.notes.push(
            "the server sends its acceptable CA names without the outer SEQUENCE (not valid DER Names: OpenSSL clients ignore them); decoded anyway".into(),
        );
    }
    report.client_auth = Some(if anon_outcome.rejected {
        ClientAuth::Required
    } else if anon.recorded.cert_requested {
        ClientAuth::Optional
    } else {
        ClientAuth::None
    });
    report.client_auth_detail = if anon.recorded.cert_requested {
        format!(
            "asked for a certificate; without one, {}",
            anon_outcome.detail
        )
    } else {
        format!("never asked for a certificate; {}", anon_outcome.detail)
    };
    report.alert = anon_outcome.alert.map(judge::alert_name);
    report.anonymous_alert = report.alert.clone();
    if anon_outcome.rejected {
        report.reason = Reason::NoClientCert;
        if let Some(a) = anon_outcome.alert {
            report.reason = judge::alert_reason(a, false).0;
        }
    } else {
        report.reason = Reason::Ok;
    }
    report.enforced = Some(false);

    // 1b. A server that refuses a client without a certificate may still take any certificate
    // (openssl s_server -Verify without -verify_return_error, a verify callback that returns
    // ok): try one from a CA made here that nobody trusts.
    if anon_outcome.rejected {
        let u = spec(&all_versions, Some(throwaway_client_cert(&provider)?), true);
        let untrusted = match outcome(&u) {
            _ if u.failure.is_none() && !u.recorded.cert_sent => UntrustedCertReport {
                accepted: None,
                alert: None,
                detail: "the certificate was not sent (the server did not ask for it this time)"
                    .into(),
            },
            Some(o) => UntrustedCertReport {
                accepted: Some(o.admitted),
                alert: o.alert.map(judge::alert_name),
                detail: o.detail,
            },
            None => {
                let f = u.failure.clone().unwrap_or(Failure::Timeout);
                let (err, _, _) = failure_report(&f, &target, opts.timeout);
                UntrustedCertReport {
                    accepted: None,
                    alert: None,
                    detail: format!("could not tell: {}", err.message),
                }
            }
        };
        report.enforced = match untrusted.accepted {
            Some(true) => {
                report.client_auth = Some(ClientAuth::NotEnforced);
                report.reason = Reason::Ok;
                report.alert = None;
                Some(false)
            }
            Some(false) => Some(true),
            None => None,
        };
        report.untrusted_cert = Some(untrusted);
    }

    // 2. TLS versions: the anonymous handshake showed one; try the other alone.
    if let Some(v) = anon.version {
        report.versions.supported.push(version_name(v));
        let other: &'static rustls::SupportedProtocolVersion = if v == ProtocolVersion::TLSv1_3 {
            &rustls::version::TLS12
        } else {
            &rustls::version::TLS13
        };
        let a = spec(&[other], None, false);
        let name = version_name(other.version);
        if a.server_hello_seen || a.failure.is_none() {
            report.versions.supported.push(name);
        } else {
            report.versions.refused.push(name);
        }
        report.versions.supported.sort_by(|a, b| b.cmp(a));
    }

    // 3. With the client certificate.
    if let Some((file, ck)) = &client {
        let mut findings = judge::check_client_chain(&client_chain, &report.acceptable_cas);
        let b = spec(&all_versions, Some(Arc::clone(ck)), true);
        let sent = b.recorded.cert_sent;
        if !b.recorded.cert_requested && b.failure.is_none() {
            report.accepted = None;
            report.accepted_detail =
                Some("the server never asked for a client certificate, so it was not sent".into());
        } else if b.recorded.no_common_sigscheme {
            report.accepted = Some(false);
            report.reason = Reason::WeakKey;
            report.accepted_detail = Some(
                "the certificate was not sent: its key cannot make any signature the server accepts".into(),
            );
        } else {
            match outcome(&b) {
                Some(o) if o.admitted => {
                    report.alert = None;
                    report.accepted = Some(true);
                    report.reason = Reason::Ok;
                    report.accepted_detail = Some(format!("accepted: {}", o.detail));
                }
                Some(o) => {
                    report.accepted = Some(false);
                    let (mut reason, generic) = match (o.named, o.alert) {
                        (Some(r), _) => (r, false),
                        (None, Some(a)) => judge::alert_reason(a, sent),
                        (None, None) => (Reason::Other, true),
                    };
                    if generic {
                        if let Some(f) = findings.first() {
                            // A local finding explains the generic alert; a specific one (expired)
                            // is refined (not_yet_valid comes with the same alert from OpenSSL).
                            if reason == Reason::Other
                                || (reason == Reason::Expired && f.reason == Reason::NotYetValid)
                            {
                                reason = f.reason;
                            }
                        }
                    }
                    report.alert = o.alert.map(judge::alert_name);
                    report.reason = reason;
                    report.accepted_detail = Some(format!("rejected: {}", o.detail));
                }
                None => {
                    report.accepted = Some(false);
                    let f = b.failure.clone().unwrap_or(Failure::Timeout);
                    let (err, reason, _) = failure_report(&f, &target, opts.timeout);
                    report.reason = reason;
                    report.accepted_detail = Some(format!("not accepted: {}", err.message));
                }
            }
        }
        // Findings that cannot be the cause are noise once the server accepted the certificate.
        if report.accepted == Some(true) {
            findings.retain(|f| f.reason != Reason::UnknownCa);
        }
        report.client_cert = Some(ClientCertReport {
            file: file.display().to_string(),
            chain: client_chain,
            sent,
            key: opts
                .key
                .as_deref()
                .and_then(|k| mutual_tls::load::key_location(k).ok()),
            findings,
        });
        if anon.recorded.server_chain.is_empty() {
            anon.recorded.server_chain = b.recorded.server_chain.clone();
        }
    }

    report.tls_version = anon.version.map(version_name);
    report.cipher = anon.cipher.clone();
    report.group = anon.group.map(group_name);
    report.post_quantum = anon.group.is_some_and(is_post_quantum);
    report.alpn = anon.alpn.clone();
    report.server_chain = summarize_chain(&anon.recorded.server_chain);
    report.server_chain_problems = chain_problems(&report.server_chain);
    report.server_verification = judge::verify_server_chain(
        &anon.recorded.server_chain,
        &roots,
        &trust,
        &server_name,
        &provider,
    );
    if opts.profile == mutual_tls::Profile::Strict {
        judge::apply_strict_profile(
            &mut report.server_verification,
            &anon.recorded.server_chain,
            opts.ca.as_deref(),
            &server_name,
        );
    }
    Ok(finish(report, opts))
}

/// A client certificate (clientAuth) from a CA made on the spot and thrown away: no server can
/// trust it, so one that lets it in does not verify client certificates.
fn throwaway_client_cert(provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, ProbeError> {
    let fail = |e: rcgen::Error| ProbeError::Throwaway(e.to_string());
    let now = time::OffsetDateTime::now_utc();
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        "mutual probe throwaway CA (trusted by nobody)",
    );
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::hours(1);
    let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut leaf = rcgen::CertificateParams::default();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "mutual-probe-untrusted-client");
    leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    leaf.not_before = ca.not_before;
    leaf.not_after = ca.not_after;
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let leaf_cert = leaf.signed_by(&key, &issuer).map_err(fail)?;
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| ProbeError::Throwaway(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        signing,
    )))
}

fn summarize_chain(chain: &[CertificateDer<'static>]) -> Vec<CertSummary> {
    chain
        .iter()
        .filter_map(|c| certinfo::summarize(c))
        .collect()
}

/// How a sent chain departs from "leaf first, then each issuer once, root left out".
pub fn chain_problems(chain: &[CertSummary]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in chain.iter().enumerate() {
        if chain[..i].iter().any(|p| p.sha256 == c.sha256) {
            out.push(format!("[{i}] {} is sent twice", c.subject));
            continue;
        }
        if let Some(next) = chain.get(i + 1) {
            if next.sha256 != c.sha256 && c.issuer != next.subject {
                out.push(format!(
                    "[{i}] {} is issued by {}, but the next certificate sent is {}",
                    c.subject, c.issuer, next.subject
                ));
            }
        }
        if i > 0 && c.subject == c.issuer {
            out.push(format!(
                "[{i}] {} is a self-signed root: peers ignore it (harmless, but wasted bytes)",
                c.subject
            ));
        }
    }
    out
}

/// Decides pass/fail, the hint and the verdict line.
fn finish(mut r: Report, opts: &ProbeOptions) -> Report {
    r.explanation = if r.client_auth == Some(ClientAuth::NotEnforced) && opts.cert.is_none() {
        "A certificate from an unknown CA (made by the probe) was accepted: the server does not verify client certificates.".to_string()
    } else if r.reason == Reason::Ok && opts.cert.is_none() {
        "The handshake without a client certificate succeeded.".to_string()
    } else {
        r.reason.explanation().to_string()
    };
    let server_ok = r.server_verification.valid != Some(false);
    let cert_name = opts
        .cert
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if let Some(err) = &r.error {
        r.enforced = None;
        r.pass = false;
        r.verdict = format!("FAIL: {}", err.message);
        return r;
    }
    let required = r.client_auth == Some(ClientAuth::Required);
    r.pass = required
        && (opts.cert.is_none() || r.accepted == Some(true))
        && (!opts.strict || server_ok);
    let findings_detail = r
        .client_cert
        .as_ref()
        .and_then(|c| c.findings.iter().find(|f| f.reason == r.reason))
        .map(|f| f.detail.clone());
    r.hint = match (r.client_auth, r.accepted) {
        (_, Some(false)) => {
            let mut h = r.reason.hint().to_string();
            // A chain file that ends with the leaf: its intermediate is missing, which is the fix
            // to name (the leaf may well be issued under an advertised CA).
            let missing_intermediate = r
                .client_cert
                .as_ref()
                .and_then(|c| c.chain.last())
                .filter(|last| !last.is_ca && last.subject != last.issuer)
                .map(|last| last.issuer.clone());
            if let (Reason::UnknownCa, Some(issuer)) = (r.reason, &missing_intermediate) {
                h = format!(
                    "{cert_name} holds the certificate without its intermediate ({issuer}): add the intermediate (the chain file must hold leaf + intermediate)."
                );
            } else if r.reason == Reason::UnknownCa && !r.acceptable_cas.is_empty() {
                h = format!(
                    "Use a certificate issued under {} (the CAs the server advertises), or add your CA to the server's trust bundle.",
                    r.acceptable_cas.join(" | ")
                );
            } else if r.reason == Reason::Other
                && r.accepted_detail.as_deref().is_some_and(|d| d.contains(CLOSED_AFTER_HANDSHAKE))
            {
                h = "The server took the certificate but then closed the connection: check its log for an authorization (policy) denial of this identity or an unreachable backend.".into();
            } else if r.reason == Reason::Other {
                h = "The server did not say why: check its error log; the local checks found nothing wrong with the certificate.".into();
            }
            h
        }
        (Some(ClientAuth::NotEnforced), _) => {
            "The server asks for a certificate but does not verify it: make verification failures fatal (openssl s_server: -verify_return_error; nginx: ssl_verify_client on; Go: tls.RequireAndVerifyClientCert) and trust only your CA.".into()
        }
        (Some(ClientAuth::Required), Some(true)) => "Nothing to do.".into(),
        (Some(ClientAuth::Required), None) if opts.cert.is_none() => {
            "The endpoint enforces mTLS. Probe again with --cert/--key to check a client certificate.".into()
        }
        (Some(ClientAuth::Optional), _) => {
            "The server asks for a certificate but lets clients in without one: make it required (nginx: ssl_verify_client on; openssl s_server: -Verify N -verify_return_error; mutual serve always requires one).".into()
        }
        (Some(ClientAuth::None), _) => {
            "The server never asks for a client certificate: enable client-certificate verification (nginx: ssl_verify_client on with ssl_client_certificate; mutual serve requires one).".into()
        }
        _ => r.reason.hint().to_string(),
    };
    let mode = r.client_auth.map(ClientAuth::as_str).unwrap_or("unknown");
    let mut verdict = match (r.client_auth, r.accepted) {
        (Some(ClientAuth::Required), Some(true)) => format!(
            "{} requires a client certificate and accepted {cert_name}",
            r.target
        ),
        (Some(ClientAuth::Required), None) if opts.cert.is_none() => {
            format!("{} requires a client certificate (mTLS enforced)", r.target)
        }
        (_, Some(false)) => format!(
            "{} rejected {cert_name}: {}{}",
            r.target,
            r.reason,
            findings_detail
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ),
        (Some(ClientAuth::Optional), _) => format!(
            "{} does not enforce mTLS: a client certificate is optional",
            r.target
        ),
        (Some(ClientAuth::None), _) => format!(
            "{} does not enforce mTLS: it never asks for a client certificate",
            r.target
        ),
        (Some(ClientAuth::NotEnforced), _) => format!(
            "{} does not enforce mTLS: it accepted a client certificate from an unknown CA (a throwaway CA the probe made)",
            r.target
        ),
        _ => format!("{} client authentication: {mode}", r.target),
    };
    if !server_ok {
        let why = r
            .server_verification
            .reason
            .map(|x| x.label())
            .unwrap_or("other");
        verdict.push_str(&format!("; the server certificate does not verify ({why})"));
    }
    r.verdict = format!("{}: {verdict}", if r.pass { "PASS" } else { "FAIL" });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split() {
        assert_eq!(
            split_target("example.org:443").ok(),
            Some(("example.org".into(), 443))
        );
        assert_eq!(split_target("[::1]:8443").ok(), Some(("::1".into(), 8443)));
        assert!(split_target("example.org").is_err());
        assert!(split_target(":443").is_err());
        assert!(split_target("h:0").is_err());
        let ok = |t: &str| split_target(t).ok();
        assert_eq!(ok("https://example.org"), Some(("example.org".into(), 443)));
        assert_eq!(
            ok("HTTPS://example.org:8443/v1/x?y#z"),
            Some(("example.org".into(), 8443))
        );
        assert_eq!(ok("https://[::1]/"), Some(("::1".into(), 443)));
        assert_eq!(ok("https://[::1]:9443"), Some(("::1".into(), 9443)));
        assert!(ok("http://example.org:80").is_none());
        assert!(ok("https://example.org:x").is_none());
        assert!(ok("https://[::1]x").is_none());
        assert!(ok("a b:443").is_none());
        for t in ["https://u:hunter2@example.org", "u:hunter2@example.org:443"] {
            let e = split_target(t)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("credentials"), "{e}");
        }
        assert_eq!(target_string("::1", 443), "[::1]:443");
    }
}
