//! OCSP (docs/ocsp.md) against real clients: `openssl ocsp` asks `mutual ca serve
//! --ocsp-listen` about good, revoked and unknown certificates and verifies every response
//! against our root; nginx with `ssl_ocsp` checks client certificates through our responder;
//! malformed requests get the `malformedRequest` OCSP status, not an HTTP error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use mutual_test::{free_port, skip_without};
use pki_common::*;

/// A CA whose certificates name our responder in their AIA, and `ca serve` answering OCSP on
/// plain HTTP (`--ocsp-listen`) and on its HTTPS listener.
struct Responder {
    srv: CaServe,
    url: String,
    out: PathBuf,
}

impl Responder {
    fn start(serve_extra: &[&str]) -> Responder {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/ocsp");
        let listen = format!("127.0.0.1:{port}");
        let mut extra = vec!["--ocsp-listen", listen.as_str()];
        extra.extend_from_slice(serve_extra);
        let srv = CaServe::with_new_ca("OCSP CA", &["--ocsp-url", &url], &extra);
        let out = srv.d().parent().unwrap().join("out");
        std::fs::create_dir_all(&out).unwrap();
        Responder { srv, url, out }
    }

    /// [`Responder::start`] with no extra flags, or `None` (a SKIPPED line) when one of
    /// `tools` is missing.
    fn needing(tools: &[&str]) -> Option<Responder> {
        if tools.iter().any(|t| skip_without(t)) {
            return None;
        }
        Some(Responder::start(&[]))
    }

    /// `cert issue NAME ARGS...` into `out`; the certificate's path.
    fn issue(&self, name: &str, args: &[&str]) -> PathBuf {
        let d = self.srv.d().to_str().unwrap().to_string();
        let o = self.out.to_str().unwrap().to_string();
        let mut a = vec!["cert", "issue", name, "--dir", &d, "--out", &o];
        a.extend_from_slice(args);
        mutual(&a).ok();
        self.out.join(format!("{name}.pem"))
    }

    fn revoke(&self, cert: &Path, reason: &str) {
        revoke_in(s(self.srv.d()), cert, reason);
    }

    fn intermediate(&self) -> String {
        s(&self.srv.d().join("intermediate.pem")).to_string()
    }

    /// `openssl ocsp` (nonce on, as by default) about `target` (`-cert FILE` or `-serial N`),
    /// verifying the response against our root; stdout + stderr.
    fn ask(&self, pre: &[&str], target: &[&str]) -> Out {
        let root = self.srv.root();
        let mut a = pre.to_vec();
        a.extend_from_slice(target);
        a.extend(["-url", &self.url, "-CAfile", s(&root)]);
        self.ocsp(&a)
    }

    /// `openssl ocsp -issuer INTERMEDIATE ARGS...`; stdout + stderr.
    fn ocsp(&self, args: &[&str]) -> Out {
        let int = self.intermediate();
        openssl(&[&["ocsp", "-issuer", &int][..], args].concat())
    }
}

/// The `openssl ocsp` verdict lines for a certificate: (status line, whole output).
fn verdict(o: &Out) -> String {
    format!("{}{}", o.stdout, o.stderr)
}

