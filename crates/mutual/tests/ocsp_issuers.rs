//! OCSP across an intermediate rotation (docs/ocsp.md, docs/lifecycle.md): after
//! `mutual ca rotate-intermediate` on a running `ca serve --ocsp-listen`, `openssl ocsp` gets
//! verified good/revoked answers for certificates of the retiring intermediate and of the new
//! one, each signed by a responder that intermediate issued.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::path::Path;

use mutual_test::{free_port, skip_without};
use pki_common::*;

fn ask(issuer: &Path, cert: &Path, url: &str, root: &Path, respout: &Path) -> String {
    let o = openssl(&[
        "ocsp",
        "-issuer",
        s(issuer),
        "-cert",
        s(cert),
        "-url",
        url,
        "-CAfile",
        s(root),
        "-respout",
        s(respout),
    ]);
    format!("{}{}", o.stdout, o.stderr)
}

fn signer_issuer(resp: &Path) -> String {
    let t = openssl(&["ocsp", "-respin", s(resp), "-resp_text", "-noverify"]).stdout;
    // The first certificate in the response is the responder's: its Issuer line.
    t.lines()
        .find(|l| l.trim_start().starts_with("Issuer:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn responder_answers_for_retiring_and_new_intermediates_after_rotation() {
    if skip_without("openssl") {
        return;
    }
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/ocsp");
    let listen = format!("127.0.0.1:{port}");
    let srv = CaServe::with_new_ca("Rot CA", &["--ocsp-url", &url], &["--ocsp-listen", &listen]);
    let d = s(srv.d()).to_string();
    let out = srv.d().parent().unwrap().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = s(&out).to_string();
    let issue = |name: &str| {
        mutual(&["cert", "issue", name, "--dir", &d, "--out", &o]).ok();
        out.join(format!("{name}.pem"))
    };
    let old_good = issue("old-good");
    let old_bad = issue("old-bad");
    mutual(&["ca", "rotate-intermediate", "--dir", &d]).ok();
    let new_good = issue("new-good");
    let new_bad = issue("new-bad");
    for c in [&old_bad, &new_bad] {
        revoke_in(&d, c, "key-compromise");
    }
    let root = srv.root();
    let int1 = srv.d().join("intermediate.pem");
    let int2 = srv.d().join("issuers/int-2.pem");
    let resp = out.join("resp.der");

    // The retiring intermediate's certificates: answered (not `unauthorized`), verified
    // against the root, signed by a responder that int-1 issued.
    let t = ask(&int1, &old_good, &url, &root, &resp);
    assert!(t.contains("Response verify OK"), "{t}");
    assert!(t.contains("old-good.pem: good"), "{t}");
    assert!(
        signer_issuer(&resp).ends_with("CN=Rot CA Intermediate"),
        "{}",
        signer_issuer(&resp)
    );
    let t = ask(&int1, &old_bad, &url, &root, &resp);
    assert!(
        t.contains("Response verify OK") && t.contains("old-bad.pem: revoked"),
        "{t}"
    );

    // The new intermediate (made while the server ran): its own responder.
    let t = ask(&int2, &new_good, &url, &root, &resp);
    assert!(t.contains("Response verify OK"), "{t}");
    assert!(t.contains("new-good.pem: good"), "{t}");
    assert!(
        signer_issuer(&resp).ends_with("CN=Rot CA Intermediate 2"),
        "{}",
        signer_issuer(&resp)
    );
    let t = ask(&int2, &new_bad, &url, &root, &resp);
    assert!(
        t.contains("Response verify OK") && t.contains("new-bad.pem: revoked"),
        "{t}"
    );

    // A CertID naming the wrong intermediate for the certificate is still not ours to answer
    // about in that name: the root is no issuer of leaves.
    let t = ask(&root, &new_good, &url, &root, &resp);
    assert!(t.contains("Responder Error: unauthorized (6)"), "{t}");

    // One responder row per intermediate, each requested by ca-serve-ocsp.
    let inv = srv.inventory();
    let mut responders: Vec<_> = inv
        .iter()
        .filter(|c| c["requested_by"] == "ca-serve-ocsp")
        .map(|c| c["issuer"].as_str().unwrap().to_string())
        .collect();
    responders.sort();
    assert_eq!(responders, ["int-1", "int-2"], "{inv:?}");
}
