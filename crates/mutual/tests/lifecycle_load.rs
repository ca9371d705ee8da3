//! Issue 19's check under load: `serve` and `connect` enrolled with 60-second certificates and
//! renewing themselves through `mutual ca serve` while the intermediate is rotated by another
//! process: requests flow the whole time with none failing, certificates from both issuers are
//! accepted during the overlap, and both proxies end on the new intermediate with the CA's
//! trust bundle version in their metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;
mod proxy_common;
use pki_common::{mutual, norm_serial, openssl, s, CaServe};
use proxy_common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The issuer CN of the first certificate of a PEM file.
fn issuer_cn(pem: &Path) -> String {
    let o = openssl(&[
        "x509",
        "-in",
        s(pem),
        "-noout",
        "-issuer",
        "-nameopt",
        "multiline",
    ]);
    o.stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("commonName")
                .map(|v| v.trim_start_matches([' ', '=']).to_string())
        })
        .unwrap()
}

#[test]
fn intermediate_rotation_under_load_fails_no_request() {
    let ca = CaServe::with_new_ca("Load CA", &[], &["--rate-limit", "off"]);
    let fp = ca.fingerprint();
    let work = tempfile::tempdir().unwrap();
    let be = http_backend();
    let url = ca.url();
    let proxy_args = |dir: &Path, token: &str, extra: &[&str]| -> Vec<String> {
        let f = |name: &str| dir.join(name);
        let mut a = tls_args(
            &f("cert.pem"),
            &f("key.pem"),
            &f("root.pem"),
            &["--ca-url", &url, "--token", token, "--root-sha256", &fp],
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let sdir = work.path().join("serve");
    let cdir = work.path().join("connect");
    let st = ca.token(&["dns:localhost", "ip:127.0.0.1"], "60s", "both");
    let serve = spawn_proxy(
        "serve",
        "--backend",
        &be.addr.to_string(),
        &proxy_args(&sdir, &st, &["--allow-spiffe", OK_ID]),
    );
    let ct = ca.token(&[&format!("uri:{OK_ID}")], "60s", "client");
    let connect = spawn_proxy(
        "connect",
        "--remote",
        &serve.addr().to_string(),
        &proxy_args(&cdir, &ct, &[]),
    );
    assert_eq!(issuer_cn(&sdir.join("cert.pem")), "Load CA Intermediate");

    let (mut good, mut bad) = (0usize, Vec::new());
    let mut rotated = false;
    let start = Instant::now();
    // Rotate at 15 s; both proxies renew (at two thirds of 60 s, with jitter) at least twice
    // after it within the 110 s.
    while start.elapsed() < Duration::from_secs(110) {
        if !rotated && start.elapsed() >= Duration::from_secs(15) {
            mutual(&["ca", "rotate-intermediate", "--dir", s(ca.d())]).ok();
            rotated = true;
        }
        match try_http_get(connect.addr(), "/") {
            Some((200, body)) if body == BACKEND_BODY => good += 1,
            other => bad.push(format!("{:?}: {other:?}", start.elapsed())),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        bad.is_empty(),
        "{} of {} requests failed: {bad:?}\nserve:\n{}\nconnect:\n{}",
        bad.len(),
        good + bad.len(),
        serve.stderr_text(),
        connect.stderr_text()
    );
    assert!(good > 100, "only {good} requests");
    eprintln!(
        "{good} requests through connect -> serve -> backend during the rotation, none failed"
    );

    // Both proxies now hold certificates from the new intermediate.
    assert_eq!(issuer_cn(&sdir.join("cert.pem")), "Load CA Intermediate 2");
    assert_eq!(issuer_cn(&cdir.join("cert.pem")), "Load CA Intermediate 2");

    // serve accepted connect's certificates from both issuers (the overlap).
    let inv = ca.inventory();
    let issuer_of: BTreeMap<String, String> = inv
        .iter()
        .map(|r| {
            (
                norm_serial(r["serial"].as_str().unwrap()),
                r["issuer"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut accepted_from: Vec<String> = serve
        .audit_lines()
        .iter()
        .filter(|l| l["result"] == "allowed")
        .filter_map(|l| l["identity"]["serial"].as_str().map(norm_serial))
        .filter_map(|s| issuer_of.get(&s).cloned())
        .collect();
    accepted_from.sort();
    accepted_from.dedup();
    assert_eq!(
        accepted_from,
        vec!["int-1", "int-2"],
        "{}",
        serve.stderr_text()
    );

    // Each proxy checked the CA's trust bundle and says which version it holds.
    for (p, listener) in [(&serve, "serve"), (&connect, "connect")] {
        let v = p.metric(&format!(
            "mutual_trust_bundle_version{{listener=\"{listener}\"}}"
        ));
        assert_eq!(v, Some(1.0), "{}", p.metrics());
        let log = p.stderr_text();
        assert!(!log.contains("cannot refresh the trust bundle"), "{log}");
    }
}
