//! `mutual serve` and `mutual connect`: flags, logging, the tokio runtime (sized by `--threads`),
//! signals and wiring. The proxy itself lives in the mutual-proxy crate.
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mutual_policy::human::parse_duration;
use mutual_proxy::config::{ConnectOpts, ListenerOpts, ServeOpts};
use mutual_proxy::connect::{Connect, ConnectConfig};
use mutual_proxy::serve::{Serve, ServeConfig};
use mutual_proxy::{Audit, Metrics, Shared};

const SERVE_HELP: &str = "\
Every client must present a certificate that chains to --ca, is valid now, carries the clientAuth
purpose and is not revoked (--crl, --crl-from-cdp, --ocsp-from-aia); then the policy decides:
deny unless a rule allows. Only then is the backend dialled. Certificates, key, CA bundle, CRLs
and the policy file are reloaded when they change and on SIGHUP (a bad file keeps the old
configuration). SIGTERM/SIGINT: stop accepting, drain for up to --drain-timeout (a second signal:
at once), exit 0. Durations: 500ms, 10s, 5m, 1h.

Example:
  mutual serve --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\
    --cert server.pem --key server.key --ca root.pem \\
    --allow-spiffe 'spiffe://example.org/ns/prod/*' --audit-log - --metrics 127.0.0.1:9090

With --http, requests are authorized one by one (policy rules may have methods/paths) and the
backend gets the client's identity in X-Forwarded-Client-Cert or Client-Cert (docs/http.md):
  mutual serve --http --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\
    --cert server.pem --key server.key --ca root.pem --policy policy.toml

See docs/proxy.md for the audit log fields and the metrics.";

const CONNECT_HELP: &str = "\
Accepts plaintext on a loopback address and opens an mTLS connection to --remote for each local
client, presenting --cert and verifying the server against --ca and its name (--server-name,
default: the host of --remote) or its exact SPIFFE ID (--expect-spiffe), and with --ocsp its
status at the OCSP responder its certificate names. A failed handshake is logged with its reason
(and audited) and the local connection is closed. Cert, key and CA are
reloaded when they change and on SIGHUP.

Example:
  mutual connect --listen 127.0.0.1:7000 --remote api.internal:8443 \\
    --cert client.pem --key client.key --ca root.pem
  curl http://127.0.0.1:7000/

See docs/proxy.md.";

/// Options `serve` and `connect` share: the listener options (TLS floor, timeouts, limits: the
/// same type as a `[[listener]]` block's keys), observability, runtime.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    #[command(flatten)]
    pub listener: ListenerOpts,

    /// Write one JSON line per connection (`-` for stdout). Fields: ts, listener, peer_addr,
    /// result, reason, identity, tls, bytes_in, bytes_out, duration_ms.
    #[arg(long, value_name = "PATH|-")]
    pub audit_log: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (and /healthz, /readyz), plain HTTP.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Listener name, used as the `listener` label in metrics and audit lines.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Log format on stderr: human or json. The level comes from RUST_LOG (default: info).
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,
}

/// `mutual serve` flags (the subcommand's one-line description lives in main.rs): the listener
/// options and the serve options are the same types as a `[[listener]]` block's keys.
#[derive(clap::Args, Debug)]
#[command(after_help = SERVE_HELP)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub serve: ServeOpts,

    /// Testing aid: refresh CDP CRLs at least this often (and retry failures no later).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub crl_refresh_max: Option<Duration>,

    #[command(flatten)]
    pub enroll: crate::cmd_enroll::EnrollArgs,
}

/// `mutual connect` flags.
#[derive(clap::Args, Debug)]
#[command(after_help = CONNECT_HELP)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub connect: ConnectOpts,

    #[command(flatten)]
    pub enroll: crate::cmd_enroll::EnrollArgs,
}

pub(crate) use crate::runtime::{init_logging, server_runtime as runtime};

fn shared(common: &CommonArgs) -> anyhow::Result<Shared> {
    shared_for(common.audit_log.as_deref())
}

/// One metrics registry and one audit log (`-`, a path, or none) for the process.
pub(crate) fn shared_for(audit_log: Option<&str>) -> anyhow::Result<Shared> {
    let audit = match audit_log {
        Some(spec) => Audit::open(spec)?,
        None => Audit::disabled(),
    };
    Ok(Shared {
        metrics: Arc::new(Metrics::new()),
        audit: Arc::new(audit),
    })
}

