//! `mutual probe` against real servers started here: openssl s_server in each client-auth mode,
//! nginx with `ssl_verify_client on|optional`, and hostile peers (nothing listening, plain
//! HTTP, a reset, silence). Every case asserts the JSON fields a user scripts against.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

mod pki_common;

use mutual_test::{
    free_port, nginx_tls, openssl_s_server, skip_without, wait_for_port, ChildGuard, Leaf,
    LeafOpts, TestPki,
};
use pki_common::{mutual_within, Out};
use serde_json::Value;

struct Fixture {
    good: TestPki,
    wrong: TestPki,
    server: Leaf,
    client: Leaf,
    expired: Leaf,
    stranger: Leaf,
}

fn fx() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let good = TestPki::new("Good");
        let wrong = TestPki::new("Wrong");
        let server = good.leaf("server", LeafOpts::localhost_server());
        let client = good.leaf(
            "client",
            LeafOpts::new("client-a").san("uri:spiffe://example.org/client-a"),
        );
        let expired = good.leaf("expired", LeafOpts::new("client-old").expired());
        let stranger = wrong.leaf("stranger", LeafOpts::new("client-x"));
        Fixture {
            good,
            wrong,
            server,
            client,
            expired,
            stranger,
        }
    })
}

/// Runs the real binary, killing it (and failing the test) if it runs longer than `limit`.
fn mutual(args: &[&str], limit: Duration) -> Out {
    mutual_within(args, limit)
}

fn probe_json(extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["probe", "--json", "--timeout", "10s"];
    args.extend_from_slice(extra);
    let out = mutual(&args, Duration::from_secs(90));
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON from {args:?}: {e}\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        )
    });
    (out.code, v)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// openssl s_server with the good server cert; `extra` picks the client-auth mode.
fn s_server(extra: &[&str]) -> (ChildGuard, u16) {
    let f = fx();
    openssl_s_server(&f.good, &f.server, extra)
}

