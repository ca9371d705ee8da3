//! `mutual enroll` and `mutual renew`: get a certificate from the online CA (`mutual ca serve`)
//! with a one-time token, and keep it fresh over mTLS. Also `EnrollArgs`, the flags `serve` and
//! `connect` flatten in so a proxy can enroll at start and renew itself while it runs.
//! The work lives in the mutual-enroll crate; this is flags, exit codes and printing.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mutual_enroll::files::{CertSummary, Current};
use mutual_enroll::{CaUrls, EnrollOptions, Fingerprint, RenewOptions, Renewer};
use mutual_pki::KeyType;

use crate::ca_args::key_type;
use crate::errors::{failed, refuse_existing};
use crate::json::rfc3339;
use crate::runtime::{init_logging, runtime, stop_signal};

const ENROLL_HELP: &str = "\
Generates a private key here (it never leaves this machine), checks that the CA's root has the
SHA-256 fingerprint you pinned before sending anything secret, sends a CSR with the one-time token,
and writes DIR/key.pem (0600), DIR/cert.pem (leaf + intermediate) and DIR/root.pem.

The fingerprint is printed by `mutual ca init`/`mutual ca serve`, or:
  openssl x509 -in root.pem -outform DER | sha256sum

Example:
  mutual token create --san dns:web.internal --ttl-cert 24h          # on the CA host
  mutual enroll --ca-url https://ca.internal:9443 --token \"$TOKEN\" \\
    --root-sha256 3a:5f:...:c2 --out /etc/mutual/web

Exit codes: 0 enrolled; 1 the CA refused (its reason is printed: token_used, token_expired,
name_not_allowed...), did not match the pin or could not be reached; 2 bad usage.
See docs/enrollment.md.";

const RENEW_HELP: &str = "\
Presents the current certificate to the CA over mTLS and gets a new one with the same names,
usage and lifetime (and, with --new-key, a new key generated here). The new files replace the old
ones atomically; until then the old ones stay untouched.

With --daemon: renews at two-thirds of each certificate's lifetime (plus or minus 5% jitter),
retrying with exponential backoff (1 s to 1 min, never past expiry) while the CA is unreachable;
exits 1 when renewal has become impossible (certificate expired, revoked, or not from this CA).

Example:
  mutual renew --ca-url https://ca.internal:9443 --cert /etc/mutual/web/cert.pem \\
    --key /etc/mutual/web/key.pem --daemon

See docs/enrollment.md.";

/// `mutual enroll` flags.
#[derive(clap::Args, Debug)]
#[command(after_help = ENROLL_HELP)]
pub struct EnrollCmdArgs {
    /// The online CA, https://HOST[:PORT]. Several replicas: repeat the flag or separate the
    /// URLs with commas; one that cannot be reached (or answers 5xx) is skipped for the next.
    #[arg(long, value_name = "URL", required_unless_present = "est")]
    pub ca_url: Vec<String>,

    /// One-time enrollment token from `mutual token create` (or $MUTUAL_TOKEN, or
    /// --token-file).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MUTUAL_TOKEN",
        hide_env_values = true,
        required_unless_present_any = ["est", "token_file"]
    )]
    pub token: Option<String>,

    /// Read the token from FILE (its first line) instead: a --token value is visible to every
    /// user of the machine (ps, /proc/PID/cmdline) until the command ends.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// SHA-256 fingerprint of the CA root (hex; colons optional, any case).
    #[arg(long, value_name = "FINGERPRINT", required_unless_present_any = ["est"])]
    pub root_sha256: Option<String>,

    #[command(flatten)]
    pub est: crate::cmd_est::EstEnrollFlags,

    /// Directory for key.pem, cert.pem and root.pem (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Key algorithm: ecdsa-p256, ecdsa-p384, ed25519, rsa-3072. Not with --server-keygen (the
    /// CA then generates a key of its own default type).
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "ecdsa-p256",
        conflicts_with = "server_keygen"
    )]
    pub key_type: String,

    /// Replace key.pem/cert.pem/root.pem if DIR already holds them.
    #[arg(long)]
    pub force: bool,

    /// Print what was written as one JSON object: serial, sans, not_before(_unix),
    /// not_after(_unix), key, cert, root, root_sha256, ca_url, protocol (native|est),
    /// key_generated_by (here|ca). A refusal is {"error": {reason, message, hint}}, exit 1.
    #[arg(long)]
    pub json: bool,
}

