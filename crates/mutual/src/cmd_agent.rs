//! `mutual agent`: the SPIFFE Workload API on a node (docs/agent.md), and `mutual agent entry
//! create|list|delete`, the registration entries it serves, kept in the CA's inventory like
//! `cert list` reads it. The work is in crates/mutual-agent and mutual-store; this is flags,
//! exit codes and printing.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mutual_store::{EntryStore, RegistrationEntry};

use crate::ca_args::DirArg;
use crate::runtime::{init_logging, runtime, stop_signal, with_store};

/// `mutual agent [--ca-url ...]` or `mutual agent entry ...`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub entry: Option<AgentCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum AgentCommand {
    /// Registration entries: which SPIFFE ID a workload on which node gets.
    #[command(subcommand)]
    Entry(EntryCommand),
}

/// Serve the SPIFFE Workload API on a Unix socket.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// --ca-url (required), and --token/--root-sha256 to enroll the node at start when --cert and
    /// --key do not hold a valid certificate yet (the token's SAN is the node's SPIFFE ID).
    #[command(flatten)]
    pub enroll: crate::cmd_enroll::EnrollArgs,
    /// --est URL instead of --ca-url: enroll the node over EST (RFC 7030) with a factory
    /// certificate (--bootstrap-cert/--bootstrap-key) when --cert/--key hold no valid
    /// certificate yet, trusting --est-ca (default: --ca); then serve, with the same URL as the
    /// CA. The CA's --est-identity names the node (e.g. spiffe://example.org/node/{serial}).
    #[command(flatten)]
    pub est: crate::cmd_est::EstEnrollFlags,
    /// The Unix socket to serve the Workload API on (mode 0666: who gets what is decided by
    /// attestation). Workloads find it through SPIFFE_ENDPOINT_SOCKET=unix://PATH. A stale
    /// socket nobody listens on is replaced; a live one or any other file is refused.
    #[arg(long, value_name = "PATH", required = true)]
    pub socket: Option<PathBuf>,
    /// The node certificate (PEM chain): its SPIFFE ID is the node entries name with --node.
    /// Written by the enrollment with --token when it does not hold a valid certificate.
    #[arg(long, value_name = "FILE", required = true)]
    pub cert: Option<PathBuf>,
    /// The node certificate's private key.
    #[arg(long, value_name = "FILE", required = true)]
    pub key: Option<PathBuf>,
    /// The CA root(s) (PEM): the CA's server certificate is checked against it, and it is the
    /// bundle workloads get. Kept up to date from the CA while the agent runs; written by the
    /// enrollment with --token when it does not exist.
    #[arg(long, value_name = "FILE", required = true)]
    pub ca: Option<PathBuf>,
    /// Do not renew the node certificate (something else, such as `mutual renew --daemon`,
    /// does). By default the agent renews it at two-thirds of its lifetime.
    #[arg(long)]
    pub no_renew: bool,
    /// How often to ask the CA for this node's registration entries: an entry created or
    /// deleted there reaches open Workload API and SDS streams within this (new SVID pushed,
    /// deleted one dropped).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_poll)]
    pub entries_poll: Duration,
    /// Log format on stderr: human or json. The level comes from RUST_LOG.
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,
}

/// `--entries-poll`: at least a second, so that no agent asks the CA in a tight loop.
fn parse_poll(s: &str) -> Result<Duration, String> {
    let d = crate::ca_args::parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err("the entries poll interval must be at least 1s".into());
    }
    Ok(d)
}

#[derive(clap::Subcommand, Debug)]
pub enum EntryCommand {
    /// Assign a SPIFFE ID to the workloads of one node that match every selector.
    ///
    /// Selectors: unix:uid:N, unix:gid:N, unix:path:/abs/path/of/binary, unix:sha256:HEX (of
    /// the binary). Example: mutual agent entry create --spiffe-id spiffe://example.org/web
    /// --selector unix:uid:1000 --node spiffe://example.org/node/n1 --ttl 1h
    Create(EntryCreateArgs),
    /// List the registration entries (all nodes, or one with --node).
    List(EntryListArgs),
    /// Delete a registration entry: agents drop its SVID from open streams within their
    /// --entries-poll and renew it no more.
    Delete(EntryDeleteArgs),
}

