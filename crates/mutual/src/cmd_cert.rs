//! `mutual cert ...`: issue, list, revoke, inspect (the PKI work) and verify (the TLS work, in
//! cmd_verify.rs).
//!
//! `issue` is crash-safe (a `kill -9` at any instant leaves nothing a re-run cannot finish):
//! it holds a lock on the output directory and hands the rest to the library's issuance
//! transaction (`Ca::issue` with output files and a journal, `.NAME.mutual-issue`; see
//! crates/mutual-pki/src/ca/issue.rs). A re-run that finds a journal undoes the interrupted run
//! first (`recover_interrupted`): it removes the files that run created and its stale
//! `.mutual-tmp-*` files, and revokes its serial (reason superseded) if the row was recorded, so
//! no signed certificate escapes the inventory and no orphan key blocks the re-run.
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mutual_pki::ca::{Ca, Csr, IssueOptions, IssueRequest, KeySource, OutputFiles};
use mutual_pki::{KeyType, ListFilter, RevocationReason, RevokeOutcome, San, Status, Usage};
use mutual_store::SanMatch;

use crate::ca_args::{parse_duration, parse_key_type, DirArg, PasswordArg};
use crate::runtime::{runtime, with_store};

#[derive(clap::Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a certificate: writes NAME.key (0600), NAME.pem (leaf + intermediate) and records
    /// it in the inventory. Default usage is --client unless --server or --both is given. With
    /// --batch PATH (a directory of CSRs or a CSV), thousands at once, resumable.
    Issue(Box<IssueArgs>),
    /// List the inventory (soonest expiry first).
    List(ListArgs),
    /// Revoke a certificate (then publish a new CRL with `mutual ca crl`).
    Revoke(RevokeArgs),
    /// Show what is in a certificate file (PEM chain or DER; `-` for stdin) and warn about
    /// common problems. Exit 0 whatever it finds; 2 when the input is not a certificate.
    Inspect(InspectArgs),
    /// Validate a certificate's path to a trusted root (exit 0 valid, 1 invalid).
    Verify(Box<crate::cmd_verify::VerifyArgs>),
    /// Report RFC 5280 / CA/B Forum profile violations in certificates, chains and CRLs
    /// (exit 0 clean or warnings only, 1 any error, 2 unreadable input).
    Lint(crate::cmd_lint::LintArgs),
    /// EST requests waiting for manual approval (`ca serve --est-approval manual`, docs/est.md).
    Pending(crate::cmd_est::PendingArgs),
    /// Approve a pending EST request: the device gets its certificate at its next poll.
    Approve(crate::cmd_est::DecideArgs),
    /// Reject a pending EST request: the device's next poll is refused (403 rejected).
    Reject(crate::cmd_est::DecideArgs),
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("usage").args(["server", "client", "both"])))]
pub struct IssueArgs {
    /// Name of the certificate: its subject CN, the inventory name, and the output file stem.
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    pub name: Option<String>,
    /// Issue many certificates: PATH is a directory of *.csr files (PEM or DER; the file stem
    /// names each certificate) or a CSV file with a header (columns name, csr, san, usage, ttl).
    /// One store transaction per --chunk rows; re-running the same command after an
    /// interruption issues only the rest. Exit 1 if any row failed (docs/est.md).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["csr", "p12", "p12_password_file",
        "not_before", "not_after", "force", "requested_by", "sans"])]
    pub batch: Option<PathBuf>,
    // The batch-only flags say `conflicts_with = "name"` beside `requires = "batch"`: clap
    // waives a requirement whose target conflicts with a present argument (clap#4520), and
    // --batch conflicts with NAME, so without it they would pass and be ignored.
    /// Rows per store transaction with --batch.
    #[arg(long, value_name = "N", default_value_t = 500, requires = "batch", conflicts_with = "name",
        value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub chunk: u32,
    /// A SAN for every row of --batch, with {name} replaced by the row's name, e.g.
    /// 'uri:spiffe://example.org/device/{name}' or 'dns:{name}.devices.example'. Repeatable.
    #[arg(
        long,
        value_name = "TYPE:TEMPLATE",
        requires = "batch",
        conflicts_with = "name"
    )]
    pub san_template: Vec<String>,
    /// Subject alternative name: dns:NAME, ip:ADDRESS, uri:spiffe://DOMAIN/PATH or
    /// email:USER@DOMAIN. Repeatable.
    #[arg(long = "san", value_name = "TYPE:VALUE", value_parser = parse_san)]
    pub sans: Vec<San>,
    /// TLS server certificate (EKU serverAuth; needs a dns: or ip: SAN, or a SPIFFE ID).
    #[arg(long)]
    pub server: bool,
    /// TLS client certificate (EKU clientAuth). The default.
    #[arg(long)]
    pub client: bool,
    /// Server and client (EKU serverAuth + clientAuth; needs a dns: or ip: SAN, or a SPIFFE
    /// ID, as an X509-SVID).
    #[arg(long)]
    pub both: bool,
    /// Lifetime, e.g. 24h, 7d, 90m [default: the CA's default, 24h].
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["not_before", "not_after"])]
    pub ttl: Option<std::time::Duration>,
    /// Start of validity, RFC 3339 (2027-01-01T00:00:00Z) [default: now, backdated 5 minutes].
    /// Not before the intermediate's own start.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub not_before: Option<time::OffsetDateTime>,
    /// End of validity, RFC 3339 [default: the start plus the CA's default TTL]. Not after the
    /// intermediate expires.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub not_after: Option<time::OffsetDateTime>,
    /// Subject O (organization), e.g. "Acme".
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// Subject OU (organizational unit), what `serve --allow-ou` matches.
    #[arg(long, value_name = "UNIT")]
    pub ou: Option<String>,
    /// Key type to generate: ecdsa-p256, ecdsa-p384, ed25519, rsa-3072 (with --batch: for the
    /// rows without a CSR; refused when every row has one). Not with --csr, where the key is
    /// the CSR's. [default: the CA's `[defaults] key_type`, ecdsa-p256]
    #[arg(long, value_parser = parse_key_type, conflicts_with = "csr")]
    pub key_type: Option<KeyType>,
    /// Put a CRL distribution point in the certificate: the http(s) URL where `mutual ca crl`
    /// output is published (relying parties fetch it, e.g. `mutual serve --crl-from-cdp`).
    /// Repeatable. `{issuer}` in it becomes the signing intermediate's id, so the point is
    /// its own issuer's CRL: --crl-url 'https://ca:8443/v1/crl/{issuer}' (docs/lifecycle.md).
    #[arg(long = "crl-url", value_name = "URL")]
    pub crl_urls: Vec<String>,
    /// Put an OCSP responder URL in the certificate (Authority Information Access, id-ad-ocsp):
    /// where relying parties ask `mutual ca serve --ocsp-listen` for its status (docs/ocsp.md).
    /// Repeatable [default: the CA's ocsp_url from `ca init --ocsp-url`, if any].
    #[arg(long = "ocsp-url", value_name = "URL")]
    pub ocsp_urls: Vec<String>,
    /// Which active intermediate signs: an id (int-2) or a key type (ecdsa-p384), see `mutual
    /// ca issuers`. [default: the CA's default issuer]
    #[arg(long, value_name = "ID|KEY-TYPE")]
    pub issuer: Option<String>,
    /// Sign this CSR (PEM or DER, e.g. from `openssl req`) instead of generating a key. Only
    /// its public key is used: names, usages and lifetime come from this command line.
    #[arg(long, value_name = "FILE")]
    pub csr: Option<PathBuf>,
    /// Directory to write NAME.pem / NAME.key / NAME.p12 into (created 0700 if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Also write NAME.p12 (PKCS#12: key + chain). Password from --p12-password-file or
    /// $MUTUAL_P12_PASSWORD.
    #[arg(long)]
    pub p12: bool,
    /// With --p12: read the PKCS#12 password from the first line of FILE (instead of
    /// $MUTUAL_P12_PASSWORD).
    #[arg(long, value_name = "FILE", requires = "p12")]
    pub p12_password_file: Option<PathBuf>,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    /// Recorded in the inventory as who asked [default: cli:$USER, else cli:NAME of the uid].
    #[arg(long, value_name = "WHO")]
    pub requested_by: Option<String>,
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub password: PasswordArg,
    #[command(flatten)]
    pub key_storage: crate::ca_args::KeyStorageArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("by_name").args(["identity", "dns", "ip", "san"])))]