#[test]
fn openssl_ocsp_gets_good_revoked_unknown_and_verifies_them() {
    let Some(r) = Responder::needing(&["openssl"]) else {
        return;
    };
    let good = r.issue("good", &["--san", "dns:good.test"]);
    let bad = r.issue("bad", &[]);
    let own = r.issue("own", &["--ocsp-url", "http://ocsp.example.test/ocsp"]);
    // The AIA names the CA-wide responder (`ca init --ocsp-url`) unless `--ocsp-url` overrides it.
    assert_eq!(x509(&good, &["-noout", "-ocsp_uri"]).trim(), r.url);
    assert_eq!(
        x509(&own, &["-noout", "-ocsp_uri"]).trim(),
        "http://ocsp.example.test/ocsp"
    );
    r.revoke(&bad, "key-compromise");

    let o = r.ask(&[], &["-cert", s(&good)]);
    let t = verdict(&o);
    assert!(t.contains("Response verify OK"), "{t}");
    assert!(t.contains("good.pem: good"), "{t}");
    assert!(!t.contains("WARNING"), "the nonce must be echoed: {t}");

    let t = verdict(&r.ask(&[], &["-cert", s(&bad)]));
    assert!(t.contains("Response verify OK"), "{t}");
    assert!(t.contains("bad.pem: revoked"), "{t}");
    assert!(t.contains("Reason: keyCompromise"), "{t}");
    assert!(t.contains("Revocation Time:"), "{t}");

    let t = verdict(&r.ask(&[], &["-serial", "0x1234abcd"]));
    assert!(t.contains("Response verify OK"), "{t}");
    assert!(t.contains("0x1234abcd: unknown"), "{t}");

    // SHA-256 CertIDs, and a request without nonce (the cacheable kind).
    let t = verdict(&r.ask(&["-sha256", "-no_nonce"], &["-cert", s(&bad)]));
    assert!(
        t.contains("Response verify OK") && t.contains("bad.pem: revoked"),
        "{t}"
    );

    // A CertID naming another issuer (the root): we cannot answer for it.
    let root = r.srv.root();
    let t = verdict(&openssl(&[
        "ocsp",
        "-issuer",
        s(&root),
        "-cert",
        s(&good),
        "-url",
        &r.url,
        "-CAfile",
        s(&root),
    ]));
    assert!(t.contains("Responder Error: unauthorized (6)"), "{t}");

    // The responder is a delegated one: OCSPSigning only, nocheck, issued by the intermediate.
    let resp = r.out.join("resp.der");
    r.ask(&[], &["-cert", s(&good), "-respout", s(&resp)]).ok();
    let text = openssl(&["ocsp", "-respin", s(&resp), "-resp_text", "-noverify"]).ok();
    assert!(text.stdout.contains("OCSP Signing"), "{}", text.stdout);
    assert!(text.stdout.contains("OCSP No Check"), "{}", text.stdout);
    assert!(
        text.stdout.contains("CN=OCSP CA Intermediate\n"),
        "{}",
        text.stdout
    );
    let inv = r.srv.inventory();
    assert!(
        inv.iter()
            .any(|c| c["requested_by"] == "ca-serve-ocsp" && c["usage"] == "ocsp"),
        "the responder certificate has its inventory row: {inv:?}"
    );
}

/// A response is signed once per status and reused; a revocation (made with `cert revoke`,
/// outside the server) is answered at the next request, with RFC 5019 caching headers.
#[test]
fn cached_response_follows_a_status_change() {
    let Some(r) = Responder::needing(&["curl", "openssl"]) else {
        return;
    };
    let cert = r.issue("svc", &[]);
    let req = r.out.join("req.der");
    let int = r.intermediate();
    r.ocsp(&["-cert", s(&cert), "-no_nonce", "-reqout", s(&req)])
        .ok();
    let b64 = openssl_ok(&["base64", "-A", "-in", s(&req)]);
    let enc: String = b64
        .trim()
        .chars()
        .map(|c| match c {
            '+' => "%2B".to_string(),
            '/' => "%2F".to_string(),
            '=' => "%3D".to_string(),
            c => c.to_string(),
        })
        .collect();
    let get_url = format!("{}/{}", r.url, enc);
    let resp = r.out.join("resp.der");
    let get = |verdict_of: &str| -> String {
        let head = Command::new("curl")
            .args(["-sS", "-D", "-", "-o", s(&resp), &get_url])
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
        let root = r.srv.root();
        let v = openssl(&[
            "ocsp",
            "-respin",
            s(&resp),
            "-issuer",
            &int,
            "-cert",
            s(&cert),
            "-CAfile",
            s(&root),
        ]);
        let t = verdict(&v);
        assert!(t.contains("Response verify OK"), "{t}");
        assert!(t.contains(&format!("svc.pem: {verdict_of}")), "{t}");
        head
    };
    let first = get("good");
    assert!(
        first.contains("content-type: application/ocsp-response"),
        "{first}"
    );
    assert!(first.contains("cache-control: max-age="), "{first}");
    assert!(
        first.contains("public, no-transform, must-revalidate"),
        "{first}"
    );
    assert!(
        first.contains("last-modified:") && first.contains("expires:"),
        "{first}"
    );
    let second = get("good");
    let etag = |h: &str| {
        h.lines()
            .find(|l| l.starts_with("etag:"))
            .map(str::to_string)
    };
    assert_eq!(etag(&first), etag(&second), "the same pre-signed response");
    r.revoke(&cert, "superseded");
    let third = get("revoked");
    assert_ne!(etag(&first), etag(&third));
    let log = r.srv.log_text();
    assert!(log.contains("result=\"good\" cached=true"), "{log}");
    assert!(log.contains("result=\"revoked\" cached=false"), "{log}");
    // Counted by result and cache use.
    let metrics = Command::new("curl")
        .args(["-sS", "--cacert", s(&r.srv.root())])
        .arg(format!("{}/metrics", r.srv.url()))
        .output()
        .unwrap();
    let m = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        m.contains(r#"mutual_ca_ocsp_responses_total{result="good",cached="true"} 1"#),
        "{m}"
    );
}

