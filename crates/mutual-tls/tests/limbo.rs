//! x509-limbo conformance: every case of the C2SP path-validation suite through
//! `mutual_tls::verify_chain` (the validator the proxy and client use), compared with the
//! expected results, the rustls-webpki baseline and our list of explained exceptions
//! (conformance/limbo-exceptions.txt). docs/conformance.md reports the figures.
//!
//! Both profiles run: `compatible` (the default) against conformance/limbo-exceptions.txt and
//! `strict` (webpki plus the lint's errors on the built path) against
//! conformance/limbo-exceptions-strict.txt. Strict must accept no chain the suite says must
//! fail and must reject no valid chain the compatible profile accepts.
//!
//! Environment: MUTUAL_LIMBO (suite JSON; unset: the test passes without running),
//! MUTUAL_LIMBO_BASELINE (optional baseline to compare with), MUTUAL_LIMBO_RESULTS (where to
//! write the harness result JSON; default: Cargo's target tmp dir).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mutual_tls::{verify_chain, PeerName, Profile, Purpose, VerifyRequest};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use serde::Deserialize;

/// The agreement count the rustls-webpki baseline reaches on this suite copy; we must not
/// fall below it.
const MIN_AGREE: usize = 9703;

#[derive(Deserialize)]
struct Suite {
    testcases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    validation_kind: String,
    trusted_certs: Vec<String>,
    untrusted_intermediates: Vec<String>,
    peer_certificate: String,
    validation_time: Option<String>,
    expected_result: String,
    expected_peer_name: Option<Name>,
    extended_key_usage: Vec<String>,
    key_usage: Vec<String>,
    signature_algorithms: Vec<String>,
    max_chain_depth: Option<u64>,
    crls: Vec<String>,
}

#[derive(Deserialize)]
struct Name {
    kind: String,
    value: String,
}

#[derive(Deserialize)]
struct Baseline {
    disagreements: Vec<BaselineEntry>,
}

#[derive(Deserialize)]
struct BaselineEntry {
    id: String,
    actual: String,
}

#[derive(serde::Serialize)]
struct ResultEntry {
    id: String,
    actual_result: &'static str,
    context: String,
}

enum Verdict {
    Success,
    Failure(String),
    Skipped(String),
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("PEM: {e:?}"))
}

fn run_case(c: &Case, profile: Profile) -> Verdict {
    if !c.signature_algorithms.is_empty() {
        return Verdict::Skipped("signature algorithm restrictions are not configurable".into());
    }
    if !c.key_usage.is_empty() {
        return Verdict::Skipped("key usage (KU) checks are not performed (as in webpki)".into());
    }
    let purpose = match c.validation_kind.as_str() {
        "SERVER" => Purpose::Server,
        "CLIENT" => Purpose::Client,
        k => return Verdict::Skipped(format!("validation kind {k}")),
    };
    // The EKU implied by the validation kind is what we check; any other list is not.
    let implied = match purpose {
        Purpose::Server => "serverAuth",
        _ => "clientAuth",
    };
    if c.extended_key_usage.iter().any(|e| e != implied) {
        return Verdict::Skipped(format!("EKU set {:?}", c.extended_key_usage));
    }
    let name = match &c.expected_peer_name {
        None => None,
        Some(n) if n.kind == "DNS" || n.kind == "IP" => {
            match ServerName::try_from(n.value.clone()) {
                Ok(sn) => Some(PeerName::Server(sn)),
                Err(_) => return Verdict::Failure(format!("invalid peer name {:?}", n.value)),
            }
        }
        Some(n) => return Verdict::Skipped(format!("{} peer names are not supported", n.kind)),
    };
    let leaf = match certs(&c.peer_certificate) {
        Ok(mut v) if !v.is_empty() => v.remove(0),
        Ok(_) => return Verdict::Failure("no peer certificate".into()),
        Err(e) => return Verdict::Failure(e),
    };
    let mut intermediates = Vec::new();
    for p in &c.untrusted_intermediates {
        match certs(p) {
            Ok(v) => intermediates.extend(v),
            Err(e) => return Verdict::Failure(e),
        }
    }
    let mut roots = Vec::new();
    for p in &c.trusted_certs {
        match certs(p) {
            Ok(v) => roots.extend(v),
            Err(e) => return Verdict::Failure(e),
        }
    }
    let mut crls = Vec::new();
    for p in &c.crls {
        match CertificateRevocationListDer::from_pem_slice(p.as_bytes()) {
            Ok(crl) => crls.push(crl),
            Err(e) => return Verdict::Failure(format!("CRL PEM: {e:?}")),
        }
    }
    let at = match &c.validation_time {
        None => None,
        Some(t) => {
            let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .unwrap();
            Some(UnixTime::since_unix_epoch(Duration::from_secs(
                u64::try_from(t.unix_timestamp()).unwrap(),
            )))
        }
    };
    let out = verify_chain(&VerifyRequest {
        leaf,
        intermediates,
        roots,
        crls,
        purpose,
        name,
        at,
        max_intermediates: c.max_chain_depth.map(|d| usize::try_from(d).unwrap()),
        profile,
        ..Default::default()
    });
    if out.valid {
        Verdict::Success
    } else {
        Verdict::Failure(format!("{}: {}", out.reason, out.detail))
    }
}

