//! One voice (issue 14): every command's `--json` output speaks one vocabulary (docs/json.md),
//! `--json` errors are `{"error": {"reason", "message", "hint"}}` with exit 2, messages carry no
//! `Debug` text of library types nor a cause twice, hints name the flags of the command that
//! printed them, durations read right at every scale, and logs carry no ANSI codes off a
//! terminal. Everything runs the real binary (and a real openssl s_server for the probe).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use mutual_test::{eventually, free_port, openssl_s_server_files, wait_for_port, ChildGuard};
use pki_common::*;
use serde_json::Value;

fn json_of(o: &Out) -> Value {
    serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", o.stdout, o.stderr))
}

fn is_hex_lower(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

fn rfc3339_ok(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        && s.ends_with('Z')
}

/// Walks a JSON value and checks every field the vocabulary names, wherever it appears.
fn check_vocabulary(v: &Value, at: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let here = format!("{at}.{k}");
                let time_key = ["not_before", "not_after"].contains(&k.as_str())
                    || k.ends_with("_at")
                    || k.ends_with("_not_after")
                    || k == "this_update"
                    || k == "next_update"
                    || k == "expires_at";
                if time_key {
                    if let Some(s) = x.as_str() {
                        assert!(rfc3339_ok(s), "{here}: {s:?} is not RFC 3339 UTC");
                    } else {
                        assert!(x.is_null(), "{here}: {x} is not an RFC 3339 string");
                    }
                }
                if k.ends_with("_unix") {
                    assert!(x.is_i64() || x.is_null(), "{here}: {x} is not an integer");
                }
                if k == "sha256" || k.ends_with("_sha256") {
                    let s = x.as_str().unwrap_or_else(|| panic!("{here}: {x}"));
                    assert!(
                        s.len() == 64 && is_hex_lower(s),
                        "{here}: {s:?} is not 64 lowercase hex"
                    );
                }
                if k == "serial" || k == "crl_number" {
                    if let Some(s) = x.as_str() {
                        assert!(
                            is_hex_lower(s) && !(s.len() > 2 && s.starts_with("00")),
                            "{here}: {s:?} is not lowercase hex without a leading 00"
                        );
                    }
                }
                if k == "revoked" {
                    for s in x.as_array().into_iter().flatten() {
                        let s = s.as_str().unwrap();
                        assert!(is_hex_lower(s) && !s.starts_with("00"), "{here}: {s:?}");
                    }
                }
                if k == "role" {
                    let r = x.as_str().unwrap();
                    assert!(
                        ["leaf", "intermediate", "root"].contains(&r),
                        "{here}: role {r:?}"
                    );
                }
                check_vocabulary(x, &here);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check_vocabulary(x, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

fn check(o: &Out) -> Value {
    let v = json_of(o);
    check_vocabulary(&v, "$");
    v
}

/// A `--json` error: exit 2, one `{"error": {...}}` object on stdout with the exact reason.
fn json_error(o: &Out, reason: &str) -> Value {
    assert_eq!(o.code, 2, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    let v = json_of(o);
    let e = &v["error"];
    assert_eq!(e["reason"], reason, "{v}");
    for k in ["message", "hint"] {
        assert!(
            e[k].as_str().is_some_and(|s| !s.is_empty()),
            "error.{k} missing: {v}"
        );
    }
    v
}

/// No `Debug` output of library types, no cause printed twice.
fn no_debug_text(text: &str) {
    for bad in [
        "MissingSectionEnd",
        "NomError",
        "TrailingData",
        "UnexpectedTag",
        "DnsName(",
        "CaUsedAsEndEntity",
        "Der(",
        "{ ",
    ] {
        assert!(!text.contains(bad), "{bad:?} leaked: {text}");
    }
    let os = "(os error 2)";
    assert!(text.matches(os).count() <= 1, "cause printed twice: {text}");
}

#[test]
fn every_json_output_speaks_the_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let d = s(&dir);
    let out = tmp.path();
    let o = out.to_str().unwrap();
    let init = check(&mutual(&["ca", "init", "--dir", d, "--json"]).ok());
    assert!(init["intermediate_not_after_unix"].is_i64());

    let issued = check(
        &mutual(&[
            "cert",
            "issue",
            "srv",
            "--server",
            "--san",
            "dns:srv.test",
            "--dir",
            d,
            "--out",
            o,
            "--json",
        ])
        .ok(),
    );
    check(
        &mutual(&[
            "cert",
            "issue",
            "cli",
            "--san",
            "uri:spiffe://example.org/cli",
            "--dir",
            d,
            "--out",
            o,
            "--json",
        ])
        .ok(),
    );
    let serial = issued["serial"].as_str().unwrap().to_string();
    let sha = issued["sha256"].as_str().unwrap().to_string();

    let inspect = check(&mutual(&["cert", "inspect", s(&out.join("srv.pem")), "--json"]).ok());
    // The same facts under the same names in every command.
    assert_eq!(inspect[0]["serial"], serial.as_str());
    assert_eq!(inspect[0]["sha256"], sha.as_str());
    assert_eq!(inspect[0]["not_after"], issued["not_after"]);
    let list = check(&mutual(&["cert", "list", "--dir", d, "--json"]).ok());
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["serial"] == serial.as_str())
        .unwrap();
    assert_eq!(row["sha256"], sha.as_str());
    assert_eq!(row["not_after"], issued["not_after"]);
    assert_eq!(row["not_after_unix"], issued["not_after_unix"]);

    let root = dir.join("root.pem");
    let ok = check(
        &mutual(&[
            "cert",
            "verify",
            s(&out.join("srv.pem")),
            "--roots",
            s(&root),
            "--name",
            "srv.test",
            "--json",
        ])
        .ok(),
    );
    assert_eq!(chain_roles(&ok), ["leaf", "intermediate", "root"]);

    let revoked = check(
        &mutual(&[
            "cert",
            "revoke",
            &serial,
            "--dir",
            d,
            "--reason",
            "superseded",
            "--json",
        ])
        .ok(),
    );
    assert!(revoked["revoked_at_unix"].is_i64(), "{revoked}");
    let crl_path = out.join("crl.pem");
    let crl = check(&mutual(&["ca", "crl", "--dir", d, "--out", s(&crl_path), "--json"]).ok());
    assert_eq!(crl["revoked"][0], serial.as_str(), "{crl}");

    // A revoked leaf: the verdict changes, the roles do not.
    let bad = mutual(&[
        "cert",
        "verify",
        s(&out.join("srv.pem")),
        "--roots",
        s(&root),
        "--crl",
        s(&crl_path),
        "--crl-leaf-only",
        "--json",
    ]);
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    let bad = check(&bad);
    assert_eq!(bad["reason"], "revoked");
    let roles: Vec<_> = bad["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["role"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(roles, ["leaf", "intermediate"], "{bad}");

    let tok = mutual(&[
        "token",
        "create",
        "--san",
        "dns:a.test",
        "--dir",
        d,
        "--json",
    ])
    .ok();
    let tok = check(&tok);
    assert!(tok["expires_at_unix"].is_i64(), "{tok}");

    let pair = check(
        &mutual(&[
            "probe",
            "--pair",
            s(&out.join("cli.pem")),
            s(&out.join("cli.key")),
            "--json",
        ])
        .ok(),
    );
    assert!(pair["chain"][0]["not_after_unix"].is_i64(), "{pair}");
    assert!(pair["chain"][0]["seconds_left"].is_i64(), "{pair}");

    // Registration entries: created, listed in the same form, deleted; a second delete is the
    // error object with exit 1 (the text form's code).
    let entry = check(
        &mutual(&[
            "agent",
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--selector",
            "unix:uid:1000",
            "--node",
            "spiffe://example.org/node/n1",
            "--dir",
            d,
            "--json",
        ])
        .ok(),
    );
    assert_eq!(entry["ttl"], 3600, "{entry}");
    assert!(entry["created_at_unix"].is_i64(), "{entry}");
    let entries = check(&mutual(&["agent", "entry", "list", "--dir", d, "--json"]).ok());
    assert_eq!(entries, serde_json::json!([entry]));
    let id = entry["id"].as_str().unwrap();
    let delete = || mutual(&["agent", "entry", "delete", id, "--dir", d, "--json"]);
    assert_eq!(
        check(&delete().ok()),
        serde_json::json!({"id": id, "deleted": true})
    );
    let again = delete();
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert_eq!(json_of(&again)["error"]["reason"], "not_found");
}

/// `cert inspect` and the probe read a certificate through one reader
/// (`mutual_policy::CertFacts`): what both report of the same certificate is the same, under
/// the same names (the probe's `eku` is inspect's `extended_key_usage`).
#[test]
fn probe_and_inspect_report_a_certificate_alike() {
    use mutual_test::{LeafOpts, Purpose, TestPki};
    let sans = [
        "dns:a.test",
        "ip:10.1.2.3",
        "ip:::1",
        "uri:spiffe://example.org/a",
    ];
    let pki = TestPki::new("alike");
    let opts = sans
        .iter()
        .fold(LeafOpts::new("alike").purpose(Purpose::Both), |o, s| {
            o.san(s)
        });
    let leaf = pki.leaf("alike", opts);
    let inspected = mutual_pki::inspect::inspect_pem_or_der(&leaf.der).unwrap();
    let inspect = serde_json::to_value(&inspected[0]).unwrap();
    let probe =
        serde_json::to_value(mutual_probe::certinfo::summarize(&leaf.der).unwrap()).unwrap();
    for k in [
        "subject",
        "issuer",
        "serial",
        "sans",
        "spiffe_id",
        "not_before",
        "not_before_unix",
        "not_after",
        "not_after_unix",
        "signature_algorithm",
        "sha256",
        "is_ca",
    ] {
        assert_eq!(inspect[k], probe[k], "{k}: inspect {inspect} probe {probe}");
    }
    assert_eq!(inspect["extended_key_usage"], probe["eku"]);
    assert_eq!(probe["sans"], serde_json::json!(sans));
    assert_eq!(probe["spiffe_id"], "spiffe://example.org/a");
    assert_eq!(
        probe["eku"],
        serde_json::json!(["serverAuth", "clientAuth"])
    );
    assert_eq!(probe["serial"], leaf.serial_hex.trim_start_matches("00"));
}

#[test]
fn json_errors_are_objects_with_reason_message_hint() {
    let ca = TestCa::new(&[]);
    let tmp = ca.tmp.path();
    json_error(
        &mutual(&["cert", "inspect", s(&tmp.join("nope.pem")), "--json"]),
        "io",
    );
    json_error(
        &mutual(&[
            "cert",
            "issue",
            "x",
            "--ttl",
            "5q",
            "--dir",
            ca.d(),
            "--json",
        ]),
        "usage",
    );
    json_error(&mutual(&["cert", "issue", "--json"]), "usage");
    json_error(
        &mutual(&["cert", "list", "--dir", s(&tmp.join("none")), "--json"]),
        "config",
    );
    std::fs::write(tmp.join("junk.pem"), "hello").unwrap();
    json_error(
        &mutual(&["cert", "inspect", s(&tmp.join("junk.pem")), "--json"]),
        "malformed",
    );
    ca.issue("a", &[]).ok();
    let e = json_error(&ca.issue("a", &["--json"]), "exists");
    assert!(
        e["error"]["hint"].as_str().unwrap().contains("--force"),
        "{e}"
    );
    json_error(
        &mutual(&["cert", "revoke", "abcdef", "--dir", ca.d(), "--json"]),
        "not_found",
    );
    json_error(
        &mutual_pw(
            Some("wrong"),
            &[
                "ca",
                "crl",
                "--dir",
                ca.d(),
                "--out",
                s(&tmp.join("c.pem")),
                "--json",
            ],
        ),
        "password",
    );
    // Without --json the same failure is text on stderr, with a hint line, and stdout is empty.
    let t = mutual(&["cert", "inspect", s(&tmp.join("nope.pem"))]);
    assert_eq!(t.code, 2);
    assert!(t.stdout.is_empty());
    assert!(
        t.stderr.starts_with("error: ") && t.stderr.contains("\nhint: "),
        "{}",
        t.stderr
    );
}

#[test]
fn messages_are_sentences_with_each_cause_once() {
    let ca = TestCa::new(&[]);
    let tmp = ca.tmp.path();
    ca.issue("srv", &["--server", "--san", "dns:srv.test"]).ok();
    let srv = ca.out.join("srv.pem");
    let text = std::fs::read_to_string(&srv).unwrap();
    let trunc = tmp.join("trunc.pem");
    std::fs::write(&trunc, text.lines().take(3).collect::<Vec<_>>().join("\n")).unwrap();
    let bad_der = tmp.join("bad.der");
    std::fs::write(&bad_der, [0x30, 0x03, 0x02, 0x01]).unwrap();
    let missing = tmp.join("missing.pem");
    let root = ca.root();
    for f in [&trunc, &bad_der, &missing] {
        let a = mutual(&["cert", "inspect", s(f)]);
        assert_eq!(a.code, 2);
        no_debug_text(&a.stderr);
        let b = mutual(&["cert", "verify", s(f), "--roots", &root]);
        assert_eq!(b.code, 2);
        no_debug_text(&b.stderr);
        // (Whether an unusable root is exit 1 or 2 is the exit-code work's; the text is ours.)
        let c = mutual(&["cert", "verify", s(&srv), "--roots", s(f)]);
        assert_ne!(c.code, 0);
        no_debug_text(&format!("{}{}", c.stdout, c.stderr));
    }
    let at = mutual(&[
        "cert",
        "verify",
        s(&srv),
        "--roots",
        &root,
        "--at",
        "20x6-01-01T00:00:00Z",
    ]);
    assert_eq!(at.code, 2);
    assert_eq!(
        at.stderr.matches("could not be parsed").count(),
        1,
        "{}",
        at.stderr
    );

    let mm = mutual(&[
        "cert",
        "verify",
        s(&srv),
        "--roots",
        &root,
        "--name",
        "other.test",
    ]);
    assert_eq!(mm.code, 1);
    assert!(mm.stdout.contains("dns:srv.test"), "{}", mm.stdout);
    no_debug_text(&mm.stdout);

    let csr = tmp.join("bad.csr");
    std::fs::write(&csr, [0x30, 0x03, 0x02, 0x01, 0x00]).unwrap();
    let o = ca
        .issue("x", &["--csr", s(&csr)])
        .fails_with("malformed CSR");
    no_debug_text(&o.stderr);

    ca.issue("x", &["--crl-url", "http://a b/"])
        .fails_with("space");
    ca.issue("x", &["--ttl", "5q"])
        .fails_with("s, m, h, d, w or y");
}

#[test]
fn verify_hints_name_verify_flags() {
    let ca = TestCa::new(&[]);
    ca.issue("cli", &["--san", "uri:spiffe://example.org/cli"])
        .ok();
    let chain = ca.out.join("cli.pem");
    let root = ca.root();
    // `cert verify CERT --roots ROOT ARGS...`
    let verify = |cert: &std::path::Path, args: &[&str]| {
        let mut a = vec!["cert", "verify", s(cert), "--roots", &root];
        a.extend_from_slice(args);
        mutual(&a)
    };
    let spiffe = verify(&chain, &["--name", "spiffe://example.org/cli", "--json"]);
    assert_eq!(spiffe.code, 1);
    let v = json_of(&spiffe);
    assert_eq!(v["reason"], "wrong_purpose");
    assert!(
        v["hint"].as_str().unwrap().contains("--purpose client"),
        "{v}"
    );
    // With the flag the hint names, it verifies.
    let as_client = ["--name", "spiffe://example.org/cli", "--purpose", "client"];
    verify(&chain, &as_client).ok();

    let text = std::fs::read_to_string(&chain).unwrap();
    let end = text.find("-----END CERTIFICATE-----").unwrap() + 26;
    let leaf = ca.tmp.path().join("leaf.pem");
    std::fs::write(&leaf, &text[..end]).unwrap();
    let lone = verify(&leaf, &["--purpose", "client", "--json"]);
    assert_eq!(lone.code, 1);
    let v = json_of(&lone);
    assert_eq!(v["reason"], "unknown_ca");
    let hint = v["hint"].as_str().unwrap();
    assert!(hint.contains("add the intermediate"), "{hint}");
    for h in [hint, spiffe.stdout.as_str()] {
        assert!(!h.contains("--ca ") && !h.contains("--server-name"), "{h}");
    }

    // probe --pair: a leaf-only file lacks its intermediate; a reversed file is out of order.
    let lone = mutual(&[
        "probe",
        "--pair",
        s(&leaf),
        s(&ca.out.join("cli.key")),
        "--json",
    ]);
    let v = json_of(&lone);
    assert!(v["intermediate_missing"].is_string(), "{v}");
    assert!(v["root_needed"].is_null(), "{v}");
    assert!(v["hint"].as_str().unwrap().contains("intermediate"), "{v}");
    let reversed = ca.tmp.path().join("reversed.pem");
    std::fs::write(
        &reversed,
        format!("{}{}", &text[end..].trim_start(), &text[..end]),
    )
    .unwrap();
    let rev = mutual(&["probe", "--pair", s(&reversed), s(&ca.out.join("cli.key"))]);
    assert_eq!(rev.code, 1);
    assert!(rev.stdout.contains("wrong order"), "{}", rev.stdout);
    assert!(
        !rev.stdout.contains("does not match the certificate"),
        "{}",
        rev.stdout
    );
}

#[test]
fn durations_read_right() {
    let ca = TestCa::new(&[]);
    ca.issue("short", &["--ttl", "2m"]).ok();
    ca.issue("day", &[]).ok();
    let list = mutual(&["cert", "list", "--dir", ca.d()]).ok().stdout;
    let short = list.lines().find(|l| l.contains(" short ")).unwrap();
    // Not past two thirds at once: the 5-minute backdate is not part of its life.
    assert!(!short.contains('!'), "{list}");
    assert!(short.contains(" min") || short.contains(" s "), "{list}");
    let day = list.lines().find(|l| l.contains(" day ")).unwrap();
    assert!(day.contains("23 h") || day.contains("1 d"), "{list}");
    assert!(!list.contains("0.0"), "{list}");
    let ins = mutual(&["cert", "inspect", s(&ca.out.join("day.pem"))])
        .ok()
        .stdout;
    assert!(ins.contains(" left)"), "{ins}");
    assert!(
        !ins.contains("expired left") && !ins.contains("0 days"),
        "{ins}"
    );
    // Seconds after expiry it says seconds, not "1 days ago" (poll until it has expired).
    ca.issue("brief", &["--ttl", "1s"]).ok();
    let brief = s(&ca.out.join("brief.pem")).to_string();
    let root = ca.root();
    let detail = eventually(Duration::from_secs(30), || {
        let o = mutual(&["cert", "verify", &brief, "--roots", &root, "--json"]);
        let v: Value = serde_json::from_str(&o.stdout).ok()?;
        (v["reason"] == "expired").then(|| v["detail"].as_str().unwrap().to_string())
    })
    .expect("the 1 s certificate never expired");
    assert!(
        detail.contains(" s ago") || detail.contains(" min"),
        "{detail}"
    );
    assert!(!detail.contains("days"), "{detail}");
    assert!(
        ins.contains("SHA-256:      ") && ins.contains(':'),
        "human output keeps colons"
    );
}

#[test]
fn requested_by_is_the_uid_name_without_user() {
    let ca = TestCa::new(&[]);
    let mut c = mutual_cmd(
        Some(PW),
        &["cert", "issue", "anon", "--dir", ca.d(), "--out", ca.o()],
    );
    let st = c.env_remove("USER").stdin(Stdio::null()).status().unwrap();
    assert!(st.success());
    let who = Command::new("id").arg("-un").output().unwrap();
    let who = String::from_utf8_lossy(&who.stdout).trim().to_string();
    let inv = ca.inventory();
    let row = inv.iter().find(|r| r["name"] == "anon").unwrap();
    assert_eq!(row["requested_by"], format!("cli:{who}").as_str());
}

#[test]
fn probe_shows_tls12_cipher_and_group_and_plain_serials() {
    let ca = TestCa::new(&[]);
    ca.issue("localhost", &["--server", "--san", "dns:localhost"])
        .ok();
    ca.issue("client", &[]).ok();
    let cert = ca.out.join("localhost.pem");
    let key = ca.out.join("localhost.key");
    let chain = std::path::PathBuf::from(ca.intermediate());
    let roots = std::path::PathBuf::from(ca.root());
    let mode = ["-Verify", "2", "-verify_return_error", "-tls1_2"];
    let (_guard, port) = openssl_s_server_files([&cert, &key, &chain, &roots], &mode);
    let target = format!("127.0.0.1:{port}");
    let root = ca.root();
    let probe = |extra: &[&str]| {
        let mut a = vec![
            "probe",
            &target,
            "--server-name",
            "localhost",
            "--ca",
            &root,
        ];
        a.extend(["--no-http", "--timeout", "5s"]);
        a.extend_from_slice(extra);
        mutual(&a)
    };
    let o = probe(&["--json"]);
    let v = check(&o);
    assert_eq!(v["tls_version"], "TLS1.2", "{v}");
    assert!(
        v["cipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS_ECDHE")),
        "{v}"
    );
    assert!(v["group"].is_string(), "{v}");
    let text = probe(&[]);
    no_debug_text(&text.stdout);

    // A client chain file without its intermediate: the hint says to add it (the leaf *is*
    // issued under the advertised CA, so "use a certificate issued under ..." would mislead).
    let chain = std::fs::read_to_string(ca.out.join("client.pem")).unwrap();
    let end = chain.find("-----END CERTIFICATE-----").unwrap() + 26;
    let leaf_only = ca.tmp.path().join("client-leaf.pem");
    std::fs::write(&leaf_only, &chain[..end]).unwrap();
    let key = ca.out.join("client.key");
    let o = probe(&["--cert", s(&leaf_only), "--key", s(&key), "--json"]);
    let v = check(&o);
    assert_eq!(v["accepted"], false, "{v}");
    assert_eq!(v["reason"], "unknown_ca", "{v}");
    let hint = v["hint"].as_str().unwrap();
    assert!(hint.contains("add the intermediate"), "{hint}");
    assert!(
        !text.stdout.contains("days ago") && !text.stdout.contains("days left"),
        "{}",
        text.stdout
    );
}

/// `mutual serve EXTRA... --listen 127.0.0.1:PORT --backend 127.0.0.1:BACKEND` with the CA's
/// `srv` pair and `--allow-any`, its stderr to `stderr`; returns once it listens.
fn serve_srv(ca: &TestCa, port: u16, backend: u16, extra: &[&str], stderr: Stdio) -> ChildGuard {
    let (listen, backend) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{backend}"));
    let (cert, key) = (ca.out.join("srv.pem"), ca.out.join("srv.key"));
    let mut c = mutual_cmd(Some(PW), &["serve"]);
    c.args(extra)
        .args(["--listen", &listen, "--backend", &backend])
        .args(["--cert", s(&cert), "--key", s(&key), "--ca", &ca.root()])
        .arg("--allow-any")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let guard = ChildGuard(c.spawn().unwrap());
    assert!(wait_for_port(
        ([127, 0, 0, 1], port).into(),
        Duration::from_secs(20)
    ));
    guard
}

#[test]
fn serve_log_has_no_ansi_when_not_a_terminal() {
    let ca = TestCa::new(&[]);
    ca.issue("srv", &["--server", "--san", "dns:localhost"])
        .ok();
    let log = ca.tmp.path().join("serve.log");
    let port = free_port();
    let backend = free_port();
    let file = std::fs::File::create(&log).unwrap();
    let _guard = serve_srv(&ca, port, backend, &[], file.into());
    let text = eventually(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&log).ok()?;
        (!t.trim().is_empty()).then_some(t)
    })
    .expect("serve logged nothing");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI codes in the log file: {text:?}"
    );

    // A truncated certificate on reload: the log line says so in words, not in Debug form.
    let pem = std::fs::read_to_string(ca.out.join("srv.pem")).unwrap();
    let cut: String = pem.lines().take(3).collect::<Vec<_>>().join("\n");
    std::fs::write(ca.out.join("srv.pem"), cut).unwrap();
    let line = eventually(Duration::from_secs(20), || {
        let t = std::fs::read_to_string(&log).ok()?;
        t.lines()
            .find(|l| l.contains("reload failed"))
            .map(str::to_string)
    })
    .expect("no failed reload in the log");
    assert!(line.contains("PEM"), "{line}");
    no_debug_text(&line);
    assert!(!line.contains('\u{1b}'), "{line:?}");
}

