//! `mutual ca serve`: runs the CA online (crates/mutual-ca-server). This file only turns flags
//! into `ServeOptions`, unlocks the CA once, wires SIGTERM/SIGINT to a graceful stop and sets up
//! logging; docs/ca-server.md is the user guide.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use mutual_ca_server::{default_sans, Provisioner, RateSpec, ServeOptions, Server};
use mutual_pki::ca::Ca;
use mutual_pki::San;

use crate::ca_args::{parse_duration, DirArg, PasswordArg};
use crate::runtime::{init_logging, server_runtime};

#[derive(clap::Args, Debug)]
// The OCSP settings need OCSP on: --ocsp, or --ocsp-listen which implies it.
#[command(group(clap::ArgGroup::new("ocsp_on").args(["ocsp", "ocsp_listen"]).multiple(true)))]
#[command(after_help = "\
Endpoints (HTTPS, JSON; docs/ca-server.md): GET /health, GET /v1/roots, GET /v1/crl,
POST /v1/sign (one-time token from `mutual token create` + CSR), POST /v1/renew (mTLS with the
current certificate), POST /v1/revoke (mTLS, admin or the certificate itself), GET /metrics
(Prometheus). With --acme: ACME at /acme/directory (docs/acme.md). With --ocsp: OCSP at
/ocsp (GET /ocsp/BASE64, POST application/ocsp-request; docs/ocsp.md). With --est: EST (RFC 7030)
at /.well-known/est/ (docs/est.md). The web console at /ui/ (an --admin client certificate, or
--ui-listen on loopback; docs/console.md).

