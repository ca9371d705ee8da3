//! Enrollment and renewal against the real online CA (`mutual ca serve` on an ephemeral port),
//! with the real binary on both sides: pinning refuses a wrong root before the token leaves,
//! files and modes, `openssl verify` of the result, renew once (same names, new serial, new key
//! on request), a renewal daemon riding out a CA outage, and the proxy end to end: `serve` and
//! `connect` enrolled and renewing 60-second certificates while requests flow; in
//! [`ca_rollover`], the same pair through an intermediate rotation and a root rollover (issue 19);
//! in [`ha_replicas`], the CA as replicas on PostgreSQL, one killed while proxies renew (issue 15).
//!
//! The three tests that wait on 60-second certificates for 1.5 to 3 minutes share this binary so
//! that they overlap (cargo runs binaries one after another, a binary's tests two at a time on
//! two cores). libtest starts tests in name order, so the longest, `ca_rollover`'s, starts first:
//! the other thread takes the failover test and then `proxy_auto_rotation_end_to_end`. A name
//! that sorts otherwise only makes the binary slower, never a test wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ca_rollover;
mod ha_replicas;
mod pki_common;
mod proxy_common;
use pki_common::{
    fingerprint_of, mutual, norm_serial, pubkey_of_cert, pubkey_of_key, renew_at, s, CaServe,
};
use proxy_common::*;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A CA directory and `mutual ca serve` running on it.
type Ca = CaServe;

fn new_ca() -> Ca {
    CaServe::with_new_ca("Enroll Test CA", &[], &["--rate-limit", "off"])
}

/// `enroll` with `token` into a fresh `WORK/name` that must succeed: (WORK, WORK/name).
fn enroll_ok(ca: &Ca, token: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join(name);
    let o = ca.enroll(token, &out);
    assert_eq!(o.code, 0, "{}\nCA log:\n{}", o.stderr, ca.log_text());
    (work, out)
}

/// Serial (lowercase hex, no leading zeros), SANs and the SPKI of a PEM certificate file.
fn leaf_of(cert: &Path) -> mutual_enroll::CertSummary {
    let chain = mutual_tls::load::load_certs(cert).unwrap();
    mutual_enroll::CertSummary::of(chain[0].as_ref()).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn enroll_pins_the_root_before_sending_the_token() {
    let ca = new_ca();
    let token = ca.token(&["dns:web.test", "ip:127.0.0.1"], "1h", "both");
    let work = tempfile::tempdir().unwrap();

    // A pin that is not this CA's root (the intermediate's fingerprint): refused, nothing
    // written, exit 1, and the token was never sent (it still works below).
    let wrong = fingerprint_of(&ca.d().join("intermediate.pem"));
    let bad_out = work.path().join("bad");
    let o = ca.enroll_pinned(&token, &wrong, &bad_out);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr
            .contains("does not serve a root with SHA-256 fingerprint")
            && o.stderr.contains("refusing to send the token"),
        "{}",
        o.stderr
    );
    assert!(!bad_out.join("key.pem").exists() && !bad_out.join("cert.pem").exists());
    assert!(!o.stderr.contains(&token), "the token leaked into stderr");

    // A malformed pin is a usage error (2).
    let o = ca.enroll_pinned(&token, "abcd", &bad_out);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("invalid root fingerprint"),
        "{}",
        o.stderr
    );

    // The right pin (openssl's upper-case, colon form): enrolled with the same token.
    let out = work.path().join("web");
    let o = ca.enroll(&token, &out);
    assert_eq!(
        o.code,
        0,
        "{}\n{}\nCA log:\n{}",
        o.stdout,
        o.stderr,
        ca.log_text()
    );
    assert!(!o.stdout.contains(&token) && !o.stderr.contains(&token));
    let (key, cert, root) = (
        out.join("key.pem"),
        out.join("cert.pem"),
        out.join("root.pem"),
    );
    assert_eq!(mode(&key), 0o600);
    assert_eq!(
        std::fs::read(&root).unwrap(),
        std::fs::read(ca.root()).unwrap()
    );
    assert_eq!(pubkey_of_cert(&cert), pubkey_of_key(&key));
    let leaf = leaf_of(&cert);
    assert_eq!(leaf.sans, ["dns:web.test", "ip:127.0.0.1"]);
    assert_eq!(mutual_tls::load::load_certs(&cert).unwrap().len(), 2);
    let verify = [
        "verify",
        "-CAfile",
        s(&root),
        "-untrusted",
        s(&cert),
        s(&cert),
    ];
    mutual_test::output_ok(Command::new("openssl").args(verify));

    // The inventory says who asked.
    let rec = ca
        .inventory()
        .into_iter()
        .find(|r| norm_serial(r["serial"].as_str().unwrap()) == norm_serial(&leaf.serial))
        .expect("the enrolled certificate is in the inventory");
    assert!(
        rec["requested_by"].as_str().unwrap().starts_with("token:"),
        "{rec}"
    );

    // The token is spent: a replay is refused with the CA's reason, exit 1.
    let o = ca.enroll(&token, &work.path().join("again"));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("token_used"), "{}", o.stderr);

    // Existing files are not overwritten without --force (nothing sent).
    let t2 = ca.token(&["dns:web.test"], "1h", "both");
    let o = ca.enroll(&t2, &out);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    assert_eq!(pubkey_of_cert(&cert), pubkey_of_key(&key));
}

