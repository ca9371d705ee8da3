//! Regression tests for issue 13, items 3 and 8: the probe must not call a failure a pass, and
//! `mutual cert verify` must give a verdict (exit 1, a reason label and a sentence) for a
//! certificate that is readable but invalid, keeping exit 2 for input that is not a certificate.
//!
//! The malformed certificates are made with openssl and, where openssl will not write the
//! defect, by editing the DER of a good one and signing the edited part again with the CA key
//! (`openssl dgst -sign`), so that the defect is the only thing wrong with each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
mod pki_common;

use mutual_test::{
    free_port, openssl_s_server, skip_without, wait_for_port, ChildGuard, Leaf, LeafOpts, TestPki,
};
use pki_common::{mutual_pw, mutual_within, Out};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Item 8: `cert verify` on readable but invalid certificates.
// ---------------------------------------------------------------------------------------------

fn openssl(args: &[&str], dir: &Path) {
    mutual_test::output_ok(Command::new("openssl").args(args).current_dir(dir));
}

/// One DER TLV: (tag, header length, content length).
fn tlv(b: &[u8]) -> (u8, usize, usize) {
    let tag = b[0];
    let l = b[1];
    if l < 0x80 {
        return (tag, 2, usize::from(l));
    }
    let n = usize::from(l & 0x7f);
    let len = b[2..2 + n]
        .iter()
        .fold(0usize, |a, &x| (a << 8) | usize::from(x));
    (tag, 2 + n, len)
}

/// The TLVs inside a constructed value's content, each whole (header included).
fn children(content: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (_, h, l) = tlv(rest);
        out.push(rest[..h + l].to_vec());
        rest = &rest[h + l..];
    }
    out
}

fn content(whole: &[u8]) -> &[u8] {
    let (_, h, l) = tlv(whole);
    &whole[h..h + l]
}

fn enc(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

const ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
const ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
const SAN_OID: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x11];

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

struct Bad {
    dir: tempfile::TempDir,
}

impl Bad {
    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// Signs `tbs` with the CA key (digest `dgst`) under the outer algorithm `outer_alg`.
    fn sign(&self, tbs: &[u8], outer_alg: &[u8], dgst: &str) -> Vec<u8> {
        std::fs::write(self.path("tbs.der"), tbs).unwrap();
        openssl(
            &[
                "dgst", dgst, "-sign", "ca.key", "-out", "sig.der", "tbs.der",
            ],
            self.dir.path(),
        );
        let sig = std::fs::read(self.path("sig.der")).unwrap();
        let mut bits = vec![0u8];
        bits.extend(sig);
        let mut body = tbs.to_vec();
        body.extend_from_slice(outer_alg);
        body.extend(enc(0x03, &bits));
        enc(0x30, &body)
    }

    /// The good leaf's TBS with its extensions replaced by `f(extensions)`.
    fn edit_extensions(&self, f: impl Fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>) -> Vec<u8> {
        let good = std::fs::read(self.path("good.der")).unwrap();
        let parts = children(content(&good));
        let tbs_fields = children(content(&parts[0]));
        let mut out = Vec::new();
        for field in tbs_fields {
            if field[0] == 0xa3 {
                let exts = children(content(content(&field)));
                let new: Vec<u8> = f(exts).concat();
                out.extend(enc(0xa3, &enc(0x30, &new)));
            } else {
                out.extend(field);
            }
        }
        enc(0x30, &out)
    }
}

