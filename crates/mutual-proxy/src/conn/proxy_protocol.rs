//! PROXY protocol version 2 (haproxy's proxy-protocol.txt, section 2.2): the binary header
//! `mutual serve --proxy-protocol v2` writes to the backend before any client byte, so the
//! backend learns the real client address and what the TLS layer verified (haproxy, nginx,
//! Envoy and many servers read it). The builder is what the proxy uses; the parser exists so the
//! tests (and anyone debugging a backend) can check a header against the spec, CRC included.
//!
//! What we send: `PROXY` command, TCP over IPv4 or IPv6 (an IPv4 address is written as
//! IPv4-mapped IPv6 when the other end is IPv6), then these TLVs:
//! - `PP2_TYPE_SSL` (0x20): client = `PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS`
//!   (every allowed connection presented a verified certificate), verify = 0 (success), and the
//!   sub-TLVs VERSION, CN, CIPHER, SIG_ALG, KEY_ALG;
//! - `PP2_TYPE_UNIQUE_ID` (0x05): the verified SPIFFE ID when it fits the spec's 128-byte limit
//!   (haproxy exposes it as `fc_pp_unique_id`);
//! - [`PP2_TYPE_MUTUAL_SPIFFE`] (0xE0, the spec's custom range): the SPIFFE ID whatever its
//!   length (haproxy 2.9+: `fc_pp_tlv(0xE0)`);
//! - `PP2_TYPE_CRC32C` (0x03): CRC32c of the whole header with this field zeroed, so a backend
//!   can reject a header damaged or truncated on the way.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Version 2, command PROXY.
const VER_CMD_PROXY: u8 = 0x21;
const FAM_TCP4: u8 = 0x11;
const FAM_TCP6: u8 = 0x21;

pub const PP2_TYPE_ALPN: u8 = 0x01;
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
pub const PP2_TYPE_CRC32C: u8 = 0x03;
pub const PP2_TYPE_NOOP: u8 = 0x04;
pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
pub const PP2_TYPE_SSL: u8 = 0x20;
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
pub const PP2_SUBTYPE_SSL_SIG_ALG: u8 = 0x24;
pub const PP2_SUBTYPE_SSL_KEY_ALG: u8 = 0x25;
/// Custom TLV (0xE0..=0xEF is reserved for applications): the verified SPIFFE ID, any length.
pub const PP2_TYPE_MUTUAL_SPIFFE: u8 = 0xE0;

pub const PP2_CLIENT_SSL: u8 = 0x01;
pub const PP2_CLIENT_CERT_CONN: u8 = 0x02;
pub const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// The spec caps PP2_TYPE_UNIQUE_ID at 128 bytes.
pub const UNIQUE_ID_MAX: usize = 128;

/// Which PROXY protocol version to send to the backend (only v2: the binary one carries TLVs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyProtocol {
    V2,
}

impl std::str::FromStr for ProxyProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v2" | "2" => Ok(ProxyProtocol::V2),
            _ => Err(format!(
                "{s:?}: unsupported PROXY protocol version (only v2 is supported)"
            )),
        }
    }
}

/// What the TLS layer established, as the header reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SslInfo {
    /// `TLSv1.3` / `TLSv1.2`.
    pub version: String,
    /// Subject CN of the client certificate (empty: the sub-TLV is left out).
    pub cn: String,
    /// Cipher suite name, e.g. `TLS_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// Signature algorithm of the client certificate, e.g. `ecdsa-with-SHA256`.
    pub sig_alg: String,
    /// Key algorithm of the client certificate, e.g. `EC256`, `RSA2048`, `ED25519`.
    pub key_alg: String,
}

/// The facts one header carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The client's address (source).
    pub source: SocketAddr,
    /// The address the client connected to (our listener; destination).
    pub destination: SocketAddr,
    pub ssl: SslInfo,
    /// The verified SPIFFE ID, if the client has one.
    pub spiffe: Option<String>,
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    // Every value we write is far below 64 KiB (names, a SPIFFE ID limited by the certificate
    // parser); clamp rather than write a length that lies.
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(len)]);
}

