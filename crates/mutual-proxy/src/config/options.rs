//! A listener's options as types that are both the `serve`/`connect` flags (clap, flattened into
//! their argument structs) and the keys of a `[[listener]]` block (serde): the field is the
//! option, so its flag (`--idle-timeout`) and its key (`idle_timeout`) cannot drift apart, and
//! the default, the doc string, the value's type and parse (one `FromStr` or one clap
//! `ValueEnum`, read by serde through [`value_enum`] / [`parsed`]) and the range checks
//! ([`ListenerOpts::problems`]) are written once. Three types: [`ListenerOpts`] (every listener:
//! address, files, TLS floor, timeouts, limits), [`ServeOpts`] and [`ConnectOpts`] (one kind's).
//! Both surfaces build the listener from them here ([`ServeOpts::config`],
//! [`ConnectOpts::config`]); the config parser only adds what a file has and a command line
//! has not: paths taken from the file's directory, `FILE:LINE:COL` of each value, and
//! `[[listener.allow]]` tables.
//!
//! Adding an option is one field in one of these types (with its `#[arg]`; a `Default` line
//! when the default is not the type's) and, if the listener uses it, one line in `config`; the
//! config parser learns the key from serde's field list, and "did you mean" learns it with it.

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use mutual_policy::human::HumanDuration;
use mutual_policy::Policy;
use serde::{Deserialize, Deserializer};

use super::defaults;
use crate::accept::Limits;
use crate::connect::ConnectConfig;
use crate::http::{ForwardClientCert, Mode, XfccDetails};
use crate::proxy_protocol::ProxyProtocol;
use crate::serve::ServeConfig;
use crate::{Backend, ProxyError};

/// The lowest TLS version a listener accepts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MinTls {
    /// TLS 1.2 and 1.3.
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[default]
    #[value(name = "1.3")]
    Tls13,
}

/// What a peer certificate whose revocation status is not known gets (a CRL or an OCSP answer
/// that is not available: not fetched yet, the server down, past nextUpdate, `unknown`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RevocationUnknown {
    /// The handshake fails with `revocation_unknown`.
    #[default]
    Deny,
    /// The certificate is accepted.
    Allow,
}

