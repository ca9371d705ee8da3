//! `mutual cert ...`: issue, list, revoke, inspect, verify (owned by the PKI work; `verify` by the TLS work).
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a certificate.
    Issue {},
    /// Validate a certificate's path to a trusted root (exit 0 valid, 1 invalid).
    Verify(Box<crate::cmd_verify::VerifyArgs>),
}

pub fn run(cmd: CertCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCommand::Verify(a) => crate::cmd_verify::run(*a),
        CertCommand::Issue {} => anyhow::bail!("not yet implemented"),
    }
}
