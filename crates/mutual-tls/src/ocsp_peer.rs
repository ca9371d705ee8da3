//! OCSP for a peer's certificate (issue 19, `connect --ocsp` / `serve --ocsp-from-aia`, not
//! wired yet): the check of a response a relying party fetched from the responder in the peer's
//! AIA. Unlike a staple of our own certificate (`ocsp.rs`, whose signature is the client's to
//! check), here we are the relying party, so everything RFC 6960 §3.2 asks is checked: the
//! response is about exactly this certificate, signed by its issuer or by a delegated responder
//! that the issuer certified for OCSPSigning (valid now), and current (thisUpdate..nextUpdate).
//! No I/O, so it can be tested and fuzzed alone; the fetching will live in mutual-proxy.
use std::collections::HashMap;
use std::sync::RwLock;

use der::Encode;
use rustls_pki_types::CertificateDer;
use x509_ocsp::{CertStatus, ResponderId};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ocsp::{basic_response, parse, sha1, single_response, unix};

/// id-kp-OCSPSigning.
const KP_OCSP_SIGNING: &str = "1.3.6.1.5.5.7.3.9";
/// SHA-1 signatures are refused (DESIGN.md), as rustls-webpki refuses them in chains.
const SHA1_SIGNATURES: [&str; 2] = ["1.2.840.113549.1.1.5", "1.3.14.3.2.29"];
/// Tolerated clock skew for thisUpdate in the future, seconds.
const SKEW: i64 = 300;

/// What a verified response says about the peer's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerStatus {
    Good,
    /// Revocation time (Unix seconds).
    Revoked {
        at: i64,
    },
    /// The responder does not know the certificate: handled like an unreachable responder
    /// (`revocation_unknown`).
    Unknown,
}

/// A verified answer and until when it may be used (nextUpdate, Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAnswer {
    pub status: PeerStatus,
    pub next_update: i64,
}

/// Whether `c` is the one `id` names (by SHA-1 of its key, or by its subject).
fn names(id: &ResponderId, c: &X509Certificate<'_>) -> bool {
    match id {
        ResponderId::ByKey(h) => h.as_bytes() == sha1(&c.public_key().subject_public_key.data),
        ResponderId::ByName(n) => n
            .to_der()
            .is_ok_and(|d| d.as_slice() == c.tbs_certificate.subject.as_raw()),
    }
}