/// Options every listener has, serve and connect alike: where it listens, its own certificate,
/// key and CA bundle, `--min-tls`/`min_tls`, the timeouts, the limits, the profile.
#[derive(clap::Args, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerOpts {
    /// Address to accept on, HOST:PORT: mTLS clients for serve (e.g. 0.0.0.0:8443), local
    /// plaintext clients for connect (loopback unless --allow-remote-clients, e.g.
    /// 127.0.0.1:7000).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,

    /// Certificate chain to present (PEM: leaf first, then intermediates).
    #[arg(long, value_name = "FILE", value_parser = path_or_empty(), default_value = "",
        hide_default_value = true, conflicts_with = "workload_api")]
    pub cert: PathBuf,

    /// Private key for --cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "FILE", value_parser = path_or_empty(), default_value = "",
        hide_default_value = true, conflicts_with = "workload_api")]
    pub key: PathBuf,

    /// Trusted roots for the peer's certificate (PEM bundle): the clients' for serve, the
    /// server's for connect.
    #[arg(long, value_name = "FILE", value_parser = path_or_empty(), default_value = "",
        hide_default_value = true, conflicts_with = "workload_api")]
    pub ca: PathBuf,

    /// Take the certificate, key and trust bundle from the SPIFFE Workload API at this
    /// address (`unix:///run/mutual/agent.sock`, a `mutual agent` or SPIRE agent) instead of
    /// --cert/--key/--ca: the first X.509-SVID it hands out (or --workload-spiffe-id's), with
    /// its trust domain's bundle, and every rotation it pushes, in memory (ghostunnel's
    /// --use-workload-api). Start waits up to --handshake-timeout for the first SVID.
    #[arg(long, value_name = "unix:///PATH")]
    #[serde(deserialize_with = "some_parsed")]
    pub workload_api: Option<WorkloadApi>,

    /// With --workload-api: use the SVID with this SPIFFE ID when the workload has several
    /// (default: the first, as SPIRE's "default SVID"). Refused without --workload-api.
    #[arg(long, value_name = "SPIFFE_ID")]
    pub workload_spiffe_id: Option<String>,

    /// Lowest TLS version accepted.
    #[arg(long, value_name = "VERSION", value_enum, default_value_t)]
    #[serde(deserialize_with = "value_enum")]
    pub min_tls: MinTls,

    /// Give up on a TLS handshake that has not finished after this long.
    #[arg(long, value_name = "DURATION", default_value = defaults::HANDSHAKE_TIMEOUT)]
    pub handshake_timeout: HumanDuration,

    /// Close a connection with no traffic in either direction for this long.
    #[arg(long, value_name = "DURATION", default_value = defaults::IDLE_TIMEOUT)]
    pub idle_timeout: HumanDuration,

    /// Give up dialling the backend (serve) or the remote (connect) after this long.
    #[arg(long, value_name = "DURATION", default_value = defaults::CONNECT_TIMEOUT)]
    pub connect_timeout: HumanDuration,

    /// At most N connections open at once; beyond that, new connections are closed at once and
    /// counted in mutual_connections_rejected_total (default: unlimited).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// On SIGTERM/SIGINT, stop accepting and let open connections finish for up to this long.
    #[arg(long, value_name = "DURATION", default_value = defaults::DRAIN_TIMEOUT)]
    pub drain_timeout: HumanDuration,

    /// Close an allowed connection after this long, however busy it is (gracefully: close_notify;
    /// audited with its bytes). Long-lived connections then pick up new certificates, CRLs and
    /// policy. Default: no limit.
    #[arg(long, value_name = "DURATION")]
    pub max_connection_lifetime: Option<HumanDuration>,

    /// How strictly the peer's chain is checked: compatible (webpki's checks, as every TLS
    /// stack) or strict (also the RFC 5280 / CA/B Forum error rules of `mutual cert lint` on
    /// every certificate and CRL of the built path; a violation is refused as `malformed`).
    #[arg(
        long,
        value_name = "PROFILE",
        value_enum,
        default_value_t,
        hide_possible_values = true
    )]
    #[serde(deserialize_with = "value_enum")]
    pub profile: mutual_tls::Profile,

    /// What a peer certificate whose revocation status is not known gets: deny (the handshake
    /// fails with revocation_unknown) or allow. Applies to every revocation source the
    /// listener has: --crl files without a CRL from the certificate's issuer, --crl-from-cdp
    /// (CRL not fetched yet, server down, past nextUpdate), --ocsp-from-aia / connect --ocsp
    /// (no current answer, responder down, status unknown).
    #[arg(long, value_name = "deny|allow", value_enum, default_value_t)]
    #[serde(deserialize_with = "value_enum")]
    pub revocation_unknown: RevocationUnknown,
}

/// The same values clap's defaults give (a test parses a command line without the options
/// and compares), for a `[[listener]]` block that leaves a key out.
impl Default for ListenerOpts {
    fn default() -> Self {
        let d = |s: &str| HumanDuration(defaults::duration(s));
        ListenerOpts {
            listen: String::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            ca: PathBuf::new(),
            workload_api: None,
            workload_spiffe_id: None,
            min_tls: MinTls::default(),
            handshake_timeout: d(defaults::HANDSHAKE_TIMEOUT),
            idle_timeout: d(defaults::IDLE_TIMEOUT),
            connect_timeout: d(defaults::CONNECT_TIMEOUT),
            max_connections: None,
            drain_timeout: d(defaults::DRAIN_TIMEOUT),
            max_connection_lifetime: None,
            profile: mutual_tls::Profile::default(),
            revocation_unknown: RevocationUnknown::default(),
        }
    }
}

/// A SPIFFE Workload API address: `unix:///ABSOLUTE/PATH` (the spec's form, what
/// SPIFFE_ENDPOINT_SOCKET holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadApi {
    /// The address as given.
    pub uri: String,
    /// The socket it names.
    pub socket: PathBuf,
}

impl std::str::FromStr for WorkloadApi {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("unix://") {
            Some(p) if p.starts_with('/') && p.len() > 1 => Ok(WorkloadApi {
                uri: s.to_string(),
                socket: PathBuf::from(p),
            }),
            _ => Err(format!(
                "must be unix:///ABSOLUTE/PATH (the Workload API socket), not {s:?}"
            )),
        }
    }
}

impl WorkloadApi {
    /// The memory source ([`mutual_tls::memory`]) this address and SPIFFE ID feed.
    pub fn source(&self, spiffe_id: Option<&str>) -> String {
        mutual_tls::memory::source(&self.uri, spiffe_id)
    }
}

