//! Certificate path validation, written once and used everywhere: the proxy's client-certificate
//! verifier, the client's server-certificate verifier, `mutual cert verify` and the x509-limbo
//! conformance run all call [`Trust::check`], so what the CLI says about a chain is what the
//! proxy will do with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, OtherError};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, ServerName, TrustAnchor, UnixTime,
};
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyPurposeIdIter, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{load, Reason, TlsError};

/// How CRLs are applied when some are given (with none, revocation is not checked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevocationPolicy {
    /// Check only the end entity, not the intermediates (default: the whole chain).
    pub leaf_only: bool,
    /// Accept a certificate whose issuer has no CRL among those given (default: deny).
    pub allow_unknown: bool,
    /// Use a CRL past its nextUpdate (default: such a CRL gives `revocation_unknown`).
    pub ignore_expired_crl: bool,
}

/// What the certificate must be good for (its extended key usage).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Purpose {
    /// TLS server: `serverAuth` required if the certificate has an EKU extension.
    Server,
    /// TLS client: `clientAuth` required if the certificate has an EKU extension.
    #[default]
    Client,
    /// No EKU requirement (the chain, validity and revocation are still checked).
    Any,
    /// Every one of these OIDs (DER content bytes) must be present; `anyExtendedKeyUsage`
    /// does not stand in for them.
    AllOf(Vec<Vec<u8>>),
}

const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// The name the end entity must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerName {
    /// A DNS name or IP address, checked as rustls/webpki checks a server's name.
    Server(ServerName<'static>),
    /// A URI SAN (a SPIFFE ID), compared byte for byte with each URI SAN.
    Uri(String),
}

impl Purpose {
    /// The purpose as a remembered verdict's key words it (see `cache::Verdicts::key`).
    pub(crate) fn cache_words(&self) -> Vec<u8> {
        match self {
            Purpose::Server => b"server".to_vec(),
            Purpose::Client => b"client".to_vec(),
            Purpose::Any => b"any".to_vec(),
            Purpose::AllOf(oids) => {
                let mut p = b"all-of".to_vec();
                for o in oids {
                    p.extend_from_slice(&(o.len() as u64).to_be_bytes());
                    p.extend_from_slice(o);
                }
                p
            }
        }
    }
}

impl PeerName {
    /// The name as a remembered verdict's key words it (see `cache::Verdicts::key`).
    pub(crate) fn cache_words(&self) -> String {
        match self {
            PeerName::Server(n) => format!("server:{}", n.to_str()),
            PeerName::Uri(u) => format!("uri:{u}"),
        }
    }

    /// Parses `dns:NAME`, `ip:ADDR`, `uri:URI`, a bare `spiffe://` ID, or a bare DNS name/IP.
    pub fn parse(s: &str) -> Result<PeerName, TlsError> {
        if let Some(u) = s.strip_prefix("uri:") {
            return Ok(PeerName::Uri(u.to_string()));
        }
        if s.starts_with("spiffe://") {
            return Ok(PeerName::Uri(s.to_string()));
        }
        let bare = s
            .strip_prefix("dns:")
            .or_else(|| s.strip_prefix("ip:"))
            .unwrap_or(s);
        ServerName::try_from(bare.to_string())
            .map(PeerName::Server)
            .map_err(|_| TlsError::InvalidName {
                what: "name",
                name: s.to_string(),
                why: "not a DNS name or an IP address".into(),
            })
    }
}

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerName::Server(n) => f.write_str(&n.to_str()),
            PeerName::Uri(u) => f.write_str(u),
        }
    }
}

