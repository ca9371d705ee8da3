//! `mutual cert verify` (owned by the TLS work): full path validation with a reason label.
//!
//! It calls `mutual_tls::verify_chain`, the same validator the proxy's client-certificate check
//! and `mutual connect`'s server check use, so "verify says ok" means "the proxy would accept
//! this chain" (before authorization policy).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mutual_tls::{load, verify_chain, PeerName, Purpose, Reason, RevocationPolicy, VerifyRequest};
use rustls_pki_types::UnixTime;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurposeArg {
    /// TLS server certificate (serverAuth, if the certificate has an EKU).
    Server,
    /// TLS client certificate (clientAuth, if the certificate has an EKU).
    Client,
    /// Do not check extended key usage.
    Any,
}

/// Exit 0 when the chain is valid, 1 when it is not (the reason label, one sentence and a hint
/// are printed; a readable but malformed certificate is `malformed`), 2 when an input file is
/// missing or not PEM/DER at all.
/// `--profile` as the commands that check a chain they are given take it (`cert verify`,
/// `probe`); a proxy listener's is one of its options.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ProfileArg {
    /// `compatible` (default): webpki's path validation. `strict`: that, then every
    /// certificate of the built path (root included) and every CRL must pass the RFC 5280 /
    /// CA/B Forum rules of `mutual cert lint` (docs/lint.md); a violation is `malformed`.
    #[arg(
        long,
        value_enum,
        default_value_t,
        hide_possible_values = true,
        value_name = "PROFILE"
    )]
    pub profile: mutual_tls::Profile,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The certificate to verify (PEM or DER). Further certificates in the file are used as
    /// intermediates.
    pub leaf: PathBuf,
    /// Trusted root certificates (PEM bundle).
    #[arg(long, value_name = "FILE")]
    pub roots: PathBuf,
    /// Extra intermediate certificates (PEM bundle).
    #[arg(long, value_name = "FILE")]
    pub intermediates: Option<PathBuf>,
    /// Name the certificate must carry: a DNS name, an IP address, `dns:`/`ip:` prefixed, or a
    /// URI (`uri:...` or a bare `spiffe://...`, matched exactly against the URI SANs).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Validate at this time (RFC 3339, e.g. 2026-01-01T00:00:00Z) instead of now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// CRL file (PEM or DER). Repeatable. With CRLs, every certificate in the chain needs a
    /// current CRL from its issuer, as in `mutual serve --crl`.
    #[arg(long = "crl", value_name = "FILE")]
    pub crls: Vec<PathBuf>,
    /// Check revocation for the leaf only (intermediates need no CRL). Needs --crl.
    #[arg(long, requires = "crls")]
    pub crl_leaf_only: bool,
    /// What the certificate must be good for. Default: server when --name is given, else any.
    #[arg(long, value_enum)]
    pub purpose: Option<PurposeArg>,
    /// Most intermediates a path may have (default: webpki's own limit).
    #[arg(long, value_name = "N")]
    pub max_intermediates: Option<usize>,
    #[command(flatten)]
    pub profile: ProfileArg,
    /// Print one JSON object: {"valid", "reason", "detail", "hint", "chain"}.
    #[arg(long)]
    pub json: bool,
}

fn parse_at(s: &str) -> anyhow::Result<UnixTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--at {s:?} is not an RFC 3339 time (2026-01-01T00:00:00Z)"))?;
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| anyhow::anyhow!("--at {s:?} is before 1970"))?;
    Ok(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        secs,
    )))
}

