//! Regression tests for issue 13's CA-side defects (items 1, 6, 7, 9, 13, 15), each run the way
//! a user meets it: the real `mutual` binary, `mutual ca serve` on an ephemeral port, curl and
//! openssl as independent clients. Each one failed before its fix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;
mod proxy_common;
use pki_common::{mutual, mutual_cmd, openssl_csr, openssl_ok, renew_at, s, CaServe, Out, PW};
use proxy_common::*;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ok(args: &[&str]) -> Out {
    mutual(args).ok()
}

/// Exit 2 with a message containing `needle`, and no panic.
fn usage_error(args: &[&str], needle: &str) -> Out {
    let o = mutual(args);
    assert_eq!(o.code, 2, "mutual {args:?}\n{}", o.text());
    assert!(o.stderr.contains(needle), "mutual {args:?}\n{}", o.text());
    assert!(!o.stderr.contains("panicked"), "{}", o.text());
    o
}

fn new_ca(extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("ca");
    let mut a = vec!["ca", "init", "--dir", s(&d), "--name", "Defects CA"];
    a.extend(extra);
    ok(&a);
    (t, d)
}

fn inventory(dir: &Path) -> Vec<serde_json::Value> {
    let o = ok(&["cert", "list", "--dir", s(dir), "--json"]);
    serde_json::from_str(&o.stdout).unwrap()
}

fn crl_number(pem: &str) -> u64 {
    let mut c = Command::new("openssl");
    c.args(["crl", "-noout", "-crlnumber"]);
    let o = mutual_test::output_with_stdin(&mut c, pem.as_bytes());
    let t = String::from_utf8_lossy(&o.stdout);
    let hex = t.trim().split_once('=').unwrap().1;
    u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Item 6: huge durations panicked (ca.rs:617, ca.rs:906) or were accepted by `ca init`.

#[test]
fn item6_huge_durations_exit_2_at_parse_time() {
    let (_t, d) = new_ca(&[]);
    let out = tempfile::tempdir().unwrap();
    usage_error(
        &[
            "cert",
            "issue",
            "x",
            "--dir",
            s(&d),
            "--out",
            s(out.path()),
            "--ttl",
            "3000000d",
        ],
        "too large",
    );
    assert!(inventory(&d).is_empty());
    assert!(!out.path().join("x.key").exists());
    usage_error(
        &["ca", "crl", "--dir", s(&d), "--next-update", "10000000d"],
        "too large",
    );
    // The refused CRL used no CRL number: the first one published is number 1.
    let pem = ok(&["ca", "crl", "--dir", s(&d)]).stdout;
    assert_eq!(crl_number(&pem), 1);
    let t = tempfile::tempdir().unwrap();
    let d2 = t.path().join("ca2");
    usage_error(
        &[
            "ca",
            "init",
            "--dir",
            s(&d2),
            "--default-ttl",
            "99999999999999d",
        ],
        "too large",
    );
    assert!(!d2.join("mutual-ca.toml").exists());
    // Every PKI duration flag goes through the same bounded parser.
    usage_error(
        &[
            "token",
            "create",
            "--dir",
            s(&d),
            "--san",
            "dns:a.test",
            "--ttl-cert",
            "999999999d",
        ],
        "too large",
    );
}

// ---------------------------------------------------------------------------------------------
// Item 15: CRL nextUpdate and the default TTL beyond the intermediate; a 0777 CA directory.

#[test]
fn item15_lifetimes_bounded_by_the_intermediate_and_the_dir_tightened() {
    let (_t, d) = new_ca(&[]);
    // The intermediate lives 5 years (1825 days).
    usage_error(
        &["ca", "crl", "--dir", s(&d), "--next-update", "1900d"],
        "after the intermediate expires",
    );
    let pem = ok(&["ca", "crl", "--dir", s(&d), "--next-update", "30d"]).stdout;
    assert_eq!(crl_number(&pem), 1, "a refused CRL must not use a number");

    let t = tempfile::tempdir().unwrap();
    let d2 = t.path().join("ca2");
    usage_error(
        &["ca", "init", "--dir", s(&d2), "--default-ttl", "2000d"],
        "--default-ttl",
    );
    assert!(!d2.join("mutual-ca.toml").exists());

    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = ok(&["ca", "init", "--dir", s(&open)]);
    let mode = std::fs::metadata(&open).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", o.text());
    assert!(o.stderr.contains("tightened to 0700"), "{}", o.text());
}

// ---------------------------------------------------------------------------------------------
// Item 7: kill -9 during `cert issue` left certificates with no inventory row, keys without
// certificates, and temporary files.

/// Serials (normalized) of every certificate in PEM files directly in `dir`.
fn serials_on_disk(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "pem") {
            let o = Command::new("openssl")
                .args(["x509", "-noout", "-serial", "-in", s(&p)])
                .output()
                .unwrap();
            let t = String::from_utf8_lossy(&o.stdout);
            let hex = t.trim().split_once('=').unwrap().1.to_ascii_lowercase();
            out.push((p, hex.trim_start_matches("00").to_string()));
        }
    }
    out
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mutual-tmp-") || n.ends_with(".mutual-issue"))
        .collect()
}

