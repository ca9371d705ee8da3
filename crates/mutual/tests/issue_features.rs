//! Issue 14's missing features, end to end with the real binary and real peers: subject O/OU
//! (matched by `serve --allow-ou`), email SANs, absolute validity, `--out` creating its
//! directory, the root-signed CRL (nginx `ssl_crl` and `serve --crl` checking the whole chain),
//! shell completions and man pages generated from the clap definitions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;
mod proxy_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pki_common::{mutual, openssl, s, x509, TestCa};
use proxy_common::{have, http_backend, spawn_proxy, ChildGuard};

/// curl over mTLS to https://localhost:PORT/; returns (curl exit code, HTTP status).
fn curl(port: u16, root: &str, cert: Option<(&Path, &Path)>) -> (i32, String) {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "-o",
        "/dev/null",
        "--max-time",
        "10",
        "--cacert",
        root,
    ]);
    if let Some((cert, key)) = cert {
        c.args(["--cert", s(cert), "--key", s(key)]);
    }
    c.args(["-w", "%{http_code}", &format!("https://localhost:{port}/")]);
    c.args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn pem(ca: &TestCa, name: &str) -> PathBuf {
    ca.out.join(format!("{name}.pem"))
}

fn key(ca: &TestCa, name: &str) -> PathBuf {
    ca.out.join(format!("{name}.key"))
}

fn server_cert(ca: &TestCa) {
    ca.issue("server", pki_common::LOCALHOST_SERVER).ok();
}

/// The audit line for the `n`-th connection (1-based), waiting for it.
fn audit(p: &proxy_common::Proxy, n: usize) -> serde_json::Value {
    p.wait_audit(n)[n - 1].clone()
}

