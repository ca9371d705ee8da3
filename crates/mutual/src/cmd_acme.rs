//! `mutual acme ...`: operator commands for the ACME front door of `mutual ca serve --acme`
//! (docs/acme.md). For now External Account Binding keys: the operator makes one per client (or
//! team), hands over the key id and HMAC key, and `ca serve --acme-require-eab` admits only
//! accounts bound with such a key (RFC 8555 §7.3.4); lists them, and withdraws one (with the
//! account it admitted) when it leaked or its client is gone.
use std::process::ExitCode;

use mutual_store::AcmeStore;

use crate::ca_args::DirArg;
use crate::runtime::with_store;

#[derive(clap::Subcommand, Debug)]
pub enum AcmeCommand {
    /// External Account Binding keys for `ca serve --acme-require-eab`.
    #[command(subcommand)]
    Eab(EabCommand),
}

#[derive(clap::Subcommand, Debug)]
pub enum EabCommand {
    /// Make a key id and HMAC key, store them in the CA's inventory, print them once.
    ///
    /// The HMAC key is shown only here: give it to the ACME client's operator (certbot
    /// --eab-kid KID --eab-hmac-key KEY; lego --eab --kid KID --hmac KEY). Each key binds exactly
    /// one ACME account, at that account's creation.
    Create(EabCreateArgs),
    /// List the keys: id, label, when made, the account each bound (never the HMAC key).
    List(EabListArgs),
    /// Withdraw a key: it can bind no account any more, and the account it bound, if any, is
    /// deactivated (its requests are refused; certificates it obtained stay valid until
    /// revoked with `mutual cert revoke`).
    Delete(EabDeleteArgs),
}

#[derive(clap::Args, Debug)]
pub struct EabListArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Print an array of {"kid", "label", "created_at(_unix)", "account", "bound_at(_unix)"}
    /// (label null when none was given; account and bound_at null while unused).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct EabDeleteArgs {
    /// The key id `eab create` printed.
    pub kid: String,
    #[command(flatten)]
    pub dir: DirArg,
    /// Print {"kid", "deleted": true, "account"} (the account deactivated, or null). No such
    /// key: {"error": {reason: not_found, message, hint}}, exit 1.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct EabCreateArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// A note on whom the key is for (a client, a team, a ticket), shown by `eab list` so
    /// that the right key is the one withdrawn. Not secret; 1 to 64 printable characters.
    #[arg(long, value_name = "TEXT", value_parser = parse_label)]
    pub label: Option<String>,
    /// Print {"kid", "hmac_key", "label"} as JSON instead of KEY=VALUE lines.
    #[arg(long)]
    pub json: bool,
}

fn parse_label(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control) {
        return Err("a label is 1 to 64 printable characters".into());
    }
    Ok(t.to_string())
}

pub fn run(cmd: AcmeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AcmeCommand::Eab(EabCommand::Create(a)) => eab_create(a),
        AcmeCommand::Eab(EabCommand::List(a)) => eab_list(a),
        AcmeCommand::Eab(EabCommand::Delete(a)) => eab_delete(a),
    }
}

