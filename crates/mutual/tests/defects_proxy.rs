//! Regression tests for the proxy-side defects of issue 13 (items 2, 3 server half, 4, 5, 10,
//! 11, 12, 14): each one reproduces what a user saw, with real peers (curl, Python's ssl,
//! openssl s_client, a raw TCP client, rustls) against the real `mutual` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_common::*;

/// An HTTP/1.1 backend that records the raw header block of every request it gets and answers
/// 200 keeping the connection alive.
fn recording_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let seen = Arc::clone(&seen2);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).to_string());
                        let body = "recorded";
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn python_run(script: &str, args: &[String]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    mutual_test::output_text(&out)
}

// Item 2: underscore spellings of identity headers never reach the backend.
#[test]
fn http_mode_strips_underscore_spellings_of_identity_headers() {
    if mutual_test::skip_without("curl") {
        return;
    }
    let fx = fixture();
    let (backend, seen) = recording_backend();
    let p = start_serve(
        &fx,
        &backend.to_string(),
        &["--http", "--forward-client-cert", "both"],
    );
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&fx.pki.root)
        .arg("--cert")
        .arg(&fx.ok.cert)
        .arg("--key")
        .arg(&fx.ok.key)
        .args([
            "-H",
            "X_Forwarded_Client_Cert: URI=spiffe://test.mutual/admin",
            "-H",
            "client_cert: :ZXZpbA==:",
            "-H",
            "Client_Cert_Chain: :ZXZpbA==:",
            "-H",
            "x-forwarded-client-cert: URI=spiffe://test.mutual/admin2",
            "-H",
            "X_Forwarded_Proto: http",
            "--resolve",
            &format!("localhost:{}:127.0.0.1", p.port),
            &format!("https://localhost:{}/", p.port),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout) == "recorded",
        "curl: {out:?}\n{}",
        p.stderr_text()
    );
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let names: Vec<String> = heads[0]
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
        .collect();
    // What a CGI/WSGI backend would fold together: every spelling of each identity header.
    let folded = |n: &str| n.to_ascii_lowercase().replace('_', "-");
    for want in [
        "x-forwarded-client-cert",
        "client-cert",
        "x-forwarded-proto",
    ] {
        let spellings: Vec<&String> = names.iter().filter(|n| folded(n) == want).collect();
        assert_eq!(
            spellings.len(),
            1,
            "{want}: exactly the proxy's own copy must arrive, got {spellings:?} in\n{}",
            heads[0]
        );
        assert!(!spellings[0].contains('_'), "{}", heads[0]);
    }
    assert!(
        !heads[0].contains("admin"),
        "a forged identity arrived:\n{}",
        heads[0]
    );
    assert!(heads[0].contains(OK_ID), "{}", heads[0]);
    assert!(!heads[0].contains("ZXZpbA"), "{}", heads[0]);
}

// Item 3 (server half): a policy denial in TCP mode is an `access_denied` alert.
#[test]
fn tcp_policy_denial_sends_access_denied() {
    let (fx, _, p) = serve_fixture(&[]);
    let script = r#"
import socket, ssl, sys
port, root, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(root)
ctx.load_cert_chain(cert, key)
try:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            print("READ", s.recv(100))
except Exception as e:
    print("ERROR", e)
"#;
    let out = python_run(
        script,
        &[
            p.port.to_string(),
            fx.pki.root.display().to_string(),
            fx.denied.cert.display().to_string(),
            fx.denied.key.display().to_string(),
        ],
    );
    assert!(
        out.contains("ALERT_ACCESS_DENIED"),
        "the client must see access_denied: {out}\n{}",
        p.stderr_text()
    );
    let line = &p.wait_audit(1)[0];
    assert_eq!(line["result"], "denied", "{line}");
    assert_eq!(line["reason"], "policy_denied", "{line}");
    assert_eq!(line["identity"]["spiffe"], OTHER_ID, "{line}");
    // Decided inside the handshake, yet the line still names what was negotiated.
    assert_eq!(line["tls"]["version"], "TLSv1.3", "{line}");
    // The server's choice, although Python's OpenSSL lists AES-256 first.
    assert_eq!(line["tls"]["cipher"], "TLS13_AES_128_GCM_SHA256", "{line}");
    assert!(!line["tls"]["group"].as_str().unwrap().is_empty(), "{line}");
    p.wait_handshakes("denied", "policy_denied", 1.0);
    // The allowed identity still goes through.
    assert_eq!(
        python(p.port, &fx.pki.root, Some(&fx.ok)),
        "HTTP/1.0 200 OK"
    );
}