pub struct ListArgs {
    /// Only certificates for this SPIFFE ID (URI SAN spiffe://trust-domain/path), exact match.
    #[arg(long, value_name = "SPIFFE_ID", value_parser = parse_identity)]
    pub identity: Option<SanMatch>,
    /// Only certificates with this DNS SAN (exact, case-insensitive; no wildcard expansion).
    #[arg(long, value_name = "NAME", value_parser = |v: &str| san_match("dns", v))]
    pub dns: Option<SanMatch>,
    /// Only certificates with this IP SAN (IPv4 or IPv6, any spelling of the address).
    #[arg(long, value_name = "ADDR", value_parser = |v: &str| san_match("ip", v))]
    pub ip: Option<SanMatch>,
    /// Only certificates with this SAN, as `cert issue --san` takes it: dns:NAME, ip:ADDR,
    /// uri:URI or email:ADDRESS.
    #[arg(long, value_name = "TYPE:VALUE", value_parser = parse_san_match)]
    pub san: Option<SanMatch>,
    /// Only valid certificates expiring within this window (e.g. 7d); not with --status revoked
    /// or expired.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub expiring_within: Option<std::time::Duration>,
    /// Only certificates in this state: valid, revoked, expired.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<Status>,
    /// Only certificates with this key type: ecdsa-p256, ecdsa-p384, ed25519, rsa-BITS
    /// (rsa-2048, rsa-3072, ...), or unknown (recorded before the inventory kept key types).
    #[arg(long, value_name = "TYPE", value_parser = mutual_pki::keys::parse_key_type_filter)]
    pub key_type: Option<String>,
    #[command(flatten)]
    pub dir: DirArg,
    /// Print a JSON array of objects.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").args(["serial", "cert"]).required(true)))]
pub struct RevokeArgs {
    /// Serial in hex as openssl prints it; colons optional, any case.
    pub serial: Option<String>,
    /// Take the serial from this certificate file (PEM or DER; first certificate).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
    /// cessation-of-operation, privilege-withdrawn. (Not certificate-hold: a revocation here is
    /// never lifted.)
    #[arg(long, default_value = "unspecified", value_parser = parse_reason)]
    pub reason: RevocationReason,
    #[command(flatten)]
    pub dir: DirArg,
    /// Print {"serial", "name", "already_revoked", "revoked_at", "reason", "status",
    /// "not_after", "sha256"} as JSON, the times also as `*_unix` seconds (`already_revoked`:
    /// it was revoked before and nothing changed).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").args(["file", "serial"]).required(true)))]
pub struct InspectArgs {
    /// Certificate file (PEM, possibly a chain, or DER), or `-` for stdin.
    pub file: Option<PathBuf>,
    /// Inspect the certificate the inventory recorded under this serial (hex, colons optional)
    /// instead of a file; `--pem` prints it.
    #[arg(long, value_name = "SERIAL", conflicts_with = "key")]
    pub serial: Option<String>,
    /// With --serial: print the stored certificate as PEM instead of inspecting it.
    #[arg(long, requires = "serial", conflicts_with_all = ["json", "file"])]
    pub pem: bool,
    #[command(flatten)]
    pub dir: DirArg,
    /// Also show where this private key lives (a file, or a PKCS#11 URI
    /// 'pkcs11:token=T;object=K?module-path=M&pin-source=F') and whether it belongs to the
    /// first certificate. With --json the output becomes {"certificates": [...], "key": {...}}.
    #[arg(long, value_name = "FILE|URI")]
    pub key: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn parse_san(s: &str) -> Result<San, String> {
    s.parse().map_err(|e: mutual_pki::PkiError| e.to_string())
}

/// A SAN to look up, normalised as issuance records it (the `San` parser: lowercase DNS
/// names, canonical IPs, checked SPIFFE IDs), so the index lookup is exact.
fn parse_san_match(s: &str) -> Result<SanMatch, String> {
    let text = match parse_san(s) {
        Ok(san) => san.to_string(),
        // A name issuance now refuses (a dNSName that is an address, has an all-digit last
        // label or a '_'; an unspecified, broadcast or multicast IP) that an older version
        // issued: such a certificate is still found, as it was stored.
        Err(e) => match s.split_once(':') {
            Some((kind, v))
                if kind.eq_ignore_ascii_case("dns")
                    && !v.is_empty()
                    && v.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                format!("dns:{}", v.to_ascii_lowercase())
            }
            Some((kind, v)) if kind.eq_ignore_ascii_case("ip") => match v.parse::<IpAddr>() {
                Ok(ip) => format!("ip:{ip}"),
                Err(_) => return Err(e),
            },
            _ => return Err(e),
        },
    };
    SanMatch::from_stored(&text)
        .ok_or_else(|| format!("{s:?} is not TYPE:VALUE (e.g. dns:web.internal)"))
}

fn san_match(kind: &str, value: &str) -> Result<SanMatch, String> {
    parse_san_match(&format!("{kind}:{value}"))
}

fn parse_identity(s: &str) -> Result<SanMatch, String> {
    if !s
        .get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case("spiffe://"))
    {
        return Err(format!(
            "{s:?} is not a SPIFFE ID (spiffe://trust-domain/path); use --dns, --ip or --san \
             for other names"
        ));
    }
    san_match("uri", s)
}

fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| t.to_offset(time::UtcOffset::UTC))
        .map_err(|_| format!("{s:?} is not an RFC 3339 time (e.g. 2027-01-01T00:00:00Z)"))
}