fn exceptions(file: &str) -> BTreeMap<String, String> {
    let path = format!("{}/../../conformance/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (id, why) = l.split_once(' ').unwrap_or((l, ""));
            assert!(!why.trim().is_empty(), "exception {id} has no explanation");
            (id.to_string(), why.trim().to_string())
        })
        .collect()
}

#[test]
fn limbo() {
    let Ok(path) = std::env::var("MUTUAL_LIMBO") else {
        println!("limbo: MUTUAL_LIMBO not set, not run");
        return;
    };
    let suite: Suite = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let compatible = run_profile(&suite, Profile::Compatible, "limbo-exceptions.txt", "");
    let strict = run_profile(
        &suite,
        Profile::Strict,
        "limbo-exceptions-strict.txt",
        "-strict",
    );
    // Cases where the suite contradicts itself (an explicit `conflicts_with` pair, or two
    // cases with the same certificate shape and opposite verdicts): listed as `conflict:`.
    let conflicts = exceptions("limbo-exceptions-strict.txt")
        .into_iter()
        .filter(|(_, why)| why.starts_with("conflict:"))
        .map(|(id, _)| id)
        .collect::<BTreeSet<String>>();

    // Strict: no invalid chain accepted, on any case kind.
    let false_accepts: Vec<&str> = strict
        .disagree
        .iter()
        .filter(|d| d.1 == "FAILURE" && !conflicts.contains(&d.0))
        .map(|d| d.0.as_str())
        .collect();
    // Strict: no valid chain rejected that the compatible profile accepts.
    let new_rejects: Vec<&str> = suite
        .testcases
        .iter()
        .filter(|c| {
            c.expected_result == "SUCCESS"
                && compatible.actual.get(&c.id) == Some(&"SUCCESS")
                && strict.actual.get(&c.id) == Some(&"FAILURE")
                && !conflicts.contains(&c.id)
        })
        .map(|c| c.id.as_str())
        .collect();
    let conflict_accepts = strict
        .disagree
        .iter()
        .filter(|d| d.1 == "FAILURE" && conflicts.contains(&d.0))
        .count();
    let conflict_rejects = strict
        .disagree
        .iter()
        .filter(|d| d.1 == "SUCCESS" && conflicts.contains(&d.0))
        .count();
    println!(
        "limbo: compatible {} agree, strict {} agree; strict false accepts {} (+{conflict_accepts} \
         on suite conflicts), new false rejects {} (+{conflict_rejects} on suite conflicts)",
        compatible.agree,
        strict.agree,
        false_accepts.len(),
        new_rejects.len()
    );
    assert!(
        false_accepts.is_empty(),
        "strict profile accepts invalid chains: {false_accepts:?}"
    );
    assert!(
        new_rejects.is_empty(),
        "strict profile rejects valid chains the compatible profile accepts: {new_rejects:?}"
    );
    assert!(
        strict.agree > compatible.agree,
        "strict ({}) must agree more often than compatible ({})",
        strict.agree,
        compatible.agree
    );
}