#[test]
fn org_and_ou_reach_the_subject_and_serve_allow_ou_matches_them() {
    let ca = TestCa::new(&[]);
    server_cert(&ca);
    ca.issue("alice", &["--org", "Acme", "--ou", "payments"])
        .ok();
    ca.issue("bob", &["--org", "Acme", "--ou", "marketing"])
        .ok();
    let subj = x509(&pem(&ca, "alice"), &["-subject", "-nameopt", "RFC2253"]);
    assert_eq!(subj.trim(), "subject=CN=alice,OU=payments,O=Acme");
    let inv = ca.inventory();
    let alice = inv.iter().find(|r| r["name"] == "alice").unwrap();
    assert_eq!(alice["subject"], "O=Acme, OU=payments, CN=alice");
    ca.issue("x", &["--ou", ""])
        .fails_with("organizational unit (OU) must be 1 to 64");

    let backend = http_backend();
    let args: Vec<String> = [
        "--cert",
        s(&pem(&ca, "server")),
        "--key",
        s(&key(&ca, "server")),
        "--ca",
        &ca.root(),
        "--allow-ou",
        "payments",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let p = spawn_proxy("serve", "--backend", &backend.addr.to_string(), &args);
    let (_, code) = curl(
        p.port,
        &ca.root(),
        Some((&pem(&ca, "alice"), &key(&ca, "alice"))),
    );
    assert_eq!(code, "200");
    let a = audit(&p, 1);
    assert_eq!(a["result"], "allowed", "{a}");
    assert_eq!(a["reason"], "ok", "{a}");
    curl(
        p.port,
        &ca.root(),
        Some((&pem(&ca, "bob"), &key(&ca, "bob"))),
    );
    let b = audit(&p, 2);
    assert_eq!(b["result"], "denied", "{b}");
    assert_eq!(b["reason"], "policy_denied", "{b}");
}

/// `mutual cert verify` of the CA's certificate `name` as a client certificate.
fn verify_as_client(ca: &TestCa, name: &str) -> pki_common::Out {
    let root = ca.root();
    let cert = pem(ca, name);
    mutual(&[
        "cert",
        "verify",
        s(&cert),
        "--roots",
        &root,
        "--purpose",
        "client",
    ])
}

#[test]
fn email_sans_are_issued_and_verify() {
    let ca = TestCa::new(&[]);
    ca.issue("ops", &["--san", "email:Ops@Example.ORG"]).ok();
    let o = x509(&pem(&ca, "ops"), &["-ext", "subjectAltName"]);
    assert!(o.contains("email:Ops@example.org"), "{}", o);
    ca.openssl_verify(&pem(&ca, "ops"), "sslclient").ok();
    let v = verify_as_client(&ca, "ops");
    assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
    let inv = ca.inventory();
    assert_eq!(inv[0]["sans"], serde_json::json!(["email:Ops@example.org"]));
    ca.issue("bad", &["--san", "email:nobody"])
        .fails_with("needs a '@'");
    ca.issue("bad", &["--san", "email:a b@example.org"])
        .fails_with("invalid SAN");
}

fn dates(p: &Path) -> (String, String) {
    let o = x509(p, &["-startdate", "-enddate", "-dateopt", "iso_8601"]);
    let mut nb = String::new();
    let mut na = String::new();
    for l in o.lines() {
        if let Some(v) = l.strip_prefix("notBefore=") {
            nb = v.to_string();
        }
        if let Some(v) = l.strip_prefix("notAfter=") {
            na = v.to_string();
        }
    }
    (nb, na)
}

#[test]
fn absolute_validity_is_signed_as_given_and_bounded() {
    let ca = TestCa::new(&[]);
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let nb = fmt(now + time::Duration::days(2));
    let na = fmt(now + time::Duration::days(9));
    ca.issue("later", &["--not-before", &nb, "--not-after", &na])
        .ok();
    let (got_nb, got_na) = dates(&pem(&ca, "later"));
    assert_eq!(got_nb.replace(' ', "T"), nb);
    assert_eq!(got_na.replace(' ', "T"), na);
    // Not valid yet: the verifier says so with its reason label.
    let v = verify_as_client(&ca, "later");
    assert_eq!(v.code, 1);
    assert!(v.stdout.contains("not_yet_valid"), "{}", v.stdout);

    // --not-after alone: starts now (backdated), ends exactly there.
    let na2 = fmt(now + time::Duration::hours(30));
    ca.issue("until", &["--not-after", &na2]).ok();
    assert_eq!(dates(&pem(&ca, "until")).1.replace(' ', "T"), na2);

    ca.issue("x", &["--ttl", "1h", "--not-after", &na])
        .fails_with("cannot be used with");
    ca.issue("x", &["--not-after", "2001-01-01T00:00:00Z"])
        .fails_with("is in the past");
    ca.issue("x", &["--not-after", "2199-01-01T00:00:00Z"])
        .fails_with("after the intermediate expires");
    ca.issue("x", &["--not-before", "2001-01-01T00:00:00Z"])
        .fails_with("before the intermediate's own start");
    ca.issue("x", &["--not-before", &na, "--not-after", &nb])
        .fails_with("must be later than --not-before");
    ca.issue("x", &["--not-after", "tomorrow"])
        .fails_with("is not an RFC 3339 time");
    assert!(ca.inventory().iter().all(|r| r["name"] != "x"));
}

#[test]
fn out_directory_is_created_0700() {
    let ca = TestCa::new(&[]);
    let out = ca.tmp.path().join("new/certs");
    mutual(&["cert", "issue", "svc", "--dir", ca.d(), "--out", s(&out)]).ok();
    assert!(out.join("svc.pem").exists() && out.join("svc.key").exists());
    for d in [&out, &ca.tmp.path().join("new")] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    // An existing file where the directory should be is still refused.
    let f = ca.tmp.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    mutual(&["cert", "issue", "svc2", "--dir", ca.d(), "--out", s(&f)])
        .fails_with("is not a directory");
}

/// A CA with a server certificate, a good and a revoked client, the intermediate's CRL, the
/// root's CRL and both concatenated.
struct ChainCrls {
    ca: TestCa,
    leaf_crl: PathBuf,
    both: PathBuf,
}

fn chain_crls() -> ChainCrls {
    let ca = TestCa::new(&[]);
    server_cert(&ca);
    ca.issue("good", &[]).ok();
    ca.issue("gone", &[]).ok();
    mutual(&[
        "cert",
        "revoke",
        "--dir",
        ca.d(),
        "--cert",
        s(&pem(&ca, "gone")),
    ])
    .ok();
    let leaf_crl = ca.out.join("leaf.crl.pem");
    let root_crl = ca.out.join("root.crl.pem");
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&leaf_crl)]).ok();
    mutual(&[
        "ca",
        "crl",
        "--root",
        "--dir",
        ca.d(),
        "--out",
        s(&root_crl),
    ])
    .ok();
    let t = openssl(&[
        "crl",
        "-in",
        s(&root_crl),
        "-noout",
        "-issuer",
        "-nameopt",
        "RFC2253",
    ])
    .ok();
    assert_eq!(t.stdout.trim(), "issuer=CN=Test CA Root,O=Test CA");
    openssl(&["crl", "-in", s(&root_crl), "-noout", "-CAfile", &ca.root()]).ok();
    let both = ca.out.join("chain.crl.pem");
    let text =
        std::fs::read_to_string(&leaf_crl).unwrap() + &std::fs::read_to_string(&root_crl).unwrap();
    std::fs::write(&both, text).unwrap();
    ChainCrls { ca, leaf_crl, both }
}

