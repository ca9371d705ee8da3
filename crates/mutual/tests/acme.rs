//! The ACME server (`mutual ca serve --acme`, crates/mutual-acme) against real clients: certbot
//! 5.x from PyPI obtains a certificate by http-01 (its standalone server, validated by the CA
//! on 127.0.0.1), renews it, revokes it (the serial then in /v1/crl, read with `openssl crl`),
//! and the chain verifies with `openssl verify`. The negative cases run an independent Python
//! client (tests/acme/negative.py, `cryptography` + `requests`) and assert the exact ACME error
//! type of each refusal.
//!
//! certbot lives in a venv under target/acme-venv (`.ci/run` creates it; this test creates it
//! too when it is missing, so a plain `cargo test` needs only python3 and PyPI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use mutual_test::{free_port, wait_for_port, ChildGuard};
use pki_common::*;

fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let v = std::env::var_os("MUTUAL_ACME_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/acme-venv")
            });
        if !v.join("bin/certbot").exists() {
            let ok = Command::new("python3")
                .args(["-m", "venv", v.to_str().unwrap()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "python3 -m venv failed");
            let ok = Command::new(v.join("bin/pip"))
                .args([
                    "install",
                    "-q",
                    "certbot",
                    "cryptography",
                    "requests",
                    "dnslib",
                ])
                .status()
                .unwrap()
                .success();
            assert!(ok, "pip install certbot failed");
        }
        v
    })
    .clone()
}

/// A CA serving ACME on 127.0.0.1 with http-01 validated on `http_port`.
struct AcmeCa {
    ca: TestCa,
    port: u16,
    http_port: u16,
    tls_port: u16,
    _child: ChildGuard,
    log: PathBuf,
}

impl AcmeCa {
    fn start() -> AcmeCa {
        AcmeCa::start_with(&[])
    }

    /// A CA serving ACME with `extra` flags after the usual ones.
    fn start_with(extra: &[&str]) -> AcmeCa {
        AcmeCa::start_on(TestCa::new(&[]), extra)
    }