struct Run {
    agree: usize,
    disagree: Vec<(String, String, &'static str, String)>,
    actual: BTreeMap<String, &'static str>,
}

fn run_profile(suite: &Suite, profile: Profile, exceptions_file: &str, suffix: &str) -> Run {
    let started = std::time::Instant::now();
    let exceptions = exceptions(exceptions_file);
    let label = profile.label();

    let mut results = Vec::with_capacity(suite.testcases.len());
    let (mut agree, mut skipped) = (0usize, 0usize);
    let mut disagree: Vec<(String, String, &'static str, String)> = Vec::new();
    let mut actual_by_id = BTreeMap::new();
    for c in &suite.testcases {
        let (actual, context) = match run_case(c, profile) {
            Verdict::Success => ("SUCCESS", String::new()),
            Verdict::Failure(why) => ("FAILURE", why),
            Verdict::Skipped(why) => ("SKIPPED", why),
        };
        match actual {
            "SKIPPED" => skipped += 1,
            a if a == c.expected_result => agree += 1,
            _ => disagree.push((
                c.id.clone(),
                c.expected_result.clone(),
                actual,
                context.clone(),
            )),
        }
        actual_by_id.insert(c.id.clone(), actual);
        results.push(ResultEntry {
            id: c.id.clone(),
            actual_result: actual,
            context,
        });
    }

    let out_path = std::env::var("MUTUAL_LIMBO_RESULTS")
        .map(|p| match p.strip_suffix(".json") {
            Some(stem) => format!("{stem}{suffix}.json"),
            None => format!("{p}{suffix}"),
        })
        .unwrap_or_else(|_| format!("{}/limbo-results{suffix}.json", env!("CARGO_TARGET_TMPDIR")));
    let doc = serde_json::json!({
        "version": 1,
        "harness": format!("mutual-tls verify_chain (rustls-webpki 0.103), profile {label}"),
        "results": results,
    });
    std::fs::write(&out_path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    println!(
        "limbo [{label}]: {} cases, {agree} agree, {} disagree, {skipped} skipped ({:.1}s); results in {out_path}",
        suite.testcases.len(),
        disagree.len(),
        started.elapsed().as_secs_f64()
    );
    for (id, expected, actual, ctx) in &disagree {
        let listed = if exceptions.contains_key(id) {
            "listed"
        } else {
            "NOT LISTED"
        };
        println!("  [{label}] disagree [{listed}] {id}: expected {expected}, got {actual} ({ctx})");
    }

    if let (Ok(bpath), Profile::Compatible) = (std::env::var("MUTUAL_LIMBO_BASELINE"), profile) {
        let base: Baseline = serde_json::from_slice(&std::fs::read(&bpath).unwrap()).unwrap();
        let base_ids: BTreeSet<&str> = base.disagreements.iter().map(|d| d.id.as_str()).collect();
        let ours: BTreeSet<&str> = disagree.iter().map(|d| d.0.as_str()).collect();
        for id in base_ids.difference(&ours) {
            let what = base
                .disagreements
                .iter()
                .find(|d| d.id == *id)
                .map(|d| d.actual.as_str());
            println!(
                "  fixed vs baseline: {id} (baseline said {})",
                what.unwrap_or("?")
            );
        }
        for id in ours.difference(&base_ids) {
            println!("  new vs baseline: {id}");
        }
    }

    let unlisted: Vec<&str> = disagree
        .iter()
        .filter(|d| !exceptions.contains_key(&d.0))
        .map(|d| d.0.as_str())
        .collect();
    let stale: Vec<&String> = exceptions
        .keys()
        .filter(|id| !disagree.iter().any(|d| &d.0 == *id))
        .collect();
    for id in &stale {
        println!("  [{label}] note: exception {id} no longer disagrees; remove it from the list");
    }
    assert!(
        agree >= MIN_AGREE,
        "only {agree} agreements (minimum {MIN_AGREE})"
    );
    assert!(
        unlisted.is_empty(),
        "[{label}] unexplained disagreements: {unlisted:?}"
    );
    // A valid chain we reject is an outage for someone: each must be an explained webpki
    // limitation, never something our own layer adds.
    let rejected_valid: Vec<&str> = disagree
        .iter()
        .filter(|d| {
            d.1 == "SUCCESS"
                && !exceptions[&d.0].starts_with("webpki:")
                && !exceptions[&d.0].starts_with("conflict:")
        })
        .map(|d| d.0.as_str())
        .collect();
    assert!(
        rejected_valid.is_empty(),
        "valid chains rejected by mutual's own checks: {rejected_valid:?}"
    );
    Run {
        agree,
        disagree,
        actual: actual_by_id,
    }
}
