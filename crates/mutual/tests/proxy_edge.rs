//! Edge features of `mutual serve` (issue 6, part 3), each against the real binary: the PROXY v2
//! header as a backend sees it (our spec parser, and HAProxy's `accept-proxy` when installed),
//! `--max-connection-lifetime`, `/readyz`, and CRLs fetched from the certificates' CRL
//! distribution points (`--crl-from-cdp`) served by a real `python3 -m http.server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;
mod proxy_common;
use proxy_common::*;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mutual_proxy::proxy_protocol::{self as pp, parse};

/// A backend that reads a PROXY v2 header, hands the raw header to the test, then answers HTTP.
fn proxy_backend() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let addr = tcp_server(move |mut s| {
        let mut head = [0u8; 16];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        let mut rest = vec![0u8; len];
        if s.read_exact(&mut rest).is_err() {
            return;
        }
        let mut header = head.to_vec();
        header.extend_from_slice(&rest);
        let _ = tx.send(header);
        if !read_request_head(&mut s) {
            return;
        }
        let _ = s.write_all(
            format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{BACKEND_BODY}",
                BACKEND_BODY.len()
            )
            .as_bytes(),
        );
    });
    (addr, rx)
}

/// Sends `req` as `fx.ok` over one TLS connection to `p`; (the client's own address, the whole
/// answer).
fn exchange_as_ok(fx: &Fixture, p: &Proxy, req: &[u8]) -> (SocketAddr, String) {
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let mut s = tls_connect(p.addr(), &cfg).unwrap();
    let client_addr = s.sock.local_addr().unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (client_addr, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn proxy_v2_header_carries_address_tls_facts_and_spiffe_id() {
    let fx = fixture();
    let (backend, headers) = proxy_backend();
    let p = start_serve(&fx, &backend.to_string(), &["--proxy-protocol", "v2"]);
    // Note the client's own address to compare with the header's source.
    let (client_addr, text) = exchange_as_ok(&fx, &p, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
    assert!(text.contains(BACKEND_BODY), "{}", p.stderr_text());
    let raw = headers.recv_timeout(EVENT_TIMEOUT).unwrap();
    assert_eq!(&raw[..12], &pp::SIGNATURE);
    let h = parse(&raw).unwrap();
    assert_eq!(h.len, raw.len());
    assert_eq!(h.ver_cmd, 0x21, "version 2, PROXY command");
    assert_eq!(h.fam, 0x11, "TCP over IPv4");
    assert_eq!(h.source, Some(client_addr));
    assert_eq!(h.destination, Some(p.addr()));
    assert_eq!(h.crc_ok, Some(true), "CRC32C present and valid");
    let (client, verify, _) = h.ssl().unwrap();
    assert_eq!(
        client,
        pp::PP2_CLIENT_SSL | pp::PP2_CLIENT_CERT_CONN | pp::PP2_CLIENT_CERT_SESS
    );
    assert_eq!(verify, 0);
    assert_eq!(
        h.ssl_sub(pp::PP2_SUBTYPE_SSL_VERSION).as_deref(),
        Some("TLSv1.3")
    );
    assert_eq!(h.ssl_sub(pp::PP2_SUBTYPE_SSL_CN).as_deref(), Some("ok"));
    let cipher = h.ssl_sub(pp::PP2_SUBTYPE_SSL_CIPHER).unwrap();
    assert!(
        cipher.starts_with("TLS_AES_") || cipher.starts_with("TLS_CHACHA20"),
        "{cipher}"
    );
    assert_eq!(
        h.ssl_sub(pp::PP2_SUBTYPE_SSL_SIG_ALG).as_deref(),
        Some("ecdsa-with-SHA256")
    );
    assert_eq!(
        h.ssl_sub(pp::PP2_SUBTYPE_SSL_KEY_ALG).as_deref(),
        Some("EC256")
    );
    assert_eq!(h.tlv(pp::PP2_TYPE_UNIQUE_ID), Some(OK_ID.as_bytes()));
    assert_eq!(h.tlv(pp::PP2_TYPE_MUTUAL_SPIFFE), Some(OK_ID.as_bytes()));
    // A denied client never reaches the backend, so no header is written for it.
    let denied = rustls_config(&fx.pki.root, Some(&fx.denied));
    let _ = rustls_get(p.addr(), &denied);
    p.wait_handshakes("denied", "policy_denied", 1.0);
    assert!(headers.recv_timeout(Duration::from_millis(300)).is_err());
    // HTTP mode pools backend connections across clients and writes no header: the flag
    // beside --http would do nothing, so it is refused (config key: config_check test).
    let err = fixture_refusal(&fx, &["--allow-any", "--http", "--proxy-protocol", "v2"]);
    assert!(
        err.contains("--proxy-protocol applies to TCP mode only"),
        "{err}"
    );
}

/// HAProxy (a real PROXY protocol implementation) accepts our header and reads the client
/// address and the SPIFFE ID from it (`fc_pp_unique_id`); HAProxy also checks the CRC32C.
#[test]
fn haproxy_accept_proxy_reads_our_header() {
    let haproxy = ["/usr/sbin/haproxy", "haproxy"]
        .into_iter()
        .find(|h| std::path::Path::new(h).exists() || have(h));
    let Some(haproxy) = haproxy else {
        eprintln!("SKIP: haproxy is not installed (CI installs it)");
        return;
    };
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg_path,
        format!(
            r#"global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{port} accept-proxy
    http-request return status 200 content-type text/plain lf-string "src=%[src]:%[src_port] dst=%[dst]:%[dst_port] uid=%[fc_pp_unique_id]\n"
"#
        ),
    )
    .unwrap();
    mutual_test::output_ok(Command::new(haproxy).args(["-c", "-f", cfg_path.to_str().unwrap()]));
    let run = ["-db", "-f", cfg_path.to_str().unwrap()];
    let _h = mutual_test::spawn_listening(Command::new(haproxy).args(run), port);
    let p = start_serve(
        &fx,
        &format!("127.0.0.1:{port}"),
        &["--proxy-protocol", "v2"],
    );
    let req = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let (client_addr, text) = exchange_as_ok(&fx, &p, req);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{text}\n{}",
        p.stderr_text()
    );
    assert!(
        text.contains(&format!("src={client_addr} dst={} uid={OK_ID}", p.addr())),
        "{text}"
    );
}

#[test]
fn max_connection_lifetime_closes_gracefully_and_audits_bytes() {
    let (fx, _, p) = serve_fixture(&["--max-connection-lifetime", "1s"]);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let t = Instant::now();
    // Half a request: the backend waits for the rest, so only the lifetime can end this.
    let mut s = open_held(p.addr(), &cfg);
    let mut out = Vec::new();
    // read_to_end returns Ok only on a clean close_notify (an abrupt close is UnexpectedEof).
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("not a graceful close: {e}\n{}", p.stderr_text()));
    let took = t.elapsed();
    assert!(out.is_empty());
    assert!(
        // The upper bound only tells "ended by the lifetime" from "ended by the client's 15 s
        // read timeout"; a loaded machine may be seconds late.
        took >= Duration::from_millis(900) && took < Duration::from_secs(14),
        "{took:?}"
    );
    let line = p.wait_only_line();
    assert_eq!(line["result"], "allowed", "{line}");
    assert_eq!(line["reason"], "ok", "{line}");
    assert_eq!(line["bytes_in"], "GET / HTTP/1.0\r\n".len(), "{line}");
    assert!(line["duration_ms"].as_u64().unwrap() >= 900, "{line}");
    p.wait_stderr("max connection lifetime reached");
}

