//! The proxy's connection path in one place (issue 12): every way out of a connection writes
//! exactly one audit line with its reason, through the one connection record. `connect` used to
//! have a path out of its connection handler that wrote no line at all (its remote dial had an
//! arm that returned silently); every path now ends the record, and a record nobody ends is
//! audited as `failed`/`other` when dropped (unit test in conn/record.rs). The audit line and
//! PROXY header read the peer from one `VerifiedPeer`, whose TLS version is spelled `TLSv1.3`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;
use proxy_common::*;

use std::io::{Read, Write};
use std::net::TcpStream;

fn connect_args(fx: &Fixture, extra: &[&str]) -> Vec<String> {
    tls_args(&fx.ok.cert, &fx.ok.key, &fx.pki.root, extra)
}

/// Opens a local connection, sends a line, and reads until the proxy closes it.
fn poke(port: u16) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let _ = s.write_all(b"hello\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn connect_with_its_remote_down_audits_backend_unavailable() {
    let fx = fixture();
    // A port nobody listens on: the dial is refused.
    let remote = format!("127.0.0.1:{}", free_port());
    let conn = spawn_proxy("connect", "--remote", &remote, &connect_args(&fx, &[]));
    let out = poke(conn.port);
    assert!(out.is_empty(), "{out:?}");
    let line = conn.assert_only_failure("backend_unavailable");
    assert!(line["identity"].is_null(), "{line}");
    assert!(line["tls"].is_null(), "{line}");
    conn.wait_stderr("Hint:");
}

#[test]
fn connect_to_a_remote_that_never_answers_audits_handshake_timeout() {
    let fx = fixture();
    // Accepts TCP (the kernel's backlog) but never speaks TLS.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = silent.local_addr().unwrap().to_string();
    let conn = spawn_proxy(
        "connect",
        "--remote",
        &remote,
        &connect_args(&fx, &["--handshake-timeout", "1s"]),
    );
    let out = poke(conn.port);
    assert!(out.is_empty(), "{out:?}");
    conn.assert_only_failure("handshake_timeout");
    drop(silent);
}

#[test]
fn serve_audits_the_verified_peer_with_the_audit_spelling_of_tls() {
    let (fx, _, proxy) = serve_fixture(&[]);
    let root = fx.pki.root.clone();
    let (status, body) = rustls_get(proxy.addr(), &rustls_config(&root, Some(&fx.ok))).unwrap();
    assert_eq!(status, 200, "{body}");
    let line = proxy.wait_audit_line("allowed", "ok");
    assert_eq!(line["identity"]["spiffe"], OK_ID, "{line}");
    assert_eq!(line["tls"]["version"], "TLSv1.3", "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 0, "{line}");

    // Denied inside the handshake (TCP mode's connection entry point): the line still names
    // who it was and what was negotiated.
    let denied = rustls_config(&root, Some(&fx.denied));
    let _ = tls_connect(proxy.addr(), &denied);
    let line = proxy.wait_audit_line("denied", "policy_denied");
    assert_eq!(line["identity"]["spiffe"], OTHER_ID, "{line}");
    assert_eq!(line["tls"]["version"], "TLSv1.3", "{line}");
    proxy.wait_handshakes("denied", "policy_denied", 1.0);
}
