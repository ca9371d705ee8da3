//! How a failure reaches the person or the script that ran `mutual`: one message in which each
//! cause appears once (anyhow's `{:#}` repeats a cause that an error's own text already
//! includes), a `reason` from a small documented set (docs/json.md), and a hint that names flags
//! of the command that failed. As text on stderr, or with `--json` as
//! `{"error": {"reason", "message", "hint"}}` on stdout; the exit code is 2 either way.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use mutual_enroll::EnrollError;
use mutual_pki::PkiError;
use mutual_store::StoreError;
use mutual_tls::TlsError;

/// An error a command raises with its own reason and hint.
#[derive(Debug)]
pub struct UserError {
    pub reason: &'static str,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// An error with this reason and hint (the hint should name this command's flags).
pub fn user(
    reason: &'static str,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> anyhow::Error {
    UserError {
        reason,
        message: message.into(),
        hint: hint.into(),
    }
    .into()
}

/// The reader of stdout left (`mutual cert list | head`): not an error to report. main ends
/// a report command that meets it with 141, as a SIGPIPE death, and prints nothing.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// A writer for a command's report on stdout whose broken pipe is marked [`StdoutClosed`]
/// (a store or socket error of the same kind stays an error).
pub struct ReportOut<W>(pub W);

impl<W: std::io::Write> std::io::Write for ReportOut<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b).map_err(mark_closed)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(mark_closed)
    }
}

fn mark_closed(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

/// Whether `e` is stdout's reader leaving ([`ReportOut`]).
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<StdoutClosed>()
            || c.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// What is printed for a failed command.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct Report {
    /// One of the reasons in docs/json.md, or for `enroll`/`renew` the CA's refusal label.
    pub reason: std::borrow::Cow<'static, str>,
    pub message: String,
    pub hint: String,
}

impl Report {
    pub fn json(&self) -> String {
        serde_json::json!({ "error": self }).to_string()
    }

    /// A lookup or state refusal of a management command (`not_found`, `not_pending`): printed
    /// as [`Report::print`] does, and exit 1, the text form's code, since nothing was wrong
    /// with the command line.
    pub fn refuse(
        reason: &'static str,
        message: String,
        hint: impl Into<String>,
        json: bool,
    ) -> std::process::ExitCode {
        Report {
            reason: reason.into(),
            message,
            hint: hint.into(),
        }
        .print(json);
        std::process::ExitCode::from(1)
    }

    /// [`Report::refuse`] with `not_found` for an id a management command was given: "no
    /// {what} {id}", the hint naming the command that lists them.
    pub fn not_found(what: &str, id: &str, listing: &str, json: bool) -> std::process::ExitCode {
        let hint = format!("see `{listing}`");
        Report::refuse("not_found", format!("no {what} {id}"), hint, json)
    }

    /// Prints the report where it belongs: JSON on stdout, or text on stderr.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json());
        } else {
            eprintln!("error: {}", self.message);
            if !self.hint.is_empty() {
                eprintln!("hint: {}", self.hint);
            }
        }
    }
}

/// The error chain as one line, each cause once: a cause whose text is already in the message
/// (because the outer error's `Display` includes it) is not repeated.
pub fn message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

/// The command as typed (`cert issue`, `probe`), for hints that point at its `--help`.
pub fn command_name(args: &[String]) -> String {
    let words: Vec<&str> = args
        .iter()
        .skip(1)
        .map(String::as_str)
        .take_while(|a| !a.starts_with('-'))
        .take(2)
        .collect();
    match words.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        [first, second] if ["ca", "cert", "config", "token"].contains(first) => {
            format!("{first} {second}")
        }
        [first, ..] => (*first).to_string(),
    }
}

/// Reason and hint for an error that reached `main`.
pub fn report(e: &anyhow::Error, command: &str) -> Report {
    let message = message(e);
    let help = if command.is_empty() {
        "see `mutual --help`".to_string()
    } else {
        format!("see `mutual {command} --help`")
    };
    let (reason, hint) = classify(e, &help);
    Report {
        reason: reason.into(),
        message,
        hint,
    }
}