fn eab_list(a: EabListArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    let keys = with_store(&dir, async |store| Ok(store.eab_list().await?))?;
    if a.json {
        let v: Vec<serde_json::Value> = keys.iter().map(crate::json::eab_key).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if keys.is_empty() {
        println!("no EAB keys (make one with `mutual acme eab create`)");
        return Ok(ExitCode::SUCCESS);
    }
    let width = keys
        .iter()
        .filter_map(|k| k.label.as_ref().map(|l| l.chars().count()))
        .max()
        .unwrap_or(1)
        .max("LABEL".len());
    println!(
        "{:<22}  {:<width$}  {:<20}  ACCOUNT",
        "KID", "LABEL", "CREATED"
    );
    for k in &keys {
        let account = match (&k.account_id, k.bound_at) {
            (Some(id), _) if id == WITHDRAWN => "- (withdrawn: run `eab delete` again)".into(),
            (Some(id), Some(at)) => format!("{id} (bound {})", crate::json::rfc3339(at)),
            (Some(id), None) => id.clone(),
            _ => "- (unused)".into(),
        };
        println!(
            "{:<22}  {:<width$}  {:<20}  {account}",
            k.kid,
            k.label.as_deref().unwrap_or("-"),
            crate::json::rfc3339(k.created_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The account id a withdrawn EAB key is bound to: no account has it (ids are random
/// base64url), and a bound key binds nothing more.
const WITHDRAWN: &str = "";

fn eab_delete(a: EabDeleteArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    // First an unused key is bound to no account (`WITHDRAWN`), in the one conditional update
    // a binding makes: a client binding it at this instant either wins (its account is read
    // next and deactivated) or is refused. Then the account, then the key: a failure between
    // steps leaves a key that binds nothing more, and the same command finishes the job.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let found = with_store(&dir, async |store| {
        store.eab_bind(&a.kid, WITHDRAWN, now).await?;
        let Some((_, bound)) = store.eab_get(&a.kid).await? else {
            return Ok(None);
        };
        let account = bound.filter(|id| id != WITHDRAWN);
        if let Some(id) = &account {
            if let Some(acct) = store.account_get(id).await? {
                store
                    .account_update(id, "deactivated", &acct.contact)
                    .await?;
            }
        }
        store.eab_delete(&a.kid).await?;
        Ok(Some(account))
    })?;
    let Some(account) = found else {
        let listing = "mutual acme eab list";
        return Ok(crate::errors::Report::not_found(
            "EAB key", &a.kid, listing, a.json,
        ));
    };
    if a.json {
        let v = serde_json::json!({ "kid": a.kid, "deleted": true, "account": account });
        println!("{v}");
    } else {
        match &account {
            Some(id) => println!(
                "deleted EAB key {}; the account it bound, {id}, is deactivated",
                a.kid
            ),
            None => println!("deleted EAB key {} (it had bound no account)", a.kid),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn eab_create(a: EabCreateArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    let (kid, key) = mutual_acme::eab::new_key();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    with_store(&dir, async |store| {
        Ok(store
            .eab_create(&kid, &key, a.label.as_deref(), now)
            .await?)
    })?;
    if a.json {
        let v = serde_json::json!({ "kid": kid, "hmac_key": key, "label": a.label });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("kid={kid}\nhmac_key={key}");
    }
    eprintln!("the HMAC key is shown only now; it binds one ACME account");
    Ok(ExitCode::SUCCESS)
}

/// The `ca serve` flags of the ACME front door. Each has the same key in the CA config's
/// `[acme]` section (`mutual-ca.toml`, docs/acme.md); a flag given wins over the file, lists
/// given as flags replace the file's.
#[derive(clap::Args, Debug, Default)]
pub struct AcmeArgs {
    /// Serve ACME (RFC 8555, docs/acme.md) at https://HOST:PORT/acme/directory (or `enabled =
    /// true` in [acme]). Needs at least one allowed DNS suffix or IP range: by default ACME
    /// certifies nothing.
    #[arg(long)]
    pub acme: bool,
    /// DNS suffix ACME may certify: the name itself and its subdomains (repeatable).
    #[arg(long = "acme-allow-dns", value_name = "SUFFIX")]
    pub acme_allow_dns: Vec<String>,
    /// IP range ACME may certify, CIDR or one address (repeatable).
    #[arg(long = "acme-allow-ip", value_name = "CIDR")]
    pub acme_allow_ip: Vec<String>,
    /// Lifetime of certificates issued by ACME [default: 24h].
    #[arg(long, value_name = "DURATION")]
    pub acme_ttl: Option<String>,
    /// Usage of certificates issued by ACME: server, or both (server and client auth)
    /// [default: server].
    #[arg(long, value_parser = ["server", "both"])]
    pub acme_usage: Option<String>,
    /// Port the CA connects to for http-01 validation [default: 80].
    #[arg(long, value_name = "PORT")]
    pub acme_http_port: Option<u16>,
    /// Port the CA connects to for tls-alpn-01 validation [default: 443].
    #[arg(long, value_name = "PORT")]
    pub acme_tls_port: Option<u16>,
    /// Resolve NAME to IP for http-01/tls-alpn-01 validation instead of DNS (like curl
    /// --resolve; repeatable).
    #[arg(long = "acme-resolve", value_name = "NAME=IP")]
    pub acme_resolve: Vec<String>,
    /// ACME accounts need an External Account Binding: a key id and HMAC key from
    /// `mutual acme eab create` (clients: certbot --eab-kid/--eab-hmac-key, lego --eab).
    #[arg(long)]
    pub acme_require_eab: bool,
    /// DNS resolver that dns-01 validation asks for TXT records [default: the first nameserver
    /// of /etc/resolv.conf].
    #[arg(long, value_name = "IP:PORT")]
    pub acme_dns_resolver: Option<String>,
    /// Orders one ACME account may create per hour (all replicas together); 0: no limit.
    /// Beyond it newOrder answers rateLimited with a Retry-After [default: 300].
    #[arg(long, value_name = "N")]
    pub acme_orders_per_hour: Option<u32>,
    /// Validation attempts (1 s apart) before a challenge is invalid [default: 3].
    #[arg(long, value_name = "N")]
    pub acme_attempts: Option<u32>,
}

/// The `[acme]` section of `mutual-ca.toml`: the same settings as the flags.
#[derive(serde::Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct AcmeSection {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    allow_dns: Vec<String>,
    #[serde(default)]
    allow_ip: Vec<String>,
    ttl: Option<String>,
    usage: Option<String>,
    http_port: Option<u16>,
    tls_port: Option<u16>,
    #[serde(default)]
    resolve: Vec<String>,
    #[serde(default)]
    require_eab: bool,
    dns_resolver: Option<String>,
    orders_per_hour: Option<u32>,
    attempts: Option<u32>,
}

/// The `[acme]` section of the CA config `ca serve` has already read (`CaConfig::acme`).
fn section(dir: &std::path::Path, ca: &mutual_pki::ca::CaConfig) -> anyhow::Result<AcmeSection> {
    match &ca.acme {
        None => Ok(AcmeSection::default()),
        Some(t) => t.clone().try_into().map_err(|e| {
            let path = dir.join(mutual_pki::ca::CONFIG);
            anyhow::anyhow!("{}: [acme]: {e}", path.display())
        }),
    }
}

fn list<'a>(flag: &'a [String], file: &'a [String]) -> &'a [String] {
    if flag.is_empty() {
        file
    } else {
        flag
    }
}

fn parse_resolve(s: &str) -> anyhow::Result<(String, std::net::IpAddr)> {
    let (n, ip) = s
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("acme resolve {s:?}: expected NAME=IP"))?;
    let ip = ip
        .parse()
        .map_err(|_| anyhow::anyhow!("acme resolve {s:?}: {ip:?} is not an IP address"))?;
    // The name a validation connects to: a host name as an identifier names it (a wildcard is
    // validated by dns-01 only, which asks the resolver, never this table).
    let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
    match format!("dns:{n}").parse::<mutual_pki::San>() {
        Ok(_) if !n.starts_with("*.") => Ok((n, ip)),
        Ok(_) => anyhow::bail!(
            "acme resolve {s:?}: a wildcard is validated by dns-01 only; name the host, e.g. \
             {}=IP",
            &n[2..]
        ),
        Err(e) => anyhow::bail!("acme resolve {s:?}: {e}"),
    }
}

/// `--acme-resolve` entries as a table; one name given two addresses is refused (the last
/// silently won).
fn resolve_table(
    entries: &[String],
) -> anyhow::Result<std::collections::HashMap<String, std::net::IpAddr>> {
    let mut table = std::collections::HashMap::new();
    for e in entries {
        let (name, ip) = parse_resolve(e)?;
        if let Some(first) = table.insert(name.clone(), ip).filter(|f| *f != ip) {
            anyhow::bail!("acme resolve: {name} is given two addresses, {first} and {ip}");
        }
    }
    Ok(table)
}

/// The ACME configuration of `ca serve`: flags over the `[acme]` section over the defaults.
/// ACME settings without ACME enabled, or ACME without anything to certify, are usage errors.
pub fn serve_config(
    a: &AcmeArgs,
    dir: &std::path::Path,
    ca: &mutual_pki::ca::CaConfig,
) -> anyhow::Result<Option<mutual_acme::AcmeConfig>> {
    let f = section(dir, ca)?;
    if !(a.acme || f.enabled) {
        // Every field but `acme` (false here) at its default: no ACME setting was given.
        if format!("{a:?}") != format!("{:?}", AcmeArgs::default()) {
            anyhow::bail!("--acme-* settings need --acme (or enabled = true in [acme])");
        }
        return Ok(None);
    }
    let allow_dns = list(&a.acme_allow_dns, &f.allow_dns);
    let allow_ip = list(&a.acme_allow_ip, &f.allow_ip);
    if allow_dns.is_empty() && allow_ip.is_empty() {
        anyhow::bail!(
            "--acme needs at least one --acme-allow-dns SUFFIX or --acme-allow-ip CIDR \
             (allow_dns / allow_ip in [acme]): by default ACME certifies nothing"
        );
    }
    // A suffix is a DNS name (`.example.com` and `example.com.` read as example.com): one that
    // is not (`*.example.com`, `10.0.0.0/8`, a typo) would silently match no identifier.
    let dns_suffixes = allow_dns
        .iter()
        .map(|s| {
            let suffix = s.trim_matches('.').to_ascii_lowercase();
            let valid =
                !suffix.contains('*') && format!("dns:{suffix}").parse::<mutual_pki::San>().is_ok();
            if !valid {
                anyhow::bail!(
                    "acme allow-dns {s:?}: not a DNS name (a suffix such as example.com allows \
                     it and every name under it; addresses go in --acme-allow-ip)"
                );
            }
            Ok(suffix)
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    // A suffix with no name inside the CA's name constraints: every order for it would be
    // refused, so the setting is a mistake (a typo, or the wrong CA directory).
    if let Some(s) = dns_suffixes.iter().find(|s| !ca.permits_some_dns_under(s)) {
        anyhow::bail!(
            "acme allow-dns {s:?}: no name under it is inside the CA's name constraints \
             (permitted_dns: {}), so ACME could never issue for it",
            ca.permitted_dns.join(", ")
        );
    }
    let ip_ranges = allow_ip
        .iter()
        .map(|s| mutual_acme::parse_cidr(s).map_err(|e| anyhow::anyhow!("acme allow-ip {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ttl = a.acme_ttl.clone().or(f.ttl).unwrap_or_else(|| "24h".into());
    let ttl = crate::ca_args::parse_duration(&ttl)
        .map_err(|e| anyhow::anyhow!("acme ttl {ttl:?}: {e}"))?;
    // Every finalize would be refused, after the client had proved control of its names.
    crate::ca_args::refuse_outliving_intermediate(dir, ca, ttl, "--acme-ttl", "a certificate")?;
    let usage = match a.acme_usage.as_deref().or(f.usage.as_deref()) {
        None | Some("server") => mutual_pki::Usage::Server,
        Some("both") => mutual_pki::Usage::Both,
        Some(u) => anyhow::bail!("acme usage {u:?}: expected server or both"),
    };
    let resolve = resolve_table(list(&a.acme_resolve, &f.resolve))?;
    let dns_resolver = match a.acme_dns_resolver.as_ref().or(f.dns_resolver.as_ref()) {
        None => None,
        Some(r) => Some(r.parse().map_err(|_| {
            anyhow::anyhow!("acme dns resolver {r:?}: expected IP:PORT, e.g. 10.0.0.2:53")
        })?),
    };
    // Zero would be accepted and mean nothing useful: no port to connect to, no attempt made.
    let http_port = a.acme_http_port.or(f.http_port).unwrap_or(80);
    let tls_port = a.acme_tls_port.or(f.tls_port).unwrap_or(443);
    let attempts = a.acme_attempts.or(f.attempts).unwrap_or(3);
    for (name, v) in [
        ("http port", u32::from(http_port)),
        ("tls port", u32::from(tls_port)),
        ("attempts", attempts),
    ] {
        if v == 0 {
            anyhow::bail!("acme {name} 0: must be at least 1");
        }
    }
    let validation = mutual_acme::ValidationConfig {
        http_port,
        tls_port,
        resolve,
        attempts,
        dns_resolver,
        ..Default::default()
    };
    Ok(Some(mutual_acme::AcmeConfig {
        policy: mutual_acme::AcmePolicy {
            dns_suffixes,
            ip_ranges,
            usage,
            ttl,
        },
        validation,
        require_eab: a.acme_require_eab || f.require_eab,
        orders_per_hour: a.acme_orders_per_hour.or(f.orders_per_hour).unwrap_or(300),
    }))
}
