//! The EST wire formats (RFC 7030, as clarified by RFC 8951), pure functions with no I/O so
//! that the fuzzer (`fuzz/fuzz_targets/est_request.rs`) reaches every byte a device can send:
//! the request path, the base64 framing of bodies, HTTP Basic credentials, the PKCS#10 inside,
//! and the encoders of what goes back (PKCS#7 certs-only, CSR attributes).
use base64::Engine;
use der::asn1::{ObjectIdentifier, SetOfVec};
use der::{Decode, Encode};

use crate::EstError;

/// The EST operations this server knows (RFC 7030 §3.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    CaCerts,
    SimpleEnroll,
    SimpleReenroll,
    CsrAttrs,
    ServerKeygen,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::CaCerts => "cacerts",
            Op::SimpleEnroll => "simpleenroll",
            Op::SimpleReenroll => "simplereenroll",
            Op::CsrAttrs => "csrattrs",
            Op::ServerKeygen => "serverkeygen",
        }
    }
}

/// The path prefix of every EST request.
pub const PREFIX: &str = "/.well-known/est/";

/// Splits `/.well-known/est/[LABEL/]OP` into the label and the operation. `None`: not an
/// EST path this server answers (an unknown operation, an empty or malformed label).
pub fn parse_path(path: &str) -> Option<(Option<&str>, Op)> {
    let rest = path.strip_prefix(PREFIX)?;
    let (label, op) = match rest.split_once('/') {
        Some((label, op)) => (Some(label), op),
        None => (None, rest),
    };
    if let Some(l) = label {
        // RFC 7030 §3.2.2: a label is one path segment; ours are plain words.
        if l.is_empty()
            || l.len() > 64
            || !l
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return None;
        }
    }
    let op = match op {
        "cacerts" => Op::CaCerts,
        "simpleenroll" => Op::SimpleEnroll,
        "simplereenroll" => Op::SimpleReenroll,
        "csrattrs" => Op::CsrAttrs,
        "serverkeygen" => Op::ServerKeygen,
        _ => return None,
    };
    Some((label, op))
}

/// Decodes a base64 body (RFC 8951: base64 regardless of any Content-Transfer-Encoding
/// header), tolerating the line breaks and spaces devices put in it.
pub fn decode_base64_body(body: &[u8]) -> Result<Vec<u8>, EstError> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(EstError::new(
            "bad_request",
            "the request body is empty; send the base64 DER of a PKCS#10 request",
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| {
            EstError::new(
                "bad_request",
                format!("the request body is not base64 (RFC 7030 §4.2.1, RFC 8951): {e}"),
            )
        })
}

/// Base64 with a line break every 64 characters, the form `openssl base64 -d` reads.
pub fn encode_base64_body(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2);
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// The password of an `Authorization: Basic ...` header (the user name is not used: the token
/// says who it is for). `None`: no Basic credentials in it.
pub fn basic_password(header: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, b64) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_string())
}

/// Decodes an EST enrollment body into a parsed CSR: base64 framing, then PKCS#10.
pub fn parse_enroll_body(body: &[u8]) -> Result<mutual_pki::ca::Csr, EstError> {
    let der = decode_base64_body(body)?;
    if der.first() != Some(&0x30) {
        return Err(EstError::new(
            "bad_request",
            "the body decodes to something other than a DER PKCS#10 request",
        ));
    }
    mutual_pki::ca::Csr::parse(&der).map_err(|e| EstError::new("bad_request", e.to_string()))
}

/// The body of a `serverkeygen` answer (RFC 7030 §4.4.2): `multipart/mixed` with the private
/// key (`application/pkcs8`, PKCS#8 PrivateKeyInfo DER) and the certificate
/// (`application/pkcs7-mime; smime-type=certs-only`), both base64 with CRLF line ends.
pub fn keygen_body(boundary: &str, key_pkcs8: &[u8], certs_only: &[u8]) -> String {
    format!(
        "--{boundary}\r\nContent-Type: application/pkcs8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--{boundary}\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--{boundary}--\r\n",
        encode_base64_body(key_pkcs8),
        encode_base64_body(certs_only),
    )
}

