//! Hot rotation: while requests flow continuously through `mutual serve`, its certificate is
//! replaced in place, then by a rename, then by a garbage file. No request fails, the new
//! certificate is presented after each good change, the garbage is rejected (counted as a reload
//! failure) and the previous certificate keeps serving. Policy files reload too, and SIGHUP
//! triggers a reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;
use proxy_common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The DER of the leaf the server presents now.
fn served_leaf(p: &Proxy, cfg: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let s = tls_connect(p.addr(), cfg).unwrap();
    s.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// Replaces a file by rename, so a reader sees the old or the new content, never a part.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn reloads(p: &Proxy, result: &str) -> f64 {
    p.metric(&format!(
        "mutual_config_reloads_total{{result=\"{result}\"}}"
    ))
    .unwrap_or(0.0)
}

#[test]
fn certificate_rotation_in_place_by_rename_and_garbage() {
    let fx = fixture();
    let be = http_backend();
    let live = tempfile::tempdir().unwrap();
    let cert = live.path().join("server.pem");
    let key = live.path().join("server.key");
    std::fs::copy(&fx.server.cert, &cert).unwrap();
    std::fs::copy(&fx.server.key, &key).unwrap();
    let args = tls_args(&cert, &key, &fx.pki.root, &["--allow-spiffe", OK_ID]);
    let proxy = spawn_proxy("serve", "--backend", &be.addr.to_string(), &args);
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    assert_eq!(served_leaf(&proxy, &cfg), fx.server.der);

    // Continuous requests for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, ok, errors, cfg, addr) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&errors),
            Arc::clone(&cfg),
            proxy.addr(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match rustls_get(addr, &cfg) {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => errors.lock().unwrap().push(format!("{other:?}")),
                }
            }
        })
    };
    let wait_served = |want: &[u8], what: &str| {
        let seen = eventually(EVENT_TIMEOUT, || {
            (served_leaf(&proxy, &cfg) == want).then_some(())
        });
        assert!(
            seen.is_some(),
            "{what}: new certificate not served\n{}",
            proxy.stderr_text()
        );
    };
    let server = |stem: &str| fx.pki.leaf(stem, LeafOpts::localhost_server());

    // 1. Written in place (truncate + write), key first then certificate.
    let s2 = server("server2");
    std::fs::write(&key, std::fs::read(&s2.key).unwrap()).unwrap();
    std::fs::write(&cert, std::fs::read(&s2.cert).unwrap()).unwrap();
    wait_served(&s2.der, "in place");

    // 2. Replaced by rename, as most deployment tools do.
    let s3 = server("server3");
    let (tk, tc) = (live.path().join(".key.tmp"), live.path().join(".cert.tmp"));
    std::fs::copy(&s3.key, &tk).unwrap();
    std::fs::copy(&s3.cert, &tc).unwrap();
    std::fs::rename(&tk, &key).unwrap();
    std::fs::rename(&tc, &cert).unwrap();
    wait_served(&s3.der, "rename");
    let successes = reloads(&proxy, "success");
    assert!(successes >= 2.0, "{}", proxy.metrics());

    // 3. Garbage: rejected, counted, and the previous certificate keeps serving.
    let failures = reloads(&proxy, "failure");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    let counted = eventually(EVENT_TIMEOUT, || {
        (reloads(&proxy, "failure") > failures).then_some(())
    });
    assert!(
        counted.is_some(),
        "garbage not rejected\n{}",
        proxy.metrics()
    );
    assert_eq!(served_leaf(&proxy, &cfg), s3.der);
    proxy.wait_stderr("keeping the previous configuration");

    let before = ok.load(Ordering::SeqCst);
    let more = eventually(EVENT_TIMEOUT, || {
        (ok.load(Ordering::SeqCst) > before + 5).then_some(())
    });
    assert!(more.is_some(), "requests stopped flowing");
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} failed requests: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok.load(Ordering::SeqCst) > 10);
}

#[test]
fn policy_file_and_sighup_reload() {
    let fx = fixture();
    let be = http_backend();
    let policy = ok_policy(&fx);
    let extra = ["--policy", policy.to_str().unwrap()];
    let args = tls_args(&fx.server.cert, &fx.server.key, &fx.pki.root, &extra);
    let mut proxy = spawn_proxy("serve", "--backend", &be.addr.to_string(), &args);
    let other = rustls_config(&fx.pki.root, Some(&fx.denied));
    assert!(!matches!(rustls_get(proxy.addr(), &other), Ok((200, _))));
    proxy.wait_handshakes("denied", "policy_denied", 1.0);

    // A bad policy edit is rejected and the old policy stays. (Written by rename, as an editor
    // does: a truncate-then-write could be read half-way, as an empty policy, before the bad one.)
    replace_file(&policy, "[[allow]]\nspiffe = 42\n");
    let failed = eventually(EVENT_TIMEOUT, || {
        (reloads(&proxy, "failure") >= 1.0).then_some(())
    });
    assert!(failed.is_some(), "{}", proxy.stderr_text());
    let ok_cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    assert!(matches!(rustls_get(proxy.addr(), &ok_cfg), Ok((200, _))));

    // A good edit that allows the other identity takes effect for new connections.
    replace_file(
        &policy,
        &format!("[[allow]]\nspiffe = \"{OK_ID}\"\n[[allow]]\nspiffe = \"{OTHER_ID}\"\n"),
    );
    let allowed = eventually(EVENT_TIMEOUT, || {
        matches!(rustls_get(proxy.addr(), &other), Ok((200, _))).then_some(())
    });
    assert!(allowed.is_some(), "{}", proxy.stderr_text());

    // SIGHUP reloads too.
    let before = reloads(&proxy, "success");
    signal(proxy.pid(), "HUP");
    let hup = eventually(EVENT_TIMEOUT, || {
        (reloads(&proxy, "success") > before).then_some(())
    });
    assert!(hup.is_some(), "{}", proxy.stderr_text());
    assert!(proxy.child.0.try_wait().unwrap().is_none());
}
