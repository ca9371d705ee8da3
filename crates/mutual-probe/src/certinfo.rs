//! What a person needs to know about one certificate in a chain, read straight from the DER with
//! x509-parser, so the probe can show the server's chain and check a client certificate locally
//! without depending on the CA code.

use serde::Serialize;
use x509_parser::prelude::*;

/// One certificate as the probe reports it.
#[derive(Clone, Debug, Serialize)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    /// `dns:x`, `ip:1.2.3.4`, `uri:...`, `email:...`
    pub sans: Vec<String>,
    pub spiffe_id: Option<String>,
    pub serial: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    /// Whole days until notAfter (negative once expired); the JSON carries `seconds_left`.
    #[serde(skip)]
    pub days_left: i64,
    /// Seconds until notAfter (negative once expired), as `cert inspect --json`.
    pub seconds_left: i64,
    /// e.g. "ECDSA P-256", "RSA 2048", "Ed25519".
    pub key: String,
    pub signature_algorithm: String,
    /// Lowercase hex SHA-256 of the DER, no colons (as the audit log prints it).
    pub sha256: String,
    pub is_ca: bool,
    /// Extended key usages present ("serverAuth", "clientAuth", ...); empty when the extension is absent.
    pub eku: Vec<String>,
    /// Unix seconds companions of `not_before`/`not_after` (docs/json.md).
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Raw DER of the subject and issuer names, to compare against advertised CA names exactly.
    #[serde(skip)]
    pub subject_der: Vec<u8>,
    #[serde(skip)]
    pub issuer_der: Vec<u8>,
    #[serde(skip)]
    pub eku_present: bool,
    #[serde(skip)]
    pub eku_client_auth: bool,
    #[serde(skip)]
    pub eku_server_auth: bool,
    /// RSA modulus bits, when the key is RSA (to flag weak keys).
    #[serde(skip)]
    pub rsa_bits: Option<usize>,
}

/// Lowercase hex SHA-256 of `der`.
pub fn sha256_hex(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

use mutual_tls::verify::rfc3339;

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    ::time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Decodes a DER-encoded X.500 name (as a TLS CertificateRequest carries it) to a string.
pub fn dn_to_string(der: &[u8]) -> String {
    dn_decode(der).0
}

/// Like `dn_to_string`, and says whether the name had to be repaired: some servers send the
/// RDN sequence without its outer SEQUENCE (webpki's trust-anchor form), which RFC 8446 and
/// OpenSSL do not accept.
pub fn dn_decode(der: &[u8]) -> (String, bool) {
    if let Ok((rest, name)) = X509Name::from_der(der) {
        if rest.is_empty() {
            return (name.to_string(), false);
        }
    }
    // An RDN sequence starts with a SET; anything else is not a name at all.
    if der.first() != Some(&0x31) {
        return (format!("(undecodable name, {} bytes)", der.len()), false);
    }
    let mut wrapped = vec![0x30];
    let n = der.len();
    if n < 0x80 {
        wrapped.push(n as u8);
    } else if n <= 0xff {
        wrapped.extend([0x81, n as u8]);
    } else if n <= 0xffff {
        wrapped.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    wrapped.extend_from_slice(der);
    match X509Name::from_der(&wrapped) {
        Ok(([], name)) => (name.to_string(), true),
        _ => (format!("(undecodable name, {} bytes)", der.len()), false),
    }
}

fn key_description(cert: &X509Certificate<'_>) -> (String, Option<usize>) {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    if *alg == x509_parser::oid_registry::OID_SIG_ED25519 {
        return ("Ed25519".into(), None);
    }
    if *alg == x509_parser::oid_registry::OID_SIG_ED448 {
        return ("Ed448".into(), None);
    }
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
            let bits = mutual_tls::rsa_bits(rsa.modulus);
            (format!("RSA {bits}"), Some(bits))
        }
        Ok(x509_parser::public_key::PublicKey::EC(ec)) => {
            let curve = match ec.key_size() {
                256 => "P-256".to_string(),
                384 => "P-384".to_string(),
                521 | 528 => "P-521".to_string(),
                n => format!("{n}-bit curve"),
            };
            (format!("ECDSA {curve}"), None)
        }
        _ => (alg.to_id_string(), None),
    }
}

fn oid_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    x509_parser::objects::oid2sn(oid, x509_parser::objects::oid_registry())
        .map(str::to_string)
        .unwrap_or_else(|_| oid.to_id_string())
}

/// Summarises one DER certificate; `None` when it does not parse (reported as malformed).
pub fn summarize(der: &[u8]) -> Option<CertSummary> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let f = mutual_tls::CertFacts::of(&cert, der);
    let eku_has = |name: &str| {
        f.eku
            .as_ref()
            .is_some_and(|e| e.iter().any(|n| n == name || n == "any"))
    };
    let (eku_client_auth, eku_server_auth) = (eku_has("clientAuth"), eku_has("serverAuth"));
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let (key, rsa_bits) = key_description(&cert);
    Some(CertSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans: f.sans,
        spiffe_id: f.spiffe_id,
        // The one serial form (docs/json.md): no leading 00 byte, as every other command.
        serial: mutual_tls::serial_hex(cert.raw_serial()),
        not_before: rfc3339(nb),
        not_after: rfc3339(na),
        days_left: (na - now_unix()).div_euclid(86_400),
        seconds_left: na - now_unix(),
        key,
        signature_algorithm: oid_name(&cert.signature_algorithm.algorithm),
        sha256: f.sha256,
        is_ca: cert.is_ca(),
        eku_present: f.eku.is_some(),
        eku: f.eku.unwrap_or_default(),
        not_before_unix: nb,
        not_after_unix: na,
        subject_der: cert.subject().as_raw().to_vec(),
        issuer_der: cert.issuer().as_raw().to_vec(),
        eku_client_auth,
        eku_server_auth,
        rsa_bits,
    })
}

/// Whether `child` carries a valid signature by `parent`'s key (chain order checks).
pub fn signed_by(child_der: &[u8], parent_der: &[u8]) -> bool {
    let (Ok((_, child)), Ok((_, parent))) = (
        X509Certificate::from_der(child_der),
        X509Certificate::from_der(parent_der),
    ) else {
        return false;
    };
    child.verify_signature(Some(parent.public_key())).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_name_is_reported_not_panicking() {
        assert!(dn_to_string(&[1, 2, 3]).starts_with("(undecodable"));
    }

    #[test]
    fn names_without_outer_sequence_are_repaired() {
        // SET { SEQUENCE { OID 2.5.4.3, UTF8String "Acme" } }
        let rdn = [
            0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x04, b'A', b'c', b'm',
            b'e',
        ];
        assert_eq!(dn_decode(&rdn), ("CN=Acme".to_string(), true));
        let mut full = vec![0x30, rdn.len() as u8];
        full.extend_from_slice(&rdn);
        assert_eq!(dn_decode(&full), ("CN=Acme".to_string(), false));
    }

    #[test]
    fn sha256_of_empty_is_the_known_value() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
