//! Shared fixtures for the proxy integration tests: one throwaway PKI with every kind of client
//! certificate the tests need, a tiny HTTP backend, `mutual serve` as a real child process with
//! its audit log and metrics, and real TLS clients (rustls, curl, openssl s_client, Python ssl).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unused_imports)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub use mutual_test::{
    eventually, free_port, have, read_request_head, tcp_server, ChildGuard, Leaf, LeafOpts, TestPki,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_mutual");
pub const OK_ID: &str = "spiffe://test.mutual/client/ok";
pub const OTHER_ID: &str = "spiffe://test.mutual/client/other";

/// Every certificate the client-matrix tests use.
pub struct Fixture {
    pub pki: TestPki,
    pub other: TestPki,
    pub server: Leaf,
    pub ok: Leaf,
    pub denied: Leaf,
    pub expired: Leaf,
    pub revoked: Leaf,
    pub wrong_purpose: Leaf,
    pub other_ca: Leaf,
    pub crl: PathBuf,
}

pub fn fixture() -> Fixture {
    let pki = TestPki::new("Test");
    let other = TestPki::new("Other");
    let server = pki.leaf("server", LeafOpts::localhost_server());
    // A leaf for OK_ID from `ca`, file stem and CN `name`, shaped by `opts`.
    let for_ok = |ca: &TestPki, name: &str, opts: fn(LeafOpts) -> LeafOpts| {
        ca.leaf(name, opts(LeafOpts::new(name).san(&format!("uri:{OK_ID}"))))
    };
    let ok = for_ok(&pki, "ok", |o| o);
    let denied = pki.leaf(
        "denied",
        LeafOpts::new("other").san(&format!("uri:{OTHER_ID}")),
    );
    let expired = for_ok(&pki, "expired", LeafOpts::expired);
    let revoked = for_ok(&pki, "revoked", |o| o);
    let wrong_purpose = for_ok(&pki, "wrong-purpose", LeafOpts::server);
    let other_ca = for_ok(&other, "other-ca", |o| o);
    pki.revoke(&revoked);
    let crl = pki.crl("crl.pem");
    Fixture {
        pki,
        other,
        server,
        ok,
        denied,
        expired,
        revoked,
        wrong_purpose,
        other_ca,
        crl,
    }
}

/// The client cases every real client runs: (name, certificate, result, reason).
pub fn cases(fx: &Fixture) -> Vec<(&'static str, Option<&Leaf>, &'static str, &'static str)> {
    vec![
        ("valid", Some(&fx.ok), "allowed", "ok"),
        ("no cert", None, "failed", "no_client_cert"),
        ("other CA", Some(&fx.other_ca), "failed", "unknown_ca"),
        ("expired", Some(&fx.expired), "failed", "expired"),
        ("revoked", Some(&fx.revoked), "failed", "revoked"),
        (
            "server cert as client",
            Some(&fx.wrong_purpose),
            "failed",
            "wrong_purpose",
        ),
        ("not allowed", Some(&fx.denied), "denied", "policy_denied"),
    ]
}

/// A minimal HTTP/1.0 backend: answers every request with 200 and a fixed body, then closes.
pub struct HttpBackend {
    pub addr: SocketAddr,
}

pub const BACKEND_BODY: &str = "hello from the backend";

pub fn http_backend() -> HttpBackend {
    let addr = mutual_test::tcp_server(|mut s| {
        if !mutual_test::read_request_head(&mut s) {
            return;
        }
        let resp = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BACKEND_BODY}",
            BACKEND_BODY.len()
        );
        let _ = s.write_all(resp.as_bytes());
    });
    HttpBackend { addr }
}

