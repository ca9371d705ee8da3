//! What every report says about one certificate, read one way: `cert inspect` (mutual-pki) and
//! the probe (mutual-probe) both start from [`CertFacts`], so a name, an extended key usage or a
//! fingerprint reads the same in both (docs/json.md). It lives in this pure crate
//! because it is the one both already depend on; each report adds its own extras (key and
//! signature words, warnings, the probe's raw names) from the same parsed certificate.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{ExtendedKeyUsage, GeneralName, ParsedExtension};

/// The facts of one certificate that every report reads the same way (subject, issuer, serial
/// and validity are one call each on the parsed certificate, [`crate::serial_hex`] for the serial).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// Every subjectAltName in certificate order, as [`general_name`] writes it.
    pub sans: Vec<String>,
    /// The first `spiffe://` URI SAN.
    pub spiffe_id: Option<String>,
    /// The extended key usages as [`eku_names`] writes them; `None` without the extension.
    pub eku: Option<Vec<String>>,
    /// Lowercase hex SHA-256 of the DER, no colons.
    pub sha256: String,
}

impl CertFacts {
    /// The facts of `cert`, whose encoding is `der` (for the fingerprint).
    pub fn of(cert: &X509Certificate<'_>, der: &[u8]) -> CertFacts {
        // Every extension in order, as a diagnosis wants it: a certificate that (wrongly)
        // carries one twice shows the values of both.
        let mut sans = Vec::new();
        let mut eku: Option<Vec<String>> = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(s) => {
                    sans.extend(s.general_names.iter().map(general_name));
                }
                ParsedExtension::ExtendedKeyUsage(e) => {
                    eku.get_or_insert_with(Vec::new).extend(eku_names(e));
                }
                _ => {}
            }
        }
        let spiffe_id = sans
            .iter()
            .find_map(|s| s.strip_prefix("uri:spiffe://"))
            .map(|rest| format!("spiffe://{rest}"));
        let sha256 = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der));
        CertFacts {
            sans,
            spiffe_id,
            eku,
            sha256,
        }
    }
}

/// One general name as every report writes it: `dns:`, `ip:`, `uri:`, `email:` (docs/json.md),
/// `dirName:`, `registeredID:`, `otherName:`; an address with its mask (a name constraint's
/// subtree) as `ip:ADDR/MASK`.
pub fn general_name(g: &GeneralName<'_>) -> String {
    match g {
        GeneralName::DNSName(d) => format!("dns:{d}"),
        GeneralName::IPAddress(b) => match b.len() {
            4 => {
                let a: [u8; 4] = [b[0], b[1], b[2], b[3]];
                format!("ip:{}", std::net::Ipv4Addr::from(a))
            }
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                format!("ip:{}", std::net::Ipv6Addr::from(a))
            }
            // A name constraint's subtree: an address and its mask.
            8 => format!(
                "ip:{}/{}",
                std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                std::net::Ipv4Addr::new(b[4], b[5], b[6], b[7])
            ),
            32 => {
                let (mut a, mut m) = ([0u8; 16], [0u8; 16]);
                a.copy_from_slice(&b[..16]);
                m.copy_from_slice(&b[16..]);
                format!(
                    "ip:{}/{}",
                    std::net::Ipv6Addr::from(a),
                    std::net::Ipv6Addr::from(m)
                )
            }
            _ => format!("ip:<{} bytes>", b.len()),
        },
        GeneralName::URI(u) => format!("uri:{u}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::DirectoryName(n) => format!("dirName:{n}"),
        GeneralName::RegisteredID(o) => format!("registeredID:{}", o.to_id_string()),
        GeneralName::OtherName(o, _) => format!("otherName:{}", o.to_id_string()),
        other => format!("other:{other:?}"),
    }
}

/// The extended key usages, RFC 5280's names in a fixed order, then any other as its OID.
pub fn eku_names(e: &ExtendedKeyUsage<'_>) -> Vec<String> {
    let mut out: Vec<String> = [
        (e.any, "any"),
        (e.server_auth, "serverAuth"),
        (e.client_auth, "clientAuth"),
        (e.code_signing, "codeSigning"),
        (e.email_protection, "emailProtection"),
        (e.time_stamping, "timeStamping"),
        (e.ocsp_signing, "OCSPSigning"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n.to_string())
    .collect();
    out.extend(e.other.iter().map(|o| o.to_id_string()));
    out
}

/// The size in bits of an RSA modulus (big-endian, as x509-parser gives it): every place that
/// judges or reports an RSA key counts with this. x509-parser's `key_size` counts whole bytes, so
/// a 2052-bit modulus read as 2056 (and passed "a multiple of 8") and a 2047-bit one as 2048.
pub fn rsa_bits(modulus: &[u8]) -> usize {
    let mut s = modulus;
    while let Some((0, rest)) = s.split_first() {
        s = rest;
    }
    match s.first() {
        None => 0,
        Some(b) => (s.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
    }
}

/// What is wrong with an RSA modulus of `bits`, as the CA, the verifier, the lint and the probe
/// all judge it (CABF BR 6.1.5): fewer than 2048 bits, or not a whole number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaSizeProblem {
    TooSmall,
    NotWholeBytes,
}

impl RsaSizeProblem {
    /// `None`: the size is acceptable.
    pub fn of(bits: usize) -> Option<RsaSizeProblem> {
        if bits < 2048 {
            Some(RsaSizeProblem::TooSmall)
        } else if !bits.is_multiple_of(8) {
            Some(RsaSizeProblem::NotWholeBytes)
        } else {
            None
        }
    }

    /// Why, in the words every message uses.
    pub fn why(self) -> &'static str {
        match self {
            RsaSizeProblem::TooSmall => "at least 2048 bits required",
            RsaSizeProblem::NotWholeBytes => {
                "the modulus must be a whole number of bytes (a multiple of 8 bits: 2048, 3072, 4096)"
            }
        }
    }
}

#[cfg(test)]
mod rsa_bits_tests {
    #[test]
    fn counts_bits_not_bytes() {
        assert_eq!(super::rsa_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(super::rsa_bits(&[0x0f, 0xff]), 12);
        assert_eq!(super::rsa_bits(&[0x00]), 0);
        assert_eq!(super::rsa_bits(&[]), 0);
    }
}
