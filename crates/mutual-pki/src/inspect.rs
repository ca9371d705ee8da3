//! Certificate inspection: everything a person checks when a certificate misbehaves, in one
//! struct that prints as text or JSON, plus warnings for what commonly goes wrong (expired, not
//! yet valid, weak key, SHA-1, overlong leaf validity, leaf without EKU).
//!
//! It reports; it does not judge (path validation is `cert verify`).

use mutual_policy::facts::{eku_names, general_name};
use mutual_policy::CertFacts;
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::keys::KeyKind;
use crate::{rfc3339, serial_hex, PkiError};

/// A leaf valid for longer than this draws a warning (the CA/Browser Forum limit; a sign that
/// the cert will not be rotated).
const MAX_LEAF_DAYS: i64 = 398;

/// What `cert inspect` shows for one certificate.
#[derive(Clone, Debug, Serialize)]
pub struct CertInfo {
    /// Position in the input (0 = first).
    pub index: usize,
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex, no colons.
    pub serial: String,
    pub sans: Vec<String>,
    pub spiffe_id: Option<String>,
    /// RFC 3339.
    pub not_before: String,
    pub not_after: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Seconds until notAfter (negative when expired).
    pub seconds_left: i64,
    /// Human form of `seconds_left`: "23 h left" or "expired 3 s ago".
    pub time_left: String,
    /// e.g. "ECDSA P-256", "RSA", "Ed25519".
    pub key_type: String,
    pub key_bits: usize,
    pub signature_algorithm: String,
    pub key_usage: Vec<String>,
    pub extended_key_usage: Vec<String>,
    pub is_ca: bool,
    pub path_len: Option<u32>,
    pub self_signed: bool,
    /// SHA-256 of the DER, lowercase hex without colons (docs/json.md); the text output adds
    /// colons.
    pub sha256: String,
    pub warnings: Vec<String>,
}

fn malformed(detail: impl Into<String>) -> PkiError {
    PkiError::Malformed {
        detail: detail.into(),
    }
}

/// Inspects every certificate in `input`: a PEM bundle (other PEM blocks such as keys are
/// skipped) or one DER certificate.
pub fn inspect_pem_or_der(input: &[u8]) -> Result<Vec<CertInfo>, PkiError> {
    let ders = certs_from_pem_or_der(input)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    ders.iter()
        .enumerate()
        .map(|(i, d)| inspect_der(i, d, now))
        .collect()
}

/// Splits a PEM bundle or a single DER certificate into DER certificates.
pub fn certs_from_pem_or_der(input: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    if input.is_empty() {
        return Err(malformed("empty input"));
    }
    let looks_pem = input.windows(10).any(|w| w == b"-----BEGIN");
    if looks_pem {
        let mut out = Vec::new();
        for p in x509_parser::pem::Pem::iter_from_buffer(input) {
            let p = p.map_err(|e| {
                malformed(format!(
                    "bad PEM: {} (is the file truncated?)",
                    e.to_string().trim_end_matches('.')
                ))
            })?;
            if p.label == "CERTIFICATE" || p.label == "X509 CERTIFICATE" {
                out.push(p.contents);
            }
        }
        if out.is_empty() {
            return Err(malformed("no CERTIFICATE block in the PEM input"));
        }
        return Ok(out);
    }
    if input.first() != Some(&0x30) {
        return Err(malformed(
            "neither PEM (no -----BEGIN line) nor DER (does not start with a SEQUENCE)",
        ));
    }
    Ok(vec![input.to_vec()])
}

/// Key algorithm and size of a public key, as a person names them ([`KeyKind`]'s words).
pub fn describe_key(spki: &SubjectPublicKeyInfo<'_>) -> (String, usize) {
    let (kind, bits) = KeyKind::of(spki);
    (kind.to_string(), bits)
}

fn sig_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        other => return other.to_string(),
    }
    .to_string()
}

/// One extension of a certificate as a person reads it (the console's certificate page).
#[derive(Clone, Debug, Serialize)]
pub struct ExtensionInfo {
    /// RFC 5280's name (`subjectAltName`, `keyUsage`...) or the OID when unknown.
    pub name: String,
    pub oid: String,
    pub critical: bool,
    /// One line per value (`dns:web.internal`, `serverAuth`, `CA:false`...).
    pub values: Vec<String>,
}