impl Header {
    /// The complete binary header, CRC32c filled in.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&SIGNATURE);
        out.push(VER_CMD_PROXY);
        let both_v4 = self.source.is_ipv4() && self.destination.is_ipv4();
        let mut body = Vec::with_capacity(240);
        match (self.source.ip(), self.destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) if both_v4 => {
                out.push(FAM_TCP4);
                body.extend_from_slice(&s.octets());
                body.extend_from_slice(&d.octets());
            }
            (s, d) => {
                out.push(FAM_TCP6);
                body.extend_from_slice(&v6(s).octets());
                body.extend_from_slice(&v6(d).octets());
            }
        }
        body.extend_from_slice(&self.source.port().to_be_bytes());
        body.extend_from_slice(&self.destination.port().to_be_bytes());

        let mut ssl = vec![PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS];
        ssl.extend_from_slice(&0u32.to_be_bytes()); // verify: 0 = the certificate was verified
        for (t, v) in [
            (PP2_SUBTYPE_SSL_VERSION, &self.ssl.version),
            (PP2_SUBTYPE_SSL_CN, &self.ssl.cn),
            (PP2_SUBTYPE_SSL_CIPHER, &self.ssl.cipher),
            (PP2_SUBTYPE_SSL_SIG_ALG, &self.ssl.sig_alg),
            (PP2_SUBTYPE_SSL_KEY_ALG, &self.ssl.key_alg),
        ] {
            if !v.is_empty() {
                push_tlv(&mut ssl, t, v.as_bytes());
            }
        }
        push_tlv(&mut body, PP2_TYPE_SSL, &ssl);
        if let Some(id) = &self.spiffe {
            if id.len() <= UNIQUE_ID_MAX {
                push_tlv(&mut body, PP2_TYPE_UNIQUE_ID, id.as_bytes());
            }
            push_tlv(&mut body, PP2_TYPE_MUTUAL_SPIFFE, id.as_bytes());
        }
        // CRC last: computed over the whole header with its own value zeroed.
        let crc_at = out.len() + 2 + body.len() + 3;
        push_tlv(&mut body, PP2_TYPE_CRC32C, &[0, 0, 0, 0]);
        let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c(&out);
        out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as the spec's PP2_TYPE_CRC32C uses.
pub fn crc32c(data: &[u8]) -> u32 {
    const fn table() -> [u32; 256] {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    }
    static TABLE: [u32; 256] = table();
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    !crc
}

/// One TLV as read from a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlv {
    pub kind: u8,
    pub value: Vec<u8>,
}

/// A parsed v2 header, kept close to the wire so tests can check each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// 0x20 LOCAL or 0x21 PROXY (version and command byte).
    pub ver_cmd: u8,
    /// Address family and protocol byte (0x11 TCP4, 0x21 TCP6, ...).
    pub fam: u8,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub tlvs: Vec<Tlv>,
    /// Total header length in bytes (16 + the length field).
    pub len: usize,
    /// `Some(true)` when a CRC32C TLV is present and matches, `Some(false)` when it does not.
    pub crc_ok: Option<bool>,
}

/// Why a header was refused by [`parse`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("need {0} more bytes")]
    Incomplete(usize),
    #[error("not a PROXY protocol v2 signature")]
    BadSignature,
    #[error("unsupported version/command byte {0:#04x}")]
    BadVersion(u8),
    #[error("address block too short for family {0:#04x}")]
    ShortAddresses(u8),
    #[error("TLV {kind:#04x} runs past the end of the header")]
    TruncatedTlv { kind: u8 },
}

fn tlvs(mut b: &[u8]) -> Result<Vec<Tlv>, ParseError> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let kind = b[0];
        if b.len() < 3 {
            return Err(ParseError::TruncatedTlv { kind });
        }
        let len = usize::from(u16::from_be_bytes([b[1], b[2]]));
        let Some(value) = b.get(3..3 + len) else {
            return Err(ParseError::TruncatedTlv { kind });
        };
        v.push(Tlv {
            kind,
            value: value.to_vec(),
        });
        b = &b[3 + len..];
    }
    Ok(v)
}

/// Parses a v2 header at the start of `buf`, strictly by the spec (section 2.2).
pub fn parse(buf: &[u8]) -> Result<Parsed, ParseError> {
    if buf.len() < 16 {
        return Err(ParseError::Incomplete(16 - buf.len()));
    }
    if buf[..12] != SIGNATURE {
        return Err(ParseError::BadSignature);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 || (ver_cmd & 0x0F) > 1 {
        return Err(ParseError::BadVersion(ver_cmd));
    }
    let fam = buf[13];
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return Err(ParseError::Incomplete(len - buf.len()));
    }
    let body = &buf[16..len];
    let (source, destination, rest) = match fam {
        FAM_TCP4 | 0x12 => {
            let a = body.get(..12).ok_or(ParseError::ShortAddresses(fam))?;
            let ip = |o: usize| IpAddr::from([a[o], a[o + 1], a[o + 2], a[o + 3]]);
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
                &body[12..],
            )
        }
        FAM_TCP6 | 0x22 => {
            let a = body.get(..36).ok_or(ParseError::ShortAddresses(fam))?;
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::from(b)
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
                &body[36..],
            )
        }
        0x31 | 0x32 => {
            let a = body.get(..216).ok_or(ParseError::ShortAddresses(fam))?;
            (None, None, &body[a.len()..])
        }
        _ => (None, None, body),
    };
    let tlvs = tlvs(rest)?;
    let crc_ok = {
        // Find the CRC TLV's offset to zero it for the check.
        let mut off = len - rest.len();
        let mut found = None;
        for t in &tlvs {
            if t.kind == PP2_TYPE_CRC32C && t.value.len() == 4 {
                found = Some((off + 3, t.value.clone()));
            }
            off += 3 + t.value.len();
        }
        found.map(|(at, want)| {
            let mut copy = buf[..len].to_vec();
            copy[at..at + 4].fill(0);
            crc32c(&copy).to_be_bytes().as_slice() == want.as_slice()
        })
    };
    Ok(Parsed {
        ver_cmd,
        fam,
        source,
        destination,
        tlvs,
        len,
        crc_ok,
    })
}