/// A path flag whose absence is the empty path (--cert, --key, --ca: absent with
/// --workload-api; [`ListenerOpts::problems`] says when they are missing).
fn path_or_empty() -> impl TypedValueParser<Value = PathBuf> {
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

/// `--http` is the flag of the `mode` key: on, HTTP mode; absent, TCP.
fn http_flag() -> impl TypedValueParser<Value = Mode> {
    clap::builder::BoolishValueParser::new().map(|on| if on { Mode::Http } else { Mode::Tcp })
}

/// Options only a serve listener has. A connect block that sets one of these keys is refused
/// (the field list says which keys they are).
#[derive(clap::Args, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeOpts {
    /// Where to forward allowed connections: HOST:PORT or unix:/path/to/socket.
    #[arg(long, value_name = "HOST:PORT|unix:PATH", required = true)]
    #[serde(deserialize_with = "some_parsed")]
    pub backend: Option<Backend>,

    /// CRL file (PEM or DER); repeat for several (config key: `crls`, an array). With CRLs,
    /// every certificate in the client's chain must have a CRL from its issuer (unknown status
    /// is denied).
    #[arg(long = "crl", value_name = "FILE")]
    #[serde(rename = "crls")]
    pub crls: Vec<PathBuf>,

    /// Check revocation of the client's own certificate only, not of its intermediates (for CAs
    /// that publish a CRL only for leaves, like `mutual ca crl`; Envoy's
    /// only_verify_leaf_cert_crl). Default: every certificate in the chain needs a CRL.
    #[arg(long, requires = "crls")]
    pub crl_leaf_only: bool,

    /// Allow clients whose SPIFFE ID matches (exact, or `*` for one path segment); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub allow_spiffe: Vec<String>,

    /// Allow clients with a matching DNS SAN (exact, or `*` for one label); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub allow_dns: Vec<String>,

    /// Allow clients whose subject CN matches (legacy); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub allow_cn: Vec<String>,

    /// Allow clients whose subject OU matches (legacy); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub allow_ou: Vec<String>,

    /// Allow every client with a valid certificate from --ca (no identity check).
    #[arg(long)]
    pub allow_any: bool,

    /// Policy file (TOML, [[allow]] rules); its rules are added to the --allow-* flags and it is
    /// reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// HTTP mode (config key: `mode = "http"`, default "tcp"): terminate HTTP/1.1 and HTTP/2
    /// (ALPN h2, http/1.1), authorize each request (rules may then have `methods`/`paths`),
    /// forward over pooled keep-alive connections with the client's identity in headers; denied
    /// requests get 403. See docs/http.md.
    #[arg(long = "http", action = clap::ArgAction::SetTrue, value_parser = http_flag())]
    #[serde(deserialize_with = "value_enum")]
    pub mode: Mode,

    /// HTTP mode: identity headers for the backend: xfcc (X-Forwarded-Client-Cert, Envoy's
    /// format), rfc9440 (Client-Cert, Client-Cert-Chain), both, or none. Copies a client sent
    /// are always removed.
    #[arg(
        long,
        value_name = "FORMAT",
        value_enum,
        default_value_t,
        requires = "mode"
    )]
    #[serde(deserialize_with = "value_enum")]
    pub forward_client_cert: ForwardClientCert,

    /// HTTP mode: also put the client's certificate (`cert`) and/or the chain it sent
    /// (`chain`) into X-Forwarded-Client-Cert as URL-encoded PEM; comma-separated (config: an
    /// array).
    #[arg(long, value_name = "cert,chain", default_value = "", requires = "mode")]
    #[serde(deserialize_with = "xfcc_details")]
    pub forward_client_cert_details: XfccDetails,

    /// Send a PROXY protocol header to the backend first: the client's address, TLS facts
    /// (version, CN, cipher, algorithms) and the verified SPIFFE ID (TLV 0x05 and 0xE0), with a
    /// CRC32C. Only `v2`. The backend must expect it (haproxy `accept-proxy`, nginx
    /// `proxy_protocol`).
    #[arg(long, value_name = "VERSION")]
    #[serde(deserialize_with = "some_parsed")]
    pub proxy_protocol: Option<ProxyProtocol>,

    /// End an established connection when its client's certificate expires (a timer at the
    /// certificate's notAfter; audited as denied/expired). Without it expiry after the
    /// handshake never ends a connection, reloads included.
    #[arg(long)]
    pub end_on_peer_expiry: bool,

    /// Fetch CRLs from the CRL distribution points (http/https) that certificates name: this
    /// listener's own chain and CA bundle at start, client chains when first seen. Each CRL is
    /// checked (issuer signature, thisUpdate/nextUpdate), cached in --crl-cache-dir, refreshed at
    /// 2/3 of its validity and applied without a restart. See docs/proxy.md.
    #[arg(long)]
    pub crl_from_cdp: bool,

    /// With --crl-from-cdp: where fetched CRLs are kept across restarts
    /// [default: $MUTUAL_HOME/crl-cache or ~/.mutual/crl-cache].
    #[arg(long, value_name = "DIR", requires = "crl_from_cdp")]
    pub crl_cache_dir: Option<PathBuf>,

    /// Check each client's certificate with OCSP: ask the responder named in its AIA (http://),
    /// check the answer (signed by the issuer or its delegated responder, about this
    /// certificate, current), keep it until nextUpdate and ask again at 2/3 of it. Revoked:
    /// refused as `revoked`; no current answer: --revocation-unknown decides (deny by default,
    /// and the first handshake of a new certificate has none: it is refused until the answer
    /// lands, a second or so). Works with --crl / --crl-from-cdp (either saying revoked
    /// refuses). A certificate naming no responder is not checked. See docs/ocsp.md.
    #[arg(long)]
    pub ocsp_from_aia: bool,

    /// Staple an OCSP response for this listener's own certificate (TLS status_request, what
    /// `openssl s_client -status` shows), fetched from the responder in the certificate's AIA
    /// (or --ocsp-staple-url), refreshed at half of its validity and whenever the certificate
    /// changes. See docs/ocsp.md.
    #[arg(long)]
    pub ocsp_staple: bool,

    /// OCSP responder (http://) to fetch the staple from instead of the certificate's AIA.
    /// Implies --ocsp-staple.
    #[arg(long, value_name = "URL")]
    pub ocsp_staple_url: Option<String>,
}

