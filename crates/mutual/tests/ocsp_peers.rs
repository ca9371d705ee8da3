//! OCSP checking of peers (docs/ocsp.md "Checking peers"): `mutual serve --ocsp-from-aia` asks
//! the responder named in each client certificate's AIA, and `mutual connect --ocsp` the one in
//! the server's. The responders are real: `mutual ca serve --ocsp-listen` (answers from the
//! inventory, so `mutual cert revoke` changes them at once) and `openssl ocsp -index` (an
//! independent implementation). Clients are curl and the real `mutual connect`; the revoked
//! server is `openssl s_server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;
mod proxy_common;

use std::path::PathBuf;

use mutual_test::{eventually, free_port, skip_without, Leaf};
use pki_common::*;
use proxy_common::{
    curl, http_backend, is_line, spawn_proxy, through, tls_args, Proxy, EVENT_TIMEOUT,
};

/// A CA whose certificates name `url` as their OCSP responder, with its output directory.
struct Ca {
    ca: TestCa,
    url: String,
}

impl Ca {
    /// A CA naming a responder on a port where nothing listens (yet).
    fn naming(url: String) -> Ca {
        Ca {
            ca: TestCa::new(&["--ocsp-url", &url]),
            url,
        }
    }

    /// `cert issue NAME ARGS...`; the certificate chain and key as a [`Leaf`] for curl.
    fn issue(&self, name: &str, args: &[&str]) -> Leaf {
        self.ca.issue(name, args).ok();
        let cert = self.ca.out.join(format!("{name}.pem"));
        Leaf {
            key: self.ca.out.join(format!("{name}.key")),
            leaf_pem: std::fs::read_to_string(&cert).unwrap(),
            der: Vec::new(),
            serial_hex: x509(&cert, &["-serial"])
                .trim()
                .trim_start_matches("serial=")
                .to_string(),
            cert,
        }
    }

    fn server(&self) -> Leaf {
        self.issue("server", LOCALHOST_SERVER)
    }

    fn revoke(&self, l: &Leaf) {
        revoke_in(self.ca.d(), &l.cert, "key-compromise");
    }

    fn root(&self) -> PathBuf {
        PathBuf::from(self.ca.root())
    }
}

/// `ca serve --ocsp-listen` on the port `ca` names, answers valid for `next_update`.
fn responder(ca: &Ca, next_update: &str) -> CaServe {
    let listen = ca
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/ocsp");
    CaServe::start_new(
        &ca.ca.dir,
        ca.ca.tmp.path().join("ca-serve.log"),
        &["--ocsp-listen", listen, "--ocsp-next-update", next_update],
    )
}

fn ocsp_url() -> String {
    format!("http://127.0.0.1:{}/ocsp", free_port())
}

/// `mutual serve --allow-any --ocsp-from-aia EXTRA...` presenting `server`.
fn serve(ca: &Ca, server: &Leaf, extra: &[&str]) -> Proxy {
    let backend = http_backend();
    let mut flags = vec!["--allow-any", "--ocsp-from-aia"];
    flags.extend_from_slice(extra);
    let args = tls_args(&server.cert, &server.key, &ca.root(), &flags);
    spawn_proxy("serve", "--backend", &backend.addr.to_string(), &args)
}

/// curl as `client`: (HTTP code, the audit line this connection wrote). Only where every
/// earlier connection's line is written already (a line is written when its connection ends,
/// which may be just after curl returns).
fn curl_as(p: &Proxy, ca: &Ca, client: &Leaf) -> (String, serde_json::Value) {
    let before = p.audit_lines().len();
    let (_, code, _) = curl(p.port, &ca.root(), Some(client));
    let line = p.wait_audit(before + 1)[before].clone();
    (code, line)
}

/// curl as `client` until the listener refuses it as `revoked` (its answer may still be a
/// cached good one at first); for a proxy where no other client can be refused so.
fn first_revoked(p: &Proxy, ca: &Ca, client: &Leaf) -> Option<()> {
    eventually(EVENT_TIMEOUT, || {
        curl(p.port, &ca.root(), Some(client));
        eventually(std::time::Duration::from_secs(5), || {
            p.audit_lines()
                .iter()
                .any(|l| is_line(l, "failed", "revoked"))
                .then_some(())
        })
    })
}