/// A CA and a good leaf (made with openssl), and each defect written next to them.
fn bad() -> &'static Bad {
    static B: OnceLock<Bad> = OnceLock::new();
    B.get_or_init(|| {
        let b = Bad {
            dir: tempfile::tempdir().unwrap(),
        };
        let d = b.dir.path();
        std::fs::write(
            d.join("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )
        .unwrap();
        // A P-256 private key at `name` in the work dir.
        let ec_key = |name: &str| {
            let args = ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name];
            openssl(&args, d)
        };
        ec_key("ca.key");
        openssl(
            &[
                "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=Defects Root", "-days",
                "30", "-out", "ca.pem",
            ],
            d,
        );
        ec_key("leaf.key");
        openssl(
            &[
                "req", "-new", "-key", "leaf.key", "-subj", "/CN=leaf", "-out", "leaf.csr",
            ],
            d,
        );
        let issue = |ext: Option<&str>, out: &str| {
            let mut args = vec![
                "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days",
                "2", "-sha256", "-out", out,
            ];
            if let Some(e) = ext {
                args.extend(["-extfile", e]);
            }
            openssl(&args, d);
        };
        std::fs::write(
            d.join("good.ext"),
            "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:leaf.test\n",
        )
        .unwrap();
        issue(Some("good.ext"), "good.pem");
        openssl(
            &[
                "x509", "-in", "good.pem", "-outform", "der", "-out", "good.der",
            ],
            d,
        );
        // v1: openssl x509 -req without extensions writes a version 1 certificate.
        issue(None, "v1.pem");
        std::fs::write(
            d.join("crit.ext"),
            "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:leaf.test\n1.3.6.1.4.1.55555.1=critical,ASN1:UTF8String:must-understand\n",
        )
        .unwrap();
        issue(Some("crit.ext"), "critical.pem");
        // An address written as a dNSName (what other CAs let through; ours refuses it).
        std::fs::write(
            d.join("dnsip.ext"),
            "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:10.0.0.1\n",
        )
        .unwrap();
        issue(Some("dnsip.ext"), "dnsip.pem");

        // Trailing data: two bytes after the certificate, as DER and inside PEM.
        let mut trailing = std::fs::read(d.join("good.der")).unwrap();
        trailing.extend([0x00, 0x00]);
        std::fs::write(d.join("trailing.der"), &trailing).unwrap();
        std::fs::write(d.join("trailing.pem"), pem(&trailing)).unwrap();

        // The subjectAltName extension twice.
        let tbs = b.edit_extensions(|mut exts| {
            let san = exts
                .iter()
                .find(|e| content(e).starts_with(SAN_OID))
                .unwrap()
                .clone();
            exts.push(san);
            exts
        });
        std::fs::write(d.join("duplicate.pem"), pem(&b.sign(&tbs, ECDSA_SHA256, "-sha256")))
            .unwrap();

        // A subjectAltName whose dNSName claims more bytes than there are.
        let tbs = b.edit_extensions(|exts| {
            exts.into_iter()
                .map(|e| {
                    if content(&e).starts_with(SAN_OID) {
                        // SEQUENCE { [2] length 9, 3 bytes }
                        let broken = [0x30, 0x05, 0x82, 0x09, b'a', b'.', b'b'];
                        let mut c = SAN_OID.to_vec();
                        c.extend(enc(0x04, &broken));
                        enc(0x30, &c)
                    } else {
                        e
                    }
                })
                .collect()
        });
        std::fs::write(d.join("badsan.pem"), pem(&b.sign(&tbs, ECDSA_SHA256, "-sha256")))
            .unwrap();

        // The signed part says ecdsa-with-SHA256, the outer algorithm ecdsa-with-SHA384 (and the
        // signature really is SHA-384: only the mismatch is wrong).
        let tbs = b.edit_extensions(|exts| exts);
        std::fs::write(
            d.join("sigmismatch.pem"),
            pem(&b.sign(&tbs, ECDSA_SHA384, "-sha384")),
        )
        .unwrap();
        // The same edit path without a defect: the control that must verify.
        std::fs::write(
            d.join("resigned.pem"),
            pem(&b.sign(&tbs, ECDSA_SHA256, "-sha256")),
        )
        .unwrap();
        std::fs::write(d.join("garbage.pem"), "this is not a certificate\n").unwrap();
        std::fs::write(d.join("garbage.der"), [0x30, 0x82, 0xff, 0xff, 0x01]).unwrap();
        // Valid DER, but a SEQUENCE { INTEGER 1 }: not shaped like a certificate at all.
        std::fs::write(d.join("notcert.der"), [0x30, 0x03, 0x02, 0x01, 0x01]).unwrap();
        b
    })
}