#[test]
fn idle_timeout_ends_a_silent_connection_and_spares_a_busy_one() {
    // TCP mode's idle timeout, since one timer serves it, the lifetime and peer expiry (issue 20).
    let (fx, _, p) = serve_fixture(&["--idle-timeout", "2s"]);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    // Busy: a header line every 200 ms for 5 s (two and a half idle timeouts), then the end of
    // the request; the backend's answer proves the connection was never cut.
    let mut busy = open_held(p.addr(), &cfg);
    for i in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        busy.write_all(format!("X-Busy-{i}: 1\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("cut while busy: {e}\n{}", p.stderr_text()));
        busy.flush().unwrap();
    }
    assert_eq!(finish_request(busy), 200, "{}", p.stderr_text());
    // Silent: half a request, so only the idle timeout can end it (the client's own read
    // timeout is 15 s).
    let t = Instant::now();
    let mut silent = open_held(p.addr(), &cfg);
    let mut out = Vec::new();
    let end = silent.read_to_end(&mut out);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(14),
        "{took:?} {end:?}\n{}",
        p.stderr_text()
    );
    assert!(out.is_empty());
    let lines = p.wait_audit(2);
    let silent_line = &lines[1];
    assert_eq!(silent_line["result"], "allowed", "{silent_line}");
    assert_eq!(silent_line["reason"], "ok", "{silent_line}");
    assert_eq!(
        silent_line["bytes_in"],
        "GET / HTTP/1.0\r\n".len(),
        "{silent_line}"
    );
    assert!(
        silent_line["duration_ms"].as_u64().unwrap() >= 1800,
        "{silent_line}"
    );
}