/// Trusted roots and CRLs, parsed once and shared by every handshake.
#[derive(Debug)]
pub struct Trust {
    anchors: Vec<TrustAnchor<'static>>,
    /// The root certificates, same order as `anchors` (for chain reports and CA hints).
    roots: Vec<CertificateDer<'static>>,
    crls: Vec<CertRevocationList<'static>>,
    revocation: RevocationPolicy,
    algs: WebPkiSupportedAlgorithms,
    /// CRLs fetched from distribution points, consulted at each check (`--crl-from-cdp`).
    cdp: Option<Arc<crate::cdp::CdpRevocation>>,
    /// OCSP answers about leaves, consulted at each check (`--ocsp-from-aia`, `connect --ocsp`).
    ocsp_peer: Option<Arc<crate::ocsp_peer::OcspPeerRevocation>>,
    /// Strict: the lint's errors on the built path refuse it (see [`Trust::with_profile`]).
    profile: crate::lint::Profile,
    /// The static CRLs as given (DER), for the strict profile's CRL rules.
    crl_ders: Vec<CertificateRevocationListDer<'static>>,
    /// `algs` in front of the memory of valid signatures by an anchor's key (the issuer step
    /// into the root, verified once per trust instead of at every handshake: [`crate::cache`]).
    steps: Box<[crate::cache::AnchorStep]>,
    #[cfg_attr(not(test), allow(dead_code))]
    issuer_steps: Arc<crate::cache::IssuerSteps>,
    /// Chains that passed, for [`Trust::recheck`]. A source consulted at each check that can
    /// change without a new `Trust` (like `cdp`, `ocsp_peer`) must turn it off there.
    verdicts: crate::cache::Verdicts,
    /// The last second at which every static CRL is current (when their expiry counts).
    crl_deadline: Option<u64>,
}

/// The provider's signature algorithms: what our configs negotiate is what we verify with.
pub(crate) fn default_algs() -> WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}

impl Trust {
    /// Builds trust from root certificates and CRLs (DER). An unusable root or CRL is an error.
    pub fn new(
        roots: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        revocation: RevocationPolicy,
    ) -> Result<Trust, TlsError> {
        let mut anchors = Vec::with_capacity(roots.len());
        for (i, r) in roots.iter().enumerate() {
            let a = webpki::anchor_from_trusted_cert(r).map_err(|e| TlsError::BadFile {
                path: PathBuf::from(format!("trusted certificate #{}", i + 1)),
                detail: format!(
                    "not usable as a trust anchor: {}",
                    crate::classify::describe_webpki(&e)
                ),
            })?;
            anchors.push(a.to_owned());
        }
        let crl_ders = crls.clone();
        let crls = crls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                webpki::OwnedCertRevocationList::from_der(c.as_ref())
                    .map(CertRevocationList::from)
                    .map_err(|e| TlsError::BadFile {
                        path: PathBuf::from(format!("CRL #{}", i + 1)),
                        detail: format!(
                            "the CRL does not parse: {}",
                            crate::classify::describe_webpki(&e)
                        ),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let algs = default_algs();
        let issuer_steps = Arc::new(crate::cache::IssuerSteps::new(&roots));
        let crl_deadline = if revocation.ignore_expired_crl {
            None
        } else {
            crate::cache::crl_deadline(&crl_ders)
        };
        Ok(Trust {
            anchors,
            roots,
            crls,
            revocation,
            steps: issuer_steps.algorithms(&algs),
            issuer_steps,
            verdicts: crate::cache::Verdicts::default(),
            crl_deadline,
            algs,
            cdp: None,
            ocsp_peer: None,
            profile: crate::lint::Profile::Compatible,
            crl_ders,
        })
    }

    /// Loads a PEM CA bundle and CRL files; errors name the file.
    pub fn from_files(
        ca: &Path,
        crls: &[PathBuf],
        revocation: RevocationPolicy,
    ) -> Result<Trust, TlsError> {
        let roots = load::load_certs(ca)?;
        let crl_ders = load::load_crls(crls)?;
        let mut anchors_ok = Vec::with_capacity(roots.len());
        for r in &roots {
            webpki::anchor_from_trusted_cert(r).map_err(|e| TlsError::BadFile {
                path: ca.to_path_buf(),
                detail: format!(
                    "a certificate is not usable as a trust anchor: {}",
                    crate::classify::describe_webpki(&e)
                ),
            })?;
            anchors_ok.push(r.clone());
        }
        Trust::new(anchors_ok, crl_ders, revocation)
    }

    /// Adds CRLs from distribution points: they join the static CRLs, and every certificate
    /// naming a distribution point needs a current CRL from it (see [`crate::cdp`]).
    pub fn with_cdp(mut self, cdp: Arc<crate::cdp::CdpRevocation>) -> Trust {
        self.cdp = Some(cdp);
        self
    }

    /// Adds OCSP for leaves naming a responder in their AIA (see [`crate::ocsp_peer`]).
    pub fn with_ocsp_peer(mut self, ocsp: Arc<crate::ocsp_peer::OcspPeerRevocation>) -> Trust {
        self.ocsp_peer = Some(ocsp);
        self
    }

    /// Sets the verification profile. Strict: after webpki has built and checked the path,
    /// every certificate of it (trust anchor included, and its validity at the check time) and
    /// every given CRL issued by one of its CAs must pass the lint's error rules
    /// ([`crate::lint`]); the first error refuses the chain as `malformed`.
    pub fn with_profile(mut self, profile: crate::lint::Profile) -> Trust {
        self.profile = profile;
        self
    }

    pub fn profile(&self) -> crate::lint::Profile {
        self.profile
    }

    pub fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.algs
    }

    pub fn has_crls(&self) -> bool {
        !self.crls.is_empty()
    }

    /// Subjects of the trusted roots (DER), for a server's CertificateRequest hints.
    pub fn root_subjects(&self) -> Vec<rustls::DistinguishedName> {
        self.anchors
            .iter()
            .map(|a| rustls::DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect()
    }

    /// Validates a chain: path to a trusted root, validity at `now`, EKU for `purpose`,
    /// revocation (when CRLs are set), RSA keys >= 2048 bits, and the name if given.
    /// `max_depth` bounds the number of intermediates. Returns the verified path, leaf first,
    /// root last.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        purpose: &Purpose,
        name: Option<&PeerName>,
        max_intermediates: Option<usize>,
    ) -> Result<Vec<CertificateDer<'static>>, rustls::Error> {
        self.check_parsed(
            end_entity,
            intermediates,
            now,
            purpose,
            name,
            max_intermediates,
        )
        .map(|v| v.chain)
    }

