//! `mutual serve` and `mutual connect` (owned by the proxy work).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {}

#[derive(clap::Args, Debug)]
pub struct ConnectArgs {}

pub fn run_serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("not yet implemented")
}

pub fn run_connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("not yet implemented")
}
