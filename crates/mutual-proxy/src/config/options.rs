//! The options every listener has, serve and connect alike (TLS floor, timeouts, limits), as one
//! type that is both the `serve`/`connect` flags (clap, flattened into their argument structs)
//! and the keys of a `[[listener]]` block (serde): the field is the option, so its flag
//! (`--idle-timeout`) and its key (`idle_timeout`) cannot drift apart, and the default, the doc
//! string, the duration grammar ([`HumanDuration`]) and the range checks ([`ListenerOpts::problems`])
//! are written once. Both the CLI and the config file build a listener's timeouts and limits
//! through the methods below.
//!
//! Adding an option every listener takes is one field here (with its `#[arg]` and, when the
//! default is not the type's, a line in `Default`); the config parser learns the key from serde's
//! field list, and "did you mean" learns it with it.

use std::path::PathBuf;

use mutual_policy::human::HumanDuration;
use serde::Deserialize;

use super::defaults;
use crate::accept::Limits;

/// Options shared by every listener kind: `--min-tls`/`min_tls`, the timeouts, the limits.
#[derive(clap::Args, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerOpts {
    /// Lowest TLS version accepted: 1.3 (default) or 1.2.
    #[arg(long, value_name = "VERSION", default_value = defaults::MIN_TLS, value_parser = ["1.2", "1.3"])]
    pub min_tls: String,

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

    /// How strictly the peer's chain is checked: compatible (default: webpki's checks, as every
    /// TLS stack) or strict (also the RFC 5280 / CA/B Forum error rules of `mutual cert lint` on
    /// every certificate and CRL of the built path; a violation is refused as `malformed`).
    #[arg(long, value_name = "PROFILE", default_value = defaults::PROFILE, value_parser = ["compatible", "strict"])]
    pub profile: String,
}

/// The same values clap's `default_value`s give (a test parses an empty command line and
/// compares), for a `[[listener]]` block that leaves a key out.
impl Default for ListenerOpts {
    fn default() -> Self {
        let d = |s: &str| HumanDuration(defaults::duration(s));
        ListenerOpts {
            min_tls: defaults::MIN_TLS.to_string(),
            handshake_timeout: d(defaults::HANDSHAKE_TIMEOUT),
            idle_timeout: d(defaults::IDLE_TIMEOUT),
            connect_timeout: d(defaults::CONNECT_TIMEOUT),
            max_connections: None,
            drain_timeout: d(defaults::DRAIN_TIMEOUT),
            max_connection_lifetime: None,
            profile: defaults::PROFILE.to_string(),
        }
    }
}

/// Options only a serve listener has that are the same value on both surfaces (the others,
/// such as `--http`/`mode` or the `--allow-*` patterns reported element by element, are still
/// spelled once per surface). A connect block that sets one of these keys is refused.
#[derive(clap::Args, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeOpts {
    /// Check revocation of the client's own certificate only, not of its intermediates (for CAs
    /// that publish a CRL only for leaves, like `mutual ca crl`; Envoy's
    /// only_verify_leaf_cert_crl). Default: every certificate in the chain needs a CRL.
    #[arg(long, requires = "crls")]
    pub crl_leaf_only: bool,

    /// Allow every client with a valid certificate from --ca (no identity check).
    #[arg(long)]
    pub allow_any: bool,

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

    /// With --crl-from-cdp: what to do with a certificate whose CRL is not available (not yet
    /// fetched, server down, past nextUpdate): deny (the handshake fails with
    /// revocation_unknown) or allow.
    #[arg(long, value_name = "deny|allow", default_value = defaults::REVOCATION_UNKNOWN, value_parser = ["deny", "allow"], requires = "crl_from_cdp")]
    pub revocation_unknown: String,

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

impl Default for ServeOpts {
    fn default() -> Self {
        ServeOpts {
            crl_leaf_only: false,
            allow_any: false,
            end_on_peer_expiry: false,
            crl_from_cdp: false,
            revocation_unknown: defaults::REVOCATION_UNKNOWN.to_string(),
            ocsp_staple: false,
            ocsp_staple_url: None,
        }
    }
}

