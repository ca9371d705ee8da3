//! `mutual serve --http` against real clients (curl over HTTP/1.1 and HTTP/2, Python's
//! `ssl` + `http.client`) and a Python `http.server` backend that echoes the request headers it
//! received: the identity headers arrive exactly as docs/http.md specifies (checked against
//! what `openssl x509` prints for the same certificate), a client can never smuggle its own
//! copy, per-request policy answers 403 problem+json and keeps the connection, requests are
//! counted and audited one by one, backend connections are pooled, and a dead backend is a 502.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;
use proxy_common::*;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

const ECHO_BACKEND: &str = r#"
import json, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def any(self):
        if self.path.startswith("/slow"):
            import time
            time.sleep(10)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        out = json.dumps({"method": self.command, "path": self.path,
                          "headers": [[k, v] for k, v in self.headers.items()],
                          "peer_port": self.client_address[1] if isinstance(self.client_address, tuple) else 0,
                          "body_len": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = any
    def log_message(self, *a):
        pass
if len(sys.argv) > 1:
    import socketserver
    s = socketserver.ThreadingUnixStreamServer(sys.argv[1], H)
    print(0, flush=True)
else:
    s = ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Runs the requests given as JSON on stdin over ONE TLS connection (http.client, no ALPN):
/// each `{"method", "path", "headers": [[name, value], ...]}` is sent with exactly those header
/// names (case and duplicates kept). Prints one JSON list of {status, ctype, body, local_port}.
const PY_CLIENT: &str = r#"
import http.client, json, ssl, sys
host, port, ca, cert, key = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=15)
out = []
for r in json.load(sys.stdin):
    c.putrequest(r["method"], r["path"])
    for k, v in r.get("headers", []):
        c.putheader(k, v)
    c.endheaders()
    resp = c.getresponse()
    body = resp.read().decode()
    out.append({"status": resp.status, "ctype": resp.getheader("Content-Type"), "body": body,
                "local_port": c.sock.getsockname()[1]})
print(json.dumps(out))
"#;

struct Backend {
    _child: ChildGuard,
    addr: String,
    _dir: tempfile::TempDir,
}

fn echo_backend() -> Backend {
    echo_backend_on(false)
}

/// The echo backend on TCP, or on a Unix socket (`addr` is then `unix:/path`).
fn echo_backend_on(unix: bool) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("echo.py");
    std::fs::write(&script, ECHO_BACKEND).unwrap();
    let sock = dir.path().join("echo.sock");
    let mut cmd = Command::new("python3");
    cmd.arg(&script);
    if unix {
        cmd.arg(&sock);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed for this test");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("backend port");
    Backend {
        _child: ChildGuard(child),
        addr: if unix {
            format!("unix:{}", sock.display())
        } else {
            format!("127.0.0.1:{port}")
        },
        _dir: dir,
    }
}

const POLICY: &str = r#"
[[allow]]
spiffe = "spiffe://test.mutual/client/ok"

[[allow]]
spiffe = "spiffe://test.mutual/client/other"
methods = ["GET"]
paths = ["/public/*"]
"#;

/// `mutual serve --http` with POLICY, in front of `backend`.
fn start_http(fx: &Fixture, backend: &str, extra: &[&str]) -> Proxy {
    let policy = fx.pki.path("http-policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut args = tls_args(
        &fx.server.cert,
        &fx.server.key,
        &fx.pki.root,
        &["--http", "--policy", policy.to_str().unwrap()],
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_proxy("serve", "--backend", backend, &args)
}

/// One curl request; returns (http_code, http_version, body, content_type).
fn curl(proxy: &Proxy, fx: &Fixture, leaf: &Leaf, args: &[&str], path: &str) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "15", "--cacert"])
        .arg(&fx.pki.root)
        .arg("--cert")
        .arg(&leaf.cert)
        .arg("--key")
        .arg(&leaf.key)
        .args(args)
        .args(["-w", "\n%{http_code} %{http_version} %{content_type}"])
        .arg(format!("https://127.0.0.1:{}{path}", proxy.port))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.stderr_text()
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, meta) = text.rsplit_once('\n').unwrap();
    let mut m = meta.splitn(3, ' ');
    Curl {
        code: m.next().unwrap().to_string(),
        version: m.next().unwrap().to_string(),
        ctype: m.next().unwrap_or("").to_string(),
        body: body.to_string(),
    }
}

struct Curl {
    code: String,
    version: String,
    ctype: String,
    body: String,
}

