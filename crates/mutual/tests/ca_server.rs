//! The online CA (`mutual ca serve`) against real clients: curl over HTTPS (with and without
//! client certificates), CSRs from `openssl req`, chains checked with `openssl verify`, CRLs
//! read with `openssl crl`, tokens from `mutual token create`, the inventory read back with
//! `mutual cert list --json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mutual_test::eventually;
use pki_common::*;

/// A running `mutual ca serve` on a fresh CA.
struct Online {
    ca: TestCa,
    srv: CaServe,
}

impl Online {
    fn start(init: &[&str], extra: &[&str]) -> Online {
        let ca = TestCa::new(init);
        let srv = CaServe::start_new(&ca.dir, ca.tmp.path().join("server.log"), extra);
        Online { ca, srv }
    }

    /// Starts the server again after `stop`, on the same port.
    fn spawn(&mut self) {
        self.srv.start();
    }

    /// SIGTERM, and the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        self.srv.terminate()
    }

    fn log_text(&self) -> String {
        self.srv.log_text()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.srv.port)
    }

    fn p(&self, name: &str) -> PathBuf {
        self.ca.tmp.path().join(name)
    }

    /// curl with our root as the only trust anchor; `args` go before the URL.
    fn curl(&self, path: &str, args: &[&str]) -> Reply {
        let root = self.ca.root();
        let mut c = Command::new("curl");
        c.args(["-sS", "-i", "--max-time", "20", "--cacert", &root])
            .args(args)
            .arg(self.url(path));
        let o = c.stdin(Stdio::null()).output().unwrap();
        Reply::parse(&o.stdout, &String::from_utf8_lossy(&o.stderr))
    }

    /// POST a JSON value.
    fn post(&self, path: &str, body: &serde_json::Value, args: &[&str]) -> Reply {
        let a = json_post_args(self.ca.tmp.path(), body, args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.curl(path, &a)
    }

    /// POST /v1/sign with this CSR (PEM) and token.
    fn sign(&self, csr: &str, token: &str) -> Reply {
        let body = serde_json::json!({"csr": csr, "token": token});
        self.post("/v1/sign", &body, &[])
    }

    /// `mutual token create ... --json`: (token, jti).
    fn token(&self, args: &[&str]) -> (String, String) {
        let mut a = vec!["token", "create", "--dir", self.ca.d(), "--json"];
        a.extend_from_slice(args);
        let o = mutual(&a).ok();
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        (
            v["token"].as_str().unwrap().to_string(),
            v["jti"].as_str().unwrap().to_string(),
        )
    }

    /// A key and CSR made by `openssl req`, asking for `sans` (openssl syntax, may be empty).
    fn csr(&self, stem: &str, sans: &str) -> (PathBuf, String) {
        let key = self.p(&format!("{stem}.key"));
        let csr = self.p(&format!("{stem}.csr"));
        let pem = openssl_csr(&key, &csr, "/CN=ignored", sans);
        (key, pem)
    }

    /// Enrolls `stem` with a fresh token for `san` (dns:NAME): (cert chain path, key, serial).
    fn enroll(&self, stem: &str, name: &str) -> (PathBuf, PathBuf, String) {
        let (token, _) = self.token(&["--san", &format!("dns:{name}")]);
        let (key, csr) = self.csr(stem, &format!("DNS:{name}"));
        let r = self.sign(&csr, &token);
        r.expect(201);
        let chain = self.p(&format!("{stem}.pem"));
        std::fs::write(&chain, r.json()["certificate_chain"].as_str().unwrap()).unwrap();
        (chain, key, r.json()["serial"].as_str().unwrap().to_string())
    }

    fn count(&self) -> usize {
        self.ca.inventory().len()
    }

    fn record(&self, serial: &str) -> serde_json::Value {
        self.ca
            .inventory()
            .into_iter()
            .find(|r| r["serial"] == serial)
            .unwrap_or_else(|| panic!("serial {serial} not in the inventory"))
    }
}

