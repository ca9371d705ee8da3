//! Two caches that spare a handshake work whose answer cannot have changed, without changing
//! any verdict (issue 20). Each lives in a [`crate::Trust`], which is built anew for every
//! configuration (every reload, every new CA bundle or CRL file), so nothing survives a change
//! of trust: that is the generation both are keyed by.
//!
//! - [`IssuerSteps`]: the signatures made by a trust anchor's key that webpki found valid. Every
//!   full handshake used to verify the same intermediate against the root again (one ECDSA
//!   verification of three, ~20% of the handshake). What is remembered is only that one
//!   signature over one message is valid under one key: a pure fact. webpki still does every
//!   other step of the path at each check (the intermediate's validity at this time, its CA
//!   and path-length constraints, its key usage and EKU, its revocation by a CRL), so an
//!   intermediate that expired or was revoked is refused as before. Bounded.
//! - [`Verdicts`]: a resumed session skips the verifier, so its stored chain is checked again
//!   after the handshake ([`crate::ServerMaterial::recheck_peer`]). A chain that passed the full
//!   check under this trust passes again as long as nothing it depended on moved: the trust
//!   (same `Trust`), and time inside the window where every certificate of the verified path is
//!   valid and every CRL is current. Outside that window the full check runs again (and names
//!   the reason). Only used when everything the check consults is in the `Trust` itself
//!   (no CDP CRLs or OCSP answers, which change on their own, and the compatible profile).
//!   Bounded.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, CertificateRevocationListDer, InvalidSignature,
    SignatureVerificationAlgorithm,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// At most this many remembered signatures per trust: one per (intermediate, root) pair and per
/// CRL a root signed, so a handful in practice; past it the set starts over.
const MAX_STEPS: usize = 256;

/// At most this many remembered verdicts per trust (one per distinct client chain resuming);
/// past it the set starts over (the next resumption of each chain checks it in full again).
const MAX_VERDICTS: usize = 4096;

/// Valid signatures by a trust anchor's key, as (algorithm, key, message, signature).
#[derive(Debug, Default)]
pub(crate) struct IssuerSteps {
    /// The anchors' public keys, as webpki hands them to a verification (the content of the
    /// subjectPublicKey BIT STRING).
    anchor_keys: Vec<Vec<u8>>,
    seen: RwLock<HashSet<Box<[u8]>>>,
    hits: AtomicU64,
}

impl IssuerSteps {
    /// For the anchors made from `roots` (a root that does not parse here has no entry: its
    /// signatures are simply verified every time).
    pub(crate) fn new(roots: &[CertificateDer<'_>]) -> IssuerSteps {
        let anchor_keys = roots
            .iter()
            .filter_map(|r| X509Certificate::from_der(r.as_ref()).ok())
            .map(|(_, c)| c.public_key().subject_public_key.data.to_vec())
            .collect();
        IssuerSteps {
            anchor_keys,
            ..IssuerSteps::default()
        }
    }

    /// The provider's algorithms, each remembering what it verified with an anchor's key.
    pub(crate) fn algorithms(
        self: &Arc<Self>,
        algs: &WebPkiSupportedAlgorithms,
    ) -> Box<[AnchorStep]> {
        algs.all
            .iter()
            .map(|inner| AnchorStep {
                inner: *inner,
                steps: Arc::clone(self),
            })
            .collect()
    }

    /// How many verifications were answered from the set (for tests and profiles).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn is_anchor_key(&self, key: &[u8]) -> bool {
        self.anchor_keys.iter().any(|k| k.as_slice() == key)
    }
}

/// The key of one verification: both algorithm ids and every input, length-prefixed, so equal
/// keys mean equal inputs.
fn step_key(algs: [&AlgorithmIdentifier; 2], parts: [&[u8]; 3]) -> Vec<u8> {
    let [sig_alg, key_alg]: [&[u8]; 2] = algs.map(|a| a.as_ref());
    let all = [sig_alg, key_alg, parts[0], parts[1], parts[2]];
    let mut k = Vec::with_capacity(all.iter().map(|p| p.len() + 8).sum::<usize>());
    for p in all {
        k.extend_from_slice(&(p.len() as u64).to_be_bytes());
        k.extend_from_slice(p);
    }
    k
}