fn target(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// `probe_json` with the good CA, presenting `leaf`.
fn probe_with(target: &str, leaf: &Leaf) -> (i32, Value) {
    let mut args = with_ca(target);
    args.extend(["--cert", p(&leaf.cert), "--key", p(&leaf.key)]);
    probe_json(&args)
}

/// Presents `leaf` to `target` and checks the verdict: accepted or not, the reason label and
/// the exit code.
fn assert_presented(target: &str, leaf: &Leaf, accepted: bool, reason: &str, code: i32) {
    let (got, v) = probe_with(target, leaf);
    assert_eq!(v["accepted"], accepted, "{v:#}");
    assert_eq!(v["reason"], reason, "{v:#}");
    assert_eq!(got, code, "{v:#}");
}

fn with_ca(port: &str) -> Vec<&str> {
    vec![
        port,
        "--server-name",
        "localhost",
        "--ca",
        p(&fx().good.root),
    ]
}

#[test]
fn anonymous_server_is_client_auth_none() {
    let (_s, port) = s_server(&[]);
    let t = target(port);
    let (code, v) = probe_json(&with_ca(&t));
    assert_eq!(v["client_auth"], "none", "{v:#}");
    assert_eq!(v["accepted"], Value::Null);
    assert_eq!(v["reason"], "ok");
    assert_eq!(v["certificate_requested"], false);
    assert_eq!(v["server_verification"]["valid"], true);
    assert_eq!(v["server_verification"]["reason"], "ok");
    assert_eq!(v["tls_version"], "TLS1.3");
    assert!(v["cipher"].as_str().unwrap().starts_with("TLS13_"));
    assert!(v["group"].is_string());
    let chain = v["server_chain"].as_array().unwrap();
    assert_eq!(chain[0]["subject"], "CN=localhost");
    assert_eq!(chain[0]["issuer"], "CN=Good Intermediate");
    assert!(chain[0]["sans"]
        .as_array()
        .unwrap()
        .contains(&Value::from("dns:localhost")));
    assert_eq!(chain[0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        code, 1,
        "an endpoint that does not enforce mTLS fails the probe"
    );
}

#[test]
fn verify_without_return_error_is_optional() {
    let (_s, port) = s_server(&["-verify", "1"]);
    // A URL pasted from curl names the same endpoint (its path is not the probe's business);
    // the report says HOST:PORT.
    let t = format!("https://127.0.0.1:{port}/v1/health?x=1");
    let (code, v) = probe_json(&with_ca(&t));
    assert_eq!(v["target"], target(port).as_str(), "{v:#}");
    assert_eq!(v["client_auth"], "optional", "{v:#}");
    assert_eq!(v["accepted"], Value::Null);
    assert_eq!(v["reason"], "ok");
    assert_eq!(v["certificate_requested"], true);
    assert_eq!(v["acceptable_cas"][0], "CN=Good Root");
    assert_eq!(code, 1);
}

#[test]
fn required_server_and_client_certs() {
    let f = fx();
    let (_s, port) = s_server(&["-Verify", "1", "-verify_return_error"]);
    let t = target(port);

    // No --cert: enforced, exit 0.
    let (code, v) = probe_json(&with_ca(&t));
    assert_eq!(v["client_auth"], "required", "{v:#}");
    assert_eq!(v["accepted"], Value::Null);
    assert_eq!(v["reason"], "no_client_cert");
    assert_eq!(v["acceptable_cas"][0], "CN=Good Root");
    assert_eq!(code, 0);

    // The right certificate: accepted, exit 0.
    let (code, v) = probe_with(&t, &f.client);
    assert_eq!(v["client_auth"], "required", "{v:#}");
    assert_eq!(v["accepted"], true);
    assert_eq!(v["reason"], "ok");
    assert_eq!(v["client_cert"]["sent"], true);
    assert_eq!(
        v["client_cert"]["chain"][0]["spiffe_id"],
        "spiffe://example.org/client-a"
    );
    assert_eq!(code, 0);

    // A certificate from another CA: unknown_ca, and the local check names the mismatch.
    let (code, v) = probe_with(&t, &f.stranger);
    assert_eq!(v["accepted"], false, "{v:#}");
    assert_eq!(v["reason"], "unknown_ca");
    assert_eq!(v["alert"], "unknown_ca");
    let findings = v["client_cert"]["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|x| x["reason"] == "unknown_ca"),
        "{v:#}"
    );
    assert!(v["hint"].as_str().unwrap().contains("CN=Good Root"));
    assert_eq!(code, 1);

    // An expired certificate: expired.
    assert_presented(&t, &f.expired, false, "expired", 1);
    let _ = &f.wrong;
}

#[test]
fn server_name_mismatch_is_reported_separately() {
    let (_s, port) = s_server(&["-Verify", "1", "-verify_return_error"]);
    let t = target(port);
    // `probe --json TARGET --server-name NAME --ca ROOT EXTRA...`
    let probe_as = |name: &str, root: &Path, extra: &[&str]| {
        let mut a = vec![t.as_str(), "--server-name", name, "--ca", p(root)];
        a.extend_from_slice(extra);
        probe_json(&a)
    };
    let (code, v) = probe_as("api.example.org", &fx().good.root, &[]);
    assert_eq!(v["server_verification"]["valid"], false, "{v:#}");
    assert_eq!(v["server_verification"]["reason"], "name_mismatch");
    assert_eq!(v["client_auth"], "required");
    assert!(v["verdict"].as_str().unwrap().contains("name_mismatch"));
    // Client auth is enforced: exit 0 unless --strict.
    assert_eq!(code, 0);
    let (code, _) = probe_as("api.example.org", &fx().good.root, &["--strict"]);
    assert_eq!(code, 1);
    // The server chain does not chain to another CA's root: unknown_ca.
    let (_, v) = probe_as("localhost", &fx().wrong.root, &[]);
    assert_eq!(v["server_verification"]["reason"], "unknown_ca", "{v:#}");
}

#[test]
fn tls12_only_server() {
    let (_s, port) = s_server(&["-tls1_2", "-Verify", "1", "-verify_return_error"]);
    let t = target(port);
    let (code, v) = probe_json(&with_ca(&t));
    assert_eq!(v["tls_version"], "TLS1.2", "{v:#}");
    assert_eq!(v["versions"]["supported"], serde_json::json!(["TLS1.2"]));
    assert_eq!(v["versions"]["refused"], serde_json::json!(["TLS1.3"]));
    assert_eq!(v["client_auth"], "required");
    assert_eq!(code, 0);
    let f = fx();
    let (_, v) = probe_with(&t, &f.stranger);
    assert_eq!(v["accepted"], false, "{v:#}");
    assert_eq!(v["reason"], "unknown_ca");
}

fn nginx(verify: &str) -> Option<(ChildGuard, u16, tempfile::TempDir)> {
    if skip_without("nginx") {
        return None;
    }
    let f = fx();
    let ssl = format!(
        "  ssl_certificate {cert};\n  ssl_certificate_key {key};\n  ssl_client_certificate {root};\n\
         ssl_verify_client {verify};\n  ssl_verify_depth 3;",
        cert = p(&f.server.cert),
        key = p(&f.server.key),
        root = p(&f.good.root),
    );
    Some(nginx_tls(&ssl))
}

#[test]
fn nginx_verify_client_on() {
    let Some((_n, port, _d)) = nginx("on") else {
        return;
    };
    let f = fx();
    let t = target(port);
    let (code, v) = probe_json(&with_ca(&t));
    assert_eq!(v["client_auth"], "required", "{v:#}");
    assert_eq!(v["reason"], "no_client_cert");
    assert_eq!(v["alpn"], "http/1.1");
    assert_eq!(code, 0);

    assert_presented(&t, &f.client, true, "ok", 0);

    // nginx completes the handshake and refuses at the HTTP level; the local check names why.
    assert_presented(&t, &f.stranger, false, "unknown_ca", 1);
}

#[test]
fn nginx_verify_client_optional() {
    let Some((_n, port, _d)) = nginx("optional") else {
        return;
    };
    let t = target(port);
    let (code, v) = probe_json(&with_ca(&t));
    assert_eq!(v["client_auth"], "optional", "{v:#}");
    assert_eq!(v["reason"], "ok");
    assert_eq!(code, 1);
}

/// A TCP server on an ephemeral port running `f` on each accepted connection, in a thread.
fn tcp_server(f: fn(std::net::TcpStream)) -> u16 {
    mutual_test::tcp_server(f).port()
}

fn assert_clean_failure(v: &Value, kind: &str, reason: &str) {
    assert_eq!(v["error"]["kind"], kind, "{v:#}");
    assert_eq!(v["reason"], reason, "{v:#}");
    assert_eq!(v["client_auth"], Value::Null);
    assert!(v["verdict"].as_str().unwrap().starts_with("FAIL: "));
}

#[test]
fn nothing_listening() {
    let port = free_port();
    let t = target(port);
    let (code, v) = probe_json(&[&t]);
    assert_eq!(code, 1);
    assert_clean_failure(&v, "connection_refused", "other");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("connection refused"));
    // The readable form is one clear line too, and no panic.
    let out = mutual(&["probe", &t, "--timeout", "2s"], Duration::from_secs(30));
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("nothing listens on"), "{}", out.stdout);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn plain_http_server() {
    let port = tcp_server(|mut s| {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad request",
        );
    });
    let (code, v) = probe_json(&[&target(port)]);
    assert_eq!(code, 1);
    assert_clean_failure(&v, "not_tls", "malformed");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("plain HTTP"));
}