// Item 4: the refusal alert survives a client whose data is still arriving.
#[test]
fn missing_certificate_alert_reaches_a_client_that_writes_records_separately() {
    let (fx, _, p) = serve_fixture(&[]);
    let script = r#"
import socket, ssl, sys, time
port, root = int(sys.argv[1]), sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(root)
seen = 0
errors = []
for i in range(20):
    err = ""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        try:
            for part in (b"GET / ", b"HTTP/1.0\r\n", b"\r\n"):
                s.send(part)
                time.sleep(0.005)
            s.recv(100)
        except Exception as e:
            err = str(e)
        s.close()
    except Exception as e:
        err = str(e)
    if "CERTIFICATE_REQUIRED" in err:
        seen += 1
    else:
        errors.append(err)
print("SEEN", seen, errors[:3])
"#;
    let out = python_run(
        script,
        &[p.port.to_string(), fx.pki.root.display().to_string()],
    );
    assert!(
        out.contains("SEEN 20 "),
        "certificate_required must arrive every time: {out}"
    );
    p.wait_handshakes("failed", "no_client_cert", 20.0);
}

// Item 5: `connect` re-checks the server's chain on a resumed session.
#[test]
fn connect_refuses_a_resumed_session_with_an_expired_server() {
    let fx = fixture();
    let short = fx
        .pki
        .leaf("short-server", LeafOpts::localhost_server().valid_for(15));
    let expires = not_after(&short);
    let backend = http_backend();
    let serve = spawn_proxy(
        "serve",
        "--backend",
        &backend.addr.to_string(),
        &tls_args(
            &short.cert,
            &short.key,
            &fx.pki.root,
            &["--allow-spiffe", OK_ID],
        ),
    );
    let conn = connect_as_ok(&fx, &serve, &[]);
    let through = || through(conn.port);
    // Before expiry: a full handshake, which leaves tickets for resumption.
    assert!(
        through().ends_with(BACKEND_BODY),
        "{}\n{}",
        conn.stderr_text(),
        serve.stderr_text()
    );
    assert!(
        now_secs() < expires,
        "the setup took longer than the certificate lives"
    );
    wait_until_past(expires);
    for _ in 0..3 {
        let out = through();
        assert!(
            out.is_empty(),
            "an expired server must not be trusted: {out}"
        );
    }
    let lines = conn.wait_audit(4);
    for l in &lines[1..] {
        assert_eq!(l["result"], "failed", "{l}");
        assert_eq!(l["reason"], "expired", "{l}");
    }
    // At least one of them was a resumption: serve completed it (its side of a resumed
    // handshake succeeds), so the re-check in connect, not its verifier, refused it.
    let resumed = eventually(Duration::from_secs(10), || {
        let allowed = serve
            .audit_lines()
            .iter()
            .filter(|l| l["result"] == "allowed")
            .count();
        (allowed >= 2).then_some(())
    });
    assert!(
        resumed.is_some(),
        "no resumption was tried after expiry: {:?}",
        serve.audit_lines()
    );
}

/// A held TCP-mode connection: established, half a request sent (the backend waits).
fn held(p: &Proxy, fx: &Fixture, leaf: &Leaf) -> TlsStream {
    open_held(p.addr(), &rustls_config(&fx.pki.root, Some(leaf)))
}

fn reloads(p: &Proxy) -> f64 {
    p.metric("mutual_config_reloads_total{result=\"success\"}")
        .unwrap_or(0.0)
}