/// `enroll --json` and `renew --json` print what a provisioning script reads (docs/json.md's
/// forms); a refusal is `{"error": {"reason": <the CA's label>}}` with exit 1; renew's --exec
/// outcome is in the object.
#[test]
fn enroll_and_renew_speak_json() {
    let ca = new_ca();
    let token = ca.token(&["dns:json.test"], "1h", "both");
    let work = tempfile::tempdir().unwrap();
    let (url, pin) = (ca.url(), ca.fingerprint());
    // The token from a file (as `token create > FILE` writes it), not on the command line.
    let token_file = work.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let enroll = |out: &Path| {
        let pinned = [
            "--token-file",
            s(&token_file),
            "--root-sha256",
            &pin,
            "--out",
            s(out),
        ];
        mutual(&[&["enroll", "--ca-url", &url][..], &pinned, &["--json"]].concat())
    };
    let json = |o: &pki_common::Out| -> serde_json::Value {
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.text()))
    };
    let out = work.path().join("j");
    let o = enroll(&out);
    assert_eq!(o.code, 0, "{}", o.text());
    assert!(!o.stdout.contains(&token) && !o.stderr.contains(&token));
    let v = json(&o);
    let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
    let leaf = leaf_of(&cert);
    assert_eq!(v["serial"], leaf.serial.as_str());
    assert_eq!(v["sans"], serde_json::json!(["dns:json.test"]));
    assert_eq!(v["not_after_unix"], leaf.not_after);
    assert_eq!(v["not_before_unix"], leaf.not_before);
    let root_sha256 = pin.replace(':', "").to_ascii_lowercase();
    assert_eq!(v["root_sha256"], root_sha256.as_str());
    assert_eq!(v["key"], s(&key));
    assert_eq!(v["cert"], s(&cert));
    assert_eq!(v["root"], s(&out.join("root.pem")));
    assert_eq!(v["ca_url"], url.as_str());
    assert_eq!(
        (v["protocol"].as_str(), v["key_generated_by"].as_str()),
        (Some("native"), Some("here"))
    );

    // --token-file that is empty, or beside --token: usage errors.
    let empty = work.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let o = mutual(&[
        "enroll",
        "--ca-url",
        &url,
        "--token-file",
        s(&empty),
        "--root-sha256",
        &pin,
        "--out",
        s(&work.path().join("e")),
    ]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(o.stderr.contains("is empty"), "{}", o.text());
    let o = mutual(&[
        "enroll",
        "--ca-url",
        &url,
        "--token",
        "x",
        "--token-file",
        s(&token_file),
        "--root-sha256",
        &pin,
        "--out",
        s(&work.path().join("e")),
    ]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(o.stderr.contains("cannot be used with"), "{}", o.text());

    // The token is spent: the CA's reason, as JSON on stdout, exit 1.
    let o = enroll(&work.path().join("again"));
    assert_eq!(o.code, 1, "{}", o.text());
    let v = json(&o);
    assert_eq!(v["error"]["reason"], "token_used", "{v}");
    assert!(
        v["error"]["hint"].as_str().unwrap().contains("new token"),
        "{v}"
    );

    // Renew with a new key and a hook: the hook's environment names the new serial.
    let marker = work.path().join("hook.out");
    let hook = format!("echo \"$MUTUAL_SERIAL\" > {}", s(&marker));
    let o = renew_at(&url, &cert, &key, &["--json", "--new-key", "--exec", &hook]);
    assert_eq!(o.code, 0, "{}", o.text());
    let v = json(&o);
    let new = leaf_of(&cert);
    assert_ne!(new.serial, leaf.serial);
    assert_eq!(v["serial"], new.serial.as_str());
    assert_eq!(v["previous_serial"], leaf.serial.as_str());
    assert_eq!(v["rekeyed"], true);
    assert_eq!(v["protocol"], "native");
    assert_eq!(
        v["exec"],
        serde_json::json!({"ok": true, "result": "exit status 0"})
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), new.serial);
    // A failing hook: the object says so, exit 1, the new certificate stays.
    let o = renew_at(&url, &cert, &key, &["--json", "--exec", "exit 3"]);
    assert_eq!(o.code, 1, "{}", o.text());
    assert_eq!(json(&o)["exec"]["result"], "exit status 3");
    assert_eq!(json(&o)["serial"], leaf_of(&cert).serial.as_str());
    // A daemon's renewals are log lines (--log-format json), not one object.
    let o = renew_at(&url, &cert, &key, &["--json", "--daemon"]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert_eq!(json(&o)["error"]["reason"], "usage");
    assert!(
        o.stdout.contains("cannot be used with '--daemon'"),
        "{}",
        o.stdout
    );
}

#[test]
fn renew_once_keeps_the_names_and_can_change_the_key() {
    let ca = new_ca();
    let token = ca.token(
        &["dns:api.test", "uri:spiffe://test.mutual/api"],
        "1h",
        "both",
    );
    let (_work, out) = enroll_ok(&ca, &token, "api");
    let (key, cert) = (out.join("key.pem"), out.join("cert.pem"));
    let first = leaf_of(&cert);
    let key_before = std::fs::read(&key).unwrap();

    let url = ca.url();
    let renew = |extra: &[&str]| renew_at(&url, &cert, &key, extra).ok();
    let o = renew(&[]);
    let second = leaf_of(&cert);
    assert!(o.stdout.contains(&second.serial), "{}", o.stdout);
    assert_ne!(second.serial, first.serial);
    assert_eq!(second.sans, first.sans);
    assert_eq!(
        std::fs::read(&key).unwrap(),
        key_before,
        "the key must stay"
    );
    assert_eq!(pubkey_of_cert(&cert), pubkey_of_key(&key));

    renew(&["--new-key", "--ca", s(&out.join("root.pem"))]);
    let third = leaf_of(&cert);
    assert_ne!(third.serial, second.serial);
    assert_eq!(third.sans, first.sans);
    assert_ne!(std::fs::read(&key).unwrap(), key_before, "--new-key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(pubkey_of_cert(&cert), pubkey_of_key(&key));

    let inv = ca.inventory();
    for (renewed, old) in [(&second, &first), (&third, &second)] {
        let rec = inv
            .iter()
            .find(|r| norm_serial(r["serial"].as_str().unwrap()) == norm_serial(&renewed.serial))
            .unwrap_or_else(|| panic!("{} not in {inv:?}", renewed.serial));
        let by = rec["requested_by"].as_str().unwrap();
        assert!(
            by.starts_with("renew:")
                && norm_serial(&by["renew:".len()..]) == norm_serial(&old.serial),
            "{rec}"
        );
    }

    // Renewing with a certificate from another CA: the CA refuses (exit 1, its reason).
    let other = TestPki::new("Other");
    let stranger = other.leaf(
        "stranger",
        LeafOpts::new("stranger").san("dns:stranger.test"),
    );
    let o = renew_at(
        &ca.url(),
        &stranger.cert,
        &stranger.key,
        &["--ca", s(&ca.root())],
    );
    // The CA verifies client certificates at the TLS layer: its alert is what we report.
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("TLS handshake with the CA")
            && o.stderr.contains(
                "failed (unknown_ca): the peer refused the handshake with TLS alert unknown_ca"
            ),
        "{}",
        o.stderr
    );

    // A --ca that is not this CA's root: our side refuses the CA's certificate (exit 1).
    let other_root = other.root.clone();
    let o = renew_at(&ca.url(), &cert, &key, &["--ca", s(&other_root)]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("failed (unknown_ca)"), "{}", o.stderr);
    assert_eq!(
        leaf_of(&cert).serial,
        third.serial,
        "nothing written on failure"
    );

    // A replica list whose first CA is down: the one-shot renewal says so on stderr (it was
    // dropped before: no logger outside --daemon) and renews from the next.
    let listed = format!("https://127.0.0.1:1,{url}");
    let o = renew_at(&listed, &cert, &key, &[]).ok();
    assert!(
        o.stderr.contains("the CA replica failed, trying the next"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("https://127.0.0.1:1"), "{}", o.stderr);
    let fourth = leaf_of(&cert);
    assert_ne!(fourth.serial, third.serial);
    // --key-type changes the kind; a later --new-key keeps the current kind (it used to go
    // back to P-256).
    let bits = || pki_common::x509(&cert, &["-text"]);
    renew(&["--new-key", "--key-type", "ecdsa-p384"]);
    assert!(bits().contains("(384 bit)"), "{}", bits());
    renew(&["--new-key"]);
    assert!(bits().contains("(384 bit)"), "{}", bits());
    assert_eq!(pubkey_of_cert(&cert), pubkey_of_key(&key));
}

#[test]
fn renew_daemon_rides_out_a_ca_outage() {
    let mut ca = new_ca();
    // 60 s certificates: the daemon renews after 40 s (± 3 s) and retries with backoff until
    // expiry, so the restarted CA has ~15 s to come up even on a loaded machine (with 30 s
    // certificates a slow restart could miss the last attempt).
    // failed attempts before expiry even on a loaded machine.
    let token = ca.token(&["dns:daemon.test"], "60s", "both");
    let (work, out) = enroll_ok(&ca, &token, "d");
    let (key, cert) = (out.join("key.pem"), out.join("cert.pem"));
    let first = leaf_of(&cert);
    let (cert_bytes, key_bytes) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());

    ca.stop();
    let log = work.path().join("daemon.log");
    let daemon = mutual_test::spawn_logged(
        Command::new(BIN)
            .args(["renew", "--ca-url", &ca.url(), "--daemon"])
            .args(["--cert", s(&cert), "--key", s(&key)]),
        &log,
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    // Two failed attempts while the CA is down; the files are untouched meanwhile.
    let failed = eventually(Duration::from_secs(120), || {
        (log_text().matches("renewal failed").count() >= 2).then_some(())
    });
    assert!(
        failed.is_some(),
        "no failed attempt logged:\n{}",
        log_text()
    );
    assert!(log_text().contains("cannot reach the CA"), "{}", log_text());
    assert_eq!(std::fs::read(&cert).unwrap(), cert_bytes);
    assert_eq!(std::fs::read(&key).unwrap(), key_bytes);

    ca.start();
    let renewed = eventually(Duration::from_secs(60), || {
        let l = leaf_of(&cert);
        (l.serial != first.serial).then_some(l)
    });
    let renewed = renewed.unwrap_or_else(|| panic!("not renewed:\n{}", log_text()));
    assert_eq!(renewed.sans, first.sans);
    assert_eq!(std::fs::read(&key).unwrap(), key_bytes);
    // The new file is written before the line is logged: wait for the line.
    let logged = eventually(Duration::from_secs(60), || {
        log_text().contains("certificate renewed").then_some(())
    });
    assert!(logged.is_some(), "{}", log_text());
    assert!(!log_text().contains("PRIVATE KEY"));
    drop(daemon);
}

/// The end-to-end check: `serve` and `connect` enrolled with 60-second certificates and
/// renewing themselves through `mutual ca serve` while requests flow for 2.5 lifetimes.
#[test]
fn proxy_auto_rotation_end_to_end() {
    let ca = new_ca();
    let work = tempfile::tempdir().unwrap();

    let EnrolledPair {
        serve,
        connect,
        sdir,
        tokens: [st, ct],
        ..
    } = enrolled_pair(work.path(), &ca.url(), &ca.fingerprint(), |sans, usage| {
        ca.token(sans, "60s", usage)
    });
    let expiry = |p: &Proxy, role: &str| {
        p.metric(&format!(
            "mutual_cert_expiry_timestamp_seconds{{listener=\"{role_listener}\",role=\"{role}\"}}",
            role_listener = if role == "server" { "serve" } else { "connect" }
        ))
        .unwrap()
    };
    let (s_exp0, c_exp0) = (expiry(&serve, "server"), expiry(&connect, "client"));

    let probe_cfg = rustls_config(&sdir.join("root.pem"), None);
    let mut served = BTreeSet::new();
    let mut last_probe = Instant::now() - Duration::from_secs(10);
    let mut flow = Flow::begin();
    while flow.start.elapsed() < Duration::from_secs(155) {
        flow.send(&connect, "");
        if last_probe.elapsed() >= Duration::from_secs(3) {
            last_probe = Instant::now();
            // The certificate serve presents (TLS 1.3: seen before our missing client cert is
            // noticed; serve audits that attempt as failed, which the checks below ignore).
            if let Ok(s) = tls_connect(serve.addr(), &probe_cfg) {
                let der = s.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
                served.insert(mutual_enroll::CertSummary::of(&der).unwrap().serial);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    flow.assert_none_failed(&serve, &connect);
    let good = flow.good;
    // A floor that says "requests flowed the whole time" (one every 50 ms when idle; a loaded
    // machine is slower), not a throughput figure.
    assert!(good > 150, "only {good} requests");
    eprintln!("{good} requests through connect -> serve -> backend, none failed");

    let client_serials: BTreeSet<String> = serve
        .audit_lines()
        .iter()
        .filter(|l| l["result"] == "allowed")
        .filter_map(|l| l["identity"]["serial"].as_str().map(norm_serial))
        .collect();
    let served: BTreeSet<String> = served.iter().map(|s| norm_serial(s)).collect();
    assert!(
        served.len() >= 3,
        "serve presented {served:?}\n{}",
        serve.stderr_text()
    );
    assert!(
        client_serials.len() >= 3,
        "connect presented {client_serials:?}\n{}",
        connect.stderr_text()
    );

    eprintln!(
        "serve presented {} serials, connect {}",
        served.len(),
        client_serials.len()
    );

    // Every serial after the first was a renewal of the one before it, recorded as such.
    let inv = ca.inventory();
    let by_serial = |s: &str| {
        inv.iter()
            .find(|r| norm_serial(r["serial"].as_str().unwrap()) == *s)
            .unwrap_or_else(|| panic!("{s} not in the inventory"))
    };
    for set in [&served, &client_serials] {
        let mut renewals = 0;
        for s in set {
            let by = by_serial(s)["requested_by"].as_str().unwrap().to_string();
            assert!(by.starts_with("token:") || by.starts_with("renew:"), "{by}");
            if let Some(old) = by.strip_prefix("renew:") {
                renewals += 1;
                let old = norm_serial(old);
                let prev = by_serial(&old);
                assert!(
                    prev["requested_by"].as_str().unwrap().starts_with("token:")
                        || prev["requested_by"].as_str().unwrap().starts_with("renew:")
                );
            }
        }
        assert!(renewals >= 2, "{set:?}");
    }

    // The expiry gauges moved with the renewals.
    assert!(
        expiry(&serve, "server") > s_exp0 + 60.0,
        "{}",
        serve.metrics()
    );
    assert!(
        expiry(&connect, "client") > c_exp0 + 60.0,
        "{}",
        connect.metrics()
    );
    for p in [&serve, &connect] {
        let log = p.stderr_text();
        assert!(log.contains("certificate renewed"), "{log}");
        assert!(!log.contains("PRIVATE KEY") && !log.contains(&st) && !log.contains(&ct));
    }
}

/// `serve --ca-url` without a usable certificate and without a token cannot start: exit 2 with
/// what to do, before listening.
#[test]
fn proxy_without_certificate_or_token_says_what_to_do() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let flags = pair_in(d, &["--ca-url", "https://127.0.0.1:9"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut a = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:9",
    ];
    a.push("--allow-any");
    a.extend(&flags);
    let o = mutual(&a);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("pass --token and --root-sha256 to enroll with --ca-url"),
        "{}",
        o.stderr
    );
    // --token without the pin, or either without --ca-url, and a pin that is no fingerprint:
    // usage errors before anything is sent (the last even though no enrollment is needed yet:
    // the typo shows at start, not on the day the node must enroll again).
    let connect = |extra: &[&str], with_url: bool| {
        let mut a = vec![
            "connect",
            "--listen",
            "127.0.0.1:0",
            "--remote",
            "127.0.0.1:9",
        ];
        let f = if with_url { &flags[..] } else { &flags[..6] };
        a.extend(f);
        a.extend(extra);
        mutual(&a)
    };
    assert_eq!(&flags[6..], &["--ca-url", "https://127.0.0.1:9"]);
    for (extra, with_url, want) in [
        (
            &["--token", "x.y.z"][..],
            true,
            "--token needs --root-sha256",
        ),
        (
            &["--token-file", "/nonexistent.token"][..],
            true,
            "--token-file needs --root-sha256",
        ),
        (
            &["--token", "x.y.z"][..],
            false,
            "--token enrolls with the online CA: it needs --ca-url",
        ),
        (
            &["--root-sha256", "ab"][..],
            false,
            "--root-sha256 enrolls with the online CA",
        ),
    ] {
        let o = connect(extra, with_url);
        assert_eq!(o.code, 2, "{}", o.stderr);
        assert!(o.stderr.contains(want), "{want:?}: {}", o.stderr);
    }
    let pki = mutual_test::TestPki::new("valid");
    let leaf = pki.leaf("srv", mutual_test::LeafOpts::new("srv").server());
    let valid = tls_args(&leaf.cert, &leaf.key, &pki.root, &[]);
    let mut a = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:9",
        "--allow-any",
        "--ca-url",
        "https://127.0.0.1:9",
        "--root-sha256",
        "not-a-fingerprint",
    ];
    a.extend(valid.iter().map(String::as_str));
    let o = mutual(&a);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("fingerprint"), "{}", o.stderr);

    // --token-file is read only when an enrollment needs it: with a valid certificate the
    // proxy starts (and restarts) after the spent token's file was removed; without one, the
    // missing file is the error.
    let gone = d.join("spent.token");
    let pin = "ab".repeat(32);
    let mut args = valid.clone();
    args.extend(
        [
            "--allow-any",
            "--ca-url",
            "https://127.0.0.1:9",
            "--token-file",
            s(&gone),
            "--root-sha256",
            &pin,
        ]
        .map(String::from),
    );
    let p = spawn_proxy("serve", "--backend", "127.0.0.1:9", &args);
    assert!(
        !p.stderr_text().contains("token file"),
        "{}",
        p.stderr_text()
    );
    drop(p);
    let mut a = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:9",
    ];
    a.extend(&flags);
    a.extend([
        "--allow-any",
        "--token-file",
        s(&gone),
        "--root-sha256",
        &pin,
    ]);
    let o = mutual(&a);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("cannot read the token file"),
        "{}",
        o.stderr
    );
}