#[test]
fn reset_mid_handshake() {
    let port = tcp_server(|mut s| {
        // Read part of the ClientHello and drop: the unread rest makes the kernel send a reset.
        let mut buf = [0u8; 5];
        let _ = s.read_exact(&mut buf);
        drop(s);
    });
    let (code, v) = probe_json(&[&target(port)]);
    assert_eq!(code, 1);
    assert_clean_failure(&v, "reset", "other");
}

#[test]
fn silent_server_times_out() {
    // Held far longer than the probe's 1 s timeout, however late the probe's timer fires.
    let port = tcp_server(|s| {
        std::thread::sleep(Duration::from_secs(60));
        drop(s);
    });
    let out = mutual(
        &["probe", "--json", "--timeout", "1s", &target(port)],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 1);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_clean_failure(&v, "timeout", "handshake_timeout");
}

/// `mutual probe --json --pair ARGS...`: (exit code, report).
fn pair_json(args: &[&str]) -> (i32, Value) {
    let mut a = vec!["probe", "--json", "--pair"];
    a.extend_from_slice(args);
    let out = mutual(&a, Duration::from_secs(60));
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON from {a:?}: {e}\n{}", out.text()));
    (out.code, v)
}

#[test]
fn pair_checks() {
    let f = fx();
    let (code, v) = pair_json(&[p(&f.client.cert), p(&f.client.key), "--ca", p(&f.good.root)]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["key_matches"], true);
    assert_eq!(v["chain_ordered"], true);
    assert_eq!(v["root_needed"], "CN=Good Root");
    assert_eq!(v["chains_to_ca"], true);
    assert_eq!(v["reason"], "ok");

    // Someone else's key.
    let (code, v) = pair_json(&[p(&f.client.cert), p(&f.stranger.key)]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["key_matches"], false);
    assert!(v["verdict"].as_str().unwrap().contains("does not match"));

    // Chain in the wrong order (intermediate first).
    let swapped = f.good.path("swapped.pem");
    std::fs::write(&swapped, format!("{}{}", f.good.int_pem, f.client.leaf_pem)).unwrap();
    let (code, v) = pair_json(&[p(&swapped), p(&f.client.key)]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["chain_ordered"], false);

    // Expired leaf, and a chain to the wrong CA.
    let (code, v) = pair_json(&[p(&f.expired.cert), p(&f.expired.key)]);
    assert_eq!(code, 1);
    assert_eq!(v["reason"], "expired");
    let (code, v) = pair_json(&[
        p(&f.client.cert),
        p(&f.client.key),
        "--ca",
        p(&f.wrong.root),
    ]);
    assert_eq!(code, 1);
    assert_eq!(v["chains_to_ca"], false);
    assert_eq!(v["reason"], "unknown_ca");

    // The handshake's settings mean nothing offline: refused rather than ignored.
    for extra in [["--profile", "strict"], ["--timeout", "1s"]] {
        let mut a = vec!["probe", "--pair", p(&f.client.cert), p(&f.client.key)];
        a.extend(extra);
        let out = mutual(&a, Duration::from_secs(60));
        assert_eq!(out.code, 2, "{}", out.text());
        let want = format!("cannot be used with '{}", extra[0]);
        assert!(out.stderr.contains(&want), "{}", out.text());
    }
}

