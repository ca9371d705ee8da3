//! `mutual serve` under hostile or broken conditions: silent clients are cut at the handshake
//! timeout, garbage instead of a ClientHello is rejected as `malformed` while other connections
//! carry on, a dead backend gives `backend_unavailable` without taking the proxy down,
//! `--max-connections` is enforced, SIGTERM drains, and a missing policy refuses to start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;
use proxy_common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads until the peer closes; true if it closed (EOF or reset) rather than timing out.
fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn reasons(p: &Proxy) -> Vec<String> {
    p.audit_lines()
        .iter()
        .map(|l| l["reason"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn silent_client_is_cut_and_garbage_is_malformed_while_others_work() {
    let fx = fixture();
    let be = http_backend();
    let proxy = start_serve(&fx, &be.addr.to_string(), &["--handshake-timeout", "1s"]);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let held = open_held(proxy.addr(), &cfg);

    let mut silent = TcpStream::connect(proxy.addr()).unwrap();
    let t0 = Instant::now();
    assert!(
        closed_by_peer(&mut silent, Duration::from_secs(20)),
        "silent client not cut"
    );
    assert!(t0.elapsed() >= Duration::from_millis(900));

    let mut junk = TcpStream::connect(proxy.addr()).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..2048)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let _ = junk.write_all(&bytes);
    assert!(
        closed_by_peer(&mut junk, Duration::from_secs(20)),
        "garbage not rejected"
    );

    // The connection opened before both keeps working.
    assert_eq!(finish_request(held), 200);

    proxy.wait_audit(3);
    let r = reasons(&proxy);
    assert!(r.contains(&"handshake_timeout".to_string()), "{r:?}");
    assert!(r.contains(&"malformed".to_string()), "{r:?}");
    assert!(r.contains(&"ok".to_string()), "{r:?}");
    proxy.wait_handshakes("failed", "handshake_timeout", 1.0);
    proxy.wait_handshakes("failed", "malformed", 1.0);
    proxy.wait_handshakes("allowed", "ok", 1.0);
}

#[test]
fn backend_down_is_backend_unavailable_and_the_proxy_stays_up() {
    let fx = fixture();
    let dead = format!("127.0.0.1:{}", free_port());
    let mut proxy = start_serve(&fx, &dead, &["--connect-timeout", "2s"]);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    for i in 1..=2 {
        assert!(!matches!(rustls_get(proxy.addr(), &cfg), Ok((200, _))));
        let lines = proxy.wait_audit(i);
        let line = &lines[i - 1];
        assert_eq!(line["result"], "failed", "{line}");
        assert_eq!(line["reason"], "backend_unavailable", "{line}");
        assert_eq!(line["identity"]["spiffe"], OK_ID, "{line}");
        proxy.wait_handshakes("failed", "backend_unavailable", i as f64);
        assert!(
            proxy.child.0.try_wait().unwrap().is_none(),
            "the proxy exited"
        );
    }
    // A Unix-socket backend that does not exist behaves the same.
    drop(proxy);
    let proxy = start_serve(&fx, "unix:/nonexistent/mutual-test.sock", &[]);
    assert!(!matches!(rustls_get(proxy.addr(), &cfg), Ok((200, _))));
    proxy.wait_handshakes("failed", "backend_unavailable", 1.0);
}

#[test]
fn unix_socket_backend() {
    let fx = fixture();
    let sock = fx.pki.path("backend.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nunix");
        }
    });
    let proxy = start_serve(&fx, &format!("unix:{}", sock.display()), &[]);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let (status, body) = rustls_get(proxy.addr(), &cfg).unwrap();
    assert_eq!((status, body.as_str()), (200, "unix"));
}

#[test]
fn max_connections_is_honoured() {
    let fx = fixture();
    let be = http_backend();
    let proxy = start_serve(&fx, &be.addr.to_string(), &["--max-connections", "1"]);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let held = open_held(proxy.addr(), &cfg);
    // Over the limit: closed at once, before any TLS.
    assert!(tls_connect(proxy.addr(), &cfg).is_err());
    let rejected = eventually(Duration::from_secs(10), || {
        proxy
            .metric("mutual_connections_rejected_total{listener=\"serve\"}")
            .filter(|v| *v >= 1.0)
    });
    assert!(rejected.is_some(), "{}", proxy.metrics());
    assert_eq!(
        proxy.metric("mutual_connections_active{listener=\"serve\"}"),
        Some(1.0)
    );
    assert_eq!(finish_request(held), 200);
    // Once the slot is free, new connections are served again.
    let ok = eventually(Duration::from_secs(10), || {
        matches!(rustls_get(proxy.addr(), &cfg), Ok((200, _))).then_some(())
    });
    assert!(ok.is_some());
}

#[test]
fn sigterm_stops_accepting_drains_and_exits_0() {
    let fx = fixture();
    let be = http_backend();
    let mut proxy = start_serve(&fx, &be.addr.to_string(), &["--drain-timeout", "20s"]);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let held = open_held(proxy.addr(), &cfg);
    signal(proxy.pid(), "TERM");
    // New connections are refused once the listener is closed...
    let refused = eventually(Duration::from_secs(10), || {
        TcpStream::connect(proxy.addr()).is_err().then_some(())
    });
    assert!(refused.is_some(), "still accepting after SIGTERM");
    // ...but the open one finishes its request.
    assert!(proxy.child.0.try_wait().unwrap().is_none());
    assert_eq!(finish_request(held), 200);
    let status = eventually(Duration::from_secs(15), || {
        proxy.child.0.try_wait().unwrap()
    });
    let status = status.expect("did not exit after draining");
    assert!(
        status.success(),
        "exit status {status}: {}",
        proxy.stderr_text()
    );
    let lines = proxy.audit_lines();
    assert_eq!(lines.last().unwrap()["reason"], "ok", "{lines:?}");
}

#[test]
fn refuses_to_start_without_a_rule() {
    let fx = fixture();
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:1",
        ])
        .args(["--cert", fx.server.cert.to_str().unwrap()])
        .args(["--key", fx.server.key.to_str().unwrap()])
        .args(["--ca", fx.pki.root.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-any"), "{err}");

    // A bad certificate file is a configuration error too (exit 2), naming the file.
    let bad = fx.pki.path("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:1",
            "--allow-any",
        ])
        .args(["--cert", bad.to_str().unwrap()])
        .args(["--key", fx.server.key.to_str().unwrap()])
        .args(["--ca", fx.pki.root.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.pem"));
}