/// `mutual renew` flags.
#[derive(clap::Args, Debug)]
#[command(after_help = RENEW_HELP)]
pub struct RenewArgs {
    /// The online CA, https://HOST[:PORT]. Several replicas: repeat the flag or separate the
    /// URLs with commas; one that cannot be reached (or answers 5xx) is skipped for the next.
    #[arg(long, value_name = "URL", required_unless_present = "est")]
    pub ca_url: Vec<String>,

    #[command(flatten)]
    pub est: crate::cmd_est::EstRenewFlags,

    /// The current certificate chain (replaced by the new one).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,

    /// Its private key (replaced only with --new-key).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// The CA root to trust for the CA's server certificate [default: root.pem next to --cert].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Keep running and renew at two-thirds of each certificate's lifetime.
    #[arg(long)]
    pub daemon: bool,

    /// Generate a new key for the new certificate (default: keep the key).
    #[arg(long)]
    pub new_key: bool,

    /// Key algorithm for --new-key (with --est, of every re-enrollment's new key): ecdsa-p256,
    /// ecdsa-p384, ed25519, rsa-3072 [default: the current certificate's key type].
    #[arg(long, value_name = "TYPE", requires = "new_key")]
    pub key_type: Option<String>,

    /// Log format on stderr: human or json (once: the replicas tried; --daemon: every
    /// renewal too). The level comes from RUST_LOG.
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,

    /// Run this shell command (sh -c) after each renewal, e.g. 'systemctl reload nginx', with
    /// MUTUAL_CERT, MUTUAL_KEY, MUTUAL_SERIAL, MUTUAL_PREVIOUS_SERIAL and MUTUAL_NOT_AFTER set.
    /// Its failure is reported (exit status in the log, exit 1 without --daemon) and never
    /// undoes the renewal: the new certificate stays.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,

    /// Print the renewal as one JSON object: serial, previous_serial, sans, not_before(_unix),
    /// not_after(_unix), rekeyed, cert, key, ca_url, protocol (native|est), exec (null, or
    /// {ok, result}). A refusal is {"error": {reason, message, hint}}, exit 1. Not with
    /// --daemon (its renewals are log lines: --log-format json).
    #[arg(long, conflicts_with = "daemon")]
    pub json: bool,
}

/// Flags `serve` and `connect` flatten in: enroll at start into --cert/--key (unless they already
/// hold a valid certificate) and renew while running.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EnrollArgs {
    /// Online CA to renew --cert from while running (and to enroll from with --token):
    /// https://HOST[:PORT]. The new files are picked up by the usual reload. Several replicas:
    /// repeat the flag or separate the URLs with commas (tried in turn).
    #[arg(long, value_name = "URL")]
    pub ca_url: Vec<String>,

    /// One-time token to enroll with at start when --cert/--key do not hold a valid certificate
    /// yet. Needs --ca-url and --root-sha256 (`agent`: or --est, with --root-sha256 or --est-ca).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Read that token from FILE (its first line) instead of --token, whose value every user of
    /// the machine can read (ps, /proc/PID/cmdline) while the process runs.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// SHA-256 fingerprint of the CA root to pin when enrolling (hex, colons optional).
    #[arg(long, value_name = "FINGERPRINT")]
    pub root_sha256: Option<String>,
}

/// The token in `file`: its first line, trimmed (a file that `mutual token create > FILE` wrote).
pub(crate) fn read_token_file(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the token file {}", file.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        anyhow::bail!("the token file {} is empty", file.display());
    }
    Ok(token)
}