fn parse_status(s: &str) -> Result<Status, String> {
    s.parse()
}

fn parse_reason(s: &str) -> Result<RevocationReason, String> {
    RevocationReason::for_revocation(s).map_err(|e| e.to_string())
}

pub fn run(cmd: CertCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCommand::Verify(a) => crate::cmd_verify::run(*a),
        CertCommand::Lint(a) => crate::cmd_lint::run(a),
        CertCommand::Pending(a) => crate::cmd_est::pending(a),
        CertCommand::Approve(a) => crate::cmd_est::decide(a, true),
        CertCommand::Reject(a) => crate::cmd_est::decide(a, false),
        CertCommand::Issue(a) => issue(*a),
        CertCommand::List(a) => list(a),
        CertCommand::Revoke(a) => revoke(a),
        CertCommand::Inspect(a) => inspect(a),
    }
}

use crate::json::rfc3339;

/// The usage the flags ask for (--client by default).
pub(crate) fn usage_of(a: &IssueArgs) -> Usage {
    if a.both {
        Usage::Both
    } else if a.server {
        Usage::Server
    } else {
        Usage::Client
    }
}

/// What the issuance would refuse, refused before the password is asked for (and before a
/// token makes a key): --san against the CA's name rules, as `token create` checks them, and a
/// --ttl the default intermediate cannot cover (with --issuer the selected intermediate decides
/// at issuance). Returns the CA's config, read for it.
pub fn refuse_early(
    dir: &std::path::Path,
    a: &IssueArgs,
) -> anyhow::Result<mutual_pki::ca::CaConfig> {
    let config = mutual_pki::ca::read_config(dir)?;
    config.check_sans(&a.sans)?;
    if let (Some(ttl), None) = (a.ttl, &a.issuer) {
        crate::ca_args::refuse_outliving_intermediate(dir, &config, ttl, "--ttl", "a certificate")?;
    }
    Ok(config)
}

