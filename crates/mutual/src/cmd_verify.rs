//! `mutual cert verify` (owned by the TLS work): full path validation with a reason label.
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("not yet implemented")
}
