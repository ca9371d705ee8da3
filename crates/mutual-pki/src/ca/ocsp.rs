//! OCSP (RFC 6960): the status of one certificate, signed, for relying parties that ask instead
//! of downloading the whole CRL (nginx `ssl_ocsp`, `openssl ocsp`, stapling servers).
//!
//! Why here: the answer is the inventory's (mutual-pki owns it), and the responder certificate
//! is issued like every other certificate, through [`Ca::issue`]. The HTTP side (routes,
//! caching, the responder's renewal) is `mutual-ca-server/src/ocsp.rs`.
//!
//! The pure parts take bytes and give bytes, so they can be fuzzed alone: [`parse_request`]
//! (never panics, every failure is [`PkiError::Malformed`], which the server turns into a
//! `malformedRequest` response), [`IssuerId::matches`] (which CertIDs are ours, for SHA-1,
//! SHA-256, SHA-384 and SHA-512 CertIDs) and [`Responder::sign`].
//!
//! Signing: a delegated responder (EKU OCSPSigning, `id-pkix-ocsp-nocheck`, short-lived),
//! never the intermediate itself, so the intermediate's key signs only certificates and CRLs
//! (and, on PKCS#11, is not asked for a signature per OCSP request).
use std::time::Duration;

use der::asn1::{BitString, GeneralizedTime, Ia5String, Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use rcgen::{CustomExtension, KeyPair, SigningKey};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax, CrlReason};
use x509_cert::ext::Extension;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

use super::{now, Ca, IssueOptions, IssueRequest};
use crate::{serial_hex, KeyType, PkiError, RevocationReason, Status, Usage};

/// id-pkix-ocsp-nonce (RFC 6960 §4.4.1).
const NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
/// id-ad-ocsp, the AIA access method of an OCSP responder.
const AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
/// ecdsa-with-SHA256: the responder key is always ECDSA P-256.
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// Largest nonce echoed: RFC 8954 allows 1 to 32 octets; some clients send a little more.
const MAX_NONCE: usize = 128;
/// Largest request accepted (GET or POST body): a request for a handful of certificates is a
/// few hundred bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Who the responder certificate's inventory row says asked for it.
pub const RESPONDER_REQUESTER: &str = "ca-serve-ocsp";

/// The hash algorithm of a CertID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    fn of(oid: &ObjectIdentifier) -> Option<HashAlg> {
        Some(match oid.to_string().as_str() {
            "1.3.14.3.2.26" => HashAlg::Sha1,
            "2.16.840.1.101.3.4.2.1" => HashAlg::Sha256,
            "2.16.840.1.101.3.4.2.2" => HashAlg::Sha384,
            "2.16.840.1.101.3.4.2.3" => HashAlg::Sha512,
            _ => return None,
        })
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        use aws_lc_rs::digest;
        // SHA-1 here names a certificate (CertID), it signs nothing: RFC 6960 clients
        // (openssl, nginx) still send SHA-1 CertIDs by default.
        let alg = match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }
}

/// The status the inventory gives a serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OcspStatus {
    Good,
    /// Unix seconds and the recorded reason.
    Revoked {
        at: i64,
        reason: RevocationReason,
    },
    /// Not in the inventory: never issued by this CA.
    Unknown,
}

impl OcspStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OcspStatus::Good => "good",
            OcspStatus::Revoked { .. } => "revoked",
            OcspStatus::Unknown => "unknown",
        }
    }
}

/// One certificate a request asks about.
#[derive(Clone, Debug)]
pub struct Asked {
    pub cert_id: CertId,
    /// `None`: a hash algorithm we do not compute (the CertID cannot be ours).
    pub hash: Option<HashAlg>,
    /// Lowercase hex, as the inventory spells serials.
    pub serial: String,
}

/// A parsed OCSP request.
#[derive(Clone, Debug)]
pub struct OcspQuery {
    pub certs: Vec<Asked>,
    /// The nonce extension, echoed unchanged in the response.
    pub nonce: Option<Extension>,
}

impl OcspQuery {
    /// The key under which a response to this request may be reused: one certificate and no
    /// nonce (a nonce makes every response unique). The CertID's DER, so a SHA-1 and a SHA-256
    /// request for the same certificate are cached apart (each response names its CertID).
    pub fn cache_key(&self) -> Option<Vec<u8>> {
        match (&self.certs[..], &self.nonce) {
            ([one], None) => one.cert_id.to_der().ok(),
            _ => None,
        }
    }
}

