//! `mutual cert ...`: issue, list, revoke, inspect, verify (owned by the PKI work; `verify` by the TLS work).
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a certificate.
    Issue {},
}

pub fn run(cmd: CertCommand) -> anyhow::Result<ExitCode> {
    let _ = cmd;
    anyhow::bail!("not yet implemented")
}
