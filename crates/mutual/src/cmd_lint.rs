//! `mutual cert lint FILE...`: every RFC 5280 / CA/Browser-Forum profile violation in a
//! certificate, a chain or a CRL (the rules of `mutual_tls::lint`, the same ones the strict
//! verification profile enforces), so an operator can tell whether certificates made elsewhere
//! are well-formed before trusting them. Also the self-check our own CA runs on what it makes.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mutual_tls::lint::{self, FileReport, Severity};

/// Exit 0 when no file has an error (warnings are reported only), 1 when any has one, 2 when a
/// file cannot be read or holds no certificate or CRL.
#[derive(clap::Args, Debug)]
pub struct LintArgs {
    /// Certificate, chain (leaf first) or CRL files, PEM or DER.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print one JSON object: {"files": [{"file", "certificates", "crls", "findings"}],
    /// "errors", "warnings"}.
    #[arg(long)]
    pub json: bool,
}

fn read(path: &Path) -> anyhow::Result<FileReport> {
    let bytes = std::fs::read(path).map_err(|e| {
        crate::errors::user(
            "bad_input",
            format!("cannot read {}: {e}", path.display()),
            "give a certificate, chain or CRL file (PEM or DER)",
        )
    })?;
    lint::lint_bytes(&bytes).map_err(|why| {
        crate::errors::user(
            "bad_input",
            format!("{}: {why}", path.display()),
            "give a certificate, chain or CRL file (PEM or DER)",
        )
    })
}

pub fn run(args: LintArgs) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for f in &args.files {
        reports.push((f.clone(), read(f)?));
    }
    let count = |s: Severity| {
        reports
            .iter()
            .flat_map(|(_, r)| r.findings.iter())
            .filter(|f| f.severity == s)
            .count()
    };
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    if args.json {
        let files: Vec<_> = reports
            .iter()
            .map(|(f, r)| {
                serde_json::json!({
                    "file": f,
                    "certificates": r.certificates,
                    "crls": r.crls,
                    "findings": r.findings,
                })
            })
            .collect();
        let v = serde_json::json!({"files": files, "errors": errors, "warnings": warnings});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (f, r) in &reports {
            println!(
                "{}: {} certificate(s), {} CRL(s), {} finding(s)",
                f.display(),
                r.certificates,
                r.crls,
                r.findings.len()
            );
            for x in &r.findings {
                println!(
                    "  {:<7} {:<36} {} {:?}\n          {} [{}]",
                    x.severity.label(),
                    x.rule,
                    x.role,
                    x.subject,
                    x.message,
                    x.section
                );
            }
        }
        println!("{errors} error(s), {warnings} warning(s)");
    }
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// [`check_own`] for an issuing intermediate the CA just made (`ca init`, `rotate-intermediate`,
/// `rotate-root --activate`). One finding is the operator's choice, not a bug:
/// `--permitted-dns .example` (the leading-dot, subdomains-only form OpenSSL and webpki accept)
/// is written as given, and RFC 5280 4.2.1.10 has no such syntax; say what that costs instead
/// of failing (a rotation failed this way after the new intermediate was already in use).
pub fn check_own_intermediate(
    path: &Path,
    config: &mutual_pki::ca::CaConfig,
) -> anyhow::Result<()> {
    const LEADING_DOT: &[(&str, &str)] = &[(
        "name-constraints-dns-invalid",
        "--permitted-dns with a leading period is OpenSSL's subdomains-only form: webpki and \
         OpenSSL honour it, but verifiers with the strict profile (and pyca/cryptography) refuse \
         this CA's chains; without the period the constraint also permits the domain itself",
    )];
    let choice = if config.permitted_dns.iter().any(|d| d.starts_with('.')) {
        LEADING_DOT
    } else {
        &[]
    };
    check_own(path, "intermediate certificate", choice, None)
}

/// Our CA's self-check on a file it has just written: an error-severity finding there is a
/// bug in mutual, so the command fails loudly, naming the rule. `operator_choice` lists rules
/// an explicit operator setting produces (they are printed as a warning on stderr instead);
/// `only_role` limits the check to one role (`leaf`: a chain file whose CA certificates
/// `ca init` checked already).
pub fn check_own(
    path: &Path,
    what: &str,
    operator_choice: &[(&str, &str)],
    only_role: Option<&str>,
) -> anyhow::Result<()> {
    let report = read(path)?;
    let mut errors = Vec::new();
    for f in report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error && only_role.is_none_or(|r| f.role == r))
    {
        match operator_choice.iter().find(|(rule, _)| *rule == f.rule) {
            Some((_, why)) => eprintln!("warning: the {what}: {f}; {why}"),
            None => errors.push(f.to_string()),
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(crate::errors::user(
        "internal",
        format!(
            "bug: the {what} mutual just made ({}) fails its own lint: {}",
            path.display(),
            errors.join("; ")
        ),
        "please report this with the output of `mutual cert lint` on the file",
    ))
}
