//! `mutual`: the one binary. CLI parsing and wiring only; the work lives in the library crates.
//!
//! Exit codes (DESIGN.md): 0 success; 1 the thing checked failed (verify rejected, probe failed,
//! denied); 2 bad usage or configuration (any `Err` that reaches `main`).
#![forbid(unsafe_code)]

mod ca_args;
mod cmd_acme;
mod cmd_agent;
mod cmd_batch;
mod cmd_ca;
mod cmd_ca_rotate;
mod cmd_ca_serve;
mod cmd_cert;
mod cmd_demo;
mod cmd_docs;
mod cmd_enroll;
mod cmd_est;
mod cmd_lint;
mod cmd_probe;
mod cmd_proxy;
mod cmd_run;
mod cmd_token;
mod cmd_verify;
mod errors;
mod json;
mod runtime;
mod whoami;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Mutual TLS for the people who run services: a private CA with the whole certificate
/// lifecycle, a sidecar/gateway proxy that enforces mTLS with identity-based authorization, and a
/// probe that explains any handshake.
#[derive(Parser, Debug)]
#[command(
    name = "mutual",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create and operate the certificate authority (root + issuing intermediate).
    #[command(subcommand)]
    Ca(cmd_ca::CaCommand),
    /// Issue, list, revoke, inspect and verify certificates.
    #[command(subcommand)]
    Cert(cmd_cert::CertCommand),
    /// Terminate mTLS in front of an unmodified backend (sidecar or gateway).
    Serve(Box<cmd_proxy::ServeArgs>),
    /// Originate mTLS for an unmodified local client.
    Connect(Box<cmd_proxy::ConnectArgs>),
    /// Run every listener of a config file in one process (reloaded listener by listener).
    Run(cmd_run::RunArgs),
    /// Check a config file for `mutual run`.
    #[command(subcommand)]
    Config(cmd_run::ConfigCommand),
    /// Explain an endpoint's TLS handshake: does it enforce mTLS, and why does it fail?
    Probe(Box<cmd_probe::ProbeArgs>),
    /// Run a self-contained tour: CA, certificates, proxy, allowed and denied requests.
    Demo(cmd_demo::DemoArgs),
    /// Get a certificate from the online CA with a one-time token (key generated locally).
    Enroll(Box<cmd_enroll::EnrollCmdArgs>),
    /// Renew a certificate from the online CA over mTLS, once or as a daemon.
    Renew(Box<cmd_enroll::RenewArgs>),
    /// Operate the ACME front door of `mutual ca serve --acme` (External Account Binding keys).
    #[command(subcommand)]
    Acme(cmd_acme::AcmeCommand),
    /// The SPIFFE Workload API on this node (`--ca-url ... --socket ...`), and the
    /// registration entries it serves (`entry create|list|delete`).
    Agent(Box<cmd_agent::AgentArgs>),
    /// One-time enrollment tokens for the online CA (`mutual ca serve`).
    #[command(subcommand)]
    Token(cmd_token::TokenCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd_docs::CompletionsArgs),
    /// Print the man page, or write one page per command with --out DIR.
    Man(cmd_docs::ManArgs),
}

/// Whether the command prints a report and exits (`cert list`, `probe`, `token create`, the
/// demo's tour...) rather than serving connections or running as a daemon (serve, connect,
/// run, `ca serve`, agent, `renew --daemon`).
fn prints_and_exits(c: &Command) -> bool {
    match c {
        Command::Serve(_) | Command::Connect(_) | Command::Run(_) => false,
        Command::Ca(cmd_ca::CaCommand::Serve(_)) => false,
        Command::Agent(a) => a.entry.is_some(),
        Command::Renew(a) => !a.daemon,
        _ => true,
    }
}

/// `mutual cert list | head` ends as `ls | head` does: quietly, with the status a shell gives a
/// process SIGPIPE ended (141), once head has read enough. It panicked with "failed printing to
/// stdout: Broken pipe" and a backtrace. Rust ignores SIGPIPE (a write to a closed socket must
/// fail, not kill the process) and the workspace forbids the unsafe call that would restore it,
/// so the panic `println!` raises for a closed stdout is what ends the command.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // `println!`'s "failed printing to stdout: Broken pipe", clap_complete's "failed to
        // write completion file: ... BrokenPipe": these commands touch no socket that panics.
        if msg.contains("Broken pipe") || msg.contains("BrokenPipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // With --json anywhere on the line, errors are JSON too (docs/json.md), even the ones clap
    // raises before the command's own `json` field exists.
    let json = args.iter().any(|a| a == "--json");
    let command = errors::command_name(&args);
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if json && e.use_stderr() => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let help = if command.is_empty() {
                "see `mutual --help`".to_string()
            } else {
                format!("see `mutual {command} --help`")
            };
            errors::Report {
                reason: "usage".into(),
                message: first.trim_start_matches("error: ").to_string(),
                hint: help,
            }
            .print(true);
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let report = prints_and_exits(&cli.command);
    if report {
        quiet_broken_pipe();
    }
    let result = match cli.command {
        Command::Ca(c) => cmd_ca::run(c),
        // `cert issue --batch` builds on `cert issue`'s flags and helpers, so it is dispatched
        // here rather than from cmd_cert (which would make the two modules import each other).
        Command::Cert(cmd_cert::CertCommand::Issue(a)) if a.batch.is_some() => cmd_batch::run(*a),
        Command::Cert(c) => cmd_cert::run(c),
        Command::Serve(a) => cmd_proxy::run_serve(*a),
        Command::Connect(a) => cmd_proxy::run_connect(*a),
        Command::Run(a) => cmd_run::run(a),
        Command::Config(c) => cmd_run::run_config(c),
        Command::Probe(a) => cmd_probe::run(*a),
        Command::Demo(a) => cmd_demo::run(a),
        Command::Enroll(a) => cmd_enroll::run_enroll(*a),
        Command::Renew(a) => cmd_enroll::run_renew(*a),
        Command::Token(c) => cmd_token::run(c),
        Command::Acme(c) => cmd_acme::run(c),
        Command::Agent(a) => cmd_agent::run(*a),
        Command::Completions(a) => cmd_docs::run_completions(a),
        Command::Man(a) => cmd_docs::run_man(a),
    };
    match result {
        Ok(code) => code,
        // A report written through errors::ReportOut whose reader left: as the panic hook does.
        Err(e) if report && errors::is_stdout_closed(&e) => ExitCode::from(141),
        Err(e) => {
            errors::report(&e, &command).print(json);
            ExitCode::from(2)
        }
    }
}