impl EnrollArgs {
    /// The flag the token came by, for messages.
    fn token_flag(&self) -> &'static str {
        if self.token_file.is_some() {
            "--token-file"
        } else {
            "--token"
        }
    }

    /// Whether a token was given, on the command line or as a file.
    pub fn has_token(&self) -> bool {
        self.token.is_some() || self.token_file.is_some()
    }

    /// The token, read from --token-file only now, when an enrollment needs it: a proxy whose
    /// certificate is still valid starts (and restarts) after the spent token's file is gone.
    pub fn token_value(&self) -> anyhow::Result<Option<String>> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.trim().to_string())),
            (None, Some(f)) => read_token_file(f).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// What clap cannot say for every command that flattens these (`agent --est` takes
    /// --token and --root-sha256 without --ca-url): with --ca-url, a token needs the root pin,
    /// and a pin must be a fingerprint even while the certificate is still valid (a typo found
    /// at start, not on the day the node must enroll again).
    pub fn check(&self, est: bool) -> anyhow::Result<()> {
        if self.ca_url.is_empty() && !est {
            for (flag, given) in [
                (self.token_flag(), self.has_token()),
                ("--root-sha256", self.root_sha256.is_some()),
            ] {
                if given {
                    anyhow::bail!("{flag} enrolls with the online CA: it needs --ca-url");
                }
            }
        }
        if !est && self.has_token() && self.root_sha256.is_none() {
            anyhow::bail!(
                "{} needs --root-sha256: the CA root is pinned before the token is sent",
                self.token_flag()
            );
        }
        if let Some(pin) = &self.root_sha256 {
            pin.parse::<Fingerprint>()?;
        }
        Ok(())
    }
}

pub fn run_enroll(mut args: EnrollCmdArgs) -> anyhow::Result<ExitCode> {
    // What the attempt logs on the way (a CA replica that failed, the next one tried) reaches
    // stderr; the result itself is printed.
    init_logging("human");
    if let Some(f) = args.token_file.take() {
        args.token = Some(read_token_file(&f)?);
    }
    if let Some(est) = &args.est.est {
        let o = crate::cmd_est::enroll_options(
            est,
            &args.est,
            args.token.as_deref(),
            args.root_sha256.as_deref(),
            args.out.clone(),
            &args.key_type,
        )?;
        refuse_existing(args.force, &mutual_enroll::est::out_files(&o.out))?;
        return match runtime()?.block_on(mutual_enroll::est::est_enroll(&o)) {
            Ok(e) => Ok(EnrollReport {
                cert: &e.cert,
                out: &args.out,
                root_sha256: e.root_sha256.clone(),
                ca_url: o.url.as_str().to_string(),
                protocol: "est",
                key_by_ca: o.server_keygen,
                several_urls: false,
            }
            .print(args.json)),
            Err(e) => failed(e, args.json, "--est"),
        };
    }
    let url = CaUrls::parse(&args.ca_url)?;
    let pin: Fingerprint = args.root_sha256.as_deref().unwrap_or_default().parse()?;
    let kt = key_type(&args.key_type)?;
    let token = args.token.as_deref().unwrap_or_default();
    if token.trim().is_empty() {
        anyhow::bail!("--token is empty");
    }
    let opts = EnrollOptions::into_dir(url, token.trim().to_string(), pin, kt, &args.out);
    refuse_existing(
        args.force,
        [Some(&opts.key), Some(&opts.cert), opts.root_out.as_ref()]
            .into_iter()
            .flatten(),
    )?;
    match runtime()?.block_on(mutual_enroll::enroll(&opts)) {
        Ok(e) => Ok(EnrollReport {
            cert: &e.cert,
            out: &args.out,
            root_sha256: e.root.to_string(),
            ca_url: e.ca_url.clone(),
            protocol: "native",
            key_by_ca: false,
            several_urls: opts.ca_url.len() > 1,
        }
        .print(args.json)),
        Err(e) => failed(e, args.json, "--ca-url"),
    }
}

