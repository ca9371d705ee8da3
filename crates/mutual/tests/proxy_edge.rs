//! Edge features of `mutual serve` (issue 6, part 3), each against the real binary: the PROXY v2
//! header as a backend sees it (our spec parser, and HAProxy's `accept-proxy` when installed),
//! `--max-connection-lifetime`, `/readyz`, and CRLs fetched from the certificates' CRL
//! distribution points (`--crl-from-cdp`) served by a real `python3 -m http.server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;
use proxy_common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mutual_proxy::proxy_protocol::{self as pp, parse};

/// A backend that reads a PROXY v2 header, hands the raw header to the test, then answers HTTP.
fn proxy_backend() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
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
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{BACKEND_BODY}",
                        BACKEND_BODY.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    (addr, rx)
}

#[test]
fn proxy_v2_header_carries_address_tls_facts_and_spiffe_id() {
    let fx = fixture();
    let (backend, headers) = proxy_backend();
    let p = start_serve(
        &fx,
        &backend.to_string(),
        &["--proxy-protocol", "v2"],
    );
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    // Note the client's own address to compare with the header's source.
    let mut s = tls_connect(p.addr(), &cfg).unwrap();
    let client_addr = s.sock.local_addr().unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        String::from_utf8_lossy(&out).contains(BACKEND_BODY),
        "{}",
        p.stderr_text()
    );
    let raw = headers.recv_timeout(Duration::from_secs(10)).unwrap();
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
    assert!(cipher.starts_with("TLS_AES_") || cipher.starts_with("TLS_CHACHA20"), "{cipher}");
    assert_eq!(
        h.ssl_sub(pp::PP2_SUBTYPE_SSL_SIG_ALG).as_deref(),
        Some("ecdsa-with-SHA256")
    );
    assert_eq!(h.ssl_sub(pp::PP2_SUBTYPE_SSL_KEY_ALG).as_deref(), Some("EC256"));
    assert_eq!(h.tlv(pp::PP2_TYPE_UNIQUE_ID), Some(OK_ID.as_bytes()));
    assert_eq!(h.tlv(pp::PP2_TYPE_MUTUAL_SPIFFE), Some(OK_ID.as_bytes()));
    // A denied client never reaches the backend, so no header is written for it.
    let denied = rustls_config(&fx.pki.root, Some(&fx.denied));
    let _ = rustls_get(p.addr(), &denied);
    p.wait_handshakes("denied", "policy_denied", 1.0);
    assert!(headers.recv_timeout(Duration::from_millis(300)).is_err());
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
    let check = Command::new(haproxy)
        .args(["-c", "-f", cfg_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _h = ChildGuard(
        Command::new(haproxy)
            .args(["-db", "-f", cfg_path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(mutual_test::wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10)
    ));
    let p = start_serve(
        &fx,
        &format!("127.0.0.1:{port}"),
        &["--proxy-protocol", "v2"],
    );
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let mut s = tls_connect(p.addr(), &cfg).unwrap();
    let client_addr = s.sock.local_addr().unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}\n{}", p.stderr_text());
    assert!(
        text.contains(&format!("src={client_addr} dst={} uid={OK_ID}", p.addr())),
        "{text}"
    );
}

#[test]
fn max_connection_lifetime_closes_gracefully_and_audits_bytes() {
    let fx = fixture();
    let backend = http_backend();
    let p = start_serve(
        &fx,
        &backend.addr.to_string(),
        &["--max-connection-lifetime", "1s"],
    );
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
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let line = &p.wait_audit(1)[0];
    assert_eq!(line["result"], "allowed", "{line}");
    assert_eq!(line["reason"], "ok", "{line}");
    assert_eq!(line["bytes_in"], "GET / HTTP/1.0\r\n".len(), "{line}");
    assert!(line["duration_ms"].as_u64().unwrap() >= 900, "{line}");
    assert!(p.stderr_text().contains("max connection lifetime reached"));
}