fn malformed(detail: impl Into<String>) -> PkiError {
    PkiError::Malformed {
        detail: detail.into(),
    }
}

/// Parses a DER OCSPRequest. Pure: any input gives `Ok` or [`PkiError::Malformed`].
pub fn parse_request(der: &[u8]) -> Result<OcspQuery, PkiError> {
    if der.len() > MAX_REQUEST {
        return Err(malformed(format!(
            "OCSP request of {} bytes (at most {MAX_REQUEST})",
            der.len()
        )));
    }
    let req =
        OcspRequest::from_der(der).map_err(|e| malformed(format!("not an OCSPRequest: {e}")))?;
    let tbs = req.tbs_request;
    if tbs.request_list.is_empty() {
        return Err(malformed("the OCSP request asks about no certificate"));
    }
    if tbs.request_list.len() > 16 {
        return Err(malformed(format!(
            "the OCSP request asks about {} certificates (at most 16)",
            tbs.request_list.len()
        )));
    }
    let nonce = tbs
        .request_extensions
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.extn_id == NONCE);
    if let Some(n) = &nonce {
        let len = n.extn_value.as_bytes().len();
        if len == 0 || len > MAX_NONCE {
            return Err(malformed(format!(
                "a nonce of {len} bytes (1 to {MAX_NONCE})"
            )));
        }
    }
    let certs = tbs
        .request_list
        .into_iter()
        .map(|r| {
            let c = r.req_cert;
            Asked {
                hash: HashAlg::of(&c.hash_algorithm.oid),
                serial: serial_hex(c.serial_number.as_bytes()),
                cert_id: c,
            }
        })
        .collect();
    Ok(OcspQuery { certs, nonce })
}

/// The response statuses that carry no signed data (RFC 6960 §4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OcspFailure {
    MalformedRequest,
    InternalError,
    TryLater,
    Unauthorized,
}

impl OcspFailure {
    /// The label for logs and metrics (RFC 6960's own words).
    pub fn as_str(self) -> &'static str {
        match self {
            OcspFailure::MalformedRequest => "malformedRequest",
            OcspFailure::InternalError => "internalError",
            OcspFailure::TryLater => "tryLater",
            OcspFailure::Unauthorized => "unauthorized",
        }
    }

    /// The DER OCSPResponse (five bytes).
    pub fn to_der(self) -> Vec<u8> {
        let r = match self {
            OcspFailure::MalformedRequest => OcspResponse::malformed_request(),
            OcspFailure::InternalError => OcspResponse::internal_error(),
            OcspFailure::TryLater => OcspResponse::try_later(),
            OcspFailure::Unauthorized => OcspResponse::unauthorized(),
        };
        // Invariant: a SEQUENCE of one ENUMERATED always encodes.
        r.to_der()
            .unwrap_or_else(|_| vec![0x30, 0x03, 0x0a, 0x01, 0x02])
    }
}

/// Who a CertID must name to be ours: the issuer's name and key hashes, per hash algorithm.
#[derive(Clone, Debug)]
pub struct IssuerId {
    hashes: Vec<(HashAlg, Vec<u8>, Vec<u8>)>,
}

impl IssuerId {
    /// From the issuing certificate (DER).
    pub fn of(issuer_der: &[u8]) -> Result<IssuerId, PkiError> {
        let (_, c) = x509_parser::parse_x509_certificate(issuer_der)
            .map_err(|e| malformed(format!("issuer certificate: {e}")))?;
        let name = c.tbs_certificate.subject.as_raw();
        let key = &c.public_key().subject_public_key.data;
        Ok(IssuerId {
            hashes: HashAlg::ALL
                .iter()
                .map(|h| (*h, h.digest(name), h.digest(key)))
                .collect(),
        })
    }

    /// Whether `a` names this issuer.
    pub fn matches(&self, a: &Asked) -> bool {
        let Some(h) = a.hash else { return false };
        self.hashes.iter().any(|(alg, name, key)| {
            *alg == h
                && a.cert_id.issuer_name_hash.as_bytes() == name.as_slice()
                && a.cert_id.issuer_key_hash.as_bytes() == key.as_slice()
        })
    }
}

