//! `mutual demo`: the README's first command. In a few seconds and without any setup it shows
//! what mutual does: a private CA, certificates with SPIFFE identities, `serve` in front of an
//! echo backend, `connect` beside it, and three clients: one allowed, one authenticated but
//! denied by policy, one without a certificate. Everything runs in this process on 127.0.0.1;
//! the exit code says whether every step behaved as expected (so CI can run it too).
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mutual_pki::ca::{Ca, InitOptions, IssueOptions, IssueRequest, KeySource, OutputFiles};
use mutual_pki::{KeyType, San, Usage};
use mutual_policy::Policy;
use mutual_proxy::accept::Limits;
use mutual_proxy::connect::{Connect, ConnectConfig};
use mutual_proxy::serve::{Serve, ServeConfig};
use mutual_proxy::{Audit, Metrics, Shared};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALLOWED: &str = "spiffe://demo.mutual/client/allowed";
const DENIED: &str = "spiffe://demo.mutual/client/denied";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keep the CA, certificates and audit log in DIR (a new or empty directory: the demo
    /// writes root.pem, server.pem, ... and would replace what is there) instead of a
    /// temporary directory removed at the end.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let (dir, temporary) = match &args.keep {
        Some(d) => {
            refuse_non_empty(d)?;
            (d.clone(), false)
        }
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let d =
                std::env::temp_dir().join(format!("mutual-demo-{}-{nanos}", std::process::id()));
            (d, true)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = rt.block_on(demo(&dir, !temporary));
    rt.shutdown_timeout(Duration::from_millis(200));
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let all_ok = result?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--keep DIR` must be new or empty: the demo's files (root.pem, server.pem, ca/...) would
/// replace an operator's own, such as a CA directory's root.pem.
fn refuse_non_empty(d: &Path) -> anyhow::Result<()> {
    let holds = match std::fs::read_dir(d) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) if d.exists() => true,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", d.display())),
    };
    if holds {
        return Err(crate::errors::user(
            "exists",
            format!(
                "--keep {} is not a new or empty directory; nothing was changed",
                d.display()
            ),
            "give a directory that does not exist yet (the demo creates it)",
        ));
    }
    Ok(())
}

struct Files {
    root: PathBuf,
    server: (PathBuf, PathBuf),
    allowed: (PathBuf, PathBuf),
    denied: (PathBuf, PathBuf),
}

/// The issuance of one demo certificate, written as `STEM.pem` and `STEM.key` in `dir` by the
/// CA's own transaction (the same as `mutual cert issue`).
fn issue_to(dir: &Path, stem: &str, name: &str, sans: Vec<San>, usage: Usage) -> IssueRequest {
    IssueRequest {
        profile: IssueOptions {
            name: name.into(),
            sans,
            usage,
            ttl: Duration::from_secs(3600),
            ..Default::default()
        },
        key: KeySource::Generate(KeyType::EcdsaP256),
        token: None,
        output: Some(OutputFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
            p12: None,
            force: false,
            journal: None,
        }),
    }
}

fn paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

async fn make_pki(dir: &Path) -> anyhow::Result<Files> {
    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir)?;
    let ca = Ca::init(
        &ca_dir,
        &InitOptions {
            name: "Mutual Demo CA".into(),
            ..Default::default()
        },
        b"demo-only-password",
    )
    .await
    .context("creating the demo CA")?;
    let root = dir.join("root.pem");
    std::fs::write(&root, ca.root_pem())?;
    println!(
        "  CA \"Mutual Demo CA\" (root + intermediate, ECDSA P-256), root sha256 {}",
        ca.root_fingerprint_sha256()
    );
    let s = ca
        .issue(issue_to(
            dir,
            "server",
            "localhost",
            vec!["dns:localhost".parse()?, "ip:127.0.0.1".parse()?],
            Usage::Server,
        ))
        .await?;
    println!(
        "  server certificate  localhost            serial {}",
        s.serial_hex
    );
    let a = ca
        .issue(issue_to(
            dir,
            "allowed",
            "allowed",
            vec![format!("uri:{ALLOWED}").parse()?],
            Usage::Client,
        ))
        .await?;
    println!("  client certificate  {ALLOWED}  serial {}", a.serial_hex);
    let d = ca
        .issue(issue_to(
            dir,
            "denied",
            "denied",
            vec![format!("uri:{DENIED}").parse()?],
            Usage::Client,
        ))
        .await?;
    println!("  client certificate  {DENIED}   serial {}", d.serial_hex);
    Ok(Files {
        root,
        server: paths(dir, "server"),
        allowed: paths(dir, "allowed"),
        denied: paths(dir, "denied"),
    })
}

/// An echo server: what a client sends comes back, until it closes its side.
async fn echo_backend() -> anyhow::Result<std::net::SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// Waits for the audit line of `listener` number `n` (1-based) and returns it.
async fn audit_line(
    path: &Path,
    audit: &Audit,
    listener: &str,
    n: usize,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        audit.flush(Duration::from_secs(1));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["listener"] == listener)
            .collect();
        if let Some(v) = lines.get(n - 1) {
            return Some(v.clone());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `msg` over `stream`, closes the write side, reads everything back.
async fn exchange<S>(mut s: S, msg: &[u8]) -> std::io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(msg).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}

/// A direct mTLS client (like curl --cert), presenting `pair` or no certificate.
async fn direct(files: &Files, pair: Option<&(PathBuf, PathBuf)>, port: u16, msg: &[u8]) -> String {
    let settings = mutual_tls::ClientSettings {
        cert: pair.map(|p| p.0.clone()).unwrap_or_default(),
        key: pair.map(|p| p.1.clone()).unwrap_or_default(),
        ca: files.root.clone(),
        ..Default::default()
    };
    let m = match mutual_tls::build_client_config(&settings, "localhost") {
        Ok(m) => m,
        Err(e) => return format!("client setup failed: {e}"),
    };
    let tcp = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Ok(t) => t,
        Err(e) => return format!("connect failed: {e}"),
    };
    let tls = match tokio_rustls::TlsConnector::from(m.config)
        .connect(m.server_name, tcp)
        .await
    {
        Ok(t) => t,
        Err(e) => return format!("handshake failed: {e}"),
    };
    match exchange(tls, msg).await {
        Ok(b) if b.is_empty() => "the connection was closed, nothing came back".into(),
        Ok(b) => format!("got back {:?}", String::from_utf8_lossy(&b)),
        Err(e) => format!("the connection was closed: {e}"),
    }
}

struct Step {
    title: &'static str,
    expected: (&'static str, &'static str),
    ok: bool,
}

fn report(step: &mut Step, client_saw: &str, line: Option<serde_json::Value>, extra_ok: bool) {
    let (result, reason) = match &line {
        Some(l) => (
            l["result"].as_str().unwrap_or("?").to_string(),
            l["reason"].as_str().unwrap_or("?").to_string(),
        ),
        None => ("(no audit line)".into(), String::new()),
    };
    step.ok = extra_ok && result == step.expected.0 && reason == step.expected.1;
    let mark = if step.ok { "ok" } else { "UNEXPECTED" };
    println!("  client: {client_saw}");
    println!(
        "  proxy:  {result} ({reason})  [{mark}: expected {} ({})]",
        step.expected.0, step.expected.1
    );
    if let Some(r) =
        mutual_tls::Reason::from_label(&reason).filter(|r| *r != mutual_tls::Reason::Ok)
    {
        println!("          {} {}", r.explanation(), r.hint());
    }
    if let Some(l) = line {
        println!("  audit:  {l}");
    }
}

async fn demo(dir: &Path, kept: bool) -> anyhow::Result<bool> {
    let t0 = Instant::now();
    println!("mutual demo: a private CA, an mTLS proxy and three clients, all on 127.0.0.1");
    println!("files in {}\n", dir.display());
    println!("[1] Creating a CA and issuing certificates");
    let files = make_pki(dir).await?;

    println!(
        "\n[2] Starting an echo backend, `mutual serve` in front of it, `mutual connect` beside it"
    );
    let backend = echo_backend().await?;
    let audit_path = dir.join("audit.log");
    let shared = Shared {
        metrics: Arc::new(Metrics::new()),
        audit: Arc::new(Audit::open(&audit_path.display().to_string())?),
    };
    let timeouts = (
        Duration::from_secs(5),
        Duration::from_secs(30),
        Duration::from_secs(5),
    );
    let serve = Serve::new(
        ServeConfig {
            name: "serve".into(),
            tls: mutual_tls::ServerSettings {
                cert: files.server.0.clone(),
                key: files.server.1.clone(),
                ca: files.root.clone(),
                ..Default::default()
            },
            tls_options: Default::default(),
            policy_flags: Policy::from_flags(&[ALLOWED.to_string()], &[], &[], &[], false)?,
            policy_file: None,
            backend: backend.to_string().parse()?,
            handshake_timeout: timeouts.0,
            idle_timeout: timeouts.1,
            connect_timeout: timeouts.2,
            limits: Limits::default(),
            mode: Default::default(),
            http: Default::default(),
            proxy_protocol: None,
            max_connection_lifetime: None,
            crl_from_cdp: None,
            ocsp_from_aia: None,
            end_on_peer_expiry: false,
        },
        &shared,
    )?;
    let serve_l = mutual_proxy::bind("127.0.0.1:0").await?;
    let serve_port = serve_l.local_addr()?.port();
    let connect = Connect::new(
        ConnectConfig {
            name: "connect".into(),
            tls: mutual_tls::ClientSettings {
                cert: files.allowed.0.clone(),
                key: files.allowed.1.clone(),
                ca: files.root.clone(),
                ..Default::default()
            },
            remote: format!("localhost:{serve_port}"),
            handshake_timeout: timeouts.0,
            idle_timeout: timeouts.1,
            connect_timeout: timeouts.2,
            limits: Limits::default(),
            max_connection_lifetime: None,
            profile: Default::default(),
            ocsp: None,
        },
        &shared,
    )?;
    let connect_l = mutual_proxy::bind("127.0.0.1:0").await?;
    let connect_port = connect_l.local_addr()?.port();
    let (trigger, sd) = mutual_proxy::shutdown::channel();
    tokio::spawn(serve.run(serve_l, sd.clone()));
    tokio::spawn(connect.run(connect_l, sd.clone()));
    println!("  echo backend    {backend}");
    println!("  mutual serve    127.0.0.1:{serve_port}  (allows {ALLOWED})");
    println!("  mutual connect  127.0.0.1:{connect_port} -> localhost:{serve_port}, as {ALLOWED}");

    let mut steps = vec![
        Step {
            title: "a plaintext client through `mutual connect` (certificate: .../client/allowed)",
            expected: ("allowed", "ok"),
            ok: false,
        },
        Step {
            title: "a direct mTLS client with the certificate .../client/denied",
            expected: ("denied", "policy_denied"),
            ok: false,
        },
        Step {
            title: "a direct TLS client without a certificate",
            expected: ("failed", "no_client_cert"),
            ok: false,
        },
    ];

    let msg = b"hello through mutual";
    println!("\n[3] Step 1: {}", steps[0].title);
    let saw = match tokio::net::TcpStream::connect(("127.0.0.1", connect_port)).await {
        Ok(s) => exchange(s, msg).await,
        Err(e) => Err(e),
    };
    let (saw_text, echoed) = match &saw {
        Ok(b) => (
            format!(
                "sent {:?}, got back {:?}",
                String::from_utf8_lossy(msg),
                String::from_utf8_lossy(b)
            ),
            b == msg,
        ),
        Err(e) => (format!("error: {e}"), false),
    };
    let line = audit_line(&audit_path, &shared.audit, "serve", 1).await;
    report(&mut steps[0], &saw_text, line, echoed);

    println!("\n[4] Step 2: {}", steps[1].title);
    let saw = direct(&files, Some(&files.denied), serve_port, msg).await;
    let line = audit_line(&audit_path, &shared.audit, "serve", 2).await;
    report(&mut steps[1], &saw, line, !saw.contains("hello"));

    println!("\n[5] Step 3: {}", steps[2].title);
    let saw = direct(&files, None, serve_port, msg).await;
    let line = audit_line(&audit_path, &shared.audit, "serve", 3).await;
    report(&mut steps[2], &saw, line, !saw.contains("hello"));

    trigger.fire();
    let passed = steps.iter().filter(|s| s.ok).count();
    println!("\nSummary ({:.1}s):", t0.elapsed().as_secs_f64());
    for s in &steps {
        println!(
            "  [{}] {} -> {} ({})",
            if s.ok { "ok" } else { "FAIL" },
            s.title,
            s.expected.0,
            s.expected.1
        );
    }
    println!("{passed}/{} steps behaved as expected.", steps.len());
    if kept {
        let d = dir.display();
        println!(
            "\nThe same by hand, with the kept files:\n  \
             mutual serve --listen 127.0.0.1:8443 --backend 127.0.0.1:8080 --cert {d}/server.pem --key {d}/server.key \\\n    \
             --ca {d}/root.pem --allow-spiffe {ALLOWED} --audit-log -\n  \
             mutual connect --listen 127.0.0.1:7000 --remote localhost:8443 --cert {d}/allowed.pem --key {d}/allowed.key --ca {d}/root.pem\n  \
             curl --cacert {d}/root.pem --cert {d}/denied.pem --key {d}/denied.key https://localhost:8443/"
        );
    } else {
        println!("\nRun `mutual demo --keep DIR` to keep the CA and certificates and try the same by hand.");
    }
    Ok(passed == steps.len())
}
