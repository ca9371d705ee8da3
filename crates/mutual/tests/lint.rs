//! `mutual cert lint` and the strict profile, against certificates and CRLs made by the real
//! `openssl` (one violation each, from an extension config written here), and against what
//! our own CA makes (root, intermediate, every kind of leaf, the CRL), which must lint clean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;
mod proxy_common;

use std::path::{Path, PathBuf};

use pki_common::*;

/// A throwaway openssl CA in a temp dir: a P-256 root with a well-formed profile.
struct Ossl {
    tmp: tempfile::TempDir,
}

impl Ossl {
    fn new() -> Ossl {
        let o = Ossl {
            tmp: tempfile::tempdir().unwrap(),
        };
        o.key("root.key", "ec");
        o.self_signed(
            "root",
            "/CN=Lint Test Root",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=none\n",
        );
        o
    }

    fn p(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn key(&self, name: &str, kind: &str) {
        let k = self.p(name);
        let args: Vec<&str> = match kind {
            "ec" => vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                s(&k),
            ],
            bits => vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                bits,
                "-out",
                s(&k),
            ],
        };
        openssl(&args).ok();
    }

    /// A self-signed certificate `NAME.pem` with `NAME`'s key (root.key for "root").
    fn self_signed(&self, name: &str, subj: &str, ext: &str) -> PathBuf {
        let extf = self.p(&format!("{name}.ext"));
        std::fs::write(&extf, format!("[x]\n{ext}")).unwrap();
        let out = self.p(&format!("{name}.pem"));
        let key = self.p(&format!("{name}.key"));
        if !key.exists() {
            self.key(&format!("{name}.key"), "ec");
        }
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-key",
            s(&key),
            "-subj",
            subj,
            "-days",
            "30",
            "-config",
            s(&extf),
            "-extensions",
            "x",
            "-out",
            s(&out),
        ])
        .ok();
        out
    }

    /// A certificate `NAME.pem` signed by the root, with `ext` as its only extensions
    /// (openssl adds none of its own: SKI/AKI are written explicitly where wanted).
    fn issue(&self, name: &str, subj: &str, ext: &str, extra: &[&str]) -> PathBuf {
        let key = self.p(&format!("{name}.key"));
        if !key.exists() {
            self.key(&format!("{name}.key"), "ec");
        }
        let csr = self.p(&format!("{name}.csr"));
        openssl(&[
            "req",
            "-new",
            "-key",
            s(&key),
            "-subj",
            subj,
            "-out",
            s(&csr),
        ])
        .ok();
        let extf = self.p(&format!("{name}.ext"));
        std::fs::write(&extf, format!("[x]\n{ext}")).unwrap();
        let out = self.p(&format!("{name}.pem"));
        let root = self.p("root.pem");
        let root_key = self.p("root.key");
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&root),
            "-CAkey",
            s(&root_key),
            "-days",
            "30",
            "-extfile",
            s(&extf),
            "-extensions",
            "x",
            "-out",
            s(&out),
        ];
        if !extra.contains(&"-set_serial") {
            args.extend(["-set_serial", "0x4c696e7454657374"]);
        }
        args.extend_from_slice(extra);
        openssl(&args).ok();
        out
    }
}

/// A well-formed server leaf's extensions; tests change one line.
const GOOD_LEAF: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
    extendedKeyUsage=serverAuth\nsubjectAltName=DNS:svc.example.com\nsubjectKeyIdentifier=hash\n\
    authorityKeyIdentifier=keyid:always\n";

fn lint_json(files: &[&Path]) -> (i32, serde_json::Value) {
    let mut args = vec!["cert", "lint", "--json"];
    args.extend(files.iter().map(|p| s(p)));
    let o = mutual(&args);
    let v = serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", o.stdout, o.stderr));
    (o.code, v)
}

