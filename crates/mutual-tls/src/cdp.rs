//! Revocation from CRLs fetched at run time from the certificates' CRL distribution points
//! (`mutual serve --crl-from-cdp`). This is the TLS side only, with no I/O: a set of current
//! CRLs that [`crate::Trust::check`] consults on every handshake, the rule for certificates whose
//! CRL is not (yet) known, and the parsing and checking of a downloaded CRL. Fetching, caching
//! and refreshing live in mutual-proxy (`cdp.rs`), which publishes into [`CdpRevocation`].
//!
//! The rule: every certificate of a verified client chain (leaf and intermediates, not the
//! trusted root) that names distribution points needs a current CRL from one of them. A
//! certificate without a CDP extension cannot be checked this way and passes (use `--crl` for
//! such CAs). When a named CRL is not current (never fetched, or past its nextUpdate), the URL
//! is reported to the fetcher (with the verified issuer, to check the CRL's signature) and
//! `revocation_unknown` decides: deny (default) fails the handshake, allow lets it through.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use webpki::CertRevocationList;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::TlsError;

/// A URL seen in a chain whose CRL is not current, with the certificate that must have signed
/// that CRL (the issuer of the certificate naming the URL, from the verified path).
#[derive(Clone, Debug)]
pub struct Sighting {
    pub urls: Vec<String>,
    pub issuer: CertificateDer<'static>,
}

/// One current CRL, as published by the fetcher.
#[derive(Clone, Debug)]
pub struct CurrentCrl {
    /// The distribution point it was fetched from.
    pub url: String,
    pub der: CertificateRevocationListDer<'static>,
    /// nextUpdate, Unix seconds: past it, the CRL no longer counts.
    pub next_update: i64,
}

#[derive(Default)]
pub(crate) struct Snapshot {
    pub(crate) crls: Vec<CertRevocationList<'static>>,
    /// URL -> nextUpdate.
    fresh: HashMap<String, i64>,
}

/// The CRLs from distribution points that handshakes use now, swapped as a whole.
pub struct CdpRevocation {
    snapshot: RwLock<Arc<Snapshot>>,
    deny_unknown: bool,
    on_unknown: Box<dyn Fn(Sighting) + Send + Sync>,
}

impl std::fmt::Debug for CdpRevocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdpRevocation")
            .field("deny_unknown", &self.deny_unknown)
            .finish_non_exhaustive()
    }
}

impl CdpRevocation {
    /// `on_unknown` is called (from a handshake: it must not block) for each certificate whose
    /// distribution points have no current CRL.
    pub fn new(deny_unknown: bool, on_unknown: Box<dyn Fn(Sighting) + Send + Sync>) -> Self {
        CdpRevocation {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            deny_unknown,
            on_unknown,
        }
    }

    pub fn deny_unknown(&self) -> bool {
        self.deny_unknown
    }

    /// Replaces the current set. Each CRL must parse (the fetcher checked signature and
    /// dates already); an unparsable one is an error and nothing changes.
    pub fn publish(&self, crls: &[CurrentCrl]) -> Result<(), TlsError> {
        let mut snap = Snapshot::default();
        for c in crls {
            let parsed =
                webpki::OwnedCertRevocationList::from_der(c.der.as_ref()).map_err(|e| {
                    TlsError::BadFile {
                        path: c.url.clone().into(),
                        detail: format!("the CRL does not parse: {e:?}"),
                    }
                })?;
            snap.crls.push(CertRevocationList::from(parsed));
            snap.fresh.insert(c.url.clone(), c.next_update);
        }
        if let Ok(mut w) = self.snapshot.write() {
            *w = Arc::new(snap);
        }
        Ok(())
    }

    pub(crate) fn load(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .map(|g| Arc::clone(&g))
            .unwrap_or_default()
    }

    /// Whether one of `urls` has a CRL current at `now` (Unix seconds).
    pub fn is_fresh(&self, urls: &[String], now: i64) -> bool {
        let s = self.load();
        urls.iter()
            .any(|u| s.fresh.get(u).is_some_and(|next| *next > now))
    }