/// One of the provider's signature algorithms, in front of which sits the memory of
/// [`IssuerSteps`]. A signature by another key (the leaf's issuer when it is not an anchor, the
/// CertificateVerify is not verified through here at all) goes straight to the algorithm.
#[derive(Debug)]
pub(crate) struct AnchorStep {
    inner: &'static dyn SignatureVerificationAlgorithm,
    steps: Arc<IssuerSteps>,
}

impl SignatureVerificationAlgorithm for AnchorStep {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        if !self.steps.is_anchor_key(public_key) {
            return self.inner.verify_signature(public_key, message, signature);
        }
        let key = step_key(
            [
                &self.inner.signature_alg_id(),
                &self.inner.public_key_alg_id(),
            ],
            [public_key, message, signature],
        );
        let known = self
            .steps
            .seen
            .read()
            .map(|s| s.contains(key.as_slice()))
            .unwrap_or(false);
        if known {
            self.steps.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // Only a success is remembered: a bad signature is verified (and refused) every time.
        self.inner
            .verify_signature(public_key, message, signature)?;
        let mut seen = self.steps.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_STEPS {
            seen.clear();
        }
        seen.insert(key.into_boxed_slice());
        Ok(())
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        self.inner.public_key_alg_id()
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.inner.signature_alg_id()
    }

    fn fips(&self) -> bool {
        self.inner.fips()
    }
}

/// The algorithms as the slice webpki takes.
pub(crate) fn as_refs(steps: &[AnchorStep]) -> Vec<&dyn SignatureVerificationAlgorithm> {
    steps
        .iter()
        .map(|s| s as &dyn SignatureVerificationAlgorithm)
        .collect()
}

/// When a verdict holds: `from..=until`, Unix seconds.
#[derive(Clone, Copy, Debug)]
struct Window {
    from: u64,
    until: u64,
}

/// Chains (with the purpose and name asked) that passed the full check under this trust, each
/// with the time window in which that verdict stands.
#[derive(Debug, Default)]
pub(crate) struct Verdicts {
    entries: RwLock<HashMap<Box<[u8]>, Window>>,
    hits: AtomicU64,
}