impl ServeOpts {
    /// The config keys these options take.
    pub fn keys() -> &'static [&'static str] {
        super::field_names::<ServeOpts>()
    }

    /// Every value out of range (as [`ListenerOpts::problems`]), with the listener options
    /// they depend on.
    pub fn problems(&self, l: &ListenerOpts) -> Vec<OptProblem> {
        let mut out = Vec::new();
        if l.allow_unknown() && self.crls.is_empty() && !self.crl_from_cdp && !self.ocsp_from_aia {
            out.push(OptProblem {
                key: "revocation_unknown",
                message: "only applies with a revocation source (CRL files, CRLs from CDPs, \
                          OCSP)"
                    .into(),
            });
        }
        // --allow-any allows every verified client: a rule beside it would change nothing,
        // and a reader of the command line could take it for a restriction (ghostunnel's
        // --allow-all is exclusive in the same way).
        let rules = [
            ("allow_spiffe", !self.allow_spiffe.is_empty()),
            ("allow_dns", !self.allow_dns.is_empty()),
            ("allow_cn", !self.allow_cn.is_empty()),
            ("allow_ou", !self.allow_ou.is_empty()),
            ("policy", self.policy.is_some()),
        ];
        let beside = rules
            .iter()
            .find(|(_, set)| *set)
            .filter(|_| self.allow_any);
        if let Some((k, _)) = beside {
            out.push(OptProblem {
                key: "allow_any",
                message: format!(
                    "allows every verified client, so --{} / {k} beside it would restrict \
                     nothing: give one or the other",
                    k.replace('_', "-")
                ),
            });
        }
        // HTTP mode pools backend connections across clients and names each request's client
        // in headers; a PROXY header names one client per backend connection, before its first
        // byte, so only TCP mode writes it.
        if self.proxy_protocol.is_some() && self.mode == crate::http::Mode::Http {
            out.push(OptProblem {
                key: "proxy_protocol",
                message: "applies to TCP mode only: HTTP mode pools backend connections across \
                          clients and names each request's client in its headers \
                          (--forward-client-cert / forward_client_cert)"
                    .into(),
            });
        }
        if let Some(u) = &self.ocsp_staple_url {
            if !u.starts_with("http://") {
                out.push(OptProblem {
                    key: "ocsp_staple_url",
                    message: format!("must be an http:// URL, not {u:?}"),
                });
            }
        }
        out
    }

    /// The rules of the `--allow-*` flags / `allow_*` keys and `--allow-any` / `allow_any`.
    pub fn inline_policy(&self) -> Result<Policy, mutual_policy::PolicyError> {
        Policy::from_flags(
            &self.allow_spiffe,
            &self.allow_dns,
            &self.allow_cn,
            &self.allow_ou,
            self.allow_any,
        )
    }

    /// With `crl_from_cdp`: the fetcher's settings, its cache in `crl_cache_dir` or else in
    /// `default_cache` (None: there is no default, the caller says which setting to give).
    pub fn cdp(
        &self,
        l: &ListenerOpts,
        default_cache: impl FnOnce() -> Option<PathBuf>,
    ) -> Option<Option<crate::cdp::CdpSettings>> {
        if !self.crl_from_cdp {
            return Some(None);
        }
        let dir = self.crl_cache_dir.clone().or_else(default_cache)?;
        Some(Some(crate::cdp::CdpSettings::new(!l.allow_unknown(), dir)))
    }

    /// The verifier's revocation settings these options give.
    pub fn tls_options(&self, listener: &ListenerOpts) -> mutual_tls::TlsOptions {
        mutual_tls::TlsOptions {
            profile: listener.profile,
            revocation: mutual_tls::RevocationPolicy {
                leaf_only: self.crl_leaf_only,
                allow_unknown: listener.allow_unknown(),
                ..Default::default()
            },
            ocsp_staple: (self.ocsp_staple || self.ocsp_staple_url.is_some()).then(|| {
                mutual_tls::ocsp::Stapling {
                    url: self.ocsp_staple_url.clone(),
                    ..Default::default()
                }
            }),
            ..Default::default()
        }
    }

    /// The serve listener these options describe: the flags and a config block both build it
    /// here. `policy_flags` are the inline rules (a config block adds its `[[listener.allow]]`
    /// tables to [`ServeOpts::inline_policy`]); `cdp` comes from [`ServeOpts::cdp`].
    pub fn config(
        &self,
        name: String,
        l: &ListenerOpts,
        policy_flags: Policy,
        cdp: Option<crate::cdp::CdpSettings>,
    ) -> Result<ServeConfig, ProxyError> {
        let backend = self
            .backend
            .clone()
            .ok_or_else(|| ProxyError::InvalidBackend {
                spec: String::new(),
                why: "a backend is required".into(),
            })?;
        Ok(ServeConfig {
            name,
            tls: l.server_settings(self.crls.clone()),
            tls_options: self.tls_options(l),
            policy_flags,
            policy_file: self.policy.clone(),
            backend,
            handshake_timeout: l.handshake_timeout.get(),
            idle_timeout: l.idle_timeout.get(),
            connect_timeout: l.connect_timeout.get(),
            limits: l.limits(),
            mode: self.mode,
            http: crate::http::HttpOptions {
                forward_client_cert: self.forward_client_cert,
                details: self.forward_client_cert_details,
            },
            proxy_protocol: self.proxy_protocol,
            max_connection_lifetime: l.max_connection_lifetime(),
            crl_from_cdp: cdp,
            ocsp_from_aia: self
                .ocsp_from_aia
                .then(|| crate::ocsp_peer::OcspPeerSettings::new(!l.allow_unknown())),
            end_on_peer_expiry: self.end_on_peer_expiry,
        })
    }
}

