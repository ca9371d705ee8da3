//! The identity a verified certificate carries, extracted once per handshake so that policy
//! decisions, audit lines, metrics and forwarded headers all speak about the same names.

use std::net::IpAddr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::{PolicyError, SpiffeId};

/// The identity a verified certificate carries (DESIGN.md order: SPIFFE, DNS, IP, CN/OU).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// The SPIFFE ID: set only when exactly one URI SAN is a valid SPIFFE ID (a certificate
    /// with several SPIFFE IDs has none, per the X.509-SVID spec).
    pub spiffe: Option<String>,
    pub dns: Vec<String>,
    pub ip: Vec<String>,
    pub cn: Option<String>,
    pub ou: Vec<String>,
    /// Serial, lowercase hex, no colons, no leading zero bytes.
    pub serial: String,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub sha256: String,
    /// Issuer DN as a string (RFC 4514-like, `CN=..., O=...`).
    pub issuer: String,
    /// Subject DN as a string.
    pub subject: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

impl Identity {
    /// Extracts the identity from a leaf certificate's DER (already verified by the TLS layer).
    pub fn from_der(der: &[u8]) -> Result<Identity, PolicyError> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| PolicyError::Certificate(format!("cannot parse certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(PolicyError::Certificate(
                "trailing data after the certificate".into(),
            ));
        }
        Identity::from_parsed(&cert, der)
    }

    /// [`Identity::from_der`] for a certificate the caller has parsed already (`der` is its
    /// encoding, for the fingerprint), so one parse serves every reader of a handshake's leaf.
    pub fn from_parsed(cert: &X509Certificate<'_>, der: &[u8]) -> Result<Identity, PolicyError> {
        let mut id = Identity::default();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| PolicyError::Certificate(format!("cannot parse subjectAltName: {e}")))?;
        let mut spiffe_ids = Vec::new();
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => id.dns.push((*d).to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Some(ip) = ip_from_bytes(b) {
                            id.ip.push(ip.to_string());
                        }
                    }
                    // Scheme is case-insensitive in URIs; a SPIFFE ID must still parse
                    // strictly (lowercase) to count.
                    GeneralName::URI(u)
                        if u.get(..9)
                            .is_some_and(|p| p.eq_ignore_ascii_case("spiffe://")) =>
                    {
                        spiffe_ids.push(*u);
                    }
                    _ => {}
                }
            }
        }
        if let [one] = spiffe_ids.as_slice() {
            if let Ok(s) = SpiffeId::parse(one) {
                id.spiffe = Some(s.to_string());
            }
        }
        id.cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string);
        id.ou = cert
            .subject()
            .iter_organizational_unit()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_string)
            .collect();
        id.serial = serial_hex(cert.raw_serial());
        id.sha256 = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der));
        id.issuer = cert.issuer().to_string();
        id.subject = cert.subject().to_string();
        id.not_after = cert.validity().not_after.timestamp();
        Ok(id)
    }

    /// The single most specific name, for logs and metric labels: SPIFFE ID, else first DNS
    /// SAN, else first IP SAN, else CN, else the serial.
    pub fn principal(&self) -> String {
        if let Some(s) = &self.spiffe {
            return s.clone();
        }
        if let Some(d) = self.dns.first() {
            return d.clone();
        }
        if let Some(i) = self.ip.first() {
            return i.clone();
        }
        if let Some(cn) = &self.cn {
            return cn.clone();
        }
        self.serial.clone()
    }

    /// The SPIFFE ID as a parsed type.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.spiffe.as_deref().and_then(|s| SpiffeId::parse(s).ok())
    }
}

/// Serial as lowercase hex without the DER sign-padding zero bytes (what `openssl x509 -serial`
/// prints, lowercased), keeping at least one byte.
pub fn serial_hex(raw: &[u8]) -> String {
    let mut b = raw;
    while b.len() > 1 && b[0] == 0 {
        b = &b[1..];
    }
    hex::encode(b)
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}
