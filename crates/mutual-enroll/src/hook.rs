//! `mutual renew --exec 'CMD'`: a command run after each renewal, so that servers that cannot
//! watch their files (nginx, HAProxy, PostgreSQL) reload the new certificate
//! (`systemctl reload nginx`). It runs once per renewal, through `sh -c`, with the new
//! certificate's facts in its environment; its failure is reported and never undoes the
//! renewal: the new files are already in place.
use std::path::Path;
use std::process::Command;

use crate::Renewed;

/// How the hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exit status 0.
    Ok,
    /// A non-zero exit status, or killed by a signal (`None`).
    Failed { status: Option<i32> },
    /// It could not be started at all.
    NotStarted { detail: String },
}

impl HookOutcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, HookOutcome::Ok)
    }
}

impl std::fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookOutcome::Ok => f.write_str("exit status 0"),
            HookOutcome::Failed { status: Some(c) } => write!(f, "exit status {c}"),
            HookOutcome::Failed { status: None } => f.write_str("killed by a signal"),
            HookOutcome::NotStarted { detail } => write!(f, "could not start: {detail}"),
        }
    }
}

/// Runs `cmd` with `sh -c` and waits for it. Its environment carries MUTUAL_CERT, MUTUAL_KEY,
/// MUTUAL_SERIAL, MUTUAL_PREVIOUS_SERIAL and MUTUAL_NOT_AFTER (RFC 3339); its output goes where
/// ours goes.
pub fn run_hook(cmd: &str, cert: &Path, key: &Path, r: &Renewed) -> HookOutcome {
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("MUTUAL_CERT", cert)
        .env("MUTUAL_KEY", key)
        .env("MUTUAL_SERIAL", &r.new.serial)
        .env("MUTUAL_PREVIOUS_SERIAL", &r.old.serial)
        .env(
            "MUTUAL_NOT_AFTER",
            mutual_tls::verify::rfc3339(r.new.not_after),
        )
        .stdin(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => HookOutcome::Ok,
        Ok(s) => HookOutcome::Failed { status: s.code() },
        Err(e) => HookOutcome::NotStarted {
            detail: e.to_string(),
        },
    }
}
