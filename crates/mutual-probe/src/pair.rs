//! `mutual probe --pair CERT KEY`: the checks a server or client config needs before it ever
//! meets the network. Does the key belong to the certificate, is the chain file complete and in
//! order (each certificate signed by the next), is the leaf valid now, and, with `--ca`, does it
//! chain to a trusted root.

use std::path::Path;

use mutual_tls::Reason;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde::Serialize;

use crate::certinfo::{self, now_unix, CertSummary};
use crate::{load_certs, load_key, provider, ProbeError};

/// What `--pair` found.
#[derive(Clone, Debug, Serialize)]
pub struct PairReport {
    pub cert_file: String,
    pub key_file: String,
    pub key_matches: bool,
    pub chain: Vec<CertSummary>,
    /// Each certificate is issued and signed by the next one in the file.
    pub chain_ordered: bool,
    /// Problems with the order, signatures or validity of the chain.
    pub chain_problems: Vec<String>,
    /// The last certificate's issuer, which the peer must have as a root (absent when the file ends
    /// with a self-signed root).
    pub root_needed: Option<String>,
    pub root_included: bool,
    /// The issuer of a file that ends with a leaf (no CA certificate after it): the intermediate
    /// that is missing, unless that issuer is itself a root the peers trust.
    pub intermediate_missing: Option<String>,
    /// The key matches a certificate other than the first: the file is in the wrong order.
    pub key_matches_later: bool,
    pub leaf_valid: bool,
    /// With `--ca`: whether the chain verifies to it (`null` without `--ca`).
    pub chains_to_ca: Option<bool>,
    pub ca_detail: Option<String>,
    pub reason: Reason,
    pub hint: String,
    pub pass: bool,
    pub verdict: String,
}

impl PairReport {
    /// 0 when the pair passes, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.pass)
    }
}

fn webpki_reason(e: &webpki::Error) -> Reason {
    use webpki::Error as W;
    #[allow(deprecated)]
    match e {
        W::UnknownIssuer => Reason::UnknownCa,
        W::CertExpired { .. } => Reason::Expired,
        W::CertNotValidYet { .. } => Reason::NotYetValid,
        W::CertRevoked => Reason::Revoked,
        W::InvalidSignatureForPublicKey => Reason::BadSignature,
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => Reason::WrongPurpose,
        W::UnsupportedSignatureAlgorithm
        | W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKey
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => Reason::WeakKey,
        W::BadDer | W::BadDerTime | W::TrailingData(_) => Reason::Malformed,
        _ => Reason::Other,
    }
}

