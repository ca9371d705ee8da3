//! The library crates' repeats removed (issue 12), seen from outside:
//! - HTTP mode now reads the peer's identity inside the handshake, from the verifier's own
//!   parse of the leaf (the `PeerCheck` hook runs in both modes, and only TCP mode refuses
//!   there): a peer no rule names still completes the handshake and gets a readable 403 with
//!   its identity, and an allowed one is audited with its identity;
//! - one body wrapper counts the request and response bytes of HTTP mode: the audit line's
//!   `bytes_out` is exactly the response body the backend sent (it is written when that body
//!   has been sent, not before);
//! - the probe's file faults are mutual-tls's own error: a missing `--ca` is reported as `io`
//!   with the path, exit 2, as `serve` reports it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;
use proxy_common::*;

use std::process::Command;

#[test]
fn http_mode_reads_the_identity_in_the_handshake_and_counts_the_response_body() {
    let fx = fixture();
    let be = http_backend();
    let proxy = start_serve(&fx, &be.addr.to_string(), &["--http"]);
    let root = fx.pki.root.clone();

    let (ok, code, body) = curl(proxy.addr().port(), &root, Some(&fx.ok));
    assert!(ok, "{code} {body}");
    assert_eq!(code, "200", "{body}");
    assert_eq!(body, BACKEND_BODY);
    let line = proxy.wait_audit_where("the allowed request", |l| {
        l["result"] == "allowed" && l.get("method").is_some()
    });
    assert_eq!(line["identity"]["spiffe"], OK_ID, "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(
        line["bytes_out"].as_u64(),
        Some(BACKEND_BODY.len() as u64),
        "{line}"
    );

    // No rule names this peer: the handshake still completes (HTTP mode refuses per request),
    // and the 403 names who it was.
    let (_, code, body) = curl(proxy.addr().port(), &root, Some(&fx.denied));
    assert_eq!(code, "403", "{body}");
    assert!(body.contains(OTHER_ID), "{body}");
    let line = proxy.wait_audit_where("the denied request", |l| l["result"] == "denied");
    assert_eq!(line["reason"], "policy_denied", "{line}");
    assert_eq!(line["identity"]["spiffe"], OTHER_ID, "{line}");
}

#[test]
fn probe_reports_a_missing_ca_file_as_io_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-roots.pem");
    let out = Command::new(BIN)
        .args(["probe", "127.0.0.1:9", "--ca"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no-such-roots.pem"), "{stderr}");
    assert!(
        stderr.contains("check the path and its permissions"),
        "{stderr}"
    );
}