// Item 10: expiry after the handshake ends a connection only with --end-on-peer-expiry.
#[test]
fn peer_expiry_ends_a_connection_only_with_the_flag_and_never_on_reload() {
    let fx = fixture();
    let backend = http_backend();
    let (short, expires) = short_ok_client(&fx, "short-client", 12);
    let plain = start_serve(&fx, &backend.addr.to_string(), &[]);
    let timed = start_serve(&fx, &backend.addr.to_string(), &["--end-on-peer-expiry"]);
    let plain_conn = held(&plain, &fx, &short);
    let mut timed_conn = held(&timed, &fx, &short);
    assert!(
        now_secs() < expires,
        "the setup took longer than the certificate lives"
    );

    // With the flag: the connection ends at expiry, audited denied/expired.
    let line = eventually(Duration::from_secs(40), || {
        timed
            .audit_lines()
            .into_iter()
            .find(|l| l["reason"] == "expired")
    })
    .unwrap_or_else(|| {
        panic!(
            "no expired line: {:?}\n{}",
            timed.audit_lines(),
            timed.stderr_text()
        )
    });
    assert_eq!(line["result"], "denied", "{line}");
    assert_eq!(line["identity"]["spiffe"], OK_ID, "{line}");
    let mut rest = Vec::new();
    let _ = timed_conn.read_to_end(&mut rest);

    // Without it: a reload after expiry does not end the connection.
    wait_until_past(expires);
    let before = reloads(&plain);
    signal(plain.pid(), "HUP");
    let got = eventually(Duration::from_secs(15), || {
        (reloads(&plain) > before).then_some(())
    });
    assert!(got.is_some(), "no reload:\n{}", plain.stderr_text());
    assert_eq!(
        finish_request(plain_conn),
        200,
        "the reload ended the connection:\n{}",
        plain.stderr_text()
    );
    let line = &plain.wait_audit(1)[0];
    assert_eq!(line["result"], "allowed", "{line}");
}

// Item 11: connections closed at the drain timeout get their audit line.
#[test]
fn drain_timeout_closes_are_audited() {
    let (fx, _, mut p) = serve_fixture(&["--drain-timeout", "1s"]);
    let _held = held(&p, &fx, &fx.ok);
    let got = eventually(Duration::from_secs(10), || {
        (p.metric("mutual_connections_active{listener=\"serve\"}") == Some(1.0)).then_some(())
    });
    assert!(got.is_some(), "{}", p.metrics());
    assert!(p.audit_lines().is_empty());
    signal(p.pid(), "TERM");
    let st = eventually(Duration::from_secs(20), || p.child.0.try_wait().unwrap());
    assert!(st.is_some(), "serve did not exit:\n{}", p.stderr_text());
    let lines = p.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}\n{}", p.stderr_text());
    assert_eq!(lines[0]["result"], "allowed", "{}", lines[0]);
    assert_eq!(lines[0]["identity"]["spiffe"], OK_ID, "{}", lines[0]);
}

// Item 14: a TLS 1.2 client without a certificate gets handshake_failure, not the TLS 1.3
// certificate_required alert.
#[test]
fn tls12_missing_certificate_gets_handshake_failure() {
    if mutual_test::skip_without("openssl") {
        return;
    }
    let (fx, _, p) = serve_fixture(&["--min-tls", "1.2"]);
    let out = Command::new("timeout")
        .args(["15", "openssl", "s_client", "-tls1_2", "-connect"])
        .arg(format!("127.0.0.1:{}", p.port))
        .arg("-CAfile")
        .arg(&fx.pki.root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = mutual_test::output_text(&out);
    assert!(
        text.contains("alert handshake failure") && text.contains("alert number 40"),
        "{text}"
    );
    let line = &p.wait_audit(1)[0];
    assert_eq!(line["reason"], "no_client_cert", "{line}");
}

// Item 14: a client whose first record is an alert is malformed, not no_shared_cipher.
#[test]
fn alert_before_client_hello_is_malformed() {
    let (_fx, _, p) = serve_fixture(&[]);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A fatal handshake_failure alert record, before any ClientHello.
    s.write_all(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28])
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let line = &p.wait_audit(1)[0];
    assert_eq!(line["result"], "failed", "{line}");
    assert_eq!(line["reason"], "malformed", "{line}");
    p.wait_handshakes("failed", "malformed", 1.0);
}

/// A client key that signs with P-256 but names ECDSA_NISTP384_SHA384 in its CertificateVerify.
mod wrong_curve {
    use std::sync::Arc;

    use rustls::client::ResolvesClientCert;
    use rustls::sign::{CertifiedKey, Signer, SigningKey};
    use rustls::{SignatureAlgorithm, SignatureScheme};

    #[derive(Debug)]
    pub struct Key(pub Arc<dyn SigningKey>);