/// Runs `reqs` over one connection with Python's ssl + http.client.
fn py(proxy: &Proxy, fx: &Fixture, leaf: &Leaf, reqs: serde_json::Value) -> Vec<serde_json::Value> {
    let script = proxy.dir.path().join("client.py");
    std::fs::write(&script, PY_CLIENT).unwrap();
    let out = mutual_test::output_with_stdin(
        Command::new("python3")
            .arg(&script)
            .args(["127.0.0.1", &proxy.port.to_string()])
            .arg(&fx.pki.root)
            .arg(&leaf.cert)
            .arg(&leaf.key),
        reqs.to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "python client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.stderr_text()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Values of a header the backend received, matched case-insensitively.
fn received(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

fn openssl(args: &[&str], input: &Path) -> Vec<u8> {
    mutual_test::output_ok(Command::new("openssl").args(args).arg("-in").arg(input)).stdout
}

/// What openssl says about the first certificate in `pem`: (sha256 of DER hex, RFC 2253
/// subject, base64 of DER).
fn openssl_facts(pem: &Path, dir: &Path) -> (String, String, String) {
    let der = openssl(&["x509", "-outform", "DER"], pem);
    let der_file = dir.join(format!(
        "{}.der",
        pem.file_stem().unwrap().to_str().unwrap()
    ));
    std::fs::write(&der_file, &der).unwrap();
    let sum = Command::new("sha256sum").arg(&der_file).output().unwrap();
    let hash = String::from_utf8(sum.stdout).unwrap()[..64].to_string();
    let subject = String::from_utf8(openssl(
        &["x509", "-noout", "-subject", "-nameopt", "RFC2253"],
        pem,
    ))
    .unwrap();
    let subject = subject.trim().strip_prefix("subject=").unwrap().to_string();
    let b64 = String::from_utf8(openssl(&["base64", "-A"], &der_file))
        .unwrap()
        .trim()
        .to_string();
    (hash, subject, b64)
}

/// Spoofed identity headers in odd cases and several copies.
fn spoofs() -> serde_json::Value {
    serde_json::json!([
        ["X-Forwarded-Client-Cert", "Hash=evil;URI=spiffe://evil/x"],
        ["x-FORWARDED-client-CERT", "By=evil"],
        ["x-forwarded-client-cert", "Hash=evil2"],
        ["Client-Cert", ":ZXZpbA==:"],
        ["CLIENT-CERT", ":ZXZpbDI=:"],
        ["client-cert-CHAIN", ":ZXZpbA==:"]
    ])
}

#[test]
fn identity_headers_are_exact_and_never_spoofable_in_every_mode() {
    let fx = fixture();
    // A leaf whose names exercise the formats: DNS SANs in order, a subject that needs RFC 4514
    // escaping (comma, quote, plus) and has two RDNs.
    let named = fx.pki.leaf(
        "named",
        LeafOpts::new("svc, \"one\"")
            .ou("team+x")
            .san(&format!("uri:{OK_ID}"))
            .san("dns:a.test")
            .san("dns:b.test"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (hash, subject, leaf_b64) = openssl_facts(&named.cert, tmp.path());
    assert_eq!(subject, r#"OU=team\+x,CN=svc\, \"one\""#, "openssl's view");
    let (_, _, int_b64) = openssl_facts(&fx.pki.intermediate, tmp.path());
    let want_xfcc = format!(r#"Hash={hash};Subject="{subject}";URI={OK_ID};DNS=a.test;DNS=b.test"#);
    let want_cc = format!(":{leaf_b64}:");
    let want_chain = format!(":{int_b64}:");
    let be = echo_backend();
    let spoof_args: Vec<String> = spoofs()
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| {
            [
                "-H".to_string(),
                format!("{}: {}", h[0].as_str().unwrap(), h[1].as_str().unwrap()),
            ]
        })
        .collect();
    for mode in ["xfcc", "rfc9440", "both", "none"] {
        let proxy = start_http(&fx, &be.addr, &["--forward-client-cert", mode]);
        let mut echoes = Vec::new();
        for (proto, want_version) in [("--http1.1", "1.1"), ("--http2", "2")] {
            let mut args: Vec<&str> = vec![proto];
            args.extend(spoof_args.iter().map(String::as_str));
            let r = curl(&proxy, &fx, &named, &args, "/hello?q=1");
            assert_eq!(r.code, "200", "{mode} {proto}: {}", r.body);
            assert_eq!(
                r.version, want_version,
                "{mode}: ALPN must negotiate {proto}"
            );
            echoes.push(serde_json::from_str::<serde_json::Value>(&r.body).unwrap());
        }
        let py_out = py(
            &proxy,
            &fx,
            &named,
            serde_json::json!([{"method": "GET", "path": "/py", "headers": spoofs()}]),
        );
        assert_eq!(py_out[0]["status"], 200);
        echoes.push(serde_json::from_str(py_out[0]["body"].as_str().unwrap()).unwrap());
        for echo in &echoes {
            let xfcc = received(echo, "x-forwarded-client-cert");
            let cc = received(echo, "client-cert");
            let chain = received(echo, "client-cert-chain");
            let ctx = format!("mode {mode}, backend saw {echo}");
            match mode {
                "xfcc" => {
                    assert_eq!(xfcc, [want_xfcc.as_str()], "{ctx}");
                    assert!(cc.is_empty() && chain.is_empty(), "{ctx}");
                }
                "rfc9440" => {
                    assert!(xfcc.is_empty(), "{ctx}");
                    assert_eq!(cc, [want_cc.as_str()], "{ctx}");
                    assert_eq!(chain, [want_chain.as_str()], "{ctx}");
                }
                "both" => {
                    assert_eq!(xfcc, [want_xfcc.as_str()], "{ctx}");
                    assert_eq!(cc, [want_cc.as_str()], "{ctx}");
                    assert_eq!(chain, [want_chain.as_str()], "{ctx}");
                }
                _ => assert!(
                    xfcc.is_empty() && cc.is_empty() && chain.is_empty(),
                    "{ctx}"
                ),
            }
            assert_eq!(received(echo, "x-forwarded-proto"), ["https"], "{ctx}");
            assert_eq!(received(echo, "x-forwarded-for"), ["127.0.0.1"], "{ctx}");
            assert_eq!(received(echo, "host").len(), 1, "{ctx}");
        }
        assert_eq!(echoes[0]["path"], "/hello?q=1");
    }
}

#[test]
fn xfcc_cert_detail_carries_the_url_encoded_pem() {
    let fx = fixture();
    let be = echo_backend();
    let proxy = start_http(&fx, &be.addr, &["--forward-client-cert-details", "cert"]);
    let r = curl(&proxy, &fx, &fx.ok, &[], "/");
    assert_eq!(r.code, "200");
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let xfcc = received(&echo, "x-forwarded-client-cert");
    let cert = xfcc[0]
        .split(';')
        .find_map(|p| p.strip_prefix("Cert=\""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no Cert= in {xfcc:?}"));
    let pem = percent_decode(cert);
    assert_eq!(pem, fx.ok.leaf_pem.replace("\r\n", "\n"), "{xfcc:?}");
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn per_request_policy_counts_audits_and_keeps_the_connection() {
    let fx = fixture();
    let be = echo_backend();
    let proxy = start_http(&fx, &be.addr, &[]);
    // fx.denied is OTHER_ID: only GET /public/* is allowed.
    let out = py(
        &proxy,
        &fx,
        &fx.denied,
        serde_json::json!([
            {"method": "GET", "path": "/public/a"},
            {"method": "POST", "path": "/public/a", "headers": [["Content-Length", "0"]]},
            {"method": "GET", "path": "/private?token=secret"},
            {"method": "GET", "path": "/public/../private"},
            {"method": "GET", "path": "/public/b"}
        ]),
    );
    let statuses: Vec<u64> = out.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 403, 403, 403, 200]);
    // One TLS connection carried all five (the client's local port never changed).
    assert!(out.iter().all(|r| r["local_port"] == out[0]["local_port"]));
    for denied in &out[1..4] {
        assert_eq!(denied["ctype"], "application/problem+json");
        let p: serde_json::Value = serde_json::from_str(denied["body"].as_str().unwrap()).unwrap();
        assert_eq!(p["status"], 403);
        assert_eq!(p["reason"], "policy_denied");
        assert_eq!(p["identity"], OTHER_ID);
    }
    // One line per request: wait for the five request lines themselves, whatever else is logged.
    let lines = proxy.wait_audit_count_where("for a request", 5, |l| l.get("method").is_some());
    let reqs: Vec<_> = lines.iter().filter(|l| l.get("method").is_some()).collect();
    let mut seen: Vec<(String, String, u64, String, String)> = reqs
        .iter()
        .map(|l| {
            (
                l["method"].as_str().unwrap().to_string(),
                l["path"].as_str().unwrap().to_string(),
                l["status"].as_u64().unwrap(),
                l["result"].as_str().unwrap().to_string(),
                l["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let row = |m: &str, p: &str, s: u64, r: &str, why: &str| {
        (
            m.to_string(),
            p.to_string(),
            s,
            r.to_string(),
            why.to_string(),
        )
    };
    // Compared as sets: a line may be written after the client has its response, so the
    // order of the lines is not the order of the requests.
    let mut want = vec![
        row("GET", "/public/a", 200, "allowed", "ok"),
        row("POST", "/public/a", 403, "denied", "policy_denied"),
        // The query (which may hold a token) is not logged.
        row("GET", "/private", 403, "denied", "policy_denied"),
        row("GET", "/public/../private", 403, "denied", "policy_denied"),
        row("GET", "/public/b", 200, "allowed", "ok"),
    ];
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
    assert!(reqs
        .iter()
        .all(|l| l["identity"]["spiffe"] == OTHER_ID && l["tls"]["version"] == "TLSv1.3"));
    let series = |result: &str| {
        format!(
            "mutual_http_requests_total{{listener=\"serve\",result=\"{result}\",identity=\"{OTHER_ID}\"}}"
        )
    };
    // Exact counts: wait until each reaches its value, then check it did not overshoot.
    proxy.wait_metric(&series("allowed"), |v| v >= 2.0);
    proxy.wait_metric(&series("denied"), |v| v >= 3.0);
    assert_eq!(
        proxy.metric(&series("allowed")),
        Some(2.0),
        "{}",
        proxy.metrics()
    );
    assert_eq!(
        proxy.metric(&series("denied")),
        Some(3.0),
        "{}",
        proxy.metrics()
    );
    // The identity is named by a rule, so the connection itself counts as allowed.
    assert_eq!(proxy.handshakes("allowed", "ok"), 1.0);
}

#[test]
fn an_identity_no_rule_names_gets_403_for_each_request() {
    let fx = fixture();
    let stranger = fx.pki.leaf(
        "stranger",
        LeafOpts::new("stranger").san("uri:spiffe://test.mutual/client/stranger"),
    );
    let be = echo_backend();
    let proxy = start_http(&fx, &be.addr, &[]);
    for proto in ["--http1.1", "--http2"] {
        let r = curl(&proxy, &fx, &stranger, &[proto], "/public/a");
        assert_eq!(r.code, "403", "{}", r.body);
        assert_eq!(r.ctype, "application/problem+json");
        let p: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(p["reason"], "policy_denied");
        assert_eq!(p["identity"], "spiffe://test.mutual/client/stranger");
    }
    proxy.wait_handshakes("denied", "policy_denied", 2.0);
}

#[test]
fn backend_connections_are_pooled_across_requests_and_connections() {
    let fx = fixture();
    let be = echo_backend();
    let proxy = start_http(&fx, &be.addr, &[]);
    let get = serde_json::json!([
        {"method": "GET", "path": "/1"},
        {"method": "GET", "path": "/2"},
        {"method": "GET", "path": "/3"},
        {"method": "GET", "path": "/4"}
    ]);
    let backend_ports = |out: &[serde_json::Value]| -> Vec<u64> {
        out.iter()
            .map(|r| {
                let echo: serde_json::Value =
                    serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
                echo["peer_port"].as_u64().unwrap()
            })
            .collect()
    };
    let first = py(&proxy, &fx, &fx.ok, get.clone());
    let second = py(&proxy, &fx, &fx.ok, get);
    // Two client TLS connections (different local ports) ...
    assert_ne!(first[0]["local_port"], second[0]["local_port"]);
    let (a, b) = (backend_ports(&first), backend_ports(&second));
    let mut distinct: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
    distinct.sort();
    distinct.dedup();
    // ... eight requests, and the backend saw few TCP peers: keep-alive connections from one
    // pool. (Not exactly one: a request that arrives while the previous response's connection
    // is still being handed back to the pool may open a second one; hyper's pool races the two.)
    assert!(distinct.len() <= 3, "backend peers {a:?} {b:?}");
    // A backend connection opened for the first client connection served the second one too.
    assert!(b.iter().any(|p| a.contains(p)), "backend peers {a:?} {b:?}");
}

#[test]
fn a_dead_backend_is_a_502_problem() {
    let fx = fixture();
    let dead = format!("127.0.0.1:{}", free_port());
    let proxy = start_http(&fx, &dead, &["--connect-timeout", "2s"]);
    for proto in ["--http1.1", "--http2"] {
        let r = curl(&proxy, &fx, &fx.ok, &[proto], "/x");
        assert_eq!(r.code, "502", "{}", r.body);
        assert_eq!(r.ctype, "application/problem+json");
        let p: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(p["reason"], "backend_unavailable");
        assert_eq!(p["identity"], OK_ID);
        // The backend's address is for the operator's log, not for the client.
        assert!(!r.body.contains(&dead), "{}", r.body);
    }
    let lines = proxy.wait_audit_count_where("with status 502", 2, |l| l["status"] == 502);
    assert!(lines.iter().all(|l| l["status"] == 502
        && l["result"] == "failed"
        && l["reason"] == "backend_unavailable"));
    let failed = format!(
        "mutual_http_requests_total{{listener=\"serve\",result=\"failed\",identity=\"{OK_ID}\"}}"
    );
    proxy.wait_metric(&failed, |v| v >= 2.0);
    assert_eq!(proxy.metric(&failed), Some(2.0));
}

#[test]
fn tcp_mode_refuses_a_policy_with_http_rules() {
    let fx = fixture();
    let policy = fx.pki.path("http-policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let err = fixture_refusal(&fx, &["--policy", policy.to_str().unwrap()]);
    assert!(
        err.contains("`methods` or `paths`") && err.contains("--http"),
        "{err}"
    );
}

#[test]
fn a_unix_socket_backend_gets_the_identity_too() {
    let fx = fixture();
    let be = echo_backend_on(true);
    let proxy = start_http(&fx, &be.addr, &[]);
    for proto in ["--http1.1", "--http2"] {
        let r = curl(&proxy, &fx, &fx.ok, &[proto], "/over-unix");
        assert_eq!(r.code, "200", "{}", r.body);
        let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(echo["path"], "/over-unix");
        let xfcc = received(&echo, "x-forwarded-client-cert");
        assert!(
            xfcc.len() == 1 && xfcc[0].contains(&format!(";URI={OK_ID}")),
            "{xfcc:?}"
        );
    }
}

/// Sends one keep-alive HTTP/1.1 request with rustls (no ALPN) and reads its whole response,
/// leaving the connection open.
fn keep_alive_request(proxy: &Proxy, fx: &Fixture) -> TlsStream {
    use std::io::Read;
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let mut s = tls_connect(proxy.addr(), &cfg).unwrap();
    s.write_all(b"GET /held HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"body_len\": 0}") {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    s
}

/// Reads until the proxy closes the connection and asserts that came well before any
/// default timeout (14 s; the tests set 1 s limits or signal the proxy).
fn assert_closed_soon(mut s: TlsStream) {
    use std::io::Read;
    let t = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let took = t.elapsed();
    assert!(
        took < std::time::Duration::from_secs(14),
        "closed after {took:?}"
    );
}

#[test]
fn idle_keep_alive_connections_close_on_idle_timeout_and_on_sigterm() {
    let fx = fixture();
    let be = echo_backend();
    let proxy = start_http(&fx, &be.addr, &["--idle-timeout", "1s"]);
    assert_closed_soon(keep_alive_request(&proxy, &fx));

    let mut proxy = start_http(&fx, &be.addr, &["--drain-timeout", "30s"]);
    let held = keep_alive_request(&proxy, &fx);
    signal(proxy.pid(), "TERM");
    // The idle keep-alive connection is closed at once, not kept until the drain timeout.
    assert_closed_soon(held);
    let st = eventually(EVENT_TIMEOUT, || proxy.child.0.try_wait().unwrap())
        .expect("mutual serve --http did not exit after SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", proxy.stderr_text());
}

#[test]
fn max_connection_lifetime_closes_a_kept_alive_connection() {
    let fx = fixture();
    let be = echo_backend();
    let proxy = start_http(&fx, &be.addr, &["--max-connection-lifetime", "1s"]);
    // Without the lifetime this connection would stay open for the 5-minute idle timeout.
    assert_closed_soon(keep_alive_request(&proxy, &fx));
    proxy.wait_stderr("max connection lifetime reached");
}

#[test]
fn a_request_the_client_abandons_is_still_audited() {
    let fx = fixture();
    let be = echo_backend();
    let proxy = start_http(&fx, &be.addr, &[]);
    // HTTP/2: curl gives up after 3 s (time enough for the handshake on a loaded machine) and
    // resets the stream while the backend is still busy (it answers /slow after 10 s).
    let st = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "3", "--cacert"])
        .arg(&fx.pki.root)
        .arg("--cert")
        .arg(&fx.ok.cert)
        .arg("--key")
        .arg(&fx.ok.key)
        .arg(format!("https://127.0.0.1:{}/slow", proxy.port))
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(28), "curl should time out");
    let line = proxy.wait_audit_where("for /slow", |l| l["path"] == "/slow");
    assert_eq!(line["status"], 0, "{line}");
    assert_eq!(line["result"], "failed", "{line}");
    assert_eq!(line["reason"], "other", "{line}");
    assert_eq!(proxy.audit_lines().len(), 1, "{:?}", proxy.audit_lines());
}