impl Parsed {
    /// The first TLV of this type.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| t.value.as_slice())
    }

    /// The PP2_TYPE_SSL TLV as (client bits, verify, sub-TLVs).
    pub fn ssl(&self) -> Option<(u8, u32, Vec<Tlv>)> {
        let v = self.tlv(PP2_TYPE_SSL)?;
        if v.len() < 5 {
            return None;
        }
        let verify = u32::from_be_bytes([v[1], v[2], v[3], v[4]]);
        Some((v[0], verify, tlvs(&v[5..]).ok()?))
    }

    /// A sub-TLV of PP2_TYPE_SSL as text.
    pub fn ssl_sub(&self, kind: u8) -> Option<String> {
        let (_, _, subs) = self.ssl()?;
        subs.into_iter()
            .find(|t| t.kind == kind)
            .map(|t| String::from_utf8_lossy(&t.value).into_owned())
    }
}

/// rustls' suite names (`TLS13_AES_128_GCM_SHA256`) as IANA/OpenSSL write them for TLS 1.3
/// (`TLS_AES_128_GCM_SHA256`); TLS 1.2 names are already IANA's.
pub fn iana_cipher(rustls_name: &str) -> String {
    match rustls_name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => rustls_name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn header(src: &str, dst: &str, spiffe: Option<&str>) -> Header {
        Header {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
            ssl: SslInfo {
                version: "TLSv1.3".into(),
                cn: "client-1".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                sig_alg: "ecdsa-with-SHA256".into(),
                key_alg: "EC256".into(),
            },
            spiffe: spiffe.map(str::to_string),
        }
    }

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C ("123456789").
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn ipv4_round_trip_with_every_tlv() {
        let h = header(
            "10.1.2.3:40000",
            "127.0.0.1:8443",
            Some("spiffe://example.org/a"),
        );
        let b = h.encode();
        let p = parse(&b).unwrap();
        assert_eq!(p.len, b.len());
        assert_eq!(p.ver_cmd, 0x21);
        assert_eq!(p.fam, 0x11);
        assert_eq!(p.source, Some(h.source));
        assert_eq!(p.destination, Some(h.destination));
        assert_eq!(p.crc_ok, Some(true));
        let (client, verify, _) = p.ssl().unwrap();
        assert_eq!(client, 0x07);
        assert_eq!(verify, 0);
        assert_eq!(
            p.ssl_sub(PP2_SUBTYPE_SSL_VERSION).as_deref(),
            Some("TLSv1.3")
        );
        assert_eq!(p.ssl_sub(PP2_SUBTYPE_SSL_CN).as_deref(), Some("client-1"));
        assert_eq!(p.ssl_sub(PP2_SUBTYPE_SSL_KEY_ALG).as_deref(), Some("EC256"));
        assert_eq!(
            p.tlv(PP2_TYPE_UNIQUE_ID),
            Some(&b"spiffe://example.org/a"[..])
        );
        assert_eq!(
            p.tlv(PP2_TYPE_MUTUAL_SPIFFE),
            Some(&b"spiffe://example.org/a"[..])
        );
    }

    #[test]
    fn mixed_families_become_ipv6_and_long_ids_skip_unique_id() {
        let long = format!("spiffe://example.org/{}", "x".repeat(200));
        let h = header("[2001:db8::1]:5000", "127.0.0.1:8443", Some(&long));
        let p = parse(&h.encode()).unwrap();
        assert_eq!(p.fam, 0x21);
        assert_eq!(p.source, Some("[2001:db8::1]:5000".parse().unwrap()));
        assert_eq!(
            p.destination,
            Some("[::ffff:127.0.0.1]:8443".parse().unwrap())
        );
        assert_eq!(p.tlv(PP2_TYPE_UNIQUE_ID), None);
        assert_eq!(p.tlv(PP2_TYPE_MUTUAL_SPIFFE), Some(long.as_bytes()));
        assert_eq!(p.crc_ok, Some(true));
    }

    #[test]
    fn a_flipped_bit_fails_the_crc_and_truncation_is_reported() {
        let mut b = header("10.0.0.1:1", "10.0.0.2:2", None).encode();
        let last = b.len() - 10;
        b[last] ^= 0x01;
        assert_eq!(parse(&b).unwrap().crc_ok, Some(false));
        assert!(matches!(
            parse(&b[..b.len() - 1]),
            Err(ParseError::Incomplete(1))
        ));
        assert_eq!(parse(&[0u8; 20]), Err(ParseError::BadSignature));
    }

    #[test]
    fn names() {
        assert_eq!(
            iana_cipher("TLS13_AES_128_GCM_SHA256"),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!("v2".parse::<ProxyProtocol>(), Ok(ProxyProtocol::V2));
        assert!("v1".parse::<ProxyProtocol>().is_err());
    }
}