/// The two parts of a `serverkeygen` answer (the client's reading of [`keygen_body`], also
/// fuzzed): (PKCS#8 DER, PKCS#7 DER), found by their content types in either order.
pub fn parse_keygen_body(content_type: &str, body: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("{content_type:?} is not multipart with a boundary"))?;
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not text".to_string())?;
    let delim = format!("--{boundary}");
    let (mut key, mut p7) = (None, None);
    for part in text.split(delim.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.trim_start_matches(['\r', '\n']);
        let (head, content) = part
            .split_once("\r\n\r\n")
            .or_else(|| part.split_once("\n\n"))
            .ok_or_else(|| "a part has no header/body separator".to_string())?;
        let ct = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_ascii_lowercase())
            })
            .unwrap_or_default();
        let der = decode_base64_body(content.as_bytes()).map_err(|e| e.detail)?;
        if ct.starts_with("application/pkcs8") {
            key = Some(der);
        } else if ct.starts_with("application/pkcs7-mime") {
            p7 = Some(der);
        }
    }
    match (key, p7) {
        (Some(k), Some(p)) => Ok((k, p)),
        _ => Err("the answer lacks the application/pkcs8 or the PKCS#7 part".into()),
    }
}

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

/// A degenerate PKCS#7 SignedData ("certs-only", RFC 5652 §5 with no signers) holding `certs`
/// (DER): what `cacerts`, `simpleenroll` and `simplereenroll` answer.
pub fn certs_only(certs: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    use cms::cert::CertificateChoices;
    use cms::content_info::{CmsVersion, ContentInfo};
    use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData};
    let mut set = SetOfVec::new();
    for der in certs {
        let c = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
        set.insert(CertificateChoices::Certificate(c))
            .map_err(|e| e.to_string())?;
    }
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(set)),
        crls: None,
        signer_infos: cms::signed_data::SignerInfos(SetOfVec::new()),
    };
    let ci = ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: der::Any::encode_from(&sd).map_err(|e| e.to_string())?,
    };
    ci.to_der().map_err(|e| e.to_string())
}

/// The certificates (DER) of a PKCS#7 certs-only message: the client's reading of
/// [`certs_only`], also fuzzed.
pub fn parse_certs_only(der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use cms::cert::CertificateChoices;
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    let ci = ContentInfo::from_der(der).map_err(|e| format!("not a PKCS#7 ContentInfo: {e}"))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(format!(
            "PKCS#7 content type {} is not signedData",
            ci.content_type
        ));
    }
    let sd: SignedData = ci
        .content
        .decode_as()
        .map_err(|e| format!("not a PKCS#7 SignedData: {e}"))?;
    let mut out = Vec::new();
    if let Some(set) = sd.certificates {
        for c in set.0.iter() {
            if let CertificateChoices::Certificate(c) = c {
                out.push(c.to_der().map_err(|e| e.to_string())?);
            }
        }
    }
    Ok(out)
}

/// Object identifiers named in the CSR attributes we answer.
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// `AttrOrOID` of RFC 7030 §4.5.2 (CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID).
#[derive(Clone, Debug, PartialEq, Eq, der::Choice)]
pub enum AttrOrOid {
    Oid(ObjectIdentifier),
    Attribute(x509_cert::attr::Attribute),
}