/// Garbage in, `malformedRequest` out (HTTP 200, as RFC 6960 §2.3 wants), on both listeners;
/// the wrong method is a plain 405.
#[test]
fn malformed_requests_get_malformed_request_not_500() {
    let Some(r) = Responder::needing(&["curl", "openssl"]) else {
        return;
    };
    let https = format!("{}/ocsp", r.srv.url());
    let root = r.srv.root();
    let big = r.out.join("big.bin");
    std::fs::write(&big, vec![0x30u8; 9000]).unwrap();
    let big_arg = format!("@{}", s(&big));
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "garbage POST",
            vec!["--data-binary".into(), "not der".into(), r.url.clone()],
        ),
        (
            "empty POST",
            vec!["--data-binary".into(), "".into(), r.url.clone()],
        ),
        (
            "oversized POST",
            vec!["--data-binary".into(), big_arg, r.url.clone()],
        ),
        ("bad base64 GET", vec![format!("{}/%%%%", r.url)]),
        ("truncated GET", vec![format!("{}/MAMCAQ", r.url)]),
        ("empty GET", vec![format!("{}/", r.url)]),
        (
            "garbage POST over HTTPS",
            vec![
                "--cacert".into(),
                s(&root).into(),
                "--data-binary".into(),
                "\x30\x03\x02\x01".into(),
                https.clone(),
            ],
        ),
    ];
    let body = r.out.join("body.der");
    for (what, args) in cases {
        let o = Command::new("curl")
            .args([
                "-sS",
                "-o",
                s(&body),
                "-w",
                "%{http_code}",
                "-H",
                "content-type: application/ocsp-request",
            ])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{what}");
        assert_eq!(
            std::fs::read(&body).unwrap(),
            [0x30, 0x03, 0x0a, 0x01, 0x01],
            "{what}: malformedRequest"
        );
        // And openssl reads it as such.
        let t = verdict(&openssl(&["ocsp", "-respin", s(&body), "-noverify"]));
        assert!(
            t.contains("Responder Error: malformedrequest (1)"),
            "{what}: {t}"
        );
    }
    let o = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            &r.url,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "405");
    let log = r.srv.log_text();
    assert!(log.contains("result=\"malformedRequest\""), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// nginx checks client certificates with `ssl_ocsp` through our responder: the good client gets
/// through, the revoked one is refused (nginx: `certificate revoked`, HTTP 400).
#[test]
fn nginx_ssl_ocsp_accepts_good_client_refuses_revoked() {
    let Some(r) = Responder::needing(&["nginx", "curl"]) else {
        return;
    };
    let server = r.issue("server", LOCALHOST_SERVER);
    let good = r.issue("alice", &[]);
    let bad = r.issue("mallory", &[]);
    r.revoke(&bad, "key-compromise");
    let root = r.srv.root();
    // `leaf`: the intermediate is the root's to vouch for, and the root key stays offline.
    let ssl = format!(
        "  ssl_certificate {};\n  ssl_certificate_key {};\n  ssl_client_certificate {};\n  \
         ssl_verify_client on;\n  ssl_verify_depth 2;\n  ssl_ocsp leaf;\n  \
         ssl_ocsp_responder {};\n",
        s(&server),
        s(&r.out.join("server.key")),
        s(&root),
        r.url
    );
    let (_nginx, port, dir) = mutual_test::nginx_tls(&ssl);
    let curl = |who: &str| -> (String, String) {
        let o = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "--cacert", s(&root)])
            .args(["--cert", s(&r.out.join(format!("{who}.pem")))])
            .args(["--key", s(&r.out.join(format!("{who}.key")))])
            .arg(format!("https://127.0.0.1:{port}/"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let code = out.lines().last().unwrap_or_default().to_string();
        (code, out)
    };
    let (code, out) = curl("alice");
    assert_eq!(code, "200", "good client: {out}");
    let (code, out) = curl("mallory");
    assert_eq!(code, "400", "revoked client: {out}");
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap();
    assert!(
        log.contains("client SSL certificate verify error: certificate revoked"),
        "{log}"
    );
    let _ = good;
    let srv_log = r.srv.log_text();
    assert!(
        srv_log.contains("method=GET path=\"/ocsp\" result=\"revoked\""),
        "{srv_log}"
    );
}

#[path = "proxy_common/mod.rs"]
#[allow(unused)]
mod proxy_common;

/// `openssl s_client -status` against `mutual serve` as client `who`; its whole output.
fn s_client_status(r: &Responder, port: u16, who: &str) -> String {
    let root = r.srv.root();
    let cert = r.out.join(format!("{who}.pem"));
    let key = r.out.join(format!("{who}.key"));
    let mut c = Command::new("timeout");
    c.args(["30", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-servername",
            "localhost",
            "-status",
            "-verify_return_error",
        ])
        .args(["-CAfile", s(&root), "-cert", s(&cert), "-key", s(&key)])
        .args(["-cert_chain", s(&cert)]);
    let out = mutual_test::output_with_stdin(&mut c, b"GET / HTTP/1.0\r\n\r\n");
    mutual_test::output_text(&out)
}

/// `mutual serve --ocsp-staple` fetches the status of its own certificate from the responder in
/// its AIA and staples it; an unreachable responder means no staple (and a log line), never a
/// refused handshake.
#[test]
fn serve_staples_ocsp_for_its_own_certificate() {
    let Some(r) = Responder::needing(&["openssl"]) else {
        return;
    };
    let server = r.issue("server", LOCALHOST_SERVER);
    r.issue("alice", &[]);
    let root = r.srv.root();
    let backend = proxy_common::http_backend();
    let args = proxy_common::tls_args(
        &server,
        &r.out.join("server.key"),
        &root,
        &["--allow-any", "--ocsp-staple"],
    );
    let proxy = proxy_common::spawn_proxy("serve", "--backend", &backend.addr.to_string(), &args);
    proxy.wait_stderr("OCSP staple refreshed");
    proxy.wait_stderr("new TLS configuration and policy in use");
    let t = s_client_status(&r, proxy.port, "alice");
    assert!(t.contains("OCSP Response Status: successful"), "{t}");
    assert!(t.contains("Cert Status: good"), "{t}");
    let serial = x509(&server, &["-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=");
    assert!(
        t.contains(&format!("Serial Number: {serial}")),
        "the staple is about our certificate: {t}"
    );
    assert!(t.contains("Verify return code: 0 (ok)"), "{t}");
    let log = r.srv.log_text();
    assert!(
        log.contains("method=POST path=\"/ocsp\" result=\"good\""),
        "{log}"
    );

    // A responder that does not answer: no staple, the handshake still succeeds.
    let dead = format!("http://127.0.0.1:{}/ocsp", free_port());
    let args = proxy_common::tls_args(
        &server,
        &r.out.join("server.key"),
        &root,
        &["--allow-any", "--ocsp-staple-url", &dead],
    );
    let proxy = proxy_common::spawn_proxy("serve", "--backend", &backend.addr.to_string(), &args);
    proxy.wait_stderr("OCSP staple not refreshed");
    let t = s_client_status(&r, proxy.port, "alice");
    assert!(t.contains("OCSP response: no response sent"), "{t}");
    assert!(t.contains("Verify return code: 0 (ok)"), "{t}");
}