    /// `ca` serving ACME for example.test with `extra` flags after the usual ones.
    fn start_on(ca: TestCa, extra: &[&str]) -> AcmeCa {
        let (http_port, tls_port) = (free_port(), free_port());
        let mut args: Vec<String> = ["--acme", "--acme-allow-dns", "example.test"]
            .iter()
            .map(ToString::to_string)
            .collect();
        args.extend(["--acme-http-port".into(), http_port.to_string()]);
        args.extend(["--acme-tls-port".into(), tls_port.to_string()]);
        args.extend(["--acme-attempts".into(), "1".into()]);
        for n in ["a", "b", "c", "d", "e", "f", "g"] {
            args.extend([
                "--acme-resolve".into(),
                format!("{n}.example.test=127.0.0.1"),
            ]);
        }
        args.extend(extra.iter().map(ToString::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        AcmeCa::spawn(ca, &args, http_port, tls_port)
    }

    /// `ca serve` of `ca` with `args` (the ACME settings, as flags or none when the CA config
    /// has an [acme] section).
    fn spawn(ca: TestCa, args: &[&str], http_port: u16, tls_port: u16) -> AcmeCa {
        let log = ca.tmp.path().join("server.log");
        let port = free_port();
        let child = AcmeCa::serve(&ca, port, args, &log);
        AcmeCa {
            ca,
            port,
            http_port,
            tls_port,
            _child: child,
            log,
        }
    }

    fn serve(ca: &TestCa, port: u16, args: &[&str], log: &Path) -> ChildGuard {
        let listen = format!("127.0.0.1:{port}");
        let mut c = mutual_cmd(Some(PW), &["ca", "serve", "--listen", &listen]);
        c.args(["--dir", ca.d(), "--rate-limit", "off"]).args(args);
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        );
        let child = ChildGuard(c.spawn().unwrap());
        let addr: SocketAddr = listen.parse().unwrap();
        assert!(
            wait_for_port(addr, Duration::from_secs(30)),
            "server did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        child
    }

    /// Stops the server (its guard kills and reaps it).
    fn stop(&mut self) {
        let old = std::mem::replace(
            &mut self._child,
            ChildGuard(Command::new("true").spawn().unwrap()),
        );
        drop(old);
    }

    /// Stops the server and starts it again on the same port with `args`.
    fn restart(&mut self, args: &[&str]) {
        self.stop();
        self._child = AcmeCa::serve(&self.ca, self.port, args, &self.log);
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/acme/directory", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `certbot certonly -d NAME` against this CA, answering http-01 with certbot's standalone
    /// server on the port the CA validates; `extra` after (EAB flags).
    fn certonly(&self, name: &str, extra: &[&str]) -> Out {
        let (dir, port) = (self.directory(), self.http_port.to_string());
        let mut args = vec![
            "certonly",
            "--server",
            &dir,
            "--standalone",
            "--http-01-port",
            &port,
            "--agree-tos",
            "--register-unsafely-without-email",
            "-d",
            name,
        ];
        args.extend_from_slice(extra);
        self.certbot(&args)
    }

    fn certbot(&self, args: &[&str]) -> Out {
        self.certbot_env(args, &[])
    }

    fn certbot_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let dir = self.ca.tmp.path().join("certbot");
        let d = |s: &str| dir.join(s).to_string_lossy().into_owned();
        let mut c = Command::new(venv().join("bin/certbot"));
        c.args(args)
            .envs(env.iter().copied())
            .args(["--config-dir", &d("conf"), "--work-dir", &d("work")])
            .args(["--logs-dir", &d("logs"), "--non-interactive"])
            .env("REQUESTS_CA_BUNDLE", self.ca.root());
        collect(c)
    }

    /// lego (Debian's 4.9) with our root trusted through LEGO_CA_CERTIFICATES, its state in
    /// the CA's temp dir; `args` go after the global options (a command and its options).
    fn lego(&self, domain: &str, challenge: &[&str], args: &[&str]) -> Out {
        let path = self.ca.tmp.path().join("lego");
        let mut c = Command::new("lego");
        c.args(["--server", &self.directory(), "--email", "ops@example.test"])
            .args(["--accept-tos", "--path", s(&path), "--domains", domain])
            .args(challenge)
            .args(args)
            .env("LEGO_CA_CERTIFICATES", self.ca.root());
        collect(c)
    }

    fn crl_text(&self) -> String {
        let crl = self.ca.tmp.path().join("crl.der");
        let ok = Command::new("curl")
            .args(["-sf", "--cacert", &self.ca.root(), "-o", s(&crl)])
            .arg(format!("https://127.0.0.1:{}/v1/crl", self.port))
            .status()
            .unwrap()
            .success();
        assert!(ok, "GET /v1/crl failed");
        openssl(&["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-text"])
            .ok()
            .stdout
    }

    /// `serial` is in /v1/crl with the reason keyCompromise.
    fn assert_revoked(&self, serial: &str) {
        let crl = self.crl_text();
        assert!(
            crl.contains(&serial.to_uppercase()),
            "{serial} not in the CRL:\n{crl}"
        );
        assert!(crl.contains("Key Compromise"), "{crl}");
    }
}

fn serial_of(cert: &Path) -> String {
    let o = openssl(&["x509", "-in", s(cert), "-noout", "-serial"]).ok();
    o.stdout.trim().trim_start_matches("serial=").to_string()
}

#[test]
fn certbot_obtains_renews_and_revokes_by_http01() {
    let srv = AcmeCa::start();
    let o = srv.certonly("a.example.test", &[]);
    assert_eq!(
        o.code,
        0,
        "certbot: {}\n{}\nCA log:\n{}",
        o.stdout,
        o.stderr,
        srv.log_text()
    );

    let live = srv.ca.tmp.path().join("certbot/conf/live/a.example.test");
    let first = serial_of(&live.join("cert.pem"));
    srv.ca
        .openssl_verify(&live.join("cert.pem"), "sslserver")
        .ok();
    // fullchain.pem is leaf + intermediate: verifies against our root alone.
    openssl(&[
        "verify",
        "-CAfile",
        &srv.ca.root(),
        "-untrusted",
        s(&live.join("fullchain.pem")),
        s(&live.join("cert.pem")),
    ])
    .ok();
    let text = openssl(&["x509", "-in", s(&live.join("cert.pem")), "-noout", "-text"])
        .ok()
        .stdout;
    assert!(text.contains("DNS:a.example.test"), "{text}");
    // The inventory names the ACME account as the requester.
    let inv = srv.ca.inventory();
    let row = inv
        .iter()
        .find(|r| r["serial"].as_str().unwrap().eq_ignore_ascii_case(&first))
        .unwrap_or_else(|| panic!("{first} not in the inventory: {inv:?}"));
    assert!(
        row["requested_by"].as_str().unwrap().starts_with("acme:"),
        "{row}"
    );

    // Renewal: a new certificate (new serial) for the same name.
    let o = srv.certbot(&["renew", "--force-renewal", "--no-random-sleep-on-renew"]);
    assert_eq!(o.code, 0, "renew: {}\n{}", o.stdout, o.stderr);
    let second = serial_of(&live.join("cert.pem"));
    assert_ne!(first, second, "renew kept the old certificate");
    // Both issuances are counted under method="acme" on the CA's /metrics.
    let metrics = Command::new("curl")
        .args(["-sf", "--cacert", &srv.ca.root()])
        .arg(format!("https://127.0.0.1:{}/metrics", srv.port))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"mutual_ca_issued_total{method="acme",result="ok"} 2"#),
        "{metrics}"
    );

    // Revocation by the account: the serial appears in /v1/crl.
    assert!(!srv.crl_text().contains(&second.to_uppercase()));
    let o = srv.certbot(&[
        "revoke",
        "--cert-name",
        "a.example.test",
        "--reason",
        "keycompromise",
        "--no-delete-after-revoke",
    ]);
    assert_eq!(o.code, 0, "revoke: {}\n{}", o.stdout, o.stderr);
    srv.assert_revoked(&second);
}

/// lego, an independent ACME client in Go: a certificate by http-01 and one by tls-alpn-01
/// (RFC 8737: lego answers on `--tls.port` with ALPN acme-tls/1 and the acmeIdentifier
/// certificate, the CA connects there for the name), a renewal, a revocation that lands in the
/// CRL; each certificate verifies against our root.
#[test]
fn lego_obtains_by_http01_and_tls_alpn01_renews_and_revokes() {
    if Command::new("lego").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "lego is not installed (Debian package lego; .ci/run installs it)"
        );
        eprintln!("lego not installed: skipped");
        return;
    }
    let srv = AcmeCa::start();
    let http = [
        "--http".to_string(),
        "--http.port".to_string(),
        format!("127.0.0.1:{}", srv.http_port),
    ];
    let tls = [
        "--tls".to_string(),
        "--tls.port".to_string(),
        format!("127.0.0.1:{}", srv.tls_port),
    ];
    let http: Vec<&str> = http.iter().map(String::as_str).collect();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let certs = srv.ca.tmp.path().join("lego/certificates");
    let check = |domain: &str| -> String {
        let crt = certs.join(format!("{domain}.crt"));
        let issuer = certs.join(format!("{domain}.issuer.crt"));
        openssl(&[
            "verify",
            "-CAfile",
            &srv.ca.root(),
            "-untrusted",
            s(&issuer),
            s(&crt),
        ])
        .ok();
        let text = openssl(&["x509", "-in", s(&crt), "-noout", "-text"])
            .ok()
            .stdout;
        assert!(text.contains(&format!("DNS:{domain}")), "{text}");
        serial_of(&crt)
    };
    for (domain, challenge) in [("b.example.test", &http), ("c.example.test", &tls)] {
        let o = srv.lego(domain, challenge, &["run"]);
        assert_eq!(
            o.code,
            0,
            "lego run {domain}: {}\n{}\nCA log:\n{}",
            o.stdout,
            o.stderr,
            srv.log_text()
        );
        check(domain);
    }
    // Renewal by tls-alpn-01 (our certificates live 24 h: --days 30 renews at once; without
    // --no-random-sleep lego waits up to 8 minutes first, as a cron job should).
    let before = check("c.example.test");
    let o = srv.lego(
        "c.example.test",
        &tls,
        &["renew", "--days", "30", "--no-random-sleep"],
    );
    assert_eq!(o.code, 0, "lego renew: {}\n{}", o.stdout, o.stderr);
    let after = check("c.example.test");
    assert_ne!(before, after, "lego renew kept the old certificate");
    // Revocation: the serial is in /v1/crl with its reason.
    let o = srv.lego(
        "c.example.test",
        &tls,
        &["revoke", "--reason", "1", "--keep"],
    );
    assert_eq!(o.code, 0, "lego revoke: {}\n{}", o.stdout, o.stderr);
    srv.assert_revoked(&after);
}

