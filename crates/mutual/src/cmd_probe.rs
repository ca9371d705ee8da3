//! `mutual probe` (owned by the probe work).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("not yet implemented")
}
