//! `mutual run --config FILE` (many listeners from one config file, reloaded listener by
//! listener) and `mutual config check FILE` (every error of a config file, with its line, before
//! it goes live). The file format and the reload logic live in mutual-proxy (`config`,
//! `supervise`); this is flags, output and exit codes.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mutual_proxy::config::{self, ConfigError, Diagnostic, ListenerKind, RunConfig};
use mutual_proxy::supervise::{ConfigReload, Supervisor};

const RUN_HELP: &str = "\
Runs every [[listener]] of the config file (serve and connect, each with its own certificates, CA
bundle, CRLs, policy and backend) in one process, with one metrics endpoint and one audit log.
The file is checked as a whole first: any error, and nothing starts (exit 2).

Reload: when the file changes or on SIGHUP, the new file is checked; a broken edit changes nothing
(logged with its line, counted in mutual_config_reloads_total{result=\"failure\"}). Otherwise a
listener whose block did not change keeps running untouched; a changed block is swapped (same
address: the socket and the open connections are kept, and connections whose peer the new policy
or CRLs no longer allow are closed); a removed block drains; a new one starts. Each listener's
certificates, CRLs and policy file are also watched on their own.

Example:
  mutual config check mutual.toml && mutual run --config mutual.toml

See docs/config.md for every key.";

const CHECK_HELP: &str = "\
Exit 0: the file is valid (a summary of its listeners is printed). Exit 2: every error is printed
as FILE:LINE:COL: message. Besides the syntax and the keys, the check loads every certificate,
key, CA bundle, CRL and policy file the listeners name, as `mutual run` would.";

#[derive(clap::Args, Debug)]
#[command(after_help = RUN_HELP)]
pub struct RunArgs {
    /// The config file (TOML); paths in it are relative to its directory.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check a config file: every error with its line and column (exit 2), or a summary (exit 0).
    #[command(after_help = CHECK_HELP)]
    Check(CheckArgs),
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The config file to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the result as JSON: {"ok", "errors": [{file, line, col, message}], "listeners"}.
    #[arg(long)]
    pub json: bool,
}

pub fn run_config(c: ConfigCommand) -> anyhow::Result<ExitCode> {
    match c {
        ConfigCommand::Check(a) => check(a),
    }
}

/// Parses the file, then loads each listener's material; every problem as a diagnostic.
fn check_all(path: &std::path::Path) -> Result<RunConfig, ConfigError> {
    check_material(path, config::load(path)?)
}

/// Loads each listener's material (a listener that enrolls and has no certificate yet is
/// skipped: enrollment writes it at start).
fn check_material(path: &std::path::Path, cfg: RunConfig) -> Result<RunConfig, ConfigError> {
    let mut diagnostics = Vec::new();
    for spec in &cfg.listeners {
        let (cert, key, _) = spec.files();
        if spec.enroll.is_some() && !(cert.exists() && key.exists()) {
            continue;
        }
        if let Err(e) = mutual_proxy::supervise::check_listener(spec) {
            diagnostics.push(Diagnostic {
                line: spec.line,
                col: 1,
                message: format!("listener {:?}: {e}", spec.name),
            });
        }
    }
    if diagnostics.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            diagnostics,
        })
    }
}

fn target(spec: &config::ListenerSpec) -> String {
    match &spec.kind {
        ListenerKind::Serve(s) => s.backend.to_string(),
        ListenerKind::Connect(c) => c.remote.clone(),
    }
}

fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let file = a.file.display().to_string();
    match check_all(&a.file) {
        Ok(cfg) => {
            if a.json {
                let listeners: Vec<_> = cfg
                    .listeners
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "name": l.name, "kind": l.kind_label(), "listen": l.listen,
                            "target": target(l), "line": l.line,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "file": file, "errors": [], "listeners": listeners})
                );
            } else {
                println!("{file}: ok, {} listener(s)", cfg.listeners.len());
                for l in &cfg.listeners {
                    let rules = match &l.kind {
                        ListenerKind::Serve(s) => format!(
                            "  ({} inline rule(s){}{})",
                            s.policy_flags.rules().len(),
                            s.policy_file
                                .as_ref()
                                .map(|p| format!(", policy file {}", p.display()))
                                .unwrap_or_default(),
                            if s.tls.crls.is_empty() {
                                String::new()
                            } else {
                                format!(", {} CRL file(s)", s.tls.crls.len())
                            }
                        ),
                        ListenerKind::Connect(_) => String::new(),
                    };
                    println!(
                        "  {:<16} {:<8} {} -> {}{rules}",
                        l.name,
                        l.kind_label(),
                        l.listen,
                        target(l)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let diagnostics = match &e {
                ConfigError::Invalid { diagnostics, .. } => diagnostics.clone(),
                other => vec![Diagnostic {
                    line: 0,
                    col: 0,
                    message: other.to_string(),
                }],
            };
            if a.json {
                let errors: Vec<_> = diagnostics
                    .iter()
                    .map(|d| {
                        serde_json::json!({"file": file, "line": d.line, "col": d.col, "message": d.message})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "file": file, "errors": errors, "listeners": []})
                );
            } else {
                match &e {
                    ConfigError::Invalid { .. } => eprintln!("{e}"),
                    other => eprintln!("error: {other}"),
                }
                eprintln!("{file}: {} error(s)", diagnostics.len());
            }
            Ok(ExitCode::from(2))
        }
    }
}

/// The `serve`/`connect` enrollment flags a listener's `ca_url`/`token_file`/`root_sha256`
/// stand for (the token read from its file).
fn enroll_args(e: &config::Enrollment) -> anyhow::Result<crate::cmd_enroll::EnrollArgs> {
    let token = match &e.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("token_file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    Ok(crate::cmd_enroll::EnrollArgs {
        // lead: with c-ha's failover, pass the whole list (EnrollArgs.ca_url: Vec<String>).
        ca_url: e.ca_url.first().cloned(),
        token,
        root_sha256: e.root_sha256.clone(),
    })
}

/// Enrolls (when needed) every listener with `ca_url`, before anything loads their files;
/// returns the renewers to start, with their listener's name.
fn enroll_all(cfg: &RunConfig) -> anyhow::Result<Vec<(String, mutual_enroll::Renewer)>> {
    let mut renewers = Vec::new();
    for spec in &cfg.listeners {
        let Some(e) = &spec.enroll else { continue };
        let (cert, key, ca) = spec.files();
        let r = crate::cmd_enroll::prepare(&enroll_args(e)?, cert, key, ca)
            .with_context(|| format!("listener {:?}", spec.name))?;
        if let Some(r) = r {
            renewers.push((spec.name.clone(), r));
        }
    }
    Ok(renewers)
}

pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let invalid = |e: ConfigError| -> anyhow::Result<ExitCode> {
        match e {
            e @ ConfigError::Invalid { .. } => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
            e => Err(e.into()),
        }
    };
    let cfg = match config::load(&a.config) {
        Ok(c) => c,
        Err(e) => return invalid(e),
    };
    crate::cmd_proxy::init_logging(&cfg.log_format);
    // After the file is known to be good (a broken file does not spend a token), before
    // anything loads the listeners' files.
    let renewers = enroll_all(&cfg)?;
    let cfg = match check_material(&a.config, cfg) {
        Ok(c) => c,
        Err(e) => return invalid(e),
    };
    let rt = crate::cmd_proxy::runtime(cfg.threads)?;
    let shared = crate::cmd_proxy::shared_for(cfg.audit_log.as_deref())?;
    let drain = cfg
        .listeners
        .iter()
        .map(|l| match &l.kind {
            ListenerKind::Serve(s) => s.limits.drain_timeout,
            ListenerKind::Connect(c) => c.limits.drain_timeout,
        })
        .max()
        .unwrap_or(Duration::from_secs(30));
    let metrics_addr = cfg.metrics.clone();
    let path = a.config.clone();
    let result = rt.block_on(async {
        let (trigger, shutdown) = mutual_proxy::shutdown::channel();
        // Before any listener or the metrics endpoint answers: see TerminationSignals.
        let signals = mutual_proxy::shutdown::TerminationSignals::install()
            .context("cannot install signal handlers")?;
        let sup = Supervisor::start(&path, cfg, &shared)
            .await
            .context("cannot start the listeners")?;
        for (name, r) in renewers {
            tokio::spawn(crate::cmd_enroll::run_renewer(
                r,
                Arc::clone(&shared.metrics),
                name,
            ));
        }
        if let Some(addr) = &metrics_addr {
            let l = mutual_proxy::bind(addr).await.context("metrics")?;
            tracing::info!("metrics on http://{}/metrics", l.local_addr()?);
            tokio::spawn(Arc::clone(&shared.metrics).serve_http(l, shutdown.clone()));
        }
        let _watcher = mutual_proxy::reload::spawn(
            Arc::new(ConfigReload {
                sup: Arc::clone(&sup),
                handle: tokio::runtime::Handle::current(),
            }),
            Arc::clone(&shared.metrics),
            shutdown.clone(),
        )?;
        tracing::info!(config = %path.display(), "running; edit the file or send SIGHUP to reload");
        let s2 = Arc::clone(&sup);
        crate::cmd_proxy::until_signal_then_drain(
            signals,
            drain,
            move || trigger.fire(),
            async move { s2.shutdown().await },
        )
        .await
    });
    shared.audit.flush(Duration::from_secs(2));
    rt.shutdown_timeout(Duration::from_millis(200));
    result.map(|()| ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clap::Parser;

    /// A `[[listener]]` block and the equivalent `serve`/`connect` flags build the same config,
    /// so a listener behaves the same whichever way it was started.
    #[test]
    fn flags_and_config_file_build_the_same_listener() {
        let d = tempfile::tempdir().unwrap();
        for f in ["s.pem", "s.key", "root.pem", "crl.pem", "p.toml"] {
            std::fs::write(d.path().join(f), "[[allow]]\ndns = \"x.example\"\n").unwrap();
        }
        let p = |f: &str| d.path().join(f).display().to_string();
        let cli = crate::Cli::try_parse_from([
            "mutual",
            "serve",
            "--name",
            "api",
            "--listen",
            "127.0.0.1:8443",
            "--backend",
            "127.0.0.1:8080",
            "--cert",
            &p("s.pem"),
            "--key",
            &p("s.key"),
            "--ca",
            &p("root.pem"),
            "--crl",
            &p("crl.pem"),
            "--crl-leaf-only",
            "--allow-spiffe",
            "spiffe://t/a/*",
            "--allow-dns",
            "*.ops.example",
            "--policy",
            &p("p.toml"),
            "--idle-timeout",
            "1m",
            "--drain-timeout",
            "5s",
            "--max-connections",
            "7",
            "--min-tls",
            "1.2",
        ])
        .unwrap();
        let crate::Command::Serve(args) = cli.command else {
            panic!()
        };
        let from_flags = crate::cmd_proxy::serve_config(*args).unwrap();
        let text = r#"
[[listener]]
name = "api"
kind = "serve"
listen = "127.0.0.1:8443"
backend = "127.0.0.1:8080"
cert = "s.pem"
key = "s.key"
ca = "root.pem"
crls = ["crl.pem"]
crl_leaf_only = true
allow_spiffe = ["spiffe://t/a/*"]
allow_dns = ["*.ops.example"]
policy = "p.toml"
idle_timeout = "1m"
drain_timeout = "5s"
max_connections = 7
min_tls = "1.2"

[[listener]]
name = "out"
kind = "connect"
listen = "127.0.0.1:7000"
remote = "api.internal:8443"
expect_spiffe = "spiffe://t/api"
cert = "s.pem"
key = "s.key"
ca = "root.pem"
"#;
        let cfg = config::parse(text, d.path()).unwrap();
        let ListenerKind::Serve(from_file) = &cfg.listeners[0].kind else {
            panic!()
        };
        assert_eq!(format!("{from_flags:?}"), format!("{from_file:?}"));

        let cli = crate::Cli::try_parse_from([
            "mutual",
            "connect",
            "--name",
            "out",
            "--listen",
            "127.0.0.1:7000",
            "--remote",
            "api.internal:8443",
            "--expect-spiffe",
            "spiffe://t/api",
            "--cert",
            &p("s.pem"),
            "--key",
            &p("s.key"),
            "--ca",
            &p("root.pem"),
        ])
        .unwrap();
        let crate::Command::Connect(args) = cli.command else {
            panic!()
        };
        let (from_flags, _) = crate::cmd_proxy::connect_config(*args).unwrap();
        let ListenerKind::Connect(from_file) = &cfg.listeners[1].kind else {
            panic!()
        };
        assert_eq!(format!("{from_flags:?}"), format!("{from_file:?}"));
    }
}