    #[derive(Debug)]
    struct WrongScheme(Box<dyn Signer>);

    impl Signer for WrongScheme {
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
            self.0.sign(message)
        }
        fn scheme(&self) -> SignatureScheme {
            SignatureScheme::ECDSA_NISTP384_SHA384
        }
    }

    impl SigningKey for Key {
        fn choose_scheme(&self, _offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
            let inner = self
                .0
                .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])?;
            Some(Box::new(WrongScheme(inner)))
        }
        fn algorithm(&self) -> SignatureAlgorithm {
            self.0.algorithm()
        }
    }

    #[derive(Debug)]
    pub struct Resolver(pub Arc<CertifiedKey>);

    impl ResolvesClientCert for Resolver {
        fn resolve(
            &self,
            _hints: &[&[u8]],
            _schemes: &[SignatureScheme],
        ) -> Option<Arc<CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
        fn has_certs(&self) -> bool {
            true
        }
    }
}

// Item 14: a CertificateVerify whose scheme names the wrong curve is bad_signature.
#[test]
fn ecdsa_scheme_for_the_wrong_curve_is_bad_signature() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (fx, _, p) = serve_fixture(&[]);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&fx.pki.root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&fx.ok.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&fx.ok.key).unwrap();
    let signing = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&key).unwrap();
    let ck = Arc::new(rustls::sign::CertifiedKey::new(
        chain,
        Arc::new(wrong_curve::Key(signing)),
    ));
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(wrong_curve::Resolver(ck)));
    let r = rustls_get(p.addr(), &Arc::new(cfg));
    assert!(r.is_err(), "{r:?}");
    let line = &p.wait_audit(1)[0];
    assert_eq!(line["result"], "failed", "{line}");
    assert_eq!(line["reason"], "bad_signature", "{line}");
}

/// Reads one HTTP/1.1 response with a Content-Length body from a kept-alive connection.
fn read_response(s: &mut TlsStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return (status, body);
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return (0, format!("EOF after {:?}", String::from_utf8_lossy(&buf))),
            Err(e) => return (0, format!("{e} after {:?}", String::from_utf8_lossy(&buf))),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

// Item 12: editing a listener's block keeps its open connections, HTTP as well as TCP, and
// does not claim to close connections that carry on.
#[test]
fn run_config_edit_keeps_http_keepalive_and_tcp_connections() {
    let fx = fixture();
    let (http_be, _seen) = recording_backend();
    let tcp_be = http_backend();
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        (&fx.server.cert, "server.pem"),
        (&fx.server.key, "server.key"),
        (&fx.pki.root, "root.pem"),
    ] {
        std::fs::copy(from, dir.path().join(to)).unwrap();
    }
    let (p_http, p_tcp, m) = (free_port(), free_port(), free_port());
    let text = |extra: &str| {
        format!(
            r#"metrics = "127.0.0.1:{m}"
audit_log = "audit.log"
threads = 2

[[listener]]
name = "web"
kind = "serve"
mode = "http"
listen = "127.0.0.1:{p_http}"
backend = "{http_be}"
cert = "server.pem"
key = "server.key"
ca = "root.pem"
allow_spiffe = ["{OK_ID}"]
drain_timeout = "1s"
{extra}
[[listener]]
name = "pipe"
kind = "serve"
listen = "127.0.0.1:{p_tcp}"
backend = "{}"
cert = "server.pem"
key = "server.key"
ca = "root.pem"
allow_spiffe = ["{OK_ID}"]
drain_timeout = "1s"
{extra}"#,
            tcp_be.addr
        )
    };
    let cfg = dir.path().join("mutual.toml");
    std::fs::write(&cfg, text("")).unwrap();
    let stderr = dir.path().join("stderr.log");
    let run = ["run", "--config", cfg.to_str().unwrap()];
    let mut child = mutual_test::spawn_logged(Command::new(BIN).args(run), &stderr);
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    let metrics = SocketAddr::from(([127, 0, 0, 1], m));
    let up = eventually(Duration::from_secs(20), || {
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!("mutual run exited with {st}:\n{}", log());
        }
        try_http_get(metrics, "/healthz").filter(|(s, _)| *s == 200)
    });
    assert!(up.is_some(), "mutual run did not come up:\n{}", log());
    let reloads = || {
        try_http_get(metrics, "/metrics")
            .and_then(|(_, t)| metric_value(&t, "mutual_config_reloads_total{result=\"success\"}"))
            .unwrap_or(0.0)
    };

    let ok = rustls_config(&fx.pki.root, Some(&fx.ok));
    let mut web = tls_connect(SocketAddr::from(([127, 0, 0, 1], p_http)), &ok).unwrap();
    let get = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // One request on the kept-alive HTTP connection, answered by the recording backend.
    let request = |web: &mut TlsStream, what: &str| {
        web.write_all(get).unwrap();
        let got = read_response(web);
        assert_eq!(got, (200, "recorded".into()), "{what}:\n{}", log());
    };
    request(&mut web, "first request");
    let pipe = open_held(SocketAddr::from(([127, 0, 0, 1], p_tcp)), &ok);

    let before = reloads();
    std::fs::write(&cfg, text("idle_timeout = \"1m\"\n")).unwrap();
    let got = eventually(Duration::from_secs(20), || {
        (reloads() > before).then_some(())
    });
    assert!(got.is_some(), "the edit was not applied:\n{}", log());
    let restarted = eventually(Duration::from_secs(10), || {
        (log()
            .matches("listener (re)started from the config file")
            .count()
            >= 2)
            .then_some(())
    });
    assert!(restarted.is_some(), "{}", log());

    request(
        &mut web,
        "the HTTP keep-alive connection must survive the edit",
    );
    // The old generation's drain timeout (1 s) passes with the TCP connection still open: it
    // was handed over, so nothing may claim to close it. (A window, not a synchronization:
    // the line, if any, would come 1 s after the edit.)
    let claimed = eventually(Duration::from_secs(3), || {
        log().contains("drain timeout").then_some(())
    });
    assert!(
        claimed.is_none(),
        "no connection was closed, the log must not say so:\n{}",
        log()
    );
    assert_eq!(finish_request(pipe), 200, "{}", log());
}