const CA_PW: &str = "edge test password";

/// Runs the real `mutual` with the test CA password; asserts success.
fn mutual_ok(args: &[&str]) -> String {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("MUTUAL_HOME")
        .env("MUTUAL_CA_PASSWORD", CA_PW);
    String::from_utf8_lossy(&mutual_test::output_ok(&mut c).stdout).into_owned()
}

/// `python3 -m http.server` serving `dir` on 127.0.0.1.
fn http_server(dir: &std::path::Path) -> (ChildGuard, u16) {
    let port = free_port();
    let serve = [
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ];
    let mut c = Command::new("python3");
    c.args(serve).arg("--directory").arg(dir);
    (mutual_test::spawn_listening(&mut c, port), port)
}

fn leaf(dir: &std::path::Path, stem: &str) -> Leaf {
    Leaf {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
        leaf_pem: String::new(),
        der: Vec::new(),
        serial_hex: String::new(),
    }
}

fn wait_ready(p: &Proxy) {
    let r = eventually(EVENT_TIMEOUT, || (readyz(p).0 == 200).then_some(()));
    assert!(
        r.is_some(),
        "not ready: {:?}\n{}",
        readyz(p),
        p.stderr_text()
    );
}

fn readyz(p: &Proxy) -> (u16, String) {
    http_get(
        SocketAddr::from(([127, 0, 0, 1], p.metrics_port)),
        "/readyz",
    )
}

