//! Keys in PKCS#11 tokens (issue 18) with the real SoftHSM2 module and real peers: the CA's
//! intermediate generated in a token signs certificates, CRLs and `ca serve`'s own certificate;
//! `serve` with its TLS key in a token takes curl and openssl clients; pkcs11-tool (OpenSC, an
//! independent PKCS#11 client) shows the keys sensitive and never extractable. Each refusal is
//! checked by its message and exit code 2.
//!
//! SoftHSM reads SOFTHSM2_CONF when a process loads it: this test binary points it once at one
//! throwaway token directory, and each test makes its own token there (`softhsm2-util
//! --init-token --free`), so tests running in parallel never share a token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;
mod proxy_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use mutual_test::{eventually, free_port, Leaf};
use pki_common::{mutual, mutual_cmd, s, Out, TestCa};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "20261205";

/// The shared token directory (SOFTHSM2_CONF set for this process and its children), or
/// `None` (with a SKIPPED line) when SoftHSM2 or pkcs11-tool is missing; `.ci/run` installs both.
fn softhsm() -> Option<&'static Path> {
    static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    let d = DIR.get_or_init(|| {
        if !Path::new(MODULE).exists() || mutual_test::skip_without("softhsm2-util") {
            eprintln!("SKIPPED: softhsm2 not installed");
            return None;
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("tokens")).unwrap();
        let conf = d.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                d.path().join("tokens").display()
            ),
        )
        .unwrap();
        std::fs::write(d.path().join("pin"), format!("{PIN}\n")).unwrap();
        std::fs::write(d.path().join("wrong-pin"), "11111111\n").unwrap();
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Some(d)
    });
    d.as_ref().map(|d| d.path())
}

/// A new token labelled `label` (one per test).
fn token(label: &str) -> Option<&'static Path> {
    let dir = softhsm()?;
    // softhsm2-util picks "the free slot": one at a time.
    static ONE: Mutex<()> = Mutex::new(());
    let _g = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let o = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--pin", PIN, "--so-pin", "87654321"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(dir)
}

fn pin_file(dir: &Path) -> String {
    dir.join("pin").to_string_lossy().into_owned()
}

/// OpenSC's `pkcs11-tool ARGS` on token `label`, logged in; its stdout (it must succeed).
fn pkcs11_tool(label: &str, args: &[&str]) -> Vec<u8> {
    let o = Command::new("pkcs11-tool")
        .args(["--module", MODULE, "--token-label", label])
        .args(["--login", "--pin", PIN])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// The token's objects as OpenSC's pkcs11-tool lists them (logged in).
fn pkcs11_tool_objects(label: &str) -> String {
    String::from_utf8_lossy(&pkcs11_tool(label, &["-O"])).into_owned()
}

/// The private-key block of `object` in pkcs11-tool's listing.
fn private_key_block(listing: &str, object: &str) -> String {
    listing
        .split("Private Key Object")
        .skip(1)
        .find(|b| b.contains(&format!("label:      {object}\n")))
        .unwrap_or_else(|| panic!("no private key {object} in:\n{listing}"))
        .split("Object;")
        .next()
        .unwrap()
        .to_string()
}

/// `ca init` with the intermediate in token `label`.
fn token_ca(label: &str, dir: &Path) -> TestCa {
    let uri = format!("pkcs11:token={label};object=intermediate");
    TestCa::new(&[
        "--pkcs11-module",
        MODULE,
        "--pkcs11-uri",
        &uri,
        "--pkcs11-pin-file",
        &pin_file(dir),
    ])
}

/// The CA's mutual-ca.toml, which must contain `block` and name object `object` of token
/// `label` as a key's URI.
fn config_names_key(ca: &TestCa, block: &str, label: &str, object: &str) -> String {
    let cfg = std::fs::read_to_string(ca.dir.join("mutual-ca.toml")).unwrap();
    assert!(cfg.contains(block), "{cfg}");
    let uri = format!("uri = \"pkcs11:token={label};object={object}\"");
    assert!(cfg.contains(&uri), "{cfg}");
    cfg
}

/// `openssl crl` says the CRL at `crl` is signed by the certificate in the file `issuer`.
fn crl_verifies(crl: &Path, issuer: &str) {
    let v = openssl(&["crl", "-in", s(crl), "-CAfile", issuer, "-noout"]);
    assert!(v.stderr.contains("verify OK"), "{}", v.text());
}

/// `openssl verify` says `cert` chains through `intermediate` to `root`.
fn openssl_verifies(root: &Path, intermediate: &Path, cert: &Path) {
    let ok = openssl(&[
        "verify",
        "-CAfile",
        s(root),
        "-untrusted",
        s(intermediate),
        s(cert),
    ]);
    assert!(ok.stdout.contains(": OK"), "{}", ok.text());
}

fn openssl(args: &[&str]) -> Out {
    pki_common::openssl(args)
}

#[test]
fn ca_in_token_issues_revokes_and_signs_crls() {
    let Some(dir) = token("ca-issue") else { return };
    let ca = token_ca("ca-issue", dir);
    // The config records where the key is; no intermediate key file exists.
    let cfg = config_names_key(&ca, "kind = \"pkcs11\"", "ca-issue", "intermediate");
    assert!(!cfg.contains(PIN));
    assert!(!ca.dir.join("intermediate.key").exists());
    let key_files = files_ending(&ca.dir, ".key");
    assert_eq!(key_files, vec!["root.key".to_string()]);
    // OpenSC sees the intermediate key: sensitive, never extractable, generated in the token.
    let block = private_key_block(&pkcs11_tool_objects("ca-issue"), "intermediate");
    assert!(block.contains("never extractable"), "{block}");
    assert!(block.contains("always sensitive"), "{block}");
    assert!(block.contains("local"), "{block}");
    // The intermediate certificate carries the token key.
    let spki_cert = openssl(&["x509", "-in", &ca.intermediate(), "-noout", "-pubkey"]).ok();
    let read = [
        "--read-object",
        "--type",
        "pubkey",
        "--label",
        "intermediate",
    ];
    pkcs11_tool(
        "ca-issue",
        &[
            &read[..],
            &["-o", s(&ca.tmp.path().join("int-pub.der"))][..],
        ]
        .concat(),
    );
    let spki_token = openssl(&[
        "pkey",
        "-pubin",
        "-inform",
        "DER",
        "-in",
        s(&ca.tmp.path().join("int-pub.der")),
    ])
    .ok();
    assert_eq!(spki_cert.stdout, spki_token.stdout);

    // Issue (signed by the token), checked by openssl.
    let issued = ca
        .issue("web", &["--server", "--san", "dns:web.test", "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&issued.stdout).unwrap();
    let cert = ca.out.join("web.pem");
    openssl_verifies(Path::new(&ca.root()), Path::new(&ca.intermediate()), &cert);

    // Revoke, then a CRL signed by the token: openssl checks its signature and sees the serial.
    let serial = v["serial"].as_str().unwrap().to_string();
    mutual(&["cert", "revoke", "--dir", ca.d(), &serial]).ok();
    let crl = ca.tmp.path().join("crl.pem");
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl)]).ok();
    crl_verifies(&crl, &ca.intermediate());
    let both = ca.tmp.path().join("chain.pem");
    std::fs::write(
        &both,
        std::fs::read_to_string(ca.root()).unwrap()
            + &std::fs::read_to_string(ca.intermediate()).unwrap(),
    )
    .unwrap();
    let revoked = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        s(&both),
        "-CRLfile",
        s(&crl),
        s(&cert),
    ]);
    assert_ne!(revoked.code, 0);
    assert!(
        revoked.text().contains("certificate revoked"),
        "{}",
        revoked.text()
    );
}