/// The listener options, checked as a config file's keys are (the message names the flag).
fn listener_opts(common: &CommonArgs) -> anyhow::Result<&ListenerOpts> {
    if let Some(p) = common.listener.problems().first() {
        anyhow::bail!("{}", p.for_flag());
    }
    Ok(&common.listener)
}

/// What the async part of both commands does once the listener is built: metrics endpoint,
/// reloader, wait for a termination signal, drain.
async fn run_listener(
    common: &CommonArgs,
    shared: &Shared,
    reload_target: Arc<dyn mutual_proxy::reload::Reload>,
    run: impl FnOnce(mutual_proxy::shutdown::Shutdown) -> tokio::task::JoinHandle<usize>,
) -> anyhow::Result<()> {
    let (trigger, shutdown) = mutual_proxy::shutdown::channel();
    // Before the metrics endpoint (the readiness probe) answers: see TerminationSignals.
    let signals = mutual_proxy::shutdown::TerminationSignals::install()
        .context("cannot install signal handlers")?;
    if let Some(addr) = &common.metrics {
        let l = mutual_proxy::bind(addr).await.context("--metrics")?;
        tracing::info!("metrics on http://{}/metrics", l.local_addr()?);
        tokio::spawn(Arc::clone(&shared.metrics).serve_http(l, shutdown.clone()));
    }
    let _watcher =
        mutual_proxy::reload::spawn(reload_target, Arc::clone(&shared.metrics), shutdown.clone())?;
    let task = run(shutdown.clone());
    until_signal_then_drain(
        signals,
        common.listener.drain_timeout.get(),
        move || trigger.fire(),
        async move { task.await.unwrap_or(0) },
    )
    .await
}

/// Waits for SIGTERM/SIGINT, calls `stop`, then waits for `drained` (which yields the
/// connections left open); a second signal while draining means "now".
pub(crate) async fn until_signal_then_drain(
    mut signals: mutual_proxy::shutdown::TerminationSignals,
    drain_timeout: Duration,
    stop: impl FnOnce(),
    drained: impl std::future::Future<Output = usize>,
) -> anyhow::Result<()> {
    let sig = signals.recv().await;
    tracing::info!("{sig}: stopping (drain timeout {drain_timeout:?})");
    stop();
    tokio::select! {
        left = drained => {
            if left == 0 {
                tracing::info!("all connections closed; exiting");
            }
        }
        sig = signals.recv() => {
            tracing::warn!("{sig} again: exiting without waiting for open connections");
        }
    }
    Ok(())
}

pub fn run_serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(&args.common.log_format);
    let (common, enroll) = (args.common.clone(), args.enroll.clone());
    let cfg = serve_config(args)?;
    let listen = common.listener.listen.clone();
    run_one(
        common,
        &enroll,
        cfg.name.clone(),
        listen,
        |shared| Serve::new(cfg, shared),
        Serve::run,
    )
}

/// What `serve` and `connect` do once their listener is described: with --ca-url, enroll if
/// needed (after the flags are known to be good, so a bad command line does not spend the
/// token, and before anything loads the files); then the runtime, the listener, its renewer,
/// and [`run_listener`] until a signal; then the audit log is flushed.
fn run_one<L, F>(
    common: CommonArgs,
    enroll: &crate::cmd_enroll::EnrollArgs,
    name: String,
    listen: String,
    start: impl FnOnce(&Shared) -> Result<Arc<L>, mutual_proxy::ProxyError>,
    run: impl FnOnce(Arc<L>, tokio::net::TcpListener, mutual_proxy::shutdown::Shutdown) -> F
        + Send
        + 'static,
) -> anyhow::Result<ExitCode>
where
    L: mutual_proxy::reload::Reload + 'static,
    F: std::future::Future<Output = usize> + Send + 'static,
{
    let l = &common.listener;
    if l.workload_api.is_some() && !enroll.ca_url.is_empty() {
        anyhow::bail!(
            "--workload-api and --ca-url both give the listener its certificate: use one"
        );
    }
    let renewer = crate::cmd_enroll::prepare(enroll, &l.cert, &l.key, &l.ca)?;
    let rt = runtime(common.threads)?;
    let shared = shared(&common)?;
    let result = rt.block_on(async {
        let (cert, _, _) = l.material_paths();
        let _workload_api = follow_workload_api(&[cert], l.handshake_timeout.get()).await?;
        let listener = start(&shared)?;
        if let Some(r) = renewer {
            let metrics = Arc::clone(&shared.metrics);
            tokio::spawn(crate::cmd_enroll::run_renewer(r, metrics, name));
        }
        let socket = mutual_proxy::bind(&listen).await?;
        let l2 = Arc::clone(&listener);
        run_listener(&common, &shared, listener, move |sd| {
            tokio::spawn(run(l2, socket, sd))
        })
        .await
    });
    shared.audit.flush(Duration::from_secs(2));
    rt.shutdown_timeout(Duration::from_millis(200));
    result.map(|()| ExitCode::SUCCESS)
}