// Item 11, `connect`: its connections closed at the drain timeout get their audit line too.
#[test]
fn connect_drain_timeout_closes_are_audited() {
    let (fx, _, serve) = serve_fixture(&[]);
    let mut conn = connect_as_ok(&fx, &serve, &["--drain-timeout", "1s"]);
    let mut local = TcpStream::connect(("127.0.0.1", conn.port)).unwrap();
    local.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    // Established end to end once serve has allowed it.
    serve.wait_handshakes("allowed", "ok", 1.0);
    signal(conn.pid(), "TERM");
    let st = eventually(Duration::from_secs(20), || conn.child.0.try_wait().unwrap());
    assert!(
        st.is_some(),
        "connect did not exit:\n{}",
        conn.stderr_text()
    );
    let lines = conn.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}\n{}", conn.stderr_text());
    assert_eq!(lines[0]["result"], "allowed", "{}", lines[0]);
    assert!(lines[0]["bytes_in"].as_u64().unwrap() > 0, "{}", lines[0]);
}

// Item 10, HTTP mode: with --end-on-peer-expiry a kept-alive connection ends at the expiry.
#[test]
fn http_keepalive_ends_at_peer_expiry_with_the_flag() {
    let fx = fixture();
    let (backend, _seen) = recording_backend();
    let t0 = now_secs();
    let (short, expires) = short_ok_client(&fx, "short-http", 8);
    let p = start_serve(
        &fx,
        &backend.to_string(),
        &["--http", "--end-on-peer-expiry"],
    );
    let mut s = tls_connect(p.addr(), &rustls_config(&fx.pki.root, Some(&short))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut s),
        (200, "recorded".into()),
        "{}",
        p.stderr_text()
    );
    assert!(t0 + 8 >= expires - 1, "unexpected notAfter");
    // The connection is idle now (idle timeout 5m): only the expiry timer can end it.
    let mut buf = [0u8; 16];
    let r = s.read(&mut buf);
    let ended = match &r {
        Ok(0) => true,
        Ok(_) => false,
        // A read timeout is not an end.
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(ended, "{r:?}\n{}", p.stderr_text());
    assert!(
        now_secs() >= expires,
        "ended before the expiry: {}",
        p.stderr_text()
    );
    assert!(
        p.stderr_text().contains("expired"),
        "the log must say why:\n{}",
        p.stderr_text()
    );
}