/// A running `mutual serve` (or `connect`) with its audit log and metrics endpoint.
pub struct Proxy {
    pub child: ChildGuard,
    /// The `listener` label (the subcommand's default name).
    pub listener: String,
    pub port: u16,
    pub metrics_port: u16,
    pub audit: PathBuf,
    pub stderr: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Every audit line so far, parsed.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        audit_lines_in(&self.audit)
    }

    /// Waits until there are at least `n` audit lines and returns them. Use it only where the
    /// test made exactly the connections it counts; otherwise wait for the line it needs
    /// (`wait_audit_line`, `wait_audit_where`).
    pub fn wait_audit(&self, n: usize) -> Vec<serde_json::Value> {
        eventually(EVENT_TIMEOUT, || {
            let v = self.audit_lines();
            (v.len() >= n).then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} audit lines, have {:?}\nstderr:\n{}",
                self.audit_lines(),
                self.stderr_text()
            )
        })
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(
            SocketAddr::from(([127, 0, 0, 1], self.metrics_port)),
            "/metrics",
        )
        .1
    }

    /// The value of one series, e.g. `mutual_handshakes_total{listener="serve",result="failed",reason="expired"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }

    pub fn handshakes(&self, result: &str, reason: &str) -> f64 {
        self.metric(&format!(
            "mutual_handshakes_total{{listener=\"{}\",result=\"{result}\",reason=\"{reason}\"}}",
            self.listener
        ))
        .unwrap_or(0.0)
    }

    /// Waits until the counter reaches `want` (metrics are updated just before the audit line).
    pub fn wait_handshakes(&self, result: &str, reason: &str, want: f64) {
        let got = eventually(EVENT_TIMEOUT, || {
            (self.handshakes(result, reason) >= want).then_some(())
        });
        assert!(
            got.is_some(),
            "mutual_handshakes_total{{result={result},reason={reason}}} = {} (want {want})\n{}",
            self.handshakes(result, reason),
            self.metrics()
        );
    }
}

pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// `--cert CERT --key KEY --ca CA EXTRA...`: the arguments of a `serve` or `connect` that
/// presents `cert` and `key` and trusts `ca`.
pub fn tls_args(cert: &Path, key: &Path, ca: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--cert", "--key", "--ca"]
        .into_iter()
        .zip([cert, key, ca])
        .flat_map(|(flag, p)| [flag.to_string(), p.display().to_string()])
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// `--cert DIR/cert.pem --key DIR/key.pem --ca DIR/root.pem EXTRA...`: where `enroll` and the
/// enrolling proxies keep their files.
pub fn pair_in(dir: &Path, extra: &[&str]) -> Vec<String> {
    let f = |name: &str| dir.join(name);
    tls_args(&f("cert.pem"), &f("key.pem"), &f("root.pem"), extra)
}

/// A `serve` (to a new `http_backend`, allowing `OK_ID`) and a `connect` to it (as `OK_ID`) that enroll
/// themselves from the online CA at `ca_url` (root pinned to `fp`) with 60-second certificates
/// and renew them, keeping their files in `work/serve` and `work/connect`. `mint(sans, usage)`
/// makes each one's token, kept in `tokens` (serve's, connect's) for the checks that no log
/// names them.
pub struct EnrolledPair {
    pub serve: Proxy,
    pub connect: Proxy,
    pub sdir: PathBuf,
    pub cdir: PathBuf,
    pub tokens: [String; 2],
}

pub fn enrolled_pair(
    work: &Path,
    ca_url: &str,
    fp: &str,
    mint: impl Fn(&[&str], &str) -> String,
) -> EnrolledPair {
    // `token` is the flag and its value: serve reads its token from a file (--token-file),
    // connect takes it on the command line.
    let proxy_args = |dir: &Path, token: [&str; 2], extra: &[&str]| -> Vec<String> {
        let mut a = pair_in(
            dir,
            &["--ca-url", ca_url, token[0], token[1], "--root-sha256", fp],
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let sdir = work.join("serve");
    let cdir = work.join("connect");
    let st = mint(&["dns:localhost", "ip:127.0.0.1"], "both");
    let st_file = work.join("serve.token");
    std::fs::write(&st_file, format!("{st}\n")).unwrap();
    let serve = spawn_proxy(
        "serve",
        "--backend",
        &http_backend().addr.to_string(),
        &proxy_args(
            &sdir,
            ["--token-file", st_file.to_str().unwrap()],
            &["--allow-spiffe", OK_ID],
        ),
    );
    let ct = mint(&[&format!("uri:{OK_ID}")], "client");
    let connect = spawn_proxy(
        "connect",
        "--remote",
        &serve.addr().to_string(),
        &proxy_args(&cdir, ["--token", &ct], &[]),
    );
    EnrolledPair {
        serve,
        connect,
        sdir,
        cdir,
        tokens: [st, ct],
    }
}

/// Requests sent one at a time through a `connect` (to a `serve` in front of `http_backend`)
/// while something changes underneath: how many got the backend's answer, and what came back
/// instead for each that did not (with the time since the start and a note).
pub struct Flow {
    pub good: usize,
    pub bad: Vec<String>,
    pub start: std::time::Instant,
}

impl Flow {
    pub fn begin() -> Flow {
        Flow {
            good: 0,
            bad: Vec::new(),
            start: std::time::Instant::now(),
        }
    }

    /// One request through `connect`'s listener.
    pub fn send(&mut self, connect: &Proxy, note: &str) {
        match try_http_get(connect.addr(), "/") {
            Some((200, body)) if body == BACKEND_BODY => self.good += 1,
            other => self
                .bad
                .push(format!("{:?}{note}: {other:?}", self.start.elapsed())),
        }
    }

    /// Asserts that no request failed, with both proxies' stderr when one did.
    pub fn assert_none_failed(&self, serve: &Proxy, connect: &Proxy) {
        assert!(
            self.bad.is_empty(),
            "{} of {} requests failed: {:?}\nserve:\n{}\nconnect:\n{}",
            self.bad.len(),
            self.good + self.bad.len(),
            self.bad,
            serve.stderr_text(),
            connect.stderr_text()
        );
    }
}

/// Runs `mutual serve ARGS` on an address and backend no client uses, to its end: for the
/// configuration a serve must refuse (exit 2) before it listens.
pub fn serve_refusal(args: &[String]) -> std::process::Output {
    Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:1",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `serve_refusal` with the fixture's server certificate, key and root plus `extra`: asserts
/// the refusal (exit 2) and returns its stderr.
pub fn fixture_refusal(fx: &Fixture, extra: &[&str]) -> String {
    let out = serve_refusal(&tls_args(
        &fx.server.cert,
        &fx.server.key,
        &fx.pki.root,
        extra,
    ));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

/// A policy file in `fx.pki`'s directory that allows OK_ID and nobody else.
pub fn ok_policy(fx: &Fixture) -> PathBuf {
    let policy = fx.pki.path("policy.toml");
    std::fs::write(&policy, format!("[[allow]]\nspiffe = \"{OK_ID}\"\n")).unwrap();
    policy
}

/// `mutual serve` in front of `backend`, trusting `fx.pki`, checking its CRL, allowing OK_ID.
pub fn start_serve(fx: &Fixture, backend: &str, extra: &[&str]) -> Proxy {
    let crl = fx.crl.display().to_string();
    let mut args = tls_args(
        &fx.server.cert,
        &fx.server.key,
        &fx.pki.root,
        &["--crl", &crl, "--crl-leaf-only", "--allow-spiffe", OK_ID],
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_proxy("serve", "--backend", backend, &args)
}

/// The usual start of a proxy test: a fresh fixture, an HTTP backend, and `start_serve` in
/// front of it with `extra`.
pub fn serve_fixture(extra: &[&str]) -> (Fixture, HttpBackend, Proxy) {
    let fx = fixture();
    let backend = http_backend();
    let p = start_serve(&fx, &backend.addr.to_string(), extra);
    (fx, backend, p)
}

/// `mutual connect` in front of `serve` (on 127.0.0.1, server name `localhost`), presenting
/// `fx.ok` and trusting `fx.pki`, with `extra`.
pub fn connect_as_ok(fx: &Fixture, serve: &Proxy, extra: &[&str]) -> Proxy {
    let mut args = tls_args(
        &fx.ok.cert,
        &fx.ok.key,
        &fx.pki.root,
        &["--server-name", "localhost"],
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    let remote = format!("127.0.0.1:{}", serve.port);
    spawn_proxy("connect", "--remote", &remote, &args)
}

/// Starts `mutual <cmd> --listen .. <target_flag> <target> ..args` with an audit log and
/// metrics, and waits until it listens (its metrics endpoint answers only after the listener
/// is bound, so no probe connection pollutes the audit log).
pub fn spawn_proxy(cmd: &str, target_flag: &str, target: &str, args: &[String]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_port = free_port();
    let audit = dir.path().join("audit.log");
    let stderr = dir.path().join("stderr.log");
    let child = mutual_test::spawn_logged(
        Command::new(BIN)
            .arg(cmd)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([target_flag, target])
            .args(["--audit-log", audit.to_str().unwrap()])
            .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
            .args(["--threads", "2"])
            .args(args),
        &stderr,
    );
    let mut p = Proxy {
        child,
        listener: cmd.to_string(),
        port,
        metrics_port,
        audit,
        stderr,
        dir,
    };
    let up = eventually(EVENT_TIMEOUT, || {
        if let Ok(Some(st)) = p.child.0.try_wait() {
            panic!("mutual {cmd} exited with {st}:\n{}", p.stderr_text());
        }
        let r = try_http_get(SocketAddr::from(([127, 0, 0, 1], metrics_port)), "/healthz");
        r.filter(|(s, _)| *s == 200).map(|_| ())
    });
    assert!(
        up.is_some(),
        "mutual {cmd} did not come up:\n{}",
        p.stderr_text()
    );
    p
}

/// Sends a plain HTTP/1.0 request for `/` into a `connect` listener's local port and returns
/// whatever came back (empty when connect refused the far end).
pub fn through(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

/// Sends a signal with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// A TLS connection that is established and has sent half a request: the backend waits for the
/// rest, so the connection stays open until `finish_request`.
pub fn open_held(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> TlsStream {
    let mut s = tls_connect(addr, cfg).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    s.flush().unwrap();
    s
}

/// Completes a request started by `open_held` and returns the status.
pub fn finish_request(mut s: TlsStream) -> u16 {
    s.write_all(b"Host: localhost\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_http(&String::from_utf8_lossy(&out)).map_or(0, |(st, _)| st)
}

/// Plain HTTP/1.0 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|| panic!("GET http://{addr}{path} failed"))
}

pub fn try_http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    parse_http(&out)
}

pub fn parse_http(resp: &str) -> Option<(u16, String)> {
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A rustls client config trusting `root`, presenting `leaf` if given.
pub fn rustls_config(root: &Path, leaf: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    rustls_config_with(root, leaf, rustls::crypto::aws_lc_rs::default_provider())
}

/// [`rustls_config`] with another crypto provider (other suites, in another order).
pub fn rustls_config_with(
    root: &Path,
    leaf: Option<&Leaf>,
    provider: rustls::crypto::CryptoProvider,
) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match leaf {
        Some(l) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(&l.cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(&l.key).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Opens a TLS connection and completes the handshake (client side).
pub fn tls_connect(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::clone(cfg), name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// One HTTP request over mTLS with rustls; Ok((status, body)).
pub fn rustls_get(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
) -> std::io::Result<(u16, String)> {
    let mut s = tls_connect(addr, cfg)?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // The proxy closes without close_notify only on errors; a truncated answer still counts.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&out).to_string();
    parse_http(&text).ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))
}

/// curl over mTLS; returns (exit success, http_code, body).
pub fn curl(port: u16, root: &Path, leaf: Option<&Leaf>) -> (bool, String, String) {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "30",
        "--cacert",
        root.to_str().unwrap(),
    ]);
    if let Some(l) = leaf {
        c.args([
            "--cert",
            l.cert.to_str().unwrap(),
            "--key",
            l.key.to_str().unwrap(),
        ]);
    }
    c.args([
        "-w",
        "\n%{http_code}",
        &format!("https://localhost:{port}/"),
    ]);
    c.args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (out.status.success(), code.to_string(), body.to_string())
}

/// `openssl s_client` sending one HTTP request; returns (exit success, output).
pub fn s_client(port: u16, root: &Path, leaf: Option<&Leaf>) -> (bool, String) {
    let mut c = Command::new("timeout");
    c.args([
        "30",
        "openssl",
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
    ]);
    c.args(["-servername", "localhost", "-verify_return_error", "-quiet"]);
    c.args(["-CAfile", root.to_str().unwrap()]);
    if let Some(l) = leaf {
        c.args([
            "-cert",
            l.cert.to_str().unwrap(),
            "-key",
            l.key.to_str().unwrap(),
        ]);
        // -cert sends only the first certificate of the file; the chain goes separately.
        c.args(["-cert_chain", l.cert.to_str().unwrap()]);
    }
    let out = mutual_test::output_with_stdin(&mut c, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
    (out.status.success(), mutual_test::output_text(&out))
}

/// A Python `ssl` client (the standard library's default context): `PORT CA CERT KEY` (CERT and
/// KEY may be empty), sends one HTTP/1.1 request for `/` to localhost, prints the whole answer, or
/// `ERROR <exception> <message>` when the handshake or the connection fails.
pub const PY_TLS_GET: &str = r#"
import socket, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if cert:
    ctx.load_cert_chain(cert, key)
try:
    with socket.create_connection(("127.0.0.1", port), timeout=25) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    print(data.decode(errors="replace") if data else "ERROR empty response")
except Exception as e:
    print("ERROR", type(e).__name__, e)
"#;

/// `PY_TLS_GET` against `port`; the first line it printed (the status line or `ERROR ...`).
pub fn python(port: u16, root: &Path, leaf: Option<&Leaf>) -> String {
    let script = PY_TLS_GET;
    let (cert, key) = leaf
        .map(|l| (l.cert.display().to_string(), l.key.display().to_string()))
        .unwrap_or_default();
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &port.to_string(),
            root.to_str().unwrap(),
            &cert,
            &key,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// Runs every case with `client`, checking the client saw the right thing, the audit line and
/// the counter. `client` returns whether it got the backend's 200, and what it saw.
pub fn run_matrix(proxy: &Proxy, fx: &Fixture, client: impl Fn(Option<&Leaf>) -> (bool, String)) {
    for (i, (name, leaf, result, reason)) in cases(fx).into_iter().enumerate() {
        let (got_200, seen) = client(leaf);
        assert_eq!(
            got_200,
            reason == "ok",
            "case {name:?}: client saw 200 = {got_200}; client output:\n{seen}\naudit: {:?}\nproxy stderr:\n{}",
            proxy.audit_lines(),
            proxy.stderr_text()
        );
        // Each case has its own reason: wait for that line, not for "the next line" (the
        // client may see the refusal before the proxy has written it).
        let line = proxy.wait_audit_line(result, reason);
        let lines = proxy.audit_lines();
        assert_eq!(
            lines.len(),
            i + 1,
            "case {name:?}: one audit line per connection: {lines:?}"
        );
        let line = &line;
        assert_eq!(line["result"], result, "case {name:?}: {line}");
        assert_eq!(line["reason"], reason, "case {name:?}: {line}");
        assert_eq!(line["listener"], "serve");
        if reason == "ok" || reason == "policy_denied" {
            assert!(line["identity"]["serial"].is_string(), "{line}");
            assert_eq!(line["tls"]["version"], "TLSv1.3", "{line}");
        }
        if reason == "ok" {
            assert_eq!(line["identity"]["spiffe"], OK_ID);
            assert!(line["bytes_in"].as_u64().unwrap() > 0, "{line}");
            assert!(line["bytes_out"].as_u64().unwrap() > 0, "{line}");
        }
        if reason == "policy_denied" {
            assert_eq!(line["identity"]["spiffe"], OTHER_ID);
            assert_eq!(line["bytes_in"], 0);
        }
        proxy.wait_handshakes(result, reason, 1.0);
    }
}

// ---- Waiting for events, not for "the next line" (issue 24) ----
//
// On a loaded machine any interleaving happens: a connection accepted just before a reload can
// be ended by live re-authorization before a new one is refused at the handshake, a probe
// connection can be audited after the one a test cares about. These helpers wait for the event
// a test needs (an audit line with a given result and reason, a metric value, a log message)
// with generous upper bounds, so tests assert facts that hold whatever the order.

/// Upper bound for waiting on an event (not a sleep: the wait ends as soon as the event happens).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether an audit line has this `result` and `reason`.
pub fn is_line(l: &serde_json::Value, result: &str, reason: &str) -> bool {
    l["result"] == result && l["reason"] == reason
}

/// The audit lines written to `path` so far.
pub fn audit_lines_in(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

/// [`Proxy::wait_audit_line`] for an audit log at `path` of a proxy started some other way
/// (`mutual run`, a command line of the test's own).
pub fn wait_audit_line_in(path: &Path, result: &str, reason: &str) -> serde_json::Value {
    eventually(EVENT_TIMEOUT, || {
        audit_lines_in(path)
            .into_iter()
            .find(|l| is_line(l, result, reason))
    })
    .unwrap_or_else(|| {
        panic!(
            "no audit line with result {result}, reason {reason} in {}: {:?}",
            path.display(),
            audit_lines_in(path)
        )
    })
}

impl Proxy {
    /// Waits until some audit line satisfies `pred` and returns the first such line.
    pub fn wait_audit_where(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_audit_count_where(what, 1, &pred)
            .into_iter()
            .find(|l| pred(l))
            .unwrap()
    }

    /// Waits until at least `n` audit lines satisfy `pred`; returns every line then.
    pub fn wait_audit_count_where(
        &self,
        what: &str,
        n: usize,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        eventually(EVENT_TIMEOUT, || {
            let v = self.audit_lines();
            (v.iter().filter(|l| pred(l)).count() >= n).then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} audit line(s) {what}, have {:?}\nstderr:\n{}",
                self.audit_lines(),
                self.stderr_text()
            )
        })
    }

    /// Waits until an audit line with this `result` and `reason` is written; returns it.
    pub fn wait_audit_line(&self, result: &str, reason: &str) -> serde_json::Value {
        self.wait_audit_where(&format!("with result {result}, reason {reason}"), |l| {
            is_line(l, result, reason)
        })
    }

    /// Waits until the value of `series` satisfies `pred` (an absent series reads as 0).
    pub fn wait_metric(&self, series: &str, pred: impl Fn(f64) -> bool) -> f64 {
        eventually(EVENT_TIMEOUT, || {
            let v = self.metric(series).unwrap_or(0.0);
            pred(v).then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "{series} never reached the expected value\n{}\nstderr:\n{}",
                self.metrics(),
                self.stderr_text()
            )
        })
    }

    /// Waits until the proxy's stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str) {
        let seen = eventually(EVENT_TIMEOUT, || {
            self.stderr_text().contains(needle).then_some(())
        });
        assert!(
            seen.is_some(),
            "stderr never said {needle:?}:\n{}",
            self.stderr_text()
        );
    }
}

impl Proxy {
    /// For a test that made exactly one connection (or request): waits for its audit line and
    /// checks it is the only one.
    pub fn wait_only_line(&self) -> serde_json::Value {
        let lines = self.wait_audit_count_where("at all", 1, |_| true);
        assert_eq!(lines.len(), 1, "one connection, one line: {lines:?}");
        lines.into_iter().next().unwrap()
    }

    /// For a test that made exactly one connection, refused: its only audit line says `failed`
    /// with `reason`, and the handshake counter for that reason moved. Returns the line.
    pub fn assert_only_failure(&self, reason: &str) -> serde_json::Value {
        let line = self.wait_only_line();
        assert_eq!(line["result"], "failed", "{line}");
        assert_eq!(line["reason"], reason, "{line}");
        self.wait_handshakes("failed", reason, 1.0);
        line
    }
}

/// Now, Unix seconds.
pub fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Waits (bounded) until the wall clock is past `t` (Unix seconds): a certificate's expiry is
/// a point in time, there is no event to wait on.
pub fn wait_until_past(t: i64) {
    let got = eventually(Duration::from_secs(60), || (now_secs() > t).then_some(()));
    assert!(got.is_some(), "the clock never passed {t}");
}

/// A client certificate for OK_ID (CN `short`, file stem `stem`) that expires `secs` seconds
/// from now, and its notAfter.
pub fn short_ok_client(fx: &Fixture, stem: &str, secs: i64) -> (Leaf, i64) {
    let opts = LeafOpts::new("short").san(&format!("uri:{OK_ID}"));
    let leaf = fx.pki.leaf(stem, opts.valid_for(secs));
    let expires = not_after(&leaf);
    (leaf, expires)
}

pub fn not_after(leaf: &Leaf) -> i64 {
    mutual_policy::Identity::from_der(&leaf.der)
        .unwrap()
        .not_after
}