/// What `csrattrs` answers: an EC P-256 key (ecPublicKey with the secp256r1 parameter, the
/// CA's default key type) signed with ecdsa-with-SHA256. The names are not asked for: the CA
/// decides them from the factory certificate or the token.
pub fn csr_attrs() -> Result<Vec<u8>, String> {
    let mut values = SetOfVec::new();
    values
        .insert(der::Any::encode_from(&SECP256R1).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let attrs = vec![
        AttrOrOid::Attribute(x509_cert::attr::Attribute {
            oid: ID_EC_PUBLIC_KEY,
            values,
        }),
        AttrOrOid::Oid(ECDSA_WITH_SHA256),
    ];
    attrs.to_der().map_err(|e| e.to_string())
}

/// Reads CSR attributes (the client side of [`csr_attrs`], and a fuzz target): the OIDs named,
/// whether alone or as attribute types.
pub fn parse_csr_attrs(der: &[u8]) -> Result<Vec<String>, String> {
    let v = Vec::<AttrOrOid>::from_der(der).map_err(|e| format!("not CsrAttrs: {e}"))?;
    Ok(v.iter()
        .map(|a| match a {
            AttrOrOid::Oid(o) => o.to_string(),
            AttrOrOid::Attribute(a) => a.oid.to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/.well-known/est/cacerts"),
            Some((None, Op::CaCerts))
        );
        assert_eq!(
            parse_path("/.well-known/est/sensors/simpleenroll"),
            Some((Some("sensors"), Op::SimpleEnroll))
        );
        assert_eq!(parse_path("/.well-known/est/bogus"), None);
        assert_eq!(parse_path("/.well-known/est//cacerts"), None);
        assert_eq!(parse_path("/.well-known/est/a/b/cacerts"), None);
        assert_eq!(parse_path("/v1/sign"), None);
    }

    #[test]
    fn base64_bodies() {
        assert_eq!(
            decode_base64_body(b"AAEC\r\nAw==\n").unwrap(),
            vec![0, 1, 2, 3]
        );
        let e = decode_base64_body(b"not base64!").unwrap_err();
        assert_eq!(e.reason, "bad_request");
        assert!(e.detail.contains("not base64"), "{}", e.detail);
        assert_eq!(decode_base64_body(b"  ").unwrap_err().reason, "bad_request");
        let long = encode_base64_body(&[7u8; 100]);
        assert!(long.lines().all(|l| l.trim_end().len() <= 64));
        assert_eq!(decode_base64_body(long.as_bytes()).unwrap(), vec![7u8; 100]);
    }

    #[test]
    fn basic_auth() {
        // "device:s3cret"
        assert_eq!(
            basic_password(b"Basic ZGV2aWNlOnMzY3JldA==").as_deref(),
            Some("s3cret")
        );
        assert_eq!(basic_password(b"Bearer abc"), None);
        assert_eq!(basic_password(b"Basic !!!"), None);
    }

    #[test]
    fn csr_attrs_round_trip() {
        let der = csr_attrs().unwrap();
        assert_eq!(
            parse_csr_attrs(&der).unwrap(),
            vec!["1.2.840.10045.2.1", "1.2.840.10045.4.3.2"]
        );
    }

    /// Every one-byte corruption and truncation of a real request body goes through the
    /// parsers without a panic (a cheap stand-in between fuzz runs).
    #[test]
    fn corrupted_bodies_do_not_panic() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).unwrap();
        let body = encode_base64_body(csr.der());
        assert!(parse_enroll_body(body.as_bytes()).is_ok());
        let der = csr.der().to_vec();
        for i in 0..der.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut d = der.clone();
                d[i] ^= flip;
                crate::parse_for_fuzzing(encode_base64_body(&d).as_bytes());
                crate::parse_for_fuzzing(&d);
            }
            crate::parse_for_fuzzing(&der[..i]);
        }
    }

    #[test]
    fn keygen_body_round_trip() {
        let body = keygen_body("b0", &[1u8; 150], &[2u8; 70]);
        let (k, p) = parse_keygen_body("multipart/mixed; boundary=b0", body.as_bytes()).unwrap();
        assert_eq!((k, p), (vec![1u8; 150], vec![2u8; 70]));
        assert!(parse_keygen_body("multipart/mixed", body.as_bytes()).is_err());
        assert!(parse_keygen_body("multipart/mixed; boundary=zz", body.as_bytes()).is_err());
    }

    #[test]
    fn certs_only_round_trip() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().to_vec();
        let p7 = certs_only(std::slice::from_ref(&der)).unwrap();
        assert_eq!(parse_certs_only(&p7).unwrap(), vec![der]);
        assert!(parse_certs_only(b"\x30\x00").is_err());
    }
}