fn key_usage_names(k: &x509_parser::extensions::KeyUsage) -> Vec<String> {
    [
        (k.digital_signature(), "digitalSignature"),
        (k.non_repudiation(), "contentCommitment"),
        (k.key_encipherment(), "keyEncipherment"),
        (k.data_encipherment(), "dataEncipherment"),
        (k.key_agreement(), "keyAgreement"),
        (k.key_cert_sign(), "keyCertSign"),
        (k.crl_sign(), "cRLSign"),
        (k.encipher_only(), "encipherOnly"),
        (k.decipher_only(), "decipherOnly"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n.to_string())
    .collect()
}

/// `AB:CD:...`, as openssl prints key identifiers.
fn colon_bytes(b: &[u8]) -> String {
    crate::colon_hex(&hex::encode(b))
}

fn access_method(oid: &str) -> &str {
    match oid {
        "1.3.6.1.5.5.7.48.1" => "OCSP",
        "1.3.6.1.5.5.7.48.2" => "caIssuers",
        other => other,
    }
}

/// Every extension of the certificate `der`, in the certificate's order, read with
/// x509-parser: SANs, key usage, EKU, basic constraints, AKI/SKI, CRL distribution points,
/// authority information access, name constraints, policies; any other as its OID and size.
/// Values are plain text (the caller escapes them for HTML).
pub fn extensions(der: &[u8]) -> Result<Vec<ExtensionInfo>, PkiError> {
    let (_, c) = X509Certificate::from_der(der)
        .map_err(|_| malformed("not valid X.509 DER (truncated, or not a certificate)"))?;
    let mut out = Vec::new();
    for ext in c.extensions() {
        let oid = ext.oid.to_id_string();
        let (name, values): (&str, Vec<String>) = match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(s) => (
                "subjectAltName",
                s.general_names.iter().map(general_name).collect(),
            ),
            ParsedExtension::KeyUsage(k) => ("keyUsage", key_usage_names(k)),
            ParsedExtension::ExtendedKeyUsage(e) => ("extKeyUsage", eku_names(e)),
            ParsedExtension::BasicConstraints(b) => (
                "basicConstraints",
                std::iter::once(format!("CA:{}", b.ca))
                    .chain(b.path_len_constraint.map(|n| format!("pathlen:{n}")))
                    .collect(),
            ),
            ParsedExtension::SubjectKeyIdentifier(k) => {
                ("subjectKeyIdentifier", vec![colon_bytes(k.0)])
            }
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                let mut v = Vec::new();
                if let Some(k) = &a.key_identifier {
                    v.push(format!("keyid:{}", colon_bytes(k.0)));
                }
                for g in a.authority_cert_issuer.iter().flatten() {
                    v.push(format!("issuer:{}", general_name(g)));
                }
                if let Some(sn) = a.authority_cert_serial {
                    v.push(format!("serial:{}", serial_hex(sn)));
                }
                ("authorityKeyIdentifier", v)
            }
            ParsedExtension::CRLDistributionPoints(p) => {
                let mut v = Vec::new();
                for point in &p.points {
                    match &point.distribution_point {
                        Some(x509_parser::extensions::DistributionPointName::FullName(names)) => {
                            v.extend(names.iter().map(general_name));
                        }
                        Some(
                            x509_parser::extensions::DistributionPointName::NameRelativeToCRLIssuer(
                                rdn,
                            ),
                        ) => v.push(format!(
                            "relative name {}",
                            rdn.iter()
                                .map(|a| format!(
                                    "{}={}",
                                    a.attr_type().to_id_string(),
                                    a.as_str().unwrap_or("?")
                                ))
                                .collect::<Vec<_>>()
                                .join("+")
                        )),
                        None => v.push("(no distribution point name)".into()),
                    }
                }
                ("cRLDistributionPoints", v)
            }
            ParsedExtension::AuthorityInfoAccess(a) => (
                "authorityInfoAccess",
                a.accessdescs
                    .iter()
                    .map(|d| {
                        format!(
                            "{} - {}",
                            access_method(&d.access_method.to_id_string()),
                            general_name(&d.access_location)
                        )
                    })
                    .collect(),
            ),
            ParsedExtension::NameConstraints(nc) => {
                let mut v = Vec::new();
                for (label, subtrees) in [
                    ("permitted", &nc.permitted_subtrees),
                    ("excluded", &nc.excluded_subtrees),
                ] {
                    for t in subtrees.iter().flatten() {
                        v.push(format!("{label} {}", general_name(&t.base)));
                    }
                }
                ("nameConstraints", v)
            }
            ParsedExtension::CertificatePolicies(p) => (
                "certificatePolicies",
                p.iter()
                    .map(|i| match i.policy_id.to_id_string().as_str() {
                        "2.5.29.32.0" => "anyPolicy".to_string(),
                        id => id.to_string(),
                    })
                    .collect(),
            ),
            ParsedExtension::ParseError { .. } => (
                oid.as_str(),
                vec![format!("(unparsable, {} bytes)", ext.value.len())],
            ),
            _ => (oid.as_str(), vec![format!("({} bytes)", ext.value.len())]),
        };
        out.push(ExtensionInfo {
            name: name.to_string(),
            oid: oid.clone(),
            critical: ext.critical,
            values,
        });
    }
    Ok(out)
}