/// One JSON object: the facts of the certificate `enroll` or `renew` got (docs/json.md's forms),
/// then `extra`.
fn cert_object<'a>(
    c: &CertSummary,
    extra: impl IntoIterator<Item = (&'a str, serde_json::Value)>,
) -> serde_json::Value {
    use serde_json::json;
    let facts = [
        ("serial", json!(c.serial)),
        ("sans", json!(c.sans)),
        ("not_before", json!(rfc3339(c.not_before))),
        ("not_before_unix", json!(c.not_before)),
        ("not_after", json!(rfc3339(c.not_after))),
        ("not_after_unix", json!(c.not_after)),
    ];
    serde_json::Value::Object(
        facts
            .into_iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// What `enroll` (either protocol) wrote into DIR (key.pem, cert.pem, root.pem).
struct EnrollReport<'a> {
    cert: &'a CertSummary,
    out: &'a Path,
    root_sha256: String,
    ca_url: String,
    protocol: &'static str,
    key_by_ca: bool,
    several_urls: bool,
}

impl EnrollReport<'_> {
    fn print(&self, json: bool) -> ExitCode {
        let [key, cert, root] = mutual_enroll::est::out_files(self.out);
        if json {
            use serde_json::json;
            let by = if self.key_by_ca { "ca" } else { "here" };
            let v = cert_object(
                self.cert,
                [
                    ("key", json!(key)),
                    ("cert", json!(cert)),
                    ("root", json!(root)),
                    ("root_sha256", json!(self.root_sha256)),
                    ("ca_url", json!(self.ca_url)),
                    ("protocol", json!(self.protocol)),
                    ("key_generated_by", json!(by)),
                ],
            );
            println!("{v}");
            return ExitCode::SUCCESS;
        }
        let how = match (self.protocol, self.key_by_ca) {
            ("est", true) => " over EST (key generated by the CA)",
            ("est", false) => " over EST",
            _ => "",
        };
        println!(
            "enrolled{how}: serial {}, valid until {}, names [{}]",
            self.cert.serial,
            rfc3339(self.cert.not_after),
            self.cert.sans.join(", ")
        );
        println!(
            "  key   {}\n  cert  {}\n  root  {} (sha256 {})",
            key.display(),
            cert.display(),
            root.display(),
            self.root_sha256
        );
        if self.several_urls {
            println!("  by    {}", self.ca_url);
        }
        ExitCode::SUCCESS
    }
}

/// The root `renew` trusts the CA by: --ca, else the root.pem `enroll` wrote beside the
/// certificate; it must exist.
fn trust_file(args: &RenewArgs) -> anyhow::Result<PathBuf> {
    let ca = match &args.ca {
        Some(c) => c.clone(),
        None => mutual_enroll::files::parent(&args.cert).join("root.pem"),
    };
    if !ca.exists() {
        anyhow::bail!(
            "the CA root {} does not exist; pass --ca ROOT.pem (the root.pem `mutual enroll` wrote)",
            ca.display()
        );
    }
    Ok(ca)
}

fn renew_options(args: &RenewArgs, current: &Current) -> anyhow::Result<RenewOptions> {
    let ca = trust_file(args)?;
    Ok(RenewOptions {
        ca_url: CaUrls::parse(&args.ca_url)?,
        cert: args.cert.clone(),
        key: args.key.clone(),
        ca,
        new_key: if args.new_key {
            Some(new_key_type(args, current)?)
        } else {
            None
        },
    })
}

/// The type of a new key: --key-type, else the current certificate's (a P-384 or Ed25519 key
/// stays one across renewals; an RSA key becomes RSA-3072).
fn new_key_type(args: &RenewArgs, current: &Current) -> anyhow::Result<KeyType> {
    if let Some(s) = &args.key_type {
        return key_type(s);
    }
    Ok(current
        .chain
        .first()
        .and_then(|c| mutual_pki::keys::key_type_of_certificate(c.as_ref()))
        .unwrap_or_default())
}

pub fn run_renew(args: RenewArgs) -> anyhow::Result<ExitCode> {
    // Once or as a daemon: what it logs (a CA replica that failed, the next one tried, and with
    // --daemon each renewal) goes to stderr in --log-format.
    init_logging(&args.log_format);
    let hook = args.exec.as_ref().map(|cmd| ExecHook {
        cmd: cmd.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
        failures: std::sync::atomic::AtomicU64::new(0),
    });
    // Fail on unreadable or mismatched files before anything else (exit 2).
    let current = mutual_enroll::files::load_current(&args.cert, &args.key)?;
    if let Some(est) = &args.est.est {
        let o = mutual_enroll::est::EstRenewOptions {
            url: mutual_enroll::CaUrl::parse(est)?,
            label: args.est.est_label.clone(),
            cert: args.cert.clone(),
            key: args.key.clone(),
            ca: trust_file(&args)?,
            key_type: new_key_type(&args, &current)?,
        };
        drop(current);
        let rt = runtime()?;
        if !args.daemon {
            return match rt.block_on(mutual_enroll::est::est_renew(&o)) {
                Ok(r) => Ok(renewed(&args, &r, "est", false)),
                Err(e) => failed(e, args.json, "--est"),
            };
        }
        let observer = hook
            .as_ref()
            .map(|h| h as &dyn mutual_enroll::RenewalObserver);
        let daemon = mutual_enroll::est::est_renew_daemon(&o, Duration::from_secs(30), observer);
        return until_stopped(&rt, "re-enrollment", daemon);
    }
    let opts = renew_options(&args, &current)?;
    drop(current);
    let rt = runtime()?;
    if !args.daemon {
        return match rt.block_on(mutual_enroll::renew_once(&opts)) {
            Ok(r) => Ok(renewed(&args, &r, "native", opts.ca_url.len() > 1)),
            Err(e) => failed(e, args.json, "--ca-url"),
        };
    }
    let mut renewer = Renewer::new(opts.clone());
    if let Some(h) = hook {
        renewer = renewer.with_observer(std::sync::Arc::new(h));
    }
    until_stopped(&rt, "renewal", renewer.run())
}