/// The hint for a verdict, naming this command's flags (`--roots`, `--name`, `--purpose`,
/// `--crl`, `--at`), not the proxy's (`--ca`, `--server-name`).
fn verify_hint(
    args: &VerifyArgs,
    outcome: &mutual_tls::VerifyOutcome,
    given_intermediates: bool,
) -> String {
    let leaf_is_client = outcome.chain.first().is_some_and(|c| c.role == "leaf")
        && std::fs::read(&args.leaf)
            .ok()
            .and_then(|b| mutual_pki::inspect::inspect_pem_or_der(&b).ok())
            .and_then(|v| v.into_iter().next())
            .is_some_and(|c| {
                c.extended_key_usage.iter().any(|e| e == "clientAuth")
                    && !c.extended_key_usage.iter().any(|e| e == "serverAuth")
            });
    match outcome.reason {
        Reason::UnknownCa if !given_intermediates => "The file holds the leaf alone: add the \
            intermediate (the chain file must hold leaf + intermediate, or pass --intermediates \
            FILE), and give the issuing root with --roots."
            .into(),
        Reason::UnknownCa => "Give the root that issued this chain with --roots, and check that \
            the chain file holds leaf + intermediate in that order (mutual cert inspect FILE)."
            .into(),
        Reason::WrongPurpose if args.purpose.is_none() && leaf_is_client => "This is a client \
            certificate and --name makes the check default to --purpose server: add --purpose \
            client."
            .into(),
        Reason::WrongPurpose => "Check with the purpose the certificate was issued for \
            (--purpose server, client or any), or reissue it with the right usage (mutual cert \
            issue --client, --server or --both)."
            .into(),
        Reason::NameMismatch => "Check with a name the certificate carries (--name; see the \
            detail), or reissue it with the right SAN (mutual cert issue --san)."
            .into(),
        Reason::Expired => "Renew the certificate (mutual cert issue / mutual renew), check the \
            clock, or check it as of another time with --at."
            .into(),
        Reason::NotYetValid => "Check the clock, or check it as of a later time with --at.".into(),
        Reason::RevocationUnknown => "Give a current CRL for every issuer in the chain with \
            --crl, or check the leaf alone with --crl-leaf-only."
            .into(),
        Reason::BadSignature => "The chain mixes certificates from different CAs or was altered: \
            rebuild the chain file, and check --roots."
            .into(),
        Reason::Malformed if outcome.detail.starts_with("strict profile:") => "A certificate or \
            CRL of the path breaks an RFC 5280 / CA/B Forum rule (see the detail): list every \
            violation with mutual cert lint FILE, or check with --profile compatible."
            .into(),
        Reason::Malformed => "A certificate in the chain does not parse: look at the files \
            with mutual cert inspect FILE."
            .into(),
        Reason::Other => "See the detail above.".into(),
        r => r.hint().to_string(),
    }
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut certs = load::load_certs(&args.leaf)?;
    let leaf = certs.remove(0);
    // Only input that is not a certificate at all is a usage error; a readable certificate that
    // is malformed (trailing data, v1, a duplicate or unknown critical extension, ...) gets a
    // verdict like any other invalid certificate.
    load::check_certificate_shape(&args.leaf, &leaf)?;
    let mut intermediates = certs;
    let given_intermediates = !intermediates.is_empty() || args.intermediates.is_some();
    if let Some(path) = &args.intermediates {
        intermediates.extend(load::load_certs(path)?);
    }
    let roots = load::load_certs(&args.roots)?;
    let crls = load::load_crls(&args.crls)?;
    let name = args.name.as_deref().map(PeerName::parse).transpose()?;
    let at = args.at.as_deref().map(parse_at).transpose()?;
    let purpose = match args.purpose {
        Some(PurposeArg::Server) => Purpose::Server,
        Some(PurposeArg::Client) => Purpose::Client,
        Some(PurposeArg::Any) => Purpose::Any,
        None if name.is_some() => Purpose::Server,
        None => Purpose::Any,
    };
    let outcome = verify_chain(&VerifyRequest {
        leaf,
        intermediates,
        roots,
        crls,
        revocation: RevocationPolicy {
            leaf_only: args.crl_leaf_only,
            ..RevocationPolicy::default()
        },
        purpose,
        name,
        at,
        max_intermediates: args.max_intermediates,
        profile: args.profile.profile,
    });
    let hint = verify_hint(&args, &outcome, given_intermediates);
    if args.json {
        let v = serde_json::json!({
            "valid": outcome.valid,
            "reason": outcome.reason,
            "detail": outcome.detail,
            "hint": hint,
            "chain": outcome.chain,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if outcome.valid {
        println!("ok: {}", outcome.detail);
        for c in &outcome.chain {
            println!(
                "  {:<12} {}  (serial {}, until {})",
                c.role, c.subject, c.serial, c.not_after
            );
        }
    } else {
        println!("invalid: {}", outcome.reason);
        println!("  {}", outcome.reason.explanation());
        println!("  detail: {}", outcome.detail);
        println!("  hint: {hint}");
    }
    Ok(if outcome.reason == Reason::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