#[test]
fn ca_serve_signs_its_own_certificate_enrollments_and_renewals_through_the_token() {
    let Some(dir) = token("ca-serve") else { return };
    let ca = token_ca("ca-serve", dir);
    // SOFTHSM2_CONF is in this process's environment, so `ca serve` finds the token.
    let srv = pki_common::CaServe::start_new(&ca.dir, ca.tmp.path().join("serve.log"), &[]);
    // openssl checks the server's chain: its own certificate, issued through the token.
    let out = mutual_test::output_with_stdin(
        Command::new("timeout").args([
            "30",
            "openssl",
            "s_client",
            "-connect",
            &srv.addr().to_string(),
            "-CAfile",
            &ca.root(),
            "-verify_return_error",
        ]),
        b"",
    );
    let text = mutual_test::output_text(&out);
    assert!(text.contains("Verification: OK"), "{text}");
    // Enroll with a one-time token, then renew over mTLS: both certificates signed in the token.
    let jwt = srv.token(&["dns:svc.test"], "1h", "both");
    let got = ca.tmp.path().join("svc");
    srv.enroll(&jwt, &got).ok();
    let cert = renews_to_a_new_serial(mutual, &srv.url(), &got);
    openssl_verifies(Path::new(&ca.root()), Path::new(&ca.intermediate()), &cert);
    assert!(!srv.log_text().contains(PIN));
}

fn backend_and_server_key(label: &str) -> Option<(TestCa, &'static Path, String)> {
    let dir = token(label)?;
    let ca = TestCa::new(&[]);
    let uri = format!("pkcs11:token={label};object=tls");
    ca.issue(
        "server",
        &[
            "--server",
            "--san",
            "dns:localhost",
            "--pkcs11-module",
            MODULE,
            "--pkcs11-uri",
            &uri,
            "--pkcs11-pin-file",
            &pin_file(dir),
        ],
    )
    .ok();
    assert!(!ca.out.join("server.key").exists());
    ca.issue("client", &["--client", "--san", "dns:client.test"])
        .ok();
    let key = format!(
        "pkcs11:token={label};object=tls?module-path={MODULE}&pin-source={}",
        pin_file(dir)
    );
    Some((ca, dir, key))
}