/// Waits until the token's `exp` has passed on this clock (the CA checks `now >= exp` in whole
/// seconds, without leeway): the event itself, not a guess at how long it takes.
fn wait_token_expired(jwt: &str) {
    let payload = URL_SAFE_NO_PAD
        .decode(jwt.split('.').nth(1).unwrap())
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    wait_unix_secs(exp);
}

/// Waits until the clock reads at least `t` (Unix seconds).
fn wait_unix_secs(t: i64) {
    let now = || {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        i64::try_from(d.as_secs()).unwrap()
    };
    let done = eventually(Duration::from_secs(60), || (now() >= t).then_some(()));
    assert!(done.is_some(), "the clock never reached {t}");
}

fn unix_now() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(d.as_secs()).unwrap()
}

/// Waits until `openssl x509 -checkend 0` says the certificate has expired.
fn wait_cert_expired(pem: &std::path::Path) {
    let done = eventually(Duration::from_secs(60), || {
        let st = Command::new("openssl")
            .args(["x509", "-noout", "-checkend", "0", "-in"])
            .arg(pem)
            .status()
            .unwrap();
        (!st.success()).then_some(())
    });
    assert!(done.is_some(), "{} never expired", pem.display());
    // openssl counts notAfter itself as expired, webpki only the second after it.
    wait_unix_secs(unix_now() + 1);
}

/// An HTTP response as curl -i printed it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    curl_err: String,
}

