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
        // Material from the Workload API arrives at start (`follow_workload_api`).
        if mutual_tls::memory::source_of(cert).is_some_and(|s| !mutual_tls::memory::has(&s)) {
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
/// stand for.
fn enroll_args(e: &config::Enrollment) -> crate::cmd_enroll::EnrollArgs {
    // The token file is read only when an enrollment needs it (`EnrollArgs::token_value`): a
    // listener whose certificate is valid starts after the spent token's file is gone.
    crate::cmd_enroll::EnrollArgs {
        // Every replica of the list: mutual-enroll fails over between them.
        ca_url: e.ca_url.clone(),
        token: None,
        token_file: e.token_file.clone(),
        root_sha256: e.root_sha256.clone(),
    }
}

/// `mutual run`'s enrollment: a listener's `ca_url`/`token_file`/`root_sha256` do what
/// `serve --ca-url --token --root-sha256` do (enroll when the files are not usable yet, then
/// renew), at start and for a block a reload adds or changes.
struct RunEnroller {
    metrics: Arc<mutual_proxy::Metrics>,
}

impl mutual_proxy::supervise::Enroller for RunEnroller {
    fn enroll(
        &self,
        spec: &config::ListenerSpec,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, mutual_proxy::ProxyError> {
        let Some(e) = &spec.enroll else {
            return Ok(None);
        };
        let (cert, key, ca) = spec.files();
        let renewer = crate::cmd_enroll::prepare(&enroll_args(e), cert, key, ca)
            .map_err(|e| mutual_proxy::ProxyError::Enroll(format!("{e:#}")))?;
        Ok(renewer.map(|r| {
            tokio::spawn(crate::cmd_enroll::run_renewer(
                r,
                Arc::clone(&self.metrics),
                spec.name.clone(),
            ))
        }))
    }
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
        // Enrollment runs after the file is known to be good (a broken file does not spend a
        // token) and before anything loads the listeners' files.
        let enroller = Arc::new(RunEnroller {
            metrics: Arc::clone(&shared.metrics),
        });
        // Listeners fed by the Workload API: their first SVID before they load it.
        let mut workload_api = Vec::new();
        for spec in &cfg.listeners {
            let wait = match &spec.kind {
                ListenerKind::Serve(s) => s.handshake_timeout,
                ListenerKind::Connect(c) => c.handshake_timeout,
            };
            let cert = spec.files().0.to_path_buf();
            workload_api.extend(crate::cmd_proxy::follow_workload_api(&[cert], wait).await?);
        }
        let sup = Supervisor::start(&path, cfg, &shared, Some(enroller))
            .await
            .context("cannot start the listeners")?;
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
    use mutual_proxy::connect::ConnectConfig;
    use mutual_proxy::http::Mode;
    use mutual_proxy::serve::ServeConfig;

    type Same<T> = fn(&T, &T) -> bool;
    type Set<T> = fn(&T) -> bool;

    /// One row per option: the flags, the config key(s), how to compare the two built values,
    /// and a check that the option changed the listener (so a row cannot pass by both sides
    /// ignoring it).
    struct Row<T> {
        flags: Vec<String>,
        keys: String,
        same: Same<T>,
        set: Set<T>,
    }

    fn row<T>(flags: &[&str], keys: &str, same: Same<T>, set: Set<T>) -> Row<T> {
        Row {
            flags: flags.iter().map(|s| s.to_string()).collect(),
            keys: keys.to_string(),
            same,
            set,
        }
    }

    fn files() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in ["s.pem", "s.key", "root.pem", "crl.pem", "p.toml"] {
            std::fs::write(d.path().join(f), "[[allow]]\ndns = \"x.example\"\n").unwrap();
        }
        std::fs::create_dir(d.path().join("cache")).unwrap();
        d
    }

    /// A listener kind's two ways in: the command line and the `[[listener]]` block every row
    /// adds to (`@` in a flag stands for the files' directory), and how to take the built
    /// listener out of each.
    struct Kind<T> {
        argv: &'static [&'static str],
        block: &'static str,
        from_cli: fn(crate::Command) -> T,
        from_file: fn(&ListenerKind) -> Option<T>,
    }

    const SERVE: Kind<ServeConfig> = Kind {
        argv: &[
            "mutual",
            "serve",
            "--name",
            "api",
            "--listen",
            "127.0.0.1:8443",
            "--backend",
            "127.0.0.1:8080",
            "--cert",
            "@s.pem",
            "--key",
            "@s.key",
            "--ca",
            "@root.pem",
            "--policy",
            "@p.toml",
        ],
        block: "[[listener]]\nname = \"api\"\nkind = \"serve\"\nlisten = \"127.0.0.1:8443\"\n\
                backend = \"127.0.0.1:8080\"\ncert = \"s.pem\"\nkey = \"s.key\"\nca = \"root.pem\"\n\
                policy = \"p.toml\"\n",
        from_cli: |c| match c {
            crate::Command::Serve(a) => crate::cmd_proxy::serve_config(*a).unwrap(),
            _ => panic!("not a serve command line"),
        },
        from_file: |k| match k {
            ListenerKind::Serve(s) => Some((**s).clone()),
            ListenerKind::Connect(_) => None,
        },
    };

    const CONNECT: Kind<ConnectConfig> = Kind {
        argv: &[
            "mutual",
            "connect",
            "--name",
            "out",
            "--listen",
            "127.0.0.1:7000",
            "--remote",
            "api.internal:8443",
            "--cert",
            "@s.pem",
            "--key",
            "@s.key",
            "--ca",
            "@root.pem",
        ],
        block: "[[listener]]\nname = \"out\"\nkind = \"connect\"\nlisten = \"127.0.0.1:7000\"\n\
                remote = \"api.internal:8443\"\ncert = \"s.pem\"\nkey = \"s.key\"\nca = \"root.pem\"\n",
        from_cli: |c| match c {
            crate::Command::Connect(a) => crate::cmd_proxy::connect_config(*a).unwrap().0,
            _ => panic!("not a connect command line"),
        },
        from_file: |k| match k {
            ListenerKind::Connect(c) => Some((**c).clone()),
            ListenerKind::Serve(_) => None,
        },
    };

    /// The listener the kind's flags plus `flags` build, and the one its block plus `keys` builds.
    fn pair<T>(d: &std::path::Path, k: &Kind<T>, flags: &[String], keys: &str) -> (T, T) {
        let at = |s: &str| s.replace('@', &format!("{}/", d.display()));
        // --allow-any stands alone: its row builds the listener without the base's policy.
        let any = flags.iter().any(|f| f == "--allow-any");
        let base: Vec<&str> = match k.argv.iter().position(|a| *a == "--policy") {
            Some(i) if any => [&k.argv[..i], &k.argv[i + 2..]].concat(),
            _ => k.argv.to_vec(),
        };
        let argv: Vec<String> = base
            .iter()
            .map(|s| at(s))
            .chain(flags.iter().map(|s| at(s)))
            .collect();
        let cli = crate::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let block = match any {
            true => k.block.replace("policy = \"p.toml\"\n", ""),
            false => k.block.to_string(),
        };
        let text = format!("{block}{keys}\n");
        let cfg = config::parse(&text, d).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let from_file = (k.from_file)(&cfg.listeners[0].kind).expect("the block's kind");
        ((k.from_cli)(cli.command), from_file)
    }

    /// Every row: its flag and its key build the same value, and both reach the listener.
    fn check_rows<T>(d: &std::path::Path, k: &Kind<T>, rows: &[Row<T>]) {
        for r in rows {
            let (a, b) = pair(d, k, &r.flags, &r.keys);
            assert!(
                (r.same)(&a, &b),
                "{:?} / {:?}: flag and key differ",
                r.flags,
                r.keys
            );
            assert!(
                (r.set)(&a),
                "{:?}: the flag did not reach the listener",
                r.flags
            );
            assert!(
                (r.set)(&b),
                "{:?}: the key did not reach the listener",
                r.keys
            );
        }
    }

    /// Many options at once: the flags and the keys build listeners equal in every row's value.
    #[test]
    fn flags_and_config_file_build_the_same_listener() {
        let d = files();
        let flags: Vec<String> = [
            "--crl",
            "@crl.pem",
            "--crl-leaf-only",
            "--allow-spiffe",
            "spiffe://t/a/*",
            "--allow-dns",
            "*.ops.example",
            "--idle-timeout",
            "1m",
            "--drain-timeout",
            "5s",
            "--max-connections",
            "7",
            "--min-tls",
            "1.2",
        ]
        .map(String::from)
        .to_vec();
        let keys = "crls = [\"crl.pem\"]\ncrl_leaf_only = true\nallow_spiffe = [\"spiffe://t/a/*\"]\n\
                    allow_dns = [\"*.ops.example\"]\nidle_timeout = \"1m\"\ndrain_timeout = \"5s\"\n\
                    max_connections = 7\nmin_tls = \"1.2\"";
        let (a, b) = pair(d.path(), &SERVE, &flags, keys);
        for r in serve_rows() {
            assert!((r.same)(&a, &b), "{:?} differs", r.flags);
        }
        assert_eq!(a.policy_flags.rules().len(), 2);
        let flags = ["--expect-spiffe", "spiffe://t/api"].map(String::from);
        let (a, b) = pair(
            d.path(),
            &CONNECT,
            &flags,
            "expect_spiffe = \"spiffe://t/api\"",
        );
        for r in connect_rows() {
            assert!((r.same)(&a, &b), "{:?} differs", r.flags);
        }
    }

    /// The rows of the options every listener has (`ListenerOpts`): the same fields on both
    /// kinds' configs, so written once for both (a macro: the closures are typed per kind).
    macro_rules! listener_opts_rows {
        () => {
            vec![
                row(
                    &[],
                    "",
                    |a, b| {
                        a.name == b.name
                            && a.tls.cert == b.tls.cert
                            && a.tls.key == b.tls.key
                            && a.tls.ca == b.tls.ca
                    },
                    |a| a.tls.cert.ends_with("s.pem"),
                ),
                row(
                    &["--min-tls", "1.2"],
                    "min_tls = \"1.2\"",
                    |a, b| a.tls.allow_tls12 == b.tls.allow_tls12,
                    |a| a.tls.allow_tls12,
                ),
                row(
                    &["--handshake-timeout", "3s"],
                    "handshake_timeout = \"3s\"",
                    |a, b| a.handshake_timeout == b.handshake_timeout,
                    |a| a.handshake_timeout.as_secs() == 3,
                ),
                row(
                    &["--idle-timeout", "1h30m"],
                    "idle_timeout = \"1h30m\"",
                    |a, b| a.idle_timeout == b.idle_timeout,
                    |a| a.idle_timeout.as_secs() == 5400,
                ),
                row(
                    &["--connect-timeout", "1.5s"],
                    "connect_timeout = 1.5",
                    |a, b| a.connect_timeout == b.connect_timeout,
                    |a| a.connect_timeout.as_millis() == 1500,
                ),
                row(
                    &["--drain-timeout", "5s"],
                    "drain_timeout = 5",
                    |a, b| a.limits.drain_timeout == b.limits.drain_timeout,
                    |a| a.limits.drain_timeout.as_secs() == 5,
                ),
                row(
                    &["--max-connections", "7"],
                    "max_connections = 7",
                    |a, b| a.limits.max_connections == b.limits.max_connections,
                    |a| a.limits.max_connections == Some(7),
                ),
                row(
                    &["--max-connection-lifetime", "1h"],
                    "max_connection_lifetime = \"1h\"",
                    |a, b| a.max_connection_lifetime == b.max_connection_lifetime,
                    |a| a.max_connection_lifetime.is_some(),
                ),
            ]
        };
    }

    fn serve_rows() -> Vec<Row<ServeConfig>> {
        let mut rows: Vec<Row<ServeConfig>> = vec![
            row(
                &[],
                "",
                |a, b| a.backend == b.backend && a.policy_file == b.policy_file,
                |a| a.policy_file.is_some(),
            ),
            row(
                &["--crl", "@crl.pem"],
                "crls = [\"crl.pem\"]",
                |a, b| a.tls.crls == b.tls.crls,
                |a| a.tls.crls.len() == 1,
            ),
            row(
                &["--crl", "@crl.pem", "--crl-leaf-only"],
                "crls = [\"crl.pem\"]\ncrl_leaf_only = true",
                |a, b| a.tls_options.revocation == b.tls_options.revocation,
                |a| a.tls_options.revocation.leaf_only,
            ),
            row(
                &["--allow-any"],
                "allow_any = true",
                |a, b| a.policy_flags.rules() == b.policy_flags.rules(),
                |a| a.policy_flags.rules().len() == 1,
            ),
            row(
                &["--http"],
                "mode = \"http\"",
                |a, b| a.mode == b.mode,
                |a| a.mode == Mode::Http,
            ),
            row(
                &["--http", "--forward-client-cert", "both"],
                "mode = \"http\"\nforward_client_cert = \"both\"",
                |a, b| a.http.forward_client_cert == b.http.forward_client_cert,
                |a| a.http.forward_client_cert != Default::default(),
            ),
            row(
                &["--http", "--forward-client-cert", "none"],
                "mode = \"http\"\nforward_client_cert = \"none\"",
                |a, b| a.http.forward_client_cert == b.http.forward_client_cert,
                |a| !a.http.forward_client_cert.xfcc() && !a.http.forward_client_cert.rfc9440(),
            ),
            row(
                &["--http", "--forward-client-cert-details", "cert,chain"],
                "mode = \"http\"\nforward_client_cert_details = [\"cert\", \"chain\"]",
                |a, b| a.http.details == b.http.details,
                |a| a.http.details != Default::default(),
            ),
            row(
                &["--proxy-protocol", "v2"],
                "proxy_protocol = \"v2\"",
                |a, b| a.proxy_protocol == b.proxy_protocol,
                |a| a.proxy_protocol.is_some(),
            ),
            row(
                &["--end-on-peer-expiry"],
                "end_on_peer_expiry = true",
                |a, b| a.end_on_peer_expiry == b.end_on_peer_expiry,
                |a| a.end_on_peer_expiry,
            ),
            row(
                &["--crl-from-cdp", "--crl-cache-dir", "@cache"],
                "crl_from_cdp = true\ncrl_cache_dir = \"cache\"",
                |a, b| match (&a.crl_from_cdp, &b.crl_from_cdp) {
                    (Some(x), Some(y)) => {
                        x.deny_unknown == y.deny_unknown
                            && x.cache_dir == y.cache_dir
                            && x.fetch_timeout == y.fetch_timeout
                            && x.max_bytes == y.max_bytes
                    }
                    (None, None) => true,
                    _ => false,
                },
                |a| a.crl_from_cdp.is_some(),
            ),
            row(
                &[
                    "--crl-from-cdp",
                    "--crl-cache-dir",
                    "@cache",
                    "--revocation-unknown",
                    "allow",
                ],
                "crl_from_cdp = true\ncrl_cache_dir = \"cache\"\nrevocation_unknown = \"allow\"",
                |a, b| {
                    a.crl_from_cdp.as_ref().map(|c| c.deny_unknown)
                        == b.crl_from_cdp.as_ref().map(|c| c.deny_unknown)
                        && a.tls_options.revocation == b.tls_options.revocation
                },
                |a| a.crl_from_cdp.as_ref().is_some_and(|c| !c.deny_unknown),
            ),
            row(
                &["--ocsp-from-aia"],
                "ocsp_from_aia = true",
                |a, b| a.ocsp_from_aia == b.ocsp_from_aia,
                |a| a.ocsp_from_aia.as_ref().is_some_and(|o| o.deny_unknown),
            ),
            row(
                &["--ocsp-from-aia", "--revocation-unknown", "allow"],
                "ocsp_from_aia = true\nrevocation_unknown = \"allow\"",
                |a, b| {
                    a.ocsp_from_aia == b.ocsp_from_aia
                        && a.tls_options.revocation == b.tls_options.revocation
                },
                |a| a.ocsp_from_aia.as_ref().is_some_and(|o| !o.deny_unknown),
            ),
        ];
        // The --allow-* patterns: each flag and its key give the same single rule.
        for (flag, key, v) in [
            ("--allow-spiffe", "allow_spiffe", "spiffe://t/a/*"),
            ("--allow-dns", "allow_dns", "*.ops.example"),
            ("--allow-cn", "allow_cn", "web"),
            ("--allow-ou", "allow_ou", "ops"),
        ] {
            rows.push(row(
                &[flag, v],
                &format!("{key} = [\"{v}\"]"),
                |a, b| a.policy_flags.rules() == b.policy_flags.rules(),
                |a| a.policy_flags.rules().len() == 1,
            ));
        }
        rows.push(row(
            &["--profile", "strict"],
            "profile = \"strict\"",
            |a, b| a.tls_options.profile == b.tls_options.profile,
            |a| a.tls_options.profile == mutual_tls::Profile::Strict,
        ));
        rows.append(&mut listener_opts_rows!());
        rows
    }

    fn connect_rows() -> Vec<Row<ConnectConfig>> {
        let mut rows: Vec<Row<ConnectConfig>> = vec![
            row(
                &[],
                "",
                |a, b| a.remote == b.remote,
                |a| a.remote == "api.internal:8443",
            ),
            row(
                &["--server-name", "api.example"],
                "server_name = \"api.example\"",
                |a, b| a.tls.server_name == b.tls.server_name,
                |a| a.tls.server_name.is_some(),
            ),
            row(
                &["--expect-spiffe", "spiffe://t/api"],
                "expect_spiffe = \"spiffe://t/api\"",
                |a, b| a.tls.expect_spiffe == b.tls.expect_spiffe,
                |a| a.tls.expect_spiffe.is_some(),
            ),
            row(
                &["--ocsp"],
                "ocsp = true",
                |a, b| a.ocsp == b.ocsp,
                |a| a.ocsp.as_ref().is_some_and(|o| o.deny_unknown),
            ),
            row(
                &["--ocsp", "--revocation-unknown", "allow"],
                "ocsp = true\nrevocation_unknown = \"allow\"",
                |a, b| a.ocsp == b.ocsp,
                |a| a.ocsp.as_ref().is_some_and(|o| !o.deny_unknown),
            ),
        ];
        rows.push(row(
            &["--profile", "strict"],
            "profile = \"strict\"",
            |a, b| a.profile == b.profile,
            |a| a.profile == mutual_tls::Profile::Strict,
        ));
        rows.append(&mut listener_opts_rows!());
        rows
    }

    /// Every serve option: its flag and its config key build the same value.
    #[test]
    fn each_serve_option_flag_and_key_build_the_same_listener() {
        let d = files();
        let rows = serve_rows();
        check_rows(d.path(), &SERVE, &rows);
        // The defaults are the same too (no flag, no key).
        let (a, b) = pair(d.path(), &SERVE, &[], "");
        assert_eq!(
            (
                a.handshake_timeout,
                a.idle_timeout,
                a.connect_timeout,
                a.limits.drain_timeout,
                a.tls.allow_tls12,
                a.mode,
                a.http.forward_client_cert
            ),
            (
                b.handshake_timeout,
                b.idle_timeout,
                b.connect_timeout,
                b.limits.drain_timeout,
                b.tls.allow_tls12,
                b.mode,
                b.http.forward_client_cert
            )
        );
    }

    /// `k` without its certificate, key and CA (flags and keys), for `--workload-api`.
    fn without_files<T>(k: &Kind<T>) -> Kind<T> {
        let mut argv = Vec::new();
        let mut it = k.argv.iter();
        while let Some(a) = it.next() {
            if ["--cert", "--key", "--ca"].contains(a) {
                it.next();
            } else {
                argv.push(*a);
            }
        }
        let block: String = k
            .block
            .lines()
            .filter(|l| !["cert =", "key =", "ca ="].iter().any(|p| l.starts_with(p)))
            .map(|l| format!("{l}\n"))
            .collect();
        Kind {
            argv: argv.leak(),
            block: block.leak(),
            from_cli: k.from_cli,
            from_file: k.from_file,
        }
    }

    /// `--workload-api` / `workload_api` (with `--workload-spiffe-id` / `workload_spiffe_id`)
    /// instead of the three files: the flag and the key feed the listener from the same memory
    /// source, for serve and connect alike.
    #[test]
    fn workload_api_flag_and_key_build_the_same_listener() {
        const API: &str = "unix:///run/mutual/agent.sock";
        let (serve_wapi, connect_wapi) = (without_files(&SERVE), without_files(&CONNECT));
        let d = files();
        let flags = [
            "--workload-api",
            API,
            "--workload-spiffe-id",
            "spiffe://t/api",
        ];
        let keys = format!("workload_api = \"{API}\"\nworkload_spiffe_id = \"spiffe://t/api\"");
        let want = mutual_tls::memory::path(
            &mutual_tls::memory::source(API, Some("spiffe://t/api")),
            mutual_tls::memory::Part::Key,
        );
        check_rows(
            d.path(),
            &serve_wapi,
            &[row(
                &flags,
                &keys,
                |a, b| (&a.tls.cert, &a.tls.key, &a.tls.ca) == (&b.tls.cert, &b.tls.key, &b.tls.ca),
                |a| mutual_tls::memory::is_memory(&a.tls.cert),
            )],
        );
        let (a, _) = pair(d.path(), &serve_wapi, &flags.map(String::from), &keys);
        assert_eq!(a.tls.key, want);
        check_rows(
            d.path(),
            &connect_wapi,
            &[row(
                &flags,
                &keys,
                |a, b| (&a.tls.cert, &a.tls.key, &a.tls.ca) == (&b.tls.cert, &b.tls.key, &b.tls.ca),
                |a| {
                    a.tls.key
                        == mutual_tls::memory::path(
                            &mutual_tls::memory::source(API, Some("spiffe://t/api")),
                            mutual_tls::memory::Part::Key,
                        )
                },
            )],
        );
        // A block with the files and workload_api, or with neither: one clear line each.
        let both = format!("{}cert = \"s.pem\"\n{keys}\n", serve_wapi.block);
        let e = format!("{:?}", config::parse(&both, d.path()).unwrap_err());
        assert!(
            e.contains(
                "workload_api replaces cert, key and ca: give one or the other, not cert as well"
            ),
            "{e}"
        );
        let enrolling = format!("{}{keys}\nca_url = \"https://ca:9443\"\n", serve_wapi.block);
        let e = format!("{:?}", config::parse(&enrolling, d.path()).unwrap_err());
        assert!(
            e.contains("workload_api and ca_url both give the listener its certificate: use one"),
            "{e}"
        );
        let e = format!(
            "{:?}",
            config::parse(serve_wapi.block, d.path()).unwrap_err()
        );
        assert!(
            e.contains(
                "cert is required (so are key and ca), unless --workload-api / workload_api"
            ),
            "{e}"
        );
    }

    /// Every connect option: its flag and its config key build the same value.
    #[test]
    fn each_connect_option_flag_and_key_build_the_same_listener() {
        let d = files();
        check_rows(d.path(), &CONNECT, &connect_rows());
    }
}