fn serve_args(ca: &TestCa, key: &str) -> Vec<String> {
    [
        "--cert",
        s(&ca.out.join("server.pem")),
        "--key",
        key,
        "--ca",
        &ca.root(),
        "--allow-any",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn client(ca: &TestCa) -> Leaf {
    Leaf {
        cert: ca.out.join("client.pem"),
        key: ca.out.join("client.key"),
        leaf_pem: String::new(),
        der: Vec::new(),
        serial_hex: String::new(),
    }
}

#[test]
fn serve_with_key_in_token_takes_curl_and_openssl() {
    let Some((ca, _dir, key)) = backend_and_server_key("serve-tls") else {
        return;
    };
    let block = private_key_block(&pkcs11_tool_objects("serve-tls"), "tls");
    assert!(block.contains("never extractable"), "{block}");
    // cert inspect --key says where the key lives and that it is the certificate's.
    let cert = ca.out.join("server.pem");
    let o = mutual(&["cert", "inspect", s(&cert), "--key", &key, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let k = &v["key"];
    assert_eq!(k["matches_certificate"], true, "{}", o.stdout);
    assert_eq!(k["location"]["storage"], "pkcs11");
    assert_eq!(k["location"]["token"]["token"], "serve-tls");
    assert_eq!(k["location"]["token"]["sensitive"], true);
    assert_eq!(k["location"]["token"]["extractable"], false);
    let o = mutual(&[
        "cert",
        "inspect",
        s(&ca.out.join("client.pem")),
        "--key",
        &key,
    ])
    .ok();
    assert!(
        o.stdout.contains("Matches certificate #0: NO"),
        "{}",
        o.stdout
    );
    let backend = proxy_common::http_backend();
    let proxy = proxy_common::spawn_proxy(
        "serve",
        "--backend",
        &backend.addr.to_string(),
        &serve_args(&ca, &key),
    );
    let root = PathBuf::from(ca.root());
    let c = client(&ca);
    let (ok, code, _) = proxy_common::curl(proxy.port, &root, Some(&c));
    assert!(ok && code == "200", "curl: {code}\n{}", proxy.stderr_text());
    let (ok, text) = proxy_common::s_client(proxy.port, &root, Some(&c));
    assert!(ok && text.contains("200 OK"), "{text}");
    assert!(proxy.handshakes("allowed", "ok") >= 2.0);
    let up_series = "mutual_pkcs11_key_up{key=\"pkcs11:token=serve-tls;object=tls?module-path=";
    let up = |p: &proxy_common::Proxy| {
        p.metrics()
            .lines()
            .find(|l| l.starts_with(up_series))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    assert_eq!(up(&proxy).as_deref(), Some("1"), "{}", proxy.metrics());
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], proxy.metrics_port));
    let (status, _) = proxy_common::http_get(metrics_addr, "/readyz");
    assert_eq!(status, 200);

    // The token goes away (its files moved out) while serve runs: new full handshakes fail
    // with the reason in the log, the process keeps running and says nothing of the PIN.
    let (tdir, gone) = take_token_away("serve-tls");
    let (ok, _, _) = proxy_common::curl(proxy.port, &root, Some(&c));
    assert!(!ok, "a full handshake needs the token");
    proxy.wait_stderr("PKCS#11 signature failed");
    let failed = eventually(Duration::from_secs(30), || {
        let n = proxy.handshakes("failed", "other");
        (n >= 1.0).then_some(n)
    });
    assert!(failed.is_some(), "{}", proxy.metrics());
    // ... and says so: the key is down in the metrics, /readyz names it.
    assert_eq!(up(&proxy).as_deref(), Some("0"), "{}", proxy.metrics());
    let (status, body) = proxy_common::http_get(metrics_addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    let why = v["not_ready"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("pkcs11 key pkcs11:token=serve-tls;object=tls"))
        .map(|(_, v)| v.as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{body}"));
    assert!(why.contains("token"), "{why}");
    let mut p = proxy;
    assert!(
        p.child.0.try_wait().unwrap().is_none(),
        "serve must keep running"
    );
    assert!(!p.stderr_text().contains(PIN));
    std::fs::rename(&gone, &tdir).unwrap();
}

/// Moves token `label`'s files out of SoftHSM's token directory (the token is gone for every
/// process); returns (where it was, where it is) so the test can put it back.
fn take_token_away(label: &str) -> (PathBuf, PathBuf) {
    let tokens = softhsm().unwrap().join("tokens");
    let gone = softhsm().unwrap().join(format!("away-{label}"));
    let tdir = std::fs::read_dir(&tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            std::fs::read(p.join("token.object"))
                .map(|b| b.windows(label.len()).any(|w| w == label.as_bytes()))
                .unwrap_or(false)
        })
        .expect("the token's directory");
    std::fs::rename(&tdir, &gone).unwrap();
    (tdir, gone)
}

#[test]
fn refusals_are_clear_and_exit_2() {
    let Some((ca, dir, key)) = backend_and_server_key("refusals") else {
        return;
    };
    let backend = proxy_common::http_backend().addr.to_string();
    let serve = |key: &str| {
        let port = free_port().to_string();
        let listen = format!("127.0.0.1:{port}");
        let mut a = vec!["serve", "--listen", &listen, "--backend", &backend];
        let extra = serve_args(&ca, key);
        a.extend(extra.iter().map(String::as_str));
        pki_common::run_within(mutual_cmd(None, &a), Duration::from_secs(60))
    };
    // Wrong PIN: refused at start, the PIN never printed.
    let wrong = key.replace(&pin_file(dir), s(&dir.join("wrong-pin")));
    let o = serve(&wrong);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr.contains("wrong PIN for token \"refusals\""),
        "{}",
        o.text()
    );
    assert!(!o.text().contains("11111111"));
    // A missing object.
    let o = serve(&key.replace("object=tls", "object=nothing"));
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(o.stderr.contains("no private key matches"), "{}", o.text());
    // A PIN in the URI is refused without echoing it.
    let o = serve("pkcs11:token=refusals;object=tls?pin-value=424242");
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr
            .contains("pin-value would put the PIN on the command line"),
        "{}",
        o.text()
    );
    assert!(!o.text().contains("424242"));
    // Not a PKCS#11 library: a real shared library without the entry points, and a text file.
    let libz = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let junk = ca.tmp.path().join("junk.so");
    std::fs::write(&junk, "not a library").unwrap();
    for module in libz.into_iter().chain([s(&junk)]) {
        let d = ca.tmp.path().join(format!("ca-{}", module.len()));
        let o = pki_common::mutual(&[
            "ca",
            "init",
            "--dir",
            s(&d),
            "--pkcs11-module",
            module,
            "--pkcs11-uri",
            "pkcs11:token=refusals;object=int",
            "--pkcs11-pin-file",
            &pin_file(dir),
            "--json",
        ]);
        assert_eq!(o.code, 2, "{}", o.text());
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["error"]["reason"], "pkcs11", "{}", o.text());
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is not a PKCS#11 module"),
            "{}",
            o.text()
        );
        assert!(!d.join("mutual-ca.toml").exists());
    }
    // --pkcs11-* with file storage is a usage error.
    let o = mutual(&[
        "ca",
        "init",
        "--dir",
        s(&ca.tmp.path().join("x")),
        "--key-storage",
        "file",
        "--pkcs11-uri",
        "pkcs11:token=refusals;object=int",
    ]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr
            .contains("--pkcs11-* flags need --key-storage pkcs11"),
        "{}",
        o.text()
    );
}

/// The public key (PEM, as openssl prints it) of the certificate `ca serve` presents now, and its
/// serial; `None` while it does not answer.
fn presented_key(port: u16) -> Option<(String, String)> {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 30 openssl s_client -connect 127.0.0.1:{port} -servername localhost \
             </dev/null 2>/dev/null | openssl x509 -noout -serial -pubkey"
        ))
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout).into_owned();
    let serial = t.lines().next()?.strip_prefix("serial=")?.to_string();
    let key = t.split_once("-----BEGIN PUBLIC KEY-----")?.1.to_string();
    Some((serial, key))
}