fn classify(e: &anyhow::Error, help: &str) -> (&'static str, String) {
    let io_hint = || "check the path and its permissions".to_string();
    let malformed_hint = || {
        "give a PEM or DER file of the right kind (look at it with `mutual cert inspect FILE`)"
            .to_string()
    };
    for cause in e.chain() {
        if let Some(u) = cause.downcast_ref::<UserError>() {
            return (u.reason, u.hint.clone());
        }
        if let Some(p) = cause.downcast_ref::<PkiError>() {
            return classify_pki(p, help);
        }
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return classify_store(s);
        }
        if let Some(h) = cause.downcast_ref::<mutual_hsm::HsmError>() {
            return classify_hsm(h);
        }
        // The probe's file faults are mutual-tls's own error, carried transparently.
        let tls = cause.downcast_ref::<TlsError>().or_else(|| {
            match cause.downcast_ref::<mutual_probe::ProbeError>() {
                Some(mutual_probe::ProbeError::File(t)) => Some(t),
                _ => None,
            }
        });
        if let Some(t) = tls {
            return match t {
                TlsError::Io { .. } => ("io", io_hint()),
                TlsError::KeyMismatch { .. } => (
                    "malformed",
                    "give the key generated with this certificate".into(),
                ),
                TlsError::InvalidName { .. } => ("usage", help.to_string()),
                TlsError::Hsm(h) => classify_hsm(h),
                _ => ("malformed", malformed_hint()),
            };
        }
        if cause.is::<mutual_probe::ProbeError>() {
            // What is left of it (the file faults were taken above) is bad usage.
            return ("usage", help.to_string());
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::AddrInUse {
                return (
                    "io",
                    "another process listens on that address: stop it or choose another port"
                        .into(),
                );
            }
            return ("io", io_hint());
        }
    }
    ("usage", help.to_string())
}

/// The hint for a command pointed at a directory without a CA (the inventory's view or the CA's).
const NO_CA: &str = "pass the --dir that holds the CA, or create one with `mutual ca init`";

fn classify_store(s: &StoreError) -> (&'static str, String) {
    match s {
        StoreError::NotFound { .. } => (
            "not_found",
            "list the inventory with `mutual cert list` (serials are hex, colons optional)".into(),
        ),
        StoreError::Missing { .. } => ("config", NO_CA.into()),
        _ => (
            "io",
            "check the CA directory (--dir) and its permissions".into(),
        ),
    }
}

/// A token key's failure: reason `pkcs11`, the hint by what went wrong (docs/keys.md).
fn classify_hsm(h: &mutual_hsm::HsmError) -> (&'static str, String) {
    use mutual_hsm::HsmError as H;
    let hint = match h {
        H::NotAModule { .. } | H::ModuleMissing { .. } | H::NoModule { .. } => {
            "give the path of the token's PKCS#11 library (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"
        }
        H::WrongPin { .. } | H::NoPin { .. } | H::PinFile { .. } => {
            "give the token's user PIN with --pkcs11-pin-file FILE, ?pin-source=FILE or $MUTUAL_PKCS11_PIN"
        }
        H::TokenNotFound { .. } => "list the tokens with `pkcs11-tool --module MODULE -L`",
        H::ObjectNotFound { .. } | H::Ambiguous { .. } | H::KeyExists { .. } => {
            "list the token's keys with `pkcs11-tool --module MODULE --login -O`"
        }
        _ => "see docs/keys.md",
    };
    ("pkcs11", hint.into())
}