    /// [`Trust::check`], also handing back the one x509-parser parse of the leaf that the
    /// checks beyond webpki's (SAN syntax, key strength, trust domain, URI name) all read, so
    /// a caller that wants the peer's identity or names does not parse the leaf again.
    pub fn check_parsed<'a>(
        &self,
        end_entity: &'a CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        purpose: &Purpose,
        name: Option<&PeerName>,
        max_intermediates: Option<usize>,
    ) -> Result<Verified<'a>, rustls::Error> {
        let ee = EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        // `None`: beyond x509-parser though webpki reads it; the checks below that need the
        // parse then have nothing more to learn (webpki has judged the encoding).
        let leaf = X509Certificate::from_der(end_entity.as_ref())
            .ok()
            .map(|(_, c)| c);
        // webpki reads the SAN only when it checks a name, so a certificate whose SAN does not
        // parse would pass without --name; its identity is unreadable, so it is malformed.
        if leaf.as_ref().and_then(san_problem_of).is_some() {
            return Err(CertificateError::BadEncoding.into());
        }
        let cdp_snapshot = self.cdp.as_ref().map(|c| c.load());
        let mut crl_refs: Vec<&CertRevocationList<'static>> = self.crls.iter().collect();
        if let Some(s) = &cdp_snapshot {
            crl_refs.extend(s.crls.iter());
        }
        // With distribution points, a certificate without a CRL is judged by the CDP rule
        // below (and `revocation_unknown`), not by webpki's all-or-nothing policy.
        let allow_unknown = self.revocation.allow_unknown || self.cdp.is_some();
        let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(if self.revocation.leaf_only {
                RevocationCheckDepth::EndEntity
            } else {
                RevocationCheckDepth::Chain
            })
            .with_status_policy(if allow_unknown {
                UnknownStatusPolicy::Allow
            } else {
                UnknownStatusPolicy::Deny
            })
            .with_expiration_policy(if self.revocation.ignore_expired_crl {
                ExpirationPolicy::Ignore
            } else {
                ExpirationPolicy::Enforce
            })
            .build()
        });
        let depth_check = |p: &webpki::VerifiedPath<'_>| match max_intermediates {
            Some(max) if p.intermediate_certificates().count() > max => {
                Err(webpki::Error::MaximumPathDepthExceeded)
            }
            _ => Ok(()),
        };
        let verify_path: Option<&PathCheck<'_>> = if max_intermediates.is_some() {
            Some(&depth_check)
        } else {
            None
        };
        let algs = crate::cache::as_refs(&self.steps);
        let result = ee.verify_for_usage(
            &algs,
            &self.anchors,
            intermediates,
            now,
            Eku(purpose),
            revocation,
            verify_path,
        );
        let path = match result {
            Ok(p) => p,
            // webpki reports the first problem it meets walking the chain; an intermediate
            // without a CRL can hide the more useful fact that the leaf itself is revoked.
            // Ask once more, leaf only, so the verdict (a failure either way) names it.
            Err(webpki::Error::UnknownRevocationStatus) if !self.revocation.leaf_only => {
                let leaf_only = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
                    b.with_depth(RevocationCheckDepth::EndEntity)
                        .with_status_policy(UnknownStatusPolicy::Allow)
                        .build()
                });
                let again = ee.verify_for_usage(
                    &algs,
                    &self.anchors,
                    intermediates,
                    now,
                    Eku(purpose),
                    leaf_only,
                    verify_path,
                );
                return Err(pki_error(match again {
                    Err(webpki::Error::CertRevoked) => webpki::Error::CertRevoked,
                    _ => webpki::Error::UnknownRevocationStatus,
                }));
            }
            Err(e) => return Err(pki_error(e)),
        };

        let mut chain = vec![end_entity.clone().into_owned()];
        for c in path.intermediate_certificates() {
            chain.push(CertificateDer::from(c.der().to_vec()));
        }
        let anchor = path.anchor();
        if let Some(i) = self.anchors.iter().position(|a| {
            a.subject.as_ref() == anchor.subject.as_ref()
                && a.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
        }) {
            if let Some(r) = self.roots.get(i) {
                chain.push(r.clone());
            }
        }

        if let Some(leaf) = &leaf {
            check_key_strength(leaf)?;
        }
        check_trust_domain(leaf.as_ref(), &chain[1..])?;
        if self.profile == crate::lint::Profile::Strict {
            self.check_strict(&chain, now, name)?;
        }
        if let Some(cdp) = &self.cdp {
            let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            cdp.check_path(&chain, secs).map_err(pki_error)?;
        }
        if let Some(ocsp) = &self.ocsp_peer {
            let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            ocsp.check_path(&chain, secs).map_err(pki_error)?;
        }
        match name {
            None => {}
            Some(PeerName::Server(n)) => {
                ee.verify_is_valid_for_subject_name(n).map_err(pki_error)?
            }
            Some(PeerName::Uri(expected)) => {
                let presented = leaf.as_ref().map(uri_sans_of).unwrap_or_default();
                if !presented.iter().any(|u| u == expected) {
                    return Err(other(TlsError::UriMismatch {
                        expected: expected.clone(),
                        presented,
                    }));
                }
            }
        }
        Ok(Verified { chain, leaf })
    }

    /// [`Trust::check`] for a chain checked again after a handshake that skipped the verifier
    /// (a resumed session): the same verdict, remembered per chain while it cannot change. A
    /// chain that passed under this trust passes again while `now` is inside the validity of
    /// every certificate of its path and before the CRLs' nextUpdate; outside it, or when the
    /// check consults sources that change without a new `Trust` (CDP CRLs, OCSP answers) or
    /// runs the strict profile, the full check runs ([`crate::cache`]). Failures are never
    /// remembered: each one is found and named again.
    pub fn recheck(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        purpose: &Purpose,
        name: Option<&PeerName>,
    ) -> Result<(), rustls::Error> {
        let cacheable = self.cdp.is_none()
            && self.ocsp_peer.is_none()
            && self.profile == crate::lint::Profile::Compatible;
        let key = cacheable.then(|| {
            let presented: Vec<&CertificateDer<'_>> =
                std::iter::once(end_entity).chain(intermediates).collect();
            let name = name.map(PeerName::cache_words).unwrap_or_default();
            crate::cache::Verdicts::key(&presented, [&purpose.cache_words(), name.as_bytes()])
        });
        if key
            .as_ref()
            .is_some_and(|k| self.verdicts.holds(k, now.as_secs()))
        {
            return Ok(());
        }
        let path = self.check(end_entity, intermediates, now, purpose, name, None)?;
        if let Some(k) = key {
            self.verdicts.remember(k, &path, self.crl_deadline);
        }
        Ok(())
    }

    /// How many signature verifications and rechecks the caches answered (tests, profiles).
    #[cfg(test)]
    pub(crate) fn cache_hits(&self) -> (u64, u64) {
        (self.issuer_steps.hits(), self.verdicts.hits())
    }

    /// The strict profile's hook: the lint's first error on the verified path, as `malformed`.
    fn check_strict(
        &self,
        chain: &[CertificateDer<'static>],
        now: UnixTime,
        name: Option<&PeerName>,
    ) -> Result<(), rustls::Error> {
        if let (Some(PeerName::Server(ServerName::DnsName(n))), Some(leaf)) = (name, chain.first())
        {
            if let Some(f) = crate::lint::lint_name_match(leaf.as_ref(), n.as_ref()) {
                return Err(other(TlsError::ProfileViolation {
                    finding: Box::new(f),
                }));
            }
        }
        let path: Vec<&[u8]> = chain.iter().map(|c| c.as_ref()).collect();
        let crls: Vec<&[u8]> = self.crl_ders.iter().map(|c| c.as_ref()).collect();
        let at = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let findings = crate::lint::lint_path(&path, Some(at), &crls);
        match findings
            .into_iter()
            .find(|f| f.severity == crate::lint::Severity::Error)
        {
            Some(f) => Err(other(TlsError::ProfileViolation {
                finding: Box::new(f),
            })),
            None => Ok(()),
        }
    }
}