fn nginx(ca: &TestCa, crl: &Path) -> (ChildGuard, u16, tempfile::TempDir) {
    let ssl = format!(
        "  ssl_certificate {cert};\n  ssl_certificate_key {key};\n  ssl_client_certificate {root};\n\
         ssl_verify_client on;\n  ssl_verify_depth 2;\n  ssl_crl {crl};",
        cert = s(&pem(ca, "server")),
        key = s(&key(ca, "server")),
        root = ca.root(),
        crl = s(crl),
    );
    mutual_test::nginx_tls(&ssl)
}

#[test]
fn nginx_ssl_crl_accepts_good_and_refuses_revoked_with_the_root_crl() {
    if mutual_test::skip_without("nginx") {
        return;
    }
    let c = chain_crls();
    let ca = &c.ca;
    let good = (pem(ca, "good"), key(ca, "good"));
    let gone = (pem(ca, "gone"), key(ca, "gone"));
    {
        let (_n, port, _d) = nginx(ca, &c.both);
        assert_eq!(curl(port, &ca.root(), Some((&good.0, &good.1))).1, "200");
        // nginx completes the handshake and answers 400 for a certificate it rejected.
        assert_eq!(curl(port, &ca.root(), Some((&gone.0, &gone.1))).1, "400");
    }
    {
        // The control: with the intermediate's CRL alone nginx cannot check the intermediate,
        // so even the good client is refused. This is why the root CRL exists.
        let (_n, port, d) = nginx(ca, &c.leaf_crl);
        assert_eq!(curl(port, &ca.root(), Some((&good.0, &good.1))).1, "400");
        let log = std::fs::read_to_string(d.path().join("error.log")).unwrap_or_default();
        assert!(log.contains("unable to get certificate CRL"), "{log}");
    }
}

#[test]
fn serve_checks_the_whole_chain_with_the_root_crl() {
    let c = chain_crls();
    let ca = &c.ca;
    let backend = http_backend();
    let run = |crl: &Path| {
        let args: Vec<String> = [
            "--cert",
            s(&pem(ca, "server")),
            "--key",
            s(&key(ca, "server")),
            "--ca",
            &ca.root(),
            "--crl",
            s(crl),
            "--allow-any",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        spawn_proxy("serve", "--backend", &backend.addr.to_string(), &args)
    };
    let p = run(&c.both);
    assert_eq!(
        curl(
            p.port,
            &ca.root(),
            Some((&pem(ca, "good"), &key(ca, "good")))
        )
        .1,
        "200"
    );
    assert_eq!(audit(&p, 1)["reason"], "ok");
    curl(
        p.port,
        &ca.root(),
        Some((&pem(ca, "gone"), &key(ca, "gone"))),
    );
    let a = audit(&p, 2);
    assert_eq!(
        (a["result"].as_str(), a["reason"].as_str()),
        (Some("failed"), Some("revoked")),
        "{a}"
    );
    drop(p);
    // Without the root's CRL the intermediate's status is unknown: denied, not guessed.
    let p = run(&c.leaf_crl);
    curl(
        p.port,
        &ca.root(),
        Some((&pem(ca, "good"), &key(ca, "good"))),
    );
    let a = audit(&p, 1);
    assert_eq!(a["reason"], "revocation_unknown", "{a}");
}

#[test]
fn root_crl_needs_the_root_key() {
    let ca = TestCa::new(&[]);
    let out = ca.out.join("root.crl.pem");
    pki_common::mutual_pw(
        Some("wrong"),
        &["ca", "crl", "--root", "--dir", ca.d(), "--out", s(&out)],
    )
    .fails_with("wrong CA password");
    std::fs::rename(
        ca.dir.join("root.key"),
        ca.tmp.path().join("root.key.offline"),
    )
    .unwrap();
    mutual(&["ca", "crl", "--root", "--dir", ca.d(), "--out", s(&out)])
        .fails_with("root key")
        .fails_with("is not here (moved offline?)");
    assert!(!out.exists());
    // The intermediate's CRL needs no root key.
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&out)]).ok();
}