/// The delegated responder: its certificate (issued by the intermediate), the intermediate (so a
/// client holding only the root can build the path) and its key.
pub struct Responder {
    certs: Vec<x509_cert::Certificate>,
    key: KeyPair,
    key_hash: Vec<u8>,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn gen_time(unix: i64) -> Result<OcspGeneralizedTime, PkiError> {
    let secs = u64::try_from(unix).map_err(|_| malformed("a time before 1970"))?;
    GeneralizedTime::from_unix_duration(Duration::from_secs(secs))
        .map(OcspGeneralizedTime)
        .map_err(|e| malformed(format!("time {unix}: {e}")))
}

fn crl_reason(r: RevocationReason) -> Option<CrlReason> {
    Some(match r {
        // Omitted, as in the CRL (RFC 5280 §5.3.1).
        RevocationReason::Unspecified => return None,
        RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        RevocationReason::CaCompromise => CrlReason::CaCompromise,
        RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        RevocationReason::Superseded => CrlReason::Superseded,
        RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        RevocationReason::CertificateHold => CrlReason::CertificateHold,
        RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
    })
}

impl Responder {
    /// A responder from its certificate and PKCS#8 key (DER) and the issuing intermediate.
    pub fn new(
        cert_der: &[u8],
        key_pkcs8: &[u8],
        intermediate_der: &[u8],
    ) -> Result<Responder, PkiError> {
        let key = KeyPair::try_from(key_pkcs8)?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(PkiError::UnsupportedKey {
                detail: "the OCSP responder key must be ECDSA P-256".into(),
            });
        }
        let (_, c) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| malformed(format!("responder certificate: {e}")))?;
        let key_hash = HashAlg::Sha1.digest(&c.public_key().subject_public_key.data);
        let certs = [cert_der, intermediate_der]
            .iter()
            .map(|d| x509_cert::Certificate::from_der(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| malformed(format!("responder chain: {e}")))?;
        Ok(Responder {
            certs,
            key,
            key_hash,
            serial: serial_hex(c.tbs_certificate.raw_serial()),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
        })
    }

    /// A signed, successful OCSPResponse (DER) with one SingleResponse per answer, valid from
    /// `this_update` to `next_update` (Unix seconds), echoing `nonce` when the request had one.
    pub fn sign(
        &self,
        answers: &[(CertId, OcspStatus)],
        this_update: i64,
        next_update: i64,
        nonce: Option<&Extension>,
    ) -> Result<Vec<u8>, PkiError> {
        let this = gen_time(this_update)?;
        let next = gen_time(next_update)?;
        let responses = answers
            .iter()
            .map(|(id, st)| {
                let cert_status = match *st {
                    OcspStatus::Good => CertStatus::good(),
                    OcspStatus::Unknown => CertStatus::unknown(),
                    OcspStatus::Revoked { at, reason } => CertStatus::revoked(RevokedInfo {
                        revocation_time: gen_time(at)?,
                        revocation_reason: crl_reason(reason),
                    }),
                };
                Ok(SingleResponse {
                    cert_id: id.clone(),
                    cert_status,
                    this_update: this,
                    next_update: Some(next),
                    single_extensions: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let der_err = |e: der::Error| PkiError::Generate {
            detail: format!("OCSP response: {e}"),
        };
        let tbs = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(
                OctetString::new(self.key_hash.clone()).map_err(der_err)?,
            ),
            produced_at: gen_time(now().unix_timestamp())?,
            responses,
            response_extensions: nonce.map(|n| vec![n.clone()]),
        };
        let tbs_der = tbs.to_der().map_err(der_err)?;
        let sig = self.key.sign(&tbs_der)?;
        let basic = BasicOcspResponse {
            tbs_response_data: tbs,
            signature_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
                oid: ECDSA_SHA256,
                parameters: None,
            },
            signature: BitString::from_bytes(&sig).map_err(der_err)?,
            certs: Some(self.certs.clone()),
        };
        OcspResponse::successful(basic)
            .and_then(|r| r.to_der())
            .map_err(der_err)
    }
}

/// An http:// or https:// URL without spaces (what a relying party can fetch).
pub fn check_url(u: &str) -> Result<(), PkiError> {
    let why = if !(u.starts_with("http://") || u.starts_with("https://")) {
        "it must be an http:// URL (nginx and most OCSP clients speak plain HTTP) or https://"
    } else if u.contains(char::is_whitespace) {
        "it contains a space; write spaces as %20"
    } else if Ia5String::new(u).is_err() {
        "it must be ASCII"
    } else {
        return Ok(());
    };
    Err(PkiError::InvalidOcspUrl {
        url: u.to_string(),
        why: why.to_string(),
    })
}

/// The Authority Information Access extension naming `urls` as OCSP responders.
pub(super) fn aia_extension(urls: &[String]) -> Result<CustomExtension, PkiError> {
    let mut v = Vec::with_capacity(urls.len());
    for u in urls {
        check_url(u)?;
        let ia5 = Ia5String::new(u).map_err(|e| PkiError::InvalidOcspUrl {
            url: u.clone(),
            why: e.to_string(),
        })?;
        v.push(AccessDescription {
            access_method: AD_OCSP,
            access_location: GeneralName::UniformResourceIdentifier(ia5),
        });
    }
    let der = AuthorityInfoAccessSyntax(v)
        .to_der()
        .map_err(|e| PkiError::Generate {
            detail: format!("AIA: {e}"),
        })?;
    Ok(CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        der,
    ))
}

/// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): relying parties do not ask about the responder.
pub(super) fn nocheck_extension() -> CustomExtension {
    // Invariant: NULL always encodes (as 05 00).
    let null = Null.to_der().unwrap_or_else(|_| vec![0x05, 0x00]);
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 48, 1, 5], null)
}