#[test]
fn item7_kill_9_during_cert_issue_leaves_nothing_unrevocable() {
    let (_t, d) = new_ca(&[]);
    let out = tempfile::tempdir().unwrap();
    let o = out.path();
    let issue_cmd = |name: &str| {
        let mut c = mutual_cmd(
            Some(PW),
            &["cert", "issue", name, "--dir", s(&d), "--out", s(o)],
        );
        c.args(["--both", "--san", "dns:k.test", "--p12"])
            .env("MUTUAL_P12_PASSWORD", "p12 pw")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    // How long one issuance takes here, to spread the kills over its whole life.
    let t0 = Instant::now();
    let st = issue_cmd("calibrate").status().unwrap();
    assert!(st.success());
    let span = t0.elapsed().as_micros() as u64;

    let mut killed = 0;
    for round in 0..30u64 {
        let name = format!("k{round}");
        let mut child = issue_cmd(&name).spawn().unwrap();
        // A pseudo-random instant in [0, 1.2 x span): early rounds hit opening and signing,
        // late ones the journal, the row and the renames.
        let at = (round * 7919 + 13) % 30 * span / 25;
        std::thread::sleep(Duration::from_micros(at));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        // Whatever the instant: every certificate file on disk has an inventory row...
        let inv = inventory(&d);
        for (file, serial) in serials_on_disk(o) {
            assert!(
                inv.iter()
                    .any(|r| r["serial"].as_str() == Some(serial.as_str())),
                "round {round}: {} (serial {serial}) has no inventory row",
                file.display()
            );
        }
        // ...and the same command run again succeeds and leaves no temporary file behind
        // (unless the kill came after the issuance was complete: then it refuses to overwrite).
        let complete = ["pem", "key", "p12"]
            .iter()
            .all(|ext| o.join(format!("{name}.{ext}")).exists())
            && !o.join(format!(".{name}.mutual-issue")).exists();
        let again = issue_cmd(&name).output().unwrap();
        let err = String::from_utf8_lossy(&again.stderr);
        if complete {
            assert!(err.contains("already exists"), "round {round}: {err}");
        } else {
            assert!(
                again.status.success(),
                "round {round}: the re-run failed: {err}"
            );
        }
        assert!(leftovers(o).is_empty(), "round {round}: {:?}", leftovers(o));
        for ext in ["pem", "key", "p12"] {
            assert!(
                o.join(format!("{name}.{ext}")).exists(),
                "round {round}: no .{ext}"
            );
        }
        // The key on disk belongs to the certificate on disk.
        let pubkey = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let cert_pub = pubkey(&[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            s(&o.join(format!("{name}.pem"))),
        ]);
        let key_pub = pubkey(&["pkey", "-pubout", "-in", s(&o.join(format!("{name}.key")))]);
        assert_eq!(cert_pub, key_pub, "round {round}");
    }
    assert!(killed >= 5, "only {killed} of 30 runs were killed mid-way");
    // Every valid row is a certificate somebody has: rows of interrupted runs were revoked.
    let on_disk: Vec<String> = serials_on_disk(o).into_iter().map(|(_, s)| s).collect();
    for r in inventory(&d) {
        if r["status"] == "valid" {
            let serial = r["serial"].as_str().unwrap();
            assert!(
                on_disk.iter().any(|s| s == serial),
                "valid row {serial} has no certificate file: {r}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The online CA (items 1 and 13).

/// `mutual ca serve` on a fresh CA made with `ca init EXTRA_INIT...`, rate limits off.
fn ca_server(extra_init: &[&str]) -> CaServe {
    CaServe::with_new_ca("Defects CA", extra_init, &["--rate-limit", "off"])
}

/// `mutual renew` of the pair `dir/cert.pem`, `dir/key.pem` against `ca`.
fn renew(ca: &CaServe, dir: &Path) -> Out {
    renew_at(
        &ca.url(),
        &dir.join("cert.pem"),
        &dir.join("key.pem"),
        &["--ca", s(&ca.root())],
    )
}

fn serial_of(cert: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in", s(cert)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn ext_key_usage(cert: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "extendedKeyUsage", "-in", s(cert)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn item1_every_usage_renews_and_foreign_or_revoked_certificates_do_not() {
    let ca = ca_server(&[]);
    let work = tempfile::tempdir().unwrap();
    for usage in ["server", "client", "both"] {
        let dir = work.path().join(usage);
        let token = ca.token(&["dns:renew.test"], "1h", usage);
        let o = ca.enroll(&token, &dir);
        assert_eq!(o.code, 0, "enroll {usage}: {}\n{}", o.text(), ca.log_text());
        let cert = dir.join("cert.pem");
        let before = serial_of(&cert);
        let o = renew(&ca, &dir);
        assert_eq!(
            o.code,
            0,
            "renew {usage}: {}\nCA log:\n{}",
            o.text(),
            ca.log_text()
        );
        assert_ne!(serial_of(&cert), before, "{usage}: not renewed");
        // Same usage as before.
        let eku = ext_key_usage(&cert);
        assert_eq!(
            eku.contains("Server Authentication"),
            usage != "client",
            "{eku}"
        );
        assert_eq!(
            eku.contains("Client Authentication"),
            usage != "server",
            "{eku}"
        );
    }

    // A server certificate from another CA, with the same names: refused at the handshake.
    let (_t, other) = new_ca(&[]);
    let odir = work.path().join("foreign");
    std::fs::create_dir(&odir).unwrap();
    ok(&[
        "cert",
        "issue",
        "srv",
        "--server",
        "--san",
        "dns:renew.test",
        "--dir",
        s(&other),
        "--out",
        s(&odir),
    ]);
    std::fs::rename(odir.join("srv.pem"), odir.join("cert.pem")).unwrap();
    std::fs::rename(odir.join("srv.key"), odir.join("key.pem")).unwrap();
    let o = renew(&ca, &odir);
    assert_ne!(o.code, 0, "a foreign certificate renewed: {}", o.text());
    assert!(
        o.stderr.contains("unknown_ca") || o.stderr.contains("handshake"),
        "{}",
        o.text()
    );

    // The server-only certificate, revoked: refused by name.
    let sdir = work.path().join("server");
    let serial = serial_of(&sdir.join("cert.pem"));
    let serial = serial.split_once('=').unwrap().1;
    ok(&["cert", "revoke", serial, "--dir", s(&ca.dir)]);
    let o = renew(&ca, &sdir);
    assert_ne!(o.code, 0, "a revoked certificate renewed: {}", o.text());
    assert!(o.stderr.contains("revoked"), "{}", o.text());
}

/// `serve --ca-url` whose renewal keeps failing: attempts at least 1 s apart, each counted in
/// `mutual_renewal_failures_total`, an error log line near expiry, `/readyz` not ready once the
/// certificate has expired.
#[test]
fn item1_failing_renewal_is_loud_and_backs_off() {
    let mut ca = ca_server(&[]);
    let work = tempfile::tempdir().unwrap();
    let sdir = work.path().join("serve");
    let be = http_backend();
    // A server-only certificate (the usage that could never renew), 20 s of life: renewal
    // starts about 13 s in, the CA is down by then.
    let token = ca.token(&["dns:localhost", "ip:127.0.0.1"], "20s", "server");
    let (url, pin) = (ca.url(), ca.fingerprint());
    let args = tls_args(
        &sdir.join("cert.pem"),
        &sdir.join("key.pem"),
        &sdir.join("root.pem"),
        &[
            "--ca-url",
            &url,
            "--token",
            &token,
            "--root-sha256",
            &pin,
            "--allow-any",
        ],
    );
    let serve = spawn_proxy("serve", "--backend", &be.addr.to_string(), &args);
    let not_after = mutual_tls::load::load_certs(&sdir.join("cert.pem")).unwrap();
    let not_after = mutual_enroll::CertSummary::of(not_after[0].as_ref())
        .unwrap()
        .not_after;
    ca.stop();
    let failures = |p: &Proxy| p.metric("mutual_renewal_failures_total{listener=\"serve\"}");
    assert_eq!(failures(&serve), Some(0.0), "{}", serve.metrics());

    // Ready while the certificate is valid; not ready once it has expired.
    let (code, _) = http_get(
        SocketAddr::from(([127, 0, 0, 1], serve.metrics_port)),
        "/readyz",
    );
    assert_eq!(code, 200);
    let expired = eventually(Duration::from_secs(60), || {
        let (code, body) = http_get(
            SocketAddr::from(([127, 0, 0, 1], serve.metrics_port)),
            "/readyz",
        );
        (code == 503).then_some(body)
    })
    .unwrap_or_else(|| panic!("/readyz stayed ready:\n{}", serve.stderr_text()));
    assert!(expired.contains("expired"), "{expired}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(now >= not_after, "not ready before expiry: {expired}");

    let n = failures(&serve).unwrap();
    let log = serve.stderr_text();
    assert!(n >= 2.0, "failures {n}\n{log}");
    // From about 13 s to 20 s of life, with attempts at least 1 s apart (the issue saw ten of
    // them 100 ms apart before expiry): no more than 10 attempts.
    assert!(
        n <= 10.0,
        "{n} attempts in the last third of a 20 s life:\n{log}"
    );
    assert!(log.contains("peers will refuse it then"), "{log}");
    assert!(log.contains("ERROR"), "{log}");
    assert!(!log.contains("PRIVATE KEY"));
}

/// What `curl` says: (status, body).
fn curl_post(url: &str, root: &Path, content_type: Option<&str>, body: &str) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--cacert",
        s(root),
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
    ]);
    match content_type {
        Some(ct) => c.args(["-H", &format!("Content-Type: {ct}")]),
        // curl adds application/x-www-form-urlencoded for --data: remove the header.
        None => c.args(["-H", "Content-Type:"]),
    };
    let o = c.args(["--data-binary", body, url]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

#[test]
fn item13_sign_requires_application_json_and_spends_no_token_otherwise() {
    let ca = ca_server(&[]);
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("k.pem");
    let csr = work.path().join("r.csr");
    openssl_csr(&key, &csr, "/CN=ct.test", "DNS:ct.test");
    let token = ca.token(&["dns:ct.test"], "1h", "client");
    let body = serde_json::json!({
        "token": token,
        "csr": std::fs::read_to_string(&csr).unwrap(),
    })
    .to_string();
    let url = format!("{}/v1/sign", ca.url());
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let (code, resp) = curl_post(&url, &ca.root(), ct, &body);
        assert_eq!(code, 415, "{ct:?}: {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        assert_eq!(v["reason"], "unsupported_media_type", "{resp}");
    }
    assert!(inventory(&ca.dir).iter().all(|r| r["name"] != "ct.test"));
    // The token was not spent: the same request as JSON succeeds.
    let (code, resp) = curl_post(
        &url,
        &ca.root(),
        Some("application/json; charset=utf-8"),
        &body,
    );
    assert_eq!(code, 201, "{resp}\n{}", ca.log_text());

    // Renew and revoke take JSON too (checked after the client certificate is).
    let dir = work.path().join("c");
    let t2 = ca.token(&["dns:c.test"], "1h", "client");
    assert_eq!(ca.enroll(&t2, &dir).code, 0);
    // curl presenting the enrolled certificate, `-w` appending the status.
    let curl_as = |args: &[&str]| {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        Command::new("curl")
            .args(["-sS", "--cacert", s(&ca.root())])
            .args(["--cert", s(&cert), "--key", s(&key), "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap()
    };
    for path in ["/v1/renew", "/v1/revoke"] {
        let url = format!("{}{path}", ca.url());
        let o = curl_as(&[
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "{}",
            &url,
        ]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.ends_with("\n415"), "{path}: {text}");
        assert!(text.contains("unsupported_media_type"), "{path}: {text}");
    }
    // A renewal with no body at all needs no Content-Type (what `mutual renew` may send).
    let o = curl_as(&["-X", "POST", &format!("{}/v1/renew", ca.url())]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.ends_with("\n201"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Item 9: SPIFFE-only server certificates, and a trust domain a leaked intermediate cannot
// leave.

#[test]
fn item9_spiffe_only_svids_and_the_trust_domain_binding() {
    let ca = ca_server(&["--trust-domain", "example.org"]);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // The default usage ("both") with only a SPIFFE ID: an X509-SVID.
    let token = ca.token(&["uri:spiffe://example.org/ns/prod/web"], "1h", "both");
    let dir = w.join("svid");
    let o = ca.enroll(&token, &dir);
    assert_eq!(o.code, 0, "{}\n{}", o.text(), ca.log_text());
    let cert = dir.join("cert.pem");
    let eku = ext_key_usage(&cert);
    assert!(
        eku.contains("Server Authentication") && eku.contains("Client Authentication"),
        "{eku}"
    );
    assert_eq!(renew(&ca, &dir).code, 0, "{}", ca.log_text());
    // Both verifiers accept it.
    let o = mutual(&[
        "cert",
        "verify",
        s(&cert),
        "--roots",
        s(&ca.root()),
        "--name",
        "spiffe://example.org/ns/prod/web",
    ]);
    assert_eq!(o.code, 0, "{}", o.text());
    openssl_ok(&[
        "verify",
        "-CAfile",
        s(&ca.root()),
        "-untrusted",
        s(&cert),
        "-purpose",
        "sslserver",
        s(&cert),
    ]);
    // `cert issue --server` too.
    ok(&[
        "cert",
        "issue",
        "svc",
        "--server",
        "--san",
        "uri:spiffe://example.org/svc",
        "--dir",
        s(&ca.dir),
        "--out",
        s(w),
    ]);
    // A URI that is not a SPIFFE ID is still not a server identity.
    let o = mutual(&[
        "token",
        "create",
        "--dir",
        s(&ca.dir),
        "--san",
        "uri:https://example.org/x",
    ]);
    assert_eq!(o.code, 2, "{}", o.text());

    // The intermediate is bound to its trust domain (its own SPIFFE ID, no path)...
    let int = ca.dir.join("intermediate.pem");
    let san = openssl_ok(&["x509", "-noout", "-ext", "subjectAltName", "-in", s(&int)]);
    assert!(san.contains("URI:spiffe://example.org"), "{san}");
    // ...so what a leaked intermediate key mints for another trust domain is refused.
    let int_key = w.join("int.key");
    openssl_ok(&[
        "pkey",
        "-in",
        s(&ca.dir.join("intermediate.key")),
        "-passin",
        &format!("pass:{PW}"),
        "-out",
        s(&int_key),
    ]);
    // A leaf for `san` signed with that key; the chain file (leaf + intermediate).
    let (ekey, ecsr) = (w.join("evil.key"), w.join("evil.csr"));
    openssl_csr(&ekey, &ecsr, "/CN=evil", "");
    let mint = |san: &str| -> PathBuf {
        let (ext, ecert) = (w.join("evil.cnf"), w.join("evil.pem"));
        std::fs::write(
            &ext,
            format!(
                "[e]\nbasicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\n"
            ),
        )
        .unwrap();
        openssl_ok(&[
            "x509",
            "-req",
            "-in",
            s(&ecsr),
            "-CA",
            s(&int),
            "-CAkey",
            s(&int_key),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            s(&ext),
            "-extensions",
            "e",
            "-out",
            s(&ecert),
        ]);
        let chain = w.join("evil-chain.pem");
        std::fs::write(
            &chain,
            std::fs::read_to_string(&ecert).unwrap() + &std::fs::read_to_string(&int).unwrap(),
        )
        .unwrap();
        chain
    };
    let chain = mint("URI:spiffe://evil.org/admin");
    let o = mutual(&["cert", "verify", s(&chain), "--roots", s(&ca.root())]);
    assert_eq!(o.code, 1, "{}", o.text());
    assert!(o.stdout.contains("name_mismatch"), "{}", o.text());
    assert!(o.stdout.contains("spiffe://evil.org/admin"), "{}", o.text());
    // The trust domain's own ID on a leaf (the CA refuses to issue it; another CA, or a leaked
    // key, may): X509-SVID 5.2 has validators refuse it.
    let chain = mint("URI:spiffe://example.org");
    let o = mutual(&[
        "cert",
        "verify",
        s(&chain),
        "--roots",
        s(&ca.root()),
        "--json",
    ]);
    assert_eq!(o.code, 1, "{}", o.text());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["reason"], "name_mismatch", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("SPIFFE ID \"spiffe://example.org\" names the trust domain itself"),
        "{v}"
    );
}