/// curl as `client` must be refused, and one more audit line says `failed` with `reason`.
fn refused_as(p: &Proxy, ca: &Ca, client: &Leaf, reason: &str) {
    let is = |l: &serde_json::Value| is_line(l, "failed", reason);
    let n = p.audit_lines().iter().filter(|l| is(l)).count();
    let (_, code, _) = curl(p.port, &ca.root(), Some(client));
    assert_eq!(code, "000");
    p.wait_audit_count_where(&format!("failed/{reason}"), n + 1, is);
}

fn fetches(p: &Proxy, result: &str) -> f64 {
    p.metric(&format!(
        "mutual_ocsp_peer_fetch_total{{listener=\"{}\",result=\"{result}\"}}",
        p.listener
    ))
    .unwrap_or(0.0)
}

/// A good client: refused once (`revocation_unknown`: the first handshake of a certificate has
/// no answer yet, and deny is the default), allowed as soon as the answer lands; after
/// `mutual cert revoke`, the responder's answer changes, the listener asks again before the
/// good answer's nextUpdate and refuses the client as `revoked`. A client of the same CA that
/// is not revoked is unaffected.
#[test]
fn serve_checks_client_certificates_with_the_responder_in_their_aia() {
    if skip_without("curl") {
        return;
    }
    let ca = Ca::naming(ocsp_url());
    let server = ca.server();
    let alice = ca.issue("alice", &[]);
    let bob = ca.issue("bob", &[]);
    // ca serve backdates thisUpdate by 60 s: 75 s of validity leave 15 s, asked again after 10.
    let srv = responder(&ca, "75s");
    let p = serve(&ca, &server, &[]);

    let (code, line) = curl_as(&p, &ca, &alice);
    assert_eq!(code, "000");
    assert!(is_line(&line, "failed", "revocation_unknown"), "{line}");
    let ok = eventually(EVENT_TIMEOUT, || {
        (curl(p.port, &ca.root(), Some(&alice)).1 == "200").then_some(())
    });
    assert!(ok.is_some(), "alice never allowed:\n{}", p.stderr_text());
    p.wait_audit_line("allowed", "ok");
    assert!(fetches(&p, "good") >= 1.0, "{}", p.metrics());
    assert!(
        p.metric("mutual_ocsp_peer_answers{listener=\"serve\"}")
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        p.metrics()
    );
    let asked = eventually(EVENT_TIMEOUT, || {
        srv.log_text()
            .contains("path=\"/ocsp\" result=\"good\"")
            .then_some(())
    });
    assert!(asked.is_some(), "{}", srv.log_text());

    ca.revoke(&alice);
    // Only alice can be refused as revoked (her earlier refusals were revocation_unknown).
    let refused = first_revoked(&p, &ca, &alice);
    assert!(
        refused.is_some(),
        "alice never refused as revoked:\n{}",
        p.stderr_text()
    );
    p.wait_stderr(&format!(
        "OCSP answer from {} about a peer certificate: revoked",
        ca.url
    ));
    assert!(fetches(&p, "revoked") >= 1.0, "{}", p.metrics());

    // bob: refused once while its answer is fetched, then allowed; alice stays refused.
    let ok = eventually(EVENT_TIMEOUT, || {
        (curl(p.port, &ca.root(), Some(&bob)).1 == "200").then_some(())
    });
    assert!(ok.is_some(), "bob never allowed:\n{}", p.stderr_text());
    refused_as(&p, &ca, &alice, "revoked");
}

