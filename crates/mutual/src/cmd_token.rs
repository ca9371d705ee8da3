//! `mutual token create`: mints a one-time enrollment token for the online CA
//! (`mutual ca serve`). The token is a JWT signed by the CA's provisioner key; it names exactly
//! the SANs, certificate lifetime and usage that `POST /v1/sign` may issue, once.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mutual_ca_server::{Claims, Provisioner};
use mutual_pki::{San, Usage};

use crate::ca_args::{parse_duration, DirArg, PasswordArg};

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a one-time token for `POST /v1/sign` (the JWT alone on stdout, unless --json).
    ///
    /// The token carries the SANs it may be used for (a CSR may ask for any subset), the
    /// certificate lifetime and usage. It is spent by its first successful use; keep it secret
    /// until then (it is a bearer credential).
    Create(CreateArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Name the token allows (repeatable; the first one is its subject): dns:NAME, ip:ADDR,
    /// uri:spiffe://TRUST-DOMAIN/PATH.
    #[arg(long = "san", value_name = "TYPE:VALUE", required = true, value_parser = parse_san)]
    pub sans: Vec<San>,
    /// Lifetime of the certificate issued with the token.
    #[arg(long, default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
    pub ttl_cert: Duration,
    /// How long the token itself may be used (at most 30d).
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub expires: Duration,
    /// Usage of the certificate: server, client or both.
    #[arg(long, default_value = "both", value_parser = parse_usage)]
    pub usage: Usage,
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub password: PasswordArg,
    /// Print {"token", "jti", "expires_at", "sans", "ttl", "usage"} as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_san(s: &str) -> Result<San, String> {
    s.parse().map_err(|e: mutual_pki::PkiError| e.to_string())
}

fn parse_usage(s: &str) -> Result<Usage, String> {
    mutual_ca_server::token::parse_usage(s)
        .ok_or_else(|| format!("unknown usage {s:?} (expected server, client or both)"))
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create(a) => create(a),
    }
}

fn create(a: CreateArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    if !dir.join(mutual_pki::ca::CONFIG).exists() {
        anyhow::bail!(
            "no CA in {} (run `mutual ca init --dir {}` first)",
            dir.display(),
            dir.display()
        );
    }
    // X509-SVIDs carry serverAuth + clientAuth with only a SPIFFE ID: that is enough.
    if matches!(a.usage, Usage::Server | Usage::Both) && !a.sans.iter().any(San::names_a_server) {
        anyhow::bail!(
            "a {} certificate needs a dns: or ip: SAN, or a SPIFFE ID (uri:spiffe://...); add one, or use --usage client",
            a.usage
        );
    }
    if a.expires > Duration::from_secs(30 * 86_400) {
        anyhow::bail!("--expires is at most 30d: a token is a bearer credential");
    }
    crate::ca_args::refuse_repeated_sans(&a.sans)?;
    // A token the CA would refuse to honour (a name outside its trust domain or name
    // constraints, a wildcard on a public suffix) is refused now, not at the device's
    // enrollment; before the password is asked for.
    let config = mutual_pki::ca::read_config(&dir)?;
    config.check_sans(&a.sans)?;
    crate::ca_args::refuse_outliving_intermediate(
        &dir,
        &config,
        a.ttl_cert,
        "--ttl-cert",
        "a certificate",
    )?;
    let password = a
        .password
        .get_for(&dir, mutual_pki::ca::KeysUsed::PROVISIONER)?;
    let prov = Provisioner::load_or_create(&dir, password.as_bytes())?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expires = i64::try_from(a.expires.as_secs()).context("--expires is too large")?;
    let claims = Claims::new(&a.sans, a.ttl_cert.as_secs(), a.usage, now, expires)?;
    let token = prov.sign(&claims)?;
    if a.json {
        let v = serde_json::json!({
            "token": token,
            "jti": claims.jti,
            "expires_at": crate::json::rfc3339(claims.exp),
            "expires_at_unix": claims.exp,
            "sans": claims.sans,
            "ttl": claims.ttl,
            "usage": claims.usage,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{token}");
    }
    Ok(ExitCode::SUCCESS)
}