fn serve_cdp(
    ca: &std::path::Path,
    certs: &std::path::Path,
    cache: &std::path::Path,
    extra: &[&str],
) -> Proxy {
    let cdp = [
        "--allow-any",
        "--crl-from-cdp",
        "--crl-refresh-max",
        "500ms",
    ];
    let mut args = tls_args(
        &certs.join("server.pem"),
        &certs.join("server.key"),
        &ca.join("root.pem"),
        &cdp,
    );
    args.extend(["--crl-cache-dir".to_string(), cache.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_proxy(
        "serve",
        "--backend",
        &http_backend().addr.to_string(),
        &args,
    )
}

/// The whole CDP story with our own CA: certificates name an http:// CDP, the proxy fetches the
/// CRL from a real HTTP server, a revocation published there takes effect without a restart,
/// the cache survives a restart, and with no CRL at all `--revocation-unknown` decides.
#[test]
fn crl_from_cdp_fetches_refreshes_caches_and_decides_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let certs = tmp.path().join("certs");
    let www = tmp.path().join("www");
    for d in [&ca, &certs, &www] {
        std::fs::create_dir_all(d).unwrap();
    }
    let ca_s = ca.to_str().unwrap();
    mutual_ok(&["ca", "init", "--dir", ca_s, "--name", "Edge"]);
    let (crl_server, port) = http_server(&www);
    let url = format!("http://127.0.0.1:{port}/edge.crl");
    let crl_out = www.join("edge.crl");
    // Publishes the CA's current CRL where the CDP points.
    let publish_crl = || {
        let out = crl_out.to_str().unwrap();
        mutual_ok(&["ca", "crl", "--dir", ca_s, "--out", out]);
    };
    publish_crl();
    let out = certs.to_str().unwrap();
    let issue = ["cert", "issue", "server"];
    let cdp = ["--crl-url", &url, "--dir", ca_s, "--out", out];
    mutual_ok(&[&issue[..], pki_common::LOCALHOST_SERVER, &cdp[..]].concat());
    // A client certificate for spiffe://edge.test/NAME whose CDP is `url`.
    let issue_client = |name: &str| {
        let id = format!("uri:spiffe://edge.test/{name}");
        let a = [
            "cert",
            "issue",
            name,
            "--client",
            "--san",
            &id,
            "--crl-url",
            &url,
        ];
        let mut a = a.to_vec();
        a.extend(["--dir", ca_s, "--out", out]);
        mutual_ok(&a);
    };
    issue_client("client");
    let root = ca.join("root.pem");
    let client = leaf(&certs, "client");
    let cache = tmp.path().join("cache");

    // 1. Fetched at start (from the server's own certificate's CDP): ready, client allowed.
    let p = serve_cdp(&ca, &certs, &cache, &[]);
    wait_ready(&p);
    let (st, _) = rustls_get(p.addr(), &rustls_config(&root, Some(&client))).unwrap();
    assert_eq!(st, 200);
    p.wait_metric("mutual_crl_fetch_total{result=\"success\"}", |v| v >= 1.0);
    assert!(p
        .metrics()
        .contains("mutual_crl_next_update_timestamp_seconds{issuer="));

    // 2. Revoke and publish: refused with `revoked` after the next refresh, no restart.
    mutual_ok(&[
        "cert",
        "revoke",
        "--cert",
        client.cert.to_str().unwrap(),
        "--dir",
        ca_s,
    ]);
    publish_crl();
    // Keep connecting until the handshake itself refuses the client. A connection accepted just
    // before the reload may instead be ended by live re-authorization (`denied`, `revoked`): both
    // are right, in either order, so wait for the handshake refusal's counter, not for an order.
    let refused = eventually(Duration::from_secs(60), || {
        let _ = rustls_get(p.addr(), &rustls_config(&root, Some(&client)));
        (p.handshakes("failed", "revoked") >= 1.0).then_some(())
    });
    assert!(refused.is_some(), "{}\n{}", p.metrics(), p.stderr_text());
    // The counter moves just before the audit line is written: wait for the line itself.
    p.wait_audit_line("failed", "revoked");
    // Whatever the interleaving: every line is `ok` or `revoked` (a handshake refusal, or a live
    // connection ended by re-authorization), and nothing was refused for another reason.
    let lines = p.audit_lines();
    assert!(
        lines.iter().all(|l| is_line(l, "allowed", "ok")
            || is_line(l, "failed", "revoked")
            || is_line(l, "denied", "revoked")),
        "{lines:?}"
    );
    // And once refused, refused for good: a new connection now fails at the handshake.
    assert!(rustls_get(p.addr(), &rustls_config(&root, Some(&client))).is_err());
    // The new CRL went through the listener's reload path (fresh session tickets).
    p.wait_metric("mutual_config_reloads_total{result=\"success\"}", |v| {
        v >= 1.0
    });
    p.wait_stderr("CRL fetched and verified");
    drop(p);

    // 3. CRL server down, cache from before: the cached CRL still applies after a restart.
    drop(crl_server);
    let p = serve_cdp(&ca, &certs, &cache, &[]);
    wait_ready(&p);
    assert!(rustls_get(p.addr(), &rustls_config(&root, Some(&client))).is_err());
    p.wait_audit_line("failed", "revoked");
    let lines = p.audit_lines();
    assert!(
        lines.iter().all(|l| is_line(l, "failed", "revoked")),
        "{lines:?}"
    );
    drop(p);

    // 4. CRL server down, no cache, deny: not ready, and a client is refused with
    // revocation_unknown (a fresh client certificate, not revoked).
    issue_client("client2");
    let client2 = leaf(&certs, "client2");
    let p = serve_cdp(&ca, &certs, &tmp.path().join("cache-empty"), &[]);
    let (st, body) = readyz(&p);
    assert_eq!(st, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert!(
        v["not_ready"]["crl serve"].as_str().unwrap().contains(&url),
        "{body}"
    );
    assert!(rustls_get(p.addr(), &rustls_config(&root, Some(&client2))).is_err());
    p.wait_audit_line("failed", "revocation_unknown");
    let lines = p.audit_lines();
    assert!(
        lines
            .iter()
            .all(|l| is_line(l, "failed", "revocation_unknown")),
        "{lines:?}"
    );
    // The refusal does not wait for the fetch attempt: wait for the attempt's own traces.
    p.wait_stderr("CRL fetch failed");
    p.wait_metric("mutual_crl_fetch_total{result=\"failure\"}", |v| v >= 1.0);
    drop(p);

    // 5. Same, with --revocation-unknown allow: ready, and the client is let through.
    let p = serve_cdp(
        &ca,
        &certs,
        &tmp.path().join("cache-empty2"),
        &["--revocation-unknown", "allow"],
    );
    wait_ready(&p);
    let (st, _) = rustls_get(p.addr(), &rustls_config(&root, Some(&client2))).unwrap();
    assert_eq!(st, 200);
    let line = p.wait_audit_line("allowed", "ok");
    assert_eq!(
        line["identity"]["spiffe"], "spiffe://edge.test/client2",
        "{line}"
    );
}

#[test]
fn readyz_is_200_when_serving_and_healthz_stays() {
    let (_fx, _, p) = serve_fixture(&[]);
    wait_ready(&p);
    let (st, body) = readyz(&p);
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["not_ready"], serde_json::json!({}));
}