#[test]
fn ca_serve_tls_key_in_token_signs_handshakes_and_each_rotated_certificate() {
    let Some(dir) = token("ca-tls") else { return };
    // The key is made by OpenSC's pkcs11-tool, not by mutual: any key already in a token will do.
    // (pkcs11-tool matches --token-label as a prefix: no other test's token starts with "ca-tls".)
    let keypairgen = ["--keypairgen", "--key-type", "EC:prime256v1"];
    pkcs11_tool(
        "ca-tls",
        &[&keypairgen[..], &["--label", "ca-server", "--id", "0a"][..]].concat(),
    );
    let exported = pkcs11_tool(
        "ca-tls",
        &["--read-object", "--type", "pubkey", "--label", "ca-server"],
    );
    let ca = TestCa::new(&[]);
    let der = ca.tmp.path().join("token-pub.der");
    std::fs::write(&der, &exported).unwrap();
    let token_pub = openssl(&["pkey", "-pubin", "-inform", "DER", "-in", s(&der)])
        .ok()
        .stdout;
    let token_pub = token_pub
        .split_once("-----BEGIN PUBLIC KEY-----")
        .unwrap()
        .1
        .to_string();
    let uri = format!(
        "pkcs11:token=ca-tls;object=ca-server?module-path={MODULE}&pin-source={}",
        pin_file(dir)
    );
    // 6 s certificates: the replacement comes ~4 s after start.
    let srv = pki_common::CaServe::start_new(
        &ca.dir,
        ca.tmp.path().join("serve.log"),
        &[
            "--server-key",
            &uri,
            "--server-cert-ttl",
            "6s",
            "--san",
            "dns:localhost",
        ],
    );
    let (first, key) = presented_key(srv.port).expect("no server certificate");
    assert_eq!(
        key, token_pub,
        "the server certificate is for the token key"
    );
    // curl (its own TLS stack) completes handshakes signed in the token.
    let health = Command::new("curl")
        .args(["-sS", "--fail", "--cacert", &ca.root()])
        .arg(format!("https://localhost:{}/health", srv.port))
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    // The rotated certificate is for the same token key.
    let (second, key2) = eventually(Duration::from_secs(60), || {
        presented_key(srv.port).filter(|(s, _)| *s != first)
    })
    .expect("the server certificate was not rotated");
    assert_ne!(first, second);
    assert_eq!(key2, token_pub);
    let log = srv.log_text();
    assert!(log.contains("server certificate rotated"), "{log}");
    assert!(!log.contains(PIN));
    // `mutual probe --key` says where the client key lives: in the token, with its protection.
    ca.issue(
        "device",
        &[
            "--client",
            "--san",
            "dns:device.test",
            "--pkcs11-module",
            MODULE,
            "--pkcs11-uri",
            "pkcs11:token=ca-tls;object=device",
            "--pkcs11-pin-file",
            &pin_file(dir),
        ],
    )
    .ok();
    let device_key = format!(
        "pkcs11:token=ca-tls;object=device?module-path={MODULE}&pin-source={}",
        pin_file(dir)
    );
    let target = format!("localhost:{}", srv.port);
    let probe = |key: &str| {
        let cert = ca.out.join("device.pem");
        mutual_cmd(
            None,
            &["probe", &target, "--ca", &ca.root(), "--cert", s(&cert)],
        )
        .args(["--key", key, "--json"])
        .output()
        .unwrap()
    };
    let o = probe(&device_key);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    let k = &v["client_cert"]["key"];
    assert_eq!(k["storage"], "pkcs11", "{v}");
    assert_eq!(
        k["location"],
        "pkcs11:token=ca-tls;object=device?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source="
            .to_string()
            + &pin_file(dir),
        "{v}"
    );
    assert_eq!(k["token"]["token"], "ca-tls");
    assert_eq!(k["token"]["sensitive"], true);
    assert_eq!(k["token"]["extractable"], false);
    assert_eq!(v["client_cert"]["sent"], true, "{v}");
    let text = mutual_cmd(None, &["probe", &target, "--ca", &ca.root()])
        .args([
            "--cert",
            s(&ca.out.join("device.pem")),
            "--key",
            &device_key,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("private key         PKCS#11 token \"ca-tls\"")
            && text.contains("sensitive, never extractable"),
        "{text}"
    );
    assert!(!text.contains(PIN));
}

#[test]
fn ca_serve_server_key_refusals_exit_2() {
    let Some(dir) = token("srvkey-refusals") else {
        return;
    };
    let ca = TestCa::new(&[]);
    let port = free_port().to_string();
    let serve = |key: &str| {
        mutual_cmd(Some(pki_common::PW), &["ca", "serve", "--dir", s(&ca.dir)])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--server-key",
                key,
            ])
            .output()
            .unwrap()
    };
    let missing = serve(&format!(
        "pkcs11:token=srvkey-refusals;object=nothing?module-path={MODULE}&pin-source={}",
        pin_file(dir)
    ));
    let text = String::from_utf8_lossy(&missing.stderr).into_owned();
    assert_eq!(missing.status.code(), Some(2), "{text}");
    assert!(text.contains("no private key matches"), "{text}");
    let file = serve(s(&ca.dir.join("root.key")));
    let text = String::from_utf8_lossy(&file.stderr).into_owned();
    assert_eq!(file.status.code(), Some(2), "{text}");
    assert!(text.contains("not a pkcs11: URI"), "{text}");
}