/// The responder is down: under the default (deny) every handshake of a certificate naming it
/// fails with `revocation_unknown`, and the log names the responder; with
/// `--revocation-unknown allow` the same client is let in.
#[test]
fn responder_down_is_revocation_unknown_under_deny_and_allowed_under_allow() {
    if skip_without("curl") {
        return;
    }
    let ca = Ca::naming(ocsp_url());
    let server = ca.server();
    let alice = ca.issue("alice", &[]);

    let p = serve(&ca, &server, &[]);
    let (code, line) = curl_as(&p, &ca, &alice);
    assert_eq!(code, "000");
    assert!(is_line(&line, "failed", "revocation_unknown"), "{line}");
    p.wait_stderr(&format!(
        "OCSP request to {} about a peer certificate failed (failure)",
        ca.url
    ));
    p.wait_stderr("no current answer: the peer is denied (revocation_unknown)");
    let (code, line) = curl_as(&p, &ca, &alice);
    assert_eq!(code, "000");
    assert!(is_line(&line, "failed", "revocation_unknown"), "{line}");
    p.wait_metric(
        "mutual_ocsp_peer_fetch_total{listener=\"serve\",result=\"failure\"}",
        |v| v >= 1.0,
    );
    drop(p);

    let p = serve(&ca, &server, &["--revocation-unknown", "allow"]);
    let (code, line) = curl_as(&p, &ca, &alice);
    assert_eq!(code, "200");
    assert!(is_line(&line, "allowed", "ok"), "{line}");
    p.wait_stderr("no current answer: the peer is allowed (--revocation-unknown allow)");
}

/// `mutual connect --ocsp` in front of `openssl s_server`: the server's certificate is checked
/// with the responder in its AIA. A good server is reached on the first connection (connect
/// waits for the first answer and tries again); a revoked one is refused with `revoked`.
#[test]
fn connect_checks_the_server_certificate_and_refuses_a_revoked_one() {
    if skip_without("openssl") {
        return;
    }
    let ca = Ca::naming(ocsp_url());
    let server = ca.server();
    let client = ca.issue("client", &[]);
    let _srv = responder(&ca, "1h");
    let int = PathBuf::from(ca.ca.intermediate());
    let start = |leaf: &Leaf| {
        mutual_test::openssl_s_server_files(
            [&leaf.cert, &leaf.key, &int, &ca.root()],
            &["-www", "-Verify", "1"],
        )
    };
    let connect = |port: u16| {
        let args = tls_args(
            &client.cert,
            &client.key,
            &ca.root(),
            &["--server-name", "localhost", "--ocsp"],
        );
        spawn_proxy("connect", "--remote", &format!("127.0.0.1:{port}"), &args)
    };

    let (_good, port) = start(&server);
    let c = connect(port);
    let page = through(c.port);
    assert!(page.contains("200 ok"), "{page}\n{}", c.stderr_text());
    let line = c.wait_audit_line("allowed", "ok");
    assert_eq!(c.audit_lines().len(), 1, "{:?}", c.audit_lines());
    assert!(
        line["identity"]["dns"].to_string().contains("localhost"),
        "{line}"
    );

    let bad = ca.issue("revoked-server", &["--server", "--san", "dns:localhost"]);
    ca.revoke(&bad);
    let (_bad, port) = start(&bad);
    let c = connect(port);
    assert_eq!(through(c.port), "");
    let line = c.assert_only_failure("revoked");
    assert_eq!(line["result"], "failed");
    c.wait_stderr("about a peer certificate: revoked");
}