/// What [`Trust::check_parsed`] verified: the path and the parsed leaf.
pub struct Verified<'a> {
    /// The verified path, leaf first, root last.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf as x509-parser reads it (`None` when only webpki can).
    pub leaf: Option<X509Certificate<'a>>,
}

/// An extra check on a candidate path (webpki tries other paths when it fails).
type PathCheck<'a> = dyn Fn(&webpki::VerifiedPath<'_>) -> Result<(), webpki::Error> + 'a;

/// EKU policy adapter for webpki (applied to every certificate of the path, as webpki does).
struct Eku<'a>(&'a Purpose);

impl webpki::ExtendedKeyUsageValidator for Eku<'_> {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        match self.0 {
            Purpose::Server => webpki::KeyUsage::server_auth().validate(iter),
            Purpose::Client => webpki::KeyUsage::client_auth().validate(iter),
            Purpose::Any => {
                for id in iter {
                    id?;
                }
                Ok(())
            }
            Purpose::AllOf(required) => {
                let mut present = Vec::new();
                for id in iter {
                    present.push(id?);
                }
                for oid in required {
                    let want = webpki::KeyPurposeId::new(oid);
                    if !present.contains(&want) {
                        #[allow(deprecated)] // the Context variant's fields are private
                        return Err(webpki::Error::RequiredEkuNotFound);
                    }
                }
                Ok(())
            }
        }
    }
}