fn classify_pki(p: &PkiError, help: &str) -> (&'static str, String) {
    use PkiError as P;
    match p {
        P::Io { .. } => ("io", "check the path and its permissions".into()),
        P::AlreadyInitialised { .. } => (
            "exists",
            "use another --dir, or keep using the CA that is there".into(),
        ),
        P::NotInitialised { .. } => ("config", NO_CA.into()),
        P::BatchOfAnotherCa { .. } => (
            "exists",
            "resume the batch with the --dir of the CA that started it, or use another --out"
                .into(),
        ),
        P::WrongPassword { .. } | P::EmptyPassword => (
            "password",
            "give the CA password with --password-file FILE or $MUTUAL_CA_PASSWORD".into(),
        ),
        P::Config { .. } => ("config", "fix the file named in the message".into()),
        P::OutsideTrustDomain { .. } | P::NotPermitted { .. } | P::PublicSuffixWildcard { .. } => (
            "name_not_allowed",
            "request a name this CA may issue (see its mutual-ca.toml)".into(),
        ),
        P::MalformedCsr { .. } | P::CsrBadSignature => (
            "malformed",
            "give a PKCS#10 CSR in PEM or DER, as `openssl req -new` writes it".into(),
        ),
        P::Malformed { .. } => (
            "malformed",
            "give a PEM or DER file of the right kind (look at it with `mutual cert inspect FILE`)"
                .into(),
        ),
        P::WeakKey { .. } => (
            "weak_key",
            "use ECDSA P-256/P-384, Ed25519 or RSA >= 2048".into(),
        ),
        P::UnknownSerial { .. } => (
            "not_found",
            "list the inventory with `mutual cert list` (serials are hex, colons optional)".into(),
        ),
        P::Store(s) => classify_store(s),
        P::Hsm(h) => classify_hsm(h),
        P::Generate { .. } | P::Key { .. } | P::P12 { .. } => (
            "other",
            "this is unexpected: please report it with the message".into(),
        ),
        _ => ("usage", help.to_string()),
    }
}

/// Without `--force`, refuses (exit 2) when any of `files` exists: checked before anything is
/// sent to the CA.
pub fn refuse_existing<'a>(
    force: bool,
    files: impl IntoIterator<Item = &'a PathBuf>,
) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    for p in files {
        if p.exists() {
            anyhow::bail!(
                "{} already exists; pass --force to replace it (nothing was sent to the CA)",
                p.display()
            );
        }
    }
    Ok(())
}

/// Configuration mistakes exit 2 (via `Err`); the CA saying no, the pin not matching or the CA
/// being unreachable exit 1 (`enroll`, `renew`, and their `--est` forms), reported with the
/// CA's or the handshake's reason label (on stdout as JSON with `json`, docs/json.md).
/// `url_flag` is the flag that named the CA (`--ca-url` or `--est`): the hint names it.
pub fn failed(e: EnrollError, json: bool, url_flag: &str) -> anyhow::Result<ExitCode> {
    match e {
        EnrollError::BadUrl { .. }
        | EnrollError::BadFingerprint { .. }
        | EnrollError::File { .. }
        | EnrollError::Pki(_)
        | EnrollError::Tls(_) => Err(e.into()),
        other => {
            let reason = other.label().to_string();
            let hint: String = match reason.as_str() {
                "token_used" | "token_expired" | "token_invalid" => {
                    "ask the CA operator for a new token (`mutual token create`)".into()
                }
                "name_not_allowed" => {
                    "ask only for names the token (or the certificate) carries".into()
                }
                "root_mismatch" => {
                    "check --root-sha256 with the CA operator; the token was not sent and still works"
                        .into()
                }
                "unreachable" | "timeout" | "bad_response" => format!(
                    "check {url_flag} and that the CA runs; `renew --daemon` retries by itself"
                ),
                "revoked" | "expired" => "enroll again with a new token".into(),
                _ => "see the failure modes in docs/enrollment.md".into(),
            };
            Report {
                reason: reason.into(),
                message: other.to_string(),
                hint,
            }
            .print(json);
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_appear_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(PkiError::Io {
            path: "x.pem".into(),
            error: io,
        })
        .context("cannot issue");
        assert_eq!(message(&e), "cannot issue: x.pem: gone");
        let inner = anyhow::anyhow!("the 'year' component could not be parsed");
        let e = inner.context("--at: the 'year' component could not be parsed");
        assert_eq!(
            message(&e),
            "--at: the 'year' component could not be parsed"
        );
    }

    #[test]
    fn command_names() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_name(&a(&["mutual", "cert", "issue", "x"])),
            "cert issue"
        );
        assert_eq!(
            command_name(&a(&["mutual", "probe", "h:1", "--json"])),
            "probe"
        );
        assert_eq!(command_name(&a(&["mutual", "--json"])), "");
    }
}