impl Reply {
    fn parse(raw: &[u8], err: &str) -> Reply {
        let mut rest = raw;
        loop {
            let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Reply {
                    status: 0,
                    headers: vec![],
                    body: vec![],
                    curl_err: err.to_string(),
                };
            };
            let head = String::from_utf8_lossy(&rest[..end]).into_owned();
            let body = &rest[end + 4..];
            let mut lines = head.lines();
            let status: u16 = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if status == 100 {
                rest = body;
                continue;
            }
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return Reply {
                status,
                headers,
                body: body.to_vec(),
                curl_err: err.to_string(),
            };
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn expect(&self, status: u16) -> &Reply {
        assert_eq!(
            self.status,
            status,
            "body: {} curl: {}",
            String::from_utf8_lossy(&self.body),
            self.curl_err
        );
        self
    }

    /// Asserts a problem+json refusal with this status and reason label.
    fn problem(&self, status: u16, reason: &str) {
        self.expect(status);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let v = self.json();
        assert_eq!(v["reason"], reason, "{v}");
        assert_eq!(v["status"], status);
        assert_eq!(
            v["type"],
            format!("https://mutual.dev/problems/{reason}").as_str()
        );
    }
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn upper_serial(hex: &str) -> String {
    hex.to_ascii_uppercase()
}

#[test]
fn roots_sign_with_token_and_every_token_refusal() {
    let srv = Online::start(&[], &["--rate-limit", "off"]);
    let h = srv.curl("/health", &[]);
    h.expect(200);
    assert_eq!(h.json()["status"], "ok");

    // Roots over HTTPS, the server's certificate verified by curl against our root alone.
    let roots = srv.curl("/v1/roots", &[]);
    roots.expect(200);
    assert_eq!(roots.header("content-type"), Some("application/x-pem-file"));
    assert_eq!(
        String::from_utf8_lossy(&roots.body),
        std::fs::read_to_string(srv.ca.root()).unwrap()
    );

    // A token the CA would refuse to honour is refused when made (exit 2, the CA's label),
    // not at the device's enrollment.
    let o = mutual(&[
        "token",
        "create",
        "--dir",
        srv.ca.d(),
        "--json",
        "--san",
        "dns:*.internal",
    ]);
    assert_eq!(o.code, 2, "{}", o.text());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["error"]["reason"], "name_not_allowed", "{v}");
    // So is one for a certificate that would outlive the intermediate (before the password).
    mutual_pw(
        None,
        &[
            "token",
            "create",
            "--dir",
            srv.ca.d(),
            "--san",
            "dns:web.internal",
            "--ttl-cert",
            "100y",
        ],
    )
    .fails_with("--ttl-cert 100 y: a certificate cannot outlive the intermediate that issues it");

    // Sign: a token for two names, a CSR from openssl asking for one of them.
    let (token, jti) = srv.token(&[
        "--san",
        "dns:svc-a.internal",
        "--san",
        "dns:svc-a.alt.internal",
        "--ttl-cert",
        "2h",
    ]);
    let (_key, csr) = srv.csr("a", "DNS:svc-a.internal");
    let before = srv.count();
    let r = srv.sign(&csr, &token);
    r.expect(201);
    let v = r.json();
    let serial = v["serial"].as_str().unwrap().to_string();
    assert!(v["not_after"].as_str().unwrap().ends_with('Z'));
    assert!(v["not_before"].as_str().is_some());
    let chain = srv.p("a.pem");
    std::fs::write(&chain, v["certificate_chain"].as_str().unwrap()).unwrap();
    srv.ca.openssl_verify(&chain, "sslclient").ok();
    srv.ca.openssl_verify(&chain, "sslserver").ok();
    let text = openssl(&["x509", "-in", s(&chain), "-noout", "-text", "-serial"]).ok();
    assert!(
        text.stdout.contains("DNS:svc-a.internal"),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("svc-a.alt"), "only the requested SAN");
    assert!(text
        .stdout
        .contains(&format!("serial={}", upper_serial(&serial))));
    let rec = srv.record(&serial);
    assert_eq!(rec["requested_by"], format!("token:{jti}").as_str());
    assert_eq!(rec["sans"], serde_json::json!(["dns:svc-a.internal"]));
    assert_eq!(rec["usage"], "both");
    let life = rec["not_after_unix"].as_i64().unwrap() - rec["not_before_unix"].as_i64().unwrap();
    assert!((7200..=7200 + 301).contains(&life), "{life}");
    assert_eq!(srv.count(), before + 1);

    // An empty CSR SAN list means every SAN of the token.
    let (t_all, _) = srv.token(&["--san", "dns:b.internal", "--san", "ip:10.1.2.3"]);
    let (_k, csr_none) = srv.csr("b", "");
    let r = srv.sign(&csr_none, &t_all);
    r.expect(201);
    let rec = srv.record(r.json()["serial"].as_str().unwrap());
    assert_eq!(
        rec["sans"],
        serde_json::json!(["dns:b.internal", "ip:10.1.2.3"])
    );
    let n = srv.count();

    // Replay of a spent token.
    srv.sign(&csr, &token).problem(401, "token_used");
    assert_eq!(srv.count(), n);

    // A token for svc-a used to ask for svc-b; and a CSR asking for one name too many.
    let (t_a, jti_a) = srv.token(&["--san", "dns:svc-a.internal"]);
    let (_k, csr_b) = srv.csr("b2", "DNS:svc-b.internal");
    srv.sign(&csr_b, &t_a).problem(403, "name_not_allowed");
    let (_k, csr_ab) = srv.csr("ab", "DNS:svc-a.internal,DNS:svc-b.internal");
    srv.sign(&csr_ab, &t_a).problem(403, "name_not_allowed");
    assert_eq!(srv.count(), n);

    // Forged: payload edited (another SAN), signature kept.
    let parts: Vec<&str> = t_a.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sans"] = serde_json::json!(["dns:svc-b.internal"]);
    claims["sub"] = serde_json::json!("dns:svc-b.internal");
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    srv.sign(&csr_b, &edited).problem(401, "token_invalid");
    // alg none.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    srv.sign(&csr, &none).problem(401, "token_invalid");
    // Signed by another CA's provisioner key.
    let other = TestCa::new(&[]);
    let o = mutual(&[
        "token",
        "create",
        "--dir",
        other.d(),
        "--san",
        "dns:svc-a.internal",
    ])
    .ok();
    let foreign = o.stdout.trim().to_string();
    assert_eq!(foreign.split('.').count(), 3, "stdout is the JWT alone");
    srv.sign(&csr, &foreign).problem(401, "token_invalid");
    assert_eq!(srv.count(), n);

    // Expired.
    let (t_exp, _) = srv.token(&["--san", "dns:svc-a.internal", "--expires", "1s"]);
    wait_token_expired(&t_exp);
    srv.sign(&csr, &t_exp).problem(401, "token_expired");
    assert_eq!(srv.count(), n);

    // The refused token for svc-a was not spent: it still works for what it allows.
    let r = srv.sign(&csr, &t_a);
    r.expect(201);
    assert_eq!(
        srv.record(r.json()["serial"].as_str().unwrap())["requested_by"],
        format!("token:{jti_a}").as_str()
    );

    // Malformed requests.
    srv.post("/v1/sign", &serde_json::json!({"csr": "x"}), &[])
        .problem(400, "bad_request");
    let (t_bad, _) = srv.token(&["--san", "dns:svc-a.internal"]);
    srv.post(
        "/v1/sign",
        &serde_json::json!({"csr": "not a csr", "token": t_bad}),
        &[],
    )
    .problem(400, "bad_request");
    srv.curl("/v1/nope", &[]).problem(404, "not_found");

    // The log names requests but never a token.
    let log = srv.log_text();
    assert!(log.contains("/v1/sign"), "{log}");
    for t in [&token, &t_a, &t_all, &edited, &foreign, &t_bad] {
        assert!(!log.contains(t.as_str()), "a token leaked into the log");
        let sig = t.rsplit('.').next().unwrap();
        assert!(!log.contains(sig), "a token signature leaked into the log");
    }
    assert!(!log.contains(PW));
}

#[test]
fn renew_revoke_and_crl_over_mtls() {
    let srv = Online::start(
        &[],
        &["--rate-limit", "off", "--admin", "dns:admin.ops.internal"],
    );
    let (a_pem, a_key, a_serial) = srv.enroll("a", "svc-a.internal");
    let mtls = |pem: &Path, key: &Path| -> Vec<String> {
        vec![
            "--cert".into(),
            s(pem).into(),
            "--key".into(),
            s(key).into(),
        ]
    };

    // Renew without a body key: the presented key, same SANs, new serial.
    let a = mtls(&a_pem, &a_key);
    let r = srv.post("/v1/renew", &serde_json::json!({}), &args(&a));
    r.expect(201);
    let renewed = r.json()["serial"].as_str().unwrap().to_string();
    assert_ne!(renewed, a_serial);
    let old = srv.record(&a_serial);
    let new = srv.record(&renewed);
    assert_eq!(new["sans"], old["sans"]);
    assert_eq!(new["usage"], old["usage"]);
    assert_eq!(new["requested_by"], format!("renew:{a_serial}").as_str());
    let new_pem = srv.p("a-renewed.pem");
    std::fs::write(&new_pem, r.json()["certificate_chain"].as_str().unwrap()).unwrap();
    srv.ca.openssl_verify(&new_pem, "sslclient").ok();
    let pk = |p: &Path| {
        openssl(&["x509", "-in", s(p), "-noout", "-pubkey"])
            .ok()
            .stdout
    };
    assert_eq!(pk(&new_pem), pk(&a_pem), "renewal keeps the presented key");
    // Renewed certificate works for the next renewal, with a CSR (a new key this time).
    let (k2, csr2) = srv.csr("a2", "DNS:ignored.example");
    let r = srv.post(
        "/v1/renew",
        &serde_json::json!({"csr": csr2}),
        &args(&mtls(&new_pem, &a_key)),
    );
    r.expect(201);
    let a2_pem = srv.p("a2.pem");
    std::fs::write(&a2_pem, r.json()["certificate_chain"].as_str().unwrap()).unwrap();
    assert_ne!(pk(&a2_pem), pk(&a_pem));
    let a2_serial = r.json()["serial"].as_str().unwrap().to_string();
    assert_eq!(srv.record(&a2_serial)["sans"], old["sans"]);
    // A renewal with no body at all counts as `{}`.
    let mut no_body = vec!["-X", "POST"];
    let a2 = mtls(&a2_pem, &k2);
    no_body.extend(args(&a2));
    srv.curl("/v1/renew", &no_body).expect(201);

    // No client certificate.
    srv.post("/v1/renew", &serde_json::json!({}), &[])
        .problem(401, "no_client_cert");
    srv.post("/v1/revoke", &serde_json::json!({"serial": a_serial}), &[])
        .problem(401, "no_client_cert");

    // Revoked offline (`mutual cert revoke`): renewal refused, and /v1/crl lists it at once.
    let (b_pem, b_key, b_serial) = srv.enroll("b", "svc-b.internal");
    mutual(&["cert", "revoke", &b_serial, "--dir", srv.ca.d()]).ok();
    srv.post(
        "/v1/renew",
        &serde_json::json!({}),
        &args(&mtls(&b_pem, &b_key)),
    )
    .problem(403, "revoked");
    let crl = srv.curl("/v1/crl", &[]);
    crl.expect(200);
    assert_eq!(crl.header("content-type"), Some("application/pkix-crl"));
    let max_age: i64 = crl
        .header("cache-control")
        .and_then(|v| v.strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!((86_000..=86_400).contains(&max_age), "{max_age}");
    let crl_file = srv.p("crl.der");
    std::fs::write(&crl_file, &crl.body).unwrap();
    let crl_cmd = |args: &[&str]| {
        let mut a = vec!["crl", "-inform", "DER", "-in", s(&crl_file), "-noout"];
        a.extend_from_slice(args);
        openssl(&a).ok().stdout
    };
    let crl_text = || {
        std::fs::write(&crl_file, &srv.curl("/v1/crl", &[]).body).unwrap();
        crl_cmd(&["-text"])
    };
    let t = crl_text();
    assert!(t.contains(&upper_serial(&b_serial)), "{t}");
    // The CRL verifies against the intermediate.
    crl_cmd(&["-CAfile", &srv.ca.intermediate()]);

    // Revoke via the API: by another non-admin -> forbidden; by itself -> ok.
    let (c_pem, c_key, c_serial) = srv.enroll("c", "svc-c.internal");
    let c = mtls(&c_pem, &c_key);
    srv.post(
        "/v1/revoke",
        &serde_json::json!({"serial": a2_serial}),
        &args(&c),
    )
    .problem(403, "forbidden");
    assert_eq!(srv.record(&a2_serial)["status"], "valid");
    // certificateHold says a later CRL may lift it; nothing here ever does. A reason that is
    // none is the client's mistake too (it answered 500 internal).
    for reason in ["certificateHold", "keyCompromized"] {
        srv.post(
            "/v1/revoke",
            &serde_json::json!({"serial": c_serial, "reason": reason}),
            &args(&c),
        )
        .problem(400, "bad_request");
    }
    assert_eq!(srv.record(&c_serial)["status"], "valid");
    let r = srv.post(
        "/v1/revoke",
        &serde_json::json!({"serial": c_serial, "reason": "keyCompromise"}),
        &args(&c),
    );
    r.expect(200);
    assert_eq!(r.json()["revoked"], true);
    let rec = srv.record(&c_serial);
    assert_eq!(rec["status"], "revoked");
    assert_eq!(rec["reason"], "key-compromise");
    assert_eq!(rec["revoked_by"], "api-revoke:svc-c.internal", "{rec}");
    assert!(rec["requested_by"].as_str().unwrap().starts_with("token:"));
    // Once revoked it can do nothing more.
    srv.post("/v1/renew", &serde_json::json!({}), &args(&c))
        .problem(403, "revoked");

    // By an admin identity (issued offline by `mutual cert issue`), any serial, with colons.
    srv.ca
        .issue("admin", &["--san", "dns:admin.ops.internal"])
        .ok();
    let adm = mtls(&srv.ca.out.join("admin.pem"), &srv.ca.out.join("admin.key"));
    let colons: String = a2_serial
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let r = srv.post(
        "/v1/revoke",
        &serde_json::json!({"serial": colons, "reason": "superseded"}),
        &args(&adm),
    );
    r.expect(200);
    assert_eq!(r.json()["serial"], a2_serial.as_str());
    assert_eq!(
        srv.record(&a2_serial)["revoked_by"],
        "api-revoke:admin.ops.internal"
    );
    let t = crl_text();
    for s in [&b_serial, &c_serial, &a2_serial] {
        assert!(t.contains(&upper_serial(s)), "{s} not in {t}");
    }
    srv.post(
        "/v1/revoke",
        &serde_json::json!({"serial": "ab12"}),
        &args(&adm),
    )
    .problem(404, "not_found");
    srv.post(
        "/v1/revoke",
        &serde_json::json!({"serial": "zz"}),
        &args(&adm),
    )
    .problem(400, "bad_request");

    // Expired: a 2-second certificate, presented after it expired.
    srv.ca.issue("short", &["--ttl", "2s"]).ok();
    wait_cert_expired(&srv.ca.out.join("short.pem"));
    srv.post(
        "/v1/renew",
        &serde_json::json!({}),
        &args(&mtls(
            &srv.ca.out.join("short.pem"),
            &srv.ca.out.join("short.key"),
        )),
    )
    .problem(403, "expired");

    // A certificate from another CA does not get through the handshake.
    let other = TestCa::new(&[]);
    other.issue("stranger", &[]).ok();
    let r = srv.post(
        "/v1/renew",
        &serde_json::json!({}),
        &args(&mtls(
            &other.out.join("stranger.pem"),
            &other.out.join("stranger.key"),
        )),
    );
    assert_eq!(r.status, 0, "handshake should fail: {r:?}");
}

#[test]
fn restart_mid_traffic_loses_no_issued_certificate() {
    let mut srv = Online::start(&[], &["--rate-limit", "off"]);
    let (_k, csr) = srv.csr("loop", "");
    let tokens: Vec<(String, String)> = (0..24)
        .map(|i| srv.token(&["--san", &format!("dns:w{i}.internal")]))
        .collect();
    let mut issued: Vec<String> = Vec::new();
    let mut refused_after_restart = 0;
    let mut restarted = false;
    for (i, (token, _)) in tokens.iter().enumerate() {
        if i == 10 {
            // Stop in the middle of traffic: a request races with the signal.
            let body = serde_json::json!({"csr": csr, "token": token});
            let racer = {
                let f = srv.p("race.json");
                std::fs::write(&f, serde_json::to_vec(&body).unwrap()).unwrap();
                Command::new("curl")
                    .args(["-sS", "--max-time", "20", "--cacert", &srv.ca.root()])
                    .args(["-H", "content-type: application/json"])
                    .args(["--data-binary", &format!("@{}", s(&f))])
                    .args(["-w", "\n%{http_code}"])
                    .arg(srv.url("/v1/sign"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            };
            let status = srv.stop();
            assert!(status.success(), "graceful stop exits 0: {status:?}");
            let out = racer.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.trim_end().ends_with("201") {
                let v: serde_json::Value =
                    serde_json::from_str(text.trim_end().rsplit_once('\n').unwrap().0).unwrap();
                issued.push(v["serial"].as_str().unwrap().to_string());
            }
            srv.spawn();
            restarted = true;
        }
        let r = srv.sign(&csr, token);
        match r.status {
            201 => issued.push(r.json()["serial"].as_str().unwrap().to_string()),
            // The racer may have spent this token before the stop.
            401 if i == 10 => {
                r.problem(401, "token_used");
                refused_after_restart += 1;
            }
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    assert!(restarted);
    assert!(refused_after_restart <= 1);
    let inv = srv.ca.inventory();
    let serials: Vec<&str> = inv.iter().map(|r| r["serial"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = serials.iter().copied().collect();
    assert_eq!(unique.len(), serials.len(), "a serial was reused");
    let issued_set: HashSet<&str> = issued.iter().map(String::as_str).collect();
    assert_eq!(
        issued_set.len(),
        issued.len(),
        "a 201 serial was handed out twice"
    );
    for s in &issued {
        assert!(
            unique.contains(s.as_str()),
            "201 serial {s} is not in the inventory"
        );
    }
    // Every token-paid row corresponds to a 201 the client saw (the racer's included).
    let token_rows = inv
        .iter()
        .filter(|r| {
            r["requested_by"]
                .as_str()
                .unwrap_or("")
                .starts_with("token:")
        })
        .count();
    assert_eq!(token_rows, issued.len(), "{inv:?}");
    assert_eq!(issued.len(), 24);
    // Two server certificates, one per start.
    let own = inv
        .iter()
        .filter(|r| r["requested_by"] == "ca-serve")
        .count();
    assert_eq!(own, 2);
    assert!(srv.log_text().contains("stopped"));
}

#[test]
fn flood_is_rate_limited_and_big_bodies_refused() {
    // 3 per minute, burst 6: the arithmetic below holds however slowly this machine runs
    // the 16 curls (one token comes back every 20 s).
    let srv = Online::start(&[], &["--rate-limit", "3/m"]);
    let post_file = |file: &Path, chunked: bool| {
        let arg = format!("@{}", s(file));
        let mut a = vec!["-X", "POST", "-H", "content-type: application/json"];
        if chunked {
            a.extend_from_slice(&["-H", "transfer-encoding: chunked"]);
        }
        a.extend_from_slice(&["--data-binary", &arg]);
        srv.curl("/v1/sign", &a)
    };
    // 100 KiB body: 413, with Content-Length and chunked (no length announced).
    let big = srv.p("big.json");
    let pad = "A".repeat(100 * 1024);
    std::fs::write(&big, format!(r#"{{"csr":"{pad}","token":"x"}}"#)).unwrap();
    post_file(&big, false).problem(413, "body_too_large");
    post_file(&big, true).problem(413, "body_too_large");

    // A flood of CSR requests from one IP: 4 tokens left in the bucket.
    let garbage = srv.p("garbage.json");
    std::fs::write(&garbage, br#"{"csr":"x","token":"a.b.c"}"#).unwrap();
    let data = format!("@{}", s(&garbage));
    let root = srv.ca.root();
    let url = srv.url("/v1/sign");
    let results: Vec<(u16, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                sc.spawn(|| {
                    let o = Command::new("curl")
                        .args(["-sS", "-o", "/dev/null", "--max-time", "20"])
                        .args(["--cacert", &root, "-H", "content-type: application/json"])
                        .args(["--data-binary", &data])
                        .args(["-w", "%{http_code} %header{retry-after}"])
                        .arg(&url)
                        .output()
                        .unwrap();
                    let t = String::from_utf8_lossy(&o.stdout).into_owned();
                    let (code, ra) = t.split_once(' ').unwrap_or((&t, ""));
                    (code.parse().unwrap_or(0), ra.trim().to_string())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let limited: Vec<_> = results.iter().filter(|(c, _)| *c == 429).collect();
    let passed = results.iter().filter(|(c, _)| *c == 401).count();
    assert_eq!(limited.len() + passed, results.len(), "{results:?}");
    assert!((4..=6).contains(&passed), "{results:?}");
    for (_, ra) in &limited {
        let secs: u64 = ra.parse().unwrap_or_else(|_| panic!("Retry-After {ra:?}"));
        assert!((1..=20).contains(&secs), "{ra}");
    }
    let r = srv.curl("/v1/roots", &[]);
    r.problem(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
    // The server still answers, and liveness is not throttled.
    srv.curl("/health", &[]).expect(200);
    assert_eq!(srv.count(), 1, "only the server's own certificate");
}

#[test]
fn server_certificate_rotates_itself_at_two_thirds() {
    // 6 s certificates: the replacement comes ~4 s after start.
    let srv = Online::start(&[], &["--server-cert-ttl", "6s", "--san", "dns:localhost"]);
    let presented = || {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect 127.0.0.1:{} -servername localhost </dev/null \
                 2>/dev/null | openssl x509 -noout -serial",
                srv.srv.port
            ))
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stdout).trim().to_string();
        t.strip_prefix("serial=").map(|s| s.to_ascii_lowercase())
    };
    let first = presented().expect("no server certificate");
    let second = eventually(Duration::from_secs(60), || {
        presented().filter(|s| *s != first)
    })
    .expect("the server certificate was not rotated");
    for s in [&first, &second] {
        assert_eq!(srv.record(s)["requested_by"], "ca-serve");
        assert_eq!(srv.record(s)["usage"], "server");
    }
    // Clients verifying against the root keep working across the rotation.
    srv.curl("/health", &[]).expect(200);
    let logged = eventually(Duration::from_secs(60), || {
        srv.log_text()
            .contains("server certificate rotated")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", srv.log_text());
}
