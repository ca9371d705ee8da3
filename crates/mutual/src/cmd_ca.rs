//! `mutual ca ...`: CA creation and operation (owned by the PKI work).
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum CaCommand {
    /// Create a new root and issuing intermediate.
    Init {},
}

pub fn run(cmd: CaCommand) -> anyhow::Result<ExitCode> {
    let _ = cmd;
    anyhow::bail!("not yet implemented")
}