/// One certificate (`cert issue --batch` is `cmd_batch::run`, dispatched in main.rs).
fn issue(a: IssueArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    let usage = usage_of(&a);
    let name = a.name.clone().unwrap_or_default();
    let stem = name.trim().to_string();
    if stem.is_empty() || stem.starts_with('.') || stem.contains(['/', '\\', '\0']) {
        anyhow::bail!(
            "NAME {:?} cannot be used as a file name (no '/', not starting with '.')",
            name
        );
    }
    crate::ca_args::refuse_repeated_sans(&a.sans)?;
    let config = refuse_early(&dir, &a)?;
    let p12_password = if a.p12 {
        let pw = match &a.p12_password_file {
            Some(f) => crate::ca_args::read_secret_file(f, "PKCS#12 password")?,
            None => std::env::var("MUTUAL_P12_PASSWORD").unwrap_or_default(),
        };
        if pw.is_empty() {
            anyhow::bail!(
                "--p12 needs a non-empty password: --p12-password-file FILE or MUTUAL_P12_PASSWORD"
            );
        }
        Some(pw)
    } else {
        None
    };
    let csr = match &a.csr {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            Some(Csr::parse(&bytes)?)
        }
        None => None,
    };
    if csr.is_some() && a.p12 {
        anyhow::bail!("--p12 needs the private key, which a CSR does not carry");
    }
    let _lock = lock_out_dir(&a.out)?;
    let cert_path = a.out.join(format!("{stem}.pem"));
    let key_path = a.out.join(format!("{stem}.key"));
    let p12_path = a.out.join(format!("{stem}.p12"));
    let mut targets = vec![cert_path.clone()];
    if csr.is_none() {
        targets.push(key_path.clone());
    }
    if a.p12 {
        targets.push(p12_path.clone());
    }
    let journal = a.out.join(format!(".{stem}.mutual-issue"));
    let all_targets = [cert_path.clone(), key_path.clone(), p12_path.clone()];
    let rt = runtime()?;
    let recovered = rt.block_on(mutual_pki::ca::recover_interrupted(
        &dir,
        &journal,
        &all_targets,
    ))?;
    for f in &recovered.removed {
        eprintln!(
            "note: removed {} left by an interrupted issuance",
            f.display()
        );
    }
    if let Some(serial) = &recovered.revoked {
        eprintln!(
            "note: revoked serial {serial} (superseded): it was signed by an interrupted issuance"
        );
    }
    if !a.force {
        if let Some(t) = targets.iter().find(|t| t.exists()) {
            return Err(crate::errors::user(
                "exists",
                format!("{} already exists (nothing was issued)", t.display()),
                "use --force to replace it, or another NAME or --out DIR",
            ));
        }
    }
    // --key-type, else the CA's `[defaults] key_type` (what EST serverkeygen generates too).
    let key_type = a.key_type.unwrap_or(config.defaults.key_type);
    let token_key = match a.key_storage.resolve()? {
        mutual_pki::ca::KeyStorage::File => None,
        mutual_pki::ca::KeyStorage::Pkcs11(r) => {
            if csr.is_some() {
                anyhow::bail!("--csr and --key-storage pkcs11 both name the key: give one");
            }
            let kind = mutual_pki::ca::token_kind(key_type)?;
            Some(r.open_or_generate(kind)?.0)
        }
    };
    let password = a
        .password
        .get_for(&dir, mutual_pki::ca::KeysUsed::ISSUERS)?;
    let requested_by = a
        .requested_by
        .clone()
        .or_else(|| Some(crate::whoami::actor()));
    let wrote_key = csr.is_none() && token_key.is_none();
    let key = match (csr, &token_key) {
        (Some(c), _) => KeySource::Csr(c),
        // The token just made or found the key, so its possession is proven.
        (None, Some(k)) => KeySource::ProvenKey(k.spki().to_vec()),
        (None, None) => KeySource::Generate(key_type),
    };
    let output = OutputFiles {
        cert: cert_path.clone(),
        key: key_path.clone(),
        p12: p12_password.map(|pw| (p12_path.clone(), pw.into())),
        force: a.force,
        journal: Some(journal),
    };
    let result = rt.block_on(async {
        let ca = Ca::open(&dir, password.as_bytes()).await?;
        let opts = IssueOptions {
            name: stem.clone(),
            sans: a.sans.clone(),
            usage,
            ttl: a.ttl.unwrap_or_else(|| ca.default_ttl()),
            requested_by,
            crl_urls: a.crl_urls.clone(),
            ocsp_urls: a.ocsp_urls.clone(),
            ocsp_signing: false,
            org: a.org.clone(),
            ou: a.ou.clone(),
            not_before: a.not_before,
            not_after: a.not_after,
            issuer: a.issuer.clone(),
        };
        let out = ca
            .issue(IssueRequest {
                profile: opts.clone(),
                key,
                token: None,
                output: Some(output),
            })
            .await;
        ca.store().close().await;
        out.map(|issued| (issued, opts))
    });
    let (issued, opts) = result?;
    // What our CA makes must pass its own lint (a failure is a bug in mutual, said loudly).
    // The chain file's intermediate was checked by `ca init`; the leaf is what is new.
    crate::cmd_lint::check_own(&cert_path, "certificate", &[], Some("leaf"))?;
    if a.json {
        let v = serde_json::json!({
            "name": stem,
            "serial": issued.serial_hex,
            "usage": usage.as_str(),
            "sans": opts.sans.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "not_before": rfc3339(issued.not_before),
            "not_before_unix": issued.not_before,
            "not_after": rfc3339(issued.not_after),
            "not_after_unix": issued.not_after,
            "sha256": crate::json::fingerprint(&issued.sha256),
            "issuer": issued.issuer,
            "cert": cert_path,
            "key": if wrote_key { Some(key_path.display().to_string()) } else { token_key.as_ref().map(|k| k.uri().to_string()) },
            "p12": if a.p12 { Some(&p12_path) } else { None },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "Issued {stem} ({usage}) serial {} valid until {}, by {}",
            issued.serial_hex,
            rfc3339(issued.not_after),
            issued.issuer
        );
        println!("  cert: {} (leaf + intermediate)", cert_path.display());
        if wrote_key {
            println!("  key:  {} (0600)", key_path.display());
        }
        if let Some(k) = &token_key {
            println!(
                "  key:  {} in token {:?}: {} (never leaves it)",
                k.kind(),
                k.token().label(),
                k.uri()
            );
        }
        if a.p12 {
            println!("  p12:  {} (0600)", p12_path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `--out` if missing and locks it: one issuance (or batch) at a time per output
/// directory, released by the kernel if we are killed.
pub(crate) fn lock_out_dir(out: &Path) -> anyhow::Result<std::fs::File> {
    if !out.exists() {
        create_out_dir(out)?;
    }
    if !out.is_dir() {
        anyhow::bail!(
            "--out {} is not a directory; nothing was issued",
            out.display()
        );
    }
    lock_dir(out)
}

/// An exclusive lock on `dir` for the life of the returned handle.
fn lock_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let f = std::fs::File::open(dir)
        .with_context(|| format!("cannot open {} to lock it", dir.display()))?;
    f.lock()
        .with_context(|| format!("cannot lock {}", dir.display()))?;
    Ok(f)
}

/// Creates `--out` (and missing parents) 0700: it is about to receive a private key, and a
/// directory others can list tells them which keys exist. Enroll does the same.
fn create_out_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "--out {} is not a directory and cannot be created; nothing was issued",
                dir.display()
            )
        })
}