impl Purpose {
    pub fn server_auth_oid() -> &'static [u8] {
        EKU_SERVER_AUTH
    }
    pub fn client_auth_oid() -> &'static [u8] {
        EKU_CLIENT_AUTH
    }
}

/// Wraps one of our errors so it travels inside rustls and is classified back by downcast.
pub(crate) fn other(e: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Leaf keys we refuse (RSA below 2048 bits or of odd size, DSA, EC curves other than
/// P-256/384/521): webpki refuses such keys for signatures it checks in the chain, but the
/// leaf's own key is only exercised by the handshake signature, which would report a
/// misleading `bad_signature` (or, for `cert verify`, nothing). Named `weak_key` here.
fn check_key_strength(cert: &X509Certificate<'_>) -> Result<(), rustls::Error> {
    let spki = cert.public_key();
    let weak = |detail: String| {
        Err(other(TlsError::WeakKey {
            subject: cert.subject().to_string(),
            detail,
        }))
    };
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
            let bits = mutual_policy::facts::rsa_bits(rsa.modulus);
            if let Some(p) = mutual_policy::facts::RsaSizeProblem::of(bits) {
                return weak(format!("{bits}-bit RSA key ({})", p.why()));
            }
        }
        Ok(x509_parser::public_key::PublicKey::DSA(_)) => {
            return weak("DSA key (use ECDSA, Ed25519 or RSA)".into());
        }
        Ok(x509_parser::public_key::PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            // P-256, P-384, P-521: the curves TLS 1.3 signs with.
            if !matches!(
                curve.as_str(),
                "1.2.840.10045.3.1.7" | "1.3.132.0.34" | "1.3.132.0.35"
            ) {
                return weak(format!("EC key on curve {curve} (use P-256 or P-384)"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Enforces the trust domain an issuing CA is bound to. An X509-SVID signing certificate may
/// carry its trust domain's SPIFFE ID (no path) as a URI SAN (SPIFFE X509-SVID §3), and
/// `mutual ca init --trust-domain` writes one into the intermediate. When any CA of the verified
/// path declares one, every URI SAN of the leaf must be a SPIFFE ID in that trust domain, so a
/// leaked intermediate cannot mint identities of another trust domain.
///
/// Why not a URI name constraint (RFC 5280 allows one): rustls-webpki 0.103 fails closed on URI
/// subtrees, critical or not, so every SVID under such a CA would be refused by rustls peers,
/// mutual's own proxy included. OpenSSL and Go honour them; this check is our equivalent.
fn check_trust_domain(
    leaf: Option<&X509Certificate<'_>>,
    cas: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    let leaf_uris = leaf.map(uri_sans_of).unwrap_or_default();
    // X509-SVID 5.2: a leaf's SPIFFE ID must have a path (the trust domain's own ID names a
    // signing certificate), whatever the CA is bound to.
    if let Some(uri) = leaf_uris
        .iter()
        .find(|u| mutual_policy::SpiffeId::is_trust_domain_id(u))
    {
        return Err(other(TlsError::SpiffeIdWithoutPath { uri: uri.clone() }));
    }
    let mut bound: Vec<(String, String)> = Vec::new();
    for ca in cas {
        let Ok((_, ca)) = X509Certificate::from_der(ca.as_ref()) else {
            continue;
        };
        for u in uri_sans_of(&ca) {
            if let Ok(id) = mutual_policy::SpiffeId::parse(&u) {
                if id.path().is_empty() {
                    bound.push((id.trust_domain().to_string(), ca.subject().to_string()));
                }
            }
        }
    }
    if bound.is_empty() {
        return Ok(());
    }
    for uri in leaf_uris {
        let td = mutual_policy::SpiffeId::parse(&uri)
            .ok()
            .map(|id| id.trust_domain().to_string());
        for (trust_domain, issuer) in &bound {
            if td.as_deref() != Some(trust_domain.as_str()) {
                return Err(other(TlsError::OutsideTrustDomain {
                    uri,
                    trust_domain: trust_domain.clone(),
                    issuer: issuer.clone(),
                }));
            }
        }
    }
    Ok(())
}

/// Why a certificate is malformed as an end entity, in one sentence; `None` when webpki parses
/// it and its subjectAltName (if any) is well-formed.
pub fn malformed_leaf(der: &CertificateDer<'_>) -> Option<String> {
    if let Err(e) = EndEntityCert::try_from(der) {
        return Some(parse_error_sentence(&e));
    }
    san_problem(der)
}

/// Why the subjectAltName extension does not parse, if it does not (`None` when it parses, is
/// absent, or the certificate is beyond x509-parser: webpki has judged that part already).
fn san_problem(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    san_problem_of(&cert)
}

fn san_problem_of(cert: &X509Certificate<'_>) -> Option<String> {
    cert.extensions().iter().find_map(|ext| {
        if ext.oid != x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME {
            return None;
        }
        match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::ParseError { error } => Some(format!(
                "the certificate is malformed: its subjectAltName extension does not parse ({error})"
            )),
            _ => None,
        }
    })
}

/// The sentence for a webpki error met while parsing a certificate.
fn parse_error_sentence(e: &webpki::Error) -> String {
    use webpki::Error as W;
    let what = match e {
        W::TrailingData(_) => "it has data after the end of the certificate".to_string(),
        W::UnsupportedCertVersion => {
            "it is an X.509 v1 (or v2) certificate; only v3 certificates are accepted".into()
        }
        W::UnsupportedCriticalExtension => {
            "it has a critical extension that is not understood (RFC 5280 requires rejecting it)"
                .into()
        }
        W::ExtensionValueInvalid => "an extension appears twice or its value is invalid".into(),
        W::MalformedExtensions => "its extensions are not validly encoded".into(),
        W::SignatureAlgorithmMismatch => {
            "the signature algorithm inside the signed part differs from the one outside it".into()
        }
        W::InvalidSerialNumber => {
            "its serial number is invalid (negative, zero or too long)".into()
        }
        W::BadDerTime => "a validity time is not validly encoded".into(),
        W::BadDer => "it is not valid DER".into(),
        other => format!("{other:?}"),
    };
    format!("the certificate is malformed: {what}")
}

/// URI SANs of a certificate (empty if it has none or does not parse).
pub fn uri_sans(der: &CertificateDer<'_>) -> Vec<String> {
    X509Certificate::from_der(der.as_ref())
        .map(|(_, c)| uri_sans_of(&c))
        .unwrap_or_default()
}

/// URI SANs of a parsed certificate (empty if it has none or its SAN does not parse).
fn uri_sans_of(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_string()),
            _ => None,
        })
        .collect()
}

/// webpki errors as rustls errors, the same way rustls maps them (so classification and the
/// alerts we send match rustls' own verifiers); anything rustls has no variant for travels as
/// `Other(webpki::Error)`.
pub(crate) fn pki_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error::*;
    match error {
        BadDer | BadDerTime | TrailingData(_) => CertificateError::BadEncoding.into(),
        CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }.into()
        }
        CertExpired { time, not_after } => {
            CertificateError::ExpiredContext { time, not_after }.into()
        }
        InvalidCertValidity => CertificateError::Expired.into(),
        UnknownIssuer => CertificateError::UnknownIssuer.into(),
        CertNotValidForName(webpki::InvalidNameContext {
            expected,
            presented,
        }) => CertificateError::NotValidForNameContext {
            expected,
            presented,
        }
        .into(),
        CertRevoked => CertificateError::Revoked.into(),
        UnknownRevocationStatus => CertificateError::UnknownRevocationStatus.into(),
        CrlExpired { time, next_update } => {
            CertificateError::ExpiredRevocationListContext { time, next_update }.into()
        }
        IssuerNotCrlSigner => rustls::CertRevocationListError::IssuerInvalidForCrl.into(),
        InvalidSignatureForPublicKey => CertificateError::BadSignature.into(),
        UnsupportedSignatureAlgorithmContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                supported_algorithms: cx.supported_algorithms,
            }
            .into()
        }
        UnsupportedSignatureAlgorithmForPublicKeyContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                public_key_algorithm_id: cx.public_key_algorithm_id,
            }
            .into()
        }
        InvalidCrlSignatureForPublicKey => rustls::CertRevocationListError::BadSignature.into(),
        RequiredEkuNotFoundContext(webpki::RequiredEkuNotFoundContext { required, present }) => {
            CertificateError::InvalidPurposeContext {
                required: eku_purpose(required.oid_values().collect()),
                presented: present.into_iter().map(eku_purpose).collect(),
            }
            .into()
        }
        #[allow(deprecated)]
        RequiredEkuNotFound => CertificateError::InvalidPurpose.into(),
        #[allow(deprecated)]
        UnsupportedSignatureAlgorithm | UnsupportedSignatureAlgorithmForPublicKey => {
            CertificateError::UnsupportedSignatureAlgorithm.into()
        }
        e => CertificateError::Other(OtherError(Arc::new(e))).into(),
    }
}