#[test]
fn refusals_carry_the_exact_acme_error_type() {
    // Name constraints narrower than the ACME policy (example.test): the CA's own rules refuse
    // h.example.test at newOrder.
    let mut init = Vec::new();
    for n in ["b", "c", "d", "e", "f", "g"] {
        init.extend(["--permitted-dns".to_string(), format!("{n}.example.test")]);
    }
    let init: Vec<&str> = init.iter().map(String::as_str).collect();
    let srv = AcmeCa::start_on(TestCa::new(&init), &[]);
    // Without --san, the server certificate leaves out the default names the constraints
    // exclude (it serves on 127.0.0.1) instead of failing to start.
    assert!(
        srv.log_text()
            .contains("note: the server certificate leaves out localhost"),
        "{}",
        srv.log_text()
    );
    // With the inventory: orders put back to pending after their authorization turned valid (a
    // crash between a validation's two writes) are settled when read and when finalized.
    let db = Path::new(srv.ca.d()).join("inventory.db");
    let got = python_client(&srv, "negative.py", &[db.to_str().unwrap()]);
    let want = serde_json::json!({
        "malformed": "malformed",
        "replayed_nonce": "badNonce",
        "wrong_key": "unauthorized",
        "outside_policy": "rejectedIdentifier",
        "outside_ca_rules": "rejectedIdentifier",
        "validity_asked": "malformed",
        "wrong_key_authorization": "incorrectResponse",
        "csr_names_differ": "badCSR",
        "finalize_not_ready": "orderNotReady",
        "pending_order_read": "ready",
        "pending_order_finalized": "valid",
    });
    assert_eq!(got, want);
    // The refused finalize issued nothing.
    assert!(srv
        .ca
        .inventory()
        .iter()
        .all(|r| !r["sans"].to_string().contains("d.example.test")));
}