    /// Checks a verified path (leaf first, root last): every non-root certificate naming
    /// distribution points needs a current CRL from one of them. Unknown ones are reported;
    /// the error (only when denying) is webpki's `UnknownRevocationStatus`.
    pub(crate) fn check_path(
        &self,
        path: &[CertificateDer<'static>],
        now: i64,
    ) -> Result<(), webpki::Error> {
        let mut unknown = false;
        for pair in path.windows(2) {
            let urls = distribution_points(pair[0].as_ref());
            if urls.is_empty() || self.is_fresh(&urls, now) {
                continue;
            }
            (self.on_unknown)(Sighting {
                urls,
                issuer: pair[1].clone(),
            });
            unknown = true;
        }
        if unknown && self.deny_unknown {
            return Err(webpki::Error::UnknownRevocationStatus);
        }
        Ok(())
    }
}

/// The http(s) URIs in a certificate's CRL distribution points (full names only).
pub fn distribution_points(cert_der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let Ok((_, c)) = X509Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in c.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                    for n in names {
                        if let GeneralName::URI(u) = n {
                            if u.starts_with("http://") || u.starts_with("https://") {
                                out.push((*u).to_string());
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// A downloaded CRL that passed [`check_crl`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedCrl {
    pub this_update: i64,
    pub next_update: i64,
    /// The issuer DN, for logs and the `issuer` metric label.
    pub issuer: String,
    /// How many certificates it lists.
    pub revoked: usize,
}

/// Why a downloaded CRL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrlCheckError {
    #[error("not a CRL (neither DER nor PEM that parses): {0}")]
    Parse(String),
    #[error("issued by {crl_issuer:?}, expected {expected:?}")]
    WrongIssuer {
        crl_issuer: String,
        expected: String,
    },
    #[error("the signature does not verify with the issuer's key")]
    BadSignature,
    #[error("thisUpdate is in the future ({0})")]
    NotYetValid(i64),
    #[error("expired: nextUpdate {next_update} is past")]
    Expired { next_update: i64 },
    #[error("it has no nextUpdate, so its freshness cannot be judged")]
    NoNextUpdate,
}

/// Allowed clock difference with the CRL issuer.
const SKEW_SECS: i64 = 300;

/// DER from a body that may be DER or PEM.
pub fn crl_der(body: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    match CertificateRevocationListDer::from_pem_slice(body) {
        Ok(d) => d.as_ref().to_vec(),
        Err(_) => body.to_vec(),
    }
}

/// Checks a downloaded CRL (DER): issued and signed by `issuer`, thisUpdate not in the future,
/// nextUpdate present and not past, at `now` (Unix seconds).
pub fn check_crl(der: &[u8], issuer: &[u8], now: i64) -> Result<CheckedCrl, CrlCheckError> {
    let (_, crl) =
        x509_parser::parse_x509_crl(der).map_err(|e| CrlCheckError::Parse(e.to_string()))?;
    let (_, iss) =
        X509Certificate::from_der(issuer).map_err(|e| CrlCheckError::Parse(e.to_string()))?;
    if crl.issuer().as_raw() != iss.subject().as_raw() {
        return Err(CrlCheckError::WrongIssuer {
            crl_issuer: crl.issuer().to_string(),
            expected: iss.subject().to_string(),
        });
    }
    crl.verify_signature(iss.public_key())
        .map_err(|_| CrlCheckError::BadSignature)?;
    let this_update = crl.last_update().timestamp();
    if this_update > now + SKEW_SECS {
        return Err(CrlCheckError::NotYetValid(this_update));
    }
    let next_update = crl
        .next_update()
        .map(|t| t.timestamp())
        .ok_or(CrlCheckError::NoNextUpdate)?;
    if next_update <= now {
        return Err(CrlCheckError::Expired { next_update });
    }
    Ok(CheckedCrl {
        this_update,
        next_update,
        issuer: iss.subject().to_string(),
        revoked: crl.iter_revoked_certificates().count(),
    })
}

/// The distribution points named in `certs` (the listener's own chain and its CA bundle), each
/// with its issuer found among `certs` by subject name: what a fetcher can start with before any
/// client connects. A certificate whose issuer is not among `certs` is skipped.
pub fn sightings_in(certs: &[CertificateDer<'static>]) -> Vec<Sighting> {
    let parsed: Vec<_> = certs
        .iter()
        .filter_map(|c| {
            X509Certificate::from_der(c.as_ref()).ok().map(|(_, x)| {
                (
                    c,
                    x.issuer().as_raw().to_vec(),
                    x.subject().as_raw().to_vec(),
                )
            })
        })
        .collect();
    let mut out = Vec::new();
    for (cert, issuer, _) in &parsed {
        let urls = distribution_points(cert.as_ref());
        if urls.is_empty() {
            continue;
        }
        if let Some((iss, _, _)) = parsed.iter().find(|(_, _, subject)| subject == issuer) {
            out.push(Sighting {
                urls,
                issuer: (*iss).clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
        IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        der: Vec<u8>,
    }

    fn ca(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        p.key_identifier_method = KeyIdMethod::PreSpecified(p.key_identifier(&key));
        Ca {
            params: p,
            key,
            der: cert.der().to_vec(),
        }
    }

    fn leaf(ca: &Ca, urls: &[&str]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["leaf.test".to_string()]).unwrap();
        if !urls.is_empty() {
            p.crl_distribution_points = vec![CrlDistributionPoint {
                uris: urls.iter().map(|u| u.to_string()).collect(),
            }];
        }
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        p.signed_by(&key, &issuer).unwrap().der().to_vec()
    }

    fn crl(ca: &Ca, this: i64, next: i64) -> Vec<u8> {
        let t = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).unwrap();
        let params = CertificateRevocationListParams {
            this_update: t(this),
            next_update: t(next),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: ca.params.key_identifier_method.clone(),
        };
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        params.signed_by(&issuer).unwrap().der().to_vec()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn distribution_points_are_read_http_only() {
        let a = ca("A");
        let l = leaf(
            &a,
            &["http://crl.test/a.crl", "ldap://x/y", "https://crl.test/b"],
        );
        assert_eq!(
            distribution_points(&l),
            vec!["http://crl.test/a.crl", "https://crl.test/b"]
        );
        assert!(distribution_points(&leaf(&a, &[])).is_empty());
        let s = sightings_in(&[CertificateDer::from(l), CertificateDer::from(a.der.clone())]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].issuer.as_ref(), a.der.as_slice());
    }

    #[test]
    fn check_crl_accepts_only_the_issuers_current_crl() {
        let (a, b) = (ca("A"), ca("B"));
        let t = now();
        let good = crl(&a, t - 60, t + 3600);
        let c = check_crl(&good, &a.der, t).unwrap();
        assert_eq!(c.next_update, t + 3600);
        assert_eq!(c.revoked, 0);
        assert!(matches!(
            check_crl(&good, &b.der, t),
            Err(CrlCheckError::WrongIssuer { .. })
        ));
        // Same name, other key: the signature must not verify.
        let a2 = ca("A");
        assert_eq!(
            check_crl(&good, &a2.der, t),
            Err(CrlCheckError::BadSignature)
        );
        assert!(matches!(
            check_crl(&crl(&a, t - 7200, t - 60), &a.der, t),
            Err(CrlCheckError::Expired { .. })
        ));
        assert!(matches!(
            check_crl(&crl(&a, t + 3600, t + 7200), &a.der, t),
            Err(CrlCheckError::NotYetValid(_))
        ));
        assert!(matches!(
            check_crl(b"junk", &a.der, t),
            Err(CrlCheckError::Parse(_))
        ));
    }

    #[test]
    fn unknown_points_are_reported_and_decide_by_policy() {
        let a = ca("A");
        let url = "http://crl.test/a.crl";
        let path = vec![
            CertificateDer::from(leaf(&a, &[url])),
            CertificateDer::from(a.der.clone()),
        ];
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = Arc::clone(&seen);
        let deny = CdpRevocation::new(
            true,
            Box::new(move |s| {
                assert_eq!(s.urls, vec![url.to_string()]);
                s2.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let t = now();
        assert_eq!(
            deny.check_path(&path, t),
            Err(webpki::Error::UnknownRevocationStatus)
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        let der = crl(&a, t - 60, t + 3600);
        deny.publish(&[CurrentCrl {
            url: url.into(),
            der: CertificateRevocationListDer::from(der),
            next_update: t + 3600,
        }])
        .unwrap();
        assert!(deny.check_path(&path, t).is_ok());
        // Past nextUpdate, it no longer counts.
        assert!(deny.check_path(&path, t + 3600).is_err());
        let allow = CdpRevocation::new(false, Box::new(|_| {}));
        assert!(allow.check_path(&path, t).is_ok());
        // A certificate without distribution points is not judged here.
        let plain = vec![
            CertificateDer::from(leaf(&a, &[])),
            CertificateDer::from(a.der.clone()),
        ];
        assert!(CdpRevocation::new(true, Box::new(|_| {}))
            .check_path(&plain, t)
            .is_ok());
    }
}
