//! OCSP stapling for a server's own certificate (`mutual serve --ocsp-staple`): the request
//! for a leaf, the check of the response before it is stapled, and the cell the listener's
//! `ServerConfig` reads it from. No I/O here (mutual-proxy's `staple.rs` fetches), so the parsing
//! can be tested and fuzzed alone.
//!
//! What is checked before stapling: a successful basic response about exactly this leaf
//! (serial and issuer hashes), status good, and now within thisUpdate..nextUpdate. The
//! signature is the client's to check (it trusts the root, we only present); a response we
//! would not staple is never worse than no staple.
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use x509_ocsp::{BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse};
use x509_ocsp::{OcspResponseStatus, Request, TbsRequest, Version};

/// id-sha1: the CertID hash every responder understands (it names, it does not sign).
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
/// id-ad-ocsp.
const AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";

/// A response ready to staple, for the certificate with `serial`.
#[derive(Clone, Debug)]
pub struct Staple {
    /// Lowercase hex (as `ServerMaterial::cert_serial`).
    pub serial: String,
    pub der: Vec<u8>,
    /// Unix seconds.
    pub this_update: i64,
    /// Unix seconds.
    pub next_update: i64,
}

/// `--ocsp-staple`: where to ask (`None`: the certificate's AIA) and the current staple, read
/// by every (re)build of the listener's `ServerConfig`.
#[derive(Clone, Debug, Default)]
pub struct Stapling {
    pub url: Option<String>,
    pub current: Arc<ArcSwapOption<Staple>>,
}

impl Stapling {
    /// The staple for the certificate with `serial`, if one is current.
    pub fn for_serial(&self, serial: &str, now: i64) -> Option<Vec<u8>> {
        self.current
            .load_full()
            .filter(|s| s.serial == serial && now < s.next_update)
            .map(|s| s.der.clone())
    }
}

pub(crate) fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, String> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| format!("certificate: {e}"))
}

pub(crate) fn sha1(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// A certificate's serial, lowercase hex (as `ServerMaterial::cert_serial` spells it).
pub fn serial_of(leaf_der: &[u8]) -> Result<String, String> {
    Ok(mutual_policy::serial_hex(parse(leaf_der)?.raw_serial()))
}

/// A certificate's notAfter, Unix seconds.
pub fn not_after_of(leaf_der: &[u8]) -> Result<i64, String> {
    Ok(parse(leaf_der)?.validity().not_after.timestamp())
}

/// The OCSP responder URL in a certificate's Authority Information Access, if any.
pub fn aia_ocsp_url(leaf_der: &[u8]) -> Option<String> {
    let c = parse(leaf_der).ok()?;
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityInfoAccess(aia) => {
                aia.accessdescs.iter().find_map(|d| {
                    match (&d.access_method.to_id_string()[..], &d.access_location) {
                        (AD_OCSP, x509_parser::extensions::GeneralName::URI(u)) => {
                            Some(u.to_string())
                        }
                        _ => None,
                    }
                })
            }
            _ => None,
        })
}

fn cert_id(leaf_der: &[u8], issuer_der: &[u8]) -> Result<CertId, String> {
    let leaf = parse(leaf_der)?;
    let issuer = parse(issuer_der)?;
    let e = |e: der::Error| e.to_string();
    Ok(CertId {
        hash_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
            oid: SHA1,
            parameters: Some(der::asn1::Null.into()),
        },
        issuer_name_hash: OctetString::new(sha1(issuer.tbs_certificate.subject.as_raw()))
            .map_err(e)?,
        issuer_key_hash: OctetString::new(sha1(&issuer.public_key().subject_public_key.data))
            .map_err(e)?,
        serial_number: x509_cert::serial_number::SerialNumber::new(leaf.raw_serial()).map_err(e)?,
    })
}

/// A DER OCSPRequest for `leaf` (issued by `issuer`), without a nonce: the response is shared
/// by every client it is stapled for.
pub fn request(leaf_der: &[u8], issuer_der: &[u8]) -> Result<Vec<u8>, String> {
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id(leaf_der, issuer_der)?,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(|e| e.to_string())
}

pub(crate) fn unix(t: &x509_ocsp::OcspGeneralizedTime) -> i64 {
    i64::try_from(t.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// The basic response inside a successful OCSPResponse (`Err` says why there is none).
pub(crate) fn basic_response(der: &[u8]) -> Result<BasicOcspResponse, String> {
    let r = OcspResponse::from_der(der).map_err(|e| format!("not an OCSP response: {e}"))?;
    if r.response_status != OcspResponseStatus::Successful {
        return Err(format!("the responder said {:?}", r.response_status));
    }
    let bytes = r
        .response_bytes
        .ok_or("a successful response without a body")?;
    BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("not a basic OCSP response: {e}"))
}

/// The answer in `basic` whose CertID `about` accepts; `Err` names the mismatch.
pub(crate) fn single_response(
    basic: &BasicOcspResponse,
    about: impl Fn(&CertId) -> bool,
) -> Result<&x509_ocsp::SingleResponse, String> {
    let answers = &basic.tbs_response_data.responses;
    let single = answers.iter().find(|s| about(&s.cert_id));
    single.ok_or_else(|| "the response is about another certificate".into())
}

/// Checks a response before stapling it (see the module doc); `Err` says why not.
pub fn check_response(
    der: &[u8],
    leaf_der: &[u8],
    issuer_der: &[u8],
    now: i64,
) -> Result<Staple, String> {
    let basic = basic_response(der)?;
    let want = cert_id(leaf_der, issuer_der)?;
    let single = single_response(&basic, |id| {
        id.serial_number == want.serial_number && id.issuer_key_hash == want.issuer_key_hash
    })?;
    match single.cert_status {
        CertStatus::Good(_) => {}
        CertStatus::Revoked(_) => return Err("the certificate is revoked".into()),
        CertStatus::Unknown(_) => return Err("the responder does not know the certificate".into()),
    }
    let this_update = unix(&single.this_update);
    let next_update = single
        .next_update
        .as_ref()
        .map(unix)
        .ok_or("the response has no nextUpdate")?;
    if now < this_update - 300 || now >= next_update {
        return Err(format!(
            "the response is not current (thisUpdate {this_update}, nextUpdate {next_update})"
        ));
    }
    Ok(Staple {
        serial: mutual_policy::serial_hex(parse(leaf_der)?.raw_serial()),
        der: der.to_vec(),
        this_update,
        next_update,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for bad in [&b""[..], b"\x30\x03\x0a\x01\x01", b"junk"] {
            assert!(check_response(bad, b"", b"", 0).is_err());
        }
        assert_eq!(
            check_response(b"\x30\x03\x0a\x01\x06", b"", b"", 0).unwrap_err(),
            "the responder said Unauthorized"
        );
    }
}