#[test]
fn rotate_intermediate_puts_the_new_key_in_a_token() {
    let Some(dir) = token("rotate-int") else {
        return;
    };
    let ca = TestCa::new(&[]);
    let r = mutual(&[
        "ca",
        "rotate-intermediate",
        "--dir",
        s(&ca.dir),
        "--key-storage",
        "pkcs11",
        "--pkcs11-module",
        MODULE,
        "--pkcs11-uri",
        "pkcs11:token=rotate-int;object=int-2",
        "--pkcs11-pin-file",
        &pin_file(dir),
        "--json",
    ])
    .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["id"], "int-2", "{}", r.stdout);
    // No key file for it; issuers.toml says which token key it is (and no PIN).
    assert!(ca.dir.join("issuers/int-2.pem").exists());
    assert!(!ca.dir.join("issuers/int-2.key").exists());
    let manifest = std::fs::read_to_string(ca.dir.join("issuers.toml")).unwrap();
    assert!(
        manifest.contains("uri = \"pkcs11:token=rotate-int;object=int-2\""),
        "{manifest}"
    );
    assert!(!manifest.contains(PIN));
    let block = private_key_block(&pkcs11_tool_objects("rotate-int"), "int-2");
    assert!(block.contains("never extractable"), "{block}");
    // A certificate issued now is signed in the token; openssl checks it up to the root.
    ca.issue("svc", &["--server", "--san", "dns:svc.test"]).ok();
    openssl_verifies(
        Path::new(&ca.root()),
        &ca.dir.join("issuers/int-2.pem"),
        &ca.out.join("svc.pem"),
    );
    let issuer = openssl(&[
        "x509",
        "-in",
        s(&ca.out.join("svc.pem")),
        "-noout",
        "-issuer",
    ])
    .ok();
    assert!(
        issuer.stdout.contains("Intermediate 2"),
        "{}",
        issuer.stdout
    );
    // The issuer set loads again from issuers.toml in each new process.
    ca.issue("svc2", &["--client", "--san", "dns:svc2.test"])
        .ok();
    let r = mutual(&["ca", "issuers", "--dir", s(&ca.dir), "--json"]).ok();
    assert!(r.stdout.contains("int-2"), "{}", r.stdout);
}

#[test]
fn root_key_in_token_signs_the_root_crl_rotations_and_the_rollover() {
    let Some(dir) = token("root-in") else { return };
    let ca = TestCa::new(&[
        "--pkcs11-module",
        MODULE,
        "--pkcs11-uri",
        "pkcs11:token=root-in;object=intermediate",
        "--pkcs11-root-uri",
        "pkcs11:token=root-in;object=root",
        "--pkcs11-pin-file",
        &pin_file(dir),
    ]);
    // No private key file at all; the config says where both keys are.
    let key_files = files_ending(&ca.dir, ".key");
    assert!(key_files.is_empty(), "{key_files:?}");
    config_names_key(&ca, "[root_key_storage]", "root-in", "root");
    let listing = pkcs11_tool_objects("root-in");
    for obj in ["root", "intermediate"] {
        let block = private_key_block(&listing, obj);
        assert!(block.contains("never extractable"), "{obj}: {block}");
    }
    // openssl checks the root's self-signature and the intermediate under it (both made in the
    // token), and the root CRL signed in the token.
    let ok = openssl(&["verify", "-CAfile", &ca.root(), &ca.intermediate()]);
    assert!(ok.stdout.contains(": OK"), "{}", ok.text());
    let crl = ca.tmp.path().join("root-crl.pem");
    mutual(&["ca", "crl", "--dir", s(&ca.dir), "--root", "--out", s(&crl)]).ok();
    crl_verifies(&crl, &ca.root());
    // rotate-intermediate signs the new intermediate with the root key in the token.
    mutual(&["ca", "rotate-intermediate", "--dir", s(&ca.dir)]).ok();
    let ok = openssl(&[
        "verify",
        "-CAfile",
        &ca.root(),
        s(&ca.dir.join("issuers/int-2.pem")),
    ]);
    assert!(ok.stdout.contains(": OK"), "{}", ok.text());
    // rotate-root cross-signs the new root with the old root key (in the token).
    mutual(&["ca", "rotate-root", "--dir", s(&ca.dir)]).ok();
    let cross = ca.dir.join("roots/root-2-by-old-root.pem");
    let ok = openssl(&["verify", "-CAfile", &ca.root(), s(&cross)]);
    assert!(ok.stdout.contains(": OK"), "{}", ok.text());
}

