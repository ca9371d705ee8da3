//! CA lifecycle: init (once), key protection, offline root, revocation and CRLs checked by
//! openssl, and the inventory listing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use pki_common::*;

#[test]
fn init_prints_the_fingerprint_and_refuses_to_run_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    // A database password file without a PostgreSQL store would be recorded and never read.
    let pw = tmp.path().join("db-password");
    std::fs::write(&pw, "secret\n").unwrap();
    for store in [&[][..], &["--store", "sqlite:inv.db"][..]] {
        let mut a = vec![
            "ca",
            "init",
            "--dir",
            s(&dir),
            "--store-password-file",
            s(&pw),
        ];
        a.extend_from_slice(store);
        mutual(&a).fails_with("--store-password-file is the password of a PostgreSQL --store");
        assert!(!dir.exists());
    }
    // Name constraints that are not DNS subtrees: a wildcard (the CA used to be made, then
    // its intermediate called "bug" by the self-lint) and an IP address. Nothing is made.
    for (constraint, why) in [
        ("*.example.com", "a name constraint has no wildcard"),
        ("10.0.0.1", "the last label \"1\" is all digits"),
    ] {
        let a = [
            "ca",
            "init",
            "--dir",
            s(&dir),
            "--permitted-dns",
            constraint,
        ];
        mutual(&a).fails_with(why);
        assert!(!dir.exists(), "{constraint}");
    }
    let o = mutual(&["ca", "init", "--dir", s(&dir), "--name", "Acme Internal CA"]).ok();
    let fp = fingerprint_of(&dir.join("root.pem"));
    assert!(
        o.stdout.contains(&fp),
        "fingerprint {fp} not in: {}",
        o.stdout
    );
    assert!(o.stdout.contains("Pin it"));
    for f in [
        "root.pem",
        "root.key",
        "intermediate.pem",
        "intermediate.key",
        "inventory.db",
        "mutual-ca.toml",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let root_text = openssl(&["x509", "-in", s(&dir.join("root.pem")), "-noout", "-text"])
        .ok()
        .stdout;
    assert!(
        root_text.contains("CN = Acme Internal CA Root"),
        "{root_text}"
    );
    let int_text = x509(&dir.join("intermediate.pem"), &["-text"]);
    assert!(int_text.contains("pathlen:0"), "{int_text}");

    let ca = TestCa {
        dir: dir.clone(),
        out: tmp.path().to_path_buf(),
        tmp,
    };
    ca.issue("one", &[]).ok();
    std::fs::remove_file(ca.out.join("one.pem")).unwrap();
    let before = ca.snapshot();
    let inv = ca.inventory();
    mutual(&[
        "ca",
        "init",
        "--dir",
        s(&dir),
        "--name",
        "Other",
        "--key-type",
        "rsa-3072",
    ])
    .fails_with("already exists");
    // Even a wrong password or a partial directory changes nothing.
    mutual_pw(Some("different"), &["ca", "init", "--dir", s(&dir)]).fails_with("already exists");
    assert_eq!(ca.snapshot(), before, "init twice changed files");
    assert_eq!(ca.inventory(), inv);
}

#[test]
fn ca_keys_are_encrypted_and_wrong_passwords_change_nothing() {
    let ca = TestCa::new(&[]);
    for k in ["root.key", "intermediate.key"] {
        let p = ca.dir.join(k);
        let pem = std::fs::read_to_string(&p).unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        openssl(&[
            "pkey",
            "-in",
            s(&p),
            "-passin",
            &format!("pass:{PW}"),
            "-noout",
        ])
        .ok();
        let wrong = openssl(&["pkey", "-in", s(&p), "-passin", "pass:wrong", "-noout"]);
        assert_ne!(wrong.code, 0);
        let none = openssl(&["pkey", "-in", s(&p), "-passin", "pass:", "-noout"]);
        assert_ne!(
            none.code, 0,
            "openssl opened the CA key without the password"
        );
    }
    ca.issue("first", &[]).ok();
    let inv = ca.inventory();
    let before = ca.snapshot();
    mutual_pw(
        Some("wrong password"),
        &["cert", "issue", "x", "--dir", ca.d(), "--out", ca.o()],
    )
    .fails_with("wrong CA password or corrupted key");
    mutual_pw(Some("wrong password"), &["ca", "crl", "--dir", ca.d()])
        .fails_with("wrong CA password or corrupted key");
    // No password and no terminal: a clear error, not a hang.
    mutual_pw(
        None,
        &["cert", "issue", "x", "--dir", ca.d(), "--out", ca.o()],
    )
    .fails_with("MUTUAL_CA_PASSWORD");
    let pwfile = ca.tmp.path().join("pw");
    std::fs::write(&pwfile, "also wrong\n").unwrap();
    let issue_with_pwfile = || {
        let a = ["cert", "issue", "x", "--dir", ca.d(), "--out", ca.o()];
        let mut a = a.to_vec();
        a.extend(["--password-file", s(&pwfile)]);
        mutual_pw(None, &a)
    };
    issue_with_pwfile().fails_with("wrong CA password");
    assert!(!ca.out.join("x.key").exists() && !ca.out.join("x.pem").exists());
    assert_eq!(ca.inventory(), inv);
    assert_eq!(ca.snapshot(), before);
    // The right password from a file works.
    std::fs::write(&pwfile, format!("{PW}\n")).unwrap();
    issue_with_pwfile().ok();
}

