//! The EST (RFC 7030) device side of `mutual enroll --est` and `mutual renew --est`
//! (docs/est.md): the flags `cmd_enroll.rs` flattens in and the options they make
//! ([`enroll_options`], also `mutual agent --est`'s); the runs, their reports and the `--exec`
//! hook are cmd_enroll's, shared with the native protocol. Also `mutual cert
//! pending|approve|reject`. The work is in mutual-enroll's `est` module and mutual-store.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mutual_enroll::est::{EstAuth, EstEnrollOptions, EstTrust};
use mutual_enroll::{CaUrl, Fingerprint};

use crate::ca_args::key_type;
use crate::runtime::with_store;

/// `mutual enroll --est ...` flags (and `mutual agent --est`'s).
///
/// Each flag that `requires = "est"` also says `conflicts_with = "ca_url"`: clap waives a
/// requirement whose target conflicts with a present argument (clap-rs/clap#4520), so without
/// it `--ca-url ... --est-ca F` would pass and silently ignore `--est-ca`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct EstEnrollFlags {
    /// Enroll over EST (RFC 7030) from this CA, https://HOST[:PORT], instead of --ca-url:
    /// with a factory certificate (--bootstrap-cert/--bootstrap-key) or --token as the HTTP Basic
    /// password. Trust the CA with --root-sha256 (checked against its cacerts) or --ca.
    #[arg(long, value_name = "URL", conflicts_with = "ca_url")]
    pub est: Option<String>,
    /// The factory (bootstrap) certificate the device authenticates simpleenroll with (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["est", "bootstrap_key"], conflicts_with = "ca_url")]
    pub bootstrap_cert: Option<PathBuf>,
    /// The factory certificate's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "bootstrap_cert",
        conflicts_with = "ca_url"
    )]
    pub bootstrap_key: Option<PathBuf>,
    /// The CA root to trust (PEM), instead of pinning it with --root-sha256.
    #[arg(
        long = "est-ca",
        value_name = "FILE",
        requires = "est",
        conflicts_with = "ca_url"
    )]
    pub est_ca: Option<PathBuf>,
    /// The EST label (/.well-known/est/LABEL/...) to enroll under.
    #[arg(
        long,
        value_name = "LABEL",
        requires = "est",
        conflicts_with = "ca_url"
    )]
    pub est_label: Option<String>,
    /// When the CA holds the request for manual approval (202), keep polling with the same CSR
    /// at its Retry-After for up to this long [default: 0s, report `pending` and exit 1].
    #[arg(long, value_name = "DURATION", requires = "est", conflicts_with = "ca_url",
        value_parser = crate::ca_args::parse_duration)]
    pub est_wait: Option<Duration>,
    /// Ask the CA to generate the key (EST serverkeygen) instead of generating it here: for a
    /// device without a good random source. The CA sees the key (docs/est.md); it keeps none.
    #[arg(long, requires = "est", conflicts_with = "ca_url")]
    pub server_keygen: bool,
}

/// `mutual renew --est ...` flags.
#[derive(clap::Args, Debug, Default)]
pub struct EstRenewFlags {
    /// Re-enroll over EST (simplereenroll, a new key every time) from this CA instead of
    /// --ca-url. With --daemon: at two-thirds of each lifetime.
    #[arg(long, value_name = "URL", conflicts_with = "ca_url")]
    pub est: Option<String>,
    /// The EST label (/.well-known/est/LABEL/...) to re-enroll under.
    #[arg(
        long,
        value_name = "LABEL",
        requires = "est",
        conflicts_with = "ca_url"
    )]
    pub est_label: Option<String>,
}

