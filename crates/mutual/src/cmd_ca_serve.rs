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
#[command(after_help = "\
Endpoints (HTTPS, JSON; docs/ca-server.md): GET /health, GET /v1/roots, GET /v1/crl,
POST /v1/sign (one-time token from `mutual token create` + CSR), POST /v1/renew (mTLS with the
current certificate), POST /v1/revoke (mTLS, admin or the certificate itself), GET /metrics
(Prometheus). With --acme: ACME at /acme/directory (docs/acme.md). The web console at /ui/
(an --admin client certificate, or --ui-listen on loopback; docs/console.md).

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
    /// ip:::1 and the host name].
    #[arg(long = "san", value_name = "TYPE:VALUE", value_parser = parse_san)]
    pub sans: Vec<San>,
    /// Requests per peer IP: N/s or N/m (burst twice that), or `off`. /health is not limited.
    #[arg(long, default_value = "10/s", value_parser = parse_rate, value_name = "RATE")]
    pub rate_limit: RateSpec,
    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    #[arg(long)]
    pub tls12: bool,
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
    /// Serve ACME (RFC 8555, docs/acme.md) at https://HOST:PORT/acme/directory. Needs at least
    /// one --acme-allow-dns or --acme-allow-ip: by default ACME certifies nothing.
    #[arg(long)]
    pub acme: bool,
    /// DNS suffix ACME may certify: the name itself and its subdomains (repeatable).
    #[arg(long = "acme-allow-dns", value_name = "SUFFIX", requires = "acme")]
    pub acme_allow_dns: Vec<String>,
    /// IP range ACME may certify, CIDR or one address (repeatable).
    #[arg(long = "acme-allow-ip", value_name = "CIDR", requires = "acme", value_parser = mutual_acme::parse_cidr)]
    pub acme_allow_ip: Vec<(std::net::IpAddr, u8)>,
    /// Lifetime of certificates issued by ACME.
    #[arg(long, default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
    pub acme_ttl: Duration,
    /// Usage of certificates issued by ACME: server, or both (server and client auth).
    #[arg(long, default_value = "server", value_parser = ["server", "both"])]
    pub acme_usage: String,
    /// Port the CA connects to for http-01 validation.
    #[arg(long, default_value_t = 80, value_name = "PORT")]
    pub acme_http_port: u16,
    /// Port the CA connects to for tls-alpn-01 validation.
    #[arg(long, default_value_t = 443, value_name = "PORT")]
    pub acme_tls_port: u16,
    /// Resolve NAME to IP for validation instead of DNS (like curl --resolve; repeatable).
    #[arg(long = "acme-resolve", value_name = "NAME=IP", value_parser = parse_resolve)]
    pub acme_resolve: Vec<(String, std::net::IpAddr)>,
    /// Validation attempts before a challenge is invalid.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub acme_attempts: u32,
    /// Also serve the web console (only) over plain HTTP on this loopback address, without
    /// client certificates: for an operator on the CA's machine or through an SSH tunnel
    /// (docs/console.md). On the main listener the console at /ui/ needs an --admin certificate.
    #[arg(long, value_name = "127.0.0.1:PORT", value_parser = parse_ui_listen)]
    pub ui_listen: Option<SocketAddr>,
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
            "{a} is not a loopback address: the console without client certificates listens              on 127.0.0.1 or [::1] only (use the main listener with --admin for remote access)"
        ));
    }
    Ok(a)
}

fn parse_san(s: &str) -> Result<San, String> {
    s.parse().map_err(|e: mutual_pki::PkiError| e.to_string())
}

fn parse_resolve(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let (n, ip) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=IP"))?;
    let ip = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    Ok((n.trim().to_ascii_lowercase(), ip))
}

/// The ACME configuration from the flags; `--acme` without anything to certify is a usage error.
fn acme_config(a: &ServeArgs) -> anyhow::Result<Option<mutual_acme::AcmeConfig>> {
    if !a.acme {
        return Ok(None);
    }
    if a.acme_allow_dns.is_empty() && a.acme_allow_ip.is_empty() {
        anyhow::bail!(
            "--acme needs at least one --acme-allow-dns SUFFIX or --acme-allow-ip CIDR: \
             by default ACME certifies nothing"
        );
    }
    let validation = mutual_acme::ValidationConfig {
        http_port: a.acme_http_port,
        tls_port: a.acme_tls_port,
        resolve: a.acme_resolve.iter().cloned().collect(),
        attempts: a.acme_attempts.max(1),
        ..Default::default()
    };
    Ok(Some(mutual_acme::AcmeConfig {
        policy: mutual_acme::AcmePolicy {
            dns_suffixes: a
                .acme_allow_dns
                .iter()
                .map(|s| s.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            ip_ranges: a.acme_allow_ip.clone(),
            usage: if a.acme_usage == "both" {
                mutual_pki::Usage::Both
            } else {
                mutual_pki::Usage::Server
            },
            ttl: a.acme_ttl,
        },
        validation,
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

pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(&a.log_format);
    let dir = a.dir.resolve()?;
    let acme = acme_config(&a)?;
    let password = a.password.get(false)?;
    let rt = server_runtime(Some(2))?;
    rt.block_on(async move {
        let ca = Ca::open(&dir, password.as_bytes()).await?;
        let provisioner = Provisioner::load_or_create(&dir, password.as_bytes())?;
        drop(password);
        let mut opts = ServeOptions::new(
            a.listen,
            if a.sans.is_empty() {
                default_sans()
            } else {
                a.sans
            },
        );
        opts.admins = a.admins;
        opts.rate = a.rate_limit;
        opts.tls12 = a.tls12;
        opts.server_cert_ttl = a.server_cert_ttl;
        opts.crl_next_update = a.crl_next_update;
        opts.crl_refresh = a.crl_refresh;
        opts.drain_timeout = a.drain_timeout;
        opts.acme = acme;
        opts.ui_listen = a.ui_listen;
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
        if let Some(ui) = server.ui_local_addr() {
            tracing::info!(ui_listen = %ui, "console (loopback, no client certificate) on http://{ui}/ui/");
        }
        server.run(termination_signal(signals)).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