fn rules(v: &serde_json::Value) -> Vec<(String, String)> {
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["findings"].as_array().unwrap().iter())
        .map(|x| {
            (
                x["rule"].as_str().unwrap().to_string(),
                x["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Lints `file` and asserts exactly `rule` (and its severity) among the findings, exit 1 for an
/// error and 0 for a warning, and that the finding carries a section and a sentence.
fn expect_rule(file: &Path, rule: &str, severity: &str) {
    let (code, v) = lint_json(&[file]);
    let found = rules(&v);
    assert!(
        found.iter().any(|(r, s)| r == rule && s == severity),
        "expected {severity} {rule} in {found:?}"
    );
    let errors = found.iter().filter(|(_, s)| s == "error").count();
    assert_eq!(code, i32::from(errors > 0), "{v}");
    let x = v["files"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["rule"] == rule)
        .unwrap();
    assert!(!x["section"].as_str().unwrap().is_empty());
    assert!(!x["message"].as_str().unwrap().is_empty());
}

fn leaf_with(
    o: &Ossl,
    name: &str,
    subj: &str,
    replace: &str,
    with: &str,
    extra: &[&str],
) -> PathBuf {
    let ext = if replace.is_empty() {
        format!("{GOOD_LEAF}{with}")
    } else {
        GOOD_LEAF.replace(replace, with)
    };
    o.issue(name, subj, &ext, extra)
}

#[test]
fn a_well_formed_openssl_chain_lints_clean_and_verifies_strictly() {
    let o = Ossl::new();
    let leaf = leaf_with(&o, "good", "/CN=svc.example.com", "", "", &[]);
    let (code, v) = lint_json(&[&leaf, &o.p("root.pem")]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    let (code, v) = verify(
        &leaf,
        &o.p("root.pem"),
        "strict",
        &["--name", "svc.example.com"],
    );
    assert_eq!(code, 0, "{v}");
}

#[test]
fn serial_rules() {
    let o = Ossl::new();
    expect_rule(
        &leaf_with(
            &o,
            "z",
            "/CN=svc.example.com",
            "",
            "",
            &["-set_serial", "0"],
        ),
        "serial-zero",
        "error",
    );
    let long = format!("0x{}", "11".repeat(21));
    expect_rule(
        &leaf_with(
            &o,
            "l",
            "/CN=svc.example.com",
            "",
            "",
            &["-set_serial", &long],
        ),
        "serial-too-long",
        "error",
    );
}

#[test]
fn key_identifier_rules() {
    let o = Ossl::new();
    expect_rule(
        &leaf_with(
            &o,
            "a1",
            "/CN=svc.example.com",
            "authorityKeyIdentifier=keyid:always",
            "authorityKeyIdentifier=none",
            &[],
        ),
        "aki-missing",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "a2",
            "/CN=svc.example.com",
            "authorityKeyIdentifier=keyid:always",
            "authorityKeyIdentifier=critical,keyid:always",
            &[],
        ),
        "aki-critical",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "a3",
            "/CN=svc.example.com",
            "authorityKeyIdentifier=keyid:always",
            "authorityKeyIdentifier=keyid:always,issuer:always",
            &[],
        ),
        "aki-issuer-and-serial",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "s1",
            "/CN=svc.example.com",
            "subjectKeyIdentifier=hash",
            "subjectKeyIdentifier=critical,hash",
            &[],
        ),
        "ski-critical",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "s2",
            "/CN=svc.example.com",
            "subjectKeyIdentifier=hash",
            "subjectKeyIdentifier=none",
            &[],
        ),
        "ski-missing-ee",
        "warning",
    );
    let ca = o.issue("ica", "/CN=Lint ICA", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=none\nauthorityKeyIdentifier=keyid:always\n", &[]);
    expect_rule(&ca, "ski-missing-ca", "error");
}

#[test]
fn ca_extension_rules() {
    let o = Ossl::new();
    expect_rule(
        &leaf_with(
            &o,
            "k",
            "/CN=svc.example.com",
            "keyUsage=critical,digitalSignature",
            "keyUsage=critical,digitalSignature,keyCertSign",
            &[],
        ),
        "keycertsign-without-ca",
        "error",
    );
    let ica = |n: &str, ext: &str| {
        o.issue(
            n,
            "/CN=Lint ICA",
            &format!("{ext}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"),
            &[],
        )
    };
    expect_rule(
        &ica(
            "c1",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature",
        ),
        "ca-without-keycertsign",
        "error",
    );
    expect_rule(
        &ica(
            "c2",
            "basicConstraints=CA:TRUE\nkeyUsage=critical,keyCertSign",
        ),
        "ca-basic-constraints-not-critical",
        "error",
    );
    expect_rule(&ica("c3", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\nnameConstraints=permitted;DNS:example.com"), "name-constraints-not-critical", "error");
    expect_rule(&ica("c4", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\nnameConstraints=critical,permitted;DNS:.example.com"), "name-constraints-dns-invalid", "error");
    expect_rule(&ica("c5", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\npolicyConstraints=requireExplicitPolicy:0"), "policy-constraints-not-critical", "error");
    expect_rule(
        &ica("c6", "basicConstraints=critical,CA:TRUE"),
        "ca-key-usage-missing",
        "warning",
    );
    // A self-signed CA (keyCertSign) without basicConstraints, and a root with an EKU.
    let r1 = o.self_signed(
        "r1",
        "/CN=No BC Root",
        "keyUsage=critical,keyCertSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=none\n",
    );
    expect_rule(&r1, "ca-basic-constraints-missing", "error");
    let r2 = o.self_signed("r2", "/CN=EKU Root", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\nextendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=none\n");
    expect_rule(&r2, "root-eku-present", "error");
    expect_rule(
        &leaf_with(
            &o,
            "nc",
            "/CN=svc.example.com",
            "",
            "nameConstraints=critical,permitted;DNS:example.com\n",
            &[],
        ),
        "name-constraints-in-ee",
        "error",
    );
}

#[test]
fn name_rules() {
    let o = Ossl::new();
    let san = "subjectAltName=DNS:svc.example.com";
    expect_rule(
        &leaf_with(
            &o,
            "n1",
            "/CN=svc.example.com",
            san,
            "subjectAltName=critical,DNS:svc.example.com",
            &[],
        ),
        "san-critical-with-subject",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "n2",
            "/CN=a_b.example.com",
            san,
            "subjectAltName=DNS:a_b.example.com",
            &[],
        ),
        "san-dns-invalid",
        "error",
    );
    expect_rule(
        &leaf_with(&o, "n3", "/O=Lint", san, "subjectAltName=DNS:*.co.uk", &[]),
        "san-wildcard-public-suffix",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "n4",
            "/O=Lint",
            san,
            "subjectAltName=DNS:*.s3.amazonaws.com",
            &[],
        ),
        "san-wildcard-private-suffix",
        "warning",
    );
    expect_rule(
        &leaf_with(&o, "n5", "/CN=SVC.Example.com", "", "", &[]),
        "cn-san-not-verbatim",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "n6",
            "/CN=192.168.001.001",
            san,
            "subjectAltName=IP:192.168.1.1",
            &[],
        ),
        "cn-san-not-verbatim",
        "error",
    );
    expect_rule(
        &leaf_with(&o, "n7", "/CN=other.example.com", "", "", &[]),
        "cn-not-in-san",
        "warning",
    );
    expect_rule(
        &leaf_with(
            &o,
            "n8",
            "/",
            san,
            "subjectAltName=DNS:svc.example.com",
            &[],
        ),
        "san-not-critical-with-empty-subject",
        "error",
    );
    // A leaf carrying the trust domain's own SPIFFE ID (X509-SVID 3.1: a path is required).
    expect_rule(
        &leaf_with(
            &o,
            "n9",
            "/O=Lint",
            san,
            "subjectAltName=URI:spiffe://example.org",
            &[],
        ),
        "svid-leaf-root-path",
        "error",
    );
}

#[test]
fn eku_aia_extension_and_key_rules() {
    let o = Ossl::new();
    let eku = "extendedKeyUsage=serverAuth";
    let cn = "/CN=svc.example.com";
    expect_rule(
        &leaf_with(&o, "e1", cn, eku, "", &[]),
        "ee-eku-missing",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "e2",
            cn,
            eku,
            "extendedKeyUsage=serverAuth,anyExtendedKeyUsage",
            &[],
        ),
        "ee-eku-any",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "e3",
            cn,
            eku,
            "extendedKeyUsage=critical,serverAuth",
            &[],
        ),
        "ee-eku-critical",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "i1",
            cn,
            "",
            "authorityInfoAccess=critical,OCSP;URI:http://ocsp.example.com\n",
            &[],
        ),
        "aia-critical",
        "error",
    );
    expect_rule(
        &leaf_with(&o, "i2", cn, "", "1.3.6.1.5.5.7.1.1=DER:30:00\n", &[]),
        "aia-malformed",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "u1",
            cn,
            "",
            "1.3.6.1.4.1.55738.666.1=critical,DER:05:00\n",
            &[],
        ),
        "unknown-critical-extension",
        "error",
    );
    o.key("rsa.key", "rsa_keygen_bits:2052");
    expect_rule(
        &leaf_with(&o, "rsa", cn, "", "", &[]),
        "rsa-modulus-size",
        "error",
    );
}

/// An openssl CA directory able to `openssl ca -gencrl`, with or without a crlnumber file.
fn openssl_crl(o: &Ossl, name: &str, with_number: bool) -> PathBuf {
    openssl_crl_with(o, name, with_number, "authorityKeyIdentifier=keyid:always")
}

fn openssl_crl_with(o: &Ossl, name: &str, with_number: bool, crl_ext: &str) -> PathBuf {
    let d = o.p(&format!("crlca-{name}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("index.txt"), "").unwrap();
    let number = if with_number {
        std::fs::write(d.join("crlnumber"), "01\n").unwrap();
        format!("crlnumber = {}\n", s(&d.join("crlnumber")))
    } else {
        String::new()
    };
    let cnf = d.join("ca.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = c\n[c]\ndatabase = {}\n{number}certificate = {}\nprivate_key = {}\n\
             default_md = sha256\ndefault_crl_days = 7\ncrl_extensions = e\n[e]\n{crl_ext}\n",
            s(&d.join("index.txt")),
            s(&o.p("root.pem")),
            s(&o.p("root.key")),
        ),
    )
    .unwrap();
    let out = d.join("crl.pem");
    openssl(&["ca", "-gencrl", "-config", s(&cnf), "-out", s(&out)]).ok();
    out
}

#[test]
fn crl_rules_and_the_strict_profile_on_crls() {
    let o = Ossl::new();
    let good = openssl_crl(&o, "good", true);
    let (code, v) = lint_json(&[&good]);
    assert_eq!((code, v["errors"].as_u64()), (0, Some(0)), "{v}");
    let bad = openssl_crl(&o, "bad", false);
    expect_rule(&bad, "crl-number-missing", "error");

    // The strict profile refuses a chain checked with that CRL; compatible accepts it.
    let leaf = leaf_with(&o, "leaf", "/CN=svc.example.com", "", "", &[]);
    let extra = ["--name", "svc.example.com", "--crl", s(&bad)];
    let (code, v) = verify(&leaf, &o.p("root.pem"), "compatible", &extra);
    assert_eq!(code, 0, "{v}");
    let (code, v) = verify(&leaf, &o.p("root.pem"), "strict", &extra);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["reason"], "malformed");
    assert!(
        v["detail"].as_str().unwrap().contains("crl-number-missing"),
        "{v}"
    );
}

#[test]
fn strict_profile_refuses_what_compatible_accepts_with_the_rule_in_the_detail() {
    let o = Ossl::new();
    let leaf = leaf_with(
        &o,
        "noaki",
        "/CN=svc.example.com",
        "authorityKeyIdentifier=keyid:always",
        "authorityKeyIdentifier=none",
        &[],
    );
    let run = |profile: &str| {
        verify(
            &leaf,
            &o.p("root.pem"),
            profile,
            &["--name", "svc.example.com"],
        )
    };
    assert_eq!(run("compatible").0, 0);
    let (code, v) = run("strict");
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["reason"], "malformed");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("aki-missing") && detail.contains("RFC 5280 4.2.1.1"),
        "{detail}"
    );
    assert!(
        v["hint"].as_str().unwrap().contains("mutual cert lint"),
        "{v}"
    );
    // An unknown profile is a usage error.
    let out = mutual(&[
        "cert",
        "verify",
        s(&leaf),
        "--roots",
        s(&o.p("root.pem")),
        "--profile",
        "lax",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn unreadable_input_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("junk.pem");
    std::fs::write(&f, "not a certificate").unwrap();
    let out = mutual(&["cert", "lint", s(&f)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = mutual(&["cert", "lint", s(&tmp.path().join("missing.pem"))]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn what_our_ca_makes_lints_clean() {
    let ca = TestCa::new(&["--trust-domain", "example.org"]);
    ca.issue("srv", &["--server", "--san", "dns:srv.example.org"])
        .ok();
    ca.issue("cli", &["--client"]).ok();
    ca.issue("both", &["--both", "--san", "dns:both.example.org"])
        .ok();
    ca.issue(
        "svid",
        &[
            "--client",
            "--san",
            "uri:spiffe://example.org/ns/prod/sa/web",
        ],
    )
    .ok();
    ca.issue(
        "ip",
        &["--server", "--san", "ip:127.0.0.1", "--san", "ip:::1"],
    )
    .ok();
    let crl = ca.tmp.path().join("ca.crl");
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl)]).ok();
    let root = PathBuf::from(ca.root());
    let int = PathBuf::from(ca.intermediate());
    let mut files: Vec<PathBuf> = vec![root, int, crl];
    for n in ["srv", "cli", "both", "svid", "ip"] {
        files.push(ca.out.join(format!("{n}.pem")));
    }
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, v) = lint_json(&refs);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    // Every leaf chain file was read as leaf + intermediate, and the CRL as a CRL.
    assert_eq!(v["files"][2]["crls"], 1, "{v}");
    assert_eq!(v["files"][3]["certificates"], 2, "{v}");
    // And a chain of ours passes the strict profile end to end.
    let root = PathBuf::from(ca.root());
    let (code, v) = verify(
        &ca.out.join("srv.pem"),
        &root,
        "strict",
        &["--name", "srv.example.org"],
    );
    assert_eq!(code, 0, "{v}");
}

#[test]
fn probe_with_the_strict_profile_names_the_broken_rule_of_a_real_server() {
    let o = Ossl::new();
    let leaf = leaf_with(
        &o,
        "srv",
        "/CN=svc.example.com",
        "authorityKeyIdentifier=keyid:always",
        "authorityKeyIdentifier=none",
        &[],
    );
    let key = o.p("srv.key");
    let (_server, port) = mutual_test::openssl_s_server_args(&["-cert", s(&leaf), "-key", s(&key)]);
    let target = format!("127.0.0.1:{port}");
    let probe = |profile: &str| {
        let out = mutual(&[
            "probe",
            &target,
            "--server-name",
            "svc.example.com",
            "--ca",
            s(&o.p("root.pem")),
            "--timeout",
            "10s",
            "--no-http",
            "--json",
            "--profile",
            profile,
        ]);
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} / {}", out.stdout, out.stderr))
    };
    let v = probe("compatible");
    assert_eq!(v["server_verification"]["reason"], "ok", "{v:#}");
    let v = probe("strict");
    assert_eq!(v["server_verification"]["valid"], false, "{v:#}");
    assert_eq!(v["server_verification"]["reason"], "malformed", "{v:#}");
    let detail = v["server_verification"]["detail"].as_str().unwrap();
    assert!(detail.contains("aki-missing"), "{detail}");
}

/// `cert verify --json` of `leaf` against `root` with `extra` flags, in one profile.
fn verify(leaf: &Path, root: &Path, profile: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec![
        "cert",
        "verify",
        s(leaf),
        "--roots",
        s(root),
        "--json",
        "--profile",
        profile,
    ];
    args.extend_from_slice(extra);
    let out = mutual(&args);
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", out.stdout, out.stderr));
    (out.code, v)
}

/// Compatible accepts, strict refuses as `malformed` naming `rule`.
fn strict_only_refuses(leaf: &Path, root: &Path, extra: &[&str], rule: &str) {
    let (code, v) = verify(leaf, root, "compatible", extra);
    assert_eq!(code, 0, "compatible: {v}");
    let (code, v) = verify(leaf, root, "strict", extra);
    assert_eq!(code, 1, "strict: {v}");
    assert_eq!(v["reason"], "malformed", "{v}");
    assert!(v["detail"].as_str().unwrap().contains(rule), "{v}");
}

#[test]
fn path_rules_only_the_strict_profile_sees() {
    let o = Ossl::new();
    // A wildcard over a PRIVATE public suffix: a warning in the lint, an error when the name
    // checked is matched only through it.
    let w = leaf_with(
        &o,
        "w",
        "/O=Lint",
        "subjectAltName=DNS:svc.example.com",
        "subjectAltName=DNS:*.s3.amazonaws.com",
        &[],
    );
    strict_only_refuses(
        &w,
        &o.p("root.pem"),
        &["--name", "bucket.s3.amazonaws.com"],
        "name-matched-by-suffix-wildcard",
    );

    // The trust anchor's own validity: a leaf that outlives its root, checked after the root
    // expired (webpki treats the anchor as a name and a key and does not look).
    let long = leaf_with(&o, "long", "/CN=svc.example.com", "", "", &["-days", "400"]);
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(100);
    let at = later
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    strict_only_refuses(
        &long,
        &o.p("root.pem"),
        &["--name", "svc.example.com", "--at", &at],
        "validity-anchor",
    );

    // A CRL from an issuer whose keyUsage lacks cRLSign.
    let o2 = Ossl::new();
    let r = o2.self_signed(
        "root",
        "/CN=No CRLSign Root",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=none\n",
    );
    let leaf = leaf_with(&o2, "l", "/CN=svc.example.com", "", "", &[]);
    let crl = openssl_crl(&o2, "nocrlsign", true);
    strict_only_refuses(
        &leaf,
        &r,
        &["--name", "svc.example.com", "--crl", s(&crl)],
        "crl-issuer-without-crlsign",
    );

    // A CRL without an authorityKeyIdentifier.
    let crl = openssl_crl_with(&o, "noaki", true, "issuerAltName=DNS:ca.example.com");
    expect_rule(&crl, "crl-aki-missing", "error");

    // pathLenConstraint on a certificate that is not a CA.
    expect_rule(
        &leaf_with(
            &o,
            "pl",
            "/CN=svc.example.com",
            "basicConstraints=critical,CA:FALSE",
            "basicConstraints=critical,CA:FALSE,pathlen:0",
            &[],
        ),
        "pathlen-without-ca",
        "error",
    );
}

#[test]
fn a_leading_dot_permitted_dns_is_the_operators_choice_and_is_said_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let out = mutual(&[
        "ca",
        "init",
        "--dir",
        s(&dir),
        "--name",
        "Dot CA",
        "--permitted-dns",
        ".internal.example",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("warning:") && out.stderr.contains("name-constraints-dns-invalid"),
        "{}",
        out.stderr
    );
    let (code, v) = lint_json(&[&dir.join("intermediate.pem")]);
    assert_eq!(code, 1, "{v}");
    assert!(rules(&v).contains(&("name-constraints-dns-invalid".into(), "error".into())));
    // Without the period the intermediate lints clean and init says nothing.
    let dir2 = tmp.path().join("ca2");
    let out = mutual(&[
        "ca",
        "init",
        "--dir",
        s(&dir2),
        "--name",
        "NoDot CA",
        "--permitted-dns",
        "internal.example",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("warning:"), "{}", out.stderr);
    assert_eq!(lint_json(&[&dir2.join("intermediate.pem")]).0, 0);
}

/// `mutual serve --profile P` in front of a one-line backend, a real `openssl s_client` with a
/// client certificate that has no authorityKeyIdentifier (webpki accepts it; RFC 5280 4.2.1.1
/// says a CA-issued certificate must carry one): compatible lets it through, strict refuses the
/// handshake with the exact label `malformed`, from the flag and from a config file alike.
#[test]
fn serve_with_the_strict_profile_refuses_a_client_chain_webpki_accepts() {
    let o = Ossl::new();
    let srv = leaf_with(&o, "srv", "/CN=svc.example.com", "", "", &[]);
    // A client certificate (clientAuth) without an authorityKeyIdentifier.
    let cli = o.issue(
        "cli",
        "/CN=client.example.com",
        &GOOD_LEAF
            .replace("serverAuth", "clientAuth")
            .replace(
                "authorityKeyIdentifier=keyid:always",
                "authorityKeyIdentifier=none",
            )
            .replace("DNS:svc.example.com", "DNS:client.example.com"),
        &[],
    );
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in backend.incoming().flatten() {
            let mut c = c;
            let _ = std::io::Write::write_all(&mut c, b"hello from backend\n");
        }
    });
    let run = |how: &str, result: &str, reason: &str| {
        let port = mutual_test::free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = o.p(&format!("audit-{how}.jsonl"));
        let mut cmd = mutual_cmd(None, &[]);
        match how {
            "flag-compatible" | "flag-strict" => {
                cmd.args(["serve", "--listen", &listen, "--backend", &backend_addr])
                    .args(["--cert", s(&srv), "--key", s(&o.p("srv.key"))])
                    .args(["--ca", s(&o.p("root.pem")), "--allow-any"])
                    .args(["--audit-log", s(&log)])
                    .args(["--profile", how.trim_start_matches("flag-")]);
            }
            _ => {
                let cfg = o.p("run.toml");
                std::fs::write(
                    &cfg,
                    format!(
                        "audit_log = {:?}\n[[listener]]\nname = \"strict\"\nkind = \"serve\"\n\
                         listen = {listen:?}\nbackend = {backend_addr:?}\ncert = {:?}\n\
                         key = {:?}\nca = {:?}\nallow_any = true\nprofile = \"strict\"\n",
                        s(&log),
                        s(&srv),
                        s(&o.p("srv.key")),
                        s(&o.p("root.pem")),
                    ),
                )
                .unwrap();
                cmd.args(["run", "--config", s(&cfg)]);
            }
        }
        let _serve = mutual_test::spawn_listening(&mut cmd, port);
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &listen, "-quiet"])
            .args(["-cert", s(&cli), "-key", s(&o.p("cli.key"))])
            .args(["-CAfile", s(&o.p("root.pem"))])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        let line = proxy_common::wait_audit_line_in(&log, result, reason);
        // What the client saw matches what the audit line says.
        assert_eq!(
            said.contains("hello from backend"),
            result == "allowed",
            "{how}: client saw {said:?}, audit {line}"
        );
    };
    run("flag-compatible", "allowed", "ok");
    run("flag-strict", "failed", "malformed");
    run("config-strict", "failed", "malformed");
}