#[test]
fn an_existing_file_intermediate_moves_into_a_token_as_docs_keys_md_says() {
    let Some(dir) = token("moved") else { return };
    let ca = TestCa::new(&[]);
    ca.issue("before", &["--server", "--san", "dns:before.test"])
        .ok();
    // docs/keys.md "Moving an existing CA's intermediate into a token", step 2, verbatim.
    let der = ca.tmp.path().join("int.der");
    let pub_der = ca.tmp.path().join("int-pub.der");
    let key = ca.dir.join("intermediate.key");
    let pass = format!("pass:{}", pki_common::PW);
    openssl(&[
        "pkey",
        "-in",
        s(&key),
        "-passin",
        &pass,
        "-out",
        s(&der),
        "-outform",
        "DER",
    ])
    .ok();
    openssl(&[
        "pkey",
        "-in",
        s(&key),
        "-passin",
        &pass,
        "-pubout",
        "-out",
        s(&pub_der),
        "-outform",
        "DER",
    ])
    .ok();
    for (file, kind, extra) in [
        (
            &der,
            "privkey",
            &["--usage-sign", "--sensitive", "--private"][..],
        ),
        (&pub_der, "pubkey", &[][..]),
    ] {
        let write = ["--write-object", s(file), "--type", kind];
        let label = ["--label", "intermediate", "--id", "01"];
        pkcs11_tool("moved", &[&write[..], &label[..], extra].concat());
    }
    std::fs::remove_file(&der).unwrap();
    // Step 3: the [key_storage] block in mutual-ca.toml; step 4: the key file goes offline.
    let cfg_path = ca.dir.join("mutual-ca.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let file_block = "[key_storage]\nkind = \"file\"\n";
    assert!(cfg.contains(file_block), "{cfg}");
    let cfg = cfg.replace(
        file_block,
        &format!(
            "[key_storage]\nkind = \"pkcs11\"\nmodule = \"{MODULE}\"\n\
             uri = \"pkcs11:token=moved;object=intermediate\"\npin_file = \"{}\"\n",
            pin_file(dir)
        ),
    );
    std::fs::write(&cfg_path, cfg).unwrap();
    let offline = ca.tmp.path().join("intermediate.key.offline");
    std::fs::rename(&key, &offline).unwrap();
    // The CA signs through the token now: a new certificate and a CRL, checked by openssl.
    ca.issue("after", &["--server", "--san", "dns:after.test"])
        .ok();
    openssl_verifies(
        Path::new(&ca.root()),
        Path::new(&ca.intermediate()),
        &ca.out.join("after.pem"),
    );
    let crl = ca.tmp.path().join("crl.pem");
    mutual(&["ca", "crl", "--dir", s(&ca.dir), "--out", s(&crl)]).ok();
    crl_verifies(&crl, &ca.intermediate());
    let block = private_key_block(&pkcs11_tool_objects("moved"), "intermediate");
    assert!(block.contains("sensitive"), "{block}");
    // Wrong key in the token: the CA refuses to open rather than sign with it.
    let delete = ["--delete-object", "--type", "privkey"];
    pkcs11_tool(
        "moved",
        &[&delete[..], &["--label", "intermediate"][..]].concat(),
    );
    // A new pair under the same label with its own CKA_ID; the old public object (id 01)
    // stays behind, as it would after a careless swap. The CA pairs the private key with the
    // public object of the same CKA_ID, so it sees the new key and refuses it.
    let keypairgen = ["--keypairgen", "--key-type", "EC:prime256v1"];
    pkcs11_tool(
        "moved",
        &[
            &keypairgen[..],
            &["--label", "intermediate", "--id", "02"][..],
        ]
        .concat(),
    );
    ca.issue("wrong", &["--server", "--san", "dns:wrong.test"])
        .fails_with("does not belong to");
    assert!(!ca.out.join("wrong.pem").exists());
}

/// `mutual renew` (run by `mutual`) from the CA at `url` of the certificate enrolled into `dir`
/// succeeds and gives it a new serial; returns the certificate's path.
fn renews_to_a_new_serial(mutual: fn(&[&str]) -> Out, url: &str, dir: &Path) -> PathBuf {
    let cert = dir.join("cert.pem");
    let first = pki_common::x509(&cert, &["-serial"]);
    let key = dir.join("key.pem");
    mutual(&[
        "renew",
        "--ca-url",
        url,
        "--cert",
        s(&cert),
        "--key",
        s(&key),
    ])
    .ok();
    assert_ne!(pki_common::x509(&cert, &["-serial"]), first, "renewed");
    cert
}

/// `mutual ARGS` with no CA password source at all: no $MUTUAL_CA_PASSWORD, stdin closed, and
/// no controlling terminal (setsid), so a command that asked for the password would fail.
fn no_password(args: &[&str]) -> Out {
    let mut c = Command::new("setsid");
    c.arg("-w")
        .arg(env!("CARGO_BIN_EXE_mutual"))
        .args(args)
        .env_remove("MUTUAL_HOME")
        .env_remove("MUTUAL_CA_PASSWORD");
    pki_common::run_within(c, Duration::from_secs(120))
}

const NO_TERMINAL: &str = "error: no terminal to ask for the CA password (a key this command \
                           uses is in a file)\nhint: use --password-file FILE or set \
                           MUTUAL_CA_PASSWORD";

/// `ca init` with the root and intermediate in token `label` and no password anywhere.
fn all_token_ca(label: &str, dir: &Path) -> TestCa {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let int = format!("pkcs11:token={label};object=intermediate");
    let root = format!("pkcs11:token={label};object=root");
    no_password(&[
        "ca",
        "init",
        "--dir",
        s(&ca_dir),
        "--name",
        "Token CA",
        "--pkcs11-module",
        MODULE,
        "--pkcs11-uri",
        &int,
        "--pkcs11-root-uri",
        &root,
        "--pkcs11-pin-file",
        &pin_file(dir),
    ])
    .ok();
    TestCa {
        tmp,
        dir: ca_dir,
        out,
    }
}

/// `cert issue NAME --dir D --out O ARGS...` with no password source.
fn issue_no_password(ca: &TestCa, name: &str, args: &[&str]) -> Out {
    let mut a = vec!["cert", "issue", name, "--dir", ca.d(), "--out", ca.o()];
    a.extend_from_slice(args);
    no_password(&a)
}

/// `token create --dir D --san SAN` with no password source: the JWT.
fn token_no_password(ca: &TestCa, san: &str) -> String {
    let o = no_password(&["token", "create", "--dir", ca.d(), "--san", san]).ok();
    let jwt = o.stdout.trim().to_string();
    assert_eq!(jwt.split('.').count(), 3, "not a JWT: {jwt}");
    jwt
}

/// `ca serve` on `ca` with no password source in its environment.
fn serve_no_password(ca: &TestCa) -> pki_common::CaServe {
    pki_common::CaServe::start_with_password(&ca.dir, ca.tmp.path().join("serve.log"), &[], None)
}

/// `enroll` with `jwt` against `srv` (its root pinned) into `out`, with no password source.
fn enroll_no_password(srv: &pki_common::CaServe, jwt: &str, out: &Path) -> Out {
    let (url, pin) = (srv.url(), srv.fingerprint());
    no_password(&[
        "enroll",
        "--ca-url",
        &url,
        "--token",
        jwt,
        "--root-sha256",
        &pin,
        "--out",
        s(out),
    ])
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

#[test]
fn a_ca_with_every_key_in_a_token_never_needs_the_password() {
    let Some(dir) = token("nopw") else { return };
    let ca = all_token_ca("nopw", dir);
    config_names_key(
        &ca,
        "[provisioner_key_storage]",
        "nopw",
        "mutual-provisioner",
    );
    assert!(files_ending(&ca.dir, ".key").is_empty());

    // Issue and revoke; CRLs from the intermediate and the root, all in the token.
    let issued =
        issue_no_password(&ca, "web", &["--server", "--san", "dns:web.test", "--json"]).ok();
    let ok = ca.openssl_verify(&ca.out.join("web.pem"), "sslserver");
    assert!(ok.stdout.contains(": OK"), "{}", ok.text());
    let v: serde_json::Value = serde_json::from_str(&issued.stdout).unwrap();
    let serial = v["serial"].as_str().unwrap().to_string();
    no_password(&["cert", "revoke", "--dir", ca.d(), &serial]).ok();
    let crl = ca.tmp.path().join("crl.pem");
    no_password(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl)]).ok();
    crl_verifies(&crl, &ca.intermediate());
    let text = openssl(&["crl", "-in", s(&crl), "-noout", "-text"]).ok();
    assert!(
        text.stdout
            .to_ascii_uppercase()
            .contains(&pki_common::norm_serial(&serial).to_ascii_uppercase()),
        "{}",
        text.stdout
    );
    let root_crl = ca.tmp.path().join("root-crl.pem");
    no_password(&[
        "ca",
        "crl",
        "--dir",
        ca.d(),
        "--root",
        "--out",
        s(&root_crl),
    ])
    .ok();
    crl_verifies(&root_crl, &ca.root());

    // An explicit --password-file that is not needed is said to be unused, not read.
    let o = issue_no_password(
        &ca,
        "other",
        &[
            "--client",
            "--san",
            "dns:other.test",
            "--password-file",
            "/nonexistent/pw",
        ],
    )
    .ok();
    assert!(
        o.stderr.contains(
            "note: --password-file /nonexistent/pw not read: every key this command uses is in \
             a PKCS#11 token"
        ),
        "{}",
        o.stderr
    );

    // Enrollment tokens are signed by a provisioner key made in the same token.
    let jwt = token_no_password(&ca, "dns:svc.test");
    assert!(!ca.dir.join("provisioner.key").exists());
    let block = private_key_block(&pkcs11_tool_objects("nopw"), "mutual-provisioner");
    assert!(block.contains("never extractable"), "{block}");
    assert!(block.contains("always sensitive"), "{block}");

    // ca serve with no password: enroll with that token, renew over mTLS.
    let srv = serve_no_password(&ca);
    let got = ca.tmp.path().join("svc");
    enroll_no_password(&srv, &jwt, &got).ok();
    let cert = renews_to_a_new_serial(no_password, &srv.url(), &got);
    let ok = ca.openssl_verify(&cert, "sslclient");
    assert!(ok.stdout.contains(": OK"), "{}", ok.text());
    assert!(!srv.log_text().contains(PIN));
    drop(srv);

    // A new intermediate in the token: no password. One in a file would need it to encrypt
    // its key, and there is none to be had.
    no_password(&[
        "ca",
        "rotate-intermediate",
        "--dir",
        ca.d(),
        "--key-storage",
        "pkcs11",
        "--pkcs11-module",
        MODULE,
        "--pkcs11-uri",
        "pkcs11:token=nopw;object=int-2",
        "--pkcs11-pin-file",
        &pin_file(dir),
    ])
    .ok();
    issue_no_password(&ca, "after", &["--server", "--san", "dns:after.test"]).ok();
    openssl_verifies(
        Path::new(&ca.root()),
        &ca.dir.join("issuers/int-2.pem"),
        &ca.out.join("after.pem"),
    );
    let o = no_password(&["ca", "rotate-intermediate", "--dir", ca.d()]);
    assert!(o.stderr.contains(NO_TERMINAL), "{}", o.text());
    assert!(!ca.dir.join("issuers/int-3.pem").exists());
    assert!(files_ending(&ca.dir, ".key").is_empty());
}