/// `mutual cert verify FILE --roots ca.pem ARGS...` on one of the crafted certificates.
fn verify_cmd(file: &str, args: &[&str]) -> Out {
    let b = bad();
    let (f, roots) = (b.path(file), b.path("ca.pem"));
    let mut a = vec!["cert", "verify", p(&f), "--roots", p(&roots)];
    a.extend_from_slice(args);
    mutual_pw(None, &a)
}

/// `verify_cmd` with `--json`: (exit code, report, stderr).
fn verify(file: &str) -> (i32, Value, String) {
    let out = verify_cmd(file, &["--json"]);
    let v = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out.code, v, out.stderr)
}

/// A certificate naming an address as a dNSName is name_mismatch for that address, and the
/// detail says why (an address matches only an IP SAN) instead of leaving the reader to find
/// the address "in" the certificate.
#[test]
fn an_address_written_as_a_dns_name_is_explained() {
    let out = verify_cmd("dnsip.pem", &["--name", "10.0.0.1", "--json"]);
    assert_eq!(out.code, 1, "{}", out.text());
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["reason"], "name_mismatch", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains(
            "it names 10.0.0.1 as a DNS name; an address matches only an IP SAN, ip:10.0.0.1"
        ),
        "{v}"
    );
}

#[test]
fn verify_control_certificates_are_valid() {
    for f in ["good.pem", "good.der", "resigned.pem"] {
        let (code, v, err) = verify(f);
        assert_eq!(code, 0, "{f}: {v:#} {err}");
        assert_eq!(v["reason"], "ok", "{f}");
    }
}

