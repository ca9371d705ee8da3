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
    // 3 s, not less: the held connection's own handshake must finish within it on a loaded machine.
    let proxy = start_serve(&fx, &be.addr.to_string(), &["--handshake-timeout", "3s"]);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let held = open_held(proxy.addr(), &cfg);

    let mut silent = TcpStream::connect(proxy.addr()).unwrap();
    let t0 = Instant::now();
    assert!(
        closed_by_peer(&mut silent, Duration::from_secs(20)),
        "silent client not cut"
    );
    assert!(t0.elapsed() >= Duration::from_millis(2900));

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

    // Three connections, three lines, in whatever order they were written.
    proxy.wait_audit_line("failed", "handshake_timeout");
    proxy.wait_audit_line("failed", "malformed");
    proxy.wait_audit_line("allowed", "ok");
    let mut r = reasons(&proxy);
    r.sort();
    assert_eq!(r, ["handshake_timeout", "malformed", "ok"], "{r:?}");
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
        let lines = proxy.wait_audit_count_where("backend_unavailable", i, |l| {
            is_line(l, "failed", "backend_unavailable")
        });
        assert_eq!(lines.len(), i, "{lines:?}");
        assert!(
            lines.iter().all(|l| l["identity"]["spiffe"] == OK_ID),
            "{lines:?}"
        );
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
    let (fx, _, proxy) = serve_fixture(&["--max-connections", "1"]);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let held = open_held(proxy.addr(), &cfg);
    // Over the limit: closed at once, before any TLS.
    assert!(tls_connect(proxy.addr(), &cfg).is_err());
    let rejected = eventually(EVENT_TIMEOUT, || {
        proxy
            .metric("mutual_connections_rejected_total{listener=\"serve\"}")
            .filter(|v| *v >= 1.0)
    });
    assert!(rejected.is_some(), "{}", proxy.metrics());
    // The rejected connection may still be counted for a moment: wait for the gauge to settle
    // on the one held connection.
    proxy.wait_metric("mutual_connections_active{listener=\"serve\"}", |v| {
        v == 1.0
    });
    assert_eq!(finish_request(held), 200);
    // Once the slot is free, new connections are served again.
    let ok = eventually(EVENT_TIMEOUT, || {
        matches!(rustls_get(proxy.addr(), &cfg), Ok((200, _))).then_some(())
    });
    assert!(ok.is_some());
}

#[test]
fn sigterm_stops_accepting_drains_and_exits_0() {
    let (fx, _, mut proxy) = serve_fixture(&["--drain-timeout", "20s"]);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let held = open_held(proxy.addr(), &cfg);
    signal(proxy.pid(), "TERM");
    // New connections are refused once the listener is closed...
    let refused = eventually(EVENT_TIMEOUT, || {
        TcpStream::connect(proxy.addr()).is_err().then_some(())
    });
    assert!(refused.is_some(), "still accepting after SIGTERM");
    // ...but the open one finishes its request.
    assert!(proxy.child.0.try_wait().unwrap().is_none());
    assert_eq!(finish_request(held), 200);
    let status = eventually(EVENT_TIMEOUT, || proxy.child.0.try_wait().unwrap());
    let status = status.expect("did not exit after draining");
    assert!(
        status.success(),
        "exit status {status}: {}",
        proxy.stderr_text()
    );
    // The held connection was served; the probes above that reached the listener before it closed
    // are refused before TLS (not `allowed`), whatever order their lines were written in.
    let lines = proxy.audit_lines();
    let allowed: Vec<_> = lines.iter().filter(|l| l["result"] == "allowed").collect();
    assert_eq!(allowed.len(), 1, "{lines:?}");
    assert_eq!(allowed[0]["reason"], "ok", "{lines:?}");
    assert!(allowed[0]["bytes_out"].as_u64().unwrap() > 0, "{lines:?}");
}

#[test]
fn refuses_to_start_without_a_rule() {
    let fx = fixture();
    let err = fixture_refusal(&fx, &[]);
    assert!(err.contains("--allow-any"), "{err}");

    // --allow-any beside a rule or a policy file: the rule would restrict nothing, refused.
    let policy = ok_policy(&fx);
    for (rule, flag) in [
        (&["--allow-spiffe", OK_ID][..], "--allow-spiffe"),
        (&["--policy", policy.to_str().unwrap()][..], "--policy"),
    ] {
        let err = fixture_refusal(&fx, &[&["--allow-any"][..], rule].concat());
        let want = format!("--allow-any allows every verified client, so {flag} / ");
        assert!(err.contains(&want), "{err}");
    }

    // A bad certificate file is a configuration error too (exit 2), naming the file.
    let bad = fx.pki.path("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let out = serve_refusal(&tls_args(
        &bad,
        &fx.server.key,
        &fx.pki.root,
        &["--allow-any"],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.pem"));
}