fn verify_to_ca(
    chain: &[CertificateDer<'static>],
    leaf: &CertSummary,
    ca: &Path,
) -> Result<Result<(), (Reason, String)>, ProbeError> {
    let roots = load_certs(ca)?;
    let anchors = roots
        .iter()
        .map(|r| {
            webpki::anchor_from_trusted_cert(r)
                .map(|a| a.to_owned())
                .map_err(|e| {
                    crate::bad_file(ca.to_path_buf(), format!("not a usable trust anchor ({e})"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some((leaf_der, rest)) = chain.split_first() else {
        return Ok(Err((Reason::Malformed, "empty chain".into())));
    };
    let ee = match webpki::EndEntityCert::try_from(leaf_der) {
        Ok(ee) => ee,
        Err(e) => return Ok(Err((Reason::Malformed, e.to_string()))),
    };
    // Judge the certificate for what it says it is for; a certificate without EKU is checked as
    // a server certificate (webpki accepts a missing EKU for either).
    let usage = if !leaf.eku_server_auth && leaf.eku_client_auth {
        webpki::KeyUsage::client_auth()
    } else {
        webpki::KeyUsage::server_auth()
    };
    let p = provider();
    let res = ee.verify_for_usage(
        p.signature_verification_algorithms.all,
        &anchors,
        rest,
        UnixTime::now(),
        usage,
        None,
        None,
    );
    Ok(res
        .map(|_| ())
        .map_err(|e| (webpki_reason(&e), e.to_string())))
}

/// Checks CERT and KEY (and the chain to `ca` when given). `Err` only for unreadable files.
pub fn check_pair(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<PairReport, ProbeError> {
    let chain_der = load_certs(cert)?;
    let key_der = load_key(key)?;
    let p = provider();
    let signing = p
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| crate::bad_file(key.to_path_buf(), format!("unusable private key ({e})")))?;
    let ck = rustls::sign::CertifiedKey::new(chain_der.clone(), signing.clone());
    let key_matches = ck.keys_match().is_ok();
    // A key that matches a later certificate means the leaf is not first (a reversed chain),
    // which is what to say rather than "the key does not match".
    let key_matches_later = !key_matches
        && chain_der.iter().skip(1).any(|c| {
            rustls::sign::CertifiedKey::new(vec![c.clone()], signing.clone())
                .keys_match()
                .is_ok()
        });

    let chain: Vec<CertSummary> = chain_der
        .iter()
        .map(|c| {
            certinfo::summarize(c).ok_or_else(|| {
                crate::bad_file(
                    cert.to_path_buf(),
                    "a certificate in the file does not parse",
                )
            })
        })
        .collect::<Result<_, _>>()?;

    let mut problems = Vec::new();
    let mut ordered = true;
    let mut bad_sig = false;
    for i in 0..chain.len().saturating_sub(1) {
        let (c, next) = (&chain[i], &chain[i + 1]);
        if c.issuer != next.subject {
            ordered = false;
            problems.push(format!(
                "[{i}] {} is issued by {}, but the next certificate is {}",
                c.subject, c.issuer, next.subject
            ));
        } else if !certinfo::signed_by(&chain_der[i], &chain_der[i + 1]) {
            ordered = false;
            bad_sig = true;
            problems.push(format!(
                "[{i}] {}: its signature does not verify with the key of [{}] {}",
                c.subject,
                i + 1,
                next.subject
            ));
        }
    }
    let now = now_unix();
    for (i, c) in chain.iter().enumerate() {
        if now > c.not_after_unix {
            problems.push(format!("[{i}] {} expired on {}", c.subject, c.not_after));
        } else if now < c.not_before_unix {
            problems.push(format!(
                "[{i}] {} is not valid before {}",
                c.subject, c.not_before
            ));
        }
    }
    let leaf = chain.first();
    let leaf_valid = leaf.is_some_and(|l| now >= l.not_before_unix && now <= l.not_after_unix);
    let (root_included, root_needed) = match (chain.last(), chain_der.last()) {
        (Some(last), Some(der)) if last.subject == last.issuer && certinfo::signed_by(der, der) => {
            (true, None)
        }
        (Some(last), _) => (false, Some(last.issuer.clone())),
        _ => (false, None),
    };
    // The file ends with a leaf: its issuer is most likely an intermediate left out.
    let intermediate_missing = match chain.last() {
        Some(last) if !last.is_ca && root_needed.is_some() => Some(last.issuer.clone()),
        _ => None,
    };
    let root_needed = if intermediate_missing.is_some() {
        None
    } else {
        root_needed
    };

    let (chains_to_ca, ca_detail, ca_reason) = match (ca, leaf) {
        (Some(ca), Some(l)) => match verify_to_ca(&chain_der, l, ca)? {
            Ok(()) => (
                Some(true),
                Some(format!("chains to a root in {}", ca.display())),
                None,
            ),
            Err((r, d)) => (Some(false), Some(d), Some(r)),
        },
        _ => (None, None, None),
    };

    let expired_reason = leaf.and_then(|l| {
        if now > l.not_after_unix {
            Some(Reason::Expired)
        } else if now < l.not_before_unix {
            Some(Reason::NotYetValid)
        } else {
            None
        }
    });
    let reason = if key_matches_later {
        Reason::UnknownCa
    } else if !key_matches {
        Reason::Other
    } else if let Some(r) = expired_reason {
        r
    } else if bad_sig {
        Reason::BadSignature
    } else if !ordered {
        Reason::UnknownCa
    } else if let Some(r) = ca_reason {
        r
    } else {
        Reason::Ok
    };
    let pass = key_matches && leaf_valid && ordered && chains_to_ca != Some(false);
    let hint = if key_matches_later {
        "The chain is in the wrong order: the key matches a later certificate. Put the leaf first, then its intermediate; leave the root out."
            .to_string()
    } else if !key_matches {
        "Use the key generated with this certificate (compare `openssl x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`)."
            .to_string()
    } else if !ordered {
        "Put the leaf first, then each issuer in order (leaf, intermediate); leave the root out."
            .to_string()
    } else if let Some(i) = &intermediate_missing {
        format!(
            "The file holds the leaf without its intermediate: add {i} after the leaf (the chain file must hold leaf + intermediate), unless it is itself a root your peers trust."
        )
    } else if reason == Reason::Ok {
        match &root_needed {
            Some(r) => format!("Peers must trust {r} (as a root, or add it to this file if it is an intermediate)."),
            None => "Nothing to do (the file ends with a self-signed root, which peers ignore).".into(),
        }
    } else {
        reason.hint().to_string()
    };
    let verdict = if pass {
        format!(
            "PASS: the key matches {} and the chain is complete and in order",
            cert.display()
        )
    } else if key_matches_later {
        format!(
            "FAIL: the chain in {} is in the wrong order: the leaf (the certificate {} belongs to) must come first",
            cert.display(),
            key.display()
        )
    } else if !key_matches {
        format!(
            "FAIL: the private key in {} does not match the certificate in {}",
            key.display(),
            cert.display()
        )
    } else {
        let first = problems
            .first()
            .cloned()
            .or_else(|| ca_detail.clone())
            .unwrap_or_default();
        format!("FAIL: {reason}: {first}")
    };
    Ok(PairReport {
        cert_file: cert.display().to_string(),
        key_file: key.display().to_string(),
        key_matches,
        chain,
        chain_ordered: ordered,
        chain_problems: problems,
        root_needed,
        root_included,
        intermediate_missing,
        key_matches_later,
        leaf_valid,
        chains_to_ca,
        ca_detail,
        reason,
        hint,
        pass,
        verdict,
    })
}