/// `openssl x509|crl -outform DER` of `pem`, handed to `edit`, written as `NAME.der` (lint reads
/// DER too). Used where openssl itself will not make the violation (it merges duplicate
/// extensions, always writes v3 with extensions and always sets nextUpdate): the bytes openssl
/// signed are changed in one place, which the linter, not checking signatures, still reads.
fn edited_der(
    o: &Ossl,
    pem: &Path,
    kind: &str,
    name: &str,
    edit: impl Fn(Vec<u8>) -> Vec<u8>,
) -> PathBuf {
    let der = o.p(&format!("{name}.orig.der"));
    openssl_ok(&[kind, "-in", s(pem), "-outform", "DER", "-out", s(&der)]);
    let out = o.p(&format!("{name}.der"));
    std::fs::write(&out, edit(std::fs::read(&der).unwrap())).unwrap();
    out
}

/// `bytes` with the one occurrence of `from` replaced by `to` (same length).
fn replace_once(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    let at: Vec<usize> = (0..=bytes.len() - from.len())
        .filter(|&i| &bytes[i..i + from.len()] == from)
        .collect();
    assert_eq!(at.len(), 1, "{from:02x?} must occur once");
    bytes[at[0]..at[0] + to.len()].copy_from_slice(to);
    bytes
}