#[test]
fn revocation_and_crls_are_accepted_by_openssl_with_the_root_key_offline() {
    let ca = TestCa::new(&[]);
    // The root key is only needed at init: move it "offline".
    std::fs::rename(
        ca.dir.join("root.key"),
        ca.tmp.path().join("offline-root.key"),
    )
    .unwrap();
    let a: serde_json::Value = serde_json::from_str(
        &ca.issue("a", &["--server", "--san", "dns:a.example", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    ca.issue("b", &[]).ok();
    ca.issue("c", &[]).ok();
    let serial_a = a["serial"].as_str().unwrap().to_string();
    // openssl's form: uppercase with colons.
    let colon: String = serial_a
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let o = mutual(&[
        "cert",
        "revoke",
        &colon,
        "--reason",
        "key-compromise",
        "--dir",
        ca.d(),
    ])
    .ok();
    assert!(o.stdout.contains("Revoked"), "{}", o.stdout);
    // A hold is a suspension a later CRL may lift; a revocation here never is.
    mutual(&[
        "cert",
        "revoke",
        "--cert",
        s(&ca.out.join("b.pem")),
        "--reason",
        "certificate-hold",
        "--dir",
        ca.d(),
    ])
    .fails_with("certificate-hold is a suspension, and a revocation here is never lifted");
    let o = mutual(&["cert", "revoke", &serial_a, "--dir", ca.d()]).ok();
    assert!(o.stdout.contains("already revoked"), "{}", o.stdout);
    let b_cert = ca.out.join("b.pem");
    let o = mutual(&[
        "cert",
        "revoke",
        "--cert",
        s(&b_cert),
        "--reason",
        "superseded",
        "--dir",
        ca.d(),
        "--json",
    ])
    .ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["already_revoked"], false);
    assert_eq!(v["reason"], "superseded");
    let inv = ca.inventory();
    mutual(&["cert", "revoke", "00ff00ff", "--dir", ca.d()])
        .fails_with("no certificate with serial");
    mutual(&["cert", "revoke", "not-hex", "--dir", ca.d()]).fails_with("invalid serial");
    assert_eq!(ca.inventory(), inv);

    let bundle = ca.tmp.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        format!(
            "{}{}",
            std::fs::read_to_string(ca.intermediate()).unwrap(),
            std::fs::read_to_string(ca.root()).unwrap()
        ),
    )
    .unwrap();
    let crl_pem = ca.tmp.path().join("ca.crl.pem");
    mutual(&[
        "ca",
        "crl",
        "--dir",
        ca.d(),
        "--out",
        s(&crl_pem),
        "--next-update",
        "48h",
    ])
    .ok();
    let o = openssl(&[
        "crl",
        "-in",
        s(&crl_pem),
        "-CAfile",
        s(&bundle),
        "-verify",
        "-noout",
        "-text",
    ])
    .ok();
    assert!(o.stderr.contains("verify OK"), "{}", o.stderr);
    assert!(o.stdout.contains(&serial_a.to_uppercase()), "{}", o.stdout);
    assert!(o.stdout.contains("Key Compromise"), "{}", o.stdout);
    assert!(o.stdout.contains("Superseded"), "{}", o.stdout);
    assert!(
        o.stdout.contains("X509v3 CRL Number: \n                1"),
        "{}",
        o.stdout
    );
    // openssl path validation with the CRL: the revoked cert is rejected, the others are fine.
    let root = ca.root();
    let int = ca.intermediate();
    let check = |name: &str| {
        openssl(&[
            "verify",
            "-crl_check",
            "-CAfile",
            &root,
            "-untrusted",
            &int,
            "-CRLfile",
            s(&crl_pem),
            s(&ca.out.join(name)),
        ])
    };
    let revoked = check("a.pem");
    assert!(format!("{}{}", revoked.stdout, revoked.stderr).contains("certificate revoked"));
    assert!(check("c.pem").stdout.contains(": OK"));

    // DER by extension, the number goes up; stdout gets PEM.
    let crl_der = ca.tmp.path().join("ca.crl");
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl_der)]).ok();
    let o = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        s(&crl_der),
        "-CAfile",
        s(&bundle),
        "-verify",
        "-noout",
        "-crlnumber",
    ])
    .ok();
    assert!(o.stdout.contains("crlNumber=0x02"), "{}", o.stdout);
    let o = mutual(&["ca", "crl", "--dir", ca.d()]).ok();
    assert!(
        o.stdout.starts_with("-----BEGIN X509 CRL-----"),
        "{}",
        o.stdout
    );

    // --out replaces a CRL (PEM or DER: the refresh a cron job does), never anything else: a
    // slip onto the CA's root.pem is refused before a CRL is signed (the number stays).
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl_der)]).ok();
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl_pem)]).ok();
    let root = std::path::Path::new(ca.d()).join("root.pem");
    let before = std::fs::read(&root).unwrap();
    mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&root)])
        .fails_with("root.pem exists and does not hold a CRL; refusing to replace it");
    assert_eq!(std::fs::read(&root).unwrap(), before);
    let o = mutual(&["ca", "crl", "--dir", ca.d(), "--out", s(&crl_der), "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["crl_number"], "06", "{v}");
}

#[test]
fn list_filters_by_status_and_expiry() {
    let ca = TestCa::new(&[]);
    ca.issue("short", &["--ttl", "2d"]).ok();
    ca.issue("long", &["--ttl", "30d"]).ok();
    ca.issue("gone", &["--ttl", "30d"]).ok();
    ca.issue("blink", &["--ttl", "1s"]).ok();
    let gone = ca
        .inventory()
        .into_iter()
        .find(|r| r["name"] == "gone")
        .unwrap();
    mutual(&[
        "cert",
        "revoke",
        gone["serial"].as_str().unwrap(),
        "--dir",
        ca.d(),
    ])
    .ok();
    // Wait for the 1-second certificate to expire (60 s is an upper bound for a loaded machine).
    let expired = mutual_test::eventually(std::time::Duration::from_secs(60), || {
        let o = mutual(&[
            "cert",
            "list",
            "--dir",
            ca.d(),
            "--status",
            "expired",
            "--json",
        ])
        .ok();
        let v: Vec<serde_json::Value> = serde_json::from_str(&o.stdout).unwrap();
        (v.len() == 1).then_some(v)
    })
    .expect("the 1s certificate never showed as expired");
    assert_eq!(expired[0]["name"], "blink");
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["cert", "list", "--dir", ca.d(), "--json"];
        a.extend_from_slice(args);
        let o = mutual(&a).ok();
        let v: Vec<serde_json::Value> = serde_json::from_str(&o.stdout).unwrap();
        v.iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&["--expiring-within", "7d"]), vec!["short"]);
    assert_eq!(names(&["--status", "revoked"]), vec!["gone"]);
    assert_eq!(names(&["--status", "valid"]), vec!["short", "long"]);
    assert_eq!(
        names(&["--status", "valid", "--expiring-within", "7d"]),
        vec!["short"]
    );
    // Beside another status --expiring-within could only ever list nothing: refused.
    for status in ["revoked", "expired"] {
        let a = ["cert", "list", "--dir", ca.d(), "--status", status];
        mutual(&[&a[..], &["--expiring-within", "7d"]].concat()).fails_with(&format!(
            "--expiring-within lists valid certificates only: beside --status {status}"
        ));
    }
    assert_eq!(names(&[]).len(), 4);
    let row = ca
        .inventory()
        .into_iter()
        .find(|r| r["name"] == "gone")
        .unwrap();
    for field in [
        "serial",
        "subject",
        "sans",
        "usage",
        "not_before",
        "not_after",
        "status",
        "revoked_at",
        "reason",
        "requested_by",
        "sha256",
        "created_at",
    ] {
        assert!(row.get(field).is_some(), "missing {field}: {row}");
    }
    assert_eq!(row["status"], "revoked");
    let table = mutual(&["cert", "list", "--dir", ca.d()]).ok().stdout;
    assert!(table.contains("LEFT"), "{table}");
    assert!(table.contains("long"));
    mutual(&["cert", "list", "--dir", ca.d(), "--status", "bogus"]).fails_with("unknown status");
    let missing = ca.tmp.path().join("nope");
    mutual(&["cert", "list", "--dir", s(&missing)]).fails_with("mutual ca init");
}