impl Ca {
    /// The default intermediate, as CertIDs name it.
    pub fn ocsp_issuer(&self) -> Result<IssuerId, PkiError> {
        IssuerId::of(self.issuers().default_issuer().der())
    }

    /// Every intermediate of the CA (active and retiring), each with the CertID hashes that
    /// name it: the responder answers for the certificates of each, a retiring one's too.
    pub fn ocsp_issuers(&self) -> Result<Vec<(String, IssuerId)>, PkiError> {
        self.issuers()
            .all()
            .iter()
            .map(|i| Ok((i.id.clone(), IssuerId::of(i.der())?)))
            .collect()
    }

    /// Issues (and records, requested_by `ca-serve-ocsp`) a delegated responder certificate
    /// for the default intermediate, living `ttl`, through the one issuance transaction.
    pub async fn ocsp_responder(&self, ttl: Duration) -> Result<Responder, PkiError> {
        let id = self.issuers().default_issuer().id.clone();
        self.ocsp_responder_for(&id, ttl).await
    }

    /// The delegated responder of intermediate `issuer_id` (active or retiring), signed by
    /// that intermediate: RFC 6960 §4.2.2.2 wants the responder certificate issued by the CA
    /// that issued the certificate asked about.
    pub async fn ocsp_responder_for(
        &self,
        issuer_id: &str,
        ttl: Duration,
    ) -> Result<Responder, PkiError> {
        let issuer =
            self.issuers()
                .get(issuer_id)
                .cloned()
                .ok_or_else(|| PkiError::UnknownIssuer {
                    selector: issuer_id.to_string(),
                    active: String::new(),
                })?;
        let o = IssueOptions {
            name: "mutual OCSP responder".into(),
            usage: Usage::Client,
            ocsp_signing: true,
            // A retiring intermediate answers for its certificates to its last day.
            ttl: super::ttl_until(ttl, issuer.not_after_unix()),
            requested_by: Some(RESPONDER_REQUESTER.into()),
            issuer: Some(issuer.id.clone()),
            ..Default::default()
        };
        let issued = self
            .issue(IssueRequest::generate(o, KeyType::EcdsaP256))
            .await?;
        let key = issued
            .key_der
            .as_deref()
            .ok_or_else(|| PkiError::Generate {
                detail: "the responder certificate came without its key".into(),
            })?;
        Responder::new(&issued.leaf_der, key, issuer.der())
    }