#[derive(clap::Args, Debug)]
pub struct EntryCreateArgs {
    /// The SPIFFE ID the workload gets.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: String,
    /// A selector the workload must match (repeatable; all must match).
    #[arg(long = "selector", value_name = "SELECTOR", required = true)]
    pub selectors: Vec<String>,
    /// The SPIFFE ID of the node (the agent's node certificate) whose workloads get it.
    #[arg(long, value_name = "ID")]
    pub node: String,
    /// Lifetime of each SVID (renewed by the agent at half of it).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::ca_args::parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub dir: DirArg,
    /// Print the entry as JSON: id, spiffe_id, selectors, node, ttl (seconds),
    /// created_at(_unix), created_by.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct EntryListArgs {
    /// Only this node's entries.
    #[arg(long, value_name = "ID")]
    pub node: Option<String>,
    #[command(flatten)]
    pub dir: DirArg,
    /// JSON array instead of a table, each entry as `entry create --json` prints it.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct EntryDeleteArgs {
    /// The entry id `entry list` shows.
    pub id: String,
    #[command(flatten)]
    pub dir: DirArg,
    /// Print {"id", "deleted": true}. No such entry: {"error": {reason: not_found, message,
    /// hint}}, exit 1.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: AgentArgs) -> anyhow::Result<ExitCode> {
    match a.entry {
        Some(AgentCommand::Entry(EntryCommand::Create(c))) => create(c),
        Some(AgentCommand::Entry(EntryCommand::List(l))) => list(l),
        Some(AgentCommand::Entry(EntryCommand::Delete(d))) => delete(d),
        None => serve(a.run),
    }
}

fn spiffe_id(flag: &str, v: &str) -> anyhow::Result<mutual_policy::SpiffeId> {
    mutual_policy::SpiffeId::parse(v).with_context(|| format!("{flag} {v:?}"))
}