SIGTERM or SIGINT: stop accepting, finish in-flight requests (up to --drain-timeout), exit 0.")]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:9443", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub password: PasswordArg,
    /// Identity allowed to revoke any certificate: a SPIFFE ID pattern (`spiffe://td/ops/*`)
    /// or a DNS pattern (`dns:*.ops.example`). Repeatable. Anyone may revoke its own
    /// certificate.
    #[arg(long = "admin", value_name = "PATTERN")]
    pub admins: Vec<String>,
    /// SAN of the server's own certificate (repeatable) [default: dns:localhost, ip:127.0.0.1,
    /// ip:::1 and the host name, less the names outside the CA's name constraints].
    #[arg(long = "san", value_name = "TYPE:VALUE", value_parser = parse_san)]
    pub sans: Vec<San>,
    /// Requests per peer IP: N/s or N/m (burst twice that), or `off`. /health is not limited.
    #[arg(long, default_value = "10/s", value_parser = parse_rate, value_name = "RATE")]
    pub rate_limit: RateSpec,
    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    #[arg(long)]
    pub tls12: bool,
    /// The server's own TLS key in a PKCS#11 token (docs/keys.md): a `pkcs11:` URI naming an
    /// existing ECDSA P-256/P-384 or RSA key, the module from `?module-path=` or
    /// $MUTUAL_PKCS11_MODULE, the PIN from `?pin-source=FILE` or $MUTUAL_PKCS11_PIN. Each server
    /// certificate is then issued for that key (from a request the token signs) and every
    /// handshake is signed in the token. Default: a new in-memory key with each certificate.
    #[arg(long, value_name = "PKCS11_URI")]
    pub server_key: Option<std::path::PathBuf>,
    /// Lifetime of the server's own certificate; it is replaced at two-thirds of it.
    #[arg(long, default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
    pub server_cert_ttl: Duration,
    /// nextUpdate of the CRL served at /v1/crl (re-signed at half of it, and on every
    /// revocation).
    #[arg(long, default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
    pub crl_next_update: Duration,
    /// How often to check the store for a newer CRL (stored by another replica) or revocations
    /// the served CRL lacks (`mutual cert revoke`): a revocation made elsewhere is in this
    /// replica's /v1/crl within this interval (at once when made through this replica).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub crl_refresh: Duration,
    /// How long a stop waits for in-flight requests.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,
    // The ACME front door (docs/acme.md); the CA config's `[acme]` section gives the same
    // settings, a flag wins over it.
    #[command(flatten)]
    pub acme: crate::cmd_acme::AcmeArgs,
    /// Answer OCSP (RFC 6960, docs/ocsp.md) at https://HOST:PORT/ocsp, signed by a delegated
    /// responder certificate this server issues to itself.
    #[arg(long)]
    pub ocsp: bool,
    /// Also answer OCSP over plain HTTP on this address (http://ADDR/ocsp): what nginx and most
    /// OCSP clients need, and what `ca init --ocsp-url` / `cert issue --ocsp-url` should name.
    /// Implies --ocsp.
    #[arg(long, value_name = "ADDR:PORT")]
    pub ocsp_listen: Option<SocketAddr>,
    /// Validity of each OCSP response (nextUpdate - thisUpdate); a response is re-signed after
    /// half of it, or at once when the certificate's status changes. Needs --ocsp or
    /// --ocsp-listen.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION",
        requires = "ocsp_on")]
    pub ocsp_next_update: Duration,
    /// Lifetime of the delegated OCSP responder certificate; it is replaced at two-thirds of it.
    /// Needs --ocsp or --ocsp-listen.
    #[arg(long, default_value = "24h", value_parser = parse_duration, value_name = "DURATION",
        requires = "ocsp_on")]
    pub ocsp_responder_ttl: Duration,
    /// Also serve the web console (only) over plain HTTP on this loopback address, without
    /// client certificates: for an operator on the CA's machine or through an SSH tunnel
    /// (docs/console.md). On the main listener the console at /ui/ needs an --admin certificate.
    #[arg(long, value_name = "127.0.0.1:PORT", value_parser = parse_ui_listen)]
    pub ui_listen: Option<SocketAddr>,
    /// Serve EST (RFC 7030, docs/est.md) at https://HOST:PORT/.well-known/est/: cacerts,
    /// csrattrs, simpleenroll (factory certificate or one-time token as HTTP Basic password),
    /// simplereenroll (the current certificate over mTLS).
    #[arg(long)]
    pub est: bool,
    /// Manufacturer CA (PEM, repeatable) whose certificates may enroll over EST, mapped to a name
    /// by --est-identity. Trusted for EST enrollment only: such a certificate opens no other
    /// endpoint.
    #[arg(long = "est-bootstrap-ca", value_name = "PEM", requires = "est")]
    pub est_bootstrap_ca: Vec<std::path::PathBuf>,
    /// The name a factory certificate enrolls for: a SPIFFE ID or a SAN (`dns:...`) with
    /// {serial} (the certificate's subject serialNumber) or {cn}, e.g.
    /// 'spiffe://fleet.example/device/{serial}'.
    #[arg(long, value_name = "TEMPLATE", requires = "est", value_parser = parse_identity)]
    pub est_identity: Option<mutual_est::IdentityTemplate>,
    /// A file of factory serials (the subject serialNumber --est-identity reads), one per line,
    /// `#` comments: those devices may no longer enroll (403 device_denied). Re-read when the
    /// file changes, no restart needed.
    #[arg(long = "est-deny-serial", value_name = "FILE", requires = "est")]
    pub est_deny_serial: Option<std::path::PathBuf>,
    /// An EST label (/.well-known/est/LABEL/...) with its own --est-identity template
    /// (repeatable): LABEL=TEMPLATE.
    #[arg(long = "est-label", value_name = "LABEL=TEMPLATE", requires = "est", value_parser = parse_label)]
    pub est_label: Vec<(String, mutual_est::IdentityTemplate)>,
    /// Lifetime of certificates issued over EST (factory certificate or re-enrollment; a token
    /// carries its own). Needs --est.
    #[arg(long, default_value = "24h", value_parser = parse_duration, value_name = "DURATION",
        requires = "est")]
    pub est_ttl: Duration,
    /// EST approval: auto (issue at once) or manual (hold each request in the inventory for
    /// `mutual cert approve|reject ID`; the device gets 202 + Retry-After and polls with the same
    /// CSR).
    #[arg(long, default_value = "auto", value_parser = ["auto", "manual"], requires = "est")]
    pub est_approval: String,
    /// Retry-After (seconds) of a 202 answer while a request waits for approval (with
    /// --est-approval manual) [default: 60].
    #[arg(long, value_name = "SECONDS", requires = "est_approval")]
    pub est_retry_after: Option<u64>,
    /// How long after it expired a certificate may still renew (/v1/renew and EST
    /// simplereenroll), for devices that were offline; never a revoked one. Off by default,
    /// at most 30d; each such renewal is logged and recorded (requested_by `...-grace:SERIAL`).
    #[arg(long, default_value = "0s", value_parser = parse_grace, value_name = "DURATION")]
    pub renew_grace: Duration,
    /// Lifetime of the JWT-SVIDs agents get (POST /v1/agent/jwt, docs/agent.md), never longer
    /// than the entry's TTL; keep it short: a bearer token cannot be revoked. At most 24h.
    #[arg(long, default_value = "5m", value_parser = parse_jwt_ttl, value_name = "DURATION")]
    pub jwt_svid_ttl: Duration,
    /// Log format on stderr: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn parse_ui_listen(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an address:port"))?;
    if !a.ip().is_loopback() {
        return Err(format!(
            "{a} is not a loopback address: the console without client certificates listens \
             on 127.0.0.1 or [::1] only (use the main listener with --admin for remote access)"
        ));
    }
    Ok(a)
}