#[test]
fn bash_completion_parses_and_completes_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mutual.bash");
    let o = mutual(&["completions", "bash"]).ok();
    std::fs::write(&script, &o.stdout).unwrap();
    let st = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success(), "bash -n rejected the completion script");
    let probe = format!(
        "source {}\ncomplete -p mutual\nCOMP_WORDS=(mutual ce); COMP_CWORD=1; COMP_LINE='mutual ce'; COMP_POINT=9\n\
         _mutual mutual ce mutual\necho \"WORDS:${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(mutual cert is); COMP_CWORD=2; COMP_LINE='mutual cert is'; COMP_POINT=14\n\
         _mutual mutual is cert\necho \"WORDS2:${{COMPREPLY[*]}}\"\n",
        s(&script)
    );
    let out = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("-F _mutual mutual"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words = text
        .lines()
        .find_map(|l| l.strip_prefix("WORDS:"))
        .unwrap_or("");
    assert_eq!(words.trim(), "cert", "{text}");
    let words2 = text
        .lines()
        .find_map(|l| l.strip_prefix("WORDS2:"))
        .unwrap_or("");
    assert_eq!(words2.trim(), "issue", "{text}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let o = mutual(&["completions", shell]).ok();
        assert!(
            o.stdout.contains("mutual") && o.stdout.contains("not-after"),
            "{shell}"
        );
    }
    let bad = mutual(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2);
}

#[test]
fn man_pages_one_per_command_render() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man/man1");
    let o = mutual(&["man", "--out", s(&out)]).ok();
    assert!(o.stderr.contains("man pages"), "{}", o.stderr);
    // A file where the directory should be: said so (it was "cannot create X: File exists").
    let page = out.join("mutual.1");
    let o = mutual(&["man", "--out", s(&page)]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("is a file: give a directory"),
        "{}",
        o.stderr
    );
    for page in [
        "mutual.1",
        "mutual-cert-issue.1",
        "mutual-ca-crl.1",
        "mutual-serve.1",
        "mutual-completions.1",
    ] {
        assert!(out.join(page).exists(), "{page} missing");
    }
    assert!(!out.join("mutual-help.1").exists());
    let issue = std::fs::read_to_string(out.join("mutual-cert-issue.1")).unwrap();
    assert!(
        issue.contains(".TH mutual-cert-issue 1  \"mutual 0.1.0\""),
        "{}",
        &issue[..200.min(issue.len())]
    );
    assert!(
        issue.contains(".SH SYNOPSIS") && issue.contains("not\\-after"),
        "roff structure"
    );
    let stdout = mutual(&["man"]).ok().stdout;
    assert!(
        stdout.contains(".TH mutual 1"),
        "{}",
        &stdout[..200.min(stdout.len())]
    );
    // Rendered as a person reads it.
    let render = if have("groff") {
        Command::new("groff")
            .args(["-man", "-Tutf8", "-P-cbou"])
            .arg(out.join("mutual-cert-issue.1"))
            .output()
            .unwrap()
    } else if have("man") {
        Command::new("man")
            .arg("-l")
            .arg(out.join("mutual-cert-issue.1"))
            .env("MANPAGER", "cat")
            .output()
            .unwrap()
    } else {
        println!("SKIPPED rendering: neither groff nor man installed");
        return;
    };
    assert!(render.status.success());
    let text = String::from_utf8_lossy(&render.stdout);
    assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
    assert!(text.contains("--not-after <TIME>"), "{text}");
}

/// The online CA's token path (`/v1/sign` through `mutual enroll`) issues email SANs too: the
/// token names the address, the enroll client's CSR asks for it, the CA signs it.
#[test]
fn email_san_through_a_token_and_v1_sign() {
    let ca = TestCa::new(&[]);
    let port = proxy_common::free_port();
    let log = ca.tmp.path().join("ca-serve.log");
    let child = pki_common::mutual_cmd(Some(pki_common::PW), &["ca", "serve", "--dir", ca.d()])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--rate-limit",
            "off",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut g = ChildGuard(child);
    let up = mutual_test::eventually(Duration::from_secs(20), || {
        if let Ok(Some(st)) = g.0.try_wait() {
            panic!(
                "ca serve exited with {st}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    assert!(up.is_some(), "ca serve did not listen");
    let token = mutual(&[
        "token",
        "create",
        "--dir",
        ca.d(),
        "--usage",
        "client",
        "--san",
        "email:ops@example.org",
        "--san",
        "uri:spiffe://example.org/ops",
    ])
    .ok()
    .stdout
    .trim()
    .to_string();
    let fp = pki_common::fingerprint_of(Path::new(&ca.root()));
    let out = ca.tmp.path().join("enrolled");
    mutual(&[
        "enroll",
        "--ca-url",
        &format!("https://127.0.0.1:{port}"),
        "--token",
        &token,
        "--root-sha256",
        &fp,
        "--out",
        s(&out),
    ])
    .ok();
    let o = x509(&out.join("cert.pem"), &["-ext", "subjectAltName"]);
    assert!(o.contains("email:ops@example.org"), "{}", o);
    assert!(o.contains("URI:spiffe://example.org/ops"), "{}", o);
}