/// What `--est URL` and its flags ask for, enrolling into DIR `out` (`mutual enroll --est`, and
/// `mutual agent --est` for its node certificate).
pub(crate) fn enroll_options(
    url: &str,
    flags: &EstEnrollFlags,
    token: Option<&str>,
    root_sha256: Option<&str>,
    out: PathBuf,
    key_type_s: &str,
) -> anyhow::Result<EstEnrollOptions> {
    let url = CaUrl::parse(url)?;
    let trust = match (&flags.est_ca, root_sha256) {
        (Some(p), None) => EstTrust::File(p.clone()),
        (None, Some(pin)) => EstTrust::Pin(pin.parse::<Fingerprint>()?),
        _ => anyhow::bail!(
            "--est needs exactly one of --root-sha256 FINGERPRINT or --est-ca ROOT.pem"
        ),
    };
    let auth = match (&flags.bootstrap_cert, &flags.bootstrap_key, token) {
        (Some(c), Some(k), None) => EstAuth::Bootstrap {
            cert: c.clone(),
            key: k.clone(),
        },
        (None, None, Some(t)) if !t.trim().is_empty() => EstAuth::Token(t.trim().to_string()),
        _ => anyhow::bail!(
            "--est needs either --bootstrap-cert and --bootstrap-key (a factory certificate) or --token"
        ),
    };
    Ok(EstEnrollOptions {
        url,
        label: flags.est_label.clone(),
        trust,
        auth,
        key_type: key_type(key_type_s)?,
        out,
        wait: flags.est_wait.unwrap_or(Duration::ZERO),
        server_keygen: flags.server_keygen,
    })
}

/// `mutual cert pending`.
#[derive(clap::Args, Debug)]
pub struct PendingArgs {
    #[command(flatten)]
    pub dir: crate::ca_args::DirArg,
    /// All held EST requests (approved, rejected, issued too), not only the pending ones.
    #[arg(long)]
    pub all: bool,
    /// JSON array instead of a table: id, label, status, names, requested_by,
    /// created_at(_unix), decided_at(_unix), decided_by, serial (once issued).
    #[arg(long)]
    pub json: bool,
}

/// `mutual cert approve|reject`.
#[derive(clap::Args, Debug)]
pub struct DecideArgs {
    /// The request id `mutual cert pending` shows.
    pub id: String,
    #[command(flatten)]
    pub dir: crate::ca_args::DirArg,
    /// Print the request as decided, one JSON object in `cert pending --json`'s form. A request
    /// that is not pending, or not there, is {"error": {reason (not_pending|not_found), message,
    /// hint}}, exit 1.
    #[arg(long)]
    pub json: bool,
}

/// Lists EST requests held for manual approval (`ca serve --est-approval manual`).
pub fn pending(a: PendingArgs) -> anyhow::Result<ExitCode> {
    use mutual_store::EstStore;
    let dir = a.dir.resolve()?;
    let pending = (!a.all).then_some("pending");
    let list = with_store(&dir, async |store| {
        Ok(store.est_request_list(pending).await?)
    })?;
    if a.json {
        let rows: Vec<_> = list.iter().map(crate::json::est_request).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no EST requests {}", if a.all { "held" } else { "pending" });
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<8}  {:<20}  {:<28}  NAMES",
        "ID", "STATUS", "REQUESTED", "BY"
    );
    for r in &list {
        let names: Vec<String> = serde_json::from_str(&r.names).unwrap_or_default();
        println!(
            "{:<16}  {:<8}  {:<20}  {:<28}  {}",
            r.id,
            r.status,
            mutual_tls::verify::rfc3339(r.created_at),
            r.requested_by,
            names.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Approves (`approve`) or rejects a pending EST request; exit 1 when it is not pending.
pub fn decide(a: DecideArgs, approve: bool) -> anyhow::Result<ExitCode> {
    use mutual_store::{EstMove, EstStore};
    let dir = a.dir.resolve()?;
    let to = if approve { "approved" } else { "rejected" };
    let by = crate::whoami::actor();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (moved, current) = with_store(&dir, async |store| {
        let moved = store
            .est_request_move(&EstMove::decide(&a.id, to, &by, now))
            .await?;
        Ok((moved, store.est_request_get(&a.id).await?))
    })?;
    let refused = |reason: &'static str, message: String| {
        let hint = "see `mutual cert pending --all`; a request is decided once";
        Ok(crate::errors::Report::refuse(reason, message, hint, a.json))
    };
    match (moved, current) {
        (true, Some(r)) if a.json => {
            let v = crate::json::est_request(&r);
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        (true, _) => {
            println!(
                "{to} EST request {}{}",
                a.id,
                if approve {
                    "; the device gets its certificate at its next poll"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        (false, Some(r)) => refused(
            "not_pending",
            format!("EST request {} is {}, not pending", a.id, r.status),
        ),
        (false, None) => refused("not_found", format!("no EST request {}", a.id)),
    }
}