/// Rows per page of `cert list`: the inventory is walked page by page (keyset paging on
/// notAfter then serial) and printed as it comes, so a million rows never sit in memory.
const LIST_PAGE: u32 = 10_000;

fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    // --expiring-within keeps valid certificates only: beside another status it would list
    // nothing, whatever the inventory holds.
    if let (Some(_), Some(s @ (Status::Revoked | Status::Expired))) = (a.expiring_within, a.status)
    {
        return Err(crate::errors::user(
            "usage",
            format!(
                "--expiring-within lists valid certificates only: beside --status {} it would \
                 list nothing",
                s.as_str()
            ),
            format!(
                "drop one: `mutual cert list --status {}` or `mutual cert list \
                 --expiring-within 7d`",
                s.as_str()
            ),
        ));
    }
    let dir = a.dir.resolve()?;
    let filter = ListFilter {
        status: a.status,
        expiring_within: a.expiring_within,
        san: a.identity.or(a.dns).or(a.ip).or(a.san),
        key_type: a.key_type,
        ..Default::default()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(crate::errors::ReportOut(stdout.lock()));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (count, soon_count) = with_store(&dir, async |store| {
        if a.json {
            list_json(store, &filter, now, &mut out).await
        } else {
            list_table(store, &filter, now, &mut out).await
        }
    })?;
    if a.json {
        writeln!(out)?;
    } else if count == 0 {
        writeln!(out, "no certificates")?;
    } else if soon_count > 0 {
        writeln!(
            out,
            "! = expiring soon (past two thirds of its lifetime, or within 7 days): {soon_count}"
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Calls `each` on every matching row, one page at a time.
async fn for_each_row(
    store: &mutual_store::Store,
    filter: &ListFilter,
    now: i64,
    mut each: impl FnMut(&mutual_store::CertRecord) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut after: Option<mutual_store::Cursor> = None;
    loop {
        let page =
            mutual_store::Inventory::list_page(store, filter, now, after.as_ref(), LIST_PAGE)
                .await
                .map_err(mutual_pki::PkiError::from)?;
        for r in &page.rows {
            each(r)?;
        }
        match page.next {
            Some(c) => after = Some(c),
            None => return Ok(()),
        }
    }
}

/// The table, header before the first row. Returns (rows, expiring soon).
async fn list_table(
    store: &mutual_store::Store,
    filter: &ListFilter,
    now: i64,
    out: &mut impl std::io::Write,
) -> anyhow::Result<(u64, u64)> {
    let (mut count, mut soon_count) = (0u64, 0u64);
    for_each_row(store, filter, now, |r| {
        if count == 0 {
            writeln!(
                out,
                "{:<32}  {:<20}  {:<6}  {:<7}  {:<20}  {:>13}  {:<6}  SANS",
                "SERIAL", "NAME", "USAGE", "STATUS", "NOT AFTER", "LEFT", "ISSUER"
            )?;
        }
        if table_line(out, r, now)? {
            soon_count += 1;
        }
        count += 1;
        Ok(())
    })
    .await?;
    Ok((count, soon_count))
}

/// A pretty-printed JSON array, each row serialised straight into the output as it is read
/// (no `serde_json::Value` per row, no re-indenting): a million rows in flat memory.
async fn list_json(
    store: &mutual_store::Store,
    filter: &ListFilter,
    now: i64,
    out: &mut impl std::io::Write,
) -> anyhow::Result<(u64, u64)> {
    use serde::ser::{SerializeSeq, Serializer};
    let mut ser =
        serde_json::Serializer::with_formatter(out, serde_json::ser::PrettyFormatter::new());
    let mut seq = ser.serialize_seq(None)?;
    let mut count = 0u64;
    for_each_row(store, filter, now, |r| {
        seq.serialize_element(&ListRow::of(r))?;
        count += 1;
        Ok(())
    })
    .await?;
    seq.end()?;
    Ok((count, 0))
}

/// One inventory row as `cert list --json` prints it (docs/json.md). The fields are in
/// alphabetical order, the order in which `json::record`'s map prints them, so streaming did not
/// change a byte of the output (a unit test compares the two).
#[derive(serde::Serialize)]
struct ListRow<'a> {
    created_at: String,
    created_at_unix: i64,
    issuer: &'a str,
    key_type: Option<&'a str>,
    name: &'a str,
    not_after: String,
    not_after_unix: i64,
    not_before: String,
    not_before_unix: i64,
    reason: Option<&'a str>,
    requested_by: Option<&'a str>,
    revoked_at: Option<String>,
    revoked_at_unix: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_by: Option<&'a str>,
    sans: &'a [String],
    serial: &'a str,
    sha256: String,
    status: &'static str,
    subject: &'a str,
    usage: &'a str,
}

impl<'a> ListRow<'a> {
    fn of(r: &'a mutual_store::CertRecord) -> ListRow<'a> {
        ListRow {
            created_at: rfc3339(r.created_at),
            created_at_unix: r.created_at,
            issuer: &r.issuer,
            key_type: r.key_type.as_deref(),
            name: &r.name,
            not_after: rfc3339(r.not_after),
            not_after_unix: r.not_after,
            not_before: rfc3339(r.not_before),
            not_before_unix: r.not_before,
            reason: r.reason.as_deref(),
            requested_by: r.requested_by.as_deref(),
            revoked_at: r.revoked_at.map(rfc3339),
            revoked_at_unix: r.revoked_at,
            revoked_by: r.revoked_by.as_deref(),
            sans: &r.sans,
            serial: &r.serial,
            sha256: crate::json::fingerprint(&r.sha256),
            status: r.status.as_str(),
            subject: &r.subject,
            usage: &r.usage,
        }
    }
}

/// One table line of `cert list`; returns whether the certificate is expiring soon.
fn table_line(
    out: &mut impl std::io::Write,
    r: &mutual_store::CertRecord,
    now: i64,
) -> std::io::Result<bool> {
    let left = r.not_after - now;
    // Life is measured from the issuance (the requested start), not from notBefore: the
    // 5-minute backdate would otherwise put a `--ttl 2m` certificate past two thirds at once.
    let start = r.created_at.clamp(r.not_before, r.not_after);
    let lifetime = (r.not_after - start).max(1);
    // "Soon" = past the renewal point (two thirds of the lifetime), or within 7 days for
    // long-lived certificates (for 24 h certs every one would be "within 7 days").
    let soon = r.status == Status::Valid
        && (left * 3 < lifetime || (lifetime >= 21 * 86_400 && left < 7 * 86_400));
    let days = if r.status == Status::Valid {
        format!(
            "{}{}",
            mutual_policy::human::duration(left.max(0).unsigned_abs()),
            if soon { " !" } else { "" }
        )
    } else {
        "-".to_string()
    };
    let na = rfc3339(r.not_after);
    writeln!(
        out,
        "{:<32}  {:<20}  {:<6}  {:<7}  {:<20}  {:>13}  {:<6}  {}",
        r.serial,
        r.name,
        r.usage,
        r.status.as_str(),
        na,
        days,
        r.issuer,
        r.sans.join(",")
    )?;
    Ok(soon)
}

fn revoke(a: RevokeArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    let serial = match (&a.serial, &a.cert) {
        (Some(s), _) => mutual_pki::normalize_serial(s)?,
        (None, Some(path)) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let info = mutual_pki::inspect::inspect_pem_or_der(&bytes)?;
            let first = info
                .first()
                .with_context(|| format!("no certificate in {}", path.display()))?;
            first.serial.clone()
        }
        (None, None) => anyhow::bail!("give a SERIAL or --cert FILE"),
    };
    let outcome = with_store(&dir, async |store| {
        Ok(mutual_pki::ca::revoke_in(store, &serial, a.reason).await?)
    })?;
    let (already, rec) = match outcome {
        RevokeOutcome::Revoked(r) => (false, r),
        RevokeOutcome::AlreadyRevoked(r) => (true, r),
    };
    if a.json {
        let v = serde_json::json!({
            "serial": rec.serial,
            "name": rec.name,
            "already_revoked": already,
            "revoked_at": rec.revoked_at.map(rfc3339),
            "revoked_at_unix": rec.revoked_at,
            "reason": rec.reason,
            "status": rec.status.as_str(),
            "not_after": rfc3339(rec.not_after),
            "not_after_unix": rec.not_after,
            "sha256": crate::json::fingerprint(&rec.sha256),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if already {
        println!(
            "note: {} ({}) was already revoked at {} (reason {}); nothing changed",
            rec.serial,
            rec.name,
            rec.revoked_at.map(rfc3339).unwrap_or_default(),
            rec.reason.as_deref().unwrap_or("unspecified")
        );
    } else {
        println!(
            "Revoked {} ({}), reason {}. Publish it: mutual ca crl --out crl.pem",
            rec.serial,
            rec.name,
            rec.reason.as_deref().unwrap_or("unspecified")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cert inspect --key`: the certificates, then where the key lives and whether it is the first
/// certificate's.
fn inspect_key(
    bytes: &[u8],
    infos: Vec<mutual_pki::inspect::CertInfo>,
    key: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let loc = mutual_tls::load::key_location(key)?;
    let leaf = mutual_tls::load::certs_from_bytes(key, bytes)?;
    let matches = leaf.first().is_some_and(|c| loc.matches(c));
    if json {
        let v = serde_json::json!({
            "certificates": infos,
            "key": { "location": loc, "matches_certificate": matches },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    for c in &infos {
        println!(
            "Certificate #{}: {} (serial {}, {} {} bits)",
            c.index, c.subject, c.serial, c.key_type, c.key_bits
        );
    }
    match &loc.token {
        None => println!("Private key:  file {}", loc.location),
        Some(t) => {
            let flag = |v: Option<bool>, yes: &str, no: &str| match v {
                Some(true) => yes.to_string(),
                Some(false) => no.to_string(),
                None => "unknown".to_string(),
            };
            println!("Private key:  PKCS#11 token {:?} ({})", t.token, t.module);
            println!("  URI:        {}", t.uri);
            println!("  Type:       {}", t.kind);
            println!(
                "  Protection: {}, {}",
                flag(t.sensitive, "sensitive", "not sensitive"),
                flag(t.extractable, "extractable", "never extractable")
            );
        }
    }
    println!(
        "  Matches certificate #0: {}",
        if matches { "yes" } else { "NO" }
    );
    Ok(ExitCode::SUCCESS)
}

/// The certificate the inventory recorded under `serial` (DER), or why there is none.
fn stored_certificate(dir: &Path, serial: &str) -> anyhow::Result<Vec<u8>> {
    let serial = mutual_pki::normalize_serial(serial)?;
    let rt = runtime()?;
    let der = rt.block_on(async {
        let store = mutual_pki::ca::open_store(dir).await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let found = match mutual_store::Inventory::get(&store, &serial, now).await {
            Ok(None) => Err(mutual_pki::PkiError::from(
                mutual_store::StoreError::NotFound {
                    serial: serial.clone(),
                },
            )),
            Ok(Some(_)) => mutual_store::Inventory::certificate_der(&store, &serial)
                .await
                .map_err(mutual_pki::PkiError::from),
            Err(e) => Err(e.into()),
        };
        store.close().await;
        found
    })?;
    der.ok_or_else(|| {
        crate::errors::user(
            "not_found",
            format!(
                "the inventory has no copy of certificate {serial}: it was recorded before \
                 mutual kept certificates (only its fingerprint)"
            ),
            "inspect its holder's file: mutual cert inspect FILE",
        )
    })
}

fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    // --dir names the inventory --serial reads; beside a FILE it would be silently unused.
    if a.file.is_some() && a.dir.dir.is_some() {
        return Err(crate::errors::user(
            "usage",
            "--dir is where --serial is looked up; a FILE is inspected as it is",
            "drop --dir, or inspect the stored certificate with --serial SERIAL --dir DIR",
        ));
    }
    let (bytes, source) = match (&a.file, &a.serial) {
        (_, Some(serial)) => {
            let der = stored_certificate(&a.dir.resolve()?, serial)?;
            if a.pem {
                print!("{}", mutual_pki::pem_encode("CERTIFICATE", &der)?);
                return Ok(ExitCode::SUCCESS);
            }
            (der, format!("serial {serial}"))
        }
        (Some(f), None) if f.as_os_str() == "-" => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("cannot read stdin")?;
            (b, "-".to_string())
        }
        (Some(f), None) => (
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
            f.display().to_string(),
        ),
        (None, None) => anyhow::bail!("give a certificate FILE or --serial SERIAL"),
    };
    let infos = mutual_pki::inspect::inspect_pem_or_der(&bytes).with_context(|| source)?;
    if let Some(key) = &a.key {
        return inspect_key(&bytes, infos, key, a.json);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (i, c) in infos.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("Certificate #{}", c.index);
        println!("  Subject:      {}", c.subject);
        println!("  Issuer:       {}", c.issuer);
        println!("  Serial:       {}", c.serial);
        if !c.sans.is_empty() {
            println!("  SANs:         {}", c.sans.join(", "));
        }
        if let Some(id) = &c.spiffe_id {
            println!("  SPIFFE ID:    {id}");
        }
        println!("  Not before:   {}", c.not_before);
        println!("  Not after:    {} ({})", c.not_after, c.time_left);
        println!("  Key:          {} {} bits", c.key_type, c.key_bits);
        println!("  Signature:    {}", c.signature_algorithm);
        if !c.key_usage.is_empty() {
            println!("  Key usage:    {}", c.key_usage.join(", "));
        }
        if !c.extended_key_usage.is_empty() {
            println!("  Ext. usage:   {}", c.extended_key_usage.join(", "));
        }
        let ca = match (c.is_ca, c.path_len) {
            (true, Some(n)) => format!("yes (pathlen {n})"),
            (true, None) => "yes".into(),
            (false, _) => "no".into(),
        };
        println!(
            "  CA:           {ca}{}",
            if c.self_signed { ", self-signed" } else { "" }
        );
        println!("  SHA-256:      {}", mutual_pki::colon_hex(&c.sha256));
        for w in &c.warnings {
            println!("  WARNING:      {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The streamed row is byte for byte what `json::record` + pretty-printing gave.
    #[test]
    fn list_row_keeps_the_json_shape() {
        let valid = mutual_store::CertRecord {
            serial: "0a1b".into(),
            name: "web".into(),
            subject: "CN=web".into(),
            sans: vec!["dns:web.internal".into(), "uri:spiffe://td/web".into()],
            usage: "server".into(),
            not_before: 100,
            not_after: 200,
            status: Status::Valid,
            revoked_at: None,
            reason: None,
            requested_by: Some("cli:root".into()),
            sha256: "AB:CD".into(),
            created_at: 150,
            revoked_by: None,
            issuer: "int-1".into(),
            key_type: Some("ecdsa-p256".into()),
        };
        let revoked = mutual_store::CertRecord {
            sans: vec![],
            status: Status::Revoked,
            revoked_at: Some(170),
            reason: Some("key-compromise".into()),
            requested_by: None,
            revoked_by: Some("api-revoke:spiffe://td/admin".into()),
            ..valid.clone()
        };
        for r in [&valid, &revoked] {
            assert_eq!(
                serde_json::to_string_pretty(&ListRow::of(r)).unwrap(),
                serde_json::to_string_pretty(&crate::json::record(r)).unwrap()
            );
        }
        let both = [crate::json::record(&valid), crate::json::record(&revoked)];
        let mut streamed = Vec::new();
        {
            use serde::ser::{SerializeSeq, Serializer};
            let mut ser = serde_json::Serializer::with_formatter(
                &mut streamed,
                serde_json::ser::PrettyFormatter::new(),
            );
            let mut seq = ser.serialize_seq(None).unwrap();
            seq.serialize_element(&ListRow::of(&valid)).unwrap();
            seq.serialize_element(&ListRow::of(&revoked)).unwrap();
            seq.end().unwrap();
        }
        assert_eq!(
            String::from_utf8(streamed).unwrap(),
            serde_json::to_string_pretty(&both).unwrap()
        );
    }
}