/// A DER TLV split into (tag, header length, total length).
fn tlv(b: &[u8]) -> (u8, usize, usize) {
    let (len, hdr) = match b[1] {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let k = (n & 0x7f) as usize;
            (
                b[2..2 + k].iter().fold(0usize, |a, &x| a << 8 | x as usize),
                2 + k,
            )
        }
    };
    (b[0], hdr, hdr + len)
}

fn der_seq(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match body.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(body);
    out
}

/// The CRL without its nextUpdate: TBSCertList's fifth field (after version, signature, issuer,
/// thisUpdate) when it is a Time (UTCTime 0x17 or GeneralizedTime 0x18).
fn drop_next_update(crl: Vec<u8>) -> Vec<u8> {
    let (_, hdr, _) = tlv(&crl);
    let (_, tbs_hdr, tbs_len) = tlv(&crl[hdr..]);
    let tbs = &crl[hdr..hdr + tbs_len];
    let mut fields = Vec::new();
    let mut at = tbs_hdr;
    while at < tbs.len() {
        let (tag, _, len) = tlv(&tbs[at..]);
        fields.push((tag, &tbs[at..at + len]));
        at += len;
    }
    assert!(
        matches!(fields[4].0, 0x17 | 0x18),
        "fields: {:02x?}",
        fields.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    let body: Vec<u8> = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .flat_map(|(_, f)| f.1.to_vec())
        .collect();
    let mut outer = der_seq(0x30, &body);
    outer.extend_from_slice(&crl[hdr + tbs_len..]);
    der_seq(0x30, &outer)
}

#[test]
fn the_rules_openssl_makes_only_with_an_unusual_config_or_an_edited_byte() {
    let o = Ossl::new();
    let cn = "/CN=svc.example.com";
    // Serial numbers: a root may use zero (warning); nobody may be negative.
    // (self_signed picks a random serial: it writes r0.key and r0.ext, then the root is
    // signed again with serial 0.)
    o.self_signed(
        "r0",
        "/CN=Zero Root",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=none\n",
    );
    let r0 = o.p("r0z.pem");
    openssl_ok(&[
        "req",
        "-new",
        "-x509",
        "-key",
        s(&o.p("r0.key")),
        "-subj",
        "/CN=Zero Root",
        "-days",
        "30",
        "-config",
        s(&o.p("r0.ext")),
        "-extensions",
        "x",
        "-set_serial",
        "0",
        "-out",
        s(&r0),
    ]);
    expect_rule(&r0, "serial-zero-anchor", "warning");
    expect_rule(
        &leaf_with(&o, "neg", cn, "", "", &["-set_serial", "-5"]),
        "serial-negative",
        "error",
    );

    // Subjects: an empty subject needs a SAN; a CA's may not be empty at all.
    let no_san = GOOD_LEAF.replace("subjectAltName=DNS:svc.example.com\n", "");
    expect_rule(
        &o.issue("e1", "/", &no_san, &[]),
        "subject-empty-without-san",
        "error",
    );
    let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
                  subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n";
    expect_rule(
        &o.issue("e2", "/", ca_ext, &[]),
        "ca-subject-empty",
        "error",
    );
    // An empty SAN, an empty nameConstraints and a malformed basicConstraints, as raw DER.
    expect_rule(
        &leaf_with(
            &o,
            "se",
            cn,
            "subjectAltName=DNS:svc.example.com",
            "2.5.29.17=DER:3000",
            &[],
        ),
        "san-empty",
        "error",
    );
    expect_rule(
        &o.issue(
            "nce",
            "/CN=Lint ICA",
            &format!("{ca_ext}2.5.29.30=critical,DER:3000\n"),
            &[],
        ),
        "name-constraints-empty",
        "error",
    );
    expect_rule(
        &leaf_with(
            &o,
            "bm",
            cn,
            "basicConstraints=critical,CA:FALSE",
            "basicConstraints=critical,DER:0101ff",
            &[],
        ),
        "extension-malformed",
        "error",
    );
    // AKI: issuer name + serial but no keyIdentifier; a root whose AKI is not its own SKI.
    expect_rule(
        &leaf_with(
            &o,
            "ak",
            cn,
            "authorityKeyIdentifier=keyid:always",
            "authorityKeyIdentifier=issuer:always",
            &[],
        ),
        "aki-no-key-identifier",
        "error",
    );
    let rm = o.self_signed(
        "rm",
        "/CN=Mismatch Root",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\n2.5.29.35=DER:30068004deadbeef\n",
    );
    expect_rule(&rm, "aki-ski-mismatch", "error");

    // Edited bytes: version 2 with extensions; a second subjectAltName (an unknown extension
    // 2.5.29.99 carrying a SAN's value, renamed to 2.5.29.17).
    let good = leaf_with(&o, "v", cn, "", "", &[]);
    let v2 = edited_der(&o, &good, "x509", "v2", |d| {
        replace_once(d, &[0xa0, 3, 2, 1, 2], &[0xa0, 3, 2, 1, 1])
    });
    expect_rule(&v2, "version-not-v3", "error");
    let two = leaf_with(
        &o,
        "dup",
        cn,
        "",
        "2.5.29.99=DER:3011820f7376632e6578616d706c652e636f6d\n",
        &[],
    );
    let dup = edited_der(&o, &two, "x509", "dup2", |d| {
        replace_once(
            d,
            &[0x06, 3, 0x55, 0x1d, 0x63],
            &[0x06, 3, 0x55, 0x1d, 0x11],
        )
    });
    expect_rule(&dup, "extension-duplicate", "error");

    // CRLs: a critical cRLNumber (openssl writes it from crl_extensions when no crlnumber
    // file is set), and one without nextUpdate (openssl always sets it: edited out).
    let crit = openssl_crl_with(
        &o,
        "crit",
        false,
        "authorityKeyIdentifier=keyid:always\n2.5.29.20=critical,DER:020101",
    );
    expect_rule(&crit, "crl-number-critical", "error");
    let good_crl = openssl_crl(&o, "nu", true);
    let no_next = edited_der(&o, &good_crl, "crl", "nonext", drop_next_update);
    expect_rule(&no_next, "crl-next-update-missing", "error");
}

/// Every rule of the linter is raised by at least one openssl-made file in this file's tests.
#[test]
fn every_lint_rule_has_an_openssl_test_here() {
    let src = include_str!("../../mutual-tls/src/lint/mod.rs");
    let table = &src[src.find("rules! {").unwrap()..];
    let table = &table[..table.find("\n}\n").unwrap()];
    let me = include_str!("lint.rs");
    let ids: Vec<&str> = table
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(ids.len() > 40, "the rule table was not found: {ids:?}");
    let missing: Vec<&&str> = ids
        .iter()
        .filter(|id| !me.contains(&format!("\"{id}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "rules without an openssl-made test here: {missing:?}"
    );
}