fn parse_san(s: &str) -> Result<San, String> {
    s.parse().map_err(|e: mutual_pki::PkiError| e.to_string())
}

fn parse_identity(s: &str) -> Result<mutual_est::IdentityTemplate, String> {
    mutual_est::IdentityTemplate::parse(s)
}

fn parse_label(s: &str) -> Result<(String, mutual_est::IdentityTemplate), String> {
    let (label, t) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected LABEL=TEMPLATE"))?;
    if mutual_est::wire::parse_path(&format!("{}{label}/cacerts", mutual_est::wire::PREFIX))
        .is_none_or(|(l, _)| l.is_none())
    {
        return Err(format!(
            "{label:?} is not a valid EST label (letters, digits, - _ .)"
        ));
    }
    Ok((label.to_string(), mutual_est::IdentityTemplate::parse(t)?))
}

fn parse_jwt_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
        return Err(format!(
            "{s}: a JWT-SVID lives between 1s and 24h (default 5m)"
        ));
    }
    Ok(d)
}

fn parse_grace(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" || s.trim() == "0s" || s.trim() == "off" {
        return Ok(Duration::ZERO);
    }
    let d = parse_duration(s)?;
    mutual_pki::ca::check_renew_grace(d)
}

/// The EST configuration from the flags; a bootstrap CA without an identity rule is a usage
/// error (a factory certificate must map to exactly one name).
fn est_config(a: &ServeArgs) -> anyhow::Result<Option<mutual_est::EstConfig>> {
    if !a.est {
        return Ok(None);
    }
    let mut roots = Vec::new();
    for p in &a.est_bootstrap_ca {
        let certs = mutual_tls::load::load_certs(p)?;
        roots.extend(certs);
    }
    if !roots.is_empty() && a.est_identity.is_none() && a.est_label.is_empty() {
        anyhow::bail!(
            "--est-bootstrap-ca needs --est-identity TEMPLATE (or --est-label LABEL=TEMPLATE): \
             the name a factory certificate may enroll for"
        );
    }
    let manual = a.est_approval == "manual";
    if !manual && a.est_retry_after.is_some() {
        anyhow::bail!(
            "--est-retry-after is what a device held for approval is told: it needs \
             --est-approval manual (with auto approval nothing is held)"
        );
    }
    if let Some(p) = &a.est_deny_serial {
        if let Err(e) = std::fs::read_to_string(p) {
            anyhow::bail!("--est-deny-serial {}: {e}", p.display());
        }
    }
    let profile = |identity: Option<mutual_est::IdentityTemplate>| mutual_est::EstProfile {
        identity,
        ttl: a.est_ttl,
        usage: mutual_pki::Usage::Client,
    };
    Ok(Some(mutual_est::EstConfig {
        bootstrap_roots: roots,
        default: profile(a.est_identity.clone()),
        labels: a
            .est_label
            .iter()
            .map(|(l, t)| (l.clone(), profile(Some(t.clone()))))
            .collect(),
        renew_grace: a.renew_grace,
        manual_approval: manual.then_some(a.est_retry_after.unwrap_or(60).max(1)),
        deny_serials: a.est_deny_serial.clone(),
    }))
}