/// Checks `der`, fetched for `leaf_der` issued by `issuer_der`, at `now` (Unix seconds);
/// `Err` says why it cannot be used (then the status is unknown).
pub fn verify_response(
    der: &[u8],
    leaf_der: &[u8],
    issuer_der: &[u8],
    now: i64,
) -> Result<PeerAnswer, String> {
    let basic = basic_response(der)?;
    let leaf = parse(leaf_der)?;
    let issuer = parse(issuer_der)?;

    // About exactly this certificate: serial and both issuer hashes, in the CertID's hash.
    let serial = leaf.raw_serial();
    let single = single_response(&basic, |id| {
        let alg = match id.hash_algorithm.oid.to_string().as_str() {
            "1.3.14.3.2.26" => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            "2.16.840.1.101.3.4.2.1" => &aws_lc_rs::digest::SHA256,
            "2.16.840.1.101.3.4.2.2" => &aws_lc_rs::digest::SHA384,
            "2.16.840.1.101.3.4.2.3" => &aws_lc_rs::digest::SHA512,
            _ => return false,
        };
        let h = |d: &[u8]| aws_lc_rs::digest::digest(alg, d).as_ref().to_vec();
        id.serial_number.as_bytes() == serial
            && id.issuer_name_hash.as_bytes() == h(issuer.tbs_certificate.subject.as_raw())
            && id.issuer_key_hash.as_bytes() == h(&issuer.public_key().subject_public_key.data)
    })?;

    // Signed by the issuer, or by a delegated responder the issuer certified for OCSPSigning.
    let rid = &basic.tbs_response_data.responder_id;
    let certs_der = basic
        .certs
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            c.to_der()
                .map_err(|e| format!("responder certificate: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let delegated;
    let signer_key = if names(rid, &issuer) {
        issuer.public_key()
    } else {
        let mut found = None;
        for d in &certs_der {
            let rc = parse(d)?;
            if names(rid, &rc) {
                rc.verify_signature(Some(issuer.public_key()))
                    .map_err(|_| "the responder certificate is not signed by the issuer")?;
                let eku = rc
                    .extended_key_usage()
                    .ok()
                    .flatten()
                    .ok_or("the responder certificate has no OCSPSigning usage")?;
                if !eku.value.ocsp_signing
                    && !eku
                        .value
                        .other
                        .iter()
                        .any(|o| o.to_id_string() == KP_OCSP_SIGNING)
                {
                    return Err("the responder certificate has no OCSPSigning usage".into());
                }
                let v = rc.validity();
                if now < v.not_before.timestamp() || now > v.not_after.timestamp() {
                    return Err("the responder certificate is not valid now".into());
                }
                found = Some(rc);
                break;
            }
        }
        delegated = found
            .ok_or("the response is signed by neither the issuer nor a responder it certified")?;
        delegated.public_key()
    };
    let alg_der = basic
        .signature_algorithm
        .to_der()
        .map_err(|e| format!("signature algorithm: {e}"))?;
    let (_, alg) = x509_parser::x509::AlgorithmIdentifier::from_der(&alg_der)
        .map_err(|e| format!("signature algorithm: {e}"))?;
    if SHA1_SIGNATURES.contains(&alg.algorithm.to_id_string().as_str()) {
        return Err("the response is signed with SHA-1".into());
    }
    let sig_der = basic
        .signature
        .to_der()
        .map_err(|e| format!("signature: {e}"))?;
    let (_, sig) = x509_parser::der_parser::asn1_rs::BitString::from_der(&sig_der)
        .map_err(|e| format!("signature: {e}"))?;
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| format!("response data: {e}"))?;
    x509_parser::verify::verify_signature(signer_key, &alg, &sig, &tbs)
        .map_err(|_| "the response's signature does not verify")?;

    // Current.
    let this_update = unix(&single.this_update);
    let next_update = single
        .next_update
        .as_ref()
        .map(unix)
        .ok_or("the response has no nextUpdate")?;
    if now + SKEW < this_update || now >= next_update {
        return Err(format!(
            "the response is not current (thisUpdate {this_update}, nextUpdate {next_update})"
        ));
    }
    let status = match &single.cert_status {
        CertStatus::Good(_) => PeerStatus::Good,
        CertStatus::Revoked(r) => PeerStatus::Revoked {
            at: unix(&r.revocation_time),
        },
        CertStatus::Unknown(_) => PeerStatus::Unknown,
    };
    Ok(PeerAnswer {
        status,
        next_update,
    })
}

/// A leaf with an OCSP responder in its AIA and no current answer: the fetcher (in
/// mutual-proxy) asks `url` about `leaf`, checks the answer with [`verify_response`] against
/// `issuer` (from the verified path) and publishes it.
#[derive(Clone, Debug)]
pub struct OcspSighting {
    pub url: String,
    pub leaf: CertificateDer<'static>,
    pub issuer: CertificateDer<'static>,
}

/// At most this many answers are kept (one per peer certificate); past it the set starts over
/// (a bound on memory: the next handshake of each peer asks again).
const MAX_ANSWERS: usize = 10_000;

/// The OCSP answers about peers' certificates that handshakes use now, keyed by the leaf's
/// SHA-256, consulted by [`crate::Trust::check`] like the CDP CRLs ([`crate::cdp`]).
pub struct OcspPeerRevocation {
    answers: RwLock<HashMap<Vec<u8>, PeerAnswer>>,
    deny_unknown: bool,
    on_unknown: Box<dyn Fn(OcspSighting) + Send + Sync>,
}

impl std::fmt::Debug for OcspPeerRevocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspPeerRevocation")
            .field("deny_unknown", &self.deny_unknown)
            .finish_non_exhaustive()
    }
}

/// The key answers are kept under: the leaf's SHA-256 (one leaf, one CertID).
pub fn leaf_key(leaf_der: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf_der)
        .as_ref()
        .to_vec()
}

impl OcspPeerRevocation {
    /// `on_unknown` is called (from a handshake: it must not block) for a leaf whose status is
    /// not known now; `deny_unknown` is `--revocation-unknown deny`.
    pub fn new(deny_unknown: bool, on_unknown: Box<dyn Fn(OcspSighting) + Send + Sync>) -> Self {
        OcspPeerRevocation {
            answers: RwLock::new(HashMap::new()),
            deny_unknown,
            on_unknown,
        }
    }

