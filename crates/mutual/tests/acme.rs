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
                .args(["install", "-q", "certbot", "cryptography", "requests"])
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
        let ca = TestCa::new(&[]);
        let log = ca.tmp.path().join("server.log");
        let (port, http_port, tls_port) = (free_port(), free_port(), free_port());
        let listen = format!("127.0.0.1:{port}");
        let mut c = mutual_cmd(Some(PW), &["ca", "serve", "--listen", &listen]);
        c.args(["--dir", ca.d(), "--rate-limit", "off", "--acme"])
            .args(["--acme-allow-dns", "example.test"])
            .args(["--acme-http-port", &http_port.to_string()])
            .args(["--acme-tls-port", &tls_port.to_string()])
            .args(["--acme-attempts", "1"]);
        for n in ["a", "b", "c", "d", "e"] {
            c.args(["--acme-resolve", &format!("{n}.example.test=127.0.0.1")]);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = ChildGuard(c.spawn().unwrap());
        let addr: SocketAddr = listen.parse().unwrap();
        assert!(
            wait_for_port(addr, Duration::from_secs(30)),
            "server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        AcmeCa {
            ca,
            port,
            http_port,
            tls_port,
            _child: child,
            log,
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/acme/directory", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn certbot(&self, args: &[&str]) -> Out {
        let dir = self.ca.tmp.path().join("certbot");
        let d = |s: &str| dir.join(s).to_string_lossy().into_owned();
        let mut c = Command::new(venv().join("bin/certbot"));
        c.args(args)
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
    let port = srv.http_port.to_string();
    let common = [
        "--standalone",
        "--http-01-port",
        &port,
        "--agree-tos",
        "--register-unsafely-without-email",
    ];
    let mut args = vec!["certonly", "--server"];
    let dir = srv.directory();
    args.push(&dir);
    args.extend_from_slice(&common);
    args.extend_from_slice(&["-d", "a.example.test"]);
    let o = srv.certbot(&args);
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
    let srv = AcmeCa::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/acme/negative.py");
    let o = Command::new(venv().join("bin/python"))
        .arg(&script)
        .arg(srv.directory())
        .arg(srv.http_port.to_string())
        .env("REQUESTS_CA_BUNDLE", srv.ca.root())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "negative.py: {stdout}\n{}\nCA log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log_text()
    );
    let got: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let want = serde_json::json!({
        "malformed": "malformed",
        "replayed_nonce": "badNonce",
        "wrong_key": "unauthorized",
        "outside_policy": "rejectedIdentifier",
        "wrong_key_authorization": "incorrectResponse",
        "csr_names_differ": "badCSR",
        "finalize_not_ready": "orderNotReady",
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
}