/// Options only a connect listener has. A serve block that sets one of these keys is refused
/// (the field list says which keys they are).
#[derive(clap::Args, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectOpts {
    /// The mTLS server to connect to, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub remote: String,

    /// Name the server certificate must carry (and SNI); default: the host part of --remote.
    #[arg(long, value_name = "NAME", conflicts_with = "expect_spiffe")]
    pub server_name: Option<String>,

    /// Require the server to present exactly this SPIFFE ID (URI SAN) instead of a DNS name.
    #[arg(long, value_name = "SPIFFE_ID")]
    pub expect_spiffe: Option<String>,

    /// Allow a non-loopback --listen address: anyone who can reach it gets your identity.
    #[arg(long)]
    pub allow_remote_clients: bool,

    /// Check the server's certificate with OCSP: ask the responder named in its AIA (http://),
    /// check the answer (signed by the issuer or its delegated responder, about this
    /// certificate, current) and keep it until nextUpdate. Revoked: the connection fails as
    /// `revoked`; no current answer: --revocation-unknown decides (deny by default; a first
    /// connection waits up to --handshake-timeout for the answer and tries again). A
    /// certificate naming no responder is not checked. See docs/ocsp.md.
    #[arg(long)]
    pub ocsp: bool,
}

impl ConnectOpts {
    /// The config keys these options take.
    pub fn keys() -> &'static [&'static str] {
        super::field_names::<ConnectOpts>()
    }

    /// Every value out of range, with the listener options they depend on.
    pub fn problems(&self, l: &ListenerOpts) -> Vec<OptProblem> {
        let mut out = Vec::new();
        if l.allow_unknown() && !self.ocsp {
            out.push(OptProblem {
                key: "revocation_unknown",
                message: "only applies with a revocation source (OCSP)".into(),
            });
        }
        out
    }

    /// The connect listener these options describe (the flags and a config block alike).
    pub fn config(&self, name: String, l: &ListenerOpts) -> ConnectConfig {
        let (cert, key, ca) = l.material_paths();
        ConnectConfig {
            name,
            tls: mutual_tls::ClientSettings {
                cert,
                key,
                ca,
                server_name: self.server_name.clone(),
                expect_spiffe: self.expect_spiffe.clone(),
                allow_tls12: l.allow_tls12(),
                ..Default::default()
            },
            remote: self.remote.clone(),
            handshake_timeout: l.handshake_timeout.get(),
            idle_timeout: l.idle_timeout.get(),
            connect_timeout: l.connect_timeout.get(),
            limits: l.limits(),
            max_connection_lifetime: l.max_connection_lifetime(),
            profile: l.profile,
            ocsp: self
                .ocsp
                .then(|| crate::ocsp_peer::OcspPeerSettings::new(!l.allow_unknown())),
        }
    }
}