/// For each Workload API source among `paths` ([`mutual_tls::memory`]), once: connect, wait up
/// to `first_within` for the first X.509-SVID, publish it, and keep publishing what the agent
/// pushes (each push reloads the listeners fed by it, as a file change does). The tasks run
/// until the runtime stops.
pub(crate) async fn follow_workload_api(
    paths: &[std::path::PathBuf],
    first_within: Duration,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let sources: std::collections::BTreeSet<String> = paths
        .iter()
        .filter_map(|p| mutual_tls::memory::source_of(p))
        .collect();
    let mut tasks = Vec::new();
    for source in sources {
        if mutual_tls::memory::has(&source) {
            continue;
        }
        let Some((uri, spiffe_id)) = mutual_tls::memory::parse_source(&source) else {
            continue;
        };
        let src = mutual_agent::client::Source {
            socket: uri.strip_prefix("unix://").unwrap_or(&uri).into(),
            uri,
            spiffe_id,
        };
        let key = source.clone();
        let task = mutual_agent::client::follow(src, first_within, move |m| {
            mutual_tls::memory::publish(&key, m.chain, m.key, m.bundle);
        })
        .await?;
        tasks.push(task);
    }
    Ok(tasks)
}

/// The listener the `serve` flags describe (a `[[listener]]` block of `mutual run --config`
/// builds the same `ServeConfig`: cmd_run's tests compare them).
pub(crate) fn serve_config(args: ServeArgs) -> anyhow::Result<ServeConfig> {
    let s = &args.serve;
    let policy_flags = s.inline_policy()?;
    if policy_flags.is_empty() && s.policy.is_none() {
        return Err(mutual_proxy::ProxyError::NoPolicy.into());
    }
    let opts = listener_opts(&args.common)?;
    if let Some(p) = s.problems(opts).first() {
        anyhow::bail!("{}", p.for_flag());
    }
    let mut cdp = s
        .cdp(opts, mutual_proxy::cdp::default_cache_dir)
        .context("--crl-from-cdp: set --crl-cache-dir (neither MUTUAL_HOME nor HOME is set)")?;
    if let Some(c) = &mut cdp {
        c.max_refresh = args.crl_refresh_max;
    }
    let name = args.common.name.clone().unwrap_or_else(|| "serve".into());
    Ok(s.config(name, opts, policy_flags, cdp)?)
}

pub fn run_connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    init_logging(&args.common.log_format);
    let (common, enroll) = (args.common.clone(), args.enroll.clone());
    let (cfg, first) = connect_config(args)?;
    let name = cfg.name.clone();
    let start = |shared: &Shared| Connect::new(cfg, shared);
    run_one(
        common,
        &enroll,
        name,
        first.to_string(),
        start,
        Connect::run,
    )
}

/// The listener the `connect` flags describe and the address to bind (a `[[listener]]` block
/// of `mutual run --config` builds the same `ConnectConfig`).
pub(crate) fn connect_config(args: ConnectArgs) -> anyhow::Result<(ConnectConfig, SocketAddr)> {
    let opts = listener_opts(&args.common)?;
    if let Some(p) = args.connect.problems(opts).first() {
        anyhow::bail!("{}", p.for_flag());
    }
    let listen: Vec<SocketAddr> = opts
        .listen
        .to_socket_addrs()
        .with_context(|| format!("--listen {}", opts.listen))?
        .collect();
    let first = *listen
        .first()
        .with_context(|| format!("--listen {}: no address", opts.listen))?;
    for a in &listen {
        mutual_proxy::connect::check_loopback(*a, args.connect.allow_remote_clients)?;
    }
    let name = args.common.name.clone().unwrap_or_else(|| "connect".into());
    Ok((args.connect.config(name, opts), first))
}
