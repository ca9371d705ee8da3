//! Issue 19's check under load (a module of the `enroll` test binary, so that cargo runs it beside
//! `proxy_auto_rotation_end_to_end` and the replica failover instead of after them; its name
//! sorts first so it starts first; ARCHITECTURE.md, "How the integration tests are built"): `serve` and `connect` enrolled with 60-second certificates and renewing
//! themselves through `mutual ca serve` while the intermediate is rotated by another
//! process, then the root is rolled over (published, activated once both proxies hold the new
//! bundle, retired once no old-root certificate is valid): requests flow the whole time with
//! none failing, certificates from both issuers are accepted during the overlap, and both
//! proxies end with certificates from the new root and the final bundle (its version in their
//! metrics).
use crate::pki_common::{issuer_cn, mutual, norm_serial, s, CaServe};
use crate::proxy_common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

#[test]
fn rotation_and_root_rollover_under_load_fail_no_request() {
    let mut ca = CaServe::with_new_ca(
        "Load CA",
        &[],
        &["--rate-limit", "off", "--server-cert-ttl", "60s"],
    );
    let work = tempfile::tempdir().unwrap();
    let EnrolledPair {
        serve,
        connect,
        sdir,
        cdir,
        ..
    } = enrolled_pair(work.path(), &ca.url(), &ca.fingerprint(), |sans, usage| {
        ca.token(sans, "60s", usage)
    });
    assert_eq!(issuer_cn(&sdir.join("cert.pem")), "Load CA Intermediate");

    let mut flow = Flow::begin();
    let start = flow.start;
    let version = |p: &Proxy, listener: &str| {
        p.metric(&format!(
            "mutual_trust_bundle_version{{listener=\"{listener}\"}}"
        ))
    };
    let both_at =
        |v: f64| version(&serve, "serve") == Some(v) && version(&connect, "connect") == Some(v);
    let chain_len = |dir: &Path| {
        std::fs::read_to_string(dir.join("cert.pem"))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    // The phases, each entered when the previous one's condition holds; requests flow
    // throughout (one every 50 ms). Bounded: the whole run must end within 8 minutes.
    let mut phase = 0;
    let dir = s(ca.d()).to_string();
    while phase < 7 {
        assert!(
            start.elapsed() < Duration::from_secs(480),
            "stuck in phase {phase}\nserve:\n{}\nconnect:\n{}\nCA:\n{}",
            serve.stderr_text(),
            connect.stderr_text(),
            ca.log_text()
        );
        match phase {
            // Intermediate rotation at 15 s.
            0 if start.elapsed() >= Duration::from_secs(15) => {
                mutual(&["ca", "rotate-intermediate", "--dir", &dir]).ok();
                phase = 1;
            }
            // Both proxies renewed from int-2: the intermediate rotation is done.
            1 if issuer_cn(&sdir.join("cert.pem")) == "Load CA Intermediate 2"
                && issuer_cn(&cdir.join("cert.pem")) == "Load CA Intermediate 2" =>
            {
                mutual(&["ca", "rotate-root", "--dir", &dir, "--min-overlap", "5s"]).ok();
                phase = 2;
            }
            // Both proxies hold bundle version 2 (both roots): issue from the new root.
            2 if both_at(2.0) => {
                let o = mutual(&["ca", "rotate-root", "--dir", &dir, "--activate"]);
                if o.code == 0 {
                    phase = 3;
                }
            }
            // Both renewed from the new root's intermediate (chains of 3: the old root's
            // signature too): the old root can go once its certificates expired.
            3 if issuer_cn(&sdir.join("cert.pem")) == "Load CA Intermediate 3"
                && issuer_cn(&cdir.join("cert.pem")) == "Load CA Intermediate 3" =>
            {
                assert_eq!((chain_len(&sdir), chain_len(&cdir)), (3, 3));
                phase = 4;
            }
            4 if mutual(&["ca", "retire-root", "--dir", &dir]).code == 0 => {
                // Replicas re-read root.pem for their client check at start.
                ca.stop();
                ca.start();
                phase = 5;
            }
            // Both proxies hold the final bundle (version 3, the new root alone)...
            5 if both_at(3.0) => phase = 6,
            // ...and renewed since: chains without the old root's signature.
            6 if chain_len(&sdir) == 2 && chain_len(&cdir) == 2 => phase = 7,
            _ => {}
        }
        flow.send(&connect, &format!(" phase {phase}"));
        std::thread::sleep(Duration::from_millis(50));
    }
    flow.assert_none_failed(&serve, &connect);
    let good = flow.good;
    eprintln!(
        "{good} requests through connect -> serve -> backend during the rotation and the root \
         rollover ({:?}), none failed",
        start.elapsed()
    );
    // The proxies' trust files hold the new root alone, the CA's root.pem.
    let root = std::fs::read(ca.root()).unwrap();
    for d in [&sdir, &cdir] {
        assert_eq!(std::fs::read(d.join("root.pem")).unwrap(), root);
    }
    // serve accepted connect's certificates from every intermediate: int-1 and int-2 under
    // the old root, int-3 under the new one (with and without the old root's signature).
    assert_eq!(
        accepted_issuers(&ca, &serve),
        vec!["int-1", "int-2", "int-3"],
        "{}",
        serve.stderr_text()
    );
    for p in [&serve, &connect] {
        let log = p.stderr_text();
        assert!(log.contains("trust bundle updated"), "{log}");
    }
}

/// The issuers of the client certificates serve accepted so far.
fn accepted_issuers(ca: &CaServe, serve: &Proxy) -> Vec<String> {
    let issuer_of: BTreeMap<String, String> = ca
        .inventory()
        .iter()
        .map(|r| {
            (
                norm_serial(r["serial"].as_str().unwrap()),
                r["issuer"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut v: Vec<String> = serve
        .audit_lines()
        .iter()
        .filter(|l| l["result"] == "allowed")
        .filter_map(|l| l["identity"]["serial"].as_str().map(norm_serial))
        .filter_map(|s| issuer_of.get(&s).cloned())
        .collect();
    v.sort();
    v.dedup();
    v
}