fn inspect_der(index: usize, der: &[u8], now: i64) -> Result<CertInfo, PkiError> {
    let (rest, c): (_, X509Certificate<'_>) = X509Certificate::from_der(der)
        // x509-parser's errors print as nom internals (`NomError(Eof)`): say what it means.
        .map_err(|_| {
            malformed(format!(
                "certificate #{index} is not valid X.509 DER (truncated, or not a certificate)"
            ))
        })?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "certificate #{index} has trailing bytes after it"
        )));
    }
    let f = CertFacts::of(&c, der);
    let nb_u = c.validity().not_before.timestamp();
    let na_u = c.validity().not_after.timestamp();
    let (mut key_usage, mut is_ca, mut path_len) = (Vec::new(), false, None);
    for ext in c.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::KeyUsage(k) => key_usage.extend(key_usage_names(k)),
            ParsedExtension::BasicConstraints(b) => {
                is_ca = b.ca;
                path_len = b.path_len_constraint;
            }
            _ => {}
        }
    }
    let (key_type, key_bits) = describe_key(c.public_key());
    let sig_oid = c.signature_algorithm.algorithm.to_id_string();
    let signature_algorithm = sig_name(&sig_oid);
    let self_signed = c.subject() == c.issuer();

    let mut warnings = Vec::new();
    if na_u <= now {
        warnings.push(mutual_policy::human::time_left(na_u - now));
    }
    if nb_u > now {
        warnings.push(format!(
            "not yet valid (starts {})",
            mutual_policy::human::relative(nb_u - now)
        ));
    }
    let weak = match key_type.as_str() {
        "RSA" => key_bits < 2048,
        k if k.starts_with("ECDSA") => key_bits > 0 && key_bits < 256,
        _ => false,
    };
    if weak {
        warnings.push(format!("weak key: {key_type} {key_bits} bits"));
    }
    if signature_algorithm.contains("SHA1") || signature_algorithm.starts_with("sha1") {
        warnings.push(format!("SHA-1 signature ({signature_algorithm})"));
    }
    if signature_algorithm.starts_with("md5") {
        warnings.push(format!("MD5 signature ({signature_algorithm})"));
    }
    if !is_ca {
        let days = (na_u - nb_u) / 86_400;
        if days > MAX_LEAF_DAYS {
            warnings.push(format!(
                "validity of {days} days is longer than {MAX_LEAF_DAYS} days for a leaf"
            ));
        }
        if f.eku.is_none() {
            warnings
                .push("leaf without extended key usage (no serverAuth/clientAuth stated)".into());
        }
    }
    let secs_left = na_u - now;
    Ok(CertInfo {
        index,
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        serial: serial_hex(c.raw_serial()),
        sans: f.sans,
        spiffe_id: f.spiffe_id,
        not_before: mutual_policy::human::rfc3339(nb_u),
        not_after: mutual_policy::human::rfc3339(na_u),
        not_before_unix: nb_u,
        not_after_unix: na_u,
        seconds_left: secs_left,
        time_left: mutual_policy::human::time_left(secs_left),
        key_type,
        key_bits,
        signature_algorithm,
        key_usage,
        extended_key_usage: f.eku.unwrap_or_default(),
        is_ca,
        path_len,
        self_signed,
        sha256: f.sha256,
        warnings,
    })
}

/// What `ca crl --json` reports about a CRL (docs/json.md).
#[derive(Clone, Debug, Serialize)]
pub struct CrlInfo {
    pub issuer: String,
    /// The CRL number in lowercase hex, like serials.
    pub crl_number: Option<String>,
    /// RFC 3339 UTC, with `_unix` companions.
    pub this_update: String,
    pub this_update_unix: i64,
    pub next_update: Option<String>,
    pub next_update_unix: Option<i64>,
    /// Serials of the revoked certificates (lowercase hex, no leading 00).
    pub revoked: Vec<String>,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
}