/// An independent responder: `openssl ocsp -index` over an OpenSSL CA database that lists the
/// client as revoked, signing with the issuing intermediate itself. `serve --ocsp-from-aia`
/// verifies its answers (issuer-signed, SHA-1 CertIDs as openssl sends them back) and refuses
/// the revoked client; the good one gets in.
#[test]
fn openssl_ocsp_index_as_the_responder() {
    if skip_without("openssl") || skip_without("curl") {
        return;
    }
    let port = free_port();
    let ca = Ca::naming(format!("http://127.0.0.1:{port}/ocsp"));
    let server = ca.server();
    let good = ca.issue("good", &[]);
    let bad = ca.issue("bad", &[]);
    let dir = ca.ca.tmp.path();
    let key = dir.join("int-plain.key");
    let pass = format!("pass:{PW}");
    openssl_ok(&[
        "pkey",
        "-in",
        s(&ca.ca.dir.join("intermediate.key")),
        "-passin",
        &pass,
        "-out",
        s(&key),
    ]);
    let row = |status: &str, revoked_at: &str, l: &Leaf| {
        format!(
            "{status}\t351231235959Z\t{revoked_at}\t{}\tunknown\t/CN=x\n",
            l.serial_hex.to_uppercase()
        )
    };
    let index = dir.join("index.txt");
    std::fs::write(
        &index,
        row("V", "", &good) + &row("R", "250101000000Z", &bad),
    )
    .unwrap();
    let int = ca.ca.intermediate();
    let log = dir.join("openssl-ocsp.log");
    let _responder = mutual_test::spawn_logged(
        std::process::Command::new("openssl")
            .args(["ocsp", "-index", s(&index), "-port"])
            .arg(port.to_string())
            .args(["-rsigner", &int, "-rkey", s(&key), "-CA", &int])
            .args(["-ndays", "1"]),
        &log,
    );
    // Not a probe connection: openssl's responder serves one connection at a time and hangs
    // on one that sends nothing.
    let up = eventually(EVENT_TIMEOUT, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("waiting for OCSP client connections")
            .then_some(())
    });
    assert!(up.is_some(), "openssl ocsp did not start");

    let p = serve(&ca, &server, &[]);
    let allowed = eventually(EVENT_TIMEOUT, || {
        (curl(p.port, &ca.root(), Some(&good)).1 == "200").then_some(())
    });
    assert!(
        allowed.is_some(),
        "good never allowed:\n{}",
        p.stderr_text()
    );
    let refused = first_revoked(&p, &ca, &bad);
    assert!(refused.is_some(), "bad never refused:\n{}", p.stderr_text());
    assert_eq!(fetches(&p, "invalid"), 0.0, "{}", p.stderr_text());
}

/// `--revocation-unknown` decides for a revocation source; without one it is a usage error
/// (exit 2) for serve and connect alike, before any file is read.
#[test]
fn revocation_unknown_without_a_source_is_a_usage_error() {
    let files = [
        "--cert", "nope.pem", "--key", "nope.key", "--ca", "nope.pem",
    ];
    let mut a = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:1",
    ];
    a.extend(files);
    a.extend(["--allow-any", "--revocation-unknown", "allow"]);
    mutual(&a).fails_with(
        "--revocation-unknown only applies with a revocation source (CRL files, CRLs from \
         CDPs, OCSP)",
    );
    let mut a = vec![
        "connect",
        "--listen",
        "127.0.0.1:0",
        "--remote",
        "127.0.0.1:1",
    ];
    a.extend(files);
    a.extend(["--revocation-unknown", "allow"]);
    mutual(&a).fails_with("--revocation-unknown only applies with a revocation source (OCSP)");

    // The same check for a config file's keys, at the key's line; with a source it passes.
    let ca = Ca::naming(ocsp_url());
    let server = ca.server();
    let block = |extra: &str| {
        format!(
            "[[listener]]\nname = \"api\"\nkind = \"serve\"\nlisten = \"127.0.0.1:{}\"\n\
             backend = \"127.0.0.1:1\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n\
             allow_any = true\nrevocation_unknown = \"allow\"\n{extra}",
            free_port(),
            server.cert.display(),
            server.key.display(),
            ca.root().display()
        )
    };
    let path = ca.ca.tmp.path().join("mutual.toml");
    std::fs::write(&path, block("")).unwrap();
    let o = mutual(&["config", "check", s(&path)]);
    assert_eq!(o.code, 2, "{}", o.text());
    let text = o.stderr.replace('\n', " ");
    assert!(
        text.contains(&format!("{}:10:", path.display()))
            && text.contains(
                "revocation_unknown only applies with a revocation source (CRL files, CRLs \
                 from CDPs, OCSP)"
            ),
        "{}",
        o.text()
    );
    std::fs::write(&path, block("ocsp_from_aia = true\n")).unwrap();
    mutual(&["config", "check", s(&path)]).ok();
}