/// A value the type accepts but the option does not: the field (config key spelling) and what
/// is wrong, to be prefixed with `--flag` or `key` by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptProblem {
    pub key: &'static str,
    pub message: String,
}

impl OptProblem {
    /// `key must ...`, as a config diagnostic says it.
    pub fn for_key(&self) -> String {
        format!("{} {}", self.key, self.message)
    }

    /// `--flag must ...`, as a command-line error says it.
    pub fn for_flag(&self) -> String {
        format!("--{} {}", self.key.replace('_', "-"), self.message)
    }
}

impl ListenerOpts {
    /// The config keys these options take (serde's field list, so always in step with the type).
    pub fn keys() -> &'static [&'static str] {
        super::field_names::<ListenerOpts>()
    }

    /// Every value out of range (clap's and serde's types already refuse the wrong kind).
    pub fn problems(&self) -> Vec<OptProblem> {
        let mut out = Vec::new();
        let files = [("cert", &self.cert), ("key", &self.key), ("ca", &self.ca)];
        if self.workload_api.is_some() {
            if let Some((k, _)) = files.iter().find(|(_, p)| !p.as_os_str().is_empty()) {
                out.push(OptProblem {
                    key: "workload_api",
                    message: format!(
                        "replaces cert, key and ca: give one or the other, not {k} as well"
                    ),
                });
            }
        } else if let Some((k, _)) = files.iter().find(|(_, p)| p.as_os_str().is_empty()) {
            out.push(OptProblem {
                key: k,
                message: "is required (so are key and ca), unless --workload-api / workload_api \
                          gives the listener its certificate"
                    .into(),
            });
        }
        if self.workload_spiffe_id.is_some() && self.workload_api.is_none() {
            out.push(OptProblem {
                key: "workload_spiffe_id",
                message: "picks one of the Workload API's SVIDs: it needs --workload-api / \
                          workload_api"
                    .into(),
            });
        }
        // Zero would end every handshake, connection or dial at once (drain_timeout 0 is a
        // real choice: stop without waiting).
        for (key, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if d.0.is_zero() {
                out.push(OptProblem {
                    key,
                    message: "must be more than 0 (at 0 every connection would fail at once)"
                        .into(),
                });
            }
        }
        if self.max_connections == Some(0) {
            out.push(OptProblem {
                key: "max_connections",
                message: "must be at least 1".into(),
            });
        }
        if self.max_connection_lifetime.is_some_and(|d| d.0.is_zero()) {
            out.push(OptProblem {
                key: "max_connection_lifetime",
                message: "must be more than 0 (leave it out: unlimited)".into(),
            });
        }
        out
    }

    /// A peer certificate whose revocation status is unknown is allowed.
    pub fn allow_unknown(&self) -> bool {
        self.revocation_unknown == RevocationUnknown::Allow
    }

    /// TLS 1.2 accepted as well as 1.3.
    pub fn allow_tls12(&self) -> bool {
        self.min_tls == MinTls::Tls12
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            drain_timeout: self.drain_timeout.get(),
        }
    }

    pub fn max_connection_lifetime(&self) -> Option<std::time::Duration> {
        self.max_connection_lifetime.map(HumanDuration::get)
    }

    /// The certificate, key and CA bundle the listener loads: its files, or the memory paths
    /// the Workload API's pushes fill ([`mutual_tls::memory`]).
    pub fn material_paths(&self) -> (PathBuf, PathBuf, PathBuf) {
        use mutual_tls::memory::{path, Part};
        match &self.workload_api {
            Some(w) => {
                let src = w.source(self.workload_spiffe_id.as_deref());
                (
                    path(&src, Part::Cert),
                    path(&src, Part::Key),
                    path(&src, Part::Ca),
                )
            }
            None => (self.cert.clone(), self.key.clone(), self.ca.clone()),
        }
    }

    /// A serve listener's TLS settings: its files and these options.
    fn server_settings(&self, crls: Vec<PathBuf>) -> mutual_tls::ServerSettings {
        let (cert, key, ca) = self.material_paths();
        mutual_tls::ServerSettings {
            cert,
            key,
            ca,
            crls,
            allow_tls12: self.allow_tls12(),
            ..Default::default()
        }
    }
}

