//! mutual-hsm against the real SoftHSM2 module: keys generated in a throwaway token, signatures
//! checked with aws-lc-rs (an independent verifier), and each refusal by its label. One test
//! function, because a PKCS#11 module is initialised once per process and reads SOFTHSM2_CONF
//! only then.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use mutual_hsm::{HsmError, KeyKind, KeyRef, TlsSigningKey};
use rustls::sign::SigningKey;
use rustls::SignatureScheme;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn softhsm(dir: &Path, labels: &[&str]) {
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    for l in labels {
        let o = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", l])
            .args(["--pin", "1234", "--so-pin", "5678"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // Read by the module at C_Initialize, which happens once, below.
    std::env::set_var("SOFTHSM2_CONF", &conf);
}

fn key_ref(uri: &str, pin: &Path) -> KeyRef {
    KeyRef::new(uri, Some(Path::new(MODULE)), Some(pin)).unwrap()
}

fn verify(
    alg: &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
    spki: &[u8],
    msg: &[u8],
    sig: &[u8],
) {
    // The SPKI's BIT STRING is the last element; aws-lc-rs takes the bare key.
    let (_, parsed) = x509_spki(spki);
    aws_lc_rs::signature::UnparsedPublicKey::new(alg, parsed)
        .verify(msg, sig)
        .expect("the token's signature verifies");
}

/// Splits an SPKI into (algorithm, subjectPublicKey bits) with a tiny DER walk.
fn x509_spki(spki: &[u8]) -> (&[u8], &[u8]) {
    fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, h) = if b[1] < 0x80 {
            (b[1] as usize, 2)
        } else {
            let n = (b[1] & 0x7f) as usize;
            (
                b[2..2 + n]
                    .iter()
                    .fold(0usize, |a, x| (a << 8) | *x as usize),
                2 + n,
            )
        };
        (b[0], &b[h..h + len], &b[h + len..])
    }
    let (_, inner, _) = tlv(spki);
    let (_, alg, rest) = tlv(inner);
    let (tag, bits, _) = tlv(rest);
    assert_eq!(tag, 0x03);
    (alg, &bits[1..])
}

#[test]
fn softhsm_keys_sign_and_refuse_clearly() {
    if !Path::new(MODULE).exists() {
        eprintln!("SKIPPED: softhsm2 not installed");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    softhsm(d.path(), &["t1"]);
    let pin = d.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let bad_pin = d.path().join("bad-pin");
    std::fs::write(&bad_pin, "9999\n").unwrap();

    // Not a module: a plain file and a real shared library without PKCS#11 entry points.
    let junk = d.path().join("junk.so");
    std::fs::write(&junk, "not a library").unwrap();
    let e = KeyRef::new("pkcs11:token=t1;object=k", Some(&junk), Some(&pin))
        .unwrap()
        .open()
        .unwrap_err();
    assert_eq!(e.label(), "not_a_module", "{e}");
    let libz: PathBuf = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or(junk.clone());
    let e = KeyRef::new("pkcs11:token=t1;object=k", Some(&libz), Some(&pin))
        .unwrap()
        .open()
        .unwrap_err();
    assert!(matches!(e, HsmError::NotAModule { .. }), "{e}");
    let e = KeyRef::new(
        "pkcs11:token=t1;object=k",
        Some(Path::new("/nonexistent/p11.so")),
        None,
    )
    .unwrap()
    .open()
    .unwrap_err();
    assert_eq!(e.label(), "module_missing", "{e}");

    // Wrong PIN, unknown token, missing object.
    let e = key_ref("pkcs11:token=t1;object=k", &bad_pin)
        .open()
        .unwrap_err();
    assert_eq!(e.label(), "wrong_pin", "{e}");
    assert!(!e.to_string().contains("9999"));
    let e = key_ref("pkcs11:token=nope;object=k", &pin)
        .open()
        .unwrap_err();
    assert_eq!(e.label(), "token_not_found", "{e}");
    assert!(e.to_string().contains("\"t1\""), "{e}");
    let e = key_ref("pkcs11:token=t1;object=missing", &pin)
        .open()
        .unwrap_err();
    assert_eq!(e.label(), "object_not_found", "{e}");

    // P-256: generated inside, sensitive and never extractable; signs for TLS and X.509.
    let ec = key_ref("pkcs11:token=t1;object=ec256", &pin)
        .generate(KeyKind::EcdsaP256)
        .unwrap();
    let info = ec.info();
    assert_eq!(
        (info.sensitive, info.extractable),
        (Some(true), Some(false))
    );
    let e = key_ref("pkcs11:token=t1;object=ec256", &pin)
        .generate(KeyKind::EcdsaP256)
        .unwrap_err();
    assert_eq!(e.label(), "key_exists", "{e}");
    let tls = TlsSigningKey(Arc::clone(&ec));
    assert!(tls.choose_scheme(&[SignatureScheme::ED25519]).is_none());
    let signer = tls
        .choose_scheme(&[
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
        ])
        .unwrap();
    assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
    let sig = signer.sign(b"hello").unwrap();
    verify(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        ec.spki(),
        b"hello",
        &sig,
    );
    let sig = rcgen::SigningKey::sign(ec.as_ref(), b"x509").unwrap();
    verify(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        ec.spki(),
        b"x509",
        &sig,
    );
    // Found again by a second reference: the same token, logged in once.
    let again = key_ref("pkcs11:token=t1;object=ec256", &pin)
        .open()
        .unwrap();
    assert_eq!(again.spki(), ec.spki());

    // P-384 and RSA-PSS.
    let p384 = key_ref("pkcs11:token=t1;object=ec384", &pin)
        .generate(KeyKind::EcdsaP384)
        .unwrap();
    let s = TlsSigningKey(Arc::clone(&p384))
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP384_SHA384])
        .unwrap()
        .sign(b"m")
        .unwrap();
    verify(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1,
        p384.spki(),
        b"m",
        &s,
    );
    let rsa = key_ref("pkcs11:token=t1;object=rsa", &pin)
        .generate(KeyKind::Rsa(2048))
        .unwrap();
    let signer = TlsSigningKey(Arc::clone(&rsa))
        .choose_scheme(&[
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ])
        .unwrap();
    assert_eq!(signer.scheme(), SignatureScheme::RSA_PSS_SHA256);
    let s = signer.sign(b"m").unwrap();
    verify(
        &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256,
        rsa.spki(),
        b"m",
        &s,
    );
    let s = rcgen::SigningKey::sign(rsa.as_ref(), b"m").unwrap();
    verify(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        rsa.spki(),
        b"m",
        &s,
    );

    // Concurrent signatures each take a session from the pool.
    std::thread::scope(|sc| {
        for _ in 0..8 {
            let ec = Arc::clone(&ec);
            sc.spawn(move || {
                for _ in 0..25 {
                    let s = rcgen::SigningKey::sign(ec.as_ref(), b"c").unwrap();
                    verify(
                        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                        ec.spki(),
                        b"c",
                        &s,
                    );
                }
            });
        }
    });
    let (ok, failed) = ec.counts();
    assert_eq!((ok, failed), (202, 0));
}