    /// The inventory's answer for `serial` (lowercase hex): revoked wins over expired, an
    /// expired certificate is still `good` (RFC 6960 lets a responder say so; what expiry means
    /// is the relying party's check), a serial the inventory never saw is `unknown`.
    pub async fn ocsp_status(&self, serial: &str) -> Result<OcspStatus, PkiError> {
        use mutual_store::Inventory;
        let rec = self.store.get(serial, now().unix_timestamp()).await?;
        Ok(match rec {
            None => OcspStatus::Unknown,
            Some(r) if r.status == Status::Revoked => OcspStatus::Revoked {
                at: r.revoked_at.unwrap_or(r.created_at),
                reason: r
                    .reason
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default(),
            },
            Some(_) => OcspStatus::Good,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        for input in [
            &b""[..],
            b"\x30",
            b"\x30\x00",
            b"\x30\x03\x30\x01\x00",
            b"not der at all",
            &[0x30, 0x82, 0xff, 0xff],
        ] {
            assert!(
                matches!(parse_request(input), Err(PkiError::Malformed { .. })),
                "{input:?}"
            );
        }
        assert!(matches!(
            parse_request(&vec![0x30; MAX_REQUEST + 1]),
            Err(PkiError::Malformed { .. })
        ));
    }

    #[test]
    fn failure_responses_are_five_bytes() {
        assert_eq!(
            OcspFailure::MalformedRequest.to_der(),
            [0x30, 0x03, 0x0a, 0x01, 0x01]
        );
        assert_eq!(
            OcspFailure::Unauthorized.to_der(),
            [0x30, 0x03, 0x0a, 0x01, 0x06]
        );
    }

    #[test]
    fn urls() {
        assert!(check_url("http://ca.internal:8080/ocsp").is_ok());
        for bad in ["ftp://x", "http://a b", "ca.internal/ocsp", "http://é"] {
            assert!(
                matches!(check_url(bad), Err(PkiError::InvalidOcspUrl { .. })),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn sign_parse_round_trip_with_nonce_and_both_hashes() {
        let d = tempfile::tempdir().unwrap();
        let ca = crate::testing::new_ca(d.path(), "ca").await;
        let leaf = crate::testing::issue(&ca, "svc", Default::default()).await;
        let responder = ca.ocsp_responder(Duration::from_secs(3600)).await.unwrap();
        let issuer = ca.ocsp_issuer().unwrap();
        let int_der = ca.issuers().default_issuer().der().to_vec();
        let (_, int) = x509_parser::parse_x509_certificate(&int_der).unwrap();
        for (alg, oid) in [
            (HashAlg::Sha1, "1.3.14.3.2.26"),
            (HashAlg::Sha256, "2.16.840.1.101.3.4.2.1"),
        ] {
            let id = CertId {
                hash_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
                    oid: ObjectIdentifier::new_unwrap(oid),
                    parameters: None,
                },
                issuer_name_hash: OctetString::new(
                    alg.digest(int.tbs_certificate.subject.as_raw()),
                )
                .unwrap(),
                issuer_key_hash: OctetString::new(
                    alg.digest(&int.public_key().subject_public_key.data),
                )
                .unwrap(),
                serial_number: x509_cert::serial_number::SerialNumber::new(
                    &hex::decode(&leaf.serial_hex).unwrap(),
                )
                .unwrap(),
            };
            let nonce = Extension {
                extn_id: NONCE,
                critical: false,
                extn_value: OctetString::new(vec![4, 2, 0xab, 0xcd]).unwrap(),
            };
            let req = x509_ocsp::OcspRequest {
                tbs_request: x509_ocsp::TbsRequest {
                    version: Version::V1,
                    requestor_name: None,
                    request_list: vec![x509_ocsp::Request {
                        req_cert: id.clone(),
                        single_request_extensions: None,
                    }],
                    request_extensions: Some(vec![nonce.clone()]),
                },
                optional_signature: None,
            };
            let q = parse_request(&req.to_der().unwrap()).unwrap();
            assert!(issuer.matches(&q.certs[0]));
            assert_eq!(q.certs[0].serial, leaf.serial_hex);
            assert_eq!(q.cache_key(), None, "a nonce makes it uncacheable");
            let st = ca.ocsp_status(&q.certs[0].serial).await.unwrap();
            assert_eq!(st, OcspStatus::Good);
            let t = now().unix_timestamp();
            let der = responder
                .sign(&[(id, st)], t, t + 60, q.nonce.as_ref())
                .unwrap();
            let r = OcspResponse::from_der(&der).unwrap();
            let basic =
                BasicOcspResponse::from_der(r.response_bytes.unwrap().response.as_bytes()).unwrap();
            assert_eq!(
                basic.tbs_response_data.response_extensions,
                Some(vec![nonce])
            );
            assert_eq!(basic.certs.unwrap().len(), 2);
        }
        assert_eq!(
            ca.ocsp_status("0badc0de").await.unwrap(),
            OcspStatus::Unknown
        );
        ca.revoke(&leaf.serial_hex, RevocationReason::KeyCompromise)
            .await
            .unwrap();
        assert!(matches!(
            ca.ocsp_status(&leaf.serial_hex).await.unwrap(),
            OcspStatus::Revoked {
                reason: RevocationReason::KeyCompromise,
                ..
            }
        ));
    }
}