#[test]
fn bad_usage_exits_2() {
    let out = mutual(
        &[
            "probe",
            "127.0.0.1:1",
            "--cert",
            "/nonexistent.pem",
            "--key",
            "/nonexistent.key",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("/nonexistent.pem"), "{}", out.stderr);
    let out = mutual(&["probe", "no-port-here"], Duration::from_secs(60));
    assert_eq!(out.code, 2);
    // Credentials in the target are refused and not repeated; a scheme that is not TLS too.
    for t in ["https://ops:hunter2@127.0.0.1:1", "ops:hunter2@127.0.0.1:1"] {
        let out = mutual(&["probe", t, "--json"], Duration::from_secs(60));
        assert_eq!(out.code, 2, "{}", out.stdout);
        assert!(out.stdout.contains("carries credentials"), "{}", out.stdout);
        assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
    }
    let out = mutual(&["probe", "http://127.0.0.1:1"], Duration::from_secs(60));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("is not HOST:PORT (or https://HOST[:PORT])"),
        "{}",
        out.stderr
    );
    // A key that does not belong to the certificate is bad configuration, not a probe result.
    let f = fx();
    let out = mutual(
        &[
            "probe",
            "127.0.0.1:1",
            "--cert",
            p(&f.client.cert),
            "--key",
            p(&f.stranger.key),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("does not match"));
}

#[test]
fn mutual_serve_endpoint() {
    let f = fx();
    // A backend that accepts and holds connections (the probe never needs an answer).
    let backend = tcp_server(|s| {
        std::thread::sleep(Duration::from_secs(60));
        drop(s);
    });
    let port = free_port();
    let listen = target(port);
    let child = Command::new(env!("CARGO_BIN_EXE_mutual"))
        .args(["serve", "--listen", &listen, "--backend", &target(backend)])
        .args(["--cert", p(&f.server.cert), "--key", p(&f.server.key)])
        .args(["--ca", p(&f.good.root), "--allow-any"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = ChildGuard(child);
    assert!(
        wait_for_port(addr(port), Duration::from_secs(60)),
        "mutual serve did not start"
    );

    let (code, v) = probe_json(&with_ca(&listen));
    assert_eq!(v["client_auth"], "required", "{v:#}");
    assert_eq!(v["reason"], "no_client_cert");
    assert_eq!(v["acceptable_cas"][0], "CN=Good Root");
    // Our own defaults: TLS 1.3 only, post-quantum hybrid key exchange.
    assert_eq!(v["tls_version"], "TLS1.3");
    assert_eq!(v["versions"]["refused"], serde_json::json!(["TLS1.2"]));
    assert_eq!(v["group"], "X25519MLKEM768");
    assert_eq!(v["post_quantum"], true);
    assert_eq!(code, 0);

    assert_presented(&listen, &f.client, true, "ok", 0);

    assert_presented(&listen, &f.stranger, false, "unknown_ca", 1);

    assert_presented(&listen, &f.expired, false, "expired", 1);
}