fn parse_rate(s: &str) -> Result<RateSpec, String> {
    s.parse()
}

/// Resolves at the first SIGTERM/SIGINT. The handlers are installed by the caller before the
/// listener is bound: until then SIGTERM would kill the process without a graceful stop.
async fn termination_signal(signals: Option<mutual_proxy::shutdown::TerminationSignals>) {
    match signals {
        Some(mut s) => {
            let sig = s.recv().await;
            tracing::info!("{sig}: stopping");
        }
        None => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

/// Two of this server's own listeners on one port (the same address, or one of them on
/// 0.0.0.0/[::]): said as such, not as "another process listens on that address".
fn listeners_apart(a: &ServeArgs) -> anyhow::Result<()> {
    let given: Vec<(&str, SocketAddr)> = [
        ("--listen", Some(a.listen)),
        ("--ocsp-listen", a.ocsp_listen),
        ("--ui-listen", a.ui_listen),
    ]
    .into_iter()
    .filter_map(|(f, x)| x.map(|x| (f, x)))
    .collect();
    for (i, (f1, x)) in given.iter().enumerate() {
        for (f2, y) in &given[i + 1..] {
            let overlap = x.ip() == y.ip() || x.ip().is_unspecified() || y.ip().is_unspecified();
            if x.port() != 0 && x.port() == y.port() && overlap {
                return Err(crate::errors::user(
                    "usage",
                    format!("{f1} {x} and {f2} {y} are the same port: each needs its own"),
                    "give each listener its own port",
                ));
            }
        }
    }
    Ok(())
}

/// An `--admin spiffe://TD/...` outside the CA's trust domain, or a DNS pattern outside its
/// name constraints, can never match: the CA trusts only certificates it issued, and it
/// issues no such name.
fn admins_can_match(admins: &[String], config: &mutual_pki::ca::CaConfig) -> anyhow::Result<()> {
    for p in admins.iter().filter(|p| !p.starts_with("spiffe://")) {
        let d = p.strip_prefix("dns:").unwrap_or(p).to_ascii_lowercase();
        if mutual_policy::DnsPattern::parse(&d).is_err() {
            continue; // the server's own error to report (admin_rules)
        }
        let possible = match d.rsplit_once("*.") {
            Some((_, suffix)) => config.permits_some_dns_under(suffix),
            None => format!("dns:{d}")
                .parse::<San>()
                .map_or(true, |san| config.check_sans(&[san]).is_ok()),
        };
        if !possible {
            return Err(crate::errors::user(
                "usage",
                format!(
                    "--admin {p} can never match: its names are outside this CA's name \
                     constraints (permitted_dns: {}), and it trusts only the certificates it \
                     issued",
                    config.permitted_dns.join(", ")
                ),
                "name an admin identity this CA may issue",
            ));
        }
    }
    let Some(td) = &config.trust_domain else {
        return Ok(());
    };
    for p in admins.iter().filter(|p| p.starts_with("spiffe://")) {
        // A pattern that does not parse is the server's own error to report (admin_rules).
        let Ok(pattern) = mutual_policy::SpiffePattern::parse(p) else {
            continue;
        };
        if pattern.trust_domain() != td.as_str() {
            return Err(crate::errors::user(
                "usage",
                format!(
                    "--admin {p} can never match: this CA issues SPIFFE IDs in spiffe://{td}/ \
                     only, and trusts only the certificates it issued"
                ),
                format!("name an admin identity in spiffe://{td}/..."),
            ));
        }
    }
    Ok(())
}

/// The SANs of the server's own certificate, checked against the CA's rules before the password
/// is asked for. Without `--san`, the defaults the CA may issue: a CA whose name constraints
/// leave out `localhost` or the host name serves on its IP addresses (and says so) instead of
/// failing to issue its own certificate.
fn own_sans(given: Vec<San>, config: &mutual_pki::ca::CaConfig) -> anyhow::Result<Vec<San>> {
    if !given.is_empty() {
        crate::ca_args::refuse_repeated_sans(&given)?;
        config
            .check_sans(&given)
            .map_err(|e| not_allowed(format!("--san: the server's own certificate: {e}")))?;
        return Ok(given);
    }
    let (sans, left_out): (Vec<San>, Vec<San>) = default_sans()
        .into_iter()
        .partition(|s| config.check_sans(std::slice::from_ref(s)).is_ok());
    if !left_out.is_empty() {
        let names: Vec<String> = left_out.iter().map(San::value).collect();
        eprintln!(
            "note: the server certificate leaves out {} (outside the CA's name constraints); \
             give --san to name the server",
            names.join(", ")
        );
    }
    Ok(sans)
}

/// A name the CA may not issue, given in a setting: exit 2, the CA's label.
fn not_allowed(message: String) -> anyhow::Error {
    crate::errors::user(
        "name_not_allowed",
        message,
        "give names this CA may issue (its trust domain and name constraints: mutual-ca.toml)",
    )
}

/// The settings that would make the server's own certificate, or every EST enrollment, OCSP
/// response or CRL of it, fail: refused at start before the password: identity templates
/// whose every name the CA would refuse, lifetimes the intermediate cannot cover.
fn settings_fit_the_ca(
    a: &ServeArgs,
    dir: &std::path::Path,
    config: &mutual_pki::ca::CaConfig,
) -> anyhow::Result<()> {
    // EST identity templates whose every name the CA would refuse.
    let identity = a.est_identity.iter().map(|t| ("--est-identity", t));
    let labels = a.est_label.iter().map(|(_, t)| ("--est-label", t));
    for (flag, t) in identity.chain(labels) {
        t.check_against(config)
            .map_err(|e| not_allowed(format!("{flag} {e}")))?;
    }
    // Lifetimes no certificate from the intermediate could have: the server's own would fail
    // to issue at start (the message named another command's --ttl), EST's and the OCSP
    // responder's at every request.
    let ocsp = a.ocsp || a.ocsp_listen.is_some();
    let cert = "a certificate";
    let ttls = [
        (true, a.server_cert_ttl, "--server-cert-ttl", cert),
        (a.est, a.est_ttl, "--est-ttl", cert),
        (ocsp, a.ocsp_responder_ttl, "--ocsp-responder-ttl", cert),
        (true, a.crl_next_update, "--crl-next-update", "a CRL"),
    ];
    // The intermediate's end is read once for all of them.
    let ends = crate::ca_args::intermediate_ends(dir, config);
    for (_, ttl, flag, thing) in ttls.iter().filter(|t| t.0) {
        crate::ca_args::refuse_outliving(ends, *ttl, flag, thing)?;
    }
    // An OCSP response never outlives the responder certificate that signs it: a longer
    // --ocsp-next-update would be cut to it without a word.
    if ocsp && a.ocsp_next_update > a.ocsp_responder_ttl {
        return Err(crate::errors::user(
            "usage",
            format!(
                "--ocsp-next-update {} is longer than --ocsp-responder-ttl {}: a response never \
                 outlives the responder certificate that signs it",
                mutual_policy::human::duration(a.ocsp_next_update.as_secs()),
                mutual_policy::human::duration(a.ocsp_responder_ttl.as_secs())
            ),
            "shorten --ocsp-next-update or lengthen --ocsp-responder-ttl",
        ));
    }
    Ok(())
}

pub fn run(mut a: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(&a.log_format);
    listeners_apart(&a)?;
    let dir = a.dir.resolve()?;
    let config = mutual_pki::ca::read_config(&dir)?;
    admins_can_match(&a.admins, &config)?;
    let acme = crate::cmd_acme::serve_config(&a.acme, &dir, &config)?;
    let sans = own_sans(std::mem::take(&mut a.sans), &config)?;
    settings_fit_the_ca(&a, &dir, &config)?;
    let est = est_config(&a)?;
    let server_key = match &a.server_key {
        Some(k) if !mutual_tls::load::is_pkcs11(k) => {
            return Err(crate::errors::user(
                "usage",
                format!("--server-key {}: not a pkcs11: URI", k.display()),
                "name a key in a token: --server-key 'pkcs11:token=LABEL;object=KEY'",
            ))
        }
        Some(k) => Some(mutual_tls::load::token_key(k)?),
        None => None,
    };
    let password = a.password.get_for(
        &dir,
        mutual_pki::ca::KeysUsed {
            issuers: true,
            provisioner: true,
            jwt_svid: true,
            ..Default::default()
        },
    )?;
    let rt = server_runtime(Some(2))?;
    rt.block_on(async move {
        let ca = Ca::open(&dir, password.as_bytes()).await?;
        let provisioner = Provisioner::load_or_create(&dir, password.as_bytes())?;
        let jwt = mutual_ca_server::jwt::JwtKeys::load_or_create(&dir, password.as_bytes())?;
        drop(password);
        let mut opts = ServeOptions::new(
            a.listen,
            sans,
        );
        opts.admins = a.admins;
        opts.rate = a.rate_limit;
        opts.tls12 = a.tls12;
        opts.server_cert_ttl = a.server_cert_ttl;
        opts.jwt = Some(std::sync::Arc::new(jwt));
        opts.jwt_svid_ttl = a.jwt_svid_ttl;
        opts.crl_next_update = a.crl_next_update;
        opts.crl_refresh = a.crl_refresh;
        opts.drain_timeout = a.drain_timeout;
        opts.acme = acme;
        if a.ocsp || a.ocsp_listen.is_some() {
            opts.ocsp = Some(mutual_ca_server::ocsp::OcspConfig {
                validity: a.ocsp_next_update,
                responder_ttl: a.ocsp_responder_ttl,
                listen: a.ocsp_listen,
            });
        }
        opts.ui_listen = a.ui_listen;
        opts.est = est;
        opts.renew_grace = a.renew_grace;
        opts.server_key = server_key;
        let signals = mutual_proxy::shutdown::TerminationSignals::install().ok();
        let server = Server::bind(ca, provisioner, opts).await?;
        let addr = server
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            listen = %addr,
            server_cert_serial = %server.cert_serial(),
            "online CA listening on https://{addr}"
        );
        if let Some(o) = server.ocsp_local_addr() {
            tracing::info!(listen = %o, "OCSP responder listening on http://{o}/ocsp");
        }
        if let Some(ui) = server.ui_local_addr() {
            tracing::info!(ui_listen = %ui, "console (loopback, no client certificate) on http://{ui}/ui/");
        }
        server.run(termination_signal(signals)).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