impl ServeOpts {
    /// The config keys these options take.
    pub fn keys() -> &'static [&'static str] {
        super::field_names::<ServeOpts>()
    }

    /// Every value out of range (as [`ListenerOpts::problems`]).
    pub fn problems(&self) -> Vec<OptProblem> {
        let mut out = Vec::new();
        if let Some(u) = &self.ocsp_staple_url {
            if !u.starts_with("http://") {
                out.push(OptProblem {
                    key: "ocsp_staple_url",
                    message: format!("must be an http:// URL, not {u:?}"),
                });
            }
        }
        if self.revocation_unknown != "deny" && self.revocation_unknown != "allow" {
            out.push(OptProblem {
                key: "revocation_unknown",
                message: format!(
                    "must be \"deny\" or \"allow\", not {:?}",
                    self.revocation_unknown
                ),
            });
        }
        out
    }

    /// A certificate whose revocation status is unknown is allowed.
    pub fn allow_unknown(&self) -> bool {
        self.revocation_unknown == "allow"
    }

    /// The verifier's revocation settings these options give (the flags and a config block
    /// alike; `--revocation-unknown` needs `--crl-from-cdp`, so "allow" means the CDP rule).
    pub fn tls_options(&self, listener: &ListenerOpts) -> mutual_tls::TlsOptions {
        mutual_tls::TlsOptions {
            profile: listener.profile(),
            revocation: mutual_tls::RevocationPolicy {
                leaf_only: self.crl_leaf_only,
                allow_unknown: self.allow_unknown(),
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
}

/// Options only a connect listener has (besides `remote`, required on both surfaces, and the
/// files): `--server-name`/`server_name` and the like. A serve block that sets one of these keys
/// is refused (the field list says which keys they are).
#[derive(clap::Args, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectOpts {
    /// Name the server certificate must carry (and SNI); default: the host part of --remote.
    #[arg(long, value_name = "NAME", conflicts_with = "expect_spiffe")]
    pub server_name: Option<String>,

    /// Require the server to present exactly this SPIFFE ID (URI SAN) instead of a DNS name.
    #[arg(long, value_name = "SPIFFE_ID")]
    pub expect_spiffe: Option<String>,

    /// Allow a non-loopback --listen address: anyone who can reach it gets your identity.
    #[arg(long)]
    pub allow_remote_clients: bool,
}

impl ConnectOpts {
    /// The config keys these options take.
    pub fn keys() -> &'static [&'static str] {
        super::field_names::<ConnectOpts>()
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
        if self.min_tls != "1.2" && self.min_tls != "1.3" {
            out.push(OptProblem {
                key: "min_tls",
                message: format!("must be \"1.2\" or \"1.3\", not {:?}", self.min_tls),
            });
        }
        if self.profile.parse::<mutual_tls::Profile>().is_err() {
            out.push(OptProblem {
                key: "profile",
                message: format!(
                    "must be \"compatible\" or \"strict\", not {:?}",
                    self.profile
                ),
            });
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

    /// The verification profile (an unknown name was refused by [`ListenerOpts::problems`]).
    pub fn profile(&self) -> mutual_tls::Profile {
        self.profile.parse().unwrap_or_default()
    }

    /// TLS 1.2 accepted as well as 1.3.
    pub fn allow_tls12(&self) -> bool {
        self.min_tls == "1.2"
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

    /// A serve listener's TLS settings: its files and these options. The flags and a config
    /// block both build them here, so a TLS option added to this type is mapped once.
    pub fn server_settings(
        &self,
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
        crls: Vec<PathBuf>,
    ) -> mutual_tls::ServerSettings {
        mutual_tls::ServerSettings {
            cert,
            key,
            ca,
            crls,
            allow_tls12: self.allow_tls12(),
            ..Default::default()
        }
    }

    /// A connect listener's TLS settings: its files, the connect options and these options
    /// (built here for the flags and a config block alike).
    pub fn client_settings(
        &self,
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
        connect: &ConnectOpts,
    ) -> mutual_tls::ClientSettings {
        mutual_tls::ClientSettings {
            cert,
            key,
            ca,
            server_name: connect.server_name.clone(),
            expect_spiffe: connect.expect_spiffe.clone(),
            allow_tls12: self.allow_tls12(),
            ..Default::default()
        }
    }
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
        /// Stands for serve's `--crl` (which `--crl-leaf-only` requires).
        #[arg(long = "crl")]
        crls: Vec<String>,
    }

    #[derive(clap::Parser)]
    struct ConnectCli {
        #[command(flatten)]
        opts: ConnectOpts,
    }

    /// The long flags of a command, spelled as config keys.
    fn flags_as_keys(cmd: &clap::Command) -> Vec<String> {
        let mut flags: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .map(|l| l.replace('-', "_"))
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
        let from_flags = Cli::try_parse_from(["x"]).unwrap().opts;
        assert_eq!(from_flags, ListenerOpts::default());
        let from_keys: ListenerOpts = toml::from_str("").unwrap();
        assert_eq!(from_keys, ListenerOpts::default());
    }

    /// One field: every flag is a key, with `-` for `_`.
    #[test]
    fn every_flag_is_a_key() {
        use clap::CommandFactory;
        assert_eq!(flags_as_keys(&Cli::command()), sorted(ListenerOpts::keys()));
        assert_eq!(
            flags_as_keys(&ConnectCli::command()),
            sorted(ConnectOpts::keys())
        );
        assert_eq!(
            ConnectCli::try_parse_from(["x"]).unwrap().opts,
            ConnectOpts::default()
        );
        let mut serve = flags_as_keys(&ServeCli::command());
        serve.retain(|f| f != "crl");
        assert_eq!(serve, sorted(ServeOpts::keys()));
        assert_eq!(
            ServeCli::try_parse_from(["x"]).unwrap().opts,
            ServeOpts::default()
        );
    }

    #[test]
    fn out_of_range_values_are_named_both_ways() {
        let o = ListenerOpts {
            max_connections: Some(0),
            ..Default::default()
        };
        let p = o.problems();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].for_flag(), "--max-connections must be at least 1");
        assert_eq!(p[0].for_key(), "max_connections must be at least 1");
    }
}