impl Verdicts {
    /// The question asked: `question` (the purpose and the name, as the verifier words them:
    /// `Purpose::cache_words`, `PeerName::cache_words`) and every certificate presented, each
    /// length-prefixed.
    pub(crate) fn key(chain: &[&CertificateDer<'_>], question: [&[u8]; 2]) -> Vec<u8> {
        let mut k = Vec::with_capacity(chain.iter().map(|c| c.len() + 8).sum::<usize>() + 64);
        for p in question.into_iter().chain(chain.iter().map(|c| c.as_ref())) {
            k.extend_from_slice(&(p.len() as u64).to_be_bytes());
            k.extend_from_slice(p);
        }
        k
    }

    /// Whether the chain of `key` passed under this trust and `now` is inside its window.
    pub(crate) fn holds(&self, key: &[u8], now: u64) -> bool {
        let held = self
            .entries
            .read()
            .ok()
            .and_then(|e| e.get(key).copied())
            .is_some_and(|w| w.from <= now && now <= w.until);
        if held {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        held
    }

    /// Remembers that the chain of `key` passed, with `path` the verified path (leaf, the
    /// intermediates used, the root) and `crl_deadline` the last second at which every CRL of
    /// the trust is still current (`None`: no CRL, or their expiry is ignored). A certificate
    /// whose validity does not parse here leaves nothing remembered.
    pub(crate) fn remember(
        &self,
        key: Vec<u8>,
        path: &[CertificateDer<'_>],
        crl_deadline: Option<u64>,
    ) {
        let mut w = Window {
            from: 0,
            until: crl_deadline.unwrap_or(u64::MAX),
        };
        for c in path {
            let Ok((_, c)) = X509Certificate::from_der(c.as_ref()) else {
                return;
            };
            let (Ok(nb), Ok(na)) = (
                u64::try_from(c.validity().not_before.timestamp()),
                u64::try_from(c.validity().not_after.timestamp()),
            ) else {
                return;
            };
            w.from = w.from.max(nb);
            w.until = w.until.min(na);
        }
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if e.len() >= MAX_VERDICTS {
            e.clear();
        }
        e.insert(key.into_boxed_slice(), w);
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// The last second at which all of `crls` are current: webpki refuses a CRL at or after its
/// nextUpdate. `None` when there is none; a CRL without nextUpdate (webpki does not accept
/// one) or that does not parse here makes it 0, so no verdict is ever remembered.
pub(crate) fn crl_deadline(crls: &[CertificateRevocationListDer<'_>]) -> Option<u64> {
    crls.iter()
        .map(|c| {
            CertificateRevocationList::from_der(c.as_ref())
                .ok()
                .and_then(|(_, crl)| crl.next_update())
                .and_then(|t| u64::try_from(t.timestamp()).ok())
                .map_or(0, |t| t.saturating_sub(1))
        })
        .min()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::PathBuf;

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    use mutual_test::{LeafOpts, TestPki};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::UnixTime;

    use super::*;
    use crate::{classify_rustls_error, Purpose, Reason, RevocationPolicy, Trust};

    const DAY: u64 = 86_400;

    fn key_pair() -> EcdsaKeyPair {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap()
    }

    fn sign(k: &EcdsaKeyPair, msg: &[u8]) -> Vec<u8> {
        k.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec()
    }

    #[test]
    fn only_valid_signatures_by_an_anchor_key_are_remembered() {
        let (anchor, other) = (key_pair(), key_pair());
        let steps = Arc::new(IssuerSteps {
            anchor_keys: vec![anchor.public_key().as_ref().to_vec()],
            ..IssuerSteps::default()
        });
        let alg = AnchorStep {
            inner: webpki::aws_lc_rs::ECDSA_P256_SHA256,
            steps: Arc::clone(&steps),
        };
        let pk = anchor.public_key().as_ref();
        let (msg, sig) = (
            b"tbs of an intermediate".as_slice(),
            sign(&anchor, b"tbs of an intermediate"),
        );
        assert!(alg.verify_signature(pk, msg, &sig).is_ok());
        assert_eq!(steps.hits(), 0, "the first verification is done");
        assert!(alg.verify_signature(pk, msg, &sig).is_ok());
        assert_eq!(steps.hits(), 1, "the second is remembered");
        // Any other input is verified, and a bad signature refused, every time.
        let mut bad_sig = sig.clone();
        *bad_sig.last_mut().unwrap() ^= 1;
        for _ in 0..2 {
            assert!(alg.verify_signature(pk, b"another tbs", &sig).is_err());
            assert!(alg.verify_signature(pk, msg, &bad_sig).is_err());
        }
        assert_eq!(steps.hits(), 1);
        // A key that is not an anchor's: verified, never remembered.
        let opk = other.public_key().as_ref();
        let osig = sign(&other, msg);
        for _ in 0..2 {
            assert!(alg.verify_signature(opk, msg, &osig).is_ok());
            assert!(alg.verify_signature(pk, msg, &osig).is_err());
        }
        assert_eq!(steps.hits(), 1);
        assert_eq!(steps.seen.read().unwrap().len(), 1);
    }

    /// The leaf (DER) and its intermediate, as a peer presents them.
    fn chain_of(
        pki: &TestPki,
        leaf: &mutual_test::Leaf,
    ) -> (CertificateDer<'static>, Vec<CertificateDer<'static>>) {
        let int = CertificateDer::from_pem_slice(pki.int_pem.as_bytes()).unwrap();
        (CertificateDer::from(leaf.der.clone()), vec![int])
    }

    fn trust(pki: &TestPki, crls: &[PathBuf]) -> Trust {
        Trust::from_files(&pki.root, crls, RevocationPolicy::default()).unwrap()
    }

    fn reason(r: Result<(), rustls::Error>) -> Reason {
        r.map_or_else(|e| classify_rustls_error(&e), |()| Reason::Ok)
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
    }

    fn now() -> u64 {
        UnixTime::now().as_secs()
    }

    fn check(
        t: &Trust,
        chain: &(CertificateDer<'_>, Vec<CertificateDer<'_>>),
        secs: u64,
    ) -> Reason {
        reason(
            t.check(&chain.0, &chain.1, at(secs), &Purpose::Client, None, None)
                .map(|_| ()),
        )
    }

    fn recheck(
        t: &Trust,
        chain: &(CertificateDer<'_>, Vec<CertificateDer<'_>>),
        secs: u64,
    ) -> Reason {
        reason(t.recheck(&chain.0, &chain.1, at(secs), &Purpose::Client, None))
    }

    #[test]
    fn the_intermediate_is_verified_once_yet_its_expiry_revocation_and_the_roots_still_count() {
        let pki = TestPki::new("steps");
        // Outlives the intermediate (5 years), so only the intermediate can expire.
        let leaf = pki.leaf(
            "long",
            LeafOpts::new("long").valid_for(11 * 365 * DAY as i64),
        );
        let chain = chain_of(&pki, &leaf);
        let t = trust(&pki, &[]);
        assert_eq!(check(&t, &chain, now()), Reason::Ok);
        assert_eq!(check(&t, &chain, now()), Reason::Ok);
        assert_eq!(
            t.cache_hits().0,
            1,
            "the root's signature on the intermediate, remembered"
        );
        // The intermediate expires in 5 years: the remembered signature does not keep it valid.
        assert_eq!(check(&t, &chain, now() + 6 * 365 * DAY), Reason::Expired);
        assert_eq!(check(&t, &chain, now()), Reason::Ok);

        // A root CRL revoking the intermediate (a CRL change is a new trust): refused every
        // time, with the signature step remembered after the first.
        let crls = [pki.crl("int.crl"), pki.root_crl("root.crl", true)];
        let revoking = trust(&pki, &crls);
        for _ in 0..3 {
            assert_eq!(check(&revoking, &chain, now()), Reason::Revoked);
        }
        assert!(revoking.cache_hits().0 >= 2, "{:?}", revoking.cache_hits());
        let clean = trust(&pki, &[crls[0].clone(), pki.root_crl("root-ok.crl", false)]);
        assert_eq!(check(&clean, &chain, now()), Reason::Ok);

        // Roots replaced by a reload: the old intermediate no longer chains.
        let other = TestPki::new("other");
        let replaced = trust(&other, &[]);
        assert_eq!(check(&replaced, &chain, now()), Reason::UnknownCa);
        assert_eq!(check(&replaced, &chain, now()), Reason::UnknownCa);
        assert_eq!(replaced.cache_hits().0, 0);
    }

    #[test]
    fn a_remembered_recheck_holds_only_inside_the_validity_and_crl_windows() {
        let pki = TestPki::new("verdicts");
        let leaf = pki.leaf("short", LeafOpts::new("short").valid_for(3600));
        let chain = chain_of(&pki, &leaf);
        let t = trust(&pki, &[]);
        assert_eq!(recheck(&t, &chain, now()), Reason::Ok);
        assert_eq!(recheck(&t, &chain, now()), Reason::Ok);
        assert_eq!(t.cache_hits().1, 1, "the second recheck is remembered");
        assert_eq!(recheck(&t, &chain, now() + 3600 + 60), Reason::Expired);
        assert_eq!(recheck(&t, &chain, now() - 2 * DAY), Reason::NotYetValid);
        assert_eq!(t.cache_hits().1, 1, "outside the window the full check ran");
        // Another purpose is another question.
        let server = reason(t.recheck(&chain.0, &chain.1, at(now()), &Purpose::Server, None));
        assert_eq!(server, Reason::WrongPurpose);

        // With CRLs (next update in a day): revoked is never remembered as good, and past the
        // CRLs' next update the check runs again and finds them stale.
        let bad = pki.leaf("bad", LeafOpts::new("bad"));
        pki.revoke(&bad);
        let crls = [pki.crl("int.crl"), pki.root_crl("root.crl", false)];
        let t = trust(&pki, &crls);
        let bad = chain_of(&pki, &bad);
        assert_eq!(recheck(&t, &bad, now()), Reason::Revoked);
        assert_eq!(recheck(&t, &bad, now()), Reason::Revoked);
        assert_eq!(recheck(&t, &chain, now()), Reason::Ok);
        assert_eq!(recheck(&t, &chain, now()), Reason::Ok);
        assert_eq!(t.cache_hits().1, 1);
        let long = pki.leaf("long", LeafOpts::new("long").valid_for(30 * DAY as i64));
        let long = chain_of(&pki, &long);
        assert_eq!(recheck(&t, &long, now()), Reason::Ok);
        assert_eq!(
            recheck(&t, &long, now() + 2 * DAY),
            Reason::RevocationUnknown
        );

        // The strict profile is never answered from memory.
        let strict = trust(&pki, &[]).with_profile(crate::lint::Profile::Strict);
        let first = recheck(&strict, &chain, now());
        assert_eq!(recheck(&strict, &chain, now()), first);
        assert_eq!(strict.cache_hits().1, 0);
    }
}
