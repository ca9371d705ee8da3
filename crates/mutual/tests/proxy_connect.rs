//! `mutual connect`: plaintext in, mTLS out. Against `openssl s_server -Verify 1
//! -verify_return_error` (a peer that insists on our client certificate) it works with the right
//! server name and fails with `name_mismatch` with a wrong one; in front of `mutual serve` it
//! carries requests end to end, and a server-side rejection of our certificate is reported with
//! its reason; a non-loopback listen address is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;
use proxy_common::*;

use std::process::Command;

/// openssl s_server answering HTTP (`-www`) and requiring a client certificate from `fx.pki`.
fn s_server(fx: &Fixture) -> (ChildGuard, u16) {
    let mode = [
        "-www",
        "-naccept",
        "100",
        "-Verify",
        "1",
        "-verify_return_error",
    ];
    mutual_test::openssl_s_server(&fx.pki, &fx.server, &mode)
}

/// `mutual connect` to `remote` presenting `leaf`, with `extra`.
fn connect_to(fx: &Fixture, remote: &str, leaf: &Leaf, extra: &[&str]) -> Proxy {
    spawn_proxy(
        "connect",
        "--remote",
        remote,
        &connect_args(fx, leaf, extra),
    )
}

fn connect_args(fx: &Fixture, leaf: &Leaf, extra: &[&str]) -> Vec<String> {
    tls_args(&leaf.cert, &leaf.key, &fx.pki.root, extra)
}

#[test]
fn connect_to_openssl_s_server_verifies_the_server_name() {
    if mutual_test::skip_without("openssl") {
        return;
    }
    let fx = fixture();
    let (_srv, port) = s_server(&fx);
    let remote = format!("127.0.0.1:{port}");

    let good = connect_to(&fx, &remote, &fx.ok, &["--server-name", "localhost"]);
    let out = through(good.port);
    assert!(
        out.starts_with("HTTP/1.0 200"),
        "{out}\n{}",
        good.stderr_text()
    );
    let line = good.wait_only_line();
    assert_eq!(line["result"], "allowed", "{line}");
    assert_eq!(line["tls"]["version"], "TLSv1.3");

    let bad = connect_to(&fx, &remote, &fx.ok, &["--server-name", "wrong.example"]);
    let out = through(bad.port);
    assert!(out.is_empty(), "the local client must get nothing: {out}");
    bad.assert_only_failure("name_mismatch");
    bad.wait_stderr("name_mismatch");
}

#[test]
fn connect_in_front_of_serve_end_to_end() {
    let (fx, _, serve) = serve_fixture(&[]);
    let remote = format!("localhost:{}", serve.port);

    let conn = connect_to(&fx, &remote, &fx.ok, &[]);
    let out = through(conn.port);
    assert!(out.ends_with(BACKEND_BODY), "{out}");
    let cl = conn.wait_only_line();
    assert_eq!(cl["result"], "allowed", "{cl}");
    assert_eq!(cl["identity"]["dns"][0], "localhost", "{cl}");
    assert!(cl["bytes_out"].as_u64().unwrap() > 0);
    let sl = serve.wait_only_line();
    assert_eq!(sl["identity"]["spiffe"], OK_ID, "{sl}");
    assert!(conn
        .metrics()
        .contains("mutual_cert_expiry_timestamp_seconds{listener=\"connect\",role=\"client\"}"));

    // The server rejects a certificate from another CA after our side of the TLS 1.3
    // handshake is done; connect still reports the server's reason.
    let other = connect_to(&fx, &remote, &fx.other_ca, &[]);
    let out = through(other.port);
    assert!(out.is_empty(), "{out}");
    let ol = other.wait_only_line();
    assert_eq!(ol["result"], "failed", "{ol}");
    assert_eq!(ol["reason"], "unknown_ca", "{ol}");
    // serve's own refusal, found by its reason (not by its position in the log).
    let sl = serve.wait_audit_line("failed", "unknown_ca");
    assert!(sl["identity"].is_null(), "{sl}");
    assert_eq!(serve.audit_lines().len(), 2, "{:?}", serve.audit_lines());
}

#[test]
fn connect_refuses_a_non_loopback_listen_address() {
    let fx = fixture();
    let out = Command::new(BIN)
        .args([
            "connect",
            "--listen",
            "0.0.0.0:0",
            "--remote",
            "127.0.0.1:1",
        ])
        .args(connect_args(&fx, &fx.ok, &[]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-remote-clients"), "{err}");
}

/// A remote, server name or expected SPIFFE ID that cannot be one: exit 2, each named as what
/// it is (not as a "backend" or a garbled "invalid name").
#[test]
fn connect_names_what_is_wrong_with_its_peer() {
    let fx = fixture();
    for (remote, extra, want) in [
        (
            "127.0.0.1",
            &[][..],
            "invalid remote \"127.0.0.1\": expected HOST:PORT",
        ),
        (
            "127.0.0.1:0",
            &[][..],
            "invalid remote \"127.0.0.1:0\": the port must be a number 1-65535",
        ),
        (
            "unix:/run/x.sock",
            &[][..],
            "invalid remote \"unix:/run/x.sock\": the remote is an mTLS server, HOST:PORT",
        ),
        (
            "127.0.0.1:1",
            &["--expect-spiffe", "api"][..],
            "invalid SPIFFE ID \"api\": must start with spiffe://",
        ),
        (
            "127.0.0.1:1",
            &["--server-name", "a b"][..],
            "invalid server name \"a b\": not a DNS name or an IP address",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["connect", "--listen", "127.0.0.1:0", "--remote", remote])
            .args(connect_args(&fx, &fx.ok, extra))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{want:?} not in {err}");
    }
}

#[test]
fn connect_expect_spiffe_checks_the_servers_exact_id() {
    let fx = fixture();
    let be = http_backend();
    let server_id = "spiffe://test.mutual/server/api";
    let spiffe_server = fx.pki.leaf(
        "spiffe-server",
        LeafOpts::new("api")
            .san(&format!("uri:{server_id}"))
            .san("dns:localhost")
            .server(),
    );
    let args = connect_args(&fx, &spiffe_server, &["--allow-spiffe", OK_ID]);
    let serve = spawn_proxy("serve", "--backend", &be.addr.to_string(), &args);
    let remote = format!("127.0.0.1:{}", serve.port);

    let right = connect_to(&fx, &remote, &fx.ok, &["--expect-spiffe", server_id]);
    assert!(through(right.port).ends_with(BACKEND_BODY));
    assert_eq!(right.wait_only_line()["identity"]["spiffe"], server_id);

    let wrong = connect_to(
        &fx,
        &remote,
        &fx.ok,
        &["--expect-spiffe", "spiffe://test.mutual/server/other"],
    );
    assert!(through(wrong.port).is_empty());
    let line = wrong.wait_only_line();
    assert_eq!(line["reason"], "name_mismatch", "{line}");
}