/// Runs a `renew --daemon` loop (either protocol) until SIGTERM/SIGINT (exit 0); a loop that
/// gives up, renewal having become impossible, is logged as `what` stopped and exits 1.
fn until_stopped(
    rt: &tokio::runtime::Runtime,
    what: &str,
    daemon: impl std::future::Future<Output = mutual_enroll::EnrollError>,
) -> anyhow::Result<ExitCode> {
    rt.block_on(async {
        let stop = stop_signal()?;
        tokio::select! {
            e = daemon => {
                tracing::error!("{what} stopped: {e}");
                Ok(ExitCode::from(1))
            }
            _ = stop => Ok(ExitCode::SUCCESS),
        }
    })
}

/// Reports one renewal (either protocol) and runs the --exec hook after it: exit 1 when the
/// hook fails (the new certificate stays in place).
fn renewed(
    args: &RenewArgs,
    r: &mutual_enroll::Renewed,
    protocol: &'static str,
    several_urls: bool,
) -> ExitCode {
    let exec = args
        .exec
        .as_ref()
        .map(|cmd| mutual_enroll::hook::run_hook(cmd, &args.cert, &args.key, r));
    if args.json {
        use serde_json::json;
        let exec = match &exec {
            None => serde_json::Value::Null,
            Some(o) => json!({"ok": o.is_ok(), "result": o.to_string()}),
        };
        let v = cert_object(
            &r.new,
            [
                ("previous_serial", json!(r.old.serial)),
                ("rekeyed", json!(r.rekeyed)),
                ("cert", json!(args.cert)),
                ("key", json!(args.key)),
                ("ca_url", json!(r.ca_url)),
                ("protocol", json!(protocol)),
                ("exec", exec),
            ],
        );
        println!("{v}");
    } else {
        let what = if protocol == "est" {
            "re-enrolled over EST"
        } else {
            "renewed"
        };
        println!(
            "{what}: serial {} -> {}, valid until {}{}",
            r.old.serial,
            r.new.serial,
            rfc3339(r.new.not_after),
            if r.rekeyed { ", new key" } else { "" }
        );
        if several_urls {
            println!("  by    {}", r.ca_url);
        }
        if let Some(o) = exec.as_ref().filter(|o| o.is_ok()) {
            println!("  exec  {o}");
        }
    }
    if let Some(o) = exec.as_ref().filter(|o| !o.is_ok()) {
        eprintln!(
            "error: --exec failed ({o}); the new certificate {} is in place",
            r.new.serial
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// For `serve`/`connect`: with --ca-url, makes sure `cert`/`key` hold a valid certificate
/// (enrolling with --token if they do not; the pinned root is written to `ca` if that file does
/// not exist yet) and returns the renewal loop to spawn on the proxy's runtime.
pub fn prepare(
    args: &EnrollArgs,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> anyhow::Result<Option<Renewer>> {
    args.check(false)?;
    if args.ca_url.is_empty() {
        return Ok(None);
    }
    let url = CaUrls::parse(&args.ca_url)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let current = mutual_enroll::files::load_current(cert, key);
    let valid = matches!(&current, Ok(c) if c.summary.not_after > now);
    if !valid {
        let token = args.token_value()?;
        let Some(token) = token.as_deref().filter(|t| !t.trim().is_empty()) else {
            let why = match current {
                Ok(_) => "has expired".to_string(),
                Err(e) => format!("is not usable ({e})"),
            };
            anyhow::bail!(
                "{} {why}: pass --token and --root-sha256 to enroll with --ca-url",
                cert.display()
            );
        };
        let pin: Fingerprint = args
            .root_sha256
            .as_deref()
            .context("--token needs --root-sha256")?
            .parse()?;
        let opts = EnrollOptions {
            ca_url: url.clone(),
            token: token.trim().to_string(),
            root: pin,
            key_type: KeyType::default(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            root_out: (!ca.exists()).then(|| ca.to_path_buf()),
        };
        let enrolled = runtime()?
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(60), mutual_enroll::enroll(&opts)).await
            })
            .map_err(|_| anyhow::anyhow!("enrollment with {url} did not finish within 60 s"))?
            .with_context(|| format!("cannot enroll with {url}"))?;
        tracing::info!(
            serial = %enrolled.cert.serial,
            not_after = %mutual_tls::verify::rfc3339(enrolled.cert.not_after),
            ca_url = %enrolled.ca_url,
            "enrolled with {}",
            enrolled.ca_url
        );
        // An existing --ca was kept: renewal (and peers from this CA) need the pinned root in it.
        let has_root = mutual_enroll::files::load_roots(ca)
            .map(|roots| roots.iter().any(|r| enrolled.root.matches(r.as_ref())))
            .unwrap_or(false);
        if !has_root {
            tracing::warn!(
                "{} does not contain the CA root {} that was pinned: renewal will fail until it does",
                ca.display(),
                enrolled.root
            );
        }
    } else if args.has_token() {
        tracing::info!(
            "{} already holds a valid certificate; not enrolling (the token stays unused)",
            cert.display()
        );
    }
    Ok(Some(Renewer::new(RenewOptions {
        ca_url: url,
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        ca: ca.to_path_buf(),
        new_key: None,
    })))
}

/// `renew --daemon --exec CMD`: the hook after each renewal, its outcome in the log (one line
/// with the exit status, and a running count of failures).
struct ExecHook {
    cmd: String,
    cert: PathBuf,
    key: PathBuf,
    failures: std::sync::atomic::AtomicU64,
}

impl mutual_enroll::RenewalObserver for ExecHook {
    fn failed(&self, _near_expiry: bool) {}

    fn renewed(&self, _not_after: i64) {}

    fn renewed_with(&self, r: &mutual_enroll::Renewed) {
        // The renewal task waits for the hook: one hook per renewal, never two at once.
        let out = mutual_enroll::hook::run_hook(&self.cmd, &self.cert, &self.key, r);
        if out.is_ok() {
            tracing::info!(serial = %r.new.serial, result = %out, "--exec hook ran");
        } else {
            let n = self
                .failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            tracing::error!(
                serial = %r.new.serial,
                result = %out,
                hook_failures_total = n,
                "--exec hook failed; the new certificate is in place"
            );
        }
    }
}

/// The proxy's metrics as the renewal task's observer: `mutual_renewal_failures_total` and
/// `mutual_renewal_last_success_timestamp_seconds`, labelled with the listener's name.
struct RenewalMetrics {
    metrics: std::sync::Arc<mutual_proxy::Metrics>,
    listener: String,
}

impl mutual_enroll::RenewalObserver for RenewalMetrics {
    fn failed(&self, _near_expiry: bool) {
        self.metrics.renewal_failed(&self.listener);
    }

    fn renewed(&self, _not_after: i64) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.metrics.renewal_succeeded(&self.listener, now);
    }

    fn trust_bundle(&self, version: u64) {
        self.metrics.trust_bundle_checked(&self.listener, version);
    }
}

/// The renewal task as the proxy spawns it: failures are counted in `metrics` under
/// `listener`; when renewal becomes impossible the proxy keeps serving with what it has and
/// says so (and `/readyz` turns not ready when the certificate expires).
pub async fn run_renewer(
    r: Renewer,
    metrics: std::sync::Arc<mutual_proxy::Metrics>,
    listener: String,
) {
    metrics.renewal_started(&listener);
    let r = r.with_observer(std::sync::Arc::new(RenewalMetrics { metrics, listener }));
    let e = r.run().await;
    tracing::error!(
        "automatic renewal stopped: {e}; the current certificate stays in use until it expires"
    );
}