/// rustls' own mapping of EKU OIDs (its constructor is crate-private).
fn eku_purpose(values: Vec<usize>) -> rustls::ExtendedKeyPurpose {
    match values.as_slice() {
        [1, 3, 6, 1, 5, 5, 7, 3, 1] => rustls::ExtendedKeyPurpose::ServerAuth,
        [1, 3, 6, 1, 5, 5, 7, 3, 2] => rustls::ExtendedKeyPurpose::ClientAuth,
        _ => rustls::ExtendedKeyPurpose::Other(values),
    }
}

/// One certificate of a reported chain.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct ChainEntry {
    /// `leaf`, `intermediate` or `root`, whatever the verdict: for a chain that did not verify,
    /// a given certificate is `root` when self-signed, else `intermediate` (docs/json.md).
    pub role: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// Unix seconds companions of `not_before`/`not_after` (0 when unparsable).
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub sha256: String,
}

impl ChainEntry {
    pub fn from_der(role: &str, der: &[u8]) -> ChainEntry {
        let sha256 = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der));
        match X509Certificate::from_der(der) {
            Ok((_, c)) => ChainEntry {
                role: role.to_string(),
                subject: c.subject().to_string(),
                issuer: c.issuer().to_string(),
                serial: mutual_policy::serial_hex(c.raw_serial()),
                not_before: rfc3339(c.validity().not_before.timestamp()),
                not_after: rfc3339(c.validity().not_after.timestamp()),
                not_before_unix: c.validity().not_before.timestamp(),
                not_after_unix: c.validity().not_after.timestamp(),
                sha256,
            },
            Err(_) => ChainEntry {
                role: role.to_string(),
                subject: "(unparsable certificate)".into(),
                issuer: String::new(),
                serial: String::new(),
                not_before: String::new(),
                not_after: String::new(),
                not_before_unix: 0,
                not_after_unix: 0,
                sha256,
            },
        }
    }
}