#[test]
fn acme_without_an_allowed_identifier_is_a_usage_error() {
    let ca = TestCa::new(&[]);
    mutual(&[
        "ca",
        "serve",
        "--dir",
        ca.d(),
        "--listen",
        "127.0.0.1:0",
        "--acme",
    ])
    .fails_with("--acme needs at least one --acme-allow-dns");
    // Zero attempts or port 0 would serve an ACME that can validate nothing (the flag and the
    // [acme] key alike), and settings without ACME on are refused, not ignored.
    let serve = |extra: &[&str]| {
        let mut args = vec!["ca", "serve", "--dir", ca.d(), "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        mutual(&args)
    };
    let on = ["--acme", "--acme-allow-dns", "example.test"];
    serve(&[&on[..], &["--acme-attempts", "0"]].concat())
        .fails_with("acme attempts 0: must be at least 1");
    serve(&[&on[..], &["--acme-http-port", "0"]].concat())
        .fails_with("acme http port 0: must be at least 1");
    // A suffix that is not a DNS name would match no identifier.
    for bad in ["*.example.test", "10.0.0.0/8", "exa mple"] {
        serve(&["--acme", "--acme-allow-dns", bad])
            .fails_with(&format!("acme allow-dns {bad:?}: not a DNS name"));
    }
    // A resolve entry that names no host validation could connect to, or one host twice.
    for (bad, why) in [
        (
            "exa mple=127.0.0.1",
            "acme resolve \"exa mple=127.0.0.1\": invalid SAN",
        ),
        ("=127.0.0.1", "acme resolve \"=127.0.0.1\": invalid SAN"),
        (
            "*.example.test=127.0.0.1",
            "a wildcard is validated by dns-01 only; name the host, e.g. example.test=IP",
        ),
    ] {
        serve(&[&on[..], &["--acme-resolve", bad]].concat()).fails_with(why);
    }
    serve(
        &[
            &on[..],
            &["--acme-resolve", "a.example.test=127.0.0.1"],
            &["--acme-resolve", "A.example.test=127.0.0.2"],
        ]
        .concat(),
    )
    .fails_with("acme resolve: a.example.test is given two addresses, 127.0.0.1 and 127.0.0.2");
    // A lifetime longer than the intermediate has left: every finalize would be refused.
    serve(&[&on[..], &["--acme-ttl", "100y"]].concat())
        .fails_with("a certificate cannot outlive the intermediate that issues it");
    std::fs::OpenOptions::new()
        .append(true)
        .open(Path::new(ca.d()).join("mutual-ca.toml"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\n[acme]\ntls_port = 0\n"))
        .unwrap();
    serve(&on).fails_with("acme tls port 0: must be at least 1");
    serve(&["--acme-attempts", "2"]).fails_with("--acme-* settings need --acme");
    // A suffix with no name inside the CA's name constraints: every order would be refused.
    let narrow = TestCa::new(&["--permitted-dns", ".internal.example"]);
    let serve_narrow = |pw: Option<&str>, extra: &[&str]| {
        let mut args = vec![
            "ca",
            "serve",
            "--dir",
            narrow.d(),
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        mutual_pw(pw, &args)
    };
    serve_narrow(Some(PW), &["--acme", "--acme-allow-dns", "example.test"]).fails_with(
        "acme allow-dns \"example.test\": no name under it is inside the CA's name constraints \
         (permitted_dns: .internal.example)",
    );
    // The server's own --san outside them: refused before the password is asked for.
    serve_narrow(None, &["--san", "dns:ca.other.example"]).fails_with(
        "--san: the server's own certificate: name \"ca.other.example\" is not permitted by this \
         CA's name constraints",
    );
}

/// `mutual acme eab create --json` for the CA in `dir`, with `extra` flags: its JSON.
fn eab_create(dir: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["acme", "eab", "create", "--dir", dir, "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&mutual(&args).ok().stdout).unwrap()
}

/// Runs one of the Python clients in tests/acme/ against the CA and returns its JSON verdicts.
fn python_client(srv: &AcmeCa, script: &str, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/acme")
        .join(script);
    let o = Command::new(venv().join("bin/python"))
        .arg(&script)
        .arg(srv.directory())
        .arg(srv.http_port.to_string())
        .args(args)
        .env("REQUESTS_CA_BUNDLE", srv.ca.root())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{script:?}: {stdout}\n{}\nCA log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log_text()
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// ES384 and EdDSA account keys end to end, contact update, the orders list, keyChange, revokeCert
/// signed by the certificate's key, ARI renewalInfo before and after that revocation, `replaces`,
/// and account deactivation, each refusal with its exact ACME error type (tests/acme/lifecycle.py,
/// an independent client on Python `cryptography`).
#[test]
fn account_lifecycle_key_change_revoke_by_certificate_key_and_renewal_info() {
    let srv = AcmeCa::start();
    let got = python_client(&srv, "lifecycle.py", &["f.example.test", "g.example.test"]);
    let want = serde_json::json!({
        "es384": "valid",
        "eddsa": "valid",
        "contact_update": ["mailto:new@example.test"],
        "contact_tel": "unsupportedContact",
        "orders_list": true,
        "orders_of_another": "unauthorized",
        "ari_window": true,
        "ari_unknown": "404:malformed",
        "ari_malformed": "malformed",
        "replaces_foreign": "unauthorized",
        "replaces_own": true,
        "ari_other_issuer": true,
        "replaced_twice": "409:alreadyReplaced",
        "key_change_in_use": "malformed",
        "key_change_in_use_location": true,
        "key_change_wrong_old_key": "unauthorized",
        "key_change": 200,
        "old_key_after_change": "unauthorized",
        "new_key_after_change": "valid",
        "lookup_by_new_key": true,
        "revoke_by_other_key": "unauthorized",
        "revoke_by_cert_key": 200,
        "revoke_again": "alreadyRevoked",
        "ari_after_revoke": true,
        "deactivate": "deactivated",
        "after_deactivation": "unauthorized",
    });
    assert_eq!(got, want);
    // The revocation signed by the certificate's key is in the CRL.
    let g = srv
        .ca
        .inventory()
        .into_iter()
        .find(|r| r["sans"].to_string().contains("g.example.test"))
        .unwrap();
    assert_eq!(g["status"], "revoked", "{g}");
    let serial = g["serial"].as_str().unwrap().to_uppercase();
    let crl = srv.crl_text();
    assert!(
        crl.contains(serial.trim_start_matches('0')),
        "{serial} not in the CRL:\n{crl}"
    );
}

/// `--acme-require-eab`: the directory says so, an account without a binding is
/// `externalAccountRequired`, a wrong MAC, an unknown key id or a binding of another key are
/// `unauthorized`, a key binds one account only; certbot with `--eab-kid/--eab-hmac-key` gets a
/// certificate.
#[test]
fn external_account_binding_is_required_and_binds_one_account() {
    let srv = AcmeCa::start_with(&["--acme-require-eab"]);
    let eab = || -> (String, String) {
        let v = eab_create(srv.ca.d(), &[]);
        (
            v["kid"].as_str().unwrap().to_string(),
            v["hmac_key"].as_str().unwrap().to_string(),
        )
    };
    let (kid, key) = eab();
    let got = python_client(&srv, "lifecycle.py", &["--eab", &kid, &key]);
    let want = serde_json::json!({
        "directory_says_required": true,
        "no_binding": "externalAccountRequired",
        "wrong_mac": "unauthorized",
        "unknown_kid": "unauthorized",
        "binding_of_another_key": "unauthorized",
        "bound": 201,
        "kid_used_twice": "unauthorized",
        "existing_account": 200,
    });
    assert_eq!(got, want);
    // The HMAC key is in no log line.
    assert!(!srv.log_text().contains(&key));

    // certbot without a binding is refused; with a fresh key it registers and obtains.
    let o = srv.certonly("a.example.test", &[]);
    assert_ne!(o.code, 0, "certbot without EAB: {}\n{}", o.stdout, o.stderr);
    // This key gets a label, shown by `eab list` (text and JSON).
    let v = eab_create(srv.ca.d(), &["--label", "certbot host"]);
    assert_eq!(v["label"], "certbot host");
    let (kid, key) = (
        v["kid"].as_str().unwrap().to_string(),
        v["hmac_key"].as_str().unwrap().to_string(),
    );
    let o = srv.certonly(
        "a.example.test",
        &["--eab-kid", &kid, "--eab-hmac-key", &key],
    );
    assert_eq!(
        o.code,
        0,
        "certbot with EAB: {}\n{}\nCA log:\n{}",
        o.stdout,
        o.stderr,
        srv.log_text()
    );
    let live = srv.ca.tmp.path().join("certbot/conf/live/a.example.test");
    srv.ca
        .openssl_verify(&live.join("cert.pem"), "sslserver")
        .ok();

    // `eab list`: both keys, each with the account it bound, never an HMAC key.
    let list = || -> serde_json::Value {
        let o = mutual(&["acme", "eab", "list", "--dir", srv.ca.d(), "--json"]).ok();
        serde_json::from_str(&o.stdout).unwrap()
    };
    let keys = list();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[1]["kid"], kid.as_str());
    assert!(keys[0]["label"].is_null(), "{keys:?}");
    assert_eq!(keys[1]["label"], "certbot host");
    assert!(keys
        .iter()
        .all(|k| k["account"].is_string() && k["bound_at"].is_string()));
    let text = mutual(&["acme", "eab", "list", "--dir", srv.ca.d()]).ok();
    assert!(
        text.stdout.contains(&kid)
            && !text.stdout.contains(&key)
            && text.stdout.contains("certbot host"),
        "{}",
        text.stdout
    );
    let account = keys[1]["account"].as_str().unwrap().to_string();

    // `eab delete` of the key certbot used: its account is deactivated, so certbot's next
    // order (same account) is refused; the key is gone from the list.
    let o = mutual(&["acme", "eab", "delete", &kid, "--dir", srv.ca.d(), "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"kid": kid, "deleted": true, "account": account})
    );
    let o = srv.certonly("b.example.test", &[]);
    assert_ne!(
        o.code, 0,
        "certbot with a deactivated account: {}",
        o.stdout
    );
    assert!(
        format!("{}{}", o.stdout, o.stderr).contains("the account is deactivated"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(list().as_array().unwrap().len(), 1);
    // An unused key withdrawn before use binds nothing: certbot cannot register with it.
    let (unused, unused_key) = eab();
    let o = mutual(&["acme", "eab", "delete", &unused, "--dir", srv.ca.d()]).ok();
    assert!(o.stdout.contains("it had bound no account"), "{}", o.stdout);
    std::fs::remove_dir_all(srv.ca.tmp.path().join("certbot/conf/accounts")).unwrap();
    let o = srv.certonly(
        "b.example.test",
        &["--eab-kid", &unused, "--eab-hmac-key", &unused_key],
    );
    assert_ne!(o.code, 0, "certbot with a withdrawn key: {}", o.stdout);
    assert!(
        format!("{}{}", o.stdout, o.stderr).contains("unknown key id"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    // A key that is not there: exit 1, reason not_found.
    let o = mutual(&[
        "acme",
        "eab",
        "delete",
        &unused,
        "--dir",
        srv.ca.d(),
        "--json",
    ]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["error"]["reason"], "not_found");
}

/// ARI with certbot 5.x, whose `renew` asks renewalInfo (RFC 9773): a fresh certificate is not
/// renewed (the window is two-thirds into its life), a revoked one is renewed at the next
/// `certbot renew` (the window moved into the past). certbot's own fallback (OCSP, half the
/// lifetime) would renew neither: our certificates name no OCSP responder, and they are minutes
/// old.
#[test]
fn certbot_renews_when_renewal_info_says_so_after_a_revocation() {
    let srv = AcmeCa::start();
    let port = srv.http_port.to_string();
    for name in ["a.example.test", "b.example.test"] {
        let o = srv.certonly(name, &[]);
        assert_eq!(o.code, 0, "certbot {name}: {}\n{}", o.stdout, o.stderr);
    }
    let conf = srv.ca.tmp.path().join("certbot/conf");
    let cert = |name: &str| conf.join("live").join(name).join("cert.pem");
    let renew = |name: &str| {
        let o = srv.certbot(&[
            "renew",
            "--cert-name",
            name,
            "--no-random-sleep-on-renew",
            "--standalone",
            "--http-01-port",
            &port,
        ]);
        assert_eq!(o.code, 0, "renew {name}: {}\n{}", o.stdout, o.stderr);
    };
    let (a0, b0) = (
        serial_of(&cert("a.example.test")),
        serial_of(&cert("b.example.test")),
    );
    renew("a.example.test");
    assert_eq!(
        serial_of(&cert("a.example.test")),
        a0,
        "renewed before the window"
    );
    // certbot did ask: it keeps the Retry-After of our answer in the lineage's config.
    let renewal_conf = std::fs::read_to_string(conf.join("renewal/a.example.test.conf")).unwrap();
    assert!(renewal_conf.contains("ari_retry_after"), "{renewal_conf}");
    assert!(
        srv.log_text().contains("/acme/renewal-info/"),
        "{}",
        srv.log_text()
    );

    // Revoked outside ACME (the operator's CLI): the next renew replaces it.
    mutual(&[
        "cert",
        "revoke",
        "--dir",
        srv.ca.d(),
        &b0,
        "--reason",
        "key-compromise",
    ])
    .ok();
    renew("b.example.test");
    let b1 = serial_of(&cert("b.example.test"));
    assert_ne!(b1, b0, "a revoked certificate was not renewed");
    srv.ca
        .openssl_verify(&cert("b.example.test"), "sslserver")
        .ok();
}

/// dns-01 (`--acme-dns-resolver`): certbot's manual hook publishes the TXT record in a real DNS
/// server on 127.0.0.1 (PyPI dnslib, tests/acme/dns_server.py), the CA asks that server for
/// `_acme-challenge.NAME` and issues, a wildcard `*.NAME` too (proven on NAME); a spoiled TXT
/// value fails with `incorrectResponse`.
#[test]
fn certbot_obtains_by_dns01_through_a_real_dns_server() {
    let tmp = tempfile::tempdir().unwrap();
    let zone = tmp.path().join("zone");
    std::fs::create_dir(&zone).unwrap();
    let port_file = tmp.path().join("dns.port");
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/acme");
    if Command::new(venv().join("bin/python"))
        .args(["-c", "import dnslib"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        let ok = Command::new(venv().join("bin/pip"))
            .args(["install", "-q", "dnslib"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "pip install dnslib failed");
    }
    let _dns = ChildGuard(
        Command::new(venv().join("bin/python"))
            .arg(here.join("dns_server.py"))
            .arg(&zone)
            .arg(&port_file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    for _ in 0..300 {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            port = p;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!port.is_empty(), "the DNS server did not start");
    let resolver = format!("127.0.0.1:{}", port.trim());
    let srv = AcmeCa::start_with(&["--acme-dns-resolver", &resolver]);
    let dir = srv.directory();
    let hook = here.join("dns_hook.sh");
    let zone_s = zone.to_string_lossy().into_owned();
    let obtain = |name: &str, prefix: &str| {
        srv.certbot_env(
            &[
                "certonly",
                "--server",
                &dir,
                "--manual",
                "--preferred-challenges",
                "dns",
                "--manual-auth-hook",
                s(&hook),
                "--agree-tos",
                "--register-unsafely-without-email",
                "-d",
                name,
            ],
            &[("DNS_DIR", &zone_s), ("DNS_VALUE_PREFIX", prefix)],
        )
    };
    let o = obtain("e.example.test", "");
    assert_eq!(
        o.code,
        0,
        "certbot dns-01: {}\n{}\nCA log:\n{}",
        o.stdout,
        o.stderr,
        srv.log_text()
    );
    let cert = srv
        .ca
        .tmp
        .path()
        .join("certbot/conf/live/e.example.test/cert.pem");
    srv.ca.openssl_verify(&cert, "sslserver").ok();
    assert!(srv.log_text().contains("dns-01"), "{}", srv.log_text());

    // A wildcard is validated by dns-01 on its base name (certbot's hook gets g.example.test).
    let o = obtain("*.g.example.test", "");
    assert_eq!(o.code, 0, "certbot wildcard: {}\n{}", o.stdout, o.stderr);
    let live = srv
        .ca
        .tmp
        .path()
        .join("certbot/conf/live/g.example.test/cert.pem");
    srv.ca.openssl_verify(&live, "sslserver").ok();
    let text = openssl(&["x509", "-in", s(&live), "-noout", "-ext", "subjectAltName"])
        .ok()
        .stdout;
    assert!(text.contains("DNS:*.g.example.test"), "{text}");

    let o = obtain("f.example.test", "spoiled");
    assert_ne!(o.code, 0, "a wrong TXT value was accepted");
    assert!(
        o.text().contains("incorrectResponse"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
}

/// `--acme-orders-per-hour`: beyond the limit newOrder is `rateLimited` (429) with a Retry-After
/// within the hour; another account is not affected.
#[test]
fn orders_beyond_the_hourly_limit_are_rate_limited() {
    let srv = AcmeCa::start_with(&["--acme-orders-per-hour", "3"]);
    let got = python_client(&srv, "lifecycle.py", &["--rate", "3", "a.example.test"]);
    let want = serde_json::json!({
        "within_limit": [201, 201, 201],
        "beyond_limit": "rateLimited",
        "status": 429,
        "retry_after_within_the_hour": true,
        "other_account": 201,
    });
    assert_eq!(got, want);
}

/// The CA config's `[acme]` section is equal to the flags: a CA whose mutual-ca.toml enables ACME
/// (allowed names, validation ports and overrides, EAB, the order limit) serves it without any
/// --acme flag, with the section's order limit; an unknown key is a usage error.
#[test]
fn acme_section_of_the_ca_config_equals_the_flags() {
    let ca = TestCa::new(&[]);
    let (http_port, tls_port) = (free_port(), free_port());
    let config = Path::new(ca.d()).join("mutual-ca.toml");
    let base = std::fs::read_to_string(&config).unwrap();
    let section = format!(
        "\n[acme]\nenabled = true\nallow_dns = [\"example.test\"]\nhttp_port = {http_port}\n\
         tls_port = {tls_port}\nattempts = 1\nresolve = [\"a.example.test=127.0.0.1\"]\n\
         orders_per_hour = 2\nrequire_eab = false\n"
    );
    std::fs::write(&config, format!("{base}{section}")).unwrap();
    // A typo in the section is refused with its name.
    std::fs::write(&config, format!("{base}{section}allow_dsn = [\"x\"]\n")).unwrap();
    mutual_pw(
        Some(PW),
        &["ca", "serve", "--dir", ca.d(), "--listen", "127.0.0.1:0"],
    )
    .fails_with("allow_dsn");
    std::fs::write(&config, format!("{base}{section}")).unwrap();
    // ACME settings without ACME are a usage error too.
    let plain = TestCa::new(&[]);
    mutual_pw(
        Some(PW),
        &[
            "ca",
            "serve",
            "--dir",
            plain.d(),
            "--listen",
            "127.0.0.1:0",
            "--acme-require-eab",
        ],
    )
    .fails_with("need --acme");

    let srv = AcmeCa::spawn(ca, &[], http_port, tls_port);
    let got = python_client(&srv, "lifecycle.py", &["--rate", "2", "a.example.test"]);
    assert_eq!(got["within_limit"], serde_json::json!([201, 201]), "{got}");
    assert_eq!(got["beyond_limit"], "rateLimited", "{got}");
    drop(srv);
}

/// Two `ca serve --acme` replicas on one PostgreSQL store, an ACME client whose every request goes
/// to the other replica (tests/acme/replicas.py): account, order, authorization, validation and
/// finalize complete across them, and a nonce spent at one replica is `badNonce` at the other.
/// Without a PostgreSQL server (and without `$MUTUAL_REQUIRE_POSTGRES`) it prints "skipped".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_store_serve_alternating_requests() {
    let Some(pg) = mutual_store::testing::PgTestDb::create().await else {
        return;
    };
    let url = pg.url.clone();
    tokio::task::spawn_blocking(move || {
        let ca = TestCa::new(&["--store", &url]);
        let http_port = free_port();
        let mut replicas = Vec::new();
        for i in 0..2 {
            // Each replica has its own copy of the CA directory, as on its own host.
            let dir = ca.tmp.path().join(format!("replica{i}"));
            let ok = Command::new("cp")
                .args(["-a", ca.d(), s(&dir)])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let log = ca.tmp.path().join(format!("replica{i}.log"));
            let mut c = mutual_cmd(Some(PW), &["ca", "serve", "--listen", &listen]);
            c.args(["--dir", s(&dir), "--rate-limit", "off", "--acme"])
                .args(["--acme-allow-dns", "example.test"])
                .args(["--acme-http-port", &http_port.to_string()])
                .args(["--acme-resolve", "a.example.test=127.0.0.1"])
                .args(["--acme-attempts", "1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            let child = ChildGuard(c.spawn().unwrap());
            assert!(
                wait_for_port(listen.parse().unwrap(), Duration::from_secs(60)),
                "replica {i} did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            replicas.push((child, port, log));
        }
        let dirs: Vec<String> = replicas
            .iter()
            .map(|(_, port, _)| format!("https://127.0.0.1:{port}/acme/directory"))
            .collect();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/acme/replicas.py");
        let o = Command::new(venv().join("bin/python"))
            .arg(&script)
            .args(&dirs)
            .arg(http_port.to_string())
            .arg("a.example.test")
            .env("REQUESTS_CA_BUNDLE", ca.root())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let logs: String = replicas
            .iter()
            .map(|(_, _, l)| std::fs::read_to_string(l).unwrap_or_default())
            .collect();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "replicas.py: {stdout}\n{}\nlogs:\n{logs}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mut got: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert!(got["requests"].as_u64().unwrap() >= 8, "{got}");
        got.as_object_mut().unwrap().remove("requests");
        assert_eq!(
            got,
            serde_json::json!({
                "nonce_replayed_at_the_other_replica": "badNonce",
                "order_ready": "ready",
                "order": "valid",
                "chain_certificates": 2,
                "both_replicas_served": true,
            })
        );
        drop(replicas);
    })
    .await
    .unwrap();
    pg.drop_db().await;
}

/// `ca migrate` to PostgreSQL copies the ACME accounts, orders and EAB keys: certbot's account
/// made on the SQLite CA renews against the migrated CA without registering again, and an EAB
/// key made before the migration binds an account after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_migrate_copies_the_acme_accounts_orders_and_eab_keys() {
    let Some(pg) = mutual_store::testing::PgTestDb::create().await else {
        return;
    };
    let url = pg.url.clone();
    tokio::task::spawn_blocking(move || {
        let (http_port, tls_port) = (free_port(), free_port());
        let hp = http_port.to_string();
        let flags = [
            "--acme",
            "--acme-allow-dns",
            "example.test",
            "--acme-http-port",
            &hp,
            "--acme-resolve",
            "a.example.test=127.0.0.1",
            "--acme-attempts",
            "1",
        ];
        let mut srv = AcmeCa::spawn(TestCa::new(&[]), &flags, http_port, tls_port);
        let o = srv.certonly("a.example.test", &[]);
        assert_eq!(o.code, 0, "certbot: {}\n{}", o.stdout, o.stderr);
        let eab = eab_create(srv.ca.d(), &["--label", "team a"]);

        // Stop, migrate, serve from PostgreSQL on the same port.
        srv.stop();
        mutual(&["ca", "migrate", "--dir", srv.ca.d(), "--to", &url, "--json"]).ok();
        // The key, with its label, is in PostgreSQL now.
        let o = mutual(&["acme", "eab", "list", "--dir", srv.ca.d(), "--json"]).ok();
        let keys: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(keys[0]["kid"], eab["kid"], "{keys}");
        assert_eq!(keys[0]["label"], "team a", "{keys}");
        let mut with_eab = flags.to_vec();
        with_eab.push("--acme-require-eab");
        srv.restart(&with_eab);

        let o = srv.certbot(&["renew", "--force-renewal", "--no-random-sleep-on-renew"]);
        assert_eq!(
            o.code,
            0,
            "renew after migrate: {}\n{}\nCA log:\n{}",
            o.stdout,
            o.stderr,
            srv.log_text()
        );
        let got = python_client(
            &srv,
            "lifecycle.py",
            &[
                "--eab",
                eab["kid"].as_str().unwrap(),
                eab["hmac_key"].as_str().unwrap(),
            ],
        );
        assert_eq!(got["bound"], 201, "{got}");
    })
    .await
    .unwrap();
    pg.drop_db().await;
}
