//! Names of a verified certificate written the way other tools write them, for HTTP mode's
//! identity headers: the subject as an RFC 4514 string (what `openssl x509 -nameopt RFC2253`
//! and Envoy's `X-Forwarded-Client-Cert` `Subject=` print) and every URI SAN (Envoy's `URI=`).
//! It lives here, beside [`crate::Identity`], so the proxy never parses certificates itself.

use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::{Class, Tag};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::PolicyError;

/// What the forwarded-identity headers need beyond [`crate::Identity`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertNames {
    /// The subject DN per RFC 4514: most specific RDN first, `,` between RDNs, `+` inside a
    /// multi-valued RDN. Special characters are escaped with `\`; control characters and every
    /// non-ASCII byte as `\XX` (as OpenSSL's RFC 2253 mode does), so the result is plain ASCII
    /// and safe in an HTTP header.
    pub subject: String,
    /// Every URI SAN, in certificate order.
    pub uris: Vec<String>,
}

/// Reads the subject and URI SANs of a certificate's DER.
pub fn cert_names(der: &[u8]) -> Result<CertNames, PolicyError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| PolicyError::Certificate(format!("cannot parse certificate: {e}")))?;
    names_of(&cert)
}

/// [`cert_names`] of a certificate the caller has parsed already.
pub fn names_of(cert: &X509Certificate<'_>) -> Result<CertNames, PolicyError> {
    let mut uris = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PolicyError::Certificate(format!("cannot parse subjectAltName: {e}")))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let GeneralName::URI(u) = name {
                uris.push((*u).to_string());
            }
        }
    }
    Ok(CertNames {
        subject: rfc4514(cert.subject()),
        uris,
    })
}

/// RFC 4514 string of a distinguished name (RDNs in reverse order of the DER sequence).
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+"))
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// Short names OpenSSL prints (RFC 4514 section 3 plus the common extras); others are dotted.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

fn attribute(a: &AttributeTypeAndValue<'_>) -> String {
    let oid = a.attr_type().to_id_string();
    let value = a.attr_value();
    let text = match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(value.data).ok().map(str::to_string),
        // Teletex: treated as Latin-1, as OpenSSL does.
        Tag::T61String => Some(value.data.iter().map(|b| char::from(*b)).collect()),
        Tag::BmpString => utf16be(value.data),
        Tag::UniversalString => utf32be(value.data),
        _ => None,
    };
    match (short_name(&oid), text) {
        (Some(n), Some(t)) => format!("{n}={}", escape(&t)),
        // Unknown attribute types and non-string values: `#` and the hex of the value's DER
        // (RFC 4514 section 2.4), so nothing is lost or misread.
        (n, _) => format!(
            "{}=#{}",
            n.map_or(oid.clone(), str::to_string),
            hex::encode(der_of(value.tag(), value.class(), value.data))
        ),
    }
}

fn utf16be(b: &[u8]) -> Option<String> {
    let chunks = b.chunks_exact(2);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let units: Vec<u16> = chunks.map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    String::from_utf16(&units).ok()
}

fn utf32be(b: &[u8]) -> Option<String> {
    let chunks = b.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return None;
    }
    chunks
        .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

/// DER of a primitive value from its tag and contents (low tag numbers; enough for the
/// attribute values a certificate name holds).
fn der_of(tag: Tag, class: Class, data: &[u8]) -> Vec<u8> {
    let class_bits: u8 = match class {
        Class::Universal => 0x00,
        Class::Application => 0x40,
        Class::ContextSpecific => 0x80,
        Class::Private => 0xc0,
    };
    let mut out = vec![class_bits | u8::try_from(tag.0 & 0x1f).unwrap_or(0x1f)];
    // The length octets (short or long form) as the der crate writes them; a name's attribute
    // value is far below its 256 MiB limit.
    use der::Encode;
    let len = der::Length::try_from(data.len()).and_then(|l| l.to_der());
    out.extend(len.unwrap_or_default());
    out.extend_from_slice(data);
    out
}

/// RFC 4514 section 2.4 escaping, in OpenSSL's RFC 2253 flavour: `\` before `,+"\<>;`, before a
/// leading `#` or space and a trailing space; `\XX` for control characters and for each byte of
/// a non-ASCII character.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i + 1 == n => out.push_str("\\ "),
            c if c.is_ascii_control() || !c.is_ascii() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn escapes_specials_edges_and_non_ascii() {
        assert_eq!(escape("a,b+c\"d\\e<f>g;h"), r#"a\,b\+c\"d\\e\<f\>g\;h"#);
        assert_eq!(escape("#x# "), r"\#x#\ ");
        assert_eq!(escape(" lead"), r"\ lead");
        assert_eq!(escape("caf\u{e9}"), r"caf\C3\A9");
        assert_eq!(escape("a\nb"), r"a\0Ab");
        assert_eq!(escape("plain name"), "plain name");
    }

    #[test]
    fn subject_is_reversed_and_uris_listed() {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "DE");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "svc \"one\"");
        params.subject_alt_names = vec![
            rcgen::SanType::URI("spiffe://example.org/a".try_into().unwrap()),
            rcgen::SanType::URI("https://example.org/x".try_into().unwrap()),
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let names = cert_names(cert.der()).unwrap();
        assert_eq!(names.subject, r#"CN=svc \"one\",O=Acme\, Inc.,C=DE"#);
        assert_eq!(
            names.uris,
            ["spiffe://example.org/a", "https://example.org/x"]
        );
    }
}