#[test]
fn verify_readable_invalid_certificates_exit_1_malformed() {
    let cases = [
        ("trailing.der", "data after the end"),
        ("trailing.pem", "data after the end"),
        ("critical.pem", "critical extension"),
        ("v1.pem", "v1"),
        ("duplicate.pem", "appears twice"),
        ("badsan.pem", "subjectAltName"),
        ("sigmismatch.pem", "signature algorithm"),
    ];
    for (file, words) in cases {
        let (code, v, err) = verify(file);
        assert_eq!(code, 1, "{file}: exit {code}, stdout {v:#}, stderr {err}");
        assert_eq!(v["valid"], false, "{file}");
        assert_eq!(v["reason"], "malformed", "{file}: {v:#}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(words), "{file}: detail {detail:?}");
        assert!(!v["hint"].as_str().unwrap().is_empty());
        // The readable form says the same: a verdict, not an error.
        let out = verify_cmd(file, &[]);
        assert_eq!(out.code, 1, "{file}");
        let text = out.stdout;
        assert!(text.starts_with("invalid: malformed"), "{file}: {text}");
    }
}

#[test]
fn verify_missing_or_non_certificate_input_exits_2() {
    for file in [
        "garbage.pem",
        "garbage.der",
        "notcert.der",
        "no-such-file.pem",
    ] {
        let out = verify_cmd(file, &[]);
        assert_eq!(out.code, 2, "{file}");
        let err = out.stderr;
        assert!(err.contains(file), "{file}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 3: the probe against servers that refuse after the handshake (3a) and servers that ask
// for a certificate but take any (3b).
// ---------------------------------------------------------------------------------------------

struct Pki {
    good: TestPki,
    server: Leaf,
    client: Leaf,
}

fn pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(|| {
        let good = TestPki::new("Probe");
        let server = good.leaf("server", LeafOpts::localhost_server());
        let client = good.leaf(
            "client",
            LeafOpts::new("client-a").san("uri:spiffe://example.org/client-a"),
        );
        Pki {
            good,
            server,
            client,
        }
    })
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn target(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Runs the real binary under a bound (a hang fails the test instead of stalling it).
fn bounded(args: &[&str], limit: Duration) -> (i32, String, String) {
    let o = mutual_within(args, limit);
    (o.code, o.stdout, o.stderr)
}

/// `mutual probe --json` against `port` with the good CA, plus `extra`.
fn probe(port: u16, extra: &[&str]) -> (i32, Value) {
    let t = target(port);
    let mut args = vec![
        "probe",
        "--json",
        "--timeout",
        "5s",
        &t,
        "--server-name",
        "localhost",
        "--ca",
        p(&pki().good.root),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = bounded(&args, Duration::from_secs(60));
    let v = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("no JSON from {args:?}: {e}\n{out}\n{err}"));
    (code, v)
}

/// The readable report of `mutual probe` against `port` with the good CA, plus `extra`:
/// (exit code, stdout).
fn probe_text(port: u16, extra: &[&str]) -> (i32, String) {
    let t = target(port);
    let mut args = vec!["probe", &t, "--server-name", "localhost"];
    args.extend(["--ca", p(&pki().good.root)]);
    args.extend_from_slice(extra);
    let (code, out, _) = bounded(&args, Duration::from_secs(60));
    (code, out)
}

fn with_client() -> Vec<&'static str> {
    let f = pki();
    vec!["--cert", p(&f.client.cert), "--key", p(&f.client.key)]
}

/// A backend that accepts and holds connections open.
fn holding_backend() -> u16 {
    let addr = mutual_test::tcp_server(|mut s| {
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    addr.port()
}

/// `mutual serve` in front of a holding backend, with `policy` flags and an audit log file.
fn serve(policy: &[&str], http: bool) -> (ChildGuard, u16, PathBuf, tempfile::TempDir) {
    let f = pki();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let backend = holding_backend();
    for _ in 0..3 {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mutual"));
        cmd.args(["serve", "--listen", &target(port)])
            .args(["--backend", &target(backend)])
            .args(["--cert", p(&f.server.cert), "--key", p(&f.server.key)])
            .args(["--ca", p(&f.good.root), "--audit-log", p(&audit)])
            .args(policy)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if http {
            cmd.arg("--http");
        }
        let guard = ChildGuard(cmd.spawn().unwrap());
        if wait_for_port(addr(port), Duration::from_secs(20)) {
            return (guard, port, audit, dir);
        }
    }
    panic!("mutual serve did not start");
}

/// Waits (bounded) for an audit line with this result and reason.
fn audit_line(audit: &Path, result: &str, reason: &str) -> Value {
    mutual_test::eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(audit)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["result"] == result && v["reason"] == reason)
    })
    .unwrap_or_else(|| {
        panic!(
            "no audit line {result}/{reason}: {}",
            std::fs::read_to_string(audit).unwrap_or_default()
        )
    })
}

/// The reason the probe must give for a server that refuses after the handshake: the alert's
/// label when it sends `access_denied`; `other` (with the detail saying the server closed right
/// after the handshake) when it just closes.
fn assert_refused_after_handshake(v: &Value) {
    assert_eq!(v["accepted"], false, "{v:#}");
    assert_eq!(v["client_cert"]["sent"], true, "{v:#}");
    match v["alert"].as_str() {
        Some("access_denied") => assert_eq!(v["reason"], "policy_denied", "{v:#}"),
        None => {
            assert_eq!(v["reason"], "other", "{v:#}");
            let d = v["accepted_detail"].as_str().unwrap();
            assert!(d.contains("closed the connection at once"), "{d}");
            assert!(v["hint"].as_str().unwrap().contains("policy"), "{v:#}");
        }
        Some(a) => panic!("unexpected alert {a}: {v:#}"),
    }
    assert!(
        v["verdict"].as_str().unwrap().starts_with("FAIL: "),
        "{v:#}"
    );
}

/// `mutual serve` (TCP, or `--http`) allowing only someone else, probed with the client
/// certificate once serve has audited the denial: (serve, its dir, port, exit code, report).
fn probe_denied_by_policy(http: bool) -> (ChildGuard, tempfile::TempDir, u16, i32, Value) {
    let other = ["--allow-spiffe", "spiffe://example.org/someone-else"];
    let (s, port, audit, d) = serve(&other, http);
    let (code, v) = probe(port, &with_client());
    audit_line(&audit, "denied", "policy_denied");
    (s, d, port, code, v)
}

#[test]
fn probe_policy_denial_is_not_accepted() {
    let (_s, _d, port, code, v) = probe_denied_by_policy(false);
    assert_refused_after_handshake(&v);
    assert_eq!(code, 1, "{v:#}");
    // The endpoint itself does enforce mTLS.
    assert_eq!(v["client_auth"], "required", "{v:#}");
    assert_eq!(v["enforced"], true, "{v:#}");

    // The readable report says "no", not "yes".
    let (code, out) = probe_text(port, &with_client());
    assert_eq!(code, 1, "{out}");
    let accepted = out
        .lines()
        .find(|l| l.trim_start().starts_with("accepted"))
        .unwrap();
    assert!(accepted.contains("no ("), "{out}");
    assert!(out.contains("\nFAIL: "), "{out}");
}

#[test]
fn probe_http_mode_policy_denial_is_policy_denied() {
    let (_s, _d, _, code, v) = probe_denied_by_policy(true);
    assert_eq!(v["accepted"], false, "{v:#}");
    assert_eq!(v["reason"], "policy_denied", "{v:#}");
    assert_eq!(code, 1);
}

#[test]
fn probe_allowed_identity_is_accepted_and_enforced() {
    let (_s, port, audit, _d) = serve(&["--allow-spiffe", "spiffe://example.org/client-a"], false);
    let (code, v) = probe(port, &with_client());
    assert_eq!(v["accepted"], true, "{v:#}");
    assert_eq!(v["reason"], "ok");
    assert_eq!(v["client_auth"], "required");
    assert_eq!(v["enforced"], true);
    assert_eq!(v["untrusted_cert"]["accepted"], false, "{v:#}");
    assert_eq!(v["untrusted_cert"]["alert"], "unknown_ca", "{v:#}");
    assert_eq!(code, 0, "{v:#}");
    audit_line(&audit, "allowed", "ok");
}

/// openssl s_server with the good server certificate; `extra` picks the client-auth mode.
fn s_server(extra: &[&str]) -> (ChildGuard, u16) {
    let f = pki();
    openssl_s_server(&f.good, &f.server, extra)
}

#[test]
fn probe_server_accepting_unknown_ca_is_not_enforced() {
    if skip_without("openssl") {
        return;
    }
    // -Verify 1 refuses a client without a certificate, but without -verify_return_error it
    // lets any certificate in.
    let (_s, port) = s_server(&["-Verify", "1"]);
    let (code, v) = probe(port, &[]);
    assert_eq!(v["client_auth"], "not_enforced", "{v:#}");
    assert_eq!(v["enforced"], false, "{v:#}");
    assert_eq!(v["untrusted_cert"]["accepted"], true, "{v:#}");
    assert_eq!(v["anonymous_alert"], "certificate_required", "{v:#}");
    assert!(v["verdict"]
        .as_str()
        .unwrap()
        .contains("accepted a client certificate from an unknown CA"));
    assert_eq!(code, 1, "{v:#}");
    // Even the right certificate cannot make it pass: the check is the server's, not ours.
    let (code, v) = probe(port, &with_client());
    assert_eq!(v["accepted"], true, "{v:#}");
    assert_eq!(v["client_auth"], "not_enforced");
    assert_eq!(code, 1);
    // The readable report says so.
    let (code, out) = probe_text(port, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("not enforced"), "{out}");
}

#[test]
fn probe_server_verifying_clients_is_enforced() {
    if skip_without("openssl") {
        return;
    }
    let (_s, port) = s_server(&["-Verify", "1", "-verify_return_error"]);
    let (code, v) = probe(port, &[]);
    assert_eq!(v["client_auth"], "required", "{v:#}");
    assert_eq!(v["enforced"], true, "{v:#}");
    assert_eq!(v["untrusted_cert"]["accepted"], false, "{v:#}");
    assert_eq!(v["untrusted_cert"]["alert"], "unknown_ca", "{v:#}");
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn probe_mutual_serve_is_enforced() {
    let (_s, port, _audit, _d) = serve(&["--allow-any"], false);
    let (code, v) = probe(port, &[]);
    assert_eq!(v["client_auth"], "required", "{v:#}");
    assert_eq!(v["enforced"], true, "{v:#}");
    assert_eq!(v["untrusted_cert"]["accepted"], false, "{v:#}");
    assert_eq!(code, 0, "{v:#}");
}