pub use mutual_policy::human::rfc3339;

/// A `cert verify` / conformance question: is this chain valid for this use?
#[derive(Clone, Debug)]
pub struct VerifyRequest {
    pub leaf: CertificateDer<'static>,
    pub intermediates: Vec<CertificateDer<'static>>,
    pub roots: Vec<CertificateDer<'static>>,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    pub revocation: RevocationPolicy,
    pub purpose: Purpose,
    pub name: Option<PeerName>,
    /// Validation time; `None` is now.
    pub at: Option<UnixTime>,
    /// Most intermediates allowed in the path (`None`: webpki's own limits).
    pub max_intermediates: Option<usize>,
    /// Compatible (default) or strict (the lint's errors on the built path refuse it).
    pub profile: crate::lint::Profile,
}

impl Default for VerifyRequest {
    fn default() -> Self {
        VerifyRequest {
            leaf: CertificateDer::from(Vec::new()),
            intermediates: Vec::new(),
            roots: Vec::new(),
            crls: Vec::new(),
            revocation: RevocationPolicy::default(),
            purpose: Purpose::default(),
            name: None,
            at: None,
            max_intermediates: None,
            profile: crate::lint::Profile::Compatible,
        }
    }
}

/// The answer: the reason label, one sentence of detail, and the chain.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VerifyOutcome {
    pub valid: bool,
    pub reason: Reason,
    pub detail: String,
    /// The verified path (leaf, intermediates, root) when valid; otherwise the presented
    /// certificates (leaf first).
    pub chain: Vec<ChainEntry>,
}