/// Reads a DER CRL for reporting.
pub fn crl_info(der: &[u8]) -> Result<CrlInfo, PkiError> {
    let (_, crl) = x509_parser::parse_x509_crl(der)
        .map_err(|_| malformed("the CRL is not valid DER (truncated, or not a CRL)"))?;
    let this = crl.last_update().to_datetime();
    let next = crl.next_update().map(|t| t.to_datetime());
    Ok(CrlInfo {
        issuer: crl.issuer().to_string(),
        crl_number: crl.crl_number().map(|n| serial_hex(&n.to_bytes_be())),
        this_update: rfc3339(this),
        this_update_unix: this.unix_timestamp(),
        next_update: next.map(rfc3339),
        next_update_unix: next.map(OffsetDateTime::unix_timestamp),
        revoked: crl
            .iter_revoked_certificates()
            .map(|r| serial_hex(r.raw_serial()))
            .collect(),
        sha256: hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn malformed_inputs() {
        assert!(inspect_pem_or_der(b"").is_err());
        assert!(inspect_pem_or_der(b"hello").is_err());
        assert!(inspect_pem_or_der(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
        assert!(inspect_pem_or_der(&[0x30, 0x03, 0x01, 0x01]).is_err());
    }

    /// A CA certificate with the extensions the console lists, read back as words.
    #[test]
    fn extensions_as_words() {
        let k = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        p.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("example.org".into())],
            excluded_subtrees: vec![rcgen::GeneralSubtree::IpAddress(
                rcgen::CidrSubnet::from_v4_prefix([10, 0, 0, 0], 8),
            )],
        });
        p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: vec!["http://crl.example/ca.crl".into()],
        }];
        // certificatePolicies { anyPolicy }; authorityInfoAccess { OCSP http://ocsp.example }
        p.custom_extensions = vec![
            rcgen::CustomExtension::from_oid_content(
                &[2, 5, 29, 32],
                vec![0x30, 0x08, 0x30, 0x06, 0x06, 0x04, 0x55, 0x1d, 0x20, 0x00],
            ),
            rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], {
                let mut v = vec![
                    0x30, 0x21, 0x30, 0x1f, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30,
                    0x01, 0x86, 0x13,
                ];
                v.extend_from_slice(b"http://ocsp.example");
                v
            }),
        ];
        let c = p.self_signed(&k).unwrap();
        let exts = extensions(c.der()).unwrap();
        let get = |name: &str| {
            exts.iter()
                .find(|e| e.name == name)
                .unwrap_or_else(|| panic!("{name} missing: {exts:?}"))
        };
        let bc = get("basicConstraints");
        assert!(bc.critical);
        assert_eq!(bc.values, ["CA:true", "pathlen:0"]);
        assert_eq!(get("keyUsage").values, ["keyCertSign", "cRLSign"]);
        assert_eq!(
            get("nameConstraints").values,
            [
                "permitted dns:example.org",
                "excluded ip:10.0.0.0/255.0.0.0"
            ]
        );
        assert_eq!(
            get("cRLDistributionPoints").values,
            ["uri:http://crl.example/ca.crl"]
        );
        assert_eq!(get("certificatePolicies").values, ["anyPolicy"]);
        assert_eq!(
            get("authorityInfoAccess").values,
            ["OCSP - uri:http://ocsp.example"]
        );
        assert_eq!(get("subjectKeyIdentifier").values.len(), 1);
        assert!(extensions(b"\x30\x03\x02\x01\x00").is_err());
    }

    #[test]
    fn leaf_without_eku_warns() {
        let k = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        p.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
        p.not_after = OffsetDateTime::now_utc() + time::Duration::days(500);
        let c = p.self_signed(&k).unwrap();
        let info = inspect_pem_or_der(c.pem().as_bytes()).unwrap();
        assert_eq!(info.len(), 1);
        let w = info[0].warnings.join("; ");
        assert!(w.contains("extended key usage"), "{w}");
        assert!(w.contains("longer than 398"), "{w}");
        assert_eq!(info[0].key_type, "ECDSA P-256");
        assert_eq!(info[0].sans, vec!["dns:a.example".to_string()]);
        let der = inspect_pem_or_der(c.der()).unwrap();
        assert_eq!(der[0].sha256, info[0].sha256);
    }
}