fn create(a: EntryCreateArgs) -> anyhow::Result<ExitCode> {
    let id = spiffe_id("--spiffe-id", &a.spiffe_id)?;
    let node = spiffe_id("--node", &a.node)?;
    if id.trust_domain() != node.trust_domain() {
        anyhow::bail!(
            "--spiffe-id {id} and --node {node} are in different trust domains; an agent serves its own trust domain's identities"
        );
    }
    let selectors = mutual_agent::selector::parse_all(&a.selectors)?;
    let dir = a.dir.resolve()?;
    // An entry for an ID this CA cannot issue (outside its trust domain), or for SVIDs that
    // would outlive the intermediate that issues them, would never serve an SVID: refused now.
    let config = mutual_pki::ca::read_config(&dir)?;
    config.check_sans(&[mutual_pki::San::Uri(id.to_string())])?;
    crate::ca_args::refuse_outliving_intermediate(&dir, &config, a.ttl, "--ttl", "a certificate")?;
    let by = crate::whoami::actor();
    let entry = RegistrationEntry {
        id: mutual_agent::new_entry_id()?,
        spiffe_id: id.to_string(),
        selectors: selectors.iter().map(ToString::to_string).collect(),
        node: node.to_string(),
        ttl_secs: i64::try_from(a.ttl.as_secs()).context("--ttl")?,
        created_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        created_by: by,
    };
    with_store(&dir, async |store| Ok(store.entry_create(&entry).await?))?;
    if a.json {
        let v = crate::json::entry(&entry);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "created entry {}: {} for node {} when {}",
            entry.id,
            entry.spiffe_id,
            entry.node,
            entry.selectors.join(" and ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn list(a: EntryListArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    let list = with_store(&dir, async |store| {
        Ok(store.entry_list(a.node.as_deref()).await?)
    })?;
    if a.json {
        let rows: Vec<_> = list.iter().map(crate::json::entry).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no registration entries");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<36}  {:<32}  {:<8}  SELECTORS",
        "ID", "SPIFFE ID", "NODE", "TTL"
    );
    for e in &list {
        println!(
            "{:<16}  {:<36}  {:<32}  {:<8}  {}",
            e.id,
            e.spiffe_id,
            e.node,
            mutual_policy::human::duration(u64::try_from(e.ttl_secs).unwrap_or(0)),
            e.selectors.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn delete(a: EntryDeleteArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    let gone = with_store(&dir, async |store| Ok(store.entry_delete(&a.id).await?))?;
    if !gone {
        let listing = "mutual agent entry list";
        let entry = "registration entry";
        return Ok(crate::errors::Report::not_found(
            entry, &a.id, listing, a.json,
        ));
    }
    if a.json {
        println!("{}", serde_json::json!({ "id": a.id, "deleted": true }));
    } else {
        println!("deleted entry {}", a.id);
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(a: RunArgs) -> anyhow::Result<ExitCode> {
    // clap requires each of these unless a subcommand is given.
    let (Some(socket), Some(cert), Some(key), Some(ca)) = (a.socket, a.cert, a.key, a.ca) else {
        anyhow::bail!("mutual agent needs --ca-url, --socket, --cert, --key and --ca");
    };
    let ca_url = match &a.est.est {
        Some(est) => vec![est.clone()],
        None => a.enroll.ca_url.clone(),
    };
    if ca_url.is_empty() {
        anyhow::bail!(
            "mutual agent needs --ca-url (or --est): the online CA that issues the SVIDs"
        );
    }
    init_logging(&a.log_format);
    // Enrolls the node with --token (or over EST with --bootstrap-cert) when --cert/--key hold
    // no valid certificate (exit 2 when that is needed and not possible); the agent runs its
    // own renewer below.
    match &a.est.est {
        Some(url) => {
            a.enroll.check(true)?;
            enroll_est(url, &a.est, &a.enroll, &cert, &key, &ca)?;
        }
        None => drop(crate::cmd_enroll::prepare(&a.enroll, &cert, &key, &ca)?),
    }
    let o = mutual_agent::AgentOptions {
        ca_url: mutual_enroll::CaUrls::parse(&ca_url)?,
        socket,
        cert,
        key,
        ca,
        renew_node: !a.no_renew,
        entries_poll: a.entries_poll,
    };
    // Unreadable or mismatched node files, a node certificate without a SPIFFE ID: exit 2.
    mutual_enroll::files::load_current(&o.cert, &o.key)?;
    mutual_agent::node_id(&o.cert)?;
    runtime()?.block_on(async {
        let stop = stop_signal()?;
        match mutual_agent::run(o, stop).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e @ mutual_agent::AgentError::Serve(_)) => {
                tracing::error!("{e}");
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// `mutual agent --est URL --bootstrap-cert F --bootstrap-key K` (or `--token T`): unless
/// --cert/--key already hold a valid certificate, enroll over EST as `mutual enroll --est` does
/// (the same options), into a private directory beside --cert, then move the key, certificate
/// and root into --key, --cert and --ca.
fn enroll_est(
    url: &str,
    flags: &crate::cmd_est::EstEnrollFlags,
    enroll: &crate::cmd_enroll::EnrollArgs,
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if mutual_enroll::files::load_current(cert, key).is_ok_and(|c| c.summary.not_after > now) {
        return Ok(());
    }
    if flags.bootstrap_cert.is_none() && !enroll.has_token() {
        anyhow::bail!(
            "--est enrolls the node with a factory certificate (--bootstrap-cert and \
             --bootstrap-key) or a token (--token)"
        );
    }
    let dir = mutual_enroll::files::parent(cert);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Private to this process (0700, named by its pid); removed whatever happens below.
    let tmp = dir.join(format!(".est-enroll-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&tmp)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let res = enroll_est_into(url, flags, enroll, &tmp, cert, key, ca);
    let _ = std::fs::remove_dir_all(&tmp);
    res
}

fn enroll_est_into(
    url: &str,
    flags: &crate::cmd_est::EstEnrollFlags,
    enroll: &crate::cmd_enroll::EnrollArgs,
    tmp: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
) -> anyhow::Result<()> {
    // Trust: --est-ca, or the pin --root-sha256, or else --ca when it exists.
    let root_sha256 = enroll.root_sha256.as_deref();
    let est_ca = flags
        .est_ca
        .clone()
        .or_else(|| (root_sha256.is_none() && ca.exists()).then(|| ca.to_path_buf()));
    let o = crate::cmd_est::enroll_options(
        url,
        &crate::cmd_est::EstEnrollFlags {
            est_ca,
            ..flags.clone()
        },
        enroll.token_value()?.as_deref(),
        root_sha256,
        tmp.to_path_buf(),
        "ecdsa-p256",
    )?;
    let e = runtime()?.block_on(mutual_enroll::est::est_enroll(&o))?;
    let [k, c, r] = mutual_enroll::est::out_files(tmp);
    for (from, to) in [(k, key), (c, cert), (r, ca)] {
        std::fs::rename(&from, to).with_context(|| format!("cannot write {}", to.display()))?;
    }
    eprintln!(
        "node enrolled over EST: serial {}, names [{}]",
        e.cert.serial,
        e.cert.sans.join(", ")
    );
    Ok(())
}