/// Validates `req` with the same code the proxy and client use ([`Trust::check`]).
pub fn verify_chain(req: &VerifyRequest) -> VerifyOutcome {
    let presented = || {
        std::iter::once(("leaf", &req.leaf))
            .chain(req.intermediates.iter().map(|c| ("intermediate", c)))
            .map(|(role, c)| {
                let mut e = ChainEntry::from_der(role, c.as_ref());
                if role != "leaf" && !e.issuer.is_empty() && e.subject == e.issuer {
                    e.role = "root".into();
                }
                e
            })
            .collect::<Vec<_>>()
    };
    let trust = match Trust::new(req.roots.clone(), req.crls.clone(), req.revocation) {
        Ok(t) => t.with_profile(req.profile),
        Err(e) => {
            return VerifyOutcome {
                valid: false,
                reason: Reason::Malformed,
                detail: e.to_string(),
                chain: presented(),
            }
        }
    };
    // A leaf that does not even parse is `malformed`, with a sentence saying what is wrong
    // (the generic mapping of webpki's parse errors only says "not valid DER").
    if let Some(detail) = malformed_leaf(&req.leaf) {
        return VerifyOutcome {
            valid: false,
            reason: Reason::Malformed,
            detail,
            chain: presented(),
        };
    }
    let now = req.at.unwrap_or_else(UnixTime::now);
    match trust.check(
        &req.leaf,
        &req.intermediates,
        now,
        &req.purpose,
        req.name.as_ref(),
        req.max_intermediates,
    ) {
        Ok(path) => {
            let n = path.len();
            let chain = path
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let role = match i {
                        0 => "leaf",
                        i if i + 1 == n && n > 1 => "root",
                        _ => "intermediate",
                    };
                    ChainEntry::from_der(role, c.as_ref())
                })
                .collect();
            let for_name = req
                .name
                .as_ref()
                .map(|n| format!(" and carries the name {n}"))
                .unwrap_or_default();
            VerifyOutcome {
                valid: true,
                reason: Reason::Ok,
                detail: format!(
                    "the certificate chains to a trusted root, is valid at {}{}",
                    rfc3339(i64::try_from(now.as_secs()).unwrap_or(i64::MAX)),
                    for_name
                ),
                chain,
            }
        }
        Err(e) => VerifyOutcome {
            valid: false,
            reason: crate::classify_rustls_error(&e),
            detail: crate::describe(&e),
            chain: presented(),
        },
    }
}