#[test]
fn http_connect_gets_a_sentence_that_fits() {
    let ca = TestCa::new(&[]);
    ca.issue("srv", &["--server", "--san", "dns:localhost"])
        .ok();
    ca.issue("client", &["--san", "uri:spiffe://example.org/c"])
        .ok();
    let port = free_port();
    let _guard = serve_srv(&ca, port, free_port(), &["--http"], Stdio::null());
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "--max-time",
            "15",
            "--cacert",
            &ca.root(),
        ])
        .args(["--cert", s(&ca.out.join("client.pem"))])
        .args(["--key", s(&ca.out.join("client.key"))])
        .args(["-X", "CONNECT", "--request-target", "example.org:443"])
        .args(["-w", "\n%{http_code}"])
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(
        code,
        "405",
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(body).unwrap();
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("CONNECT"), "{detail}");
    assert!(!detail.contains("not valid TLS"), "{detail}");
}

/// A reader that leaves early (`mutual cert list | head`): the command ends as `ls | head` does,
/// with the status of a SIGPIPE death (141) and nothing on stderr; it panicked with "failed
/// printing to stdout: Broken pipe" and a backtrace. The completion script is larger than a
/// pipe's buffer, so the write after the reader left is certain.
#[test]
fn a_reader_that_leaves_early_ends_the_command_quietly() {
    // `cert inspect` of a bundle of 300 certificates prints far more than a pipe holds.
    let pki = mutual_test::TestPki::new("pipe");
    let leaf = pki.leaf("p", mutual_test::LeafOpts::new("p").san("dns:p.test"));
    let bundle = pki.path("bundle.pem");
    std::fs::write(
        &bundle,
        std::fs::read_to_string(&leaf.cert).unwrap().repeat(300),
    )
    .unwrap();
    // `cert list` of 600 certificates (its own buffered writer: an error path, not a panic).
    let ca = TestCa::new(&[]);
    let csv = ca.tmp.path().join("many.csv");
    let rows: String = (0..600)
        .map(|i| format!("host{i},dns:host{i}.example.com\n"))
        .collect();
    std::fs::write(&csv, format!("name,san\n{rows}")).unwrap();
    mutual(&[
        "cert",
        "issue",
        "--batch",
        s(&csv),
        "--dir",
        ca.d(),
        "--out",
        s(&ca.out),
    ])
    .ok();
    for args in [
        vec!["completions", "bash"],
        vec!["cert", "inspect", s(&bundle)],
        vec!["cert", "list", "--dir", ca.d()],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mutual"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