    /// Records a verified answer about `leaf_der` (kept until its nextUpdate; a revocation for
    /// good).
    pub fn publish(&self, leaf_der: &[u8], answer: PeerAnswer) {
        let mut m = self.answers.write().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_ANSWERS {
            m.clear();
        }
        m.insert(leaf_key(leaf_der), answer);
    }

    /// Drops the answer about `leaf_der` (the fetcher no longer keeps it fresh).
    pub fn forget(&self, leaf_der: &[u8]) {
        let mut m = self.answers.write().unwrap_or_else(|p| p.into_inner());
        m.remove(&leaf_key(leaf_der));
    }

    /// Checks a verified path (leaf first): a leaf naming a responder needs a current good
    /// answer; revoked is `CertRevoked` (the `revoked` label); no current answer (never asked,
    /// stale, `unknown`, the responder unreachable) is reported and, when denying,
    /// `UnknownRevocationStatus` (`revocation_unknown`). A leaf without an OCSP URL passes.
    pub(crate) fn check_path(
        &self,
        path: &[CertificateDer<'static>],
        now: i64,
    ) -> Result<(), webpki::Error> {
        let [leaf, issuer, ..] = path else {
            return Ok(());
        };
        let Some(url) = crate::ocsp::aia_ocsp_url(leaf.as_ref()) else {
            return Ok(());
        };
        let known = self
            .answers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&leaf_key(leaf.as_ref()))
            .cloned();
        match known {
            Some(PeerAnswer {
                status: PeerStatus::Revoked { .. },
                ..
            }) => return Err(webpki::Error::CertRevoked),
            Some(PeerAnswer {
                status: PeerStatus::Good,
                next_update,
            }) if now < next_update => return Ok(()),
            _ => {}
        }
        (self.on_unknown)(OcspSighting {
            url,
            leaf: leaf.clone(),
            issuer: issuer.clone(),
        });
        if self.deny_unknown {
            return Err(webpki::Error::UnknownRevocationStatus);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use mutual_pki::ca::ocsp::{parse_request, OcspStatus};
    use mutual_pki::ca::IssueOptions;
    use mutual_pki::testing;
    use mutual_pki::RevocationReason;

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[tokio::test]
    async fn responses_from_our_responder_verify_and_tampering_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ca = testing::new_ca(d.path(), "ca").await;
        let leaf = testing::issue(&ca, "peer", Default::default()).await;
        let other = testing::issue(&ca, "other", Default::default()).await;
        let int = ca.issuers().default_issuer().der().to_vec();
        let responder = ca
            .ocsp_responder(std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        // The request the fetcher will send, read back by the CA's own parser.
        let req = crate::ocsp::request(&leaf.leaf_der, &int).unwrap();
        let id = parse_request(&req).unwrap().certs[0].cert_id.clone();
        let t = now();
        let sign = |st: OcspStatus, this: i64, next: i64| {
            responder
                .sign(&[(id.clone(), st)], this, next, None)
                .unwrap()
        };

        let good = sign(OcspStatus::Good, t - 60, t + 600);
        assert_eq!(
            verify_response(&good, &leaf.leaf_der, &int, t),
            Ok(PeerAnswer {
                status: PeerStatus::Good,
                next_update: t + 600
            })
        );
        let revoked = sign(
            OcspStatus::Revoked {
                at: t - 100,
                reason: RevocationReason::KeyCompromise,
            },
            t - 60,
            t + 600,
        );
        assert_eq!(
            verify_response(&revoked, &leaf.leaf_der, &int, t)
                .unwrap()
                .status,
            PeerStatus::Revoked { at: t - 100 }
        );
        let unknown = sign(OcspStatus::Unknown, t - 60, t + 600);
        assert_eq!(
            verify_response(&unknown, &leaf.leaf_der, &int, t)
                .unwrap()
                .status,
            PeerStatus::Unknown
        );

        // Each refusal says why.
        assert_eq!(
            verify_response(&good, &other.leaf_der, &int, t).unwrap_err(),
            "the response is about another certificate"
        );
        assert!(verify_response(&good, &leaf.leaf_der, &int, t + 600)
            .unwrap_err()
            .starts_with("the response is not current"));
        let mut bad = good.clone();
        // One bit of producedAt (the first GeneralizedTime, inside the signed data).
        let pos = bad.windows(2).position(|w| w == [0x18, 0x0f]).unwrap() + 5;
        bad[pos] ^= 1;
        assert_eq!(
            verify_response(&bad, &leaf.leaf_der, &int, t).unwrap_err(),
            "the response's signature does not verify"
        );
        // A response about a certificate of another CA's intermediate.
        let d2 = tempfile::tempdir().unwrap();
        let ca2 = testing::new_ca(d2.path(), "ca").await;
        let int2 = ca2.issuers().default_issuer().der().to_vec();
        assert_eq!(
            verify_response(&good, &leaf.leaf_der, &int2, t).unwrap_err(),
            "the response is about another certificate"
        );
        // Signed by a responder that another CA's intermediate certified.
        let foreign = ca2
            .ocsp_responder(std::time::Duration::from_secs(3600))
            .await
            .unwrap()
            .sign(&[(id.clone(), OcspStatus::Good)], t - 60, t + 600, None)
            .unwrap();
        assert_eq!(
            verify_response(&foreign, &leaf.leaf_der, &int, t).unwrap_err(),
            "the responder certificate is not signed by the issuer"
        );
        assert_eq!(
            verify_response(b"\x30\x03\x0a\x01\x06", &leaf.leaf_der, &int, t).unwrap_err(),
            "the responder said Unauthorized"
        );
    }

    #[tokio::test]
    async fn trust_check_uses_the_answers_and_the_unknown_rule() {
        use rustls_pki_types::pem::PemObject;
        use std::sync::{Arc, Mutex};
        let d = tempfile::tempdir().unwrap();
        let ca = testing::new_ca(d.path(), "ca").await;
        let leaf = testing::issue(
            &ca,
            "peer",
            IssueOptions {
                ocsp_urls: vec!["http://127.0.0.1:9/ocsp".into()],
                ..Default::default()
            },
        )
        .await;
        let no_aia = testing::issue(&ca, "plain", Default::default()).await;
        let root = CertificateDer::from_pem_slice(ca.root_pem().as_bytes()).unwrap();
        let int = CertificateDer::from(ca.issuers().default_issuer().der().to_vec());
        let reason = |r: Result<Vec<CertificateDer<'static>>, rustls::Error>| match r {
            Ok(_) => "ok".to_string(),
            Err(e) => crate::classify::classify_rustls_error(&e).to_string(),
        };
        for deny in [true, false] {
            let seen = Arc::new(Mutex::new(Vec::<OcspSighting>::new()));
            let s2 = seen.clone();
            let state = Arc::new(OcspPeerRevocation::new(
                deny,
                Box::new(move |s| s2.lock().unwrap().push(s)),
            ));
            let trust = crate::Trust::new(vec![root.clone()], vec![], Default::default())
                .unwrap()
                .with_ocsp_peer(state.clone());
            let check = |der: &[u8]| {
                trust.check(
                    &CertificateDer::from(der.to_vec()),
                    std::slice::from_ref(&int),
                    rustls_pki_types::UnixTime::now(),
                    &crate::Purpose::Client,
                    None,
                    None,
                )
            };
            // Not asked yet: reported to the fetcher, and the unknown rule decides.
            let want = if deny { "revocation_unknown" } else { "ok" };
            assert_eq!(reason(check(&leaf.leaf_der)), want);
            {
                let seen = seen.lock().unwrap();
                assert_eq!(seen.len(), 1);
                assert_eq!(seen[0].url, "http://127.0.0.1:9/ocsp");
                assert_eq!(seen[0].issuer, int);
            }
            // No responder named: nothing to ask, it passes.
            assert_eq!(reason(check(&no_aia.leaf_der)), "ok");
            let t = now();
            state.publish(
                &leaf.leaf_der,
                PeerAnswer {
                    status: PeerStatus::Good,
                    next_update: t + 600,
                },
            );
            assert_eq!(reason(check(&leaf.leaf_der)), "ok");
            // A good answer past its nextUpdate no longer counts.
            state.publish(
                &leaf.leaf_der,
                PeerAnswer {
                    status: PeerStatus::Good,
                    next_update: t - 1,
                },
            );
            assert_eq!(reason(check(&leaf.leaf_der)), want);
            state.publish(
                &leaf.leaf_der,
                PeerAnswer {
                    status: PeerStatus::Revoked { at: t - 10 },
                    next_update: t + 600,
                },
            );
            assert_eq!(reason(check(&leaf.leaf_der)), "revoked");
        }
    }
}