/// Reads a clap `ValueEnum` from its command-line spelling, so a flag and a key parse alike
/// (one list of names, clap's) and a bad value is named the same way.
pub fn value_enum<'de, D: Deserializer<'de>, T: clap::ValueEnum>(d: D) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    T::from_str(&s, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| format!("{:?}", p.get_name()))
            .collect();
        serde::de::Error::custom(format!("must be one of {}, not {s:?}", names.join(", ")))
    })
}

/// Reads a value through its `FromStr`, the parse its flag uses.
fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

fn some_parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    parsed(d).map(Some)
}

/// `["cert", "chain"]` (or `"cert,chain"`), parsed as the flag's comma-separated value.
fn xfcc_details<'de, D: Deserializer<'de>>(d: D) -> Result<XfccDetails, D::Error> {
    super::one_or_many(d)?
        .unwrap_or_default()
        .join(",")
        .parse()
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        opts: ListenerOpts,
    }

    #[derive(clap::Parser)]
    struct ServeCli {
        #[command(flatten)]
        opts: ServeOpts,
    }

    #[derive(clap::Parser)]
    struct ConnectCli {
        #[command(flatten)]
        opts: ConnectOpts,
    }

    /// The flags a command needs besides the options under test.
    const REQUIRED: [&str; 9] = [
        "x", "--listen", "l", "--cert", "c", "--key", "k", "--ca", "r",
    ];

    /// The defaults with the values of [`REQUIRED`].
    fn required() -> ListenerOpts {
        ListenerOpts {
            listen: "l".into(),
            cert: "c".into(),
            key: "k".into(),
            ca: "r".into(),
            ..Default::default()
        }
    }

    /// The long flags of a command, spelled as config keys (the two flags whose key is spelled
    /// otherwise, `--crl` for `crls` and `--http` for `mode`, mapped).
    fn flags_as_keys(cmd: &clap::Command) -> Vec<String> {
        let mut flags: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .map(|l| match l {
                "crl" => "crls".to_string(),
                "http" => "mode".to_string(),
                l => l.replace('-', "_"),
            })
            .filter(|l| l != "help")
            .collect();
        flags.sort();
        flags
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut k: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        k.sort();
        k
    }

    /// One default: no flag and no key give the same options.
    #[test]
    fn clap_defaults_are_the_default() {
        let from_flags = Cli::try_parse_from(REQUIRED).unwrap().opts;
        assert_eq!(from_flags, required());
        let from_keys: ListenerOpts =
            toml::from_str("listen = \"l\"\ncert = \"c\"\nkey = \"k\"\nca = \"r\"").unwrap();
        assert_eq!(from_keys, required());
        let serve = ServeCli::try_parse_from(["x", "--backend", "127.0.0.1:1"]).unwrap();
        let from_keys: ServeOpts = toml::from_str("backend = \"127.0.0.1:1\"").unwrap();
        assert_eq!(serve.opts, from_keys);
        let connect = ConnectCli::try_parse_from(["x", "--remote", "r"]).unwrap();
        let from_keys: ConnectOpts = toml::from_str("remote = \"r\"").unwrap();
        assert_eq!(connect.opts, from_keys);
    }

    /// One field: every flag is a key.
    #[test]
    fn every_flag_is_a_key() {
        use clap::CommandFactory;
        assert_eq!(flags_as_keys(&Cli::command()), sorted(ListenerOpts::keys()));
        assert_eq!(
            flags_as_keys(&ConnectCli::command()),
            sorted(ConnectOpts::keys())
        );
        assert_eq!(
            flags_as_keys(&ServeCli::command()),
            sorted(ServeOpts::keys())
        );
    }

    /// The enums: one spelling list (clap's), the same value from a flag and a key, and a bad
    /// key value named with the list.
    #[test]
    fn enums_parse_alike_from_flags_and_keys() {
        let mut argv = REQUIRED.to_vec();
        argv.extend([
            "--min-tls",
            "1.2",
            "--profile",
            "strict",
            "--revocation-unknown",
            "allow",
        ]);
        let flags = Cli::try_parse_from(argv).unwrap().opts;
        let keys: ListenerOpts = toml::from_str(
            "min_tls = \"1.2\"\nprofile = \"strict\"\nrevocation_unknown = \"allow\"",
        )
        .unwrap();
        assert_eq!(
            flags,
            ListenerOpts {
                min_tls: keys.min_tls,
                profile: keys.profile,
                revocation_unknown: keys.revocation_unknown,
                ..required()
            }
        );
        assert!(keys.allow_unknown());
        assert_eq!(keys.min_tls, MinTls::Tls12);
        assert_eq!(keys.profile, mutual_tls::Profile::Strict);
        let e = toml::from_str::<ListenerOpts>("min_tls = \"1.1\"").unwrap_err();
        assert_eq!(e.message(), "must be one of \"1.2\", \"1.3\", not \"1.1\"");
        let serve = ServeCli::try_parse_from([
            "x",
            "--backend",
            "127.0.0.1:1",
            "--http",
            "--crl-from-cdp",
            "--ocsp-from-aia",
        ])
        .unwrap()
        .opts;
        let keys: ServeOpts = toml::from_str(
            "backend = \"127.0.0.1:1\"\nmode = \"http\"\ncrl_from_cdp = true\nocsp_from_aia = true",
        )
        .unwrap();
        assert_eq!(serve, keys);
        assert_eq!(keys.mode, Mode::Http);
        assert!(keys.ocsp_from_aia);
    }

    #[test]
    fn out_of_range_values_are_named_both_ways() {
        let o = ListenerOpts {
            max_connections: Some(0),
            ..required()
        };
        let p = o.problems();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].for_flag(), "--max-connections must be at least 1");
        assert_eq!(p[0].for_key(), "max_connections must be at least 1");
        // The three files or workload_api: neither, or both, is one problem.
        let p = ListenerOpts::default().problems();
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].for_flag(),
            "--cert is required (so are key and ca), unless --workload-api / workload_api \
             gives the listener its certificate"
        );
        let both = ListenerOpts {
            workload_api: Some("unix:///run/a.sock".parse().unwrap()),
            ..required()
        };
        let p = both.problems();
        assert_eq!(
            p[0].for_flag(),
            "--workload-api replaces cert, key and ca: give one or the other, not cert as well"
        );
        // --allow-any beside a rule: the rule would restrict nothing.
        let open = ServeOpts {
            allow_any: true,
            allow_dns: vec!["x.example".into()],
            ..ServeOpts::default()
        };
        let p = open.problems(&required());
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].for_key(),
            "allow_any allows every verified client, so --allow-dns / allow_dns beside it \
             would restrict nothing: give one or the other"
        );
        // An SVID choice without the Workload API would be ignored: it is refused instead
        // (clap's `requires` let it pass whenever --cert was given).
        let stray = ListenerOpts {
            workload_spiffe_id: Some("spiffe://t/api".into()),
            ..required()
        };
        let p = stray.problems();
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].for_flag(),
            "--workload-spiffe-id picks one of the Workload API's SVIDs: it needs \
             --workload-api / workload_api"
        );
        assert_eq!(p[0].key, "workload_spiffe_id");
        let e = "unix:a.sock".parse::<WorkloadApi>().unwrap_err();
        assert_eq!(
            e,
            "must be unix:///ABSOLUTE/PATH (the Workload API socket), not \"unix:a.sock\""
        );
    }
}