#[test]
fn a_file_root_still_needs_the_password_for_the_commands_that_use_it() {
    let Some(dir) = token("fileroot") else { return };
    // Without a password, a root that would go to a file is refused and nothing is made.
    let tmp = tempfile::tempdir().unwrap();
    let o = no_password(&[
        "ca",
        "init",
        "--dir",
        s(&tmp.path().join("ca")),
        "--pkcs11-module",
        MODULE,
        "--pkcs11-uri",
        "pkcs11:token=fileroot;object=other",
        "--pkcs11-pin-file",
        &pin_file(dir),
    ]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(o.stderr.contains(NO_TERMINAL), "{}", o.text());
    assert!(!tmp.path().join("ca").exists());

    // Intermediate in the token, root.key a file (encrypted with the password).
    let ca = token_ca("fileroot", dir);
    assert_eq!(files_ending(&ca.dir, ".key"), vec!["root.key".to_string()]);
    // What uses only the intermediate and the provisioner key needs no password...
    issue_no_password(&ca, "web", &["--server", "--san", "dns:web.test"]).ok();
    token_no_password(&ca, "dns:a.test");
    no_password(&[
        "ca",
        "crl",
        "--dir",
        ca.d(),
        "--out",
        s(&ca.out.join("c.pem")),
    ])
    .ok();
    assert!(!ca.dir.join("provisioner.key").exists());
    // ... what signs with the root does, and is refused without it, changing nothing.
    let before = ca.snapshot();
    for args in [
        &["ca", "crl", "--dir", ca.d(), "--root"][..],
        &["ca", "rotate-root", "--dir", ca.d()][..],
        &[
            "ca",
            "rotate-intermediate",
            "--dir",
            ca.d(),
            "--key-storage",
            "pkcs11",
            "--pkcs11-module",
            MODULE,
            "--pkcs11-uri",
            "pkcs11:token=fileroot;object=int-2",
            "--pkcs11-pin-file",
            &pin_file(dir),
        ][..],
    ] {
        let o = no_password(args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.text());
        assert!(o.stderr.contains(NO_TERMINAL), "{args:?}: {}", o.text());
    }
    assert!(ca.snapshot() == before, "a refused command changed the CA");
    // With the password the root signs.
    let crl = ca.tmp.path().join("root-crl.pem");
    mutual(&["ca", "crl", "--dir", ca.d(), "--root", "--out", s(&crl)]).ok();
    crl_verifies(&crl, &ca.root());
}

/// The value of the `mutual_pkcs11_key_up` series of `uri` in a metrics text.
fn key_up(metrics: &str, uri: &str) -> Option<String> {
    let series = format!("mutual_pkcs11_key_up{{key=\"{uri}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().to_string())
}

#[test]
fn ca_serve_reports_a_lost_token_key_in_metrics_and_health() {
    let Some(_dir) = token("health-gone") else {
        return;
    };
    let ca = all_token_ca("health-gone", _dir);
    let srv = serve_no_password(&ca);
    let int = "pkcs11:token=health-gone;object=intermediate";
    let prov = "pkcs11:token=health-gone;object=mutual-provisioner";
    let (status, body) = srv.get("/health");
    assert_eq!(status, 200, "{body}");
    let (_, m) = srv.get("/metrics");
    assert_eq!(key_up(&m, int).as_deref(), Some("1"), "{m}");
    assert_eq!(key_up(&m, prov).as_deref(), Some("1"), "{m}");
    let jwt = token_no_password(&ca, "dns:x.test");

    // The token goes away: the enrollment that needs the intermediate's signature fails, and
    // from then on /health answers 503 naming the key, and the metric says 0.
    let (tdir, gone) = take_token_away("health-gone");
    let o = enroll_no_password(&srv, &jwt, &ca.tmp.path().join("x"));
    assert_ne!(o.code, 0, "{}", o.text());
    let (status, body) = srv.get("/health");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["reason"], "key_unavailable", "{body}");
    assert_eq!(v["store"], "ok", "{body}");
    let why = v["pkcs11_keys_down"][int]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(why.contains("token"), "{why}");
    let (_, m) = srv.get("/metrics");
    assert_eq!(key_up(&m, int).as_deref(), Some("0"), "{m}");
    assert!(!srv.log_text().contains(PIN));

    // The process keeps serving what needs no token (SoftHSM does not rescan its token
    // directory within a process, so the key's return is not observable here).
    assert!(srv.get("/v1/roots").0 == 200);
    std::fs::rename(&gone, &tdir).unwrap();
}

#[test]
fn rotate_root_makes_the_new_root_in_a_token_and_retire_root_records_it() {
    let Some(dir) = token("rollover-tok") else {
        return;
    };
    let ca = all_token_ca("rollover-tok", dir);
    let pin = pin_file(dir);
    let in_token = |object: &str| {
        vec![
            "--key-storage".to_string(),
            "pkcs11".into(),
            "--pkcs11-module".into(),
            MODULE.into(),
            "--pkcs11-uri".into(),
            format!("pkcs11:token=rollover-tok;object={object}"),
            "--pkcs11-pin-file".into(),
            pin.clone(),
        ]
    };
    let with = |base: &[&str], extra: &[String]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(extra.iter().map(String::as_str));
        no_password(&a)
    };
    // The current root's own key is no new root: refused, nothing written.
    let before = ca.snapshot();
    let o = with(&["ca", "rotate-root", "--dir", ca.d()], &in_token("root"));
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr.contains(
            "refused: the key named for the new root is the current root's key: a rollover \
             needs a new key (name another object in --pkcs11-uri)"
        ),
        "{}",
        o.text()
    );
    assert!(ca.snapshot() == before);
    with(
        &["ca", "rotate-root", "--dir", ca.d(), "--min-overlap", "1s"],
        &in_token("root-2"),
    )
    .ok();
    assert!(!ca.dir.join("roots/root-2.key").exists());
    let trust = std::fs::read_to_string(ca.dir.join("trust.toml")).unwrap();
    assert!(
        trust.contains("uri = \"pkcs11:token=rollover-tok;object=root-2\""),
        "{trust}"
    );
    assert!(!trust.contains(PIN));
    let block = private_key_block(&pkcs11_tool_objects("rollover-tok"), "root-2");
    assert!(block.contains("never extractable"), "{block}");
    // openssl checks both cross certificates: the new root (key in the token) under the old
    // root, and the old root under the new one.
    let roots = ca.dir.join("roots");
    let ok = openssl(&[
        "verify",
        "-CAfile",
        &ca.root(),
        s(&roots.join("root-2-by-old-root.pem")),
    ]);
    assert!(ok.stdout.contains(": OK"), "{}", ok.text());
    let ok = openssl(&[
        "verify",
        "-CAfile",
        s(&roots.join("root-2.pem")),
        s(&roots.join("root-1-by-root-2.pem")),
    ]);
    assert!(ok.stdout.contains(": OK"), "{}", ok.text());

    // Activate: the new intermediate (in the token) is signed by the new root in the token.
    let activated = eventually(Duration::from_secs(60), || {
        let o = with(
            &["ca", "rotate-root", "--dir", ca.d(), "--activate"],
            &in_token("int-r2"),
        );
        (o.code == 0).then_some(o)
    });
    assert!(activated.is_some());
    issue_no_password(&ca, "late", &["--client", "--san", "dns:late.test"]).ok();
    openssl_verifies(
        &roots.join("root-2.pem"),
        &ca.dir.join("issuers/int-2.pem"),
        &ca.out.join("late.pem"),
    );

    // Retire: root.pem is the new root and mutual-ca.toml says its key is in the token; the
    // root CRL is signed there.
    no_password(&["ca", "retire-root", "--dir", ca.d()]).ok();
    config_names_key(&ca, "[root_key_storage]", "rollover-tok", "root-2");
    assert_eq!(
        std::fs::read(ca.root()).unwrap(),
        std::fs::read(roots.join("root-2.pem")).unwrap()
    );
    let crl = ca.tmp.path().join("root-crl.pem");
    no_password(&["ca", "crl", "--dir", ca.d(), "--root", "--out", s(&crl)]).ok();
    crl_verifies(&crl, &ca.root());
    assert!(files_ending(&ca.dir, ".key").is_empty());
}
